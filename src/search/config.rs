//! The `[search]` section of a config: how the automatic search spends its budget.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::check::{need, within};
use crate::compress::gates::GateConfig;
use crate::compress::{BiasPrecision, RetrainLr, Schedule};

/// The search's accuracy floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Floor {
    /// Validation accuracy, a fraction in (0, 1].
    Absolute(f64),
    /// Percentage points below the dense model's validation accuracy.
    MaxDrop(f64),
}

impl Floor {
    /// The floor for a dense model of validation accuracy `dense`.
    pub fn resolve(self, dense: f64) -> f64 {
        match self {
            Floor::Absolute(f) => f,
            Floor::MaxDrop(p) => dense - p / 100.0,
        }
    }

    /// How the run folder names it.
    pub fn tag(self) -> String {
        match self {
            Floor::Absolute(f) => format!("floor{f}"),
            Floor::MaxDrop(p) => format!("maxdrop{p}"),
        }
    }
}

/// How the δ bracket is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bisection {
    Climb,
    Brent,
}

/// How the bits stage searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BitsMethod {
    Sweep,
    Probe,
}

/// Which weights a search keeps, before it prunes by magnitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Sparsifier {
    /// The largest weights (Deep Compression's rule): the search starts from the dense
    /// model.
    #[default]
    Magnitude,
    /// L0 gates trained from the dense model first (`crate::compress::gates`); the search
    /// starts from the gated model and prunes by magnitude on top of its zeros.
    L0,
}

/// A search setting given as a number, or `"auto"`: worked out by the search from the
/// model at hand (see [`super::plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawAuto", into = "RawAuto")]
pub enum Auto {
    Auto,
    Is(f64),
}

/// [`Auto`] as written in TOML: `"auto"` or a number.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawAuto {
    Number(f64),
    Word(String),
}

impl TryFrom<RawAuto> for Auto {
    type Error = String;
    fn try_from(r: RawAuto) -> std::result::Result<Self, String> {
        match r {
            RawAuto::Number(x) => Ok(Auto::Is(x)),
            RawAuto::Word(w) if w == "auto" => Ok(Auto::Auto),
            RawAuto::Word(w) => Err(format!("{w:?}: give \"auto\" or a number")),
        }
    }
}

impl From<Auto> for RawAuto {
    fn from(a: Auto) -> RawAuto {
        match a {
            Auto::Auto => RawAuto::Word("auto".into()),
            Auto::Is(x) => RawAuto::Number(x),
        }
    }
}

impl Auto {
    /// The number given, or `worked_out` for `"auto"`.
    pub fn or(self, worked_out: f64) -> f64 {
        match self {
            Auto::Auto => worked_out,
            Auto::Is(x) => x,
        }
    }

    /// Range check of `key` when a number is given.
    fn check(self, key: &str, ok: impl Fn(f64) -> bool, range: &str) -> Result<()> {
        match self {
            Auto::Auto => Ok(()),
            Auto::Is(x) => need(ok(x), key, x, &format!("{range} or \"auto\"")),
        }
    }
}

