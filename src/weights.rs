//! Dense weights on disk: safetensors state dicts with PyTorch names (`fc1.weight`), and
//! the cache of trained dense models keyed by model, dataset, recipe and seed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::models::Net;

/// Host tensors by name: `(shape, values)`.
pub type HostTensors = HashMap<String, (Vec<i64>, Vec<f32>)>;

/// Serialises named f32 tensors as safetensors bytes (with optional string metadata).
pub fn to_safetensors(
    tensors: &[(String, Vec<i64>, Vec<f32>)],
    meta: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                s.iter().map(|&d| d as usize).collect(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    Ok(safetensors::serialize(views, meta)?)
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
