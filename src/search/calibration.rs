//! The calibration, before the bisection: how long a probe must retrain and how noisy its
//! answer is, measured on the model at hand. The dense model is pruned to the ratios where
//! each layer alone loses one point (δ = [`crate::compress::lr_range::START_DROP`]) and
//! retrained on a ladder of lengths, each twice the one before, with
//! [`plan::LADDER_SEEDS`] seeds each, until a doubling gains less than half the noise
//! ([`plan`] has the rules). From that the plan gets its probe length, its noise, its
//! margins and its bits probes' length; the rungs are probes like any other (journaled,
//! in `trials.csv` as phase `calibrate`), and they judge that δ for the bisection: its
//! first bracket end, feasible when the chosen rung's mean is (the best model among the
//! rungs at least as long as the chosen one is then its first warm start).
//!
//! Nothing here reads the clock for a decision; seconds are summed only to say how long an
//! epoch takes here.

use anyhow::Result;

use super::config::Auto;
use super::delta;
use super::oracle::{Measure, Oracle};
use super::plan::{self, Rung};
use super::prober::{Feasible, Prober, Thresholds};
use super::record::{round3, Phase};

/// Where the bisection starts after the calibration: the δ of the calibrated ratios, the
/// ratios, the mean accuracy of the chosen rung and whether that was feasible.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub delta: f64,
    pub ratios: Vec<f64>,
    pub accuracy: f64,
    pub feasible: bool,
}

/// What the model and data look like to the calibration.
pub struct Shape {
    /// Training images per epoch and the retraining batch size.
    pub train_images: usize,
    pub batch: i64,
    pub valid_images: usize,
    pub dense_accuracy: f64,
}

/// Whether the config leaves anything for the calibration to work out.
pub fn needed(cfg: &super::SearchConfig) -> bool {
    [cfg.probe_epochs, cfg.margin, cfg.second_look].contains(&Auto::Auto)
}

/// Runs the calibration (or replays it from the journal) and sets the prober's plan and
/// thresholds; returns where the bisection starts, or `None` when the config fixes every
/// number it would measure.
pub fn run<O: Oracle>(
    p: &mut Prober<O>,
    curves: &[Vec<(f64, f64)>],
    shape: &Shape,
) -> Result<Option<Start>> {
    p.plan.binomial = plan::binomial(shape.dense_accuracy, shape.valid_images);
    if !needed(p.cfg) {
        return Ok(None);
    }
    let cap = p.cfg.max_ratio;
    let d0 = crate::compress::lr_range::START_DROP;
    let ratios = delta::ratios_for_delta(curves, shape.dense_accuracy, d0, cap);
    // A fixed probe length leaves only the noise to measure: three seeds at it.
    let (lengths, seeds) = match p.cfg.probe_epochs {
        Auto::Is(e) => (vec![e], plan::LADDER_SEEDS + 1),
        Auto::Auto => (
            plan::ladder_epochs(shape.train_images, shape.batch),
            plan::LADDER_SEEDS,
        ),
    };
    p.say(&format!(
        "calibration: ratios {:?} (δ {d0:.4}) from the dense model, retrained {} seeds at each length",
        round3(&ratios),
        seeds
    ));
    let mut rungs: Vec<Rung> = Vec::new();
    // Per rung, the best model it made (the warm start the bisection may keep).
    let mut best: Vec<Option<(f64, O::Model)>> = Vec::new();
    let (mut seconds, mut epochs_run) = (0.0, 0.0);
    for &epochs in &lengths {
        let (rung, top, secs) = measure_rung(p, &ratios, None, epochs, seeds)?;
        seconds += secs;
        epochs_run += epochs * seeds as f64;
        p.say(&format!(
            "calibration: {epochs:.2} epochs → validation {} (mean {:.4}), loss {} (mean {:.4})",
            listed(&rung.accuracies),
            rung.mean_accuracy(),
            listed(&rung.losses),
            rung.mean_loss()
        ));
        rungs.push(rung);
        best.push(top);
        if lengths.len() > 1 && plan::ladder_done(&rungs) {
            break;
        }
    }
    let spread = plan::accuracy_noise(&rungs, shape.valid_images);
    let noise = plan::noise(spread, p.plan.binomial);
    let chosen = p.cfg.probe_epochs.or(plan::choose_epochs(&rungs));
    let pl = &mut p.plan;
    pl.noise = noise;
    pl.probe_epochs = chosen;
    pl.bits_epochs = p.cfg.bits_epochs.or(chosen / 3.0);
    let room = shape.dense_accuracy - p.at.floor;
    pl.margin = p.cfg.margin.or(plan::margin(noise, room));
    pl.second_look = p.cfg.second_look.or(plan::second_look(noise, room));
    pl.seed_spread = spread;
    pl.epoch_seconds = if epochs_run > 0.0 {
        seconds / epochs_run
    } else {
        0.0
    };
    pl.ladder = rungs.clone();
    p.at = Thresholds::new(p.at.floor, pl.margin, p.cfg.bits_margin);
    // The chosen length's mean judges the ratios; the best model of that length or longer
    // is the warm start.
    let at_chosen = rungs
        .iter()
        .find(|r| r.epochs >= chosen - 1e-12)
        .or(rungs.last());
    let accuracy = at_chosen.map_or(0.0, Rung::mean_accuracy);
    let feasible = accuracy >= p.at.probe;
    if feasible {
        let keep = rungs
            .iter()
            .zip(best)
            .filter(|(r, _)| r.epochs >= chosen - 1e-12)
            .filter_map(|(_, b)| b)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((accuracy, model)) = keep {
            keep_feasible(p, &ratios, accuracy, model);
        }
    }
    Ok(Some(Start {
        delta: d0,
        ratios,
        accuracy,
        feasible,
    }))
}

