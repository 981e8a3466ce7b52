//! The search's stages in order, on any [`Oracle`]: bisection → refinement → candidates →
//! bits. What comes out is the chosen ratios, widths and model; the real search then
//! writes and proves the file (`finish`), a synthetic one scores it against its landscape.

use anyhow::Result;

use super::oracle::Oracle;
use super::prober::{Candidate, Prober, Widths};
use super::record::{round3, StageTimes};
use super::{bisection, bits, calibration, candidates, refinement};

/// What the stages chose.
pub struct Chosen<M> {
    pub ratios: Vec<f64>,
    pub bits: Vec<u8>,
    pub model: M,
    /// The shared model a bits probe measured at `bits`, when one did: the file's model.
    pub shared: Option<M>,
    /// Validation accuracy of the chosen model before weight sharing.
    pub accuracy: f64,
    /// Why the ratio search ended (bisection; refinement).
    pub stopped: String,
}

impl<M> Chosen<M> {
    /// Candidate `c` at the widths `w` chose for it.
    fn of(c: Candidate<M>, w: Widths<M>, stopped: String) -> Chosen<M> {
        Chosen {
            ratios: c.ratios,
            bits: w.bits,
            model: c.model,
            shared: w.shared,
            accuracy: c.accuracy,
            stopped,
        }
    }
}

/// The stages from the sensitivity curves (`curves[l]`: `(ratio, accuracy)` ascending):
/// calibration, bisection, refinement, candidates and bits.
pub fn choose<O: Oracle>(
    p: &mut Prober<O>,
    curves: &[Vec<(f64, f64)>],
    shape: &calibration::Shape,
    times: &mut StageTimes,
) -> Result<Chosen<O::Model>> {
    let dense_acc = shape.dense_accuracy;
    let t = p.elapsed();
    p.stage = "the calibration".into();
    let start = calibration::run(p, curves, shape)?;
    p.say(&p.plan_line());
    if let Some(warning) = p.budget_warning() {
        p.warn(&warning);
    }
    times.calibrate = p.elapsed() - t;
    let t = p.elapsed();
    p.stage = "the bisection".into();
    let why_bisect = bisection::run(p, curves, dense_acc, start.clone())?;
    p.say(&format!("bisection ended: {why_bisect}"));
    calibration::lengthen(p, start)?;
    times.bisect = p.elapsed() - t;
    let t = p.elapsed();
    p.stage = "the refinement".into();
    let why_refine = refinement::run(p)?;
    p.say(&format!("refinement ended: {why_refine}"));
    times.refine = p.elapsed() - t;
    let stopped = format!("bisection: {why_bisect}; refinement: {why_refine}");
    let t = p.elapsed();
    if let Some((c, w)) = p.replay_chosen()? {
        times.bits = p.elapsed() - t;
        return Ok(Chosen::of(c, w, stopped));
    }
    p.stage = "the candidates".into();
    let k = p.cfg.bits_candidates;
    let candidates = candidates::candidates(p, k)?;
    times.final_retrain = p.elapsed() - t;
    // Stage 5 on each candidate; the smallest estimated file wins.
    let t = p.elapsed();
    let mut best: Option<(f64, usize, Widths<O::Model>)> = None;
    let stage_end = p.share_end(p.cfg.bits_share);
    let n = candidates.len();
    for (i, c) in candidates.iter().enumerate() {
        if i > 0 && p.past(p.cfg.bits_share) {
            p.say("bits: time budget spent; the other candidates are left");
            break;
        }
        // Each candidate gets an equal share of what is left of the stage: a candidate whose
        // every narrowing misses must not starve the next ones.
        let until = p.elapsed() + (stage_end - p.elapsed()).max(0.0) / (n - i) as f64;
        p.stage = format!("the bits stage (candidate {} of {n})", i + 1);
        let w = bits::run(p, &c.ratios, &c.model, i == 0, until)?;
        let bytes = p.est_bytes(&c.ratios, &w.bits);
        p.say(&format!(
            "candidate {:?} (validation {:.4}): widths {:?} → ≈{:.1} KB",
            round3(&c.ratios),
            c.accuracy,
            w.bits,
            bytes / 1000.0
        ));
        if best.as_ref().is_none_or(|(b, _, _)| bytes < *b) {
            best = Some((bytes, i, w));
        }
    }
    times.bits = p.elapsed() - t;
    let (_, i, w) = best.expect("candidates are never empty");
    let c = candidates
        .into_iter()
        .nth(i)
        .expect("the best is one of them");
    p.record_chosen(&c, &w, times.final_retrain + times.bits)?;
    Ok(Chosen::of(c, w, stopped))
}
