//! Dead units out of a compressed model, without changing what it computes.
//!
//! Pruning leaves units that no longer matter, and their weights and biases still cost
//! bytes:
//! - a **dead** unit has no kept weight: it outputs its bias (through ReLU where one
//!   follows), a constant. Its share in the next layer folds into that layer's biases, and
//!   the next layer's weights on it go;
//! - a **useless** unit feeds nothing: the next layer kept no weight on it. Its own weights
//!   and bias go.
//!
//! Both are exact (up to the rounding of the changed biases to the file's precision) for
//! units linked by ops that keep a constant channel constant: max pooling, flattening,
//! ReLU, and an unpadded convolution next (every output position sees every tap). Removing
//! one unit can kill or orphan a unit in the layer before or after, so [`fold`] repeats
//! until nothing changes. Zeroed biases are then nearly free in the file (`.dcz` leaves
//! zero biases out when that is smaller).

use crate::format::Layer;
use crate::models::{Arch, Op};

/// Layer `from`'s output units feed layer `to`: unit `j` is `per_unit` consecutive
/// inputs of each of `to`'s outputs (the taps of one input channel of a convolution, the
/// flattened pixels of one channel, or one input of a linear layer), through a ReLU if
/// `relu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub from: usize,
    pub to: usize,
    pub relu: bool,
    pub per_unit: usize,
}

/// What [`fold`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Units whose weights and bias went (dead or useless).
    pub units: usize,
    /// Kept weights removed.
    pub weights: usize,
}

/// The links of a zoo architecture's op chain: consecutive layers joined only by max
/// pooling, ReLU and flattening. None for a TorchScript module (its ops are opaque) or
/// when a layer's inputs do not divide into the previous layer's units.
pub fn links(arch: &Arch) -> Vec<Link> {
    let mut out = Vec::new();
    let mut last: Option<usize> = None;
    let mut relu = false;
    for op in &arch.ops {
        match *op {
            Op::Conv(i) | Op::Linear(i) => {
                if let Some(f) = last {
                    let units = arch.layers[f].outputs();
                    let fan_in = arch.layers[i].fan_in();
                    if units <= 0 || fan_in % units != 0 {
                        return Vec::new();
                    }
                    out.push(Link {
                        from: f,
                        to: i,
                        relu,
                        per_unit: (fan_in / units) as usize,
                    });
                }
                last = Some(i);
                relu = false;
            }
            Op::Relu => relu = true,
            Op::MaxPool2 | Op::Flatten => {}
            Op::Script => return Vec::new(),
        }
    }
    out
}

/// Removes dead and useless units along `links` (layer indices into `layers`; a link
/// whose layers are missing or whose shapes do not match is skipped), rounding changed
/// biases to each layer's precision; returns what went.
pub fn fold(layers: &mut [Layer], links: &[Link]) -> Folded {
    let mut total = Folded::default();
    loop {
        let mut changed = false;
        for link in links {
            let f = fold_link(layers, link);
            changed |= f.units > 0 || f.weights > 0;
            total.units += f.units;
            total.weights += f.weights;
        }
        if !changed {
            return total;
        }
    }
}

