//! Between a compressed net in memory and the file's model: [`to_model`] takes each
//! layer's positions, clusters and codebook (dropping unused centroids), [`to_net`] builds
//! a net from a decoded file. Round trip is bit-exact: the in-memory weights are
//! `codebook[cluster]` already, and biases are rounded to the file's precision first.
//!
//! Before any command writes a compressed file it proves two things here:
//! [`verify_decoded`] (the file decodes to the in-memory weights, bit for bit) and
//! [`check_decoded_accuracy`] (the decoded model did not collapse).

use std::collections::HashMap;

use anyhow::{bail, ensure, Context, Result};
use tch::{Device, Tensor};

use super::{fold, BiasPrecision};
use crate::compress::mask::Masked;
use crate::format;
use crate::models::{tensor_to_vec, Arch, LayerKind, Net};

/// Rounds biases to `precision` in place (f16 → the nearest f16, i8 → the nearest multiple
/// of the layer's scale; kept as f32): what the file will decode to.
pub fn round_biases(net: &Net, precision: BiasPrecision) {
    if precision == BiasPrecision::F32 {
        return;
    }
    tch::no_grad(|| {
        for p in &net.params {
            let host = tensor_to_vec(&p.bias);
            let r = file_precision(precision).round_all(&host);
            let r = Tensor::from_slice(&r).to_device(p.bias.device());
            p.bias.shallow_clone().copy_(&r);
        }
    });
}

/// The file's precision for a compression setting.
pub fn file_precision(p: BiasPrecision) -> format::BiasPrecision {
    match p {
        BiasPrecision::F32 => format::BiasPrecision::F32,
        BiasPrecision::F16 => format::BiasPrecision::F16,
        BiasPrecision::I8 => format::BiasPrecision::I8,
    }
}

/// The compressed model of a net whose every layer has a codebook; `input` is the data's
/// normalisation `(input_scale, input_shift)` (a TorchScript module's own `input_shift` is
/// added); a layer without bias stores none.
pub fn to_model(
    net: &Net,
    state: &Masked,
    dataset: &str,
    input: (f32, f32),
    bias: BiasPrecision,
) -> Result<format::CompressedModel> {
    let mut layers = Vec::new();
    for ((spec, p), ls) in net.arch.layers.iter().zip(&net.params).zip(&state.layers) {
        let Some(cb) = &ls.codebook else {
            bail!(
                "layer {} has no codebook: quantize every layer before encoding",
                spec.name
            );
        };
        let centroids = tensor_to_vec(&cb.centroids);
        let positions: Vec<i64> = Vec::try_from(&cb.positions.to_device(Device::Cpu))?;
        let clusters: Vec<i64> = Vec::try_from(&cb.clusters.to_device(Device::Cpu))?;
        // Keep only the centroids that some weight uses, ascending: the file depends on
        // the weights alone, not on the order k-means left its centroids in.
        let mut used = vec![false; centroids.len()];
        for &c in &clusters {
            used[c as usize] = true;
        }
        let mut order: Vec<usize> = (0..centroids.len()).filter(|&c| used[c]).collect();
        order.sort_by(|&a, &b| centroids[a].total_cmp(&centroids[b]));
        let mut remap = vec![u32::MAX; centroids.len()];
        let mut codebook = Vec::new();
        for old in order {
            remap[old] = codebook.len() as u32;
            codebook.push(centroids[old]);
        }
        layers.push(format::Layer {
            name: spec.name.clone(),
            kind: match spec.kind {
                LayerKind::Conv => format::LayerKind::Conv,
                LayerKind::Linear => format::LayerKind::Linear,
            },
            shape: spec.weight_shape.iter().map(|&d| d as u32).collect(),
            bits: cb.bits,
            codebook,
            positions: positions.iter().map(|&x| x as u32).collect(),
            clusters: clusters.iter().map(|&c| remap[c as usize]).collect(),
            bias: if spec.bias {
                tensor_to_vec(&p.bias)
            } else {
                Vec::new()
            },
            bias_precision: file_precision(bias),
        });
    }
    Ok(format::CompressedModel {
        model: net.arch.name.clone(),
        dataset: dataset.to_string(),
        input_shape: net.arch.input_shape.iter().map(|&d| d as u32).collect(),
        input_scale: input.0,
        input_shift: input.1 + net.input_shift(),
        layers,
        origin: net.script.as_ref().and_then(|s| s.origin().cloned()),
    })
}

