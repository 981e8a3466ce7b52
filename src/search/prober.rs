//! The prober owns probing for every stage: it picks each probe's warm start (the most
//! pruned feasible model it can grow from), asks the [`Oracle`], retrains once more a
//! probe that lands just under the target, journals and records every probe, keeps the
//! feasible models, and keeps the budget (minutes or ratio probes). Stages decide *what*
//! to probe; the prober decides nothing about that.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Result};

use super::config::SearchConfig;
use super::estimate;
use super::journal::{self, Journal};
use super::oracle::{Measure, Oracle};
use super::outputs;
use super::plan::{self, Plan};
use super::record::{round3, Phase, Trial};

/// The accuracies a search compares with, worked out once from the floor and margin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// The decoded file's validation accuracy must reach this.
    pub floor: f64,
    /// A ratio probe is feasible at this (floor + margin).
    pub probe: f64,
    /// A bits probe is feasible at this (floor + bits margin: the file is the model the
    /// probe measured, so 0 asks exactly the floor of it).
    pub bits: f64,
}

impl Thresholds {
    pub fn new(floor: f64, margin: f64, bits_margin: f64) -> Thresholds {
        Thresholds {
            floor,
            probe: floor + margin,
            bits: floor + bits_margin,
        }
    }
}

/// A feasible pruned model kept as a warm start (`model` is `None` only for a probe
/// replayed from a finished run's journal, whose probe checkpoints are gone).
pub struct Feasible<M> {
    pub ratios: Vec<f64>,
    pub model: Option<M>,
    pub bytes: f64,
    pub accuracy: f64,
}

/// The model of feasible probe `i` (`None`: the dense model), or an error saying its
/// checkpoint is gone.
pub(super) fn warm_model<M>(feasible: &[Feasible<M>], i: Option<usize>) -> Result<Option<&M>> {
    let Some(i) = i else { return Ok(None) };
    let f = &feasible[i];
    f.model
        .as_ref()
        .map(Some)
        .ok_or_else(|| missing_checkpoint(&f.ratios))
}

/// The error of a feasible probe whose journaled checkpoint is gone.
pub(super) fn missing_checkpoint(ratios: &[f64]) -> anyhow::Error {
    anyhow!(
        "the journal's checkpoint of the feasible probe {:?} is missing: delete the run folder (or choose \
         another --out) to search afresh",
        round3(ratios)
    )
}

/// A model the bits stage may start from.
pub struct Candidate<M> {
    pub ratios: Vec<f64>,
    pub model: M,
    /// Its validation accuracy before weight sharing.
    pub accuracy: f64,
}

/// The bits stage's answer for one candidate: the widths and, when a probe measured a
/// shared model at exactly those widths, that model (the file is made from it).
pub struct Widths<M> {
    pub bits: Vec<u8>,
    pub shared: Option<M>,
}

/// A journaled choice read back: the candidate and its widths.
pub type Replayed<M> = (Candidate<M>, Widths<M>);

/// How the prober tells time: the wall clock (real probes) or the sum of the oracle's
/// reported seconds (a synthetic oracle).
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    Wall(Instant),
    Simulated,
}

/// Probing, shared by every stage.
pub struct Prober<'s, O: Oracle> {
    pub oracle: O,
    /// The settings as given.
    pub cfg: &'s SearchConfig,
    /// The numbers the search works with: the settings given, and what the calibration
    /// worked out for those left `"auto"`.
    pub plan: Plan,
    pub at: Thresholds,
    /// `(weights, outputs)` of each layer, for size estimates.
    pub layer_sizes: Vec<(usize, usize)>,
    pub layer_names: Vec<String>,
    pub trials: Vec<Trial>,
    pub feasible: Vec<Feasible<O::Model>>,
    journal: Option<Journal>,
    /// Where `trials.csv` is rewritten after each probe (`None`: nowhere).
    trials_csv: Option<PathBuf>,
    clock: Clock,
    /// Seconds counted besides the wall clock: replayed probes (wall) or every oracle
    /// answer (simulated).
    counted: f64,
    pub quiet: bool,
    /// Rounds of probing so far: a batch of probes side by side is one round.
    pub rounds: usize,
    /// What the search is doing ("the bisection", "candidate 2's final retraining, epoch 3
    /// of 8", …), for the report of an interrupted run.
    pub stage: String,
}