fn fold_link(layers: &mut [Layer], link: &Link) -> Folded {
    if link.from >= layers.len() || link.to >= layers.len() || link.from == link.to {
        return Folded::default();
    }
    let units = layers[link.from].shape.first().copied().unwrap_or(0) as usize;
    let from_fan_in = fan_in(&layers[link.from]);
    let to_fan_in = fan_in(&layers[link.to]);
    if units == 0 || to_fan_in != units * link.per_unit || from_fan_in == 0 {
        return Folded::default();
    }
    let unit_in_to = |p: u32| (p as usize % to_fan_in) / link.per_unit;
    let mut has_row = vec![false; units];
    for &p in &layers[link.from].positions {
        has_row[p as usize / from_fan_in] = true;
    }
    let mut fed = vec![false; units];
    for &p in &layers[link.to].positions {
        fed[unit_in_to(p)] = true;
    }
    let bias_of = |l: &Layer, j: usize| l.bias.get(j).copied().unwrap_or(0.0);
    let mut out = Folded::default();
    // Dead units: their constant output moves into the next layer's biases.
    let constant: Vec<Option<f64>> = (0..units)
        .map(|j| {
            (!has_row[j] && fed[j]).then(|| {
                let b = f64::from(bias_of(&layers[link.from], j));
                if link.relu {
                    b.max(0.0)
                } else {
                    b
                }
            })
        })
        .collect();
    if constant.iter().any(Option::is_some) {
        let to = &mut layers[link.to];
        let outputs = to.shape.first().copied().unwrap_or(0) as usize;
        let mut add = vec![0.0f64; outputs];
        let mut keep = Vec::with_capacity(to.positions.len());
        for (k, &p) in to.positions.iter().enumerate() {
            match constant[unit_in_to(p)] {
                Some(c) => {
                    add[p as usize / to_fan_in] +=
                        c * f64::from(to.codebook[to.clusters[k] as usize]);
                    out.weights += 1;
                }
                None => keep.push(k),
            }
        }
        retain(to, &keep);
        if to.bias.is_empty() && add.iter().any(|&a| a != 0.0) {
            to.bias = vec![0.0; outputs];
        }
        if add.iter().any(|&a| a != 0.0) {
            for (b, a) in to.bias.iter_mut().zip(&add) {
                *b = (f64::from(*b) + a) as f32;
            }
            to.bias = to.bias_precision.round_all(&to.bias);
        }
    }
    // Useless units (nothing reads them, the dead ones just folded included): their own
    // weights and bias go.
    let from = &mut layers[link.from];
    let useless: Vec<bool> = (0..units)
        .map(|j| !fed[j] || constant[j].is_some())
        .collect();
    out.units += (0..units)
        .filter(|&j| useless[j] && (has_row[j] || bias_of(from, j) != 0.0))
        .count();
    let keep: Vec<usize> = (0..from.positions.len())
        .filter(|&k| !useless[from.positions[k] as usize / from_fan_in])
        .collect();
    out.weights += from.positions.len() - keep.len();
    retain(from, &keep);
    for (b, &u) in from.bias.iter_mut().zip(&useless) {
        if u {
            *b = 0.0;
        }
    }
    out
}

fn fan_in(l: &Layer) -> usize {
    let out = l.shape.first().copied().unwrap_or(0) as usize;
    let dense: usize = l.shape.iter().map(|&d| d as usize).product();
    dense.checked_div(out).unwrap_or(0)
}

