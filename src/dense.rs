//! The dense baseline: trained once with the config's recipe and cached as safetensors
//! (keyed by model, dataset, split, recipe and seed), then reused by every command.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::Config;
use crate::data::Data;
use crate::models::Net;
use crate::runtime::Runtime;
use crate::train::{self, Sgd, TrainStats};
use crate::weights;

/// The dense model and where it came from.
pub struct Dense {
    pub net: Net,
    pub path: PathBuf,
    /// Present when this call trained it (absent when it came from the cache).
    pub trained: Option<TrainStats>,
}

#[derive(Serialize)]
struct CacheKey<'a> {
    model: &'a str,
    dataset: &'a str,
    validation: usize,
    split_seed: u64,
    input_scale: f32,
    train: &'a train::Recipe,
    seed: u64,
}

/// The cache file for this config and seed.
pub fn cache_path(cfg: &Config, seed: u64) -> PathBuf {
    let key = CacheKey {
        model: &cfg.model,
        dataset: cfg.data.dataset.as_str(),
        validation: cfg.data.validation,
        split_seed: cfg.data.split_seed,
        input_scale: cfg.data.input_scale,
        train: &cfg.train,
        seed,
    };
    let json = serde_json::to_string(&key).expect("key serialises");
    weights::cache_path(&cfg.model, cfg.data.dataset.as_str(), &json)
}

/// Loads the cached dense model, or trains it (and caches it) when absent or `retrain`;
/// with `cfg.weights` (`--weights`) it imports that file instead. A TorchScript model is
/// its module's weights as saved (never trained or cached here).
pub fn obtain(cfg: &Config, data: &Data, rt: &Runtime, retrain: bool) -> Result<Dense> {
    let dense = load_or_train(cfg, data, rt, retrain)?;
    crate::models::check_classes(
        &dense.net,
        &[&data.train.labels, &data.valid.labels, &data.test.labels],
    )?;
    Ok(dense)
}

/// [`obtain`] without the check of its classes against the data.
fn load_or_train(cfg: &Config, data: &Data, rt: &Runtime, retrain: bool) -> Result<Dense> {
    if let Some(ts) = &cfg.torchscript {
        if let Some(w) = &cfg.weights {
            anyhow::bail!(
                "--weights {} with a TorchScript model: its weights are the module's; give one or the other",
                w.display()
            );
        }
        let net = crate::models::torchscript::load(&cfg.model, ts, rt.device)?;
        let path = ts.module.clone().unwrap_or_default();
        return Ok(Dense {
            net,
            path,
            trained: None,
        });
    }
    let path = cache_path(cfg, rt.dense_seed);
    rt.reseed_dense();
    let mut net = Net::init(&cfg.arch(), rt.device);
    if let Some(file) = &cfg.weights {
        let (tensors, format) = crate::import::read_weights(file, &net.arch)?;
        net.load_host(&tensors, &file.display().to_string())?;
        if !rt.quiet {
            eprintln!(
                "dense {}: weights imported from {} ({})",
                cfg.model,
                file.display(),
                format.as_str()
            );
        }
        return Ok(Dense {
            net,
            path: file.clone(),
            trained: None,
        });
    }
    if let Some(kind) = crate::paths::not_regular(&path) {
        anyhow::bail!(
            "cached model {} is {kind}, not a file dc-search wrote: remove it to train again",
            path.display()
        );
    }
    if path.is_file() && !retrain {
        let tensors = weights::read_safetensors(&path).with_context(|| {
            format!(
                "cached model {} is unreadable: delete it to retrain",
                path.display()
            )
        })?;
        net.load_host(&tensors, &path.display().to_string())
            .with_context(|| {
                format!(
                    "cached model {} does not fit {}: delete it to retrain",
                    path.display(),
                    cfg.model
                )
            })?;
        return Ok(Dense {
            net,
            path,
            trained: None,
        });
    }
    let train_split = data.train.to_device(rt.device);
    let mut sgd = Sgd::new(&net, &cfg.train);
    let stats =
        train::train(&net, &train_split, &cfg.train, &mut sgd, "train", rt.quiet).map_err(|e| {
            train::Diverged::with_fix(e, || {
                format!(
                    "lower base_lr (now {}) in the config's [train] section; nothing was cached",
                    train::show(cfg.train.base_lr)
                )
            })
        })?;
    // The loss is checked every 50 iterations: never cache weights that went bad after.
    if let Some((name, _, _)) = net
        .to_host()
        .iter()
        .find(|(_, _, v)| v.iter().any(|x| !x.is_finite()))
    {
        anyhow::bail!(
            "training diverged (train): tensor {name} holds NaN or infinite values after \
             {} iterations; lower base_lr (now {}) in the config's [train] section; nothing was cached",
            cfg.train.iterations,
            train::show(cfg.train.base_lr)
        );
    }
    let meta = HashMap::from([
        ("model".to_string(), cfg.model.clone()),
        ("dataset".to_string(), cfg.data.dataset.as_str().to_string()),
        ("seed".to_string(), rt.dense_seed.to_string()),
        ("recipe".to_string(), serde_json::to_string(&cfg.train)?),
    ]);
    weights::save_net(&net, &path, Some(meta))?;
    Ok(Dense {
        net,
        path,
        trained: Some(stats),
    })
}
