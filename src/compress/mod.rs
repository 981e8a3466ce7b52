//! Deep Compression's first two stages on a [`Net`]: prune → retrain (layer-wise stages
//! like the Caffe seed, or all layers at once), then k-means weight sharing → codebook
//! retraining. The result is a net whose weights are exactly what its compressed file
//! decodes to (`encode` turns it into a `format::CompressedModel`).
//!
//! The pipeline, file by file: `prune` (which weights go) → `schedule` (when) → `mask`
//! (masks and codebooks applied through retraining) → `kmeans` (weight sharing) → `fold` and
//! `encode` (net → file → net); [`Trainer`] here runs the stages in order.

pub mod encode;
pub mod fold;
pub mod gates;
pub mod kmeans;
pub mod lr_range;
pub mod mask;
pub mod prune;
pub mod schedule;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::data::Split;
use crate::models::{tensor_to_vec, Net};
use crate::train::{self, Recipe, TrainStats};
pub use lr_range::RetrainLr;
use mask::{CentroidGrad, CompressedSgd, Masked};
use prune::PruneRule;
pub use schedule::{gradual_ratio, Schedule};

/// Precision of the biases in the compressed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BiasPrecision {
    F32,
    F16,
    /// Signed 8-bit integers times one power of two per layer.
    I8,
}

/// How compression retrains (the `[compress]` section of a config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressConfig {
    pub schedule: Schedule,
    /// Retraining epochs after each pruning stage.
    pub prune_epochs: f64,
    /// Codebook retraining epochs after weight sharing. (Default centroid gradient: the
    /// paper's sum — measured better than the seed's mean on LeNet-5 in the paper setting:
    /// validation 98.86 % vs 98.70 %, test 99.24 % vs 99.10 %, `searches/core/`.)
    pub codebook_epochs: f64,
    /// Retraining learning rate as a fraction of the dense recipe's (paper: 1/10).
    pub lr_scale: f64,
    /// Where the retraining learning rate comes from: `"recipe"` (`base_lr` × `lr_scale`),
    /// `"auto"` (a learning-rate range test, `lr_range`) or a number. Absent: `"auto"` for
    /// a TorchScript config without `[train]`, `"recipe"` otherwise (`Config::parse`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrain_lr: Option<RetrainLr>,
    pub centroid_grad: CentroidGrad,
    /// Centroid learning rate relative to the weights' (applied on top of `lr_scale`).
    pub centroid_lr_scale: f64,
    pub kmeans_iters: usize,
    pub bias_precision: BiasPrecision,
    /// Pruning steps of the gradual schedule.
    pub gradual_steps: usize,
    /// Fraction of the retraining epochs over which the gradual schedule prunes.
    pub gradual_ramp: f64,
}

impl Default for CompressConfig {
    fn default() -> Self {
        CompressConfig {
            schedule: Schedule::AllAtOnce,
            prune_epochs: 3.0,
            codebook_epochs: 1.0,
            lr_scale: 0.1,
            retrain_lr: None,
            centroid_grad: CentroidGrad::Sum,
            centroid_lr_scale: 1.0,
            kmeans_iters: 100,
            bias_precision: BiasPrecision::F32,
            gradual_steps: 4,
            gradual_ramp: 0.5,
        }
    }
}

/// Most epochs of one retraining (`prune_epochs`, `codebook_epochs`, `--prune-epochs`, …).
pub const MAX_EPOCHS: f64 = 1e4;
/// Most `lr_scale` (× the dense learning rate).
pub const MAX_LR_SCALE: f64 = 1e3;