impl<'s, O: Oracle> Prober<'s, O> {
    /// A prober for a search under `floor`, its thresholds from the settings given (the
    /// calibration may move them).
    pub fn new(
        oracle: O,
        cfg: &'s SearchConfig,
        floor: f64,
        layers: Vec<(String, usize, usize)>,
        clock: Clock,
    ) -> Self {
        let plan = initial_plan(cfg, layers.len());
        Prober {
            oracle,
            cfg,
            at: Thresholds::new(floor, plan.margin, cfg.bits_margin),
            plan,
            layer_sizes: layers.iter().map(|(_, w, o)| (*w, *o)).collect(),
            layer_names: layers.into_iter().map(|(n, _, _)| n).collect(),
            trials: Vec::new(),
            feasible: Vec::new(),
            journal: None,
            trials_csv: None,
            clock,
            counted: 0.0,
            quiet: true,
            rounds: 0,
            stage: String::new(),
        }
    }

    /// Journals every probe and replays what the journal already holds.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Rewrites `path` (trials.csv) after every probe and prints progress unless `quiet`.
    pub fn with_outputs(mut self, trials_csv: &Path, quiet: bool) -> Self {
        self.trials_csv = Some(trials_csv.to_path_buf());
        self.quiet = quiet;
        self
    }

    /// Counts `seconds` of work done outside the oracle (a simulated clock's sensitivity
    /// sweep); the wall clock counts it by itself.
    pub fn count(&mut self, seconds: f64) {
        if let Clock::Simulated = self.clock {
            self.counted += seconds;
        }
    }

    /// Seconds spent, counting replayed probes' recorded time.
    pub fn elapsed(&self) -> f64 {
        match self.clock {
            Clock::Wall(t) => t.elapsed().as_secs_f64() + self.counted,
            Clock::Simulated => self.counted,
        }
    }

    /// Seconds into the run at which `fraction` of the minute cap is spent (never, without
    /// a cap).
    pub fn share_end(&self, fraction: f64) -> f64 {
        match self.plan.minutes {
            Some(m) => fraction * m * 60.0,
            None => f64::INFINITY,
        }
    }

    /// Whether `fraction` of the minute cap is spent.
    pub fn past(&self, fraction: f64) -> bool {
        self.elapsed() > self.share_end(fraction)
    }

    /// Seconds the stages after the refinement are expected to take (the candidates' final
    /// retraining, the bits stage's sweeps and probes), from the epoch time the ratio probes
    /// measured; 0 before any was measured.
    pub fn reserve_after_refinement(&self) -> f64 {
        let sc = self.cfg;
        // The fastest ratio probe (second looks run twice) per epoch of retraining.
        let per_epoch = self
            .trials
            .iter()
            .filter(|t| t.phase.is_ratio() && t.seconds > 0.0)
            .map(|t| t.seconds / self.plan.probe_epochs.max(1e-9))
            .fold(f64::INFINITY, f64::min);
        if !per_epoch.is_finite() {
            return 0.0;
        }
        let k = sc.bits_candidates as f64;
        let widths = f64::from(sc.bits_max.saturating_sub(sc.bits_min) + 1);
        // A solo-sharing evaluation costs about a twentieth of an epoch (5,000 of 55,000
        // images, forward only); three quarters of the bits probes are typically used.
        let sweep = widths * self.layer_sizes.len() as f64 * per_epoch * 0.05;
        let probes = 0.75 * sc.bits_probes as f64 * self.plan.bits_epochs * per_epoch;
        k * (sc.final_epochs * per_epoch + sweep + probes)
    }

    /// Ratio probes so far.
    pub fn ratio_probes(&self) -> usize {
        self.trials.iter().filter(|t| t.phase.is_ratio()).count()
    }

