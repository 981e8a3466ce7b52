//! Probing in batches (`--workers N`): a stage proposes up to N probes at once and the
//! [`Oracle`] runs them side by side ([`Oracle::run_batch`]: worker processes or a Slurm
//! array). Every probe of a batch starts from the warm start the feasible models *before*
//! the batch give it, is seeded by its place in the run (probe index), and is journaled in
//! the batch's order once the batch is back; a rerun after a kill replays the journaled
//! prefix of a batch and asks the rest again (a worker's result file that is already there
//! is not recomputed). A probe whose worker failed twice is recorded as lost: it measured
//! nothing and never counts as feasible. The clock counts a batch's longest probe once.
//! A batch of one is [`Prober::probe_ratios`] or [`Prober::probe_bits`] itself.

use anyhow::Result;

use super::oracle::{Job, JobResult, Measure, Oracle};
use super::prober::{warm_model, Prober};
use super::record::{Phase, LOST};

/// A ratio probe to make: its ratios and the δ that gave them (bisection).
pub type Ask = (Vec<f64>, Option<f64>);

/// A bits probe's answer: its accuracy and, when feasible, the shared model.
pub type BitsAnswer<M> = (f64, Option<M>);

impl<O: Oracle> Prober<'_, O> {
    /// How many probes the next batch may hold: `workers`, within what the probe budget
    /// leaves (at least 1).
    pub fn batch_size(&self) -> usize {
        let q = self.cfg.workers.max(1);
        q.min(self.plan.ratio_probes.saturating_sub(self.ratio_probes()))
            .max(1)
    }

    /// Ratio probes side by side; each answer is the probe's validation accuracy, `None`
    /// when it was lost.
    pub fn probe_ratios_batch(&mut self, asks: &[Ask], phase: Phase) -> Result<Vec<Option<f64>>> {
        if let [(ratios, delta)] = asks {
            return Ok(vec![Some(self.probe_ratios(ratios, phase, *delta)?)]);
        }
        self.rounds += 1;
        let bits = self.provisional_bits();
        let start = self.trials.len();
        let mut replayed = Vec::new();
        for (ratios, _) in asks {
            match self.replay(phase, ratios, &bits)? {
                Some(r) => replayed.push(r),
                None => break,
            }
        }
        let done = replayed.len();
        let warm: Vec<Option<usize>> = asks[done..]
            .iter()
            .map(|(r, _)| self.warm_start(r))
            .collect();
        let epochs = self.plan.probe_epochs;
        let results = {
            let jobs = asks[done..]
                .iter()
                .zip(&warm)
                .enumerate()
                .map(|(i, ((ratios, _), w))| {
                    Ok(Job::Prune {
                        from: warm_model(&self.feasible, *w)?,
                        ratios: ratios.clone(),
                        epochs,
                        seed: 1000 + (start + done + i) as u64,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            self.oracle.run_batch(&jobs)?
        };
        let mut answers = Vec::with_capacity(asks.len());
        let mut longest = Longest::default();
        for ((ratios, _), (t, model)) in asks.iter().zip(replayed) {
            longest.replayed = longest.replayed.max(t.seconds);
            answers.push((!t.is_lost()).then_some(t.valid_accuracy));
            self.keep_replayed(ratios, &t, model);
        }
        for (i, ((ratios, delta), result)) in asks[done..].iter().zip(results).enumerate() {
            let seed = 1000 + (start + done + i) as u64;
            match result {
                Ok((model, m)) => {
                    let (model, m, best) = self.follow_up(warm[i], ratios, seed, model, m)?;
                    longest.new = longest.new.max(m.seconds);
                    let acc = self
                        .conclude_ratios(phase, ratios, *delta, warm[i], model, m, best, false)?;
                    answers.push(Some(acc));
                }
                Err(why) => {
                    self.lose(phase, ratios, &bits, *delta, &why)?;
                    answers.push(None);
                }
            }
        }
        self.count_batch(longest);
        Ok(answers)
    }

    /// Bits probes of `model` side by side, one per width vector; each answer is the
    /// accuracy and, when feasible, the shared model (`None`: lost).
    pub fn probe_bits_batch(
        &mut self,
        model: &O::Model,
        ratios: &[f64],
        widths: &[Vec<u8>],
        epochs: f64,
    ) -> Result<Vec<Option<BitsAnswer<O::Model>>>> {
        if let [bits] = widths {
            return Ok(vec![Some(self.probe_bits(model, ratios, bits, epochs)?)]);
        }
        self.rounds += 1;
        let start = self.trials.len();
        let mut answers = Vec::with_capacity(widths.len());
        let mut longest = Longest::default();
        for bits in widths {
            match self.replay(Phase::Bits, ratios, bits)? {
                Some((t, shared)) => {
                    longest.replayed = longest.replayed.max(t.seconds);
                    answers.push((!t.is_lost()).then_some((t.valid_accuracy, shared)));
                }
                None => break,
            }
        }
        let done = answers.len();
        let jobs: Vec<Job<O::Model>> = widths[done..]
            .iter()
            .enumerate()
            .map(|(i, bits)| Job::Quantize {
                model,
                bits: bits.clone(),
                epochs,
                seed: 2000 + (start + done + i) as u64,
            })
            .collect();
        let results: Vec<JobResult<O::Model>> = self.oracle.run_batch(&jobs)?;
        for (bits, result) in widths[done..].iter().zip(results) {
            match result {
                Ok((shared, m)) => {
                    longest.new = longest.new.max(m.seconds);
                    answers.push(Some(self.conclude_bits(ratios, bits, shared, m, false)?));
                }
                Err(why) => {
                    self.lose(Phase::Bits, ratios, bits, None, &why)?;
                    answers.push(None);
                }
            }
        }
        self.count_batch(longest);
        Ok(answers)
    }

    /// Records a probe whose worker failed twice: nothing measured, never feasible.
    fn lose(
        &mut self,
        phase: Phase,
        ratios: &[f64],
        bits: &[u8],
        delta: Option<f64>,
        why: &str,
    ) -> Result<()> {
        let nothing = Measure::default();
        let epochs = match phase {
            Phase::Bits => self.plan.bits_epochs,
            _ => self.plan.probe_epochs,
        };
        let mut trial = self.trial(phase, ratios, bits, &nothing, epochs);
        trial.valid_loss = None;
        trial.delta = delta;
        trial.warm_start = LOST.into();
        eprintln!("{phase} probe {}: lost ({why})", trial.probe);
        self.log(trial, None)
    }

    fn count_batch(&mut self, longest: Longest) {
        self.count_replayed(longest.replayed);
        self.count(longest.new);
    }
}

/// A batch's longest replayed and longest new probe, in seconds.
#[derive(Default)]
struct Longest {
    replayed: f64,
    new: f64,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::search::config::{Auto, SearchConfig};
    use crate::search::prober::Clock;
    use crate::search::synthetic::{Landscape, Model, Synthetic};

    /// The synthetic oracle whose workers fail on every second job of a batch.
    struct Flaky(Synthetic);

    impl Oracle for Flaky {
        type Model = Model;
        fn prune(
            &mut self,
            f: Option<&Model>,
            r: &[f64],
            e: f64,
            s: u64,
        ) -> Result<(Model, Measure)> {
            self.0.prune(f, r, e, s)
        }
        fn retrain(&mut self, m: &Model, e: f64, s: u64) -> Result<(Model, Measure)> {
            self.0.retrain(m, e, s)
        }
        fn quantize(&mut self, m: &Model, b: &[u8], e: f64, s: u64) -> Result<(Model, Measure)> {
            self.0.quantize(m, b, e, s)
        }
        fn run_batch(&mut self, jobs: &[Job<Model>]) -> Result<Vec<JobResult<Model>>> {
            let mut out = crate::search::oracle::in_turn(&mut self.0, jobs)?;
            for r in out.iter_mut().skip(1).step_by(2) {
                *r = Err("worker failed twice".into());
            }
            Ok(out)
        }
        fn evaluate(&mut self, m: &Model) -> Result<Measure> {
            self.0.evaluate(m)
        }
        fn quantize_one(&mut self, m: &Model, l: usize, b: u8) -> Result<Measure> {
            self.0.quantize_one(m, l, b)
        }
        fn save(&self, m: &Model, p: &Path) -> Result<()> {
            self.0.save(m, p)
        }
        fn load(&self, p: &Path) -> Result<Model> {
            self.0.load(p)
        }
    }

    #[test]
    fn a_lost_probe_is_recorded_never_feasible_and_a_batch_counts_its_longest_probe() {
        let land = Landscape::lenet();
        let cfg = SearchConfig {
            second_look: Auto::Is(0.0),
            margin: Auto::Is(0.0),
            bits_margin: 0.0,
            ..SearchConfig::default()
        };
        let oracle = Flaky(Synthetic::new(land.clone(), 1));
        let mut p = Prober::new(oracle, &cfg, 0.98, land.layers.clone(), Clock::Simulated);
        // Two easy probes side by side: the second one's worker fails.
        let asks: Vec<Ask> = vec![(vec![0.1; 4], None), (vec![0.2; 4], None)];
        let answers = p.probe_ratios_batch(&asks, Phase::Refine).unwrap();
        assert!(answers[0].is_some_and(|a| a >= 0.98), "{answers:?}");
        assert_eq!(answers[1], None);
        assert_eq!(p.trials.len(), 2);
        assert!(p.trials[1].is_lost() && !p.trials[1].feasible);
        assert_eq!(p.feasible.len(), 1);
        assert_eq!(p.rounds, 1);
        // side by side: the batch took as long as its longest probe, not the sum
        assert_eq!(p.elapsed(), p.trials[0].seconds);
        // a batch of one is the one-at-a-time probe
        let one = p
            .probe_ratios_batch(&[(vec![0.3; 4], None)], Phase::Refine)
            .unwrap();
        assert!(one[0].is_some());
        assert_eq!((p.rounds, p.trials.len()), (2, 3));
    }
}