/// Search settings. What depends on the model (probe length, noise, margins, the probe
/// budget) is `"auto"` by default and worked out before the bisection (`super::plan`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Probes count as feasible only at validation accuracy ≥ floor + margin; the final
    /// decoded file must reach the floor itself. `"auto"`: 1.25 × the measured noise of a
    /// probe (on LeNet-5 about 0.001 = 5 of 5,000 validation images; with 0.0005 a v0.1
    /// search chose a frontier probe at 99.06 % whose 8-epoch retraining scored 98.98 %,
    /// and no bit width then kept the floor).
    pub margin: Auto,
    /// Retraining epochs of each ratio probe (warm-started from the best feasible model).
    /// `"auto"`: the calibration's choice, the shortest retraining whose doubling gains less
    /// than half the noise.
    pub probe_epochs: Auto,
    /// How a probe prunes from its warm start to its ratios (gradual: a few cubic steps
    /// over the first half of the probe's epochs; all-at-once: one step).
    pub probe_schedule: Schedule,
    /// Learning rate of probes and of the final retraining, as a fraction of the dense
    /// recipe's (the `[compress]` lr_scale still rules codebook retraining). Measured on
    /// LeNet-5 at 0.55/0.95/0.955/0.8 pruned, 6 epochs: 0.3 → 98.70 % validation, the
    /// paper's 0.1 → 98.44 %.
    pub lr_scale: f64,
    /// Where the learning rate of probes and of the final retraining comes from:
    /// `"recipe"` (`base_lr` × `lr_scale`), `"auto"` (a learning-rate range test after the
    /// sensitivity sweep, `compress::lr_range`) or a number. Absent: `"auto"` for a
    /// TorchScript config without `[train]`, `"recipe"` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrain_lr: Option<RetrainLr>,
    /// Bias precision of the search's file (overrides `[compress]`). The bits probes
    /// measure their models with biases rounded to it, so it costs no accuracy unseen.
    pub bias_precision: BiasPrecision,
    /// A probe that misses the target by at most this much validation accuracy is
    /// retrained once more for `probe_epochs` and evaluated again before it is given up.
    pub recovery_gap: f64,
    /// A ratio probe whose validation accuracy lands within this of the target is probed
    /// again (same warm start, another seed) and judged by the mean of the two; 0 = never.
    /// `"auto"`: 0.75 × the measured noise.
    pub second_look: Auto,
    /// Retraining epochs of the chosen ratios before weight sharing.
    pub final_epochs: f64,
    /// Codebook retraining epochs of each bits probe; `"auto"`: a third of a ratio
    /// probe's.
    pub bits_epochs: Auto,
    /// A bits probe is feasible at validation accuracy ≥ floor + bits_margin. A feasible
    /// bits probe keeps the shared model it measured, and the file is made from that very
    /// model (no retraining after it), so its accuracy is the file's: 0 asks exactly the
    /// floor of it.
    pub bits_margin: f64,
    /// A cap in minutes on the whole search (sensitivity to file), 0 = none. Without one
    /// the search does not depend on the clock: the same command and seed write the same
    /// file on any machine.
    pub budget_minutes: f64,
    /// Most ratio probes (calibration, bisection and refinement) in all; 0 = worked out
    /// from the model (`super::plan::ratio_probes`).
    pub budget_probes: usize,
    /// How the δ bracket is searched: `climb` (from the δ the curves predict, up by
    /// `climb_factor` while feasible, then halving) or `brent` (argmin's Brent from the
    /// largest δ of the curves).
    pub bisection: Bisection,
    /// Most probes of the δ bisection.
    pub bisection_probes: u64,
    /// The climb multiplies δ by this after each feasible probe.
    pub climb_factor: f64,
    /// The climb stops once the bracket is narrower than this in ln δ.
    pub bisection_tolerance: f64,
    /// Fractions of a minute cap by which the bisection, the refinement and the bits
    /// stage must end (the rest is kept for what follows).
    pub bisect_share: f64,
    pub refine_share: f64,
    pub bits_share: f64,
    /// Most probes of the Gaussian-process refinement; 0 = what the probe budget leaves.
    pub refine_probes: usize,
    /// A layer's first refinement push removes this fraction of its kept weights; a
    /// feasible push makes the next one 1.5× as strong (in log density), an infeasible
    /// one half as strong.
    pub refine_push: f64,
    /// A push that misses the target by less than `second_look` (a near miss, as likely
    /// noise as a real limit) multiplies the layer's push by this instead of halving it.
    pub near_miss_shrink: f64,
    /// A layer whose push fell under this fraction is done.
    pub refine_min_push: f64,
    /// A push whose estimated saving is under this fraction of the incumbent's estimated
    /// bytes is not probed; when no push saves that much the refinement ends. A v0.1
    /// LeNet-300-100 run spent its last 16 probes on fc2/fc3 pushes worth under 2 % of the
    /// bytes in all.
    pub refine_min_saving: f64,
    /// Ignored (an early v0.1 refinement scored this many random candidates); read
    /// so that older run folders' config.toml still load.
    #[serde(skip_serializing)]
    pub refine_candidates: Option<usize>,
    /// How widths are chosen: `sweep` (solo sharing without retraining, a rate–distortion
    /// chain, a binary search of it with codebook retraining probes) or `probe` (a binary
    /// search per layer, each step a codebook retraining probe).
    pub bits_method: BitsMethod,
    /// Most codebook retraining probes of the `sweep` method (per candidate), retries
    /// included.
    pub bits_probes: usize,
    /// A bits probe that misses is tried again this many times (another seed: another
    /// clustering and codebook retraining, so another model, measured exactly) before its
    /// widths are given up.
    pub bits_retries: usize,
    /// The bits stage runs on this many of the smallest feasible models and keeps the one
    /// whose widths give the smallest file (the smallest may have too little room left for
    /// weight sharing).
    pub bits_candidates: usize,
    /// Weight bits tried per layer.
    pub bits_min: u8,
    pub bits_max: u8,
    /// Weight bits assumed while searching ratios (for size estimates).
    pub provisional_bits: u8,
    /// Largest sparse ratio considered for any layer.
    pub max_ratio: f64,
    /// Sensitivity grid (sparse ratios).
    pub grid: Vec<f64>,
    /// Probes proposed at once (`--workers`): the bisection probes that many δ, the
    /// refinement that many layers' pushes, the bits stage that many widths of its chain.
    /// 1 probes one at a time (left out of `config.toml`).
    #[serde(skip_serializing_if = "is_one")]
    pub workers: usize,
    /// Validation images of the sensitivity sweep: 0 = all; N = N of them drawn at random
    /// (seeded by `data.split_seed`), each point's standard error against the whole split
    /// stated in the CSV. For TorchScript modules, whose sweep cannot reuse activations.
    #[serde(skip_serializing_if = "is_zero")]
    pub sensitivity_images: usize,
    /// Which weights the search keeps: `"magnitude"` (the default) or `"l0"` (L0 gates
    /// trained from the dense model before the sensitivity sweep, `docs/sparsifiers.md`).
    #[serde(skip_serializing_if = "is_magnitude")]
    pub sparsifier: Sparsifier,
    /// `"l0"`: epochs of gated training (default 20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l0_epochs: Option<f64>,
    /// `"l0"`: the price of a kept weight in nats of the whole training set's loss
    /// (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l0_lambda: Option<f64>,
    /// `"l0"`: Adam's learning rate of the weights and biases (default 0.0003).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l0_lr: Option<f64>,
    /// `"l0"`: Adam's learning rate of the gates' log α (default 0.01).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l0_gate_lr: Option<f64>,
    /// `"l0"`: gated trainings that bracket λ (default 4, `search::sparsify::TRIES`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l0_tries: Option<usize>,
}

