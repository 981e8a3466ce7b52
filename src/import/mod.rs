//! Bring your own dense model: weights from a Caffe `.caffemodel` ([`caffe`]) or a
//! PyTorch-style `.safetensors` state dict, fitted onto a zoo model's layers by name
//! (`conv1.weight`, `conv1.bias`, …) with every shape checked. [`read_weights`] is what
//! `--weights PATH` calls; the format is chosen by extension, else by the file's magic.

pub mod caffe;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};

use crate::models::Arch;
use crate::weights::HostTensors;

/// A weights file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    Caffe,
    Safetensors,
}

impl WeightsFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WeightsFormat::Caffe => "Caffe caffemodel",
            WeightsFormat::Safetensors => "safetensors",
        }
    }
}

/// True when `bytes` start like a safetensors file: a little-endian u64 header length
/// that fits the file, then a JSON object.
pub fn looks_like_safetensors(bytes: &[u8]) -> bool {
    if bytes.len() < 10 {
        return false;
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    bytes[8] == b'{'
        && n.checked_add(8)
            .is_some_and(|end| end <= bytes.len() as u64)
}

/// The format of `path`: `.caffemodel` and `.safetensors` by extension, anything else by
/// its first bytes (safetensors' header, else Caffe's protobuf).
pub fn detect(path: &Path, bytes: &[u8]) -> WeightsFormat {
    match path.extension().and_then(|e| e.to_str()) {
        Some("caffemodel") => WeightsFormat::Caffe,
        Some("safetensors") => WeightsFormat::Safetensors,
        _ if looks_like_safetensors(bytes) => WeightsFormat::Safetensors,
        _ => WeightsFormat::Caffe,
    }
}

/// Reads a weights file and fits it onto `arch`: tensors with PyTorch names and exactly
/// the model's shapes, ready for [`crate::models::Net::load_host`]. Every error names
/// the file, the layer and what to do.
pub fn read_weights(path: &Path, arch: &Arch) -> Result<(HostTensors, WeightsFormat)> {
    let bytes = crate::paths::read_regular(path, "weights file", crate::paths::MAX_MODEL_BYTES)?;
    let format = detect(path, &bytes);
    let tensors = parse_weights(&bytes, format, arch).with_context(|| {
        format!(
            "cannot import dense weights for model {} from {} ({})",
            arch.name,
            path.display(),
            format.as_str()
        )
    })?;
    Ok((tensors, format))
}

/// [`read_weights`] on bytes already in memory.
pub fn parse_weights(bytes: &[u8], format: WeightsFormat, arch: &Arch) -> Result<HostTensors> {
    match format {
        WeightsFormat::Caffe => fit(arch, caffe::parse(bytes)?),
        WeightsFormat::Safetensors => fit(arch, parse_safetensors_any(bytes)?),
    }
}

/// A tensor's shape, its values as f32, and the dtype it was stored in.
type TypedTensor = (Vec<i64>, Vec<f32>, Dtype);

/// Every tensor of a safetensors file converted to f32 (F32, F64, F16 and BF16 tensors;
/// others kept as empty placeholders so [`fit`] can name them).
fn parse_safetensors_any(bytes: &[u8]) -> Result<HashMap<String, TypedTensor>> {
    let st = SafeTensors::deserialize(bytes).context(
        "not a valid safetensors file; give a .safetensors state dict (torch: \
         safetensors.torch.save_file(model.state_dict(), PATH)) or a Caffe .caffemodel",
    )?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            Dtype::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::F16 => d
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => d
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => Vec::new(),
        };
        let shape = view.shape().iter().map(|&x| x as i64).collect();
        out.insert(name, (shape, values, view.dtype()));
    }
    // A state dict saved from nn.DataParallel prefixes every name with "module.".
    if !out.is_empty() && out.keys().all(|k| k.starts_with("module.")) {
        out = out
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_string(), v))
            .collect();
    }
    Ok(out)
}

/// Names of a map's tensors, sorted (for messages and tests).
pub fn sorted_names<V>(t: &HashMap<String, V>) -> Vec<String> {
    let mut v: Vec<String> = t.keys().cloned().collect();
    v.sort();
    v
}

