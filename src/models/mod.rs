//! The model zoo: each model is an [`Arch`] — an ordered list of ops over named
//! compressible layers (conv and fully connected) — and a [`Net`] holds its weights.
//!
//! Layers are exposed by name and in order (`conv1, conv2, fc1, fc2` for LeNet-5), which
//! is what pruning ratios, bits, CSV rows and the compressed file refer to. Tensor names
//! follow PyTorch (`fc1.weight`, `fc1.bias`) so state dicts move both ways.
//!
//! The zoo's models and the presets are listed once, in [`registry`].
//!
//! A model defined outside dc-search can stand in as a TorchScript module
//! ([`torchscript`]): its arch has one opaque [`Op::Script`] and its layers' tensors are the
//! module's own parameters.

pub mod buffers;
pub mod origin;
pub mod registry;
pub mod torchscript;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, ensure, Result};

use crate::data::Data;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// What a compressible layer computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    Conv,
    Linear,
}

/// A compressible layer: its name and weight shape (`[out, in, kh, kw]` or `[out, in]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSpec {
    pub name: String,
    pub kind: LayerKind,
    pub weight_shape: Vec<i64>,
    /// Whether the layer has a bias (a TorchScript layer may not: its bias tensor is then
    /// zeros the module never reads, left out of files and of the dense size).
    #[serde(default = "yes")]
    pub bias: bool,
}

fn yes() -> bool {
    true
}

impl LayerSpec {
    /// Inputs feeding one output unit (Caffe's xavier `fan_in`).
    pub fn fan_in(&self) -> i64 {
        self.weight_shape[1..].iter().product()
    }

    pub fn weight_numel(&self) -> i64 {
        self.weight_shape.iter().product()
    }

    pub fn outputs(&self) -> i64 {
        self.weight_shape[0]
    }
}

/// One step of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Stride-1, unpadded convolution by layer `0`.
    Conv(usize),
    /// Fully connected layer `0`.
    Linear(usize),
    MaxPool2,
    Relu,
    Flatten,
    /// The whole TorchScript module of [`Net::script`] (inputs to logits): it applies every
    /// layer, so no prefix of it can be cached.
    Script,
}

/// A model's architecture: named layers and the ops that chain them.
#[derive(Debug, Clone, PartialEq)]
pub struct Arch {
    pub name: String,
    /// `[channels, height, width]` of one input.
    pub input_shape: Vec<i64>,
    pub layers: Vec<LayerSpec>,
    pub ops: Vec<Op>,
}

impl Arch {
    /// Looks a zoo model up by name ([`registry::MODELS`]).
    pub fn by_name(name: &str) -> Result<Arch> {
        registry::arch(name)
    }

    /// Weights plus biases of every layer (a layer without bias counts its weights alone).
    pub fn num_params(&self) -> i64 {
        self.layers
            .iter()
            .map(|l| l.weight_numel() + if l.bias { l.outputs() } else { 0 })
            .sum()
    }