fn is_magnitude(s: &Sparsifier) -> bool {
    *s == Sparsifier::Magnitude
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            margin: Auto::Auto,
            probe_epochs: Auto::Auto,
            probe_schedule: Schedule::AllAtOnce,
            lr_scale: 0.3,
            retrain_lr: None,
            bias_precision: BiasPrecision::I8,
            recovery_gap: 0.0,
            second_look: Auto::Auto,
            final_epochs: 0.0,
            bits_epochs: Auto::Auto,
            bits_margin: 0.0,
            budget_minutes: 0.0,
            budget_probes: 0,
            bisection: Bisection::Climb,
            bisection_probes: 6,
            climb_factor: 2.5,
            bisection_tolerance: 0.25,
            bisect_share: 0.35,
            refine_share: 0.78,
            bits_share: 0.92,
            refine_probes: 0,
            refine_push: 0.25,
            near_miss_shrink: 0.8,
            refine_min_push: 0.03,
            refine_min_saving: 0.01,
            refine_candidates: None,
            bits_method: BitsMethod::Sweep,
            bits_probes: 8,
            bits_retries: 1,
            bits_candidates: 3,
            bits_min: 2,
            bits_max: 8,
            provisional_bits: 5,
            max_ratio: 0.997,
            grid: crate::search::sensitivity::DEFAULT_GRID.to_vec(),
            workers: 1,
            sensitivity_images: 0,
            sparsifier: Sparsifier::Magnitude,
            l0_epochs: None,
            l0_lambda: None,
            l0_lr: None,
            l0_gate_lr: None,
            l0_tries: None,
        }
    }
}

impl SearchConfig {
    /// The L0 gates' settings, defaults filled in.
    pub fn gate_config(&self) -> GateConfig {
        let d = GateConfig::default();
        GateConfig {
            epochs: self.l0_epochs.unwrap_or(d.epochs),
            lambda: self.l0_lambda.unwrap_or(d.lambda),
            lr: self.l0_lr.unwrap_or(d.lr),
            gate_lr: self.l0_gate_lr.unwrap_or(d.gate_lr),
            ..d
        }
    }

