//! The search's optional first stage, `[search] sparsifier = "l0"`: L0 gates trained from
//! the dense model ([`crate::compress::gates`]) choose which weights to keep; the gated
//! model is then the model every later stage starts from (sweep, range test, probes and
//! workers), and they prune by magnitude on top of its zeros. The floor still comes from
//! the dense model (`--max-drop` is below its accuracy), and so does the file's
//! compression ratio.
//!
//! The gated model is saved in the run folder (`sparsifier.safetensors`) before its
//! journal line, so a resumed run loads it instead of training it again; a run stopped
//! during gated training trains it again from the start.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::config::Sparsifier;
use super::journal::{self, Journal};
use super::SearchConfig;
use crate::compress::gates::{self, GateStats};
use crate::compress::mask::Masked;
use crate::compress::{CompressConfig, RetrainLr, Trainer};
use crate::data::Split;
use crate::models::Net;
use crate::runtime::Runtime;
use crate::train::Recipe;

/// Seed offset of the gated training (batch order, gate noise).
pub const SEED: u64 = 0x1060;

/// The gated model's file in the run folder.
pub const FILE: &str = "sparsifier.safetensors";

/// The sparsifier's outcome.
pub struct Start {
    /// The gated model the search starts from and its file (the workers' and the
    /// journal's "dense" model); `None` when no try met the floor.
    pub net: Option<(Net, PathBuf)>,
    /// The chosen try's training (the last try's when none reached the floor).
    pub stats: GateStats,
    /// Seconds of all tries.
    pub seconds: f64,
    /// Read back from the journal rather than trained now.
    pub replayed: bool,
}

/// What the stage trains on.
pub struct Inputs<'a> {
    pub search: &'a SearchConfig,
    pub dense: &'a Net,
    pub train_split: &'a Split,
    pub valid: &'a Split,
    /// The dense recipe (its batch size and augmentation).
    pub train: &'a Recipe,
    /// `[compress]`, for the retraining of a gated model's mask.
    pub compress: &'a CompressConfig,
    pub rt: &'a Runtime,
    /// The search's floor: the gated model must reach it on validation.
    pub floor: f64,
}

/// Tries of the gated training, each from the dense model at the λ [`next_lambda`] gives;
/// the search starts from the sparsest try that reached the floor. Four: from a first
/// miss (or pass) the bracket of λ narrows to a factor of √2 (`search.l0_tries` sets
/// another count; on LeNet-5 at 20 epochs the fourth try has not found a sparser start,
/// `docs/sparsifiers.md`).
pub const TRIES: usize = 4;

/// A gated model under the floor is first retrained with its zeros fixed (SGD, as a probe
/// retrains) for this share of the gated training's epochs, and judged again.
pub const MASK_RETRAIN_SHARE: f64 = 0.25;

/// Retrains `net` with its zeros fixed for `epochs` at the probes' learning rate (the
/// recipe's × `lr_scale`, or `retrain_lr` when it is a number); its validation accuracy.
fn retrain_mask(net: &Net, i: &Inputs, epochs: f64) -> Result<f64> {
    let mut state = Masked::dense(net);
    for (layer, p) in state.layers.iter_mut().zip(&net.params) {
        layer.mask = Some(tch::no_grad(|| p.weight.ne(0.0).to_kind(tch::Kind::Float)));
    }
    let mut cfg = i.compress.clone();
    cfg.lr_scale = i.search.lr_scale;
    cfg.retrain_lr = match i.search.retrain_lr {
        Some(RetrainLr::Value(v)) => Some(RetrainLr::Value(v)),
        _ => None,
    };
    let trainer = Trainer {
        train: i.train_split,
        dense: i.train,
        cfg: &cfg,
        quiet: i.rt.quiet,
    };
    trainer.retrain(net, &mut state, epochs, "L0 mask retraining")?;
    Ok(crate::train::evaluate(net, i.valid).accuracy)
}

