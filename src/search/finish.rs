//! Stage 6, the file: the shared model the bits stage measured at the chosen widths (or,
//! when none was kept, weight sharing with them and codebook retraining), encode, decode,
//! check the decoded weights bit for bit, and the decoded file's validation accuracy must
//! reach the floor (if it misses, every layer is widened by a bit and the file made again
//! by sharing and retraining); then the test set, once.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::oracle::{Oracle, Retrainer};
use super::prober::Prober;
use super::record::{Outcome, StageTimes};
use super::stages::Chosen;
use crate::compress::encode;
use crate::compress::CompressConfig;
use crate::data::Split;
use crate::train;

/// What the file and the outcome say about the run, from its config.
pub struct RunInfo<'a> {
    /// The model's name (`Config::model`).
    pub model: &'a str,
    /// The data's name (`data::Data::name`).
    pub dataset: &'a str,
    /// The data's normalisation as the file records it (`data::Norm::file_pair`).
    pub input: (f32, f32),
    pub compress: &'a CompressConfig,
    /// The imported dense weights (`--weights`), if any.
    pub weights: Option<&'a Path>,
}

/// Writes `<out>/<model>.dcz` from the chosen model and returns the outcome.
#[allow(clippy::too_many_arguments)]
pub fn file(
    p: &mut Prober<Retrainer>,
    cfg: &RunInfo,
    chosen: Chosen<<Retrainer as Oracle>::Model>,
    file: PathBuf,
    test: &Split,
    dense_acc: f64,
    times: &mut StageTimes,
) -> Result<Outcome> {
    let t0 = p.elapsed();
    p.stage = "the file (sharing, encoding and checking it)".into();
    let Chosen {
        ratios,
        mut bits,
        model,
        mut shared,
        stopped,
        ..
    } = chosen;
    let sc = p.cfg;
    let epochs = cfg.compress.codebook_epochs;
    let (bytes, decoded, valid) = loop {
        let (qnet, qstate) = match shared.take() {
            Some(m) => m,
            None => p.oracle.quantize(&model, &bits, epochs, 3000)?.0,
        };
        let encode::Encoded {
            bytes,
            decoded,
            folded,
        } = encode::encode_and_decode(
            &qnet,
            &qstate,
            cfg.dataset,
            cfg.input,
            cfg.compress.bias_precision,
        )?;
        let valid = train::evaluate(&decoded, p.oracle.valid).accuracy;
        p.say(&format!(
            "file: bits {bits:?} → {} bytes ({} dead or unread units folded away, {} weights), decoded \
             validation {valid:.4}",
            bytes.len(),
            folded.units,
            folded.weights
        ));
        if valid >= p.at.floor || bits.iter().all(|&b| b >= sc.bits_max) {
            break (bytes, decoded, valid);
        }
        bits.iter_mut().for_each(|b| *b = (*b + 1).min(sc.bits_max));
    };
    if valid < p.at.floor {
        bail!(
            "the decoded file reaches validation accuracy {valid:.4}, under the floor {:.4}; lower --floor or raise \
             search.margin",
            p.at.floor,
        );
    }
    // The floor already bounds the loss; a floor set near chance level (--max-drop) must
    // still not let a collapsed model through.
    let classes = p.oracle.dense.arch.layers.last().map_or(1, |l| l.outputs());
    encode::check_decoded_accuracy(dense_acc, valid, classes, 100.0)?;
    crate::paths::write_atomic(&file, &bytes)?;
    let test_acc = train::evaluate(&decoded, test).accuracy;
    times.encode_and_verify = p.elapsed() - t0;
    let dense_bytes = p.oracle.dense.arch.num_params() as usize * 4;
    let script = p.oracle.dense.script.as_deref();
    Ok(Outcome {
        model: cfg.model.to_string(),
        dataset: cfg.dataset.into(),
        floor: p.at.floor,
        margin: p.plan.margin,
        dense_valid_accuracy: dense_acc,
        ratios,
        bits,
        layers: p.layer_names.clone(),
        file,
        file_bytes: bytes.len(),
        dense_bytes,
        compression_ratio: dense_bytes as f64 / bytes.len() as f64,
        decoded_valid_accuracy: valid,
        decoded_test_accuracy: test_acc,
        valid_images: p.oracle.valid.len(),
        test_images: test.len(),
        probes: p.trials.len(),
        times: times.clone(),
        dense_weights: match (cfg.weights, script) {
            (Some(w), _) => format!("imported from {}", w.display()),
            (None, Some(s)) => format!(
                "as saved in the TorchScript module {}",
                s.source().display()
            ),
            (None, None) => "trained with the config's [train] recipe (cached)".into(),
        },
        stopped,
        device: p.oracle.rt.device_name(),
        lr_test: None,
        sparsifier: None,
        plan: Some(p.plan.clone()),
        pair: script.map(|s| s.pair_bytes()).transpose()?,
        lr_restarted_probes: p
            .trials
            .iter()
            .filter(|t| t.lr_restarts > 0)
            .map(|t| t.probe)
            .collect(),
    })
}
