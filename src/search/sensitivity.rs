//! Sensitivity analysis: for each compressible layer and each sparse ratio of a grid,
//! prune that layer alone (no retraining) and measure validation accuracy and loss.
//!
//! Two implementations with the same results: [`sweep_naive`] runs the whole network on
//! the whole validation set for every point; [`sweep`] gets the same numbers cheaply —
//! - one dense forward pass per chunk of images keeps the activation entering every op:
//!   pruning a layer changes nothing before it, so each layer's points start from there;
//! - a conv or linear layer's output channels (and the channel-wise max-pool / ReLU after
//!   them) depend only on that channel's weights: from one grid point to the next only the
//!   channels whose kept weights changed are recomputed, the rest are reused;
//! - a point whose weights equal the previous point's (ratio 0 = the dense model) reuses its
//!   result.
//!
//! (A TorchScript model is one opaque op: its sweep is the naive one.)
//!
//! CSV (`sensitivity.csv`), one row per (layer, sparse_ratio), header
//! `layer,sparse_ratio,nonzeros,accuracy,loss,images,accuracy_se` — `accuracy` and `loss`
//! over the `images` validation images (all of them, or `search.sensitivity_images` drawn at
//! random), `accuracy_se` the standard error of that accuracy as an
//! estimate of the accuracy on the whole split ([`subset_se`]; 0 when all images are used).

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::compress::prune::{self, PruneRule};
use crate::data::Split;
use crate::models::{tensor_to_vec, Net, Op};
use crate::train;

/// The default grid: 0 to 0.99, dense near the top.
pub const DEFAULT_GRID: [f64; 18] = [
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.96, 0.97, 0.98,
    0.99,
];

/// One point of a sensitivity curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub layer: String,
    pub sparse_ratio: f64,
    pub nonzeros: usize,
    pub accuracy: f64,
    pub loss: f64,
    pub images: usize,
}

fn pruned_weight(w: &Tensor, ratio: f64) -> (Tensor, usize) {
    let keep = prune::keep_mask(&tensor_to_vec(w), PruneRule::SparseRatio(ratio));
    let kept = keep.iter().filter(|&&k| k).count();
    let mask: Vec<f32> = keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
    (
        w * Tensor::from_slice(&mask)
            .view(w.size().as_slice())
            .to_device(w.device()),
        kept,
    )
}

/// Runs `f` with layer `layer`'s weight temporarily replaced by `w`.
fn with_weight<T>(net: &Net, layer: usize, w: &Tensor, f: impl FnOnce() -> T) -> T {
    let orig = net.params[layer].weight.detach().copy();
    tch::no_grad(|| net.params[layer].weight.shallow_clone().copy_(w));
    let out = f();
    tch::no_grad(|| net.params[layer].weight.shallow_clone().copy_(&orig));
    out
}

/// Full network, full validation set, every point.
pub fn sweep_naive(net: &Net, valid: &Split, grid: &[f64]) -> Vec<Point> {
    let mut points = Vec::new();
    for (li, spec) in net.arch.layers.iter().enumerate() {
        for &r in grid {
            let (w, kept) = pruned_weight(&net.params[li].weight, r);
            let e = with_weight(net, li, &w, || train::evaluate(net, valid));
            points.push(Point {
                layer: spec.name.clone(),
                sparse_ratio: r,
                nonzeros: kept,
                accuracy: e.accuracy,
                loss: e.loss,
                images: e.n,
            });
        }
    }
    points
}

/// Validation images per chunk of the fast sweep.
const CHUNK: i64 = 2500;

/// The ops after `op` up to (not including) the first that mixes channels: the max-pools
/// and ReLUs that act on each of `op`'s output channels alone.
fn channelwise_end(ops: &[Op], op: usize) -> usize {
    let mut end = op + 1;
    while end < ops.len() && matches!(ops[end], Op::MaxPool2 | Op::Relu) {
        end += 1;
    }
    end
}