/// Keeps the entries `keep` (ascending) of a layer's positions and clusters, and only the
/// centroids still used, in their order.
fn retain(l: &mut Layer, keep: &[usize]) {
    l.positions = keep.iter().map(|&k| l.positions[k]).collect();
    let clusters: Vec<u32> = keep.iter().map(|&k| l.clusters[k]).collect();
    let mut remap = vec![u32::MAX; l.codebook.len()];
    for &c in &clusters {
        remap[c as usize] = 0;
    }
    let mut codebook = Vec::new();
    for (old, slot) in remap.iter_mut().enumerate() {
        if *slot != u32::MAX {
            *slot = codebook.len() as u32;
            codebook.push(l.codebook[old]);
        }
    }
    l.clusters = clusters.iter().map(|&c| remap[c as usize]).collect();
    l.codebook = codebook;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BiasPrecision, LayerKind};

    /// A linear layer `[out, inp]` from dense weights (zeros not kept).
    fn linear(name: &str, out: u32, inp: u32, dense: &[f32], bias: &[f32]) -> Layer {
        let mut codebook: Vec<f32> = Vec::new();
        let (mut positions, mut clusters) = (Vec::new(), Vec::new());
        for (i, &w) in dense.iter().enumerate() {
            if w != 0.0 {
                let c = codebook.iter().position(|&x| x == w).unwrap_or_else(|| {
                    codebook.push(w);
                    codebook.len() - 1
                });
                positions.push(i as u32);
                clusters.push(c as u32);
            }
        }
        Layer {
            name: name.into(),
            kind: LayerKind::Linear,
            shape: vec![out, inp],
            bits: 4,
            codebook,
            positions,
            clusters,
            bias: bias.to_vec(),
            bias_precision: BiasPrecision::F32,
        }
    }

    /// x → fc1 → ReLU → fc2, in f64.
    fn forward(l: &[Layer], x: &[f64]) -> Vec<f64> {
        let mut h = x.to_vec();
        for (i, layer) in l.iter().enumerate() {
            let (out, inp) = (layer.shape[0] as usize, layer.shape[1] as usize);
            let w = layer.dense_weights();
            h = (0..out)
                .map(|o| {
                    let s: f64 = (0..inp).map(|k| f64::from(w[o * inp + k]) * h[k]).sum();
                    let y = s + f64::from(layer.bias[o]);
                    if i + 1 < l.len() {
                        y.max(0.0)
                    } else {
                        y
                    }
                })
                .collect();
        }
        h
    }

    fn two_layers() -> Vec<Layer> {
        // fc1 3→3: unit 0 alive, unit 1 dead (bias 0.5), unit 2 alive but unread by fc2.
        let fc1 = linear(
            "fc1",
            3,
            3,
            &[1.0, -2.0, 0.5, 0.0, 0.0, 0.0, 0.25, 0.75, -1.0],
            &[0.1, 0.5, 0.3],
        );
        // fc2 3→2: reads units 0 and 1.
        let fc2 = linear("fc2", 2, 3, &[2.0, 1.5, 0.0, -1.0, 3.0, 0.0], &[0.0, 0.2]);
        vec![fc1, fc2]
    }

    #[test]
    fn dead_and_useless_units_go_and_the_function_stays() {
        let mut l = two_layers();
        let link = Link {
            from: 0,
            to: 1,
            relu: true,
            per_unit: 1,
        };
        let xs = [[0.3, -1.0, 2.0], [1.0, 1.0, 1.0], [-0.5, 0.25, 4.0]];
        let before: Vec<Vec<f64>> = xs.iter().map(|x| forward(&l, x)).collect();
        let f = fold(&mut l, &[link]);
        // dead unit 1: fc2's two weights on it folded; useless unit 2: its 3 weights gone
        assert_eq!(f.weights, 2 + 3);
        assert_eq!(f.units, 2);
        assert_eq!(l[0].positions, vec![0, 1, 2]);
        assert_eq!(l[0].bias, vec![0.1, 0.0, 0.0]);
        assert_eq!(l[1].positions, vec![0, 3]);
        assert_eq!(l[1].bias, vec![0.75, 1.7]);
        // fc2 keeps only the centroids it still uses
        assert_eq!(l[1].codebook, vec![2.0, -1.0]);
        for (x, want) in xs.iter().zip(&before) {
            let got = forward(&l, x);
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        }
        // nothing left to fold
        assert_eq!(fold(&mut l, &[link]), Folded::default());
    }

    #[test]
    fn a_negative_dead_unit_under_relu_adds_nothing() {
        let mut l = two_layers();
        l[0].bias[1] = -0.5;
        let link = Link {
            from: 0,
            to: 1,
            relu: true,
            per_unit: 1,
        };
        fold(&mut l, &[link]);
        assert_eq!(l[1].bias, vec![0.0, 0.2]);
    }

    #[test]
    fn removals_cascade_through_layers() {
        // fc1 2→2, fc2 2→2, fc3 2→1: fc3 reads only fc2's unit 0, and fc2's unit 1 alone
        // reads fc1's unit 1, so fc1's unit 1 becomes useless once fc2's unit 1 goes.
        let fc1 = linear("fc1", 2, 2, &[1.0, 1.0, 1.0, 1.0], &[0.0, 0.0]);
        let fc2 = linear("fc2", 2, 2, &[1.0, 0.0, 0.0, 1.0], &[0.0, 0.0]);
        let fc3 = linear("fc3", 1, 2, &[1.0, 0.0], &[0.0]);
        let mut l = vec![fc1, fc2, fc3];
        let links = [
            Link {
                from: 0,
                to: 1,
                relu: true,
                per_unit: 1,
            },
            Link {
                from: 1,
                to: 2,
                relu: true,
                per_unit: 1,
            },
        ];
        let f = fold(&mut l, &links);
        assert_eq!(f.weights, 3);
        assert_eq!(l[0].positions, vec![0, 1]);
        assert_eq!(l[1].positions, vec![0]);
    }

    #[test]
    fn lenet_links_match_its_layers() {
        let l = links(&Arch::lenet());
        let want = [(0, 1, false, 25), (1, 2, false, 16), (2, 3, true, 1)];
        assert_eq!(l.len(), 3);
        for (link, (from, to, relu, per_unit)) in l.iter().zip(want) {
            assert_eq!(
                (link.from, link.to, link.relu, link.per_unit),
                (from, to, relu, per_unit)
            );
        }
        assert_eq!(links(&Arch::lenet_300_100()).len(), 2);
    }
}