    /// Why a ratio stage (`phase`) must end now, if it must: the journal being replayed
    /// ended it here (whatever the clock says on this run), or the probe budget is spent.
    pub fn stage_over(&self, phase: Phase) -> Option<&'static str> {
        if self.journal.as_ref().is_some_and(|j| j.stage_ended(phase)) {
            return Some("where the journaled run ended it");
        }
        self.probes_spent().then_some("probe budget spent")
    }

    /// Counts seconds of work replayed from the journal outside the oracle (the sweep).
    pub fn count_replayed(&mut self, seconds: f64) {
        self.counted += seconds;
    }

    /// Whether the ratio probe budget is spent.
    pub fn probes_spent(&self) -> bool {
        self.ratio_probes() >= self.plan.ratio_probes
    }

    /// Seconds the plan's probes are expected to take here, from the calibration's epoch
    /// time (`None` before one was measured): every ratio probe (a fifth more for second
    /// looks), each candidate's final retraining and bits probes.
    pub fn planned_seconds(&self) -> Option<f64> {
        let (pl, sc) = (&self.plan, self.cfg);
        (pl.epoch_seconds > 0.0).then(|| {
            let ratio = pl.ratio_probes as f64 * pl.probe_epochs * 1.2;
            let bits = sc.bits_probes as f64 * pl.bits_epochs;
            (ratio + sc.bits_candidates as f64 * (sc.final_epochs + bits)) * pl.epoch_seconds
        })
    }

    /// One line saying what the search will work with, and where each number came from.
    pub fn plan_line(&self) -> String {
        let pl = &self.plan;
        let how = |a: super::config::Auto| match a {
            super::config::Auto::Auto => "measured",
            super::config::Auto::Is(_) => "given",
        };
        let mut line = format!(
            "plan: ratio probes of {:.2} epochs ({}), noise σ {:.4} (seeds {:.4}, binomial σ of the validation set \
             {:.4}), feasible at floor + {:.4} ({}), second looks within {:.4}; up to {} ratio probes and {} bits \
             probes of {:.2} epochs",
            pl.probe_epochs,
            how(self.cfg.probe_epochs),
            pl.noise,
            pl.seed_spread,
            pl.binomial,
            pl.margin,
            how(self.cfg.margin),
            pl.second_look,
            pl.ratio_probes,
            self.cfg.bits_probes * self.cfg.bits_candidates,
            pl.bits_epochs,
        );
        if let Some(s) = self.planned_seconds() {
            line += &format!(
                ": about {:.0} min here ({:.1} s an epoch)",
                s / 60.0,
                pl.epoch_seconds
            );
        }
        line
    }

    /// What to tell the user when a minute cap allows fewer than [`plan::FEW_PROBES`] ratio
    /// probes (or fewer than the plan's), with the cap that would allow them.
    pub fn budget_warning(&self) -> Option<String> {
        let pl = &self.plan;
        let minutes = pl.minutes?;
        if pl.epoch_seconds <= 0.0 {
            return None;
        }
        let probe = pl.probe_epochs * pl.epoch_seconds;
        let spent = self.elapsed();
        let share = self.cfg.refine_share;
        let fit = plan::probes_within(minutes, probe, spent, share);
        let want = plan::FEW_PROBES.min(pl.ratio_probes);
        (fit < want).then(|| {
            format!(
                "the budget of {minutes} min allows about {fit} ratio probes of {:.2} epochs ({probe:.0} s each here); \
                 {want} need about --budget {:.0} (without --budget the search takes its {} probes)",
                pl.probe_epochs,
                plan::minutes_for(want, probe, spent, share).ceil(),
                pl.ratio_probes
            )
        })
    }

    /// A warning: printed (unless quiet) and kept for the report and `summary.json`.
    pub fn warn(&mut self, msg: &str) {
        if !self.quiet {
            eprintln!("warning: {msg}");
        }
        self.plan.warnings.push(msg.to_string());
    }

    pub fn say(&self, msg: &str) {
        if !self.quiet {
            let s = self.elapsed() as u64;
            eprintln!("[{:>2}:{:02}] {msg}", s / 60, s % 60);
        }
    }

    pub fn est_bytes(&self, ratios: &[f64], bits: &[u8]) -> f64 {
        let d: Vec<f64> = ratios.iter().map(|r| 1.0 - r).collect();
        estimate::model_bytes(&self.layer_sizes, &d, bits, self.bias_bytes())
    }

    /// Bytes of one bias in the search's file.
    pub fn bias_bytes(&self) -> estimate::BiasBytes {
        crate::compress::encode::file_precision(self.cfg.bias_precision).width() as f64
    }

    pub fn provisional_bits(&self) -> Vec<u8> {
        vec![self.cfg.provisional_bits; self.layer_sizes.len()]
    }

    /// The smallest feasible model so far.
    pub fn best(&self) -> Option<&Feasible<O::Model>> {
        self.feasible
            .iter()
            .min_by(|a, b| a.bytes.total_cmp(&b.bytes))
    }

    /// Index of the most pruned feasible model whose ratios are all ≤ `ratios` (it can be
    /// pruned further to them); `None` = the dense model.
    pub(super) fn warm_start(&self, ratios: &[f64]) -> Option<usize> {
        self.feasible
            .iter()
            .enumerate()
            .filter(|(_, f)| f.ratios.iter().zip(ratios).all(|(a, b)| *a <= *b + 1e-12))
            .min_by(|a, b| a.1.bytes.total_cmp(&b.1.bytes))
            .map(|(i, _)| i)
    }

    /// The journal's record of the probe about to run, if it has it (its seconds are not
    /// counted here: a batch counts its longest probe once).
    pub(super) fn replay(
        &mut self,
        phase: Phase,
        ratios: &[f64],
        bits: &[u8],
    ) -> Result<Option<(Trial, Option<O::Model>)>> {
        let Some(j) = self.journal.as_mut() else {
            return Ok(None);
        };
        let Some(r) = j.replay_probe(phase, ratios, bits)? else {
            return Ok(None);
        };
        let model = match &r.checkpoint {
            Some(p) => Some(self.oracle.load(p)?),
            None => None,
        };
        self.say(&format!(
            "{phase:>6} probe {:>2}: replayed from the journal → validation {:.4}",
            r.trial.probe, r.trial.valid_accuracy
        ));
        self.trials.push(r.trial.clone());
        Ok(Some((r.trial, model)))
    }

    /// Appends a trial (with the model of a feasible one) to the journal and trials.csv.
    pub(super) fn log(&mut self, trial: Trial, model: Option<&O::Model>) -> Result<()> {
        if let Some(j) = self.journal.as_mut() {
            let oracle = &self.oracle;
            match model {
                Some(m) => j.record_probe(&trial, Some(&|p: &Path| oracle.save(m, p)))?,
                None => j.record_probe(&trial, None)?,
            }
        }
        self.trials.push(trial);
        self.write_trials()
    }

    /// Rewrites trials.csv (when the prober has one) with every probe so far.
    pub fn write_trials(&self) -> Result<()> {
        match &self.trials_csv {
            Some(p) => outputs::write_trials(&self.trials, p),
            None => Ok(()),
        }
    }

    pub(super) fn trial(
        &self,
        phase: Phase,
        ratios: &[f64],
        bits: &[u8],
        m: &Measure,
        epochs: f64,
    ) -> Trial {
        Trial {
            probe: self.trials.len() + 1,
            phase,
            delta: None,
            ratios: ratios.to_vec(),
            bits: bits.to_vec(),
            valid_accuracy: m.accuracy,
            valid_loss: Some(m.loss),
            feasible: false,
            nonzeros: m.nonzeros,
            estimated_bytes: self.est_bytes(ratios, bits),
            seconds: m.seconds,
            warm_start: String::new(),
            lr_restarts: m.lr_restarts,
            epochs: Some(epochs),
        }
    }

    /// Prunes to `ratios` from the best warm start, retrains, and records the probe;
    /// returns its validation accuracy.
    pub fn probe_ratios(
        &mut self,
        ratios: &[f64],
        phase: Phase,
        delta: Option<f64>,
    ) -> Result<f64> {
        self.rounds += 1;
        let bits = self.provisional_bits();
        if let Some((t, model)) = self.replay(phase, ratios, &bits)? {
            self.counted += t.seconds;
            self.keep_replayed(ratios, &t, model);
            return Ok(t.valid_accuracy);
        }
        let warm = self.warm_start(ratios);
        let from = warm_model(&self.feasible, warm)?;
        let seed = 1000 + self.trials.len() as u64;
        let (model, m) = self
            .oracle
            .prune(from, ratios, self.plan.probe_epochs, seed)?;
        let (model, m, best_of_two) = self.follow_up(warm, ratios, seed, model, m)?;
        self.conclude_ratios(phase, ratios, delta, warm, model, m, best_of_two, true)
    }

    /// Keeps a replayed ratio probe's model when it was feasible.
    pub(super) fn keep_replayed(&mut self, ratios: &[f64], t: &Trial, model: Option<O::Model>) {
        if t.feasible {
            self.feasible.push(Feasible {
                ratios: ratios.to_vec(),
                model,
                bytes: t.estimated_bytes,
                accuracy: t.valid_accuracy,
            });
        }
    }

    /// What a ratio probe does after its first retraining: once more when it lands just
    /// under the target (`recovery_gap`), and a second look when it lands within
    /// `second_look` of it. Returns the model kept, the measure judged by, and the kept
    /// model's own accuracy when a second look averaged two.
    pub(super) fn follow_up(
        &mut self,
        warm: Option<usize>,
        ratios: &[f64],
        seed: u64,
        mut model: O::Model,
        mut m: Measure,
    ) -> Result<(O::Model, Measure, Option<f64>)> {
        let epochs = self.plan.probe_epochs;
        let mut best_of_two: Option<f64> = None;
        let gap = self.cfg.recovery_gap;
        if m.accuracy < self.at.probe && m.accuracy >= self.at.probe - gap {
            self.say(&format!(
                "    probe {}: validation {:.4} just under {:.4}: retraining once more",
                self.trials.len() + 1,
                m.accuracy,
                self.at.probe
            ));
            let (again, m2) = self.oracle.retrain(&model, epochs, seed + 500)?;
            m = Measure {
                seconds: m.seconds + m2.seconds,
                lr_restarts: m.lr_restarts + m2.lr_restarts,
                ..m2
            };
            model = again;
        }
        // A second look: a probe within `second_look` of the target is retrained again from
        // the same warm start with another seed, and judged by the mean of the two (its
        // noise shrinks by √2 where a decision is closest to a coin flip). The better of
        // the two models is kept.
        let band = self.plan.second_look;
        if band > 0.0 && (m.accuracy - self.at.probe).abs() < band {
            let from = warm_model(&self.feasible, warm)?;
            let (other, m2) = self.oracle.prune(from, ratios, epochs, seed + 700)?;
            self.say(&format!(
                "    probe {}: validation {:.4} within {band:.4} of {:.4}: a second look scored {:.4}",
                self.trials.len() + 1,
                m.accuracy,
                self.at.probe,
                m2.accuracy
            ));
            let mean = 0.5 * (m.accuracy + m2.accuracy);
            let seconds = m.seconds + m2.seconds;
            let lr_restarts = m.lr_restarts + m2.lr_restarts;
            if m2.accuracy > m.accuracy {
                model = other;
                m = m2;
            }
            // The better model is kept; the pair's mean is what the search judges by.
            best_of_two = Some(m.accuracy);
            m = Measure {
                accuracy: mean,
                seconds,
                lr_restarts,
                ..m
            };
        }
        Ok((model, m, best_of_two))
    }

    /// Records a measured ratio probe (counting its seconds when `count`: a batch counts
    /// its longest probe once) and keeps its model when feasible; returns its accuracy.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conclude_ratios(
        &mut self,
        phase: Phase,
        ratios: &[f64],
        delta: Option<f64>,
        warm: Option<usize>,
        model: O::Model,
        m: Measure,
        best_of_two: Option<f64>,
        count: bool,
    ) -> Result<f64> {
        let bits = self.provisional_bits();
        let feasible = m.accuracy >= self.at.probe;
        let mut trial = self.trial(phase, ratios, &bits, &m, self.plan.probe_epochs);
        trial.delta = delta;
        trial.feasible = feasible;
        trial.warm_start = match warm {
            Some(i) => format!("feasible {:?}", round3(&self.feasible[i].ratios)),
            None => "dense".into(),
        };
        self.say(&format!(
            "{phase:>6} probe {:>2}: ratios {:?} → validation {:.4} {} (≈{:.1} KB, {:.0} s){}",
            trial.probe,
            round3(ratios),
            m.accuracy,
            if feasible {
                "feasible"
            } else {
                "below floor+margin"
            },
            trial.estimated_bytes / 1000.0,
            trial.seconds,
            restarted(m.lr_restarts)
        ));
        let bytes = trial.estimated_bytes;
        if count {
            self.count(trial.seconds);
        }
        self.log(trial, feasible.then_some(&model))?;
        if feasible {
            self.feasible.push(Feasible {
                ratios: ratios.to_vec(),
                model: Some(model),
                bytes,
                accuracy: best_of_two.unwrap_or(m.accuracy),
            });
        }
        Ok(m.accuracy)
    }

    /// Shares `model`'s weights with `bits`, retrains the codebooks `epochs`, records the
    /// probe (feasible at the bits threshold); returns its accuracy.
    /// One bits probe: `model` shared at `bits`, codebooks retrained `epochs`. Returns the
    /// validation accuracy and, when feasible, the shared model itself (journaled, so a
    /// resumed run gets the same one back): the file is made from it.
    pub fn probe_bits(
        &mut self,
        model: &O::Model,
        ratios: &[f64],
        bits: &[u8],
        epochs: f64,
    ) -> Result<(f64, Option<O::Model>)> {
        self.rounds += 1;
        if let Some((t, shared)) = self.replay(Phase::Bits, ratios, bits)? {
            self.counted += t.seconds;
            return Ok((t.valid_accuracy, shared));
        }
        let seed = 2000 + self.trials.len() as u64;
        // No second look: the measured model is the one that would be written, and its
        // validation accuracy is exact, not an estimate.
        let (shared, m) = self.oracle.quantize(model, bits, epochs, seed)?;
        self.conclude_bits(ratios, bits, shared, m, true)
    }

    /// Records a measured bits probe (counting its seconds when `count`); returns its
    /// accuracy and, when feasible, the shared model.
    pub(super) fn conclude_bits(
        &mut self,
        ratios: &[f64],
        bits: &[u8],
        shared: O::Model,
        m: Measure,
        count: bool,
    ) -> Result<(f64, Option<O::Model>)> {
        let mut trial = self.trial(Phase::Bits, ratios, bits, &m, self.plan.bits_epochs);
        trial.feasible = m.accuracy >= self.at.bits;
        trial.warm_start = "final".into();
        self.say(&format!(
            "  bits probe {:>2}: {bits:?} → validation {:.4} {} (≈{:.1} KB){}",
            trial.probe,
            m.accuracy,
            if trial.feasible {
                "feasible"
            } else {
                "below floor + bits margin"
            },
            trial.estimated_bytes / 1000.0,
            restarted(m.lr_restarts)
        ));
        let feasible = trial.feasible;
        if count {
            self.count(trial.seconds);
        }
        self.log(trial, feasible.then_some(&shared))?;
        Ok((m.accuracy, feasible.then_some(shared)))
    }

    /// The journaled choice (ratios, widths, model, accuracy) of a run that got past the
    /// bits stage, with the bits probes recorded before it.
    pub fn replay_chosen(&mut self) -> Result<Option<Replayed<O::Model>>> {
        let Some(j) = self.journal.as_mut() else {
            return Ok(None);
        };
        let Some((trials, chosen)) = j.replay_chosen()? else {
            return Ok(None);
        };
        for t in trials {
            self.counted += t.seconds;
            self.trials.push(t);
        }
        self.counted += chosen.seconds;
        let model = self.oracle.load(&chosen.checkpoint)?;
        let shared = match &chosen.shared {
            Some(p) => Some(self.oracle.load(p)?),
            None => None,
        };
        self.say("final model and widths: replayed from the journal");
        Ok(Some((
            Candidate {
                ratios: chosen.ratios,
                model,
                accuracy: chosen.accuracy.unwrap_or(self.at.probe),
            },
            Widths {
                bits: chosen.bits,
                shared,
            },
        )))
    }

    /// Journals the chosen model and widths (and the shared model measured at them).
    pub fn record_chosen(
        &mut self,
        c: &Candidate<O::Model>,
        w: &Widths<O::Model>,
        seconds: f64,
    ) -> Result<()> {
        if let Some(j) = self.journal.as_mut() {
            let oracle = &self.oracle;
            let save_shared = w.shared.as_ref().map(|m| move |p: &Path| oracle.save(m, p));
            j.record_final(
                &c.ratios,
                &w.bits,
                &|p: &Path| oracle.save(&c.model, p),
                save_shared.as_ref().map(|f| f as journal::Saver),
                seconds,
                c.accuracy,
            )?;
        }
        Ok(())
    }

    /// The journal, to drop probe checkpoints after a finished run.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// The journal and the oracle (which saves what is journaled), for a stage that
    /// journals more than probes (the candidates' final retraining).
    pub(super) fn journal_with_oracle(&mut self) -> (Option<&mut Journal>, &O) {
        (self.journal.as_mut(), &self.oracle)
    }
}