/// One grid point of one layer in the fast sweep: its kept weights, and the output
/// channels whose weights differ from the previous point's (the first point's: from the
/// dense weights) as (their pruned weights, their biases, indices) — `None` if none do.
struct GridStep {
    nonzeros: usize,
    changed: Option<(Tensor, Tensor, Tensor)>,
}

/// Every layer's [`GridStep`]s along `grid` (the same for every chunk of images).
fn grid_steps(net: &Net, grid: &[f64]) -> Vec<Vec<GridStep>> {
    net.params
        .iter()
        .map(|p| {
            let dense = p.weight.detach();
            let mut prev = dense.shallow_clone();
            grid.iter()
                .map(|&r| {
                    let (w, nonzeros) = pruned_weight(&dense, r);
                    let idx = w
                        .ne_tensor(&prev)
                        .flatten(1, -1)
                        .any_dim(1, false)
                        .nonzero()
                        .squeeze_dim(1);
                    let changed = (idx.size()[0] > 0)
                        .then(|| (w.index_select(0, &idx), p.bias.index_select(0, &idx), idx));
                    prev = w;
                    GridStep { nonzeros, changed }
                })
                .collect()
        })
        .collect()
}

/// The fast sweep: the same points as [`sweep_naive`] (see the module doc for how).
pub fn sweep(net: &Net, valid: &Split, grid: &[f64]) -> Vec<Point> {
    sweep_chunked(net, valid, grid, CHUNK)
}

/// [`sweep`] over chunks of `chunk` images (the working set; any size gives the same points).
pub fn sweep_chunked(net: &Net, valid: &Split, grid: &[f64], chunk: i64) -> Vec<Point> {
    if net.script.is_some() {
        return sweep_naive(net, valid, grid);
    }
    let layers = &net.arch.layers;
    let ops = &net.arch.ops;
    let n = valid.len() as i64;
    // [layer][point] → (correct, summed loss)
    let mut tally = vec![vec![(0i64, 0.0f64); grid.len()]; layers.len()];
    let steps = tch::no_grad(|| grid_steps(net, grid));
    tch::no_grad(|| {
        let mut s = 0;
        while s < n {
            let len = chunk.max(1).min(n - s);
            let y = valid.labels.narrow(0, s, len);
            // acts[i]: the dense activation entering op i (acts[ops.len()]: the logits).
            let mut acts = vec![valid.images.narrow(0, s, len)];
            for i in 0..ops.len() {
                let next = net.forward_range(i, i + 1, &acts[i]);
                acts.push(next);
            }
            let dense = train::score(&acts[ops.len()], &y);
            for (li, points) in steps.iter().enumerate() {
                let op = net.arch.op_of_layer(li);
                let end = channelwise_end(ops, op);
                // `h`: the activation entering op `end` at the current point; `cur` its score.
                let mut h = acts[end].shallow_clone();
                let mut cur = dense;
                for (pi, step) in points.iter().enumerate() {
                    if let Some((ws, bs, idx)) = &step.changed {
                        let z = match ops[op] {
                            Op::Conv(_) => acts[op].conv2d(ws, Some(bs), [1, 1], [0, 0], [1, 1], 1),
                            Op::Linear(_) => acts[op].linear(ws, Some(bs)),
                            _ => unreachable!("a zoo layer's op is a conv or a linear"),
                        };
                        let part = net.forward_range(op + 1, end, &z);
                        h = h.index_copy(1, idx, &part);
                        cur = train::score(&net.forward_from(end, &h), &y);
                    }
                    let t = &mut tally[li][pi];
                    t.0 += cur.0;
                    t.1 += cur.1;
                }
            }
            s += len;
        }
    });
    let mut points = Vec::new();
    for (li, spec) in layers.iter().enumerate() {
        for (pi, &r) in grid.iter().enumerate() {
            let (correct, loss) = tally[li][pi];
            points.push(Point {
                layer: spec.name.clone(),
                sparse_ratio: r,
                nonzeros: steps[li][pi].nonzeros,
                accuracy: correct as f64 / n.max(1) as f64,
                loss: loss / n.max(1) as f64,
                images: n as usize,
            });
        }
    }
    points
}