/// A net with a decoded file's weights; the file's layers must match the zoo model.
pub fn to_net(model: &format::CompressedModel, device: Device) -> Result<Net> {
    let arch = Arch::by_name(&model.model)
        .with_context(|| "the compressed file names a model this dc-search lacks")?;
    to_net_like(model, &Net::init(&arch, device))
}

/// A copy of `like` (any net: zoo or TorchScript) with a decoded file's weights; the file's
/// model, layers and input shape must match it ([`check_fits`]).
pub fn to_net_like(model: &format::CompressedModel, like: &Net) -> Result<Net> {
    check_fits(model, &like.arch)?;
    let mut tensors = HashMap::new();
    for (l, spec) in model.layers.iter().zip(&like.arch.layers) {
        let shape: Vec<i64> = l.shape.iter().map(|&d| d as i64).collect();
        tensors.insert(format!("{}.weight", l.name), (shape, l.dense_weights()));
        let bias = if l.bias.is_empty() {
            vec![0.0; spec.outputs() as usize]
        } else {
            l.bias.clone()
        };
        tensors.insert(format!("{}.bias", l.name), (vec![spec.outputs()], bias));
    }
    let mut net = like.copy();
    net.load_host(&tensors, "compressed file")?;
    Ok(net)
}

/// Checks a decoded file against the model it is decoded into: the model's name, the input
/// shape, and each layer's name, shape and kind, in order. Nothing is allocated for the
/// file's layers before this passes, so a tiny file declaring huge layers costs nothing.
pub fn check_fits(model: &format::CompressedModel, arch: &crate::models::Arch) -> Result<()> {
    ensure!(
        model.model == arch.name,
        "the file holds model {:?}, not {:?}",
        model.model,
        arch.name
    );
    let input_shape: Vec<i64> = model.input_shape.iter().map(|&d| d as i64).collect();
    ensure!(
        input_shape == arch.input_shape,
        "the file's input shape {input_shape:?} differs from model {}'s {:?}",
        arch.name,
        arch.input_shape
    );
    ensure!(
        model.layers.len() == arch.layers.len(),
        "the file has {} layers, model {} has {}",
        model.layers.len(),
        arch.name,
        arch.layers.len()
    );
    for (l, spec) in model.layers.iter().zip(&arch.layers) {
        let shape: Vec<i64> = l.shape.iter().map(|&d| d as i64).collect();
        ensure!(
            l.name == spec.name && shape == spec.weight_shape,
            "file layer {} {:?} does not match model {} layer {} {:?}",
            l.name,
            shape,
            arch.name,
            spec.name,
            spec.weight_shape
        );
        let kind = match l.kind {
            format::LayerKind::Conv => LayerKind::Conv,
            format::LayerKind::Linear => LayerKind::Linear,
        };
        ensure!(
            kind == spec.kind,
            "file layer {} holds {:?} weights, model {} layer {} is {:?}",
            l.name,
            kind,
            arch.name,
            spec.name,
            spec.kind
        );
    }
    Ok(())
}

/// A written file: its bytes, the decoded net, and what folding removed.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub decoded: Net,
    pub folded: fold::Folded,
}

/// Encodes a compressed net into `.dcz` bytes, with its dead units folded away
/// ([`fold`]), decodes them again into a net like it and checks the decoded weights bit
/// for bit against the folded model.
pub fn encode_and_decode(
    net: &Net,
    state: &Masked,
    dataset: &str,
    input: (f32, f32),
    biases: BiasPrecision,
) -> Result<Encoded> {
    let mut model = to_model(net, state, dataset, input, biases)?;
    let folded = fold::fold(&mut model.layers, &fold::links(&net.arch));
    let bytes = format::encode(&model)?;
    let decoded = to_net_like(&format::decode(&bytes)?, net)?;
    if folded == fold::Folded::default() {
        verify_decoded(net, &decoded)?;
    } else {
        verify_decoded(&to_net_like(&model, net)?, &decoded)?;
    }
    Ok(Encoded {
        bytes,
        decoded,
        folded,
    })
}