/// One calibration probe from feasible model `warm` (`None`: the dense model), or its
/// journaled record: its measure and model (`None` only when replayed from a finished
/// run's journal).
fn rung_probe<O: Oracle>(
    p: &mut Prober<O>,
    ratios: &[f64],
    warm: Option<usize>,
    epochs: f64,
) -> Result<(Measure, Option<O::Model>)> {
    let bits = p.provisional_bits();
    if let Some((t, model)) = p.replay(Phase::Calibrate, ratios, &bits)? {
        p.count_replayed(t.seconds);
        let m = Measure {
            accuracy: t.valid_accuracy,
            loss: t.valid_loss.unwrap_or(f64::NAN),
            seconds: t.seconds,
            ..Measure::default()
        };
        return Ok((m, model));
    }
    let from = super::prober::warm_model(&p.feasible, warm)?;
    let seed = 1000 + p.trials.len() as u64;
    let (model, m) = p.oracle.prune(from, ratios, epochs, seed)?;
    let mut trial = p.trial(Phase::Calibrate, ratios, &bits, &m, epochs);
    trial.warm_start = match warm {
        Some(i) => format!("feasible {:?}", round3(&p.feasible[i].ratios)),
        None => "dense".into(),
    };
    p.count(trial.seconds);
    p.log(trial, Some(&model))?;
    Ok((m, Some(model)))
}

