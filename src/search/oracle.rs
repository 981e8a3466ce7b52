//! The accuracy oracle: what every stage of the search asks ("from this warm start, prune
//! to these ratios / share weights with these bits, retrain, and tell me the validation
//! accuracy"). [`Retrainer`] answers by retraining with libtorch; the synthetic oracle
//! (`search::synthetic`) answers from a noisy landscape in microseconds, so strategies can
//! be compared over many seeds before a real run is spent on them.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use super::config::SearchConfig;
use crate::compress::mask::Masked;
use crate::compress::prune::PruneRule;
use crate::compress::{CompressConfig, Trainer};
use crate::data::Split;
use crate::models::Net;
use crate::runtime::Runtime;
use crate::train;

/// What one probe measured on the validation split.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Measure {
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    pub nonzeros: usize,
    /// Seconds the probe took (simulated by a synthetic oracle).
    pub seconds: f64,
    /// Times a retraining of the probe diverged and started again at a smaller learning
    /// rate (`compress::LR_FALLBACKS`).
    pub lr_restarts: u32,
}

/// One probe of a batch ([`Oracle::run_batch`]).
pub enum Job<'m, M> {
    /// [`Oracle::prune`]
    Prune {
        from: Option<&'m M>,
        ratios: Vec<f64>,
        epochs: f64,
        seed: u64,
    },
    /// [`Oracle::quantize`]
    Quantize {
        model: &'m M,
        bits: Vec<u8>,
        epochs: f64,
        seed: u64,
    },
}

/// What one job of a batch left behind: its model and measure, or why its worker failed.
pub type JobResult<M> = std::result::Result<(M, Measure), String>;

/// Answers the search's probes. `Model` is what a probe leaves behind: a warm start for
/// later probes and, at the end, the model that is encoded.
pub trait Oracle {
    type Model;

    /// Prunes `from` (the dense model when `None`) to `ratios` and retrains it `epochs`.
    fn prune(
        &mut self,
        from: Option<&Self::Model>,
        ratios: &[f64],
        epochs: f64,
        seed: u64,
    ) -> Result<(Self::Model, Measure)>;

    /// Retrains a pruned model `epochs` more (masks unchanged).
    fn retrain(
        &mut self,
        model: &Self::Model,
        epochs: f64,
        seed: u64,
    ) -> Result<(Self::Model, Measure)>;

    /// Segment `segment` of a retraining of `epochs` epochs (epochs `segment..segment + 1`,
    /// the last cut at `epochs`; see [`segments`]): the learning rate continues the whole
    /// retraining's schedule, the batch order and the momentum start afresh. Running every
    /// segment in turn, each from the one before, is the retraining. By default the
    /// segment's epochs are retrained on their own (an oracle without a schedule).
    fn retrain_segment(
        &mut self,
        model: &Self::Model,
        epochs: f64,
        segment: usize,
        seed: u64,
    ) -> Result<(Self::Model, Measure)> {
        let length = epochs.min((segment + 1) as f64) - segment as f64;
        self.retrain(model, length.max(0.0), seed)
    }

    /// Shares each layer's weights among `2^bits` centroids and retrains the codebooks.
    fn quantize(
        &mut self,
        model: &Self::Model,
        bits: &[u8],
        epochs: f64,
        seed: u64,
    ) -> Result<(Self::Model, Measure)>;

    /// Runs `jobs` (side by side where the oracle has workers; one after another by
    /// default). A job whose worker failed comes back as `Err` with the reason; an `Err` of
    /// the whole call stops the search.
    fn run_batch(&mut self, jobs: &[Job<Self::Model>]) -> Result<Vec<JobResult<Self::Model>>> {
        in_turn(self, jobs)
    }

    /// Validation measure of a model as it is.
    fn evaluate(&mut self, model: &Self::Model) -> Result<Measure>;

    /// Validation measure with layer `layer` alone shared at `bits` (no retraining): the
    /// bits stage's sensitivity sweep.
    fn quantize_one(&mut self, model: &Self::Model, layer: usize, bits: u8) -> Result<Measure>;

