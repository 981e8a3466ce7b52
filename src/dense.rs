//! The dense baseline: trained once with the config's recipe and cached as safetensors
//! (keyed by model, data — by content when it is not a built-in data set as installed —,
//! split, normalisation, recipe and seed), then reused by every command; or brought (a
//! TorchScript module, `--weights`), then checked against the data: a brought model that
//! scores near chance (or far under its `expected_accuracy`) stops here, naming the
//! normalisation as the likely cause.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::Config;
use crate::data::{CacheId, Data, ValidationFrom};
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

/// The cache key (serialised as JSON and hashed). Fields that are absent for a built-in
/// data set as installed, split and scaled as before, are left out, so such keys (and
/// their cached models) stay what they were.
#[derive(Serialize)]
struct CacheKey<'a> {
    model: &'a str,
    dataset: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_sha256: Option<&'a str>,
    validation: usize,
    split_seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    validation_from: Option<ValidationFrom>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_scale: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_shift: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mean: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    std: Option<&'a [f32]>,
    train: &'a train::Recipe,
    seed: u64,
}

/// The cache file for this config, data and seed.
pub fn cache_path(cfg: &Config, data: &CacheId, seed: u64) -> PathBuf {
    let d = &cfg.data;
    let key = CacheKey {
        model: &cfg.model,
        dataset: &data.name,
        data_sha256: data.sha256.as_deref(),
        validation: d.validation,
        split_seed: d.split_seed,
        validation_from: (d.validation_from != ValidationFrom::Train).then_some(d.validation_from),
        input_scale: d.input_scale,
        input_shift: (d.input_shift != 0.0).then_some(d.input_shift),
        mean: d.mean.as_deref(),
        std: d.std.as_deref(),
        train: &cfg.train,
        seed,
    };
    let json = serde_json::to_string(&key).expect("key serialises");
    weights::cache_path(&cfg.model, &data.name, &json)
}

/// How far under `expected_accuracy` a brought model may score on validation (5 points).
pub const EXPECTED_SLACK: f64 = 0.05;

/// Stops when a brought model (a TorchScript module or `--weights`) scores near chance on
/// the validation images — less than a tenth of the way from chance (the share of the most
/// frequent class) to 1 — or more than [`EXPECTED_SLACK`] under `expected_accuracy`: its
/// inputs are then most likely not normalised as in its training. `expected_accuracy = 0`
/// turns the check off; a model trained here is not checked. Commands that spend time on
/// the model stop on it; `eval` prints it after the accuracies.
pub fn check_brought(cfg: &Config, dense: &Dense, data: &Data, rt: &Runtime) -> Result<()> {
    let what = match (&cfg.torchscript, &cfg.weights) {
        // The file's name: the whole line must stay within one error line's length.
        (Some(_), _) => format!(
            "TorchScript module {}",
            dense.path.file_name().map_or_else(
                || dense.path.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            )
        ),
        (None, Some(w)) => format!("dense {} with weights {}", cfg.model, w.display()),
        (None, None) => return Ok(()),
    };
    if cfg.expected_accuracy == Some(0.0) {
        return Ok(());
    }
    let acc = train::evaluate(&dense.net, &data.valid.to_device(rt.device)).accuracy;
    let chance = data.chance();
    let norm = match (&cfg.data.mean, &cfg.data.std) {
        (Some(m), Some(s)) => format!("data.mean = {m:?}, data.std = {s:?}"),
        _ => {
            let shift =
                cfg.data.input_shift + cfg.torchscript.as_ref().map_or(0.0, |t| t.input_shift);
            format!("pixel × {} + {shift}", data.norm.scale[0])
        }
    };
    let fix = format!(
        "its inputs are probably not normalised as in its training (now {norm}): set [data] mean \
         and std as its transforms.Normalize (or input_scale/shift); check data.layout, labels"
    );
    if acc < chance + (1.0 - chance) / 10.0 {
        bail!(
            "{what} reaches validation accuracy {acc:.4}, near chance ({chance:.4}): {fix}; \
             expected_accuracy = 0 in the config goes on regardless"
        );
    }
    if let Some(e) = cfg.expected_accuracy {
        if acc < e - EXPECTED_SLACK {
            bail!(
                "{what} reaches validation accuracy {acc:.4}, far under its expected_accuracy {e}: {fix}"
            );
        }
    }
    Ok(())
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
        net.fits(data)?;
        return Ok(Dense {
            net,
            path,
            trained: None,
        });
    }
    let path = cache_path(cfg, &data.cache_id, rt.dense_seed);
    rt.reseed_dense();
    let mut net = Net::init(&cfg.arch(), rt.device);
    net.fits(data)?;
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
        ("dataset".to_string(), data.name.clone()),
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
