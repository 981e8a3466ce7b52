//! The one table of models: every zoo model (name and arch) and every preset (name, the
//! config compiled from `configs/`). `Arch::by_name`, `Config::resolve`, the CLI's help texts
//! and the import's error messages all read it.
//!
//! ## Adding a model
//! Write its arch constructor below and add a row to [`MODELS`]; write `configs/<name>.toml`
//! and add a row to [`PRESETS`]. Nothing else names models.

use anyhow::{bail, Result};

use super::{Arch, LayerKind, LayerSpec, Op};

/// A zoo model: its name (the `model` key of a config) and its arch.
pub struct Model {
    pub name: &'static str,
    pub arch: fn() -> Arch,
}

/// The zoo.
pub const MODELS: [Model; 2] = [
    Model {
        name: "lenet",
        arch: Arch::lenet,
    },
    Model {
        name: "lenet-300-100",
        arch: Arch::lenet_300_100,
    },
];

/// A preset: a config compiled into the binary (so an installed binary works anywhere).
pub struct Preset {
    pub name: &'static str,
    pub toml: &'static str,
}

/// The presets, as `dc-search <command> <preset>` takes them.
pub const PRESETS: [Preset; 3] = [
    Preset {
        name: "lenet",
        toml: include_str!("../../configs/lenet.toml"),
    },
    Preset {
        name: "lenet-caffe",
        toml: include_str!("../../configs/lenet-caffe.toml"),
    },
    Preset {
        name: "lenet-300-100",
        toml: include_str!("../../configs/lenet-300-100.toml"),
    },
];

/// The zoo model called `name`.
pub fn arch(name: &str) -> Result<Arch> {
    match MODELS.iter().find(|m| m.name == name) {
        Some(m) => Ok((m.arch)()),
        None => bail!("unknown model {name:?}: the zoo has {}", model_names()),
    }
}

/// The preset called `name`'s TOML text.
pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|p| p.name == name).map(|p| p.toml)
}

/// The zoo's names, comma-separated.
pub fn model_names() -> String {
    MODELS.map(|m| m.name).join(", ")
}

/// The presets' names, comma-separated.
pub fn preset_names() -> String {
    PRESETS.map(|p| p.name).join(", ")
}

/// Every zoo model with its layers (`lenet: conv1 20@5x5, …, fc2 500->10; lenet-300-100: …`),
/// for messages that ask the user to choose one.
pub fn zoo_layers() -> String {
    let layers = |a: &Arch| -> String {
        a.layers
            .iter()
            .map(|l| {
                let w = &l.weight_shape;
                match l.kind {
                    LayerKind::Conv => format!("{} {}@{}x{}", l.name, w[0], w[2], w[3]),
                    LayerKind::Linear => format!("{} {}->{}", l.name, w[1], w[0]),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    MODELS
        .iter()
        .map(|m| format!("{}: {}", m.name, layers(&(m.arch)())))
        .collect::<Vec<_>>()
        .join("; ")
}

fn conv(name: &str, out: i64, inp: i64, k: i64) -> LayerSpec {
    LayerSpec {
        name: name.into(),
        kind: LayerKind::Conv,
        weight_shape: vec![out, inp, k, k],
        bias: true,
    }
}

fn fc(name: &str, out: i64, inp: i64) -> LayerSpec {
    LayerSpec {
        name: name.into(),
        kind: LayerKind::Linear,
        weight_shape: vec![out, inp],
        bias: true,
    }
}

impl Arch {
    /// LeNet-5 in Caffe's layout: conv1 20@5×5 → pool → conv2 50@5×5 → pool → fc1 800→500
    /// → ReLU → fc2 500→10 (431,080 parameters).
    pub fn lenet() -> Arch {
        use Op::*;
        Arch {
            name: "lenet".into(),
            input_shape: vec![1, 28, 28],
            layers: vec![
                conv("conv1", 20, 1, 5),
                conv("conv2", 50, 20, 5),
                fc("fc1", 500, 800),
                fc("fc2", 10, 500),
            ],
            ops: vec![
                Conv(0),
                MaxPool2,
                Conv(1),
                MaxPool2,
                Flatten,
                Linear(2),
                Relu,
                Linear(3),
            ],
        }
    }

    /// LeNet-300-100: 784→300→ReLU→100→ReLU→10 (266,610 parameters).
    pub fn lenet_300_100() -> Arch {
        use Op::*;
        Arch {
            name: "lenet-300-100".into(),
            input_shape: vec![1, 28, 28],
            layers: vec![fc("fc1", 300, 784), fc("fc2", 100, 300), fc("fc3", 10, 100)],
            ops: vec![Flatten, Linear(0), Relu, Linear(1), Relu, Linear(2)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_is_named_as_listed() {
        for m in &MODELS {
            assert_eq!((m.arch)().name, m.name);
            assert_eq!(arch(m.name).unwrap().name, m.name);
        }
    }

    #[test]
    fn zoo_layers_describe_the_shapes() {
        assert_eq!(
            zoo_layers(),
            "lenet: conv1 20@5x5, conv2 50@5x5, fc1 800->500, fc2 500->10; \
             lenet-300-100: fc1 784->300, fc2 300->100, fc3 100->10"
        );
    }
}
