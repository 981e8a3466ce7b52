//! Take results elsewhere: a search's `ratios.json` as an NNI `config_list`, a Distiller
//! compression schedule or plain CSV, and a `.dcz` file's decoded model as a PyTorch
//! state dict in safetensors. Pure functions over parsed inputs; the command writes the
//! text atomically.
//!
//! Ratio exports name each layer by its module path in the model (`features.0`, from the
//! weight `features.0.weight` that `ratios.json` records; the layer's name in ratios.json
//! written before it did), with an optional prefix (`module.` for a model wrapped in
//! `DataParallel`), and give the sparsity of the written file, which folding dead units
//! away can make a little higher than the searched ratio.
//!
//! ## Reference
//! - NNI 3.x "Compression Config Specification" (`op_names`, `op_types`, `target_names`,
//!   `sparse_ratio`; the legacy `sparsity_per_layer` is deprecated from 3.2).
//! - Distiller "Compression scheduler" schedule YAML (`version: 1`, `pruners:` with
//!   `AutomatedGradualPruner` `initial_sparsity` / `final_sparsity` / `weights`,
//!   `policies:`).

use std::collections::HashMap;

use anyhow::{ensure, Result};
use serde_json::json;

use crate::format::CompressedModel;
use crate::models::{Arch, LayerKind};
use crate::search::outputs::{LayerRatio, Ratios};

/// Where ratios go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// The decoded model as a PyTorch state dict (from a .dcz file).
    Safetensors,
    /// NNI `config_list` JSON (from ratios.json).
    Nni,
    /// Distiller schedule YAML (from ratios.json).
    Distiller,
    /// CSV `layer,sparse_ratio,bits` (from ratios.json).
    Csv,
}

/// Epochs over which the Distiller schedule grows sparsity (a starting point to tune).
pub const DISTILLER_EPOCHS: u32 = 30;

/// Whether `name` is non-empty and only `[A-Za-z0-9_.-]`: safe in YAML, CSV and comments.
pub fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Parses and checks `ratios.json` text; model and layer names must be [`safe_name`]s.
pub fn parse_ratios(text: &str) -> Result<Ratios> {
    let r: Ratios = serde_json::from_str(text)?;
    ensure!(!r.layers.is_empty(), "it lists no layers");
    let names = r
        .layers
        .iter()
        .flat_map(|l| std::iter::once(&l.name).chain(&l.weight));
    for name in std::iter::once(&r.model).chain(names) {
        ensure!(
            safe_name(name),
            "name {:?} holds characters outside [A-Za-z0-9_.-]; exports (YAML, CSV) take plain names only",
            name
        );
    }
    ensure!(
        r.floor > 0.0 && r.floor <= 1.0,
        "floor {} is outside (0, 1]: a search's floor is a validation accuracy",
        crate::check::show(r.floor)
    );
    for l in &r.layers {
        for (key, v) in [
            ("sparse_ratio", Some(l.sparse_ratio)),
            ("file_sparse_ratio", l.file_sparse_ratio),
        ] {
            if let Some(v) = v {
                ensure!(
                    (0.0..=1.0).contains(&v),
                    "layer {}: {key} {v} is outside [0, 1]",
                    l.name,
                );
            }
        }
        ensure!(
            (1..=crate::format::MAX_BITS).contains(&l.bits),
            "layer {}: bits {} is outside 1..={}",
            l.name,
            l.bits,
            crate::format::MAX_BITS
        );
    }
    Ok(r)
}

/// The layer's weight as the model names it (`<name>.weight` in a ratios.json without one),
/// after `prefix`.
fn weight_of(l: &LayerRatio, prefix: &str) -> String {
    match &l.weight {
        Some(w) => format!("{prefix}{w}"),
        None => format!("{prefix}{}.weight", l.name),
    }
}