/// The sparsifier's outcome (`None` for `"magnitude"`): read back from the journal, or
/// trained, saved and journaled now. The gated model must reach the floor on validation
/// (the search prunes on top of it and cannot bring back what the gates closed; a try
/// under it is first retrained with its zeros fixed and judged again): `l0_tries`
/// ([`TRIES`] by default) tries bracket λ ([`next_lambda`]) and the sparsest that reached
/// the floor is the start; when none did the search starts from the dense model, and says
/// so.
pub fn start(journal: &mut Journal, i: &Inputs, out: &Path) -> Result<Option<Start>> {
    if i.search.sparsifier == Sparsifier::Magnitude {
        return Ok(None);
    }
    let names: Vec<String> = i.dense.arch.layers.iter().map(|l| l.name.clone()).collect();
    if let Some((path, stats, seconds)) = journal.replay_sparsifier() {
        let net = match path {
            Some(path) => {
                let (net, _) = journal::load(&path, i.dense).with_context(|| {
                    format!(
                        "the journal names the gated model {}, which cannot be read: delete the run folder (or \
                         choose another --out) to start afresh",
                        path.display()
                    )
                })?;
                Some((net, path))
            }
            None => None,
        };
        if !i.rt.quiet {
            eprintln!("{} (journaled)", stats.describe(&names));
        }
        return Ok(Some(Start {
            net,
            stats,
            seconds,
            replayed: true,
        }));
    }
    let mut cfg = i.search.gate_config();
    let mut seconds = 0.0;
    let mut tries: Vec<(f64, bool)> = Vec::new();
    let mut best: Option<(Net, GateStats)> = None;
    let mut last = None;
    let n_tries = i.search.l0_tries.unwrap_or(TRIES);
    for t in 0..n_tries {
        if t > 0 {
            cfg.lambda = next_lambda(&tries);
        }
        if !i.rt.quiet {
            eprintln!(
                "L0 gates: {} epochs from the dense model, λ {} nats per kept weight (try {} of {n_tries})",
                cfg.epochs,
                cfg.lambda,
                t + 1
            );
        }
        i.rt.reseed(SEED + t as u64);
        let net = i.dense.copy();
        let mut stats =
            gates::train_gates(&net, i.train_split, i.valid, i.train, &cfg, i.rt.quiet)?;
        if !i.rt.quiet {
            eprintln!("{}", stats.describe(&names));
        }
        if stats.valid_accuracy < i.floor {
            let epochs = MASK_RETRAIN_SHARE * cfg.epochs;
            let t0 = std::time::Instant::now();
            let before = stats.valid_accuracy;
            stats.valid_accuracy = retrain_mask(&net, i, epochs)?;
            stats.mask_retraining = Some(epochs);
            stats.seconds += t0.elapsed().as_secs_f64();
            if !i.rt.quiet {
                eprintln!(
                    "L0 gates: validation {before:.4} under the floor {:.4}; its zeros fixed and retrained {epochs} \
                     epochs: {:.4}",
                    i.floor, stats.valid_accuracy
                );
            }
        }
        seconds += stats.seconds;
        let met = stats.valid_accuracy >= i.floor;
        tries.push((cfg.lambda, met));
        if met
            && best
                .as_ref()
                .is_none_or(|(_, b)| stats.kept_total() < b.kept_total())
        {
            best = Some((net, stats.clone()));
        }
        last = Some(stats);
    }
    let (net, stats) = match best {
        Some((net, stats)) => {
            journal.record_sparsifier(Some((FILE, &net)), &stats, seconds)?;
            if !i.rt.quiet {
                eprintln!(
                    "L0 gates: the search starts from the try at λ {}",
                    stats.lambda
                );
            }
            (Some((net, out.join(FILE))), stats)
        }
        None => {
            let stats = last.expect("at least one try");
            journal.record_sparsifier(None, &stats, seconds)?;
            if !i.rt.quiet {
                eprintln!(
                    "L0 gates: no try reached the floor {:.4}; the search starts from the dense model (a smaller \
                     search.l0_lambda or more search.l0_epochs may)",
                    i.floor
                );
            }
            (None, stats)
        }
    };
    Ok(Some(Start {
        net,
        stats,
        seconds,
        replayed: false,
    }))
}

/// The next try's λ from the tries so far (each λ and whether its model reached the
/// floor): between the smallest λ that missed and the largest that reached it, their
/// geometric mean; with misses only, a quarter of the smallest; with passes only, four
/// times the largest (fewer weights may still hold).
pub fn next_lambda(tries: &[(f64, bool)]) -> f64 {
    let miss = tries
        .iter()
        .filter(|t| !t.1)
        .map(|t| t.0)
        .fold(f64::INFINITY, f64::min);
    let pass = tries
        .iter()
        .filter(|t| t.1)
        .map(|t| t.0)
        .fold(0.0, f64::max);
    match (miss.is_finite(), pass > 0.0) {
        (true, true) => (miss * pass).sqrt(),
        (true, false) => miss / 4.0,
        _ => pass * 4.0,
    }
}

#[cfg(test)]
mod tests {
    use super::next_lambda;

    #[test]
    fn lambda_brackets_the_floor_in_log_space() {
        assert_eq!(next_lambda(&[(5.0, false)]), 1.25);
        assert_eq!(next_lambda(&[(5.0, false), (1.25, false)]), 0.3125);
        assert_eq!(next_lambda(&[(5.0, false), (1.25, true)]), 2.5);
        assert_eq!(next_lambda(&[(5.0, true)]), 20.0);
        assert_eq!(next_lambda(&[(5.0, true), (20.0, false)]), 10.0);
        assert_eq!(next_lambda(&[(5.0, true), (20.0, true)]), 80.0);
    }
}
