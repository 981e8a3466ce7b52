//! Sensitivity analysis: for each compressible layer and each sparse ratio of a grid,
//! prune that layer alone (no retraining) and measure validation accuracy and loss.
//!
//! Two implementations with the same results: [`sweep_naive`] runs the whole network on
//! the whole validation set for every point; [`sweep`] makes it cheap —
//! - the activations entering the probed layer are computed once per layer and reused
//!   (pruning a layer changes nothing before it);
//! - a point whose accuracy is already decided to be useless — certainly (Hoeffding bound)
//!   more than `stop_drop` below the dense accuracy — stops after the chunk that shows it,
//!   and the CSV says how many images it saw.
//!
//! CSV (`sensitivity.csv`), one row per (layer, sparse_ratio), header
//! `layer,sparse_ratio,nonzeros,accuracy,loss,images` — `accuracy` and `loss` over the first
//! `images` validation images (all of them unless the point stopped early).

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::compress::prune::{self, PruneRule};
use crate::data::Split;
use crate::models::{tensor_to_vec, Net};
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

/// Early-stop setting of the fast sweep.
#[derive(Debug, Clone, Copy)]
pub struct StopRule {
    /// A point is decided once its accuracy is certainly below `dense − stop_drop`.
    pub stop_drop: f64,
    /// Images per chunk between checks.
    pub chunk: i64,
}

impl Default for StopRule {
    fn default() -> Self {
        StopRule {
            stop_drop: 0.2,
            chunk: 1000,
        }
    }
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

/// The fast sweep (cached prefix activations, early stop of decided points).
pub fn sweep(net: &Net, valid: &Split, grid: &[f64], stop: StopRule) -> Vec<Point> {
    let dense = train::evaluate(net, valid).accuracy;
    let n = valid.len() as i64;
    let mut points = Vec::new();
    for (li, spec) in net.arch.layers.iter().enumerate() {
        let op = net.arch.op_of_layer(li);
        // [n, …] activations entering the probed layer: unchanged by pruning it.
        let acts = tch::no_grad(|| net.forward_range(0, op, &valid.images));
        for &r in grid {
            let (w, kept) = pruned_weight(&net.params[li].weight, r);
            let (correct, loss, seen) = with_weight(net, li, &w, || {
                let mut correct = 0i64;
                let mut loss = 0.0;
                let mut seen = 0i64;
                while seen < n {
                    let len = stop.chunk.min(n - seen);
                    let e = train::evaluate_from(
                        net,
                        op,
                        &acts.narrow(0, seen, len),
                        &valid.labels.narrow(0, seen, len),
                    );
                    correct += (e.accuracy * len as f64).round() as i64;
                    loss += e.loss * len as f64;
                    seen += len;
                    // Hoeffding: P(true acc ≥ observed + eps) ≤ exp(−2·seen·eps²) = 1e-4.
                    let eps = ((1e4f64).ln() / (2.0 * seen as f64)).sqrt();
                    if (correct as f64 / seen as f64) + eps < dense - stop.stop_drop {
                        break;
                    }
                }
                (correct, loss, seen)
            });
            points.push(Point {
                layer: spec.name.clone(),
                sparse_ratio: r,
                nonzeros: kept,
                accuracy: correct as f64 / seen as f64,
                loss: loss / seen as f64,
                images: seen as usize,
            });
        }
    }
    points
}

/// Writes the points as CSV (atomically).
pub fn write_csv(points: &[Point], path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for p in points {
        w.serialize(p)?;
    }
    crate::paths::write_atomic(path, &w.into_inner()?)
}

/// Reads a sensitivity CSV written by [`write_csv`].
pub fn read_csv(path: &Path) -> Result<Vec<Point>> {
    let mut r = csv::Reader::from_path(path)?;
    Ok(r.deserialize().collect::<Result<Vec<Point>, _>>()?)
}

/// The curve of one layer: `(sparse_ratio, accuracy)` in grid order.
pub fn curve<'a>(points: &'a [Point], layer: &'a str) -> impl Iterator<Item = (f64, f64)> + 'a {
    points
        .iter()
        .filter(move |p| p.layer == layer)
        .map(|p| (p.sparse_ratio, p.accuracy))
}