    /// Writes a model as a checkpoint (for the journal).
    fn save(&self, model: &Self::Model, path: &Path) -> Result<()>;

    /// Reads a checkpoint written by [`Oracle::save`].
    fn load(&self, path: &Path) -> Result<Self::Model>;
}

/// The segments (of at most one epoch each) of a retraining of `epochs` epochs.
pub fn segments(epochs: f64) -> usize {
    if epochs > 0.0 {
        epochs.ceil() as usize
    } else {
        0
    }
}

/// Runs `jobs` one after another in this process (what [`Oracle::run_batch`] does by
/// default).
pub fn in_turn<O: Oracle + ?Sized>(
    oracle: &mut O,
    jobs: &[Job<O::Model>],
) -> Result<Vec<JobResult<O::Model>>> {
    jobs.iter()
        .map(|j| {
            Ok(Ok(match j {
                Job::Prune {
                    from,
                    ratios,
                    epochs,
                    seed,
                } => oracle.prune(*from, ratios, *epochs, *seed)?,
                Job::Quantize {
                    model,
                    bits,
                    epochs,
                    seed,
                } => oracle.quantize(model, bits, *epochs, *seed)?,
            }))
        })
        .collect()
}

/// The real oracle: prune and retrain with libtorch, evaluate on the validation split.
pub struct Retrainer<'a> {
    pub dense: &'a Net,
    pub train: &'a Split,
    pub valid: &'a Split,
    pub recipe: &'a train::Recipe,
    /// Probes' and final retraining's settings (schedule and learning rate of the search).
    pub probe_cfg: CompressConfig,
    /// Codebook retraining's settings (the `[compress]` learning rate).
    pub codebook_cfg: CompressConfig,
    pub rt: &'a Runtime,
    /// Where batches run when not in this process (`search::workers`).
    pub elsewhere: Option<Box<dyn Elsewhere + 'a>>,
}

/// Runs a [`Retrainer`]'s batches outside its process (worker processes, a Slurm array).
pub trait Elsewhere {
    fn run_batch(
        &mut self,
        here: &Retrainer,
        jobs: &[Job<(Net, Masked)>],
    ) -> Result<Vec<JobResult<(Net, Masked)>>>;
}

impl<'a> Retrainer<'a> {
    /// The search's oracle: probes retrain with the search's schedule and learning rate
    /// (`[search]`), codebook retraining with `[compress]`'s settings.
    pub fn new(
        dense: &'a Net,
        train: &'a Split,
        valid: &'a Split,
        recipe: &'a train::Recipe,
        compress: &CompressConfig,
        search: &SearchConfig,
        rt: &'a Runtime,
    ) -> Self {
        let mut probe_cfg = compress.clone();
        probe_cfg.schedule = search.probe_schedule;
        probe_cfg.lr_scale = search.lr_scale;
        probe_cfg.retrain_lr = search.retrain_lr;
        Retrainer {
            dense,
            train,
            valid,
            recipe,
            probe_cfg,
            codebook_cfg: compress.clone(),
            rt,
            elsewhere: None,
        }
    }

    /// The validation measure of `net`, `lr_restarts` its retraining's restarts.
    fn measure(&self, net: &Net, state: &Masked, t0: Instant, lr_restarts: u32) -> Measure {
        let e = train::evaluate(net, self.valid);
        Measure {
            accuracy: e.accuracy,
            loss: e.loss,
            nonzeros: state.nonzeros(net),
            seconds: t0.elapsed().as_secs_f64(),
            lr_restarts,
        }
    }