/// The module that holds the layer's weight (its weight's path without `.weight`).
fn module_of(l: &LayerRatio, prefix: &str) -> Result<String> {
    let w = weight_of(l, prefix);
    match w.strip_suffix(".weight") {
        Some(m) if !m.is_empty() => Ok(m.to_string()),
        _ => anyhow::bail!(
            "layer {}: its weight {w:?} is not a module's `weight`, which NNI prunes by module; \
             export --to distiller or csv instead",
            l.name
        ),
    }
}

/// The layer's sparsity in the written file (the searched ratio in a ratios.json without it).
fn sparsity(l: &LayerRatio) -> f64 {
    l.file_sparse_ratio.unwrap_or(l.sparse_ratio)
}

/// The PyTorch module type of each layer, when the model is in the zoo.
fn op_types(r: &Ratios) -> HashMap<String, &'static str> {
    Arch::by_name(&r.model)
        .map(|a| {
            a.layers
                .iter()
                .map(|l| {
                    let t = match l.kind {
                        LayerKind::Conv => "Conv2d",
                        LayerKind::Linear => "Linear",
                    };
                    (l.name.clone(), t)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// NNI `config_list` (JSON): one sub-config per layer pruning its module's weight to the
/// file's sparsity; bits have no NNI pruning key (NNI quantizes linearly, not by k-means)
/// and are left out.
pub fn nni(r: &Ratios, prefix: &str) -> Result<String> {
    let types = op_types(r);
    let list: Vec<serde_json::Value> = r
        .layers
        .iter()
        .map(|l| {
            let mut c = json!({
                "op_names": [module_of(l, prefix)?],
                "target_names": ["weight"],
                "sparse_ratio": sparsity(l),
            });
            if let Some(t) = types.get(&l.name) {
                c["op_types"] = json!([t]);
            }
            Ok(c)
        })
        .collect::<Result<_>>()?;
    Ok(serde_json::to_string_pretty(&list).expect("JSON serialises") + "\n")
}

/// A YAML string scalar (single-quoted).
fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A YAML mapping key: bare when it is a plain name, else quoted.
fn yaml_key(s: &str) -> String {
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if plain {
        s.to_string()
    } else {
        yaml_str(s)
    }
}

/// Distiller schedule (YAML): one `AutomatedGradualPruner` per pruned layer growing its
/// weight's sparsity to the file's over [`DISTILLER_EPOCHS`] epochs. Distiller's
/// AGP needs `final_sparsity > initial_sparsity`, so layers left dense (ratio 0) get no
/// pruner (a comment names them) and `initial_sparsity` is 0.05 or half the final one.
pub fn distiller(r: &Ratios, prefix: &str) -> String {
    let pruned: Vec<_> = r.layers.iter().filter(|l| sparsity(l) > 0.0).collect();
    let dense: Vec<&str> = r
        .layers
        .iter()
        .filter(|l| sparsity(l) <= 0.0)
        .map(|l| l.name.as_str())
        .collect();
    let mut s = format!(
        "# Distiller compression schedule from dc-search: model {}, dataset {}, floor {}.\n\
         # final_sparsity is what dc-search found per layer; the epochs are a starting point.\n\
         # dc-search's weight bits per layer (k-means weight sharing): {}.\n",
        r.model,
        r.dataset,
        r.floor,
        r.layers
            .iter()
            .map(|l| format!("{} {}", l.name, l.bits))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !dense.is_empty() {
        s += &format!(
            "# Left dense (sparse ratio 0, no pruner): {}.\n",
            dense.join(", ")
        );
    }
    s += "version: 1\n\npruners:\n";
    for l in &pruned {
        s += &format!(
            "  {}:\n    class: 'AutomatedGradualPruner'\n    initial_sparsity: {}\n    \
             final_sparsity: {}\n    weights: [{}]\n",
            yaml_key(&format!("{}_pruner", l.name)),
            (sparsity(l) / 2.0).min(0.05),
            sparsity(l),
            yaml_str(&weight_of(l, prefix))
        );
    }
    s += "\npolicies:\n";
    for l in &pruned {
        s += &format!(
            "  - pruner:\n      instance_name: {}\n    starting_epoch: 0\n    ending_epoch: {}\n    \
             frequency: 1\n",
            yaml_str(&format!("{}_pruner", l.name)),
            DISTILLER_EPOCHS
        );
    }
    s
}

/// Plain CSV: `layer,sparse_ratio,bits,weight` (the file's sparsity, the weight's name in
/// the model), one row per layer in order.
pub fn csv(r: &Ratios, prefix: &str) -> String {
    let mut s = String::from("layer,sparse_ratio,bits,weight\n");
    for l in &r.layers {
        s += &format!(
            "{},{},{},{}\n",
            l.name,
            sparsity(l),
            l.bits,
            weight_of(l, prefix)
        );
    }
    s
}

/// The ratios in `format` (not [`ExportFormat::Safetensors`], which needs a model), each
/// module path after `prefix` (`module.` under `DataParallel`; empty for none).
pub fn ratios_as(r: &Ratios, format: ExportFormat, prefix: &str) -> Result<String> {
    Ok(match format {
        ExportFormat::Nni => nni(r, prefix)?,
        ExportFormat::Distiller => distiller(r, prefix),
        ExportFormat::Csv => csv(r, prefix),
        ExportFormat::Safetensors => anyhow::bail!(
            "--to safetensors exports a compressed model: give a .dcz file, not ratios"
        ),
    })
}

/// The metadata of a TorchScript module's exported state dict: the file's provenance.
pub fn state_dict_meta(m: &CompressedModel, module: &std::path::Path) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("model".to_string(), m.model.clone()),
        ("dataset".to_string(), m.dataset.clone()),
        ("input_scale".to_string(), m.input_scale.to_string()),
        ("input_shift".to_string(), m.input_shift.to_string()),
        (
            "source".to_string(),
            format!(
                "dc-search export of a .dcz file decoded into TorchScript module {}",
                module.file_name().unwrap_or_default().to_string_lossy()
            ),
        ),
    ])
}

/// A decoded compressed model as a PyTorch state dict in safetensors: per layer
/// `<name>.weight` (zeros where pruned, codebook values elsewhere) and `<name>.bias`
/// (zeros when the file stores none), f32, with the model's names, input normalisation
/// (`input = pixel * input_scale + input_shift`) and provenance in the metadata (`format:
/// pt`). The caller checks the model against its architecture first
/// (`compress::encode::check_fits`): every layer is made dense here.
pub fn dcz_to_safetensors(m: &CompressedModel) -> Result<Vec<u8>> {
    let mut tensors = Vec::new();
    for l in &m.layers {
        let shape: Vec<i64> = l.shape.iter().map(|&d| d as i64).collect();
        let out = shape.first().copied().unwrap_or(0);
        tensors.push((format!("{}.weight", l.name), shape, l.dense_weights()));
        let bias = if l.bias.is_empty() {
            vec![0.0; out as usize]
        } else {
            l.bias.clone()
        };
        tensors.push((format!("{}.bias", l.name), vec![out], bias));
    }
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("model".to_string(), m.model.clone()),
        ("dataset".to_string(), m.dataset.clone()),
        ("input_scale".to_string(), m.input_scale.to_string()),
        ("input_shift".to_string(), m.input_shift.to_string()),
        (
            "source".to_string(),
            "dc-search export of a .dcz file".to_string(),
        ),
    ]);
    crate::weights::to_safetensors(&tensors, Some(meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::outputs::LayerRatio;

    fn ratios() -> Ratios {
        Ratios {
            model: "lenet".into(),
            dataset: "mnist".into(),
            floor: 0.99,
            layers: [
                ("conv1", 0.530549, 4),
                ("conv2", 0.944607, 6),
                ("fc1", 0.932676, 3),
                ("fc2", 0.0, 3),
            ]
            .iter()
            .map(|&(n, r, b)| LayerRatio {
                name: n.into(),
                sparse_ratio: r,
                bits: b,
                weight: None,
                file_sparse_ratio: None,
            })
            .collect(),
        }
    }

    #[test]
    fn exports_name_module_paths_and_give_the_files_sparsity() {
        let mut r = ratios();
        r.model = "mine".into();
        r.layers[1].weight = Some("features.4.weight".into());
        r.layers[1].file_sparse_ratio = Some(0.95);
        let v: serde_json::Value = serde_json::from_str(&nni(&r, "module.").unwrap()).unwrap();
        assert_eq!(v[0]["op_names"], json!(["module.conv1"]));
        assert_eq!(v[1]["op_names"], json!(["module.features.4"]));
        assert_eq!(v[1]["sparse_ratio"].as_f64(), Some(0.95));
        let y: serde_norway::Value = serde_norway::from_str(&distiller(&r, "")).unwrap();
        let p = &y["pruners"]["conv2_pruner"];
        assert_eq!(p["weights"][0].as_str(), Some("features.4.weight"));
        assert_eq!(p["final_sparsity"].as_f64(), Some(0.95));
        assert!(csv(&r, "").contains("conv2,0.95,6,features.4.weight\n"));
        r.layers[1].weight = Some("scale".into());
        let e = nni(&r, "").unwrap_err().to_string();
        assert!(e.contains("conv2") && e.contains("not a module's"), "{e}");
    }

    #[test]
    fn nni_config_list_parses_back() {
        let r = ratios();
        let v: serde_json::Value = serde_json::from_str(&nni(&r, "").unwrap()).unwrap();
        let list = v.as_array().unwrap();
        assert_eq!(list.len(), 4);
        for (c, l) in list.iter().zip(&r.layers) {
            assert_eq!(c["op_names"], json!([l.name]));
            assert_eq!(c["target_names"], json!(["weight"]));
            assert_eq!(c["sparse_ratio"].as_f64().unwrap(), l.sparse_ratio);
        }
        assert_eq!(list[0]["op_types"], json!(["Conv2d"]));
        assert_eq!(list[3]["op_types"], json!(["Linear"]));
        // A model outside the zoo: no op_types.
        let custom = Ratios {
            model: "mine".into(),
            ..r
        };
        let v: serde_json::Value = serde_json::from_str(&nni(&custom, "").unwrap()).unwrap();
        assert!(v[0].get("op_types").is_none());
    }

    #[test]
    fn distiller_schedule_parses_back() {
        let r = ratios();
        let text = distiller(&r, "");
        let y: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(y["version"].as_u64(), Some(1));
        let policies = y["policies"].as_sequence().unwrap();
        // fc2 (ratio 0) has no pruner: AGP needs final > initial.
        assert_eq!(policies.len(), 3);
        assert!(y["pruners"].get("fc2_pruner").is_none());
        assert!(
            text.contains("# Left dense (sparse ratio 0, no pruner): fc2."),
            "{text}"
        );
        for (l, p) in r.layers.iter().zip(policies) {
            let name = format!("{}_pruner", l.name);
            let pr = &y["pruners"][name.as_str()];
            assert_eq!(pr["class"].as_str(), Some("AutomatedGradualPruner"));
            assert_eq!(pr["final_sparsity"].as_f64(), Some(l.sparse_ratio));
            assert!(pr["initial_sparsity"].as_f64().unwrap() < l.sparse_ratio);
            assert_eq!(
                pr["weights"][0].as_str(),
                Some(format!("{}.weight", l.name).as_str())
            );
            assert_eq!(p["pruner"]["instance_name"].as_str(), Some(name.as_str()));
            assert_eq!(p["ending_epoch"].as_u64(), Some(DISTILLER_EPOCHS as u64));
        }
    }

    #[test]
    fn yaml_keys_are_quoted_only_when_needed() {
        assert_eq!(yaml_key("fc1_pruner"), "fc1_pruner");
        assert_eq!(yaml_key("features.0_pruner"), "features.0_pruner");
        assert_eq!(yaml_key("a b"), "'a b'");
        assert_eq!(yaml_key("it's"), "'it''s'");
    }

    #[test]
    fn csv_parses_back() {
        let r = ratios();
        let text = csv(&r, "");
        let mut rd = ::csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            rd.headers().unwrap().iter().collect::<Vec<_>>(),
            ["layer", "sparse_ratio", "bits", "weight"]
        );
        let rows: Vec<LayerRatio> = rd
            .records()
            .map(|rec| {
                let rec = rec.unwrap();
                assert_eq!(&rec[3], format!("{}.weight", &rec[0]));
                LayerRatio {
                    name: rec[0].to_string(),
                    sparse_ratio: rec[1].parse().unwrap(),
                    bits: rec[2].parse().unwrap(),
                    weight: None,
                    file_sparse_ratio: None,
                }
            })
            .collect();
        assert_eq!(rows, r.layers);
    }

    #[test]
    fn ratios_json_is_checked() {
        let text = serde_json::to_string(&ratios()).unwrap();
        assert_eq!(parse_ratios(&text).unwrap(), ratios());
        let bad = text.replace("0.944607", "1.5");
        let e = parse_ratios(&bad).unwrap_err().to_string();
        assert!(e.contains("conv2") && e.contains("outside [0, 1]"), "{e}");
        for (bits, says) in [("\"bits\":0", "bits 0"), ("\"bits\":255", "bits 255")] {
            let bad = text.replacen("\"bits\":4", bits, 1);
            let e = parse_ratios(&bad).unwrap_err().to_string();
            assert!(
                e.contains("conv1") && e.contains(says) && e.contains("1..=16"),
                "{e}"
            );
        }
        let e = parse_ratios(&text.replace("\"floor\":0.99", "\"floor\":5.0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("floor 5 is outside (0, 1]"), "{e}");
        assert!(parse_ratios("{\"model\": 1}").is_err());
        assert!(ratios_as(&ratios(), ExportFormat::Safetensors, "").is_err());
    }

    #[test]
    fn dcz_model_becomes_a_state_dict() {
        use crate::format::{BiasPrecision, Layer};
        let m = CompressedModel {
            model: "lenet-300-100".into(),
            dataset: "mnist".into(),
            input_shape: vec![1, 28, 28],
            input_scale: 1.0 / 256.0,
            input_shift: 0.0,
            layers: vec![
                Layer {
                    name: "fc1".into(),
                    kind: crate::format::LayerKind::Linear,
                    shape: vec![2, 3],
                    bits: 2,
                    codebook: vec![-0.5, 0.25],
                    positions: vec![1, 4],
                    clusters: vec![1, 0],
                    bias: vec![0.125, -1.0],
                    bias_precision: BiasPrecision::F32,
                },
                Layer {
                    name: "fc2".into(),
                    kind: crate::format::LayerKind::Linear,
                    shape: vec![1, 2],
                    bits: 1,
                    codebook: vec![],
                    positions: vec![],
                    clusters: vec![],
                    bias: vec![],
                    bias_precision: BiasPrecision::F32,
                },
            ],
            origin: None,
        };
        let t = crate::weights::parse_safetensors(&dcz_to_safetensors(&m).unwrap()).unwrap();
        assert_eq!(
            t["fc1.weight"],
            (vec![2, 3], vec![0.0, 0.25, 0.0, 0.0, -0.5, 0.0])
        );
        assert_eq!(t["fc1.bias"], (vec![2], vec![0.125, -1.0]));
        assert_eq!(t["fc2.weight"], (vec![1, 2], vec![0.0, 0.0]));
        assert_eq!(t["fc2.bias"], (vec![1], vec![0.0]));
    }

    #[test]
    fn names_that_break_out_of_yaml_are_refused() {
        let ok = r#"{"model":"lenet","dataset":"mnist","floor":0.99,"layers":[{"name":"fc1","sparse_ratio":0.5,"bits":5}]}"#;
        assert!(parse_ratios(ok).is_ok());
        for bad in ["fc1\\n- evil: 1", "fc 1", "", "fc1#x"] {
            let text = ok.replace("\"fc1\"", &format!("{bad:?}"));
            let e = parse_ratios(&text).unwrap_err().to_string();
            assert!(e.contains("[A-Za-z0-9_.-]"), "{bad:?}: {e}");
        }
    }
}
