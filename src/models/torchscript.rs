//! TorchScript models: a module scripted in Python (`torch.jit.script(model).save("m.pt")`)
//! stands in for a zoo model, so models defined outside dc-search are pruned, quantized,
//! retrained and encoded like the zoo's.
//!
//! A config's `[torchscript]` section ([`TorchScriptConfig`]) names the module file, the
//! shape of one input and, per compressible layer, the module parameters that hold its
//! weight and bias. [`load`] builds a [`Net`] whose arch is one opaque [`Op::Script`] and
//! whose layer tensors *are* the module's parameters (same storage): pruning masks,
//! SGD steps and codebook rebuilds, all in-place, change what the module computes.
//!
//! The module runs in eval mode (dropout off, batch-norm statistics as saved) and only the
//! named layers train; every other parameter and buffer stays as in the file. So the module
//! file plus a `.dcz` of the named layers determine the compressed model exactly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{CModule, Device, Kind, Tensor};

use super::{Arch, LayerKind, LayerSpec, Net, Op, Param};

/// The `[torchscript]` section of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchScriptConfig {
    /// The scripted module (`.pt`); relative to the config file. `--torchscript` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<PathBuf>,
    /// One input without the batch dimension, as the module's `forward` takes it:
    /// `[1, 28, 28]`, or `[784]` for a module that takes flat vectors.
    pub input_shape: Vec<i64>,
    /// Added to the scaled pixels (`x · data.input_scale + input_shift`): with
    /// `data.input_scale`, the normalisation the module was trained with.
    #[serde(default)]
    pub input_shift: f32,
    /// The compressible layers, in the order ratios and bits are given.
    pub layers: Vec<ScriptLayer>,
    /// The config file this section was read from (set by `Config::resolve`, never written
    /// to TOML): files made from the module record it ([`super::origin`]).
    #[serde(skip)]
    pub origin: Option<crate::format::Origin>,
}

/// One compressible layer of a TorchScript module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptLayer {
    /// The layer's name in ratios, bits, CSVs and the file (`fc1`).
    pub name: String,
    /// The module parameter holding its weight (`fc1.weight`): `[out, in]` (linear) or
    /// `[out, in, kh, kw]` (conv).
    pub weight: String,
    /// The module parameter holding its bias (`fc1.bias`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<String>,
}