/// A shape without its leading 1s: Caffe's legacy 4-D blobs store an fc weight as
/// `(1, 1, out, in)` and a bias as `(1, 1, 1, out)`.
fn squeeze_leading(s: &[i64]) -> &[i64] {
    let k = s.iter().take_while(|&&d| d == 1).count();
    &s[k..]
}

/// Tensors found in a file, f32 values (a third field, when present, says the dtype).
trait Found {
    fn shape(&self) -> &[i64];
    fn values(&self) -> &[f32];
    fn dtype(&self) -> Dtype;
}

impl Found for (Vec<i64>, Vec<f32>) {
    fn shape(&self) -> &[i64] {
        &self.0
    }
    fn values(&self) -> &[f32] {
        &self.1
    }
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
}

impl Found for TypedTensor {
    fn shape(&self) -> &[i64] {
        &self.0
    }
    fn values(&self) -> &[f32] {
        &self.1
    }
    fn dtype(&self) -> Dtype {
        self.2
    }
}

/// Fits tensors found in a file onto `arch`: every layer's `weight` and `bias` must be
/// there with the model's shape (leading 1s aside), in a float dtype, and no tensor may be
/// left over (that would mean a different architecture).
fn fit<T: Found>(arch: &Arch, found: HashMap<String, T>) -> Result<HostTensors> {
    let layer_list = arch
        .layers
        .iter()
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = HostTensors::new();
    for l in &arch.layers {
        for (suffix, want) in [
            ("weight", l.weight_shape.clone()),
            ("bias", vec![l.outputs()]),
        ] {
            let key = format!("{}.{suffix}", l.name);
            let Some(t) = found.get(&key) else {
                let has_layer = found.keys().any(|k| k.starts_with(&format!("{}.", l.name)));
                if has_layer && suffix == "bias" {
                    bail!(
                        "layer {}: the file has a weight but no bias (a Caffe layer with \
                         bias_term: false?); dc-search's {} has biases in every layer: save the \
                         model with biases (zeros will do)",
                        l.name,
                        arch.name
                    );
                }
                bail!(
                    "layer {}: no tensor {key:?} in the file; model {} needs the layers {layer_list} \
                     and the file has {}; rename the file's layers to these names (Caffe: the \
                     layer's name; PyTorch: the module's attribute name), or choose the model \
                     that matches the file",
                    l.name,
                    arch.name,
                    list(&sorted_names(&found))
                );
            };
            if !matches!(
                t.dtype(),
                Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16
            ) {
                bail!(
                    "layer {}: tensor {key:?} has dtype {:?}; give float weights (F32, F64, F16 or BF16)",
                    l.name,
                    t.dtype()
                );
            }
            if squeeze_leading(t.shape()) != squeeze_leading(&want)
                || t.values().len() as i64 != want.iter().product::<i64>()
            {
                bail!(
                    "layer {}: {suffix} has shape {:?}, model {} expects {want:?}; the file holds a \
                     different architecture (or layers in another layout): choose the zoo model \
                     that matches it ({})",
                    l.name,
                    t.shape(),
                    arch.name,
                    crate::models::registry::zoo_layers()
                );
            }
            out.insert(key, (want, t.values().to_vec()));
        }
    }
    let extra: Vec<String> = sorted_names(&found)
        .into_iter()
        .filter(|k| !out.contains_key(k))
        .collect();
    if !extra.is_empty() {
        bail!(
            "the file has tensors model {} does not have: {}; its layers are {layer_list}. Is the \
             file a different architecture? Remove those tensors or choose the matching model",
            arch.name,
            list(&extra)
        );
    }
    Ok(out)
}