impl CompressConfig {
    /// Range checks of the `[compress]` section.
    pub fn check(&self) -> Result<()> {
        use crate::check::{need, within};
        let epochs = "[0, 10000] epochs";
        need(
            within(self.prune_epochs, 0.0, MAX_EPOCHS),
            "compress.prune_epochs",
            self.prune_epochs,
            epochs,
        )?;
        need(
            within(self.codebook_epochs, 0.0, MAX_EPOCHS),
            "compress.codebook_epochs",
            self.codebook_epochs,
            epochs,
        )?;
        for (key, v) in [
            ("compress.lr_scale", self.lr_scale),
            ("compress.centroid_lr_scale", self.centroid_lr_scale),
        ] {
            need(v > 0.0 && v <= MAX_LR_SCALE, key, v, "(0, 1000]")?;
        }
        if let Some(r) = &self.retrain_lr {
            r.check("compress.retrain_lr")?;
        }
        need(
            (1..=100_000).contains(&self.kmeans_iters),
            "compress.kmeans_iters",
            self.kmeans_iters,
            "1..=100000",
        )?;
        need(
            (1..=1000).contains(&self.gradual_steps),
            "compress.gradual_steps",
            self.gradual_steps,
            "1..=1000",
        )?;
        need(
            within(self.gradual_ramp, 0.0, 1.0),
            "compress.gradual_ramp",
            self.gradual_ramp,
            "[0, 1]",
        )
    }
}

/// Per-layer settings, in layer order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub rules: Vec<PruneRule>,
    pub bits: Vec<u8>,
}

impl Plan {
    /// Checks lengths and ranges against a net with `layers` layers.
    pub fn check(&self, layer_names: &[String]) -> Result<()> {
        let n = layer_names.len();
        if self.rules.len() != n || self.bits.len() != n {
            bail!(
                "{} ratios and {} bits given, the model has {n} layers ({})",
                self.rules.len(),
                self.bits.len(),
                layer_names.join(", ")
            );
        }
        for (name, r) in layer_names.iter().zip(&self.rules) {
            match *r {
                PruneRule::SparseRatio(x) if !(0.0..1.0).contains(&x) => {
                    bail!("sparse ratio {x} for layer {name} is outside [0, 1): give the fraction of weights to remove")
                }
                PruneRule::Quality(q) if !(q >= 0.0 && q.is_finite()) => {
                    bail!("quality {q} for layer {name} must be a non-negative number")
                }
                _ => {}
            }
        }
        for (name, &b) in layer_names.iter().zip(&self.bits) {
            if !(1..=16).contains(&b) {
                bail!("{b} bits for layer {name}: weight bits must be 1 to 16");
            }
        }
        Ok(())
    }
}

/// One stage of a compression run and the validation accuracy after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub train: Option<TrainStats>,
    pub valid_accuracy: f64,
}

/// What one compression run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompressStats {
    pub stages: Vec<Stage>,
    pub densities: Vec<f64>,
    pub seconds: f64,
}

/// A retraining that diverges starts again at these factors of its learning rate, in turn
/// (one, then √10 and 10 times smaller), before the divergence is an error.
pub const LR_FALLBACKS: [f64; 3] = [1.0, 0.316_227_766_016_837_94, 0.1];

/// Everything a compression stage trains with.
pub struct Trainer<'a> {
    pub train: &'a Split,
    /// The dense recipe; retraining scales its learning rate by `cfg.lr_scale`.
    pub dense: &'a Recipe,
    pub cfg: &'a CompressConfig,
    pub quiet: bool,
}