/// The plan before any calibration: the numbers given, and for those left `"auto"` the
/// values tuned on LeNet-5 (the calibration replaces them).
pub fn initial_plan(cfg: &SearchConfig, layers: usize) -> Plan {
    let probe_epochs = cfg.probe_epochs.or(1.5);
    let ratio_probes = match cfg.budget_probes {
        0 => plan::ratio_probes(layers),
        b => b,
    };
    Plan {
        probe_epochs,
        bits_epochs: cfg.bits_epochs.or(probe_epochs / 3.0),
        margin: cfg.margin.or(0.001),
        second_look: cfg.second_look.or(0.0006),
        noise: 0.0,
        seed_spread: 0.0,
        binomial: 0.0,
        ratio_probes,
        refine_probes: match cfg.refine_probes {
            0 => ratio_probes,
            r => r,
        },
        minutes: (cfg.budget_minutes > 0.0).then_some(cfg.budget_minutes),
        epoch_seconds: 0.0,
        ladder: Vec::new(),
        warnings: Vec::new(),
    }
}

/// What a probe line adds when the probe's retraining diverged and started again.
fn restarted(lr_restarts: u32) -> String {
    crate::train::restarts_said(lr_restarts)
        .map(|s| format!("; its retraining {s}"))
        .unwrap_or_default()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::search::config::Auto;
    use crate::search::synthetic::{Landscape, Synthetic};

    /// A prober over the noiseless LeNet-5 landscape, floor 0.99, the given settings.
    pub(in crate::search) fn prober(cfg: &SearchConfig) -> Prober<'_, Synthetic> {
        let land = Landscape {
            noise: 0.0,
            ..Landscape::lenet()
        };
        let layers = land.layers.clone();
        Prober::new(Synthetic::new(land, 1), cfg, 0.99, layers, Clock::Simulated)
    }

    /// Settings that need no calibration: fixed probe length and margin, no second looks.
    pub(in crate::search) fn fixed() -> SearchConfig {
        SearchConfig {
            probe_epochs: Auto::Is(1.5),
            margin: Auto::Is(0.001),
            second_look: Auto::Is(0.0),
            ..SearchConfig::default()
        }
    }

    #[test]
    fn the_initial_plan_takes_what_is_given_and_lenet_numbers_for_auto() {
        let cfg = SearchConfig {
            probe_epochs: Auto::Is(4.0),
            budget_minutes: 3.0,
            ..SearchConfig::default()
        };
        let p = prober(&cfg);
        assert_eq!(p.plan.probe_epochs, 4.0);
        assert!((p.plan.bits_epochs - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(p.plan.margin, 0.001);
        assert_eq!(p.plan.ratio_probes, plan::ratio_probes(4));
        assert_eq!(p.plan.minutes, Some(3.0));
        assert!((p.at.probe - 0.991).abs() < 1e-12);
        // no cap: no stage ever runs out of time
        let cfg = fixed();
        let p = prober(&cfg);
        assert_eq!(p.share_end(0.5), f64::INFINITY);
        assert!(!p.past(0.01));
    }

    #[test]
    fn a_probe_warm_starts_from_the_most_pruned_feasible_model_below_it() {
        let cfg = fixed();
        let mut p = prober(&cfg);
        let a = p
            .probe_ratios(&[0.3, 0.6, 0.8, 0.5], Phase::Bisect, None)
            .unwrap();
        assert!(a >= p.at.probe, "{a}");
        assert_eq!(p.trials[0].warm_start, "dense");
        assert_eq!(p.trials[0].epochs, Some(1.5));
        p.probe_ratios(&[0.4, 0.7, 0.9, 0.5], Phase::Refine, None)
            .unwrap();
        assert!(p.trials[1].warm_start.starts_with("feasible [0.3"));
        // a probe below the first in one layer cannot grow from it
        p.probe_ratios(&[0.2, 0.7, 0.9, 0.5], Phase::Refine, None)
            .unwrap();
        assert_eq!(p.trials[2].warm_start, "dense");
        assert_eq!(p.feasible.len(), 3);
        assert_eq!(p.best().unwrap().ratios, vec![0.4, 0.7, 0.9, 0.5]);
    }

    #[test]
    fn the_probe_budget_counts_bisection_and_refinement_probes_only() {
        let cfg = SearchConfig {
            budget_probes: 2,
            ..fixed()
        };
        let mut p = prober(&cfg);
        p.probe_ratios(&[0.3, 0.6, 0.8, 0.5], Phase::Bisect, None)
            .unwrap();
        assert!(!p.probes_spent());
        let model = p.feasible[0].model.clone().unwrap();
        p.probe_bits(&model, &[0.3, 0.6, 0.8, 0.5], &[8, 8, 8, 8], 0.5)
            .unwrap();
        assert!(!p.probes_spent());
        p.probe_ratios(&[0.4, 0.6, 0.8, 0.5], Phase::Refine, None)
            .unwrap();
        assert!(p.probes_spent());
        assert_eq!(p.stage_over(Phase::Refine), Some("probe budget spent"));
    }

    #[test]
    fn a_probe_near_the_target_gets_a_second_look_judged_by_the_mean() {
        // The landscape's accuracy at these ratios, so the probe lands on the target.
        let ratios = [0.5, 0.9, 0.98, 0.8];
        let acc = Landscape::lenet().accuracy(&ratios);
        let cfg = SearchConfig {
            second_look: Auto::Is(0.01),
            ..fixed()
        };
        let mut p = prober(&cfg);
        p.at.probe = acc;
        p.probe_ratios(&ratios, Phase::Refine, None).unwrap();
        // two retrainings measured, one trial recorded
        assert_eq!(p.trials.len(), 1);
        let t = &p.trials[0];
        assert!(t.seconds > 2.0 * 1.5 * Landscape::lenet().seconds_per_epoch);
        // without noise both looks agree: the mean is the retrained accuracy
        assert!(
            (t.valid_accuracy - acc).abs() < 1e-3,
            "{} vs {acc}",
            t.valid_accuracy
        );
    }

    #[test]
    fn a_journaled_probe_is_replayed_instead_of_probed_again() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = fixed();
        let ratios = [[0.3, 0.6, 0.8, 0.5], [0.4, 0.7, 0.9, 0.5]];
        let first: Vec<Trial> = {
            let mut p = prober(&cfg).with_journal(Journal::open(dir.path(), "k").unwrap());
            for r in &ratios {
                p.probe_ratios(r, Phase::Bisect, None).unwrap();
            }
            p.trials.clone()
        };
        let mut p = prober(&cfg).with_journal(Journal::open(dir.path(), "k").unwrap());
        for r in &ratios {
            p.probe_ratios(r, Phase::Bisect, None).unwrap();
        }
        // the same trials (to the JSON's last digit), each feasible model back from its
        // checkpoint
        assert_eq!(p.trials.len(), first.len());
        for (a, b) in p.trials.iter().zip(&first) {
            assert_eq!(
                (a.probe, &a.ratios, a.feasible),
                (b.probe, &b.ratios, b.feasible)
            );
            assert_eq!(a.warm_start, b.warm_start);
            assert!((a.valid_accuracy - b.valid_accuracy).abs() < 1e-12);
        }
        assert!(p.feasible.iter().all(|f| f.model.is_some()));
        assert_eq!(p.elapsed(), first.iter().map(|t| t.seconds).sum::<f64>());
        drop(p);
        // a run asking for another probe than the journal's is refused
        let mut p = prober(&cfg).with_journal(Journal::open(dir.path(), "k").unwrap());
        let e = p
            .probe_ratios(&[0.1, 0.1, 0.1, 0.1], Phase::Bisect, None)
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("does not match this run"),
            "{e:#}"
        );
    }

    #[test]
    fn a_minute_cap_warns_when_it_allows_too_few_probes() {
        let cfg = SearchConfig {
            budget_minutes: 2.0,
            ..fixed()
        };
        let mut p = prober(&cfg);
        assert_eq!(p.budget_warning(), None, "no epoch time measured yet");
        p.plan.epoch_seconds = 10.0;
        let w = p.budget_warning().unwrap();
        assert!(w.contains("allows about") && w.contains("--budget"), "{w}");
        p.plan.minutes = Some(60.0);
        assert_eq!(p.budget_warning(), None);
    }
}
