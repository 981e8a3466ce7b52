//! Stage 3: per-layer pushes from the incumbent (the smallest feasible model), chosen by a
//! Gaussian process. Every layer has its own push (the fraction of its kept weights the
//! next probe of it removes): a feasible probe becomes the incumbent and its layer's push
//! grows, an infeasible one halves it (a near miss shrinks it less), and a layer whose push fell under
//! `refine_min_push` is done. Each step the GP — fitted to every ratio probe's validation
//! accuracy over the log-density vector — scores the one-layer pushes by expected saving
//! × probability of feasibility, and the best of those saving at least
//! `refine_min_saving` of the bytes is probed, warm-started from the incumbent. So the
//! budget goes where the bytes are and where pruning still works.

use anyhow::Result;

use super::gp;
use super::oracle::Oracle;
use super::prober::Prober;
use super::record::Phase;

/// Runs the refinement; returns why it ended.
pub fn run<O: Oracle>(p: &mut Prober<O>) -> Result<String> {
    let sc = p.cfg;
    let lo_density = 1.0 - sc.max_ratio;
    let to_u = |r: f64| ((1.0 - r).max(lo_density)).ln() / lo_density.ln();
    let mut push = vec![push_strength(sc.refine_push); p.layer_sizes.len()];
    let min_push = push_strength(sc.refine_min_push);
    let bits = p.provisional_bits();
    let mut step = 0;
    while step < p.plan.refine_probes {
        if let Some(why) = p.stage_over(Phase::Refine) {
            return Ok(why.into());
        }
        if p.past(sc.refine_share) {
            return Ok("time budget of this stage spent".into());
        }
        // What follows needs its time before `bits_share` of a minute cap.
        if p.elapsed() + p.reserve_after_refinement() > p.share_end(sc.bits_share) {
            return Ok(
                "time budget of this stage spent (the rest is kept for the candidates and bits)"
                    .into(),
            );
        }
        let Some(best) = p.best() else {
            return Ok("no feasible probe to refine".into());
        };
        let (best_bytes, incumbent) = (best.bytes, best.ratios.clone());
        let (xs, ys): (Vec<Vec<f64>>, Vec<f64>) = p
            .trials
            .iter()
            .filter(|t| t.phase.is_ratio() && !t.is_lost())
            .map(|t| {
                (
                    t.ratios.iter().map(|&r| to_u(r)).collect(),
                    t.valid_accuracy,
                )
            })
            .unzip();
        let model = gp::Gp::fit(&xs, &ys);
        let candidates = |base: &[f64], base_bytes: f64, push: &[f64]| -> Vec<Push> {
            (0..base.len())
                .filter(|&l| push[l] >= min_push)
                .filter_map(|l| {
                    let ratios = pushed(base, l, push[l], sc.max_ratio)?;
                    let saving = (base_bytes - p.est_bytes(&ratios, &bits)) / base_bytes;
                    let u: Vec<f64> = ratios.iter().map(|&r| to_u(r)).collect();
                    let feasible = model
                        .as_ref()
                        .map_or(0.5, |m| gp::prob_at_least(m, &u, p.at.probe));
                    Some(Push {
                        layer: l,
                        ratios,
                        saving,
                        feasible,
                    })
                })
                .collect()
        };
        // With --workers N a round probes a chain of up to N pushes side by side: the best
        // push, then the best push from it as if it held (its layer's push grown as a
        // feasible probe grows it), and so on — the pushes one worker would probe next if
        // each held. One worker probes the best push alone.
        let q = p.batch_size().min(p.plan.refine_probes - step);
        let mut chosen: Vec<Push> = Vec::new();
        let (mut base, mut base_bytes, mut believed) = (incumbent, best_bytes, push.clone());
        while chosen.len() < q {
            let mut c = candidates(&base, base_bytes, &believed);
            let Some(i) = best_push(&c, sc.refine_min_saving) else {
                break;
            };
            let c = c.swap_remove(i);
            base = c.ratios.clone();
            base_bytes = p.est_bytes(&base, &bits);
            believed[c.layer] *= 1.5;
            chosen.push(c);
        }
        if chosen.is_empty() {
            return Ok(format!(
                "converged after {step} probes: every layer's push is under {:.1} % of its kept weights or \
                 would save under {:.1} % of the bytes",
                100.0 * sc.refine_min_push,
                100.0 * sc.refine_min_saving
            ));
        }
        let asks: Vec<_> = chosen.iter().map(|c| (c.ratios.clone(), None)).collect();
        let answers = p.probe_ratios_batch(&asks, Phase::Refine)?;
        step += asks.len();
        // A feasible push grows the layer's next push; a clear failure (or a lost probe)
        // halves it; a near miss (within the second-look band of the target: as likely noise
        // as a real limit) shrinks it by `near_miss_shrink` only, and the next push of that
        // layer starts from a longer-trained incumbent. The links of a chain after a failure
        // were built on it and teach nothing about their own layers.
        for (c, acc) in chosen.iter().zip(answers) {
            let acc = acc.unwrap_or(0.0);
            push[c.layer] *= if acc >= p.at.probe {
                1.5
            } else if acc >= p.at.probe - p.plan.second_look {
                sc.near_miss_shrink
            } else {
                0.5
            };
            if acc < p.at.probe {
                break;
            }
        }
    }
    Ok("refinement probes spent".into())
}

