//! Stage 4, the candidates: the models the bits stage starts from. The `k` smallest
//! feasible probes of the ratio search, distinct, each retrained `final_epochs` more when
//! that is set (segment by segment, journaled, so a stopped run resumes mid-retraining),
//! and kept only where that retraining did not lower validation accuracy.

use std::path::Path;

use anyhow::Result;

use super::journal::CandidateReplay;
use super::oracle::Oracle;
use super::prober::{missing_checkpoint, Candidate, Prober};
use super::record::round3;

/// The seed (offset from the run's) of segment `segment` of candidate `index`'s final
/// retraining.
pub fn final_seed(index: usize, segment: usize) -> u64 {
    7 + 10_000 * index as u64 + segment as u64
}

/// The models the bits stage starts from: the `k` smallest feasible probes'
/// (a model with little room above the threshold may lose more to weight sharing than
/// its ratios saved), each retrained `final_epochs` more when that is set (kept only if
/// validation does not drop: a frontier probe passed partly by luck, and retraining
/// regresses to the mean).
pub fn candidates<O: Oracle>(p: &mut Prober<'_, O>, k: usize) -> Result<Vec<Candidate<O::Model>>> {
    let mut order: Vec<usize> = (0..p.feasible.len()).collect();
    order.sort_by(|&a, &b| p.feasible[a].bytes.total_cmp(&p.feasible[b].bytes));
    order.dedup_by(|a, b| p.feasible[*a].ratios == p.feasible[*b].ratios);
    order.truncate(k.max(1));
    if order.is_empty() {
        anyhow::bail!(
            "no probe reached the floor {:.4} (+ margin {}) on validation: the floor is unreachable with this \
             budget; lower --floor or raise --budget",
            p.at.floor,
            p.plan.margin,
        );
    }
    let mut out = Vec::new();
    for (index, i) in order.into_iter().enumerate() {
        let model = p.feasible[i]
            .model
            .take()
            .ok_or_else(|| missing_checkpoint(&p.feasible[i].ratios))?;
        let (ratios, before) = (p.feasible[i].ratios.clone(), p.feasible[i].accuracy);
        let epochs = p.cfg.final_epochs;
        let replayed = match (epochs > 0.0, p.journal_with_oracle().0) {
            (true, Some(j)) => j.replay_candidate(index, &ratios)?,
            _ => None,
        };
        let (model, accuracy) = match replayed {
            Some(CandidateReplay::Done {
                checkpoint,
                accuracy,
                seconds,
            }) => {
                p.count_replayed(seconds);
                say_final(
                    p,
                    &ratios,
                    format!("replayed from the journal → validation {accuracy:.4}"),
                );
                (p.oracle.load(&checkpoint)?, accuracy)
            }
            part if epochs > 0.0 => final_retraining(p, index, model, &ratios, before, part)?,
            _ => (model, before),
        };
        out.push(Candidate {
            ratios,
            model,
            accuracy,
        });
    }
    Ok(out)
}

