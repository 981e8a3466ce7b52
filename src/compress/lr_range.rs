//! The retraining learning rate of a model whose training recipe is unknown (a TorchScript
//! module without `[train]`): a short learning-rate range test on the validation split.
//!
//! The dense model is pruned once to a moderate start (the search: each layer at the ratio
//! where its sensitivity curve loses [`START_DROP`]; `compress`: the plan's own rules). From
//! that same start and the same seed, each learning rate of [`GRID`] retrains
//! [`STEPS`] batches with the retraining recipe (its momentum, weight decay, batch size and
//! schedule, annealed to zero over the steps), and the model is measured on the validation
//! split. The rule ([`choose`]): the learning rate of the lowest validation loss; a run that
//! diverged is never chosen, and of equal losses the smaller rate wins.
//!
//! `retrain_lr` in `[search]` and `[compress]` ([`RetrainLr`]) says where a retraining's
//! learning rate comes from: `"recipe"` (the recipe's `base_lr` × `lr_scale`), `"auto"` (this
//! test) or a number.

use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::mask::{CompressedSgd, Masked};
use super::prune::PruneRule;
use super::CompressConfig;
use crate::data::Split;
use crate::models::Net;
use crate::runtime::Runtime;
use crate::train::{self, Recipe};

/// Learning rates tried: 1e-4 to 3.16e-2, a factor √10 apart.
pub const GRID: [f64; 8] = [1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2, 3.162e-2, 0.1, 0.3162];

/// Retraining steps (batches) per learning rate.
pub const STEPS: i64 = 100;

/// The search's start: each layer at the ratio where its solo sensitivity curve has lost
/// this much validation accuracy (one point), so retraining has damage to repair.
pub const START_DROP: f64 = 0.01;

/// Where a retraining's learning rate comes from (`retrain_lr`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Raw", into = "Raw")]
pub enum RetrainLr {
    /// The recipe's `base_lr` × `lr_scale`.
    Recipe,
    /// The range test's choice.
    Auto,
    /// This learning rate.
    Value(f64),
}

/// `retrain_lr` as written in TOML: a word or a number.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Raw {
    Number(f64),
    Word(String),
}

impl TryFrom<Raw> for RetrainLr {
    type Error = String;
    fn try_from(r: Raw) -> std::result::Result<Self, String> {
        match r {
            Raw::Number(x) => Ok(RetrainLr::Value(x)),
            Raw::Word(w) if w == "auto" => Ok(RetrainLr::Auto),
            Raw::Word(w) if w == "recipe" => Ok(RetrainLr::Recipe),
            Raw::Word(w) => Err(format!(
                "retrain_lr = {w:?}: give \"auto\", \"recipe\" or a learning rate"
            )),
        }
    }
}

impl From<RetrainLr> for Raw {
    fn from(r: RetrainLr) -> Raw {
        match r {
            RetrainLr::Recipe => Raw::Word("recipe".into()),
            RetrainLr::Auto => Raw::Word("auto".into()),
            RetrainLr::Value(x) => Raw::Number(x),
        }
    }
}

impl RetrainLr {
    /// Whether `r` asks for the range test.
    pub fn is_auto(r: &Option<RetrainLr>) -> bool {
        *r == Some(RetrainLr::Auto)
    }

    /// Replaces an `"auto"` in `r` by the range test's choice `lr`.
    pub fn resolve(r: &mut Option<RetrainLr>, lr: f64) {
        if RetrainLr::is_auto(r) {
            *r = Some(RetrainLr::Value(lr));
        }
    }

    /// Range check of `key` (a learning rate must lie in (0, 10]).
    pub fn check(&self, key: &str) -> Result<()> {
        if let RetrainLr::Value(x) = *self {
            crate::check::need(
                x > 0.0 && x <= 10.0,
                key,
                x,
                "(0, 10] (or \"auto\", \"recipe\")",
            )?;
        }
        Ok(())
    }
}

/// What the range test measured and chose (in `summary.json`, the report and the journal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrTest {
    /// The start's sparse ratios, per layer (the fraction of weights pruned).
    pub start: Vec<f64>,
    pub steps: i64,
    pub batch_size: i64,
    pub lrs: Vec<f64>,
    /// Validation loss and accuracy after each learning rate's retraining; `None` where it
    /// diverged.
    pub valid_loss: Vec<Option<f64>>,
    pub valid_accuracy: Vec<Option<f64>>,
    /// The chosen learning rate.
    pub chosen: f64,
    pub seconds: f64,
}

impl LrTest {
    /// One line for progress output and the report.
    pub fn describe(&self) -> String {
        let points: Vec<String> = self
            .lrs
            .iter()
            .zip(&self.valid_loss)
            .zip(&self.valid_accuracy)
            .map(|((lr, l), a)| match (l, a) {
                (Some(l), Some(a)) => format!("{} → loss {l:.4}, acc {a:.4}", train::show(*lr)),
                _ => format!("{} → diverged", train::show(*lr)),
            })
            .collect();
        let edge = match self.lrs.iter().position(|&lr| lr == self.chosen) {
            Some(0) => ", the grid's smallest",
            Some(i) if i + 1 == self.lrs.len() => ", the grid's largest",
            _ => "",
        };
        format!(
            "retraining lr {}{edge} (lowest validation loss after {} steps of {} from the pruned start; {}; {:.1} s)",
            train::show(self.chosen),
            self.steps,
            self.batch_size,
            points.join("; "),
            self.seconds
        )
    }
}