    /// Range checks of the `[search]` section.
    pub fn check(&self) -> Result<()> {
        let s = self;
        s.gate_config().check()?;
        if let Some(n) = s.l0_tries {
            need((1..=16).contains(&n), "search.l0_tries", n, "1..=16")?;
        }
        s.margin
            .check("search.margin", |x| within(x, 0.0, 0.5), "[0, 0.5]")?;
        need(
            within(s.recovery_gap, 0.0, 0.5),
            "search.recovery_gap",
            s.recovery_gap,
            "[0, 0.5]",
        )?;
        for (key, v) in [
            ("search.probe_epochs", s.probe_epochs),
            ("search.bits_epochs", s.bits_epochs),
        ] {
            v.check(key, |x| x > 0.0 && x <= 1e4, "(0, 10000] epochs")?;
        }
        need(
            within(s.final_epochs, 0.0, 1e4),
            "search.final_epochs",
            s.final_epochs,
            "[0, 10000] epochs (0 = none)",
        )?;
        need(
            within(s.bits_margin, -0.5, 0.5),
            "search.bits_margin",
            s.bits_margin,
            "[-0.5, 0.5] (accuracy above the floor)",
        )?;
        s.second_look.check(
            "search.second_look",
            |x| within(x, 0.0, 0.5),
            "[0, 0.5] (0 = never)",
        )?;
        need(
            s.climb_factor > 1.0 && s.climb_factor <= 100.0,
            "search.climb_factor",
            s.climb_factor,
            "(1, 100]",
        )?;
        need(
            s.bisection_tolerance > 0.0 && s.bisection_tolerance <= 10.0,
            "search.bisection_tolerance",
            s.bisection_tolerance,
            "(0, 10] in ln δ",
        )?;
        for (key, v) in [
            ("search.bisect_share", s.bisect_share),
            ("search.refine_share", s.refine_share),
            ("search.bits_share", s.bits_share),
        ] {
            need(v > 0.0 && v <= 1.0, key, v, "(0, 1] of the budget")?;
        }
        need(
            (1..=100).contains(&s.bits_probes),
            "search.bits_probes",
            s.bits_probes,
            "1..=100",
        )?;
        need(
            s.bits_retries <= 10,
            "search.bits_retries",
            s.bits_retries,
            "0..=10",
        )?;
        need(
            (1..=20).contains(&s.bits_candidates),
            "search.bits_candidates",
            s.bits_candidates,
            "1..=20",
        )?;
        need(
            s.lr_scale > 0.0 && s.lr_scale <= 1e3,
            "search.lr_scale",
            s.lr_scale,
            "(0, 1000]",
        )?;
        if let Some(r) = &s.retrain_lr {
            r.check("search.retrain_lr")?;
        }
        need(
            within(s.budget_minutes, 0.0, 1e6),
            "search.budget_minutes",
            s.budget_minutes,
            "[0, 1e6] minutes (0 = no cap)",
        )?;
        need(
            s.budget_probes <= 1_000_000,
            "search.budget_probes",
            s.budget_probes,
            "0..=1000000 (0 = worked out from the model)",
        )?;
        need(
            (1..=256).contains(&s.workers),
            "search.workers",
            s.workers,
            "1..=256",
        )?;
        need(
            (1..=1000).contains(&s.bisection_probes),
            "search.bisection_probes",
            s.bisection_probes,
            "1..=1000",
        )?;
        need(
            s.refine_probes <= 100_000,
            "search.refine_probes",
            s.refine_probes,
            "0..=100000 (0 = what the probe budget leaves)",
        )?;
        for (key, v) in [
            ("search.refine_push", s.refine_push),
            ("search.refine_min_push", s.refine_min_push),
        ] {
            need(
                v > 0.0 && v < 1.0,
                key,
                v,
                "(0, 1) of a layer's kept weights",
            )?;
        }
        need(
            s.near_miss_shrink > 0.0 && s.near_miss_shrink <= 1.0,
            "search.near_miss_shrink",
            s.near_miss_shrink,
            "(0, 1]",
        )?;
        need(
            (0.0..1.0).contains(&s.refine_min_saving),
            "search.refine_min_saving",
            s.refine_min_saving,
            "[0, 1) of the incumbent's bytes",
        )?;
        let bits = crate::format::MAX_BITS;
        for (key, v) in [
            ("search.bits_min", s.bits_min),
            ("search.bits_max", s.bits_max),
            ("search.provisional_bits", s.provisional_bits),
        ] {
            need((1..=bits).contains(&v), key, v, "1..=16 bits")?;
        }
        need(
            s.bits_min <= s.bits_max,
            "search.bits_min",
            s.bits_min,
            &format!("1..=search.bits_max ({})", s.bits_max),
        )?;
        need(
            s.max_ratio > 0.0 && s.max_ratio < 1.0,
            "search.max_ratio",
            s.max_ratio,
            "(0, 1)",
        )?;
        need(
            s.sensitivity_images == 0 || s.sensitivity_images >= 100,
            "search.sensitivity_images",
            s.sensitivity_images,
            "0 (all validation images) or at least 100",
        )?;
        let grid_ok = !s.grid.is_empty()
            && s.grid.len() <= 1000
            && s.grid.iter().all(|&r| (0.0..1.0).contains(&r))
            && s.grid.windows(2).all(|w| w[0] < w[1]);
        need(
            grid_ok,
            "search.grid",
            format!("{:?}", s.grid),
            "1 to 1000 sparse ratios in [0, 1), strictly increasing",
        )
    }
}