/// Candidate `index`'s final retraining of `final_epochs`, from `model` (its probe's,
/// validation `before`), run as consecutive segments of at most one epoch
/// ([`Oracle::retrain_segment`]): the learning-rate schedule runs over the whole
/// retraining, segment `k` is seeded by ([`final_seed`]) the candidate and `k`, and the
/// momentum restarts at zero at each segment boundary (on an uninterrupted run as on a
/// resumed one, so both end alike). Each segment's model is journaled; `part` is what a
/// stopped run journaled of it, continued from its last segment. Keeps the retrained
/// model unless it scored lower than `before`.
fn final_retraining<O: Oracle>(
    p: &mut Prober<'_, O>,
    index: usize,
    model: O::Model,
    ratios: &[f64],
    before: f64,
    part: Option<CandidateReplay>,
) -> Result<(O::Model, f64)> {
    let epochs = p.cfg.final_epochs;
    let (done, mut current, mut accuracy, mut seconds) = match part {
        Some(CandidateReplay::Part {
            segments,
            checkpoint,
            accuracy,
            seconds,
        }) => {
            p.count_replayed(seconds);
            say_final(p,
                ratios,
                format!(
                    "resuming after epoch {segments} of {epochs} (validation {accuracy:.4}), replayed from \
                     the journal"
                ),
            );
            (
                segments,
                Some(p.oracle.load(&checkpoint)?),
                accuracy,
                seconds,
            )
        }
        _ => (0, None, before, 0.0),
    };
    let total = super::oracle::segments(epochs);
    for segment in done..total {
        p.stage = format!(
            "candidate {}'s final retraining ({:?}), epoch {} of {epochs}",
            index + 1,
            round3(ratios),
            segment + 1
        );
        let from = current.as_ref().unwrap_or(&model);
        let (next, m) =
            p.oracle
                .retrain_segment(from, epochs, segment, final_seed(index, segment))?;
        p.count(m.seconds);
        seconds += m.seconds;
        if let (Some(j), oracle) = p.journal_with_oracle() {
            let next = &next;
            j.record_epoch(
                index,
                ratios,
                segment + 1,
                epochs,
                m.accuracy,
                m.seconds,
                &|p: &Path| oracle.save(next, p),
            )?;
        }
        if total > 1 {
            say_final(
                p,
                ratios,
                format!(
                    "epoch {} of {epochs}, validation {:.4} ({:.0} s)",
                    segment + 1,
                    m.accuracy,
                    m.seconds
                ),
            );
        }
        current = Some(next);
        accuracy = m.accuracy;
    }
    say_final(
        p,
        ratios,
        format!(
            "{epochs:.1} epochs, validation {before:.4} → {accuracy:.4} ({seconds:.0} s){}",
            if accuracy < before {
                "; keeping the probe's model, which scored higher"
            } else {
                ""
            }
        ),
    );
    let kept = match current {
        Some(again) if accuracy >= before => (again, accuracy),
        _ => (model, before),
    };
    if let (Some(j), oracle) = p.journal_with_oracle() {
        let model = &kept.0;
        j.record_candidate(index, ratios, kept.1, seconds, &|p: &Path| {
            oracle.save(model, p)
        })?;
    }
    Ok(kept)
}

/// A progress line about the final retraining of the candidate with `ratios`.
fn say_final<O: Oracle>(p: &Prober<'_, O>, ratios: &[f64], what: String) {
    p.say(&format!("final retraining of {:?}: {what}", round3(ratios)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::config::SearchConfig;
    use crate::search::prober::tests::{fixed as cfg, prober};
    use crate::search::record::Phase;

    #[test]
    fn the_candidates_are_the_k_smallest_distinct_feasible_probes() {
        let cfg = cfg();
        let mut p = prober(&cfg);
        for r in [
            [0.3, 0.6, 0.8, 0.5],
            [0.4, 0.7, 0.9, 0.5],
            [0.4, 0.7, 0.9, 0.5],
            [0.35, 0.65, 0.85, 0.5],
            [0.99, 0.99, 0.999, 0.99],
        ] {
            p.probe_ratios(&r, Phase::Refine, None).unwrap();
        }
        // The last one misses: only the first four are feasible, two of them alike.
        assert_eq!(p.feasible.len(), 4);
        let c = candidates(&mut p, 2).unwrap();
        let ratios: Vec<_> = c.iter().map(|c| c.ratios.clone()).collect();
        assert_eq!(
            ratios,
            vec![vec![0.4, 0.7, 0.9, 0.5], vec![0.35, 0.65, 0.85, 0.5]]
        );
        // Without final retraining each keeps its probe's accuracy.
        assert_eq!(c[0].accuracy, p.feasible[1].accuracy);
        // k = 0 still gives the smallest.
        let mut p = prober(&cfg);
        p.probe_ratios(&[0.3, 0.6, 0.8, 0.5], Phase::Refine, None)
            .unwrap();
        assert_eq!(candidates(&mut p, 0).unwrap().len(), 1);
    }

    #[test]
    fn with_final_epochs_a_candidate_keeps_the_better_of_its_probe_and_its_retraining() {
        let cfg = SearchConfig {
            final_epochs: 2.0,
            ..cfg()
        };
        let mut p = prober(&cfg);
        p.probe_ratios(&[0.4, 0.7, 0.9, 0.5], Phase::Refine, None)
            .unwrap();
        let before = p.feasible[0].accuracy;
        let c = candidates(&mut p, 1).unwrap();
        assert!(c[0].accuracy >= before, "{} < {before}", c[0].accuracy);
    }

    #[test]
    fn no_feasible_probe_is_an_error_naming_the_floor() {
        let cfg = cfg();
        let mut p = prober(&cfg);
        p.probe_ratios(&[0.99, 0.99, 0.999, 0.99], Phase::Bisect, None)
            .unwrap();
        let e = candidates(&mut p, 2).err().unwrap().to_string();
        assert!(e.contains("no probe reached the floor 0.9900"), "{e}");
    }
}