/// A push as a log-density step: removing the fraction `p` of a layer's kept weights
/// multiplies its density by `exp(-push_strength(p))`.
fn push_strength(p: f64) -> f64 {
    -(1.0 - p.clamp(0.0, 0.999)).ln()
}

/// A refinement candidate: layer `layer` pushed to `ratios`, saving that fraction of the
/// incumbent's estimated bytes, feasible with that probability under the GP.
struct Push {
    layer: usize,
    ratios: Vec<f64>,
    saving: f64,
    feasible: f64,
}

/// The best push: the largest expected saving (saving × probability of feasibility) among
/// those that save at least `min_saving` of the bytes; `None` when none does.
fn best_push(candidates: &[Push], min_saving: f64) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.saving > 0.0 && c.saving >= min_saving)
        .max_by(|(_, a), (_, b)| (a.saving * a.feasible).total_cmp(&(b.saving * b.feasible)))
        .map(|(i, _)| i)
}

/// `ratios` with layer `l`'s density multiplied by `exp(-strength)` (capped at
/// `max_ratio`); `None` when the cap leaves it where it is.
fn pushed(ratios: &[f64], l: usize, strength: f64, max_ratio: f64) -> Option<Vec<f64>> {
    let mut r = ratios.to_vec();
    r[l] = (1.0 - (1.0 - ratios[l]) * (-strength).exp()).min(max_ratio);
    (r[l] > ratios[l] + 1e-9).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_removes_that_fraction_of_the_kept_weights() {
        let r = pushed(&[0.5, 0.9], 1, push_strength(0.25), 0.997).unwrap();
        assert_eq!(r[0], 0.5);
        assert!((r[1] - (1.0 - 0.1 * 0.75)).abs() < 1e-12);
        // Halving the strength removes less: 1 - sqrt(0.75) of the kept weights.
        let h = pushed(&[0.5, 0.9], 1, push_strength(0.25) / 2.0, 0.997).unwrap();
        assert!((h[1] - (1.0 - 0.1 * 0.75f64.sqrt())).abs() < 1e-12);
    }

    fn push(layer: usize, saving: f64, feasible: f64) -> Push {
        Push {
            layer,
            ratios: vec![],
            saving,
            feasible,
        }
    }

    fn choose_push(mut c: Vec<Push>, min_saving: f64) -> Option<Push> {
        best_push(&c, min_saving).map(|i| c.swap_remove(i))
    }

    #[test]
    fn the_push_with_the_largest_expected_saving_is_probed() {
        let c = vec![push(0, 0.2, 0.3), push(1, 0.1, 0.9), push(2, 0.3, 0.1)];
        assert_eq!(choose_push(c, 0.01).unwrap().layer, 1);
    }

    #[test]
    fn pushes_that_save_too_little_are_not_probed() {
        // layer 0 is surely feasible but saves 0.5 %: the riskier 5 % saving is probed
        let c = vec![push(0, 0.005, 1.0), push(1, 0.05, 0.05)];
        assert_eq!(choose_push(c, 0.01).unwrap().layer, 1);
        // nothing saves 1 %: the refinement ends
        assert!(choose_push(vec![push(0, 0.005, 1.0), push(1, 0.009, 0.9)], 0.01).is_none());
        // with no minimum any positive saving counts, a growth never does
        assert_eq!(
            choose_push(vec![push(0, 0.005, 1.0), push(1, -0.1, 1.0)], 0.0)
                .unwrap()
                .layer,
            0
        );
        assert!(choose_push(vec![], 0.0).is_none());
    }

    #[test]
    fn a_push_stops_at_the_largest_ratio() {
        let r = pushed(&[0.99], 0, push_strength(0.9), 0.995).unwrap();
        assert_eq!(r[0], 0.995);
        assert!(pushed(&[0.995], 0, push_strength(0.9), 0.995).is_none());
    }
}
