//! The automatic search: `dc-search --floor F <model>`. Maximise compression subject to
//! validation accuracy ≥ F, with retraining inside the loop:
//!
//! 1. **sensitivity** — each layer's accuracy curve when pruned alone ([`sensitivity`]);
//! 2. **bisection** — one scalar δ (tolerated solo drop) turns the curves into a ratio
//!    per layer ([`delta`]); argmin's Brent root finder brackets the δ where accuracy after
//!    prune + retrain crosses floor + margin; each probe is warm-started from the most
//!    pruned feasible model it can grow from;
//! 3. **refinement** — per-layer pushes from the smallest feasible model, each layer with
//!    its own step; a Gaussian process over the per-layer ratio vector ([`gp`]) picks the
//!    push with the best expected saving × probability of feasibility, among pushes that
//!    save at least `refine_min_saving` of the bytes;
//! 4. **final retraining** of the chosen ratios (kept only if validation does not drop:
//!    a probe at the frontier passed partly by luck, and retraining regresses to the mean);
//! 5. **bits** — per layer, the fewest weight bits that keep floor + half the margin after
//!    codebook retraining (binary search, largest layer first);
//! 6. **file** — weight sharing with those bits, codebook retraining, encode, decode, and
//!    the decoded file's validation accuracy must reach the floor; then the test set, once.
//!
//! Every finished probe goes to the run folder's [`journal`]; a rerun replays it and goes
//! on, so a crash, a kill or Ctrl-C loses at most the probe that was running.

pub mod config;
pub mod delta;
pub mod estimate;
pub mod gp;
pub mod journal;
pub mod outputs;
pub mod sensitivity;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use argmin::core::{CostFunction, Executor};
use argmin::solver::brent::BrentRoot;
use serde::{Deserialize, Serialize};

use crate::compress::prune::PruneRule;
use crate::compress::{encode, Trainer};
use crate::config::Config;
use crate::data::Data;
use crate::format;
use crate::masked::Masked;
use crate::models::Net;
use crate::runtime::Runtime;
use crate::train;

/// One probe of the search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trial {
    pub probe: usize,
    pub phase: String,
    pub delta: Option<f64>,
    pub ratios: Vec<f64>,
    pub bits: Vec<u8>,
    pub valid_accuracy: f64,
    pub feasible: bool,
    pub nonzeros: usize,
    pub estimated_bytes: f64,
    pub seconds: f64,
    pub warm_start: String,
}

/// Time spent per stage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageTimes {
    pub sensitivity: f64,
    pub bisection: f64,
    pub refinement: f64,
    pub final_retrain: f64,
    pub bits: f64,
    pub encode_and_verify: f64,
    pub total: f64,
}

/// The search's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub model: String,
    pub dataset: String,
    pub floor: f64,
    pub margin: f64,
    pub dense_valid_accuracy: f64,
    pub ratios: Vec<f64>,
    pub bits: Vec<u8>,
    pub layers: Vec<String>,
    pub file: PathBuf,
    pub file_bytes: usize,
    pub dense_bytes: usize,
    pub compression_ratio: f64,
    pub decoded_valid_accuracy: f64,
    pub decoded_test_accuracy: f64,
    /// Images of the validation and test splits (with `--validation-from test` both are
    /// halves of the test set).
    #[serde(default)]
    pub valid_images: usize,
    #[serde(default)]
    pub test_images: usize,
    pub probes: usize,
    pub times: StageTimes,
    /// Where the dense model came from: a `--weights` file, or training with the recipe.
    #[serde(default)]
    pub dense_weights: String,
}

/// A feasible pruned model kept as a warm start (`model` is `None` only for a probe replayed
/// from a finished run's journal, whose probe checkpoints are gone and not needed).
struct Feasible {
    ratios: Vec<f64>,
    model: Option<(Net, Masked)>,
    bytes: f64,
    /// The model's validation accuracy.
    accuracy: f64,
}