/// A short comma-separated list (at most 12 names).
fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "no tensors".into();
    }
    let mut s = names
        .iter()
        .take(12)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 12 {
        s += &format!(" … ({} in all)", names.len());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(arch: &Arch) -> HostTensors {
        arch.layers
            .iter()
            .flat_map(|l| {
                let n = l.weight_numel() as usize;
                [
                    (
                        format!("{}.weight", l.name),
                        (
                            l.weight_shape.clone(),
                            (0..n).map(|j| (j % 100) as f32 * 0.25).collect(),
                        ),
                    ),
                    (
                        format!("{}.bias", l.name),
                        (vec![l.outputs()], vec![1.5; l.outputs() as usize]),
                    ),
                ]
            })
            .collect()
    }

    #[test]
    fn detects_by_extension_then_magic() {
        let st = crate::weights::to_safetensors(&[("a".into(), vec![1], vec![1.0])], None).unwrap();
        assert!(looks_like_safetensors(&st));
        assert_eq!(detect(Path::new("x.bin"), &st), WeightsFormat::Safetensors);
        assert_eq!(detect(Path::new("x.caffemodel"), &st), WeightsFormat::Caffe);
        assert_eq!(
            detect(Path::new("x.safetensors"), b"\x0a\x05LeNet"),
            WeightsFormat::Safetensors
        );
        assert_eq!(
            detect(Path::new("x.bin"), b"\x0a\x05LeNet"),
            WeightsFormat::Caffe
        );
        assert!(!looks_like_safetensors(
            b"\xff\xff\xff\xff\xff\xff\xff\xff{}"
        ));
    }

    #[test]
    fn fits_squeezing_leading_ones_and_refuses_mismatches() {
        let arch = Arch::lenet_300_100();
        let mut t = host(&arch);
        let (s, v) = t.remove("fc2.weight").unwrap();
        t.insert("fc2.weight".into(), ([vec![1, 1], s.clone()].concat(), v));
        let fitted = fit(&arch, t.clone()).unwrap();
        assert_eq!(fitted["fc2.weight"].0, s);
        assert_eq!(fitted, host(&arch));

        let mut bad = t.clone();
        bad.insert("fc1.weight".into(), (vec![300, 783], vec![0.0; 300 * 783]));
        let e = fit(&arch, bad).unwrap_err().to_string();
        assert!(
            e.contains("layer fc1") && e.contains("[300, 783]") && e.contains("[300, 784]"),
            "{e}"
        );

        let mut missing = t.clone();
        missing.remove("fc3.weight");
        missing.remove("fc3.bias");
        let e = fit(&arch, missing).unwrap_err().to_string();
        assert!(
            e.contains("layer fc3") && e.contains("no tensor \"fc3.weight\""),
            "{e}"
        );

        let mut no_bias = t.clone();
        no_bias.remove("fc3.bias");
        let e = fit(&arch, no_bias).unwrap_err().to_string();
        assert!(e.contains("layer fc3") && e.contains("no bias"), "{e}");

        let mut extra = t;
        extra.insert("fc4.weight".into(), (vec![2], vec![0.0; 2]));
        let e = fit(&arch, extra).unwrap_err().to_string();
        assert!(
            e.contains("fc4.weight") && e.contains("different architecture"),
            "{e}"
        );
    }

    #[test]
    fn safetensors_in_other_float_dtypes_and_data_parallel_names() {
        let arch = Arch::lenet_300_100();
        let t = host(&arch);
        for dtype in [Dtype::F16, Dtype::BF16, Dtype::F64] {
            let owned: Vec<(String, Vec<usize>, Vec<u8>)> = t
                .iter()
                .map(|(n, (s, v))| {
                    let bytes: Vec<u8> = match dtype {
                        Dtype::F16 => v
                            .iter()
                            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                            .collect(),
                        Dtype::BF16 => v
                            .iter()
                            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                            .collect(),
                        _ => v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect(),
                    };
                    (
                        format!("module.{n}"),
                        s.iter().map(|&d| d as usize).collect(),
                        bytes,
                    )
                })
                .collect();
            let views: Vec<(String, safetensors::tensor::TensorView)> = owned
                .iter()
                .map(|(n, s, b)| {
                    (
                        n.clone(),
                        safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap(),
                    )
                })
                .collect();
            let bytes = safetensors::serialize(views, None).unwrap();
            let got = parse_weights(&bytes, WeightsFormat::Safetensors, &arch).unwrap();
            // Multiples of 0.25 below 25 are exact in every float dtype.
            assert_eq!(got, t, "{dtype:?}");
        }
        let e = format!(
            "{:#}",
            parse_weights(b"not safetensors", WeightsFormat::Safetensors, &arch).unwrap_err()
        );
        assert!(e.contains("not a valid safetensors file"), "{e}");
    }
}
