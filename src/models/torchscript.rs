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
//!
//! A brought module is code: it is checked when loaded (batches of 1 and 3 give logits
//! `[n, classes]`), and every forward has a time limit (`torchscript.forward_seconds`,
//! enforced by `runtime::deadline`: a forward that never returns ends the process with one
//! line) and is checked again. A forward that fails later (on real inputs, at another batch
//! size, logits that do not fit the labels) cannot return an error through the training and
//! evaluation loops, which take tensors: it unwinds with [`ScriptFailed`] (no panic message:
//! `resume_unwind`), which `commands::run` turns into the command's one error line, exit 2.

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
    /// Most seconds one forward may take (a batch of at most 256 inputs): past it the
    /// command ends with an error (a loop that never ends).
    #[serde(
        default = "default_forward_seconds",
        skip_serializing_if = "is_default_forward_seconds"
    )]
    pub forward_seconds: f64,
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

/// [`TorchScriptConfig::forward_seconds`] when the config leaves it out.
pub const FORWARD_SECONDS: f64 = 60.0;

fn default_forward_seconds() -> f64 {
    FORWARD_SECONDS
}

fn is_default_forward_seconds(s: &f64) -> bool {
    *s == FORWARD_SECONDS
}

/// A module's forward failed past its load-time checks: the payload of the unwind that
/// `commands::run` turns into the command's error (see the module doc).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScriptFailed(pub String);

/// Ends the command with `message` as its error line, from inside the training or
/// evaluation loop a brought module failed in (see the module doc).
pub fn fail(message: String) -> ! {
    std::panic::resume_unwind(Box::new(ScriptFailed(message)))
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
        crate::check::need(
            crate::check::within(self.forward_seconds, 0.001, 86_400.0),
            "torchscript.forward_seconds",
            self.forward_seconds,
            "[0.001, 86400] seconds",
        )?;
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
    /// Logits per input, as the load-time forward returned them.
    classes: i64,
    /// What the time limit of a forward says when it passes.
    late: Arc<str>,
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
    /// Logits `[n, classes]` for images `[n, …]` (reshaped to `[n] + input_shape`, shifted),
    /// within the time limit; a forward that fails or returns another shape ends the
    /// command ([`fail`]).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let n = x.size()[0];
        let y = match self.timed_forward(x) {
            Ok(y) => y,
            Err(e) => fail(format!(
                "TorchScript module {} failed in forward (a batch of {n}): {}",
                self.file_name(),
                crate::runtime::torch_message(&e.to_string())
            )),
        };
        if y.size() != [n, self.classes] {
            fail(format!(
                "TorchScript module {}: forward of a batch of {n} returned shape {:?}; it returned \
                 [n, {}] when loaded: logits [batch, classes] are needed at every batch size",
                self.file_name(),
                y.size(),
                self.classes
            ));
        }
        y
    }

    /// Logits per input.
    pub fn classes(&self) -> i64 {
        self.classes
    }

    fn file_name(&self) -> String {
        self.source.file_name().map_or_else(
            || self.source.display().to_string(),
            |n| n.to_string_lossy().into(),
        )
    }

    /// [`Script::try_forward`] under the time limit.
    fn timed_forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let _limit = crate::runtime::deadline(
            std::time::Duration::from_secs_f64(self.cfg.forward_seconds),
            self.late.clone(),
        );
        self.try_forward(x)
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
        anyhow!(
            "{src} is not a TorchScript module libtorch can load (save it with torch.jit.script(model).save(path)): {}",
            crate::runtime::torch_message(&e.to_string())
        )
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
    let mut script = Script {
        module,
        bytes,
        source: source.to_path_buf(),
        name: name.to_string(),
        cfg: cfg.clone(),
        classes: 0,
        late: format!(
            "TorchScript module {src}: a forward ran past torchscript.forward_seconds = {} s (a loop \
             that never ends?); fix the module, or allow more in torchscript.forward_seconds",
            cfg.forward_seconds
        )
        .into(),
    };
    // Probe batches of 1 and 3: the module must take [n] + input_shape and return logits
    // [n, classes], the same classes at both sizes.
    let mut classes = Vec::new();
    for n in [1, 3] {
        let probe = tch::no_grad(|| {
            script.timed_forward(&Tensor::zeros(
                [n, cfg.input_shape.iter().product::<i64>()],
                (Kind::Float, device),
            ))
        });
        let out = match probe {
            Ok(y) => y.size(),
            Err(e) => bail!(
                "{src}: forward of a batch of shape [{n}, {}] failed: check torchscript.input_shape; libtorch says: {}",
                cfg.input_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
                crate::runtime::torch_message(&e.to_string())
            ),
        };
        ensure!(
            out.len() == 2 && out[0] == n && out[1] >= 2,
            "{src}: forward of {n} inputs returned shape {out:?}; dc-search needs logits [batch, classes]"
        );
        classes.push(out[1]);
    }
    ensure!(
        classes[0] == classes[1],
        "{src}: forward returned {} logits per input for a batch of 1 and {} for a batch of 3; \
         dc-search needs the same classes at every batch size",
        classes[0],
        classes[1]
    );
    script.classes = classes[0];
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