/// After the bisection, where it matters: would longer probes decide the frontier
/// otherwise? The least pruned infeasible point above the smallest feasible model (a
/// bisection or refinement probe, or the calibration's ratios) is probed from that model
/// at the probe length and at twice it ([`plan::LADDER_SEEDS`] seeds each, so that only
/// the length differs); while twice the length gains at least the noise, the probe
/// length doubles (up to the ladder's longest rung) and twice that is tried in turn. A
/// point that turns feasible is kept as a warm start. Only for `probe_epochs = "auto"`.
pub fn lengthen<O: Oracle>(p: &mut Prober<O>, start: Option<Start>) -> Result<()> {
    if p.cfg.probe_epochs != Auto::Auto {
        return Ok(());
    }
    let Some(best) = p.best() else {
        return Ok(());
    };
    let base = best.ratios.clone();
    let above = |r: &[f64]| r.iter().zip(&base).all(|(a, b)| *a >= *b - 1e-12);
    let bytes = |r: &[f64]| p.est_bytes(r, &p.provisional_bits());
    let probed = p
        .trials
        .iter()
        .filter(|t| t.phase.is_ratio() && !t.feasible && !t.is_lost())
        .map(|t| t.ratios.clone());
    let calibrated = start.filter(|s| !s.feasible).map(|s| s.ratios);
    let Some(ratios) = probed
        .chain(calibrated)
        .filter(|r| above(r))
        .max_by(|a, b| bytes(a).total_cmp(&bytes(b)))
    else {
        return Ok(());
    };
    // Every probe of the check grows from the same model: only the length differs.
    let warm = p.warm_start(&ratios);
    let longest = plan::ladder_epochs_cap(&p.plan.ladder);
    let seeds = plan::LADDER_SEEDS;
    let mut shorter = measure_rung(p, &ratios, warm, p.plan.probe_epochs, seeds)?.0;
    while 2.0 * p.plan.probe_epochs <= longest + 1e-9 {
        let epochs = 2.0 * p.plan.probe_epochs;
        let (longer, top, _) = measure_rung(p, &ratios, warm, epochs, seeds)?;
        let (a, b) = (shorter.mean_accuracy(), longer.mean_accuracy());
        let gained = b - a >= p.plan.noise;
        p.say(&format!(
            "frontier {:?}: {epochs:.2} epochs → validation {b:.4} against {a:.4} at {:.2}: {}",
            round3(&ratios),
            p.plan.probe_epochs,
            if gained {
                "longer probes decide it otherwise; probes now retrain twice as long"
            } else {
                "probes are long enough"
            }
        ));
        if !gained {
            break;
        }
        p.plan.probe_epochs = epochs;
        p.plan.bits_epochs = p.cfg.bits_epochs.or(epochs / 3.0);
        p.plan.ladder.push(longer.clone());
        if b >= p.at.probe {
            if let Some((accuracy, model)) = top {
                keep_feasible(p, &ratios, accuracy, model);
            }
        }
        shorter = longer;
    }
    Ok(())
}

/// Keeps `model` (pruned to `ratios`, validation `accuracy`) as a feasible warm start.
fn keep_feasible<O: Oracle>(p: &mut Prober<O>, ratios: &[f64], accuracy: f64, model: O::Model) {
    let bytes = p.est_bytes(ratios, &p.provisional_bits());
    p.feasible.push(Feasible {
        ratios: ratios.to_vec(),
        model: Some(model),
        bytes,
        accuracy,
    });
}

/// A measured rung, its best model (accuracy, model) and its seconds.
type RungResult<M> = (Rung, Option<(f64, M)>, f64);

/// `seeds` probes of `ratios` from feasible model `warm` (`None`: the dense model) at
/// `epochs`: the rung, its best model and the seconds it took.
fn measure_rung<O: Oracle>(
    p: &mut Prober<O>,
    ratios: &[f64],
    warm: Option<usize>,
    epochs: f64,
    seeds: usize,
) -> Result<RungResult<O::Model>> {
    let mut rung = Rung {
        epochs,
        accuracies: Vec::new(),
        losses: Vec::new(),
    };
    let (mut top, mut seconds): (Option<(f64, O::Model)>, f64) = (None, 0.0);
    for _ in 0..seeds {
        let (m, model) = rung_probe(p, ratios, warm, epochs)?;
        rung.accuracies.push(m.accuracy);
        rung.losses.push(m.loss);
        seconds += m.seconds;
        if let Some(model) = model {
            if top.as_ref().is_none_or(|(a, _)| m.accuracy > *a) {
                top = Some((m.accuracy, model));
            }
        }
    }
    Ok((rung, top, seconds))
}

/// Values to four decimals, comma-separated.
fn listed(v: &[f64]) -> String {
    v.iter()
        .map(|a| format!("{a:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}
