//! The search's stages in order, on any [`Oracle`]: bisection → refinement → final model →
//! bits. What comes out is the chosen ratios, widths and model; the real search then
//! writes and proves the file (`finish`), a synthetic one scores it against its landscape.

use anyhow::Result;

use super::oracle::Oracle;
use super::prober::Prober;
use super::record::StageTimes;
use super::{bisection, bits, refinement};

/// What the stages chose.
pub struct Chosen<M> {
    pub ratios: Vec<f64>,
    pub bits: Vec<u8>,
    pub model: M,
    /// Validation accuracy of the final model before weight sharing.
    pub accuracy: f64,
    /// Why the ratio search ended (bisection; refinement).
    pub stopped: String,
}

/// Stages 2–5 from the sensitivity curves (`curves[l]`: `(ratio, accuracy)` ascending).
pub fn choose<O: Oracle>(
    p: &mut Prober<O>,
    curves: &[Vec<(f64, f64)>],
    dense_acc: f64,
    times: &mut StageTimes,
) -> Result<Chosen<O::Model>> {
    let clock = |p: &Prober<O>| p.elapsed();
    let t = clock(p);
    let why_bisect = bisection::run(p, curves, dense_acc)?;
    p.say(&format!("bisection ended: {why_bisect}"));
    times.bisect = clock(p) - t;
    let t = clock(p);
    let why_refine = refinement::run(p)?;
    p.say(&format!("refinement ended: {why_refine}"));
    times.refine = clock(p) - t;
    let t = clock(p);
    let (ratios, model, accuracy) = p.final_model()?;
    times.final_retrain = clock(p) - t;
    let t = clock(p);
    let bits = bits::run(p, &ratios, &model)?;
    times.bits = clock(p) - t;
    Ok(Chosen {
        ratios,
        bits,
        model,
        accuracy,
        stopped: format!("bisection: {why_bisect}; refinement: {why_refine}"),
    })
}