impl TorchScriptConfig {
    /// Checks what can be checked without the module.
    pub fn check(&self) -> Result<()> {
        ensure!(
            !self.input_shape.is_empty() && self.input_shape.iter().all(|&d| d > 0),
            "torchscript.input_shape {:?} must list positive dimensions",
            self.input_shape
        );
        ensure!(
            self.input_shape.len() <= crate::format::MAX_RANK
                && self
                    .input_shape
                    .iter()
                    .try_fold(1i64, |a, &d| a.checked_mul(d))
                    .is_some_and(|n| n <= 1 << 31),
            "torchscript.input_shape {:?} is too large: one input of at most 2^31 values and {} dimensions",
            self.input_shape,
            crate::format::MAX_RANK
        );
        ensure!(
            self.input_shift.is_finite(),
            "torchscript.input_shift must be a number"
        );
        ensure!(
            !self.layers.is_empty(),
            "torchscript.layers is empty: name at least one compressible layer"
        );
        for (i, l) in self.layers.iter().enumerate() {
            ensure!(
                !l.name.is_empty() && l.name.len() <= crate::format::MAX_NAME_LEN,
                "torchscript.layers[{i}]: a name of 1 to {} bytes is needed",
                crate::format::MAX_NAME_LEN
            );
            if let Some(j) = self.layers[..i].iter().position(|o| o.name == l.name) {
                bail!(
                    "torchscript.layers[{j}] and [{i}] are both named {:?}",
                    l.name
                );
            }
            let params = [Some(&l.weight), l.bias.as_ref()];
            for other in &self.layers[..i] {
                for p in params.iter().flatten() {
                    if other.weight == **p || other.bias.as_ref() == Some(p) {
                        bail!(
                            "parameter {p:?} is named by layers {:?} and {:?}: each parameter belongs to one layer",
                            other.name,
                            l.name
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// The TorchScript module's share of a compressed model (see [`Script::pair_bytes`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairBytes {
    pub module: PathBuf,
    pub module_bytes: usize,
    pub other_state_bytes: usize,
}

/// A loaded TorchScript module and what is needed to run it and to load it again.
pub struct Script {
    module: CModule,
    /// The `.pt` file's bytes: [`Net::copy`] loads an independent instance from them.
    bytes: Arc<[u8]>,
    source: PathBuf,
    name: String,
    cfg: TorchScriptConfig,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script")
            .field("source", &self.source)
            .field("name", &self.name)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Script {
    /// Logits `[n, classes]` for images `[n, …]` (reshaped to `[n] + input_shape`, shifted).
    /// (Checked when loaded, so a failure here is a bug or a module whose forward fails
    /// only on some inputs: it panics with libtorch's message.)
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.try_forward(x).unwrap_or_else(|e| {
            panic!(
                "TorchScript module {} failed in forward: {e}",
                self.source.display()
            )
        })
    }

    fn try_forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let mut shape = vec![x.size()[0]];
        shape.extend_from_slice(&self.cfg.input_shape);
        let mut x = x.f_reshape(shape.as_slice())?;
        if self.cfg.input_shift != 0.0 {
            x = x.f_add_scalar(f64::from(self.cfg.input_shift))?;
        }
        self.module.forward_ts(&[x])
    }

    pub fn input_shift(&self) -> f32 {
        self.cfg.input_shift
    }

    /// The config file the module was named by, as files made from it record it.
    pub fn origin(&self) -> Option<&crate::format::Origin> {
        self.cfg.origin.as_ref()
    }

    /// The module's whole state dict, as `module.state_dict()` holds it: every parameter
    /// (the named layers with their current values, the others as saved) and every buffer
    /// (as saved: the module runs in eval mode, so batch-norm statistics never move), by full
    /// name, on the CPU. Parameters come first, each group in the module's order.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        let src = self.source.display();
        let params = self
            .module
            .named_parameters()
            .with_context(|| format!("{src}: cannot list the module's parameters"))?;
        let buffers = super::buffers::named_buffers(&self.bytes)
            .with_context(|| format!("TorchScript module {src}"))?;
        Ok(params
            .into_iter()
            .map(|(n, t)| (n, t.detach().to_device(Device::Cpu)))
            .chain(buffers)
            .collect())
    }

    /// What the pair module `.pt` + `.dcz` costs besides the file: the module file's bytes,
    /// and the tensor bytes of its state that no named layer owns (every other parameter and
    /// every buffer, each in its own dtype), which is what the module brings to a compressed
    /// model shipped as code plus state.
    pub fn pair_bytes(&self) -> Result<PairBytes> {
        let owned: Vec<&str> = self
            .cfg
            .layers
            .iter()
            .flat_map(|l| std::iter::once(l.weight.as_str()).chain(l.bias.as_deref()))
            .collect();
        let other_state_bytes = self
            .state_dict()?
            .iter()
            .filter(|(n, _)| !owned.contains(&n.as_str()))
            .map(|(_, t)| t.numel() * t.kind().elt_size_in_bytes())
            .sum();
        Ok(PairBytes {
            module: self.source.clone(),
            module_bytes: self.bytes.len(),
            other_state_bytes,
        })
    }

    /// The module file this net was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// A deep copy of `net` (this script's net): a fresh module instance from the same bytes,
    /// with `net`'s current weights.
    pub(super) fn copy_net(&self, net: &Net) -> Net {
        let fresh = from_bytes(
            &self.name,
            &self.cfg,
            &self.source,
            self.bytes.clone(),
            net.device,
        )
        .expect("a TorchScript module that loaded once loads again from the same bytes");
        fresh.assign(net);
        fresh
    }
}

/// Loads the module named by `cfg` (`name` is the model name the file will carry) as a
/// [`Net`] on `device`.
pub fn load(name: &str, cfg: &TorchScriptConfig, device: Device) -> Result<Net> {
    let Some(path) = &cfg.module else {
        bail!(
            "no TorchScript module given: set torchscript.module in the config or pass --torchscript MODEL.pt"
        );
    };
    let bytes =
        crate::paths::read_regular(path, "TorchScript module", crate::paths::MAX_MODEL_BYTES)?;
    from_bytes(name, cfg, path, bytes.into(), device)
}

fn from_bytes(
    name: &str,
    cfg: &TorchScriptConfig,
    source: &Path,
    bytes: Arc<[u8]>,
    device: Device,
) -> Result<Net> {
    cfg.check()?;
    let src = source.display();
    let mut module = CModule::load_data_on_device(&mut &bytes[..], device).map_err(|e| {
        anyhow!("{src} is not a TorchScript module libtorch can load (save it with torch.jit.script(model).save(path)): {e}")
    })?;
    module
        .f_set_eval()
        .with_context(|| format!("{src}: cannot switch the module to eval mode"))?;
    let named = module
        .named_parameters()
        .with_context(|| format!("{src}: cannot list the module's parameters"))?;
    // Only the named layers train: everything else stays as saved.
    for (_, t) in &named {
        let _ = t.shallow_clone().set_requires_grad(false);
    }
    let find = |param: &str, layer: &str, role: &str| -> Result<Tensor> {
        let Some((_, t)) = named.iter().find(|(n, _)| n == param) else {
            bail!(
                "TorchScript module {src} has no parameter {param:?} (the {role} of layer {layer:?} in the config); its parameters are {}",
                named.iter().map(|(n, t)| format!("{n} {:?}", t.size())).collect::<Vec<_>>().join(", ")
            );
        };
        ensure!(
            t.kind() == Kind::Float,
            "{src}: parameter {param:?} is {:?}; dc-search trains float32 modules (save it after model.float())",
            t.kind()
        );
        ensure!(
            t.is_contiguous(),
            "{src}: parameter {param:?} is not contiguous; save the module with contiguous parameters"
        );
        Ok(t.shallow_clone())
    };
    let mut layers = Vec::new();
    let mut params = Vec::new();
    for l in &cfg.layers {
        let weight = find(&l.weight, &l.name, "weight")?;
        let shape = weight.size();
        let kind = match shape.len() {
            2 => LayerKind::Linear,
            4 => LayerKind::Conv,
            _ => bail!(
                "{src}: parameter {:?} (layer {:?}) has shape {shape:?}; dc-search compresses linear [out, in] and conv [out, in, kh, kw] weights",
                l.weight,
                l.name
            ),
        };
        let bias = match &l.bias {
            Some(b) => {
                let t = find(b, &l.name, "bias")?;
                ensure!(
                    t.size() == [shape[0]],
                    "{src}: bias {b:?} of layer {:?} has shape {:?}, its weight {:?} needs [{}]",
                    l.name,
                    t.size(),
                    l.weight,
                    shape[0]
                );
                t.set_requires_grad(true)
            }
            // A layer without bias: zeros the module never reads (stored as zeros).
            None => Tensor::zeros([shape[0]], (Kind::Float, device)),
        };
        layers.push(LayerSpec {
            name: l.name.clone(),
            kind,
            weight_shape: shape,
            bias: l.bias.is_some(),
        });
        params.push(Param {
            weight: weight.set_requires_grad(true),
            bias,
        });
    }
    let script = Script {
        module,
        bytes,
        source: source.to_path_buf(),
        name: name.to_string(),
        cfg: cfg.clone(),
    };
    // A probe batch: the module must take [n] + input_shape and return logits [n, classes].
    let probe = tch::no_grad(|| {
        script.try_forward(&Tensor::zeros(
            [2, cfg.input_shape.iter().product::<i64>()],
            (Kind::Float, device),
        ))
    });
    let out = match probe {
        Ok(y) => y.size(),
        Err(e) => bail!(
            "{src}: forward of a batch of shape [2, {}] failed: check torchscript.input_shape; libtorch says: {e}",
            cfg.input_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    ensure!(
        out.len() == 2 && out[0] == 2 && out[1] >= 2,
        "{src}: forward of 2 inputs returned shape {out:?}; dc-search needs logits [batch, classes]"
    );
    Ok(Net {
        arch: Arch {
            name: name.to_string(),
            input_shape: cfg.input_shape.clone(),
            layers,
            ops: vec![Op::Script],
        },
        params,
        device,
        script: Some(Arc::new(script)),
    })
}