/// The standard error of an accuracy `p` measured on `n` images drawn at random without
/// replacement from `total`, as an estimate of the accuracy on all `total`:
/// `sqrt(p (1 - p) / n · (total - n) / (total - 1))` (binomial with the finite-population
/// correction; 0 when `n` covers all of them).
pub fn subset_se(p: f64, n: usize, total: usize) -> f64 {
    if n == 0 || n >= total {
        return 0.0;
    }
    let (n, total) = (n as f64, total as f64);
    (p * (1.0 - p) / n * (total - n) / (total - 1.0)).sqrt()
}

/// Writes the points as CSV (atomically); `total` is the number of validation images the
/// points' images were drawn from (for `accuracy_se`).
pub fn write_csv(points: &[Point], total: usize, path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "layer",
        "sparse_ratio",
        "nonzeros",
        "accuracy",
        "loss",
        "images",
        "accuracy_se",
    ])?;
    for p in points {
        w.write_record([
            p.layer.clone(),
            p.sparse_ratio.to_string(),
            p.nonzeros.to_string(),
            p.accuracy.to_string(),
            p.loss.to_string(),
            p.images.to_string(),
            format!("{:.6}", subset_se(p.accuracy, p.images, total)),
        ])?;
    }
    crate::paths::write_atomic(path, &w.into_inner()?)
}

/// The points of a `sensitivity.csv` that [`write_csv`] wrote (its `accuracy_se` column,
/// derived, is not read back).
pub fn read_csv(text: &str) -> Result<Vec<Point>> {
    csv::Reader::from_reader(text.as_bytes())
        .deserialize()
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("not a sensitivity.csv: {e}"))
}

/// The curve of one layer: `(sparse_ratio, accuracy)` in grid order.
pub fn curve<'a>(points: &'a [Point], layer: &'a str) -> impl Iterator<Item = (f64, f64)> + 'a {
    points
        .iter()
        .filter(move |p| p.layer == layer)
        .map(|p| (p.sparse_ratio, p.accuracy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_standard_error_shrinks_to_zero_with_the_whole_split() {
        // 0.97 on 1,000 of 5,000 images: sqrt(0.97·0.03/1000 · 4000/4999) = 0.4825 points.
        assert!((subset_se(0.97, 1000, 5000) - 0.004_825_4).abs() < 1e-7);
        assert_eq!(subset_se(0.97, 5000, 5000), 0.0);
        assert_eq!(subset_se(0.5, 0, 5000), 0.0);
        assert_eq!(subset_se(1.0, 100, 5000), 0.0);
        assert!(subset_se(0.5, 100, 5000) > subset_se(0.5, 1000, 5000));
    }

    #[test]
    fn the_csv_states_each_points_standard_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv");
        let p = |layer: &str, accuracy: f64| Point {
            layer: layer.into(),
            sparse_ratio: 0.5,
            nonzeros: 10,
            accuracy,
            loss: 0.25,
            images: 1000,
        };
        write_csv(&[p("fc1", 0.97), p("fc2", 1.0)], 5000, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "layer,sparse_ratio,nonzeros,accuracy,loss,images,accuracy_se\n\
             fc1,0.5,10,0.97,0.25,1000,0.004825\n\
             fc2,0.5,10,1,0.25,1000,0.000000\n"
        );
        // What it wrote reads back as the points.
        assert_eq!(
            read_csv(&text).unwrap(),
            vec![p("fc1", 0.97), p("fc2", 1.0)]
        );
        assert!(read_csv("layer,sparse_ratio\nfc1,x\n").is_err());
    }
}
