//! Dense weights on disk: safetensors state dicts with PyTorch names (`fc1.weight`), and
//! the cache of trained dense models keyed by model, dataset, recipe and seed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};

use crate::models::Net;

/// Host tensors by name: `(shape, values)`.
pub type HostTensors = HashMap<String, (Vec<i64>, Vec<f32>)>;

/// Serialises named f32 tensors as safetensors bytes (with optional string metadata).
pub fn to_safetensors(
    tensors: &[(String, Vec<i64>, Vec<f32>)],
    meta: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let raw: Vec<RawTensor> = tensors
        .iter()
        .map(|(n, s, v)| RawTensor {
            name: n.clone(),
            dtype: Dtype::F32,
            shape: s.iter().map(|&d| d as usize).collect(),
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
        .collect();
    serialize(&raw, meta)
}

/// One tensor as safetensors stores it: dtype, shape and little-endian bytes.
struct RawTensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn serialize(tensors: &[RawTensor], meta: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|t| {
            Ok((
                t.name.clone(),
                safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    Ok(safetensors::serialize(views, meta)?)
}

/// The safetensors dtype of a tensor kind, if it has one.
fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        _ => return None,
    })
}

/// Named tensors of any dtype (a TorchScript module's state dict) as safetensors bytes, each
/// tensor with its own dtype and shape.
pub fn state_to_safetensors(
    state: &[(String, Tensor)],
    meta: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(state.len());
    for (name, t) in state {
        let Some(dtype) = dtype_of(t.kind()) else {
            bail!(
                "tensor {name:?} is {:?}, which safetensors cannot hold",
                t.kind()
            );
        };
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, numel)?;
        raw.push(RawTensor {
            name: name.clone(),
            dtype,
            shape: t.size().iter().map(|&d| d as usize).collect(),
            bytes,
        });
    }
    serialize(&raw, meta)
}

/// Writes a net's weights as a safetensors file (atomically).
pub fn save_net(net: &Net, path: &Path, meta: Option<HashMap<String, String>>) -> Result<()> {
    let bytes = to_safetensors(&net.to_host(), meta)?;
    crate::paths::write_atomic(path, &bytes)
}

/// Reads every F32 tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<HostTensors> {
    let bytes =
        crate::paths::read_regular(path, "safetensors file", crate::paths::MAX_MODEL_BYTES)?;
    parse_safetensors(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))
}

/// Parses safetensors bytes (F32 tensors only).
pub fn parse_safetensors(bytes: &[u8]) -> Result<HostTensors> {
    let st = SafeTensors::deserialize(bytes)?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!(
                "tensor {name:?} has dtype {:?}; only F32 is supported",
                view.dtype()
            );
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(
            name,
            (view.shape().iter().map(|&d| d as i64).collect(), values),
        );
    }
    Ok(out)
}

/// The cache file of a dense model trained with `key_json` (a serialised description of
/// everything that determines the weights).
pub fn cache_path(model: &str, dataset: &str, key_json: &str) -> PathBuf {
    let digest = Sha256::digest(key_json.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    crate::paths::cache_dir()
        .join("models")
        .join(format!("{model}-{dataset}-{hex}.safetensors"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_dict_keeps_each_tensors_dtype_and_shape() {
        let state = vec![
            (
                "bn.running_var".to_string(),
                Tensor::from_slice(&[1.5f32, 2.0]),
            ),
            ("bn.num_batches_tracked".to_string(), Tensor::from(940i64)),
            (
                "h".to_string(),
                Tensor::from_slice(&[0.5f64]).reshape([1, 1]),
            ),
        ];
        let bytes = state_to_safetensors(&state, None).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let var = st.tensor("bn.running_var").unwrap();
        assert_eq!((var.dtype(), var.shape()), (Dtype::F32, &[2][..]));
        assert_eq!(
            var.data(),
            [1.5f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat()
        );
        let n = st.tensor("bn.num_batches_tracked").unwrap();
        assert_eq!((n.dtype(), n.shape()), (Dtype::I64, &[][..]));
        assert_eq!(n.data(), 940i64.to_le_bytes());
        let h = st.tensor("h").unwrap();
        assert_eq!((h.dtype(), h.shape()), (Dtype::F64, &[1, 1][..]));
        let e = state_to_safetensors(
            &[(
                "c".into(),
                Tensor::from_slice(&[1.0f32]).to_kind(Kind::ComplexFloat),
            )],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"c\"") && e.contains("safetensors cannot hold"),
            "{e}"
        );
    }
}