impl Feasible {
    fn model(&self) -> Result<&(Net, Masked)> {
        self.model.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "the journal's checkpoint of the feasible probe {:?} is missing: delete the run folder (or \
                 choose another --out) to search afresh",
                round3(&self.ratios)
            )
        })
    }
}

/// The search's working state.
pub struct Search<'a> {
    pub cfg: &'a Config,
    pub rt: &'a Runtime,
    pub data: &'a Data,
    pub floor: f64,
    pub out: PathBuf,
    dense: &'a Net,
    trainer: Trainer<'a>,
    target: f64,
    start: Instant,
    pub trials: Vec<Trial>,
    feasible: Vec<Feasible>,
    layer_sizes: Vec<(usize, usize)>,
    journal: Option<journal::Journal>,
    /// Seconds of the probes read back from the journal (they count against the budget).
    replayed_seconds: f64,
}

impl<'a> Search<'a> {
    pub fn new(
        cfg: &'a Config,
        rt: &'a Runtime,
        data: &'a Data,
        dense: &'a Net,
        floor: f64,
        out: &Path,
    ) -> Search<'a> {
        let layer_sizes = dense
            .arch
            .layers
            .iter()
            .map(|l| (l.weight_numel() as usize, l.outputs() as usize))
            .collect();
        Search {
            cfg,
            rt,
            data,
            floor,
            out: out.to_path_buf(),
            dense,
            trainer: Trainer {
                train: &data.train,
                dense: &cfg.train,
                cfg: &cfg.compress,
                quiet: true,
            },
            target: floor + cfg.search.margin,
            start: Instant::now(),
            trials: Vec::new(),
            feasible: Vec::new(),
            layer_sizes,
            journal: None,
            replayed_seconds: 0.0,
        }
    }

    /// After the outcome is written: drops the journal's probe checkpoints.
    pub fn finish(&self) -> Result<()> {
        match &self.journal {
            Some(j) => j.drop_probe_checkpoints(),
            None => Ok(()),
        }
    }

    /// Journals every probe to `journal` and replays what it already holds.
    pub fn with_journal(mut self, journal: journal::Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Minutes spent, counting the replayed probes' recorded time.
    fn elapsed_min(&self) -> f64 {
        (self.start.elapsed().as_secs_f64() + self.replayed_seconds) / 60.0
    }

    /// Whether the probe budget (`search.budget_probes`, 0 = none) is spent.
    fn probes_spent(&self) -> bool {
        let b = self.cfg.search.budget_probes;
        b > 0 && self.trials.iter().filter(|t| t.phase != "bits").count() >= b
    }

    /// Appends a trial (and the model of a feasible one) to the journal and trials.csv.
    fn record(&mut self, trial: Trial, model: Option<(&Net, &Masked)>) -> Result<()> {
        if let Some(j) = self.journal.as_mut() {
            j.record_probe(&trial, model)?;
        }
        self.trials.push(trial);
        outputs::write_trials(&self.trials, &self.out.join("trials.csv"))
    }

    /// The journaled result of the probe about to run, if the journal has it.
    fn replay(
        &mut self,
        phase: &str,
        ratios: &[f64],
        bits: &[u8],
    ) -> Result<Option<journal::Replayed>> {
        let Some(j) = self.journal.as_mut() else {
            return Ok(None);
        };
        let r = j.replay_probe(phase, ratios, bits, self.dense)?;
        if let Some(r) = &r {
            self.replayed_seconds += r.trial.seconds;
            self.say(&format!(
                "{phase:>8} probe {:>2}: replayed from the journal → validation {:.4}",
                r.trial.probe, r.trial.valid_accuracy
            ));
            self.trials.push(r.trial.clone());
        }
        Ok(r)
    }

    fn say(&self, msg: &str) {
        if !self.rt.quiet {
            let s = self.start.elapsed().as_secs();
            eprintln!("[{:>2}:{:02}] {msg}", s / 60, s % 60);
        }
    }

    fn est_bytes(&self, ratios: &[f64], bits: &[u8]) -> f64 {
        let d: Vec<f64> = ratios.iter().map(|r| 1.0 - r).collect();
        estimate::model_bytes(&self.layer_sizes, &d, bits)
    }

    fn provisional_bits(&self) -> Vec<u8> {
        vec![self.cfg.search.provisional_bits; self.layer_sizes.len()]
    }

    /// The most pruned feasible model whose ratios are all ≤ `ratios` (it can be pruned
    /// further to them), else the dense model.
    fn warm_start(&self, ratios: &[f64]) -> Result<(Net, String)> {
        let best = self
            .feasible
            .iter()
            .filter(|f| f.ratios.iter().zip(ratios).all(|(a, b)| *a <= *b + 1e-12))
            .min_by(|a, b| a.bytes.total_cmp(&b.bytes));
        Ok(match best {
            Some(f) => (
                f.model()?.0.copy(),
                format!("feasible {:?}", round3(&f.ratios)),
            ),
            None => (self.dense.copy(), "dense".into()),
        })
    }

    /// Prunes to `ratios` from the best warm start, retrains, and records the trial.
    pub fn probe_ratios(&mut self, ratios: &[f64], phase: &str, delta: Option<f64>) -> Result<f64> {
        if let Some(r) = self.replay(phase, ratios, &self.provisional_bits())? {
            if r.trial.feasible {
                self.feasible.push(Feasible {
                    ratios: ratios.to_vec(),
                    model: r.model,
                    bytes: r.trial.estimated_bytes,
                    accuracy: r.trial.valid_accuracy,
                });
            }
            return Ok(r.trial.valid_accuracy);
        }
        let t0 = Instant::now();
        let (net, warm) = self.warm_start(ratios)?;
        let mut state = Masked::dense(&net);
        self.rt.reseed(1000 + self.trials.len() as u64);
        let rules: Vec<PruneRule> = ratios.iter().map(|&r| PruneRule::SparseRatio(r)).collect();
        let mut cfg = self.cfg.compress.clone();
        cfg.schedule = self.cfg.search.probe_schedule;
        cfg.lr_scale = self.cfg.search.lr_scale;
        let trainer = Trainer {
            cfg: &cfg,
            ..self.trainer_ref()
        };
        let epochs = self.cfg.search.probe_epochs;
        trainer.prune_and_retrain(&net, &mut state, &rules, epochs)?;
        let mut acc = train::evaluate(&net, &self.data.valid).accuracy;
        if acc < self.target && acc >= self.target - self.cfg.search.recovery_gap {
            self.say(&format!(
                "    probe {}: validation {acc:.4} just under {:.4}: retraining once more",
                self.trials.len() + 1,
                self.target
            ));
            trainer.retrain(&net, &mut state, epochs, "recover")?;
            acc = train::evaluate(&net, &self.data.valid).accuracy;
        }
        let bytes = self.est_bytes(ratios, &self.provisional_bits());
        let feasible = acc >= self.target;
        let trial = Trial {
            probe: self.trials.len() + 1,
            phase: phase.into(),
            delta,
            ratios: ratios.to_vec(),
            bits: self.provisional_bits(),
            valid_accuracy: acc,
            feasible,
            nonzeros: state.nonzeros(&net),
            estimated_bytes: bytes,
            seconds: t0.elapsed().as_secs_f64(),
            warm_start: warm,
        };
        self.say(&format!(
            "{phase:>8} probe {:>2}: ratios {:?} → validation {:.4} {} (≈{:.1} KB, {:.0} s)",
            trial.probe,
            round3(ratios),
            acc,
            if feasible {
                "feasible"
            } else {
                "below floor+margin"
            },
            bytes / 1000.0,
            trial.seconds
        ));
        self.record(trial, feasible.then_some((&net, &state)))?;
        if feasible {
            self.feasible.push(Feasible {
                ratios: ratios.to_vec(),
                model: Some((net, state)),
                bytes,
                accuracy: acc,
            });
        }
        Ok(acc)
    }

    fn trainer_ref(&self) -> Trainer<'a> {
        Trainer {
            train: self.trainer.train,
            dense: self.trainer.dense,
            cfg: self.trainer.cfg,
            quiet: self.trainer.quiet,
        }
    }

    fn best(&self) -> Option<&Feasible> {
        self.feasible
            .iter()
            .min_by(|a, b| a.bytes.total_cmp(&b.bytes))
    }

    /// Stage 2: Brent's method over δ.
    pub fn bisect(&mut self, curves: &[Vec<(f64, f64)>], dense_acc: f64) -> Result<()> {
        let max_delta = curves
            .iter()
            .flat_map(|c| c.iter().map(|(_, a)| dense_acc - a))
            .fold(0.0f64, f64::max)
            .max(1e-3);
        struct Cost<'s, 'a> {
            search: RefCell<&'s mut Search<'a>>,
            curves: &'s [Vec<(f64, f64)>],
            dense_acc: f64,
            error: &'s RefCell<Option<anyhow::Error>>,
        }
        impl CostFunction for Cost<'_, '_> {
            type Param = f64;
            type Output = f64;
            fn cost(&self, delta: &f64) -> Result<f64, argmin::core::Error> {
                let mut s = self.search.borrow_mut();
                if *delta <= 0.0 {
                    return Ok(self.dense_acc - s.target);
                }
                if s.elapsed_min() > 0.45 * s.cfg.search.budget_minutes {
                    return Err(anyhow::anyhow!("time budget of this stage spent"));
                }
                if s.probes_spent() {
                    return Err(anyhow::anyhow!("probe budget spent"));
                }
                let delta = MIN_DELTA * (*delta).exp();
                let ratios = delta::ratios_for_delta(
                    self.curves,
                    self.dense_acc,
                    delta,
                    s.cfg.search.max_ratio,
                );
                match s.probe_ratios(&ratios, "bisect", Some(delta)) {
                    Ok(acc) => Ok(acc - s.target),
                    Err(e) => {
                        let msg = format!("{e:#}");
                        *self.error.borrow_mut() = Some(e);
                        Err(anyhow::anyhow!(msg))
                    }
                }
            }
        }
        let error = RefCell::new(None);
        let max_iters = self.cfg.search.bisection_probes;
        let outcome = {
            let cost = Cost {
                search: RefCell::new(&mut *self),
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
        match outcome {
            Ok(()) => self.say("bisection converged"),
            Err(e) => self.say(&format!("bisection ended: {e}")),
        }
        Ok(())
    }

    /// Stage 3: per-layer pushes from the incumbent (the smallest feasible model), chosen
    /// by a Gaussian process. Every layer has its own push (the fraction of its kept weights
    /// the next probe of it removes): a feasible probe becomes the incumbent and its layer's
    /// push grows, an infeasible one halves it, and a layer whose push fell under
    /// `refine_min_push` is done. Each step the GP — fitted to every probe's validation
    /// accuracy over the log-density vector — scores the one-layer pushes by expected saving
    /// × probability of feasibility, and the best of those saving at least
    /// `refine_min_saving` of the bytes is probed, warm-started from the incumbent. So the
    /// budget goes where the bytes are and where pruning still works, rather than to
    /// whichever small step looks surest.
    pub fn refine(&mut self) -> Result<()> {
        let sc = &self.cfg.search;
        let lo_density = 1.0 - sc.max_ratio;
        let to_u = |r: f64| ((1.0 - r).max(lo_density)).ln() / lo_density.ln();
        let mut push = vec![push_strength(sc.refine_push); self.layer_sizes.len()];
        let min_push = push_strength(sc.refine_min_push);
        let bits = self.provisional_bits();
        for step in 0..sc.refine_probes {
            if self.elapsed_min() > 0.7 * sc.budget_minutes {
                self.say("refinement: time budget for this stage spent");
                break;
            }
            if self.probes_spent() {
                self.say("refinement: probe budget spent");
                break;
            }
            let Some(best) = self.best() else {
                self.say("refinement skipped: no feasible probe yet");
                break;
            };
            let (best_bytes, incumbent) = (best.bytes, best.ratios.clone());
            let probes: Vec<&Trial> = self.trials.iter().filter(|t| t.phase != "bits").collect();
            let xs: Vec<Vec<f64>> = probes
                .iter()
                .map(|t| t.ratios.iter().map(|&r| to_u(r)).collect())
                .collect();
            let ys: Vec<f64> = probes.iter().map(|t| t.valid_accuracy).collect();
            let model = gp::Gp::fit(&xs, &ys);
            let candidates: Vec<Push> = (0..incumbent.len())
                .filter(|&l| push[l] >= min_push)
                .filter_map(|l| {
                    let ratios = pushed(&incumbent, l, push[l], sc.max_ratio)?;
                    let saving = (best_bytes - self.est_bytes(&ratios, &bits)) / best_bytes;
                    let u: Vec<f64> = ratios.iter().map(|&r| to_u(r)).collect();
                    let feasible = model
                        .as_ref()
                        .map_or(0.5, |m| gp::prob_at_least(m, &u, self.target));
                    Some(Push {
                        layer: l,
                        ratios,
                        saving,
                        feasible,
                    })
                })
                .collect();
            let Some(Push { layer, ratios, .. }) = choose_push(candidates, sc.refine_min_saving)
            else {
                self.say(&format!(
                    "refinement converged after {step} probes: every layer's push is under {:.1} % \
                     of its kept weights or would save under {:.1} % of the bytes",
                    100.0 * sc.refine_min_push,
                    100.0 * sc.refine_min_saving
                ));
                break;
            };
            let acc = self.probe_ratios(&ratios, "refine", None)?;
            push[layer] *= if acc >= self.target { 1.5 } else { 0.5 };
        }
        Ok(())
    }

    /// Stage 4: longer retraining of the best feasible ratios (from their warm model).
    fn final_retrain(&mut self) -> Result<(Vec<f64>, Net, Masked)> {
        if let Some((ratios, net, state, secs)) = match self.journal.as_mut() {
            Some(j) => j.replay_final(self.dense)?,
            None => None,
        } {
            self.replayed_seconds += secs;
            self.say("final retraining: replayed from the journal");
            return Ok((ratios, net, state));
        }
        let Some(best) = self.best() else {
            bail!(
                "no probe reached the floor {:.4} (+ margin {}) on validation: the floor is unreachable with this \
                 budget; lower --floor or raise --budget (see {})",
                self.floor,
                self.cfg.search.margin,
                self.out.join("trials.csv").display()
            );
        };
        let (net, state) = best.model()?;
        let (ratios, before) = (best.ratios.clone(), best.accuracy);
        let (net, mut state) = (net.copy(), state.copy());
        self.rt.reseed(7);
        let mut cfg = self.cfg.compress.clone();
        cfg.lr_scale = self.cfg.search.lr_scale;
        let trainer = Trainer {
            cfg: &cfg,
            ..self.trainer_ref()
        };
        let t0 = Instant::now();
        trainer.retrain(&net, &mut state, self.cfg.search.final_epochs, "final")?;
        let acc = train::evaluate(&net, &self.data.valid).accuracy;
        self.say(&format!(
            "final retraining of {:?}: {:.1} epochs, validation {before:.4} → {acc:.4} ({:.0} s){}",
            round3(&ratios),
            self.cfg.search.final_epochs,
            t0.elapsed().as_secs_f64(),
            if acc < before {
                "; keeping the probe's model, which scored higher"
            } else {
                ""
            }
        ));
        let (net, state) = if acc < before {
            let (n, s) = self.best().expect("checked above").model()?;
            (n.copy(), s.copy())
        } else {
            (net, state)
        };
        if let Some(j) = self.journal.as_mut() {
            j.record_final(&ratios, &net, &state, t0.elapsed().as_secs_f64())?;
        }
        Ok((ratios, net, state))
    }

    /// Quantizes a copy with `bits`, retrains the codebooks for `epochs`, returns it and its
    /// validation accuracy.
    fn quantized(
        &self,
        net: &Net,
        state: &Masked,
        bits: &[u8],
        epochs: f64,
        seed: u64,
    ) -> Result<(Net, Masked, f64)> {
        let net = net.copy();
        let mut state = state.copy();
        self.rt.reseed(seed);
        self.trainer_ref()
            .quantize_and_retrain(&net, &mut state, bits, epochs)?;
        let acc = train::evaluate(&net, &self.data.valid).accuracy;
        Ok((net, state, acc))
    }

    /// Stage 5: per layer (largest first) the fewest bits that stay feasible. A bits probe
    /// needs floor + half the margin: the ratio probes spent the other half on their own
    /// noise, and a model that just passed floor + margin would otherwise lose every width
    /// to a one-image fluctuation (session 4: fc1 kept 8 bits after scoring 0.9908 at 5
    /// against 0.9910). The decoded file still has to reach the floor itself.
    fn search_bits(&mut self, ratios: &[f64], net: &Net, state: &Masked) -> Result<Vec<u8>> {
        let bits_target = self.floor + 0.5 * self.cfg.search.margin;
        let sc = &self.cfg.search;
        let mut bits = vec![sc.bits_max; ratios.len()];
        let mut order: Vec<usize> = (0..ratios.len()).collect();
        order.sort_by(|&a, &b| {
            let na = (1.0 - ratios[a]) * self.layer_sizes[a].0 as f64;
            let nb = (1.0 - ratios[b]) * self.layer_sizes[b].0 as f64;
            nb.total_cmp(&na)
        });
        for &layer in &order {
            let (mut lo, mut hi) = (sc.bits_min, bits[layer]);
            while lo < hi {
                if self.elapsed_min() > 0.92 * sc.budget_minutes {
                    self.say("bits: time budget spent; keeping the widths found so far");
                    return Ok(bits);
                }
                let mid = (lo + hi) / 2;
                let mut trial_bits = bits.clone();
                trial_bits[layer] = mid;
                if let Some(r) = self.replay("bits", ratios, &trial_bits)? {
                    if r.trial.feasible {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                    continue;
                }
                let t0 = Instant::now();
                let (qnet, qstate, acc) = self.quantized(
                    net,
                    state,
                    &trial_bits,
                    sc.bits_epochs,
                    2000 + self.trials.len() as u64,
                )?;
                let feasible = acc >= bits_target;
                let trial = Trial {
                    probe: self.trials.len() + 1,
                    phase: "bits".into(),
                    delta: None,
                    ratios: ratios.to_vec(),
                    bits: trial_bits.clone(),
                    valid_accuracy: acc,
                    feasible,
                    nonzeros: qstate.nonzeros(&qnet),
                    estimated_bytes: self.est_bytes(ratios, &trial_bits),
                    seconds: t0.elapsed().as_secs_f64(),
                    warm_start: "final".into(),
                };
                self.say(&format!(
                    "    bits probe {:>2}: {} at {mid} bits → validation {acc:.4} {}",
                    trial.probe,
                    self.dense.arch.layers[layer].name,
                    if feasible {
                        "feasible"
                    } else {
                        "below floor + margin/2"
                    }
                ));
                self.record(trial, None)?;
                if feasible {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            bits[layer] = hi;
        }
        Ok(bits)
    }

    /// Stages 2–6 after the sensitivity sweep. Returns the outcome (test evaluated once).
    pub fn run(
        &mut self,
        points: &[sensitivity::Point],
        dense_acc: f64,
        times: &mut StageTimes,
    ) -> Result<Outcome> {
        let names: Vec<String> = self
            .dense
            .arch
            .layers
            .iter()
            .map(|l| l.name.clone())
            .collect();
        let curves: Vec<Vec<(f64, f64)>> = names
            .iter()
            .map(|n| sensitivity::curve(points, n).collect())
            .collect();
        let t = Instant::now();
        self.bisect(&curves, dense_acc)?;
        times.bisection = t.elapsed().as_secs_f64();
        let t = Instant::now();
        self.refine()?;
        times.refinement = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (ratios, net, state) = self.final_retrain()?;
        times.final_retrain = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut bits = self.search_bits(&ratios, &net, &state)?;
        times.bits = t.elapsed().as_secs_f64();
        let t = Instant::now();
        // Stage 6: the file. If the decoded file misses the floor, widen every layer by a bit.
        let file = self.out.join(format!("{}.dcz", self.cfg.model));
        let epochs = self.cfg.compress.codebook_epochs;
        let (bytes, decoded, valid) = loop {
            let (qnet, qstate, _) = self.quantized(&net, &state, &bits, epochs, 3000)?;
            let model = encode::to_model(
                &qnet,
                &qstate,
                self.cfg.data.dataset.as_str(),
                self.cfg.data.input_scale,
                self.cfg.compress.bias_precision,
            )?;
            let bytes = format::encode(&model)?;
            let decoded = encode::to_net_like(&format::decode(&bytes)?, &qnet)?;
            crate::commands::verify_decoded(&qnet, &decoded)?;
            let valid = train::evaluate(&decoded, &self.data.valid).accuracy;
            self.say(&format!(
                "file: bits {bits:?} → {} bytes, decoded validation {valid:.4}",
                bytes.len()
            ));
            if valid >= self.floor || bits.iter().all(|&b| b >= self.cfg.search.bits_max) {
                break (bytes, decoded, valid);
            }
            bits.iter_mut()
                .for_each(|b| *b = (*b + 1).min(self.cfg.search.bits_max));
        };
        if valid < self.floor {
            bail!(
                "the decoded file reaches validation accuracy {valid:.4}, under the floor {:.4}; lower --floor or raise \
                 search.margin (trials in {})",
                self.floor,
                self.out.join("trials.csv").display()
            );
        }
        crate::paths::write_atomic(&file, &bytes)?;
        let test = train::evaluate(&decoded, &self.data.test).accuracy;
        times.encode_and_verify = t.elapsed().as_secs_f64();
        let dense_bytes = self.dense.arch.num_params() as usize * 4;
        Ok(Outcome {
            model: self.cfg.model.clone(),
            dataset: self.cfg.data.dataset.as_str().into(),
            floor: self.floor,
            margin: self.cfg.search.margin,
            dense_valid_accuracy: dense_acc,
            ratios,
            bits,
            layers: names,
            file,
            file_bytes: bytes.len(),
            dense_bytes,
            compression_ratio: dense_bytes as f64 / bytes.len() as f64,
            decoded_valid_accuracy: valid,
            decoded_test_accuracy: test,
            valid_images: self.data.valid.len(),
            test_images: self.data.test.len(),
            probes: self.trials.len(),
            times: times.clone(),
            dense_weights: match &self.cfg.weights {
                Some(p) => format!("imported from {}", p.display()),
                None => "trained with the config's [train] recipe (cached)".into(),
            },
        })
    }
}

/// The smallest tolerated drop the bisection considers (x = 0 is the dense model).
const MIN_DELTA: f64 = 2e-4;

fn round3(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
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

/// The push to probe: the largest expected saving (saving × probability of feasibility)
/// among those that save at least `min_saving` of the bytes; `None` when none does.
fn choose_push(candidates: Vec<Push>, min_saving: f64) -> Option<Push> {
    candidates
        .into_iter()
        .filter(|c| c.saving > 0.0 && c.saving >= min_saving)
        .max_by(|a, b| (a.saving * a.feasible).total_cmp(&(b.saving * b.feasible)))
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