/// Checks that decoding gives back exactly the in-memory weights (bit for bit).
pub fn verify_decoded(net: &Net, decoded: &Net) -> Result<()> {
    for ((name, a), (_, b)) in net
        .to_host()
        .iter()
        .map(|(n, _, v)| (n, v))
        .zip(decoded.to_host().iter().map(|(n, _, v)| (n, v)))
    {
        let same = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        ensure!(same, "decoded tensor {name} differs from the in-memory model: this is a bug in dc-search's encoder");
    }
    Ok(())
}

/// Default of `--max-loss`: percentage points of validation accuracy a compressed file may
/// lose against its dense model before it is refused.
pub const DEFAULT_MAX_LOSS: f64 = 5.0;

/// Accuracy at or under `CHANCE_FACTOR / classes` counts as chance level.
const CHANCE_FACTOR: f64 = 1.5;

/// Refuses a decoded model that collapsed: validation accuracy `decoded` not a number, at
/// chance level (≤ 1.5 / `classes`) while the dense model's `dense` was above it, or more than
/// `max_loss` percentage points under `dense`. A dense model at chance level itself has
/// nothing to lose, and is let through.
pub fn check_decoded_accuracy(dense: f64, decoded: f64, classes: i64, max_loss: f64) -> Result<()> {
    let chance = CHANCE_FACTOR / classes.max(1) as f64;
    let fix = "nothing was written; prune less, use more bits or retrain longer \
               (--prune-epochs, --codebook-epochs), or allow the drop with --max-loss POINTS";
    if decoded.is_nan() {
        bail!("the decoded file's validation accuracy is not a number: {fix}");
    }
    if dense <= chance {
        return Ok(());
    }
    if decoded <= chance {
        bail!(
            "the decoded file collapsed to chance level: validation accuracy {decoded:.4} against the dense \
             model's {dense:.4} ({classes} classes): {fix}"
        );
    }
    let drop = 100.0 * (dense - decoded);
    if drop > max_loss {
        bail!(
            "the decoded file loses {drop:.2} points of validation accuracy ({dense:.4} → {decoded:.4}), \
             more than --max-loss {max_loss}: {fix}"
        );
    }
    Ok(())
}

/// Parses `--max-loss`: percentage points in [0, 100].
pub fn parse_max_loss(s: &str) -> Result<f64> {
    match s.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => bail!(
            "--max-loss {s:?}: give the largest tolerated drop of validation accuracy in percentage \
             points, 0 to 100 (default {DEFAULT_MAX_LOSS})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapsed_or_ruined_files_are_refused() {
        // The case: 0.9856 → 0.0952 on 10 classes.
        let e = check_decoded_accuracy(0.9856, 0.0952, 10, DEFAULT_MAX_LOSS).unwrap_err();
        assert!(e.to_string().contains("chance level"), "{e}");
        let e = check_decoded_accuracy(0.99, 0.90, 10, DEFAULT_MAX_LOSS).unwrap_err();
        assert!(e.to_string().contains("loses 9.00 points"), "{e}");
        assert!(check_decoded_accuracy(0.99, 0.90, 10, 10.0).is_ok());
        assert!(check_decoded_accuracy(0.99, 0.985, 10, DEFAULT_MAX_LOSS).is_ok());
        assert!(check_decoded_accuracy(0.99, f64::NAN, 10, 100.0).is_err());
        // A dense model at chance level has nothing to lose.
        assert!(check_decoded_accuracy(0.11, 0.02, 10, DEFAULT_MAX_LOSS).is_ok());
        // Even --max-loss 100 does not let a collapse through.
        assert!(check_decoded_accuracy(0.99, 0.1, 10, 100.0).is_err());
    }

    #[test]
    fn max_loss_is_points() {
        assert_eq!(parse_max_loss("2.5").unwrap(), 2.5);
        for bad in ["-1", "101", "NaN", "x"] {
            assert!(parse_max_loss(bad)
                .unwrap_err()
                .to_string()
                .contains("--max-loss"));
        }
    }
}