/// The index of the lowest loss (`None` = diverged, never chosen; of equal losses the first,
/// i.e. the smaller learning rate of an ascending grid); `None` when every run diverged.
pub fn choose(losses: &[Option<f64>]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, l) in losses.iter().enumerate() {
        if let Some(l) = l.filter(|l| l.is_finite()) {
            if best.is_none_or(|(_, b)| l < b) {
                best = Some((i, l));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Runs the range test: `dense` pruned by `rules`, then for each learning rate of [`GRID`]
/// [`STEPS`] steps of `recipe` (its schedule over those steps) from that start, seeded by
/// `seed`, measured on `valid`. Deterministic for a seed and thread count.
#[allow(clippy::too_many_arguments)]
pub fn run(
    dense: &Net,
    rules: &[PruneRule],
    train_split: &Split,
    valid: &Split,
    recipe: &Recipe,
    cfg: &CompressConfig,
    rt: &Runtime,
    seed: u64,
) -> Result<LrTest> {
    let t0 = Instant::now();
    let net0 = dense.copy();
    let mut state0 = Masked::dense(&net0);
    for (i, r) in rules.iter().enumerate() {
        state0.prune(&net0, i, *r);
    }
    let start = state0.densities(&net0).iter().map(|d| 1.0 - d).collect();
    let (mut valid_loss, mut valid_accuracy) = (Vec::new(), Vec::new());
    for &lr in &GRID {
        let net = net0.copy();
        let mut state = state0.copy();
        let r = Recipe {
            base_lr: lr,
            iterations: STEPS,
            ..recipe.clone()
        };
        rt.reseed(seed);
        let mut upd = CompressedSgd::new(&net, &r, &mut state, cfg.centroid_grad);
        let label = format!("lr {}", train::show(lr));
        match train::train(&net, train_split, &r, &mut upd, &label, true) {
            Ok(_) => {
                let e = train::evaluate(&net, valid);
                let ok = e.loss.is_finite();
                valid_loss.push(ok.then_some(e.loss));
                valid_accuracy.push(ok.then_some(e.accuracy));
            }
            Err(e) if e.is::<train::Diverged>() => {
                valid_loss.push(None);
                valid_accuracy.push(None);
            }
            Err(e) => return Err(e),
        }
    }
    let Some(i) = choose(&valid_loss) else {
        anyhow::bail!(
            "the learning-rate range test diverged at every rate from {} to {}: give \
             retrain_lr a number in [search] and [compress]",
            train::show(GRID[0]),
            train::show(GRID[GRID.len() - 1])
        );
    };
    Ok(LrTest {
        start,
        steps: STEPS,
        batch_size: recipe.batch_size,
        lrs: GRID.to_vec(),
        valid_loss,
        valid_accuracy,
        chosen: GRID[i],
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_loss_wins_and_diverged_runs_never_do() {
        assert_eq!(choose(&[Some(0.5), Some(0.3), Some(0.4)]), Some(1));
        assert_eq!(choose(&[Some(0.5), None, Some(0.4)]), Some(2));
        assert_eq!(choose(&[Some(f64::NAN), Some(0.9)]), Some(1));
        assert_eq!(choose(&[None, None]), None);
        assert_eq!(choose(&[]), None);
        // Equal losses: the first (smaller learning rate).
        assert_eq!(choose(&[Some(0.2), Some(0.2), Some(0.3)]), Some(0));
        assert_eq!(choose(&[Some(f64::INFINITY)]), None);
    }

    #[test]
    fn the_description_names_the_choice_and_an_edge() {
        let mut t = LrTest {
            start: vec![0.5],
            steps: 100,
            batch_size: 64,
            lrs: vec![1e-3, 1e-2, 1e-1],
            valid_loss: vec![Some(0.3), Some(0.2), None],
            valid_accuracy: vec![Some(0.9), Some(0.95), None],
            chosen: 1e-2,
            seconds: 1.25,
        };
        let d = t.describe();
        assert!(
            d.starts_with("retraining lr 0.01 (lowest validation loss"),
            "{d}"
        );
        assert!(
            d.contains("0.1 → diverged") && d.ends_with("; 1.2 s)"),
            "{d}"
        );
        t.chosen = 1e-3;
        assert!(t
            .describe()
            .starts_with("retraining lr 0.001, the grid's smallest ("));
    }

    #[test]
    fn the_grid_rises_by_root_ten() {
        for w in GRID.windows(2) {
            assert!((w[1] / w[0] - 10f64.sqrt()).abs() < 1e-3, "{w:?}");
        }
    }

    #[derive(Serialize, Deserialize)]
    struct S {
        retrain_lr: RetrainLr,
    }

    #[test]
    fn retrain_lr_reads_words_and_numbers() {
        let read = |t: &str| toml::from_str::<S>(t).map(|s| s.retrain_lr);
        assert_eq!(read("retrain_lr = \"auto\"").unwrap(), RetrainLr::Auto);
        assert_eq!(read("retrain_lr = \"recipe\"").unwrap(), RetrainLr::Recipe);
        assert_eq!(read("retrain_lr = 0.003").unwrap(), RetrainLr::Value(0.003));
        assert_eq!(read("retrain_lr = 1").unwrap(), RetrainLr::Value(1.0));
        let e = read("retrain_lr = \"fast\"").unwrap_err().to_string();
        assert!(
            e.contains("give \"auto\", \"recipe\" or a learning rate"),
            "{e}"
        );
        for r in [RetrainLr::Auto, RetrainLr::Recipe, RetrainLr::Value(0.01)] {
            let text = toml::to_string(&S { retrain_lr: r }).unwrap();
            assert_eq!(read(&text).unwrap(), r);
        }
        assert!(RetrainLr::Value(0.0).check("k").is_err());
        assert!(RetrainLr::Value(f64::NAN).check("k").is_err());
        assert!(RetrainLr::Value(11.0).check("k").is_err());
        assert!(RetrainLr::Value(0.5).check("k").is_ok());
        assert!(RetrainLr::Auto.check("k").is_ok());
    }
}
