//! Stage 2: one scalar δ (tolerated solo accuracy drop) turns the sensitivity curves into
//! a ratio per layer ([`super::delta`]); this stage finds the largest δ whose pruned and
//! retrained model stays feasible. Two ways, chosen by `search.bisection`:
//!
//! - **climb** (default): the first probe is the δ at which the curves alone predict the
//!   target without retraining (so it is nearly sure to pass and no probe is spent on a
//!   certain failure); each feasible probe multiplies δ by `climb_factor` and warm-starts
//!   the next, so the climb prunes in steps; after the first failure the bracket is halved
//!   (geometrically) until it is narrower than `bisection_tolerance` in log δ;
//! - **brent**: argmin's Brent root finder over ln δ from the dense model to the largest
//!   δ of the curves (its first probe prunes every layer to the cap and nearly always
//!   fails).

use std::cell::RefCell;

use anyhow::Result;
use argmin::core::{CostFunction, Executor};
use argmin::solver::brent::BrentRoot;

use super::batch::Ask;
use super::calibration::Start;
use super::config::Bisection;
use super::delta;
use super::oracle::Oracle;
use super::parallel;
use super::prober::Prober;
use super::record::Phase;

/// The smallest tolerated drop the bisection considers (x = 0 is the dense model).
const MIN_DELTA: f64 = 2e-4;

/// Runs the configured bisection; returns why it ended. `start` is what the calibration
/// measured of the climb's first δ (the climb goes on from it instead of probing it again).
pub fn run<O: Oracle>(
    p: &mut Prober<O>,
    curves: &[Vec<(f64, f64)>],
    dense_acc: f64,
    start: Option<Start>,
) -> Result<String> {
    match p.cfg.bisection {
        Bisection::Climb => climb(p, curves, dense_acc, start),
        Bisection::Brent => brent(p, curves, dense_acc),
    }
}