impl Trainer<'_> {
    /// Retrains `net` through `state` for `epochs` epochs at the compression learning rate.
    pub fn retrain(
        &self,
        net: &Net,
        state: &mut Masked,
        epochs: f64,
        label: &str,
    ) -> Result<TrainStats> {
        self.retrain_part(net, state, epochs, None, label)
    }

    /// Segment `segment` (epochs `segment..segment + 1`, the last one cut at `epochs`) of a
    /// retraining of `epochs` epochs: the learning rate follows the whole retraining's
    /// schedule at each step's global iteration, so running every segment in turn is one
    /// retraining of `epochs` whose batch order and momentum start afresh at each epoch
    /// boundary (each segment draws its own permutation and starts with zero momentum).
    /// Segment `k` covers iterations `⌈k·n/b⌉` up to `⌈(k+1)·n/b⌉` of the `⌈epochs·n/b⌉`
    /// (`n` training images, batches of `b`).
    pub fn retrain_segment(
        &self,
        net: &Net,
        state: &mut Masked,
        epochs: f64,
        segment: usize,
        label: &str,
    ) -> Result<TrainStats> {
        self.retrain_part(net, state, epochs, Some(segment), label)
    }

    /// The iterations of segment `segment` of a retraining of `iterations` steps over `n`
    /// images in batches of `batch` (see [`Trainer::retrain_segment`]).
    pub fn segment_iterations(
        iterations: i64,
        n: usize,
        batch: i64,
        segment: usize,
    ) -> std::ops::Range<i64> {
        let at = |k: usize| {
            ((k as f64 * n as f64) / batch as f64)
                .ceil()
                .min(iterations as f64) as i64
        };
        at(segment)..at(segment + 1)
    }

    fn retrain_part(
        &self,
        net: &Net,
        state: &mut Masked,
        epochs: f64,
        segment: Option<usize>,
        label: &str,
    ) -> Result<TrainStats> {
        let codebooks = state.layers.iter().any(|l| l.codebook.is_some());
        let mut recipe = self
            .dense
            .retrain(epochs, self.train.len(), self.cfg.lr_scale);
        match self.cfg.retrain_lr {
            None | Some(RetrainLr::Recipe) => {}
            Some(RetrainLr::Value(lr)) => recipe.base_lr = lr,
            Some(RetrainLr::Auto) => {
                bail!("retrain_lr = \"auto\" must be resolved by the range test before retraining")
            }
        }
        if codebooks {
            recipe.base_lr *= self.cfg.centroid_lr_scale;
        }
        let range = match segment {
            None => 0..recipe.iterations,
            // The last segment ends with the retraining: its end is capped at `iterations`.
            Some(k) => {
                Self::segment_iterations(recipe.iterations, self.train.len(), recipe.batch_size, k)
            }
        };
        self.train_falling_back(net, state, &recipe, range, label, &LR_FALLBACKS)
            .map_err(|e| {
                train::Diverged::with_fix(e, || match self.cfg.retrain_lr {
                    Some(RetrainLr::Value(lr)) => format!(
                        "lower the retraining learning rate: retrain_lr (now {}) in [search] or [compress]",
                        train::show(lr)
                    ),
                    _ => format!(
                        "lower the retraining learning rate: --lr-scale (now {}) or [compress] lr_scale",
                        train::show(self.cfg.lr_scale)
                    ),
                })
            })
    }

    /// Trains `range` of `recipe` at each factor of its learning rate in turn until one does
    /// not diverge: a retraining whose loss turns NaN starts again from the weights and
    /// masks it started from, at the next, smaller rate (and says so unless quiet). Being
    /// deterministic, the failed attempt leaves the generator where it always leaves it, so
    /// a resumed search retrains alike. The last factor's divergence is the error.
    fn train_falling_back(
        &self,
        net: &Net,
        state: &mut Masked,
        recipe: &Recipe,
        range: std::ops::Range<i64>,
        label: &str,
        factors: &[f64],
    ) -> Result<TrainStats> {
        let (weights, start) = (net.snapshot(), state.copy());
        for (k, f) in factors.iter().enumerate() {
            if k > 0 {
                net.assign_params(&weights);
                *state = start.copy();
            }
            let r = Recipe {
                base_lr: recipe.base_lr * f,
                ..recipe.clone()
            };
            let mut upd = CompressedSgd::new(net, &r, state, self.cfg.centroid_grad);
            match train::train_range(
                net,
                self.train,
                &r,
                range.clone(),
                &mut upd,
                label,
                self.quiet,
            ) {
                Err(e) if e.is::<train::Diverged>() && k + 1 < factors.len() => {
                    if !self.quiet {
                        eprintln!(
                            "{e}: again from the same start at learning rate {}",
                            train::show(recipe.base_lr * factors[k + 1])
                        );
                    }
                }
                result => {
                    return result.map(|s| TrainStats {
                        lr_restarts: k as u32,
                        ..s
                    })
                }
            }
        }
        bail!("no learning rate to train at")
    }

    /// Prunes by `rules` (per `cfg.schedule`) for `epochs` epochs per stage; the state's
    /// masks are replaced.
    pub fn prune_and_retrain(
        &self,
        net: &Net,
        state: &mut Masked,
        rules: &[PruneRule],
        epochs: f64,
    ) -> Result<Vec<TrainStats>> {
        let mut stats = Vec::new();
        match self.cfg.schedule {
            Schedule::AllAtOnce => {
                for (i, r) in rules.iter().enumerate() {
                    state.prune(net, i, *r);
                }
                if epochs > 0.0 {
                    stats.push(self.retrain(net, state, epochs, "prune")?);
                }
            }
            Schedule::LayerWise => {
                for (i, r) in rules.iter().enumerate() {
                    state.prune(net, i, *r);
                    if epochs > 0.0 {
                        let label = format!("prune {}", net.arch.layers[i].name);
                        stats.push(self.retrain(net, state, epochs, &label)?);
                    }
                }
            }
            Schedule::Gradual => {
                let steps = self.cfg.gradual_steps.max(1);
                let (from, to): (Vec<f64>, Vec<f64>) = rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let w = tensor_to_vec(&net.params[i].weight);
                        let zeros = w.iter().filter(|&&x| x == 0.0).count();
                        let kept = prune::keep_mask(&w, *r).iter().filter(|&&k| k).count();
                        let n = w.len().max(1) as f64;
                        (zeros as f64 / n, 1.0 - kept as f64 / n)
                    })
                    .unzip();
                let ramp = self.cfg.gradual_ramp.clamp(0.0, 1.0);
                for s in 1..=steps {
                    for i in 0..rules.len() {
                        let r = gradual_ratio(from[i], to[i], s, steps);
                        state.prune(net, i, PruneRule::SparseRatio(r));
                    }
                    let slice = schedule::gradual_epochs(epochs, ramp, s, steps);
                    if slice > 0.0 {
                        let label = format!("prune {s}/{steps}");
                        stats.push(self.retrain(net, state, slice, &label)?);
                    }
                }
            }
        }
        Ok(stats)
    }

    /// Shares weights (k = 2^bits per layer), retrains the codebooks for `epochs`, rounds
    /// biases to the file's precision.
    pub fn quantize_and_retrain(
        &self,
        net: &Net,
        state: &mut Masked,
        bits: &[u8],
        epochs: f64,
    ) -> Result<Option<TrainStats>> {
        for (i, &b) in bits.iter().enumerate() {
            state.quantize(net, i, b, self.cfg.kmeans_iters);
        }
        let stats = if epochs > 0.0 {
            Some(self.retrain(net, state, epochs, "codebook")?)
        } else {
            None
        };
        encode::round_biases(net, self.cfg.bias_precision);
        Ok(stats)
    }

    /// The whole of stages 1–2 from a dense net (modified in place); `valid` is evaluated
    /// after each stage for the record.
    pub fn compress(
        &self,
        net: &Net,
        plan: &Plan,
        valid: &Split,
    ) -> Result<(Masked, CompressStats)> {
        let start = std::time::Instant::now();
        let mut state = Masked::dense(net);
        let acc = |net: &Net| train::evaluate(net, valid).accuracy;
        let mut stages = vec![Stage {
            name: "dense".into(),
            train: None,
            valid_accuracy: acc(net),
        }];
        let pruned = self.prune_and_retrain(net, &mut state, &plan.rules, self.cfg.prune_epochs)?;
        // The last segment's figures, with every segment's restarts.
        let restarts = pruned.iter().map(|s| s.lr_restarts).sum();
        stages.push(Stage {
            name: "prune+retrain".into(),
            train: pruned.last().map(|s| TrainStats {
                lr_restarts: restarts,
                ..s.clone()
            }),
            valid_accuracy: acc(net),
        });
        let cb =
            self.quantize_and_retrain(net, &mut state, &plan.bits, self.cfg.codebook_epochs)?;
        stages.push(Stage {
            name: "share+codebook".into(),
            train: cb,
            valid_accuracy: acc(net),
        });
        let densities = state.densities(net);
        Ok((
            state,
            CompressStats {
                stages,
                densities,
                seconds: start.elapsed().as_secs_f64(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::Trainer;

    #[test]
    fn segments_of_a_retraining_cover_its_iterations_once_in_order() {
        // 55,000 images in batches of 64: 860 iterations an epoch (the last one partial).
        for (epochs, n, batch) in [(4.0, 55_000, 64), (2.5, 1000, 64), (3.0, 640, 64)] {
            let iterations = ((epochs * n as f64) / batch as f64).ceil() as i64;
            let segments = crate::search::oracle::segments(epochs);
            let mut at = 0;
            for k in 0..segments {
                let r = Trainer::segment_iterations(iterations, n, batch, k);
                assert_eq!(r.start, at);
                assert!(r.end > r.start);
                at = r.end;
            }
            assert_eq!(at, iterations, "{epochs} epochs of {n}");
        }
        assert_eq!(Trainer::segment_iterations(3438, 55_000, 64, 1), 860..1719);
    }

    #[test]
    fn a_diverging_retraining_starts_again_from_its_start_at_a_smaller_rate() {
        use super::*;
        use crate::models::Arch;
        use tch::{Device, Kind, Tensor};
        tch::manual_seed(6);
        let net = Net::init(&Arch::lenet_300_100(), Device::Cpu);
        let mut state = Masked::dense(&net);
        state.prune(&net, 0, PruneRule::SparseRatio(0.8));
        let pruned = net.params[0].weight.eq(0.0);
        let split = Split {
            images: Tensor::rand([256, 1, 28, 28], (Kind::Float, Device::Cpu)),
            labels: Tensor::randint(10, [256], (Kind::Int64, Device::Cpu)),
        };
        let recipe = Recipe {
            base_lr: 1e4,
            momentum: 0.9,
            weight_decay: 5e-4,
            lr_policy: train::LrPolicy::Fixed,
            gamma: 1e-4,
            power: 0.75,
            batch_size: 32,
            iterations: 60,
            bias_lr_mult: 2.0,
            augment_shift: 0,
            augment_rotate: 0.0,
            augment_scale: 0.0,
            augment_flip: false,
        };
        let cfg = CompressConfig::default();
        let trainer = Trainer {
            train: &split,
            dense: &recipe,
            cfg: &cfg,
            quiet: true,
        };
        // At 1e4 alone the loss turns NaN: the error names the divergence.
        let (net_a, mut state_a) = (net.copy(), state.copy());
        let err = trainer
            .train_falling_back(&net_a, &mut state_a, &recipe, 0..60, "t", &[1.0])
            .unwrap_err();
        assert!(err.is::<train::Diverged>(), "{err}");
        // With a fallback 1e8 times smaller it trains from the same start: finite weights,
        // the pruned ones still zero.
        let stats = trainer
            .train_falling_back(&net, &mut state, &recipe, 0..60, "t", &[1.0, 1e-8])
            .unwrap();
        assert!(stats.final_loss.is_finite());
        assert_eq!(stats.lr_restarts, 1);
        for p in &net.params {
            assert!(bool::try_from(p.weight.isfinite().all()).unwrap());
        }
        let w = &net.params[0].weight;
        assert!(bool::try_from(w.masked_select(&pruned).eq(0.0).all()).unwrap());
    }
}