    /// A copy of `model`, trained by `train` from `seed` (the global generator reseeded),
    /// and its validation measure (seconds counted from the copy). `train` returns its
    /// retrainings' restarts.
    fn trained(
        &self,
        model: &(Net, Masked),
        seed: u64,
        train: impl FnOnce(&Net, &mut Masked) -> Result<u32>,
    ) -> Result<((Net, Masked), Measure)> {
        let t0 = Instant::now();
        let (net, mut state) = (model.0.copy(), model.1.copy());
        self.rt.reseed(seed);
        let restarts = train(&net, &mut state)?;
        let m = self.measure(&net, &state, t0, restarts);
        Ok(((net, state), m))
    }

    fn trainer<'c>(&'c self, cfg: &'c CompressConfig) -> Trainer<'c> {
        Trainer {
            train: self.train,
            dense: self.recipe,
            cfg,
            quiet: true,
        }
    }
}

/// The restarts of a probe's retrainings, summed.
fn restarts(stats: &[train::TrainStats]) -> u32 {
    stats.iter().map(|s| s.lr_restarts).sum()
}

impl Oracle for Retrainer<'_> {
    type Model = (Net, Masked);

    fn prune(
        &mut self,
        from: Option<&Self::Model>,
        ratios: &[f64],
        epochs: f64,
        seed: u64,
    ) -> Result<(Self::Model, Measure)> {
        let t0 = Instant::now();
        let net = match from {
            Some((n, _)) => n.copy(),
            None => self.dense.copy(),
        };
        let mut state = Masked::dense(&net);
        self.rt.reseed(seed);
        let rules: Vec<PruneRule> = ratios.iter().map(|&r| PruneRule::SparseRatio(r)).collect();
        let stats = self
            .trainer(&self.probe_cfg)
            .prune_and_retrain(&net, &mut state, &rules, epochs)?;
        let m = self.measure(&net, &state, t0, restarts(&stats));
        Ok(((net, state), m))
    }

    fn retrain(
        &mut self,
        model: &Self::Model,
        epochs: f64,
        seed: u64,
    ) -> Result<(Self::Model, Measure)> {
        self.trained(model, seed, |net, state| {
            self.trainer(&self.probe_cfg)
                .retrain(net, state, epochs, "retrain")
                .map(|s| s.lr_restarts)
        })
    }

    fn retrain_segment(
        &mut self,
        model: &Self::Model,
        epochs: f64,
        segment: usize,
        seed: u64,
    ) -> Result<(Self::Model, Measure)> {
        self.trained(model, seed, |net, state| {
            self.trainer(&self.probe_cfg)
                .retrain_segment(net, state, epochs, segment, "final retraining")
                .map(|s| s.lr_restarts)
        })
    }

    fn quantize(
        &mut self,
        model: &Self::Model,
        bits: &[u8],
        epochs: f64,
        seed: u64,
    ) -> Result<(Self::Model, Measure)> {
        self.trained(model, seed, |net, state| {
            self.trainer(&self.codebook_cfg)
                .quantize_and_retrain(net, state, bits, epochs)
                .map(|s| restarts(s.as_slice()))
        })
    }

    fn run_batch(&mut self, jobs: &[Job<Self::Model>]) -> Result<Vec<JobResult<Self::Model>>> {
        match self.elsewhere.take() {
            Some(mut e) => {
                let answers = e.run_batch(self, jobs);
                self.elsewhere = Some(e);
                answers
            }
            None => in_turn(self, jobs),
        }
    }

    fn evaluate(&mut self, model: &Self::Model) -> Result<Measure> {
        Ok(self.measure(&model.0, &model.1, Instant::now(), 0))
    }

    fn quantize_one(&mut self, model: &Self::Model, layer: usize, bits: u8) -> Result<Measure> {
        let t0 = Instant::now();
        let (net, mut state) = (model.0.copy(), model.1.copy());
        state.quantize(&net, layer, bits, self.codebook_cfg.kmeans_iters);
        Ok(self.measure(&net, &state, t0, 0))
    }

    fn save(&self, model: &Self::Model, path: &Path) -> Result<()> {
        super::journal::save(path, &model.0, &model.1)
    }

    fn load(&self, path: &Path) -> Result<Self::Model> {
        super::journal::load(path, self.dense)
    }
}