/// The drop each layer may take alone before the curves, summed over layers, predict
/// accuracy under `target` without retraining: the climb's first δ.
pub fn predicted_delta(curves: &[Vec<(f64, f64)>], dense_acc: f64, target: f64, cap: f64) -> f64 {
    let room = (dense_acc - target).max(0.0);
    let drop_at = |d: f64| -> f64 {
        curves
            .iter()
            .map(|c| {
                let r = delta::ratio_for_delta(c, dense_acc, d).min(cap);
                let acc = interpolate(c, r);
                (dense_acc - acc).max(0.0)
            })
            .sum()
    };
    // Geometric search for the largest δ whose summed drop stays within the room.
    let (mut lo, mut hi) = (MIN_DELTA, 0.5f64);
    if drop_at(lo) > room {
        return MIN_DELTA;
    }
    for _ in 0..40 {
        let mid = (lo * hi).sqrt();
        if drop_at(mid) <= room {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Accuracy of a curve at ratio `r`, linear between grid points.
fn interpolate(curve: &[(f64, f64)], r: f64) -> f64 {
    let mut prev = match curve.first() {
        Some(&p) => p,
        None => return 0.0,
    };
    for &(x, a) in curve {
        if x >= r {
            if x <= prev.0 {
                return a;
            }
            let t = (r - prev.0) / (x - prev.0);
            return prev.1 + t * (a - prev.1);
        }
        prev = (x, a);
    }
    prev.1
}

fn spent<O: Oracle>(p: &Prober<O>) -> Option<String> {
    if let Some(why) = p.stage_over(Phase::Bisect) {
        return Some(why.into());
    }
    if p.past(p.cfg.bisect_share) {
        return Some("time budget of this stage spent".into());
    }
    None
}

fn climb<O: Oracle>(
    p: &mut Prober<O>,
    curves: &[Vec<(f64, f64)>],
    dense_acc: f64,
    start: Option<Start>,
) -> Result<String> {
    let cap = p.cfg.max_ratio;
    let max_delta = curves
        .iter()
        .flat_map(|c| c.iter().map(|(_, a)| dense_acc - a))
        .fold(0.0f64, f64::max)
        .max(2.0 * MIN_DELTA);
    let (mut good, mut bad): (Option<f64>, Option<f64>) = (None, None);
    let mut last_ratios: Option<Vec<f64>> = None;
    let mut ds = match start {
        None => vec![predicted_delta(curves, dense_acc, p.at.probe, cap)],
        Some(s) => {
            last_ratios = Some(delta::ratios_for_delta(curves, dense_acc, s.delta, cap));
            if s.feasible {
                good = Some(s.delta);
            } else {
                bad = Some(s.delta);
            }
            match next_deltas(p, good, bad, max_delta, 1) {
                Ok(ds) => ds,
                Err(why) => return Ok(why),
            }
        }
    };
    let mut probes = 0;
    // With --workers N each round probes up to N δ side by side: the climb's next steps, or
    // points spread over the bracket (`parallel`); one worker probes one δ a round.
    while probes < p.cfg.bisection_probes {
        if let Some(why) = spent(p) {
            return Ok(why);
        }
        let mut asks: Vec<Ask> = Vec::new();
        for &d in &ds {
            let ratios = delta::ratios_for_delta(curves, dense_acc, d, cap);
            let seen = asks.iter().map(|(r, _)| r).chain(last_ratios.as_ref());
            if !seen.into_iter().any(|r| *r == ratios) {
                asks.push((ratios, Some(d)));
            }
        }
        if asks.is_empty() {
            return Ok("the curves give the same ratios for the next δ".into());
        }
        let answers = p.probe_ratios_batch(&asks, Phase::Bisect)?;
        probes += asks.len() as u64;
        let judged: Vec<(f64, bool)> = asks
            .iter()
            .zip(&answers)
            .filter_map(|((_, d), a)| Some((d.unwrap_or(0.0), (*a)? >= p.at.probe)))
            .collect();
        last_ratios = asks.pop().map(|(r, _)| r);
        (good, bad) = parallel::narrow(good, bad, &judged);
        let left = p.cfg.bisection_probes.saturating_sub(probes).max(1) as usize;
        ds = match next_deltas(p, good, bad, max_delta, left) {
            Ok(ds) => ds,
            Err(why) => return Ok(why),
        };
    }
    Ok("bisection probes spent".into())
}

/// The climb's next δ (up to `left` and the batch size) from its bracket: up by the climb
/// factor while nothing failed, else inside the bracket; `Err` says why the climb ends.
fn next_deltas<O: Oracle>(
    p: &Prober<O>,
    good: Option<f64>,
    bad: Option<f64>,
    max_delta: f64,
    left: usize,
) -> std::result::Result<Vec<f64>, String> {
    let q = p.batch_size().min(left.max(1));
    match (good, bad) {
        (Some(g), None) => {
            if g >= max_delta {
                return Err("every layer is at its largest ratio".into());
            }
            Ok(parallel::climb_points(
                g * p.cfg.climb_factor,
                p.cfg.climb_factor,
                max_delta,
                q,
            ))
        }
        (g, Some(b)) => {
            let g = g.unwrap_or(MIN_DELTA);
            if (b / g).ln() < p.cfg.bisection_tolerance {
                return Err("bracket narrower than the tolerance".into());
            }
            Ok(parallel::geometric_interior(g, b, q))
        }
        (None, None) => Err("every probe of the bisection was lost".into()),
    }
}

fn brent<O: Oracle>(
    p: &mut Prober<O>,
    curves: &[Vec<(f64, f64)>],
    dense_acc: f64,
) -> Result<String> {
    let max_delta = curves
        .iter()
        .flat_map(|c| c.iter().map(|(_, a)| dense_acc - a))
        .fold(0.0f64, f64::max)
        .max(1e-3);
    struct Cost<'p, 's, O: Oracle> {
        prober: RefCell<&'p mut Prober<'s, O>>,
        curves: &'p [Vec<(f64, f64)>],
        dense_acc: f64,
        error: &'p RefCell<Option<anyhow::Error>>,
    }
    impl<O: Oracle> CostFunction for Cost<'_, '_, O> {
        type Param = f64;
        type Output = f64;
        fn cost(&self, x: &f64) -> Result<f64, argmin::core::Error> {
            let mut p = self.prober.borrow_mut();
            if *x <= 0.0 {
                return Ok(self.dense_acc - p.at.probe);
            }
            if let Some(why) = spent(&p) {
                return Err(anyhow::anyhow!(why));
            }
            let d = MIN_DELTA * x.exp();
            let ratios = delta::ratios_for_delta(self.curves, self.dense_acc, d, p.cfg.max_ratio);
            match p.probe_ratios(&ratios, Phase::Bisect, Some(d)) {
                Ok(acc) => Ok(acc - p.at.probe),
                Err(e) => {
                    let msg = format!("{e:#}");
                    *self.error.borrow_mut() = Some(e);
                    Err(anyhow::anyhow!(msg))
                }
            }
        }
    }
    let error = RefCell::new(None);
    let max_iters = p.cfg.bisection_probes;
    let outcome = {
        let cost = Cost {
            prober: RefCell::new(&mut *p),
            curves,
            dense_acc,
            error: &error,
        };
        // Brent over x = ln(δ / MIN_DELTA): geometric steps suit drops spanning decades.
        let hi = (max_delta / MIN_DELTA).ln();
        let solver = BrentRoot::new(0.0, hi, 0.05);
        Executor::new(cost, solver)
            .configure(|s| s.param(hi / 2.0).max_iters(max_iters))
            .run()
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    if let Some(e) = error.into_inner() {
        return Err(e);
    }
    Ok(match outcome {
        Ok(()) => "converged".into(),
        Err(e) => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_delta_keeps_the_summed_solo_drops_within_the_room() {
        // two layers, each losing 0.01 at ratio 0.9 and 0.1 at 0.99
        let c = vec![(0.0, 0.99), (0.5, 0.99), (0.9, 0.98), (0.99, 0.89)];
        let curves = vec![c.clone(), c];
        let d = predicted_delta(&curves, 0.99, 0.98, 0.997);
        // room 0.01 split over two layers: each may drop 0.005 → δ ≈ 0.005
        assert!((d - 0.005).abs() < 1e-4, "{d}");
        // no room: the smallest δ
        assert_eq!(predicted_delta(&curves, 0.99, 0.995, 0.997), MIN_DELTA);
    }

    #[test]
    fn interpolation_is_linear_between_grid_points() {
        let c = [(0.0, 1.0), (0.5, 0.9), (1.0, 0.5)];
        assert!((interpolate(&c, 0.25) - 0.95).abs() < 1e-12);
        assert!((interpolate(&c, 0.75) - 0.7).abs() < 1e-12);
        assert_eq!(interpolate(&c, 2.0), 0.5);
    }
}