    pub fn layer_index(&self, name: &str) -> Result<usize> {
        match self.layers.iter().position(|l| l.name == name) {
            Some(i) => Ok(i),
            None => bail!(
                "model {} has no layer {name:?}; its layers are {}",
                self.name,
                self.layers
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Index of the op that applies layer `layer` (for a TorchScript model, its one
    /// [`Op::Script`]: the activations entering it are the inputs).
    pub fn op_of_layer(&self, layer: usize) -> usize {
        self.ops
            .iter()
            .position(|op| matches!(op, Op::Conv(i) | Op::Linear(i) if *i == layer))
            .or_else(|| self.ops.iter().position(|op| *op == Op::Script))
            .expect("every layer has an op")
    }
}

/// 2×2 max pooling with stride 2 (odd rows and columns dropped), the same values either
/// way, by the fastest path on CPU (`dc-search bench train`):
/// - where no gradient will flow back (evaluation), the elementwise maximum of the four
///   strided views, about 15× faster than `max_pool2d`, whose kernel also computes the
///   indices a backward pass needs;
/// - in training, `max_pool2d` on channels-last strides (its vectorised kernel; see
///   [`channels_last`]). The maximum's backward would cost more than it saves.
pub fn max_pool2(x: &Tensor) -> Tensor {
    if x.requires_grad() {
        return channels_last(x).max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
    }
    let s = x.size();
    let (h, w) = (s[2] / 2 * 2, s[3] / 2 * 2);
    let rows = x.slice(2, 0, h, 2).maximum(&x.slice(2, 1, h, 2));
    rows.slice(3, 0, w, 2).maximum(&rows.slice(3, 1, w, 2))
}

/// `x` (`[n, c, h, w]`) with channels-last strides: the same tensor when it has them; with
/// one channel, a view of the same memory (only the size-1 dimension's stride differs); a
/// copy otherwise (through autograd, like any view and copy). A convolution whose input is
/// channels-last runs oneDNN's channels-last kernels and gives a channels-last output, which
/// the pooling after it reads with its vectorised kernel: on one thread a LeNet-5 training
/// step at batch 64 takes about half the CPU time of the planar path.
fn channels_last(x: &Tensor) -> Tensor {
    let s = x.size();
    let want = [s[1] * s[2] * s[3], 1, s[3] * s[1], s[1]];
    if x.stride() == want {
        x.shallow_clone()
    } else if s[1] == 1 {
        x.contiguous().as_strided(s.as_slice(), want, None)
    } else {
        x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    }
}

/// The weights of one layer.
#[derive(Debug)]
pub struct Param {
    pub weight: Tensor,
    pub bias: Tensor,
}

/// A model with its weights (leaf tensors that require grad).
#[derive(Debug)]
pub struct Net {
    pub arch: Arch,
    pub params: Vec<Param>,
    pub device: Device,
    /// The TorchScript module that [`Op::Script`] runs; `params` share its parameters'
    /// storage. `None` for zoo models.
    pub script: Option<Arc<torchscript::Script>>,
}

impl Net {
    /// Caffe's "xavier" initialisation U(±√(3/fan_in)) and zero biases, from torch's global
    /// generator (seed it with `tch::manual_seed` first).
    pub fn init(arch: &Arch, device: Device) -> Net {
        let params = arch
            .layers
            .iter()
            .map(|l| {
                let a = (3.0 / l.fan_in() as f64).sqrt();
                let weight = Tensor::empty(l.weight_shape.as_slice(), (Kind::Float, device))
                    .uniform_(-a, a)
                    .set_requires_grad(true);
                let bias =
                    Tensor::zeros([l.outputs()], (Kind::Float, device)).set_requires_grad(true);
                Param { weight, bias }
            })
            .collect();
        Net {
            arch: arch.clone(),
            params,
            device,
            script: None,
        }
    }

    /// Checks that `data` fits this net: one image has the shape the model takes (a zoo
    /// model: exactly; a TorchScript module: as many values as its `input_shape`), and the
    /// model gives a logit for every class the labels name.
    pub fn fits(&self, data: &Data) -> Result<()> {
        let (want, have) = (&self.arch.input_shape, &data.image_shape);
        let values = |s: &[i64]| s.iter().product::<i64>();
        let show = |s: &[i64]| {
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("×")
        };
        let mut sorted = (want.clone(), have.clone());
        sorted.0.sort_unstable();
        sorted.1.sort_unstable();
        let layout = if sorted.0 == sorted.1 {
            "; for an .npz of channels-last arrays set data.layout = \"nhwc\""
        } else {
            ""
        };
        if self.script.is_some() {
            ensure!(
                values(want) == values(have),
                "torchscript.input_shape {want:?} holds {} values, but the images of {} are {} ({} \
                 values): set input_shape to the shape the module's forward() takes{layout}",
                values(want),
                data.name,
                show(have),
                values(have)
            );
        } else {
            ensure!(
                want == have,
                "model {} takes images of {}, but the images of {} are {}: give data of that shape, \
                 or bring a model that takes these (a TorchScript config){layout}",
                self.arch.name,
                show(want),
                data.name,
                show(have)
            );
        }
        let n = data.valid.len().min(2) as i64;
        let x = data.valid.images.narrow(0, 0, n).to_device(self.device);
        let logits = tch::no_grad(|| self.forward(&x)).size();
        let k = logits.get(1).copied().unwrap_or(0);
        ensure!(
            logits.len() == 2 && k as usize >= data.classes,
            "model {} gives {k} logits per image, but the labels of {} name {} classes (0 to {}): \
             give a model with an output per class",
            self.arch.name,
            data.name,
            data.classes,
            data.classes.saturating_sub(1)
        );
        Ok(())
    }

    /// Logits `[n, classes]` for inputs `[n, c, h, w]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_from(0, x)
    }

    /// Runs ops `start..` on `x`, the activation entering op `start`.
    pub fn forward_from(&self, start: usize, x: &Tensor) -> Tensor {
        self.forward_range(start, self.arch.ops.len(), x)
    }

    /// Runs ops `start..end` on `x`.
    pub fn forward_range(&self, start: usize, end: usize, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for op in &self.arch.ops[start..end] {
            h = match *op {
                Op::Conv(i) => channels_last(&h).conv2d(
                    &self.params[i].weight,
                    Some(&self.params[i].bias),
                    [1, 1],
                    [0, 0],
                    [1, 1],
                    1,
                ),
                Op::Linear(i) => h.linear(&self.params[i].weight, Some(&self.params[i].bias)),
                Op::MaxPool2 => max_pool2(&h),
                Op::Relu => h.relu(),
                Op::Flatten => h.flatten(1, -1),
                Op::Script => self
                    .script
                    .as_ref()
                    .expect("an arch with Op::Script belongs to a TorchScript net")
                    .forward(&h),
            };
        }
        h
    }

    /// Every trainable tensor, weights and biases interleaved in layer order.
    pub fn tensors(&self) -> Vec<&Tensor> {
        self.params
            .iter()
            .flat_map(|p| [&p.weight, &p.bias])
            .collect()
    }

    /// Zeroes every accumulated gradient.
    pub fn zero_grad(&self) {
        for t in self.tensors() {
            let mut g = t.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// `(name, tensor)` pairs with PyTorch names (`conv1.weight`, `conv1.bias`, …).
    pub fn named_tensors(&self) -> Vec<(String, &Tensor)> {
        self.arch
            .layers
            .iter()
            .zip(&self.params)
            .flat_map(|(l, p)| {
                [
                    (format!("{}.weight", l.name), &p.weight),
                    (format!("{}.bias", l.name), &p.bias),
                ]
            })
            .collect()
    }

    /// Named tensors as host `f32` vectors with shapes (for files and hashing).
    pub fn to_host(&self) -> Vec<(String, Vec<i64>, Vec<f32>)> {
        self.named_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.size(), tensor_to_vec(t)))
            .collect()
    }

    /// Overwrites the weights with `tensors` (name → (shape, values)); every layer must be
    /// present with its exact shape and finite values.
    pub fn load_host(
        &mut self,
        tensors: &HashMap<String, (Vec<i64>, Vec<f32>)>,
        source: &str,
    ) -> Result<()> {
        for (name, t) in self.named_tensors() {
            let Some((shape, values)) = tensors.get(&name) else {
                bail!(
                    "{source} has no tensor {name:?} (model {} needs it)",
                    self.arch.name
                );
            };
            ensure!(
                shape == &t.size(),
                "{source}: tensor {name:?} has shape {shape:?}, model {} expects {:?}",
                self.arch.name,
                t.size()
            );
            let n: i64 = shape.iter().product();
            ensure!(
                values.len() as i64 == n,
                "{source}: tensor {name:?} of shape {shape:?} holds {} values, not {n}",
                values.len()
            );
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                bail!(
                    "{source}: tensor {name:?} holds a non-finite value ({} at index {i})",
                    values[i]
                );
            }
            let src = Tensor::from_slice(values)
                .view(shape.as_slice())
                .to_device(self.device);
            tch::no_grad(|| t.shallow_clone().copy_(&src));
        }
        Ok(())
    }

    /// A deep copy on the same device (a TorchScript net gets its own module instance).
    pub fn copy(&self) -> Net {
        if let Some(script) = &self.script {
            return script.copy_net(self);
        }
        let params = self
            .params
            .iter()
            .map(|p| Param {
                weight: p.weight.detach().copy().set_requires_grad(true),
                bias: p.bias.detach().copy().set_requires_grad(true),
            })
            .collect();
        Net {
            arch: self.arch.clone(),
            params,
            device: self.device,
            script: None,
        }
    }

    /// Added to the scaled inputs before the first layer (a TorchScript config's
    /// `input_shift`; 0 for zoo models).
    pub fn input_shift(&self) -> f32 {
        self.script.as_ref().map_or(0.0, |s| s.input_shift())
    }

    /// Copies `other`'s weights into this net (same arch).
    pub fn assign(&self, other: &Net) {
        self.assign_params(&other.params);
    }

    /// Detached copies of the weights and biases, to put back with [`Net::assign_params`]
    /// (lighter than [`Net::copy`], which also copies a TorchScript module).
    pub fn snapshot(&self) -> Vec<Param> {
        self.params
            .iter()
            .map(|p| Param {
                weight: p.weight.detach().copy(),
                bias: p.bias.detach().copy(),
            })
            .collect()
    }

    /// Copies `params` (this net's layers, in order) into this net's weights and biases.
    pub fn assign_params(&self, params: &[Param]) {
        tch::no_grad(|| {
            for (a, b) in self.params.iter().zip(params) {
                a.weight.shallow_clone().copy_(&b.weight);
                a.bias.shallow_clone().copy_(&b.bias);
            }
        });
    }
}

/// Refuses a net that gives fewer logits per input than the data has classes (the largest
/// of `labels` + 1): a brought module with too few outputs would fail at its first loss.
pub fn check_classes(net: &Net, labels: &[&Tensor]) -> Result<()> {
    let classes = labels
        .iter()
        .filter(|l| l.numel() > 0)
        .map(|l| l.max().int64_value(&[]) + 1)
        .max()
        .unwrap_or(0);
    let logits = match &net.script {
        Some(s) => s.classes(),
        None => net.arch.layers.last().map_or(0, |l| l.outputs()),
    };
    ensure!(
        logits >= classes,
        "model {} gives {logits} logits per input, but the data has {classes} classes (labels 0..{}): \
         its last layer needs {classes} outputs",
        net.arch.name,
        classes - 1
    );
    Ok(())
}

/// A tensor's values as a host `Vec<f32>` (any device, any float kind).
pub fn tensor_to_vec(t: &Tensor) -> Vec<f32> {
    let flat = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view([-1]);
    Vec::<f32>::try_from(&flat).expect("a float tensor converts to Vec<f32>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_papers() {
        assert_eq!(Arch::lenet().num_params(), 431_080);
        assert_eq!(Arch::lenet_300_100().num_params(), 266_610);
    }

    #[test]
    fn pooling_without_gradient_equals_max_pool2d() {
        tch::manual_seed(3);
        // odd sizes drop the last row and column; ties (a flat background) and NaN as libtorch
        for shape in [[3i64, 4, 24, 24], [2, 5, 9, 7], [1, 1, 2, 2]] {
            let x = Tensor::randn(shape, (Kind::Float, Device::Cpu)).clamp_min(0.0);
            let _ = x.get(0).get(0).get(0).get(0).fill_(f64::NAN);
            let want = x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
            let got = max_pool2(&x);
            assert_eq!(got.size(), want.size());
            assert!(got.isnan().equal(&want.isnan()));
            assert!(got
                .nan_to_num(0.0, None, None)
                .equal(&want.nan_to_num(0.0, None, None)));
        }
        // with a gradient to carry, max_pool2d on channels-last strides: the same values, and
        // its backward routes each output's gradient to one element, the first maximum
        let x = Tensor::randn([2, 3, 6, 5], (Kind::Float, Device::Cpu))
            .clamp_min(0.0)
            .set_requires_grad(true);
        let y = max_pool2(&x);
        let want = x.detach().max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        assert!(y.detach().equal(&want));
        assert_eq!(y.stride()[1], 1, "channels-last output");
        y.sum(Kind::Float).backward();
        let (_, idx) = x
            .detach()
            .max_pool2d_with_indices([2, 2], [2, 2], [0, 0], [1, 1], false);
        let routed = Tensor::zeros([2, 3, 30], (Kind::Float, Device::Cpu)).scatter_add(
            2,
            &idx.view([2, 3, -1]),
            &Tensor::ones([2, 3, 6], (Kind::Float, Device::Cpu)),
        );
        assert!(x.grad().equal(&routed.view([2, 3, 6, 5])));
    }

    #[test]
    fn forward_shapes_and_names() {
        tch::manual_seed(0);
        for arch in [Arch::lenet(), Arch::lenet_300_100()] {
            let net = Net::init(&arch, Device::Cpu);
            let y = net.forward(&Tensor::zeros([3, 1, 28, 28], (Kind::Float, Device::Cpu)));
            assert_eq!(y.size(), vec![3, 10]);
            let n: i64 = net.tensors().iter().map(|t| t.numel() as i64).sum();
            assert_eq!(n, arch.num_params());
        }
        let names: Vec<String> = Net::init(&Arch::lenet(), Device::Cpu)
            .named_tensors()
            .into_iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(names[0], "conv1.weight");
        assert_eq!(names[7], "fc2.bias");
    }

    #[test]
    fn xavier_bounds_and_zero_bias() {
        tch::manual_seed(1);
        let net = Net::init(&Arch::lenet(), Device::Cpu);
        let w = tensor_to_vec(&net.params[2].weight);
        let a = (3.0f32 / 800.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= a));
        assert!(w.iter().any(|v| v.abs() > 0.9 * a));
        assert!(tensor_to_vec(&net.params[2].bias).iter().all(|&b| b == 0.0));
    }

    #[test]
    fn unknown_model_lists_the_zoo() {
        let e = Arch::by_name("resnet").unwrap_err().to_string();
        assert!(e.contains("lenet-300-100"), "{e}");
    }
}
