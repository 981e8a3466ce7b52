//! A net's compression state: per layer, a pruning mask and (after weight sharing) a
//! codebook with the cluster of every surviving weight. This module *applies* masks and
//! codebooks and trains through them; the rules in `compress::prune` / `compress::kmeans`
//! decide what they are, and schedules decide when.
//!
//! Codebook retraining (Deep Compression §3.3): the gradient of a centroid is the sum
//! (paper) or the mean (the Caffe seed) of its members' gradients; after every step the
//! weights are re-made from the codebook, so the in-memory model is exactly what the
//! compressed file decodes to. A summed gradient counts at most [`SUM_CAP`] times the median
//! cluster size of members: a cluster that dwarfs the others (thousands of near-identical
//! weights) has its sum scaled down to that many, so its centroid cannot be thrown far in
//! one step.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::compress::kmeans;
use crate::compress::prune::{self, PruneRule};
use crate::models::{tensor_to_vec, Net};
use crate::train::{Sgd, Update};

/// How a centroid's gradient is made from its members' gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CentroidGrad {
    /// Σ of members' gradients (the paper).
    Sum,
    /// Mean of members' gradients (the Caffe seed).
    Mean,
}

/// A summed centroid gradient counts at most this many times the layer's median cluster
/// size of members (see the module doc).
pub const SUM_CAP: f64 = 32.0;

/// Per-cluster factor of the summed gradient: 1, or `cap / count` for a cluster with more
/// than `cap = SUM_CAP × median count of the non-empty clusters` members.
pub fn sum_scale(counts: &[f32]) -> Vec<f32> {
    let mut used: Vec<f64> = counts
        .iter()
        .filter(|&&c| c > 0.0)
        .map(|&c| c as f64)
        .collect();
    if used.is_empty() {
        return vec![1.0; counts.len()];
    }
    used.sort_by(f64::total_cmp);
    let cap = SUM_CAP * used[used.len() / 2];
    counts
        .iter()
        .map(|&c| {
            if c as f64 > cap {
                (cap / c as f64) as f32
            } else {
                1.0
            }
        })
        .collect()
}

/// A layer's shared weights: centroids and, for each surviving weight, its cluster.
#[derive(Debug)]
pub struct Codebook {
    pub bits: u8,
    /// `[k]` centroids.
    pub centroids: Tensor,
    /// `[nnz]` flat positions of the surviving weights (ascending).
    pub positions: Tensor,
    /// `[nnz]` cluster of each surviving weight.
    pub clusters: Tensor,
    /// `[k]` members per cluster (f32).
    counts: Tensor,
    /// `[k]` factor of the summed gradient ([`sum_scale`]).
    sum_scale: Tensor,
    velocity: Tensor,
}

impl Codebook {
    /// Writes `centroids[clusters]` at `positions` (zeros elsewhere) into `weight`.
    fn rebuild(&self, weight: &Tensor) {
        tch::no_grad(|| {
            let flat = Tensor::zeros([weight.numel() as i64], (Kind::Float, weight.device()));
            let flat = flat.index_copy(
                0,
                &self.positions,
                &self.centroids.index_select(0, &self.clusters),
            );
            weight
                .shallow_clone()
                .copy_(&flat.view(weight.size().as_slice()));
        });
    }
}

/// The compression state of one layer.
#[derive(Debug, Default)]
pub struct LayerState {
    /// 0/1, weight-shaped; `None` = dense.
    pub mask: Option<Tensor>,
    pub codebook: Option<Codebook>,
}

/// The compression state of every layer of a net.
#[derive(Debug)]
pub struct Masked {
    pub layers: Vec<LayerState>,
}

impl Masked {
    /// No layer pruned or shared.
    pub fn dense(net: &Net) -> Masked {
        Masked {
            layers: net.params.iter().map(|_| LayerState::default()).collect(),
        }
    }

    /// Prunes layer `i` of `net` by `rule` (computed on its current weights, so weights
    /// already pruned stay pruned under a larger ratio). Returns the kept count.
    pub fn prune(&mut self, net: &Net, i: usize, rule: PruneRule) -> usize {
        let w = &net.params[i].weight;
        let keep = prune::keep_mask(&tensor_to_vec(w), rule);
        let kept = keep.iter().filter(|&&k| k).count();
        let host: Vec<f32> = keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
        let mask = Tensor::from_slice(&host)
            .view(w.size().as_slice())
            .to_device(w.device());
        tch::no_grad(|| {
            let _ = w.shallow_clone().g_mul_(&mask);
        });
        self.layers[i] = LayerState {
            mask: Some(mask),
            codebook: None,
        };
        kept
    }

    /// Shares the surviving weights of layer `i` among `2^bits` centroids (k-means with
    /// linear initialisation) and re-makes the weights from the codebook.
    pub fn quantize(&mut self, net: &Net, i: usize, bits: u8, kmeans_iters: usize) {
        let (values, positions) = self.surviving(net, i);
        let kept: Vec<f32> = positions.iter().map(|&p| values[p as usize]).collect();
        let km = kmeans::kmeans_1d(&kept, 1usize << bits, kmeans_iters);
        self.set_codebook(net, i, bits, positions, &km.centroids, &km.assignments);
    }

    /// Takes layer `i`'s weights as already shared at `bits` (a shared model read back from
    /// a checkpoint, which keeps weights and masks only): its distinct surviving values,
    /// ascending, become the codebook. Fails if there are more than `2^bits` of them.
    pub fn adopt_shared(&mut self, net: &Net, i: usize, bits: u8) -> anyhow::Result<()> {
        let (values, positions) = self.surviving(net, i);
        let kept: Vec<f32> = positions.iter().map(|&p| values[p as usize]).collect();
        let mut centroids = kept.clone();
        centroids.sort_by(f32::total_cmp);
        centroids.dedup_by(|a, b| a.to_bits() == b.to_bits());
        anyhow::ensure!(
            centroids.len() <= 1usize << bits,
            "layer {} has {} distinct weights, more than {bits} bits can share",
            net.arch.layers[i].name,
            centroids.len()
        );
        let assignments: Vec<u32> = kept
            .iter()
            .map(|v| {
                centroids
                    .binary_search_by(|c| c.total_cmp(v))
                    .expect("every value is one of the centroids") as u32
            })
            .collect();
        self.set_codebook(net, i, bits, positions, &centroids, &assignments);
        Ok(())
    }

    /// Layer `i`'s weights and its surviving positions: kept by the mask and nonzero
    /// (exact zeros count as pruned, see `prune`; the mask is updated to match).
    fn surviving(&mut self, net: &Net, i: usize) -> (Vec<f32>, Vec<i64>) {
        let w = &net.params[i].weight;
        let values = tensor_to_vec(w);
        let kept_by_mask: Vec<bool> = match &self.layers[i].mask {
            Some(m) => tensor_to_vec(m).iter().map(|&k| k != 0.0).collect(),
            None => vec![true; values.len()],
        };
        let keep: Vec<bool> = kept_by_mask
            .iter()
            .zip(&values)
            .map(|(&k, &v)| k && v != 0.0)
            .collect();
        if keep != kept_by_mask {
            let host: Vec<f32> = keep.iter().map(|&k| f32::from(u8::from(k))).collect();
            self.layers[i].mask = Some(
                Tensor::from_slice(&host)
                    .view(w.size().as_slice())
                    .to_device(w.device()),
            );
        }
        let positions: Vec<i64> = keep
            .iter()
            .enumerate()
            .filter(|(_, &k)| k)
            .map(|(p, _)| p as i64)
            .collect();
        (values, positions)
    }

    /// Installs a codebook on layer `i` and re-makes its weights from it.
    fn set_codebook(
        &mut self,
        net: &Net,
        i: usize,
        bits: u8,
        positions: Vec<i64>,
        centroids: &[f32],
        assignments: &[u32],
    ) {
        let w = &net.params[i].weight;
        let mut counts = vec![0f32; centroids.len()];
        for &a in assignments {
            counts[a as usize] += 1.0;
        }
        let dev = w.device();
        let clusters: Vec<i64> = assignments.iter().map(|&a| a as i64).collect();
        let cb = Codebook {
            bits,
            centroids: Tensor::from_slice(centroids).to_device(dev),
            positions: Tensor::from_slice(&positions).to_device(dev),
            clusters: Tensor::from_slice(&clusters).to_device(dev),
            sum_scale: Tensor::from_slice(&sum_scale(&counts)).to_device(dev),
            counts: Tensor::from_slice(&counts).to_device(dev),
            velocity: Tensor::zeros([centroids.len() as i64], (Kind::Float, dev)),
        };
        cb.rebuild(w);
        self.layers[i].codebook = Some(cb);
    }

    /// A deep copy (masks and codebooks; velocities reset).
    pub fn copy(&self) -> Masked {
        let layers = self
            .layers
            .iter()
            .map(|l| LayerState {
                mask: l.mask.as_ref().map(|m| m.copy()),
                codebook: l.codebook.as_ref().map(|c| Codebook {
                    bits: c.bits,
                    centroids: c.centroids.copy(),
                    positions: c.positions.copy(),
                    clusters: c.clusters.copy(),
                    counts: c.counts.copy(),
                    sum_scale: c.sum_scale.copy(),
                    velocity: c.velocity.zeros_like(),
                }),
            })
            .collect();
        Masked { layers }
    }

    /// Kept fraction of each layer's weights.
    pub fn densities(&self, net: &Net) -> Vec<f64> {
        self.layers
            .iter()
            .zip(&net.params)
            .map(|(l, p)| match &l.mask {
                Some(m) => m.sum(Kind::Float).double_value(&[]) / p.weight.numel() as f64,
                None => 1.0,
            })
            .collect()
    }

    /// Total surviving weights.
    pub fn nonzeros(&self, net: &Net) -> usize {
        self.densities(net)
            .iter()
            .zip(&net.params)
            .map(|(d, p)| (d * p.weight.numel() as f64).round() as usize)
            .sum()
    }
}

/// Training through masks and codebooks: masked layers take Caffe's SGD with their mask;
/// shared layers move their centroids by the aggregated gradient; biases take plain SGD.
pub struct CompressedSgd<'a> {
    pub sgd: Sgd,
    pub state: &'a mut Masked,
    pub centroid_grad: CentroidGrad,
}

impl<'a> CompressedSgd<'a> {
    pub fn new(
        net: &Net,
        recipe: &crate::train::Recipe,
        state: &'a mut Masked,
        centroid_grad: CentroidGrad,
    ) -> Self {
        let mut sgd = Sgd::new(net, recipe);
        sgd.masks = state
            .layers
            .iter()
            .map(|l| l.mask.as_ref().map(|m| m.shallow_clone()))
            .collect();
        CompressedSgd {
            sgd,
            state,
            centroid_grad,
        }
    }
}

impl Update for CompressedSgd<'_> {
    fn step(&mut self, net: &Net, lr: f64) {
        for (i, layer) in self.state.layers.iter_mut().enumerate() {
            let Some(cb) = &mut layer.codebook else {
                self.sgd.step_weight(net, i, lr);
                continue;
            };
            let w = &net.params[i].weight;
            let g = w.grad();
            if !g.defined() {
                continue;
            }
            tch::no_grad(|| {
                let g = g + w * self.sgd.weight_decay();
                let members = g.view([-1]).index_select(0, &cb.positions);
                let mut cg = cb
                    .centroids
                    .zeros_like()
                    .index_add(0, &cb.clusters, &members);
                match self.centroid_grad {
                    CentroidGrad::Mean => cg /= cb.counts.clamp_min(1.0),
                    CentroidGrad::Sum => cg *= &cb.sum_scale,
                }
                let _ = cb
                    .velocity
                    .g_mul_scalar_(self.sgd.momentum())
                    .g_add_(&(cg * lr));
                let _ = cb.centroids.g_sub_(&cb.velocity);
            });
            cb.rebuild(w);
        }
        self.sgd.step_biases(net, lr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;

    #[test]
    fn a_cluster_that_dwarfs_the_rest_has_its_sum_scaled_down() {
        // Median of the non-empty clusters 12 → cap 384 members.
        let s = sum_scale(&[10.0, 12.0, 0.0, 8.0, 3200.0, 300.0]);
        assert_eq!(s, vec![1.0, 1.0, 1.0, 1.0, (384.0f64 / 3200.0) as f32, 1.0]);
        assert_eq!(sum_scale(&[0.0, 0.0]), vec![1.0, 1.0]);
        assert_eq!(sum_scale(&[5.0]), vec![1.0]);
    }

    #[test]
    fn exact_zeros_are_left_out_of_the_codebook() {
        tch::manual_seed(5);
        let net = Net::init(&Arch::lenet_300_100(), tch::Device::Cpu);
        // fc3 as if pruned earlier: 3 of 4 weights exactly zero, and no mask yet.
        tch::no_grad(|| {
            let w = &net.params[2].weight;
            let keep = Tensor::arange(w.numel() as i64, (Kind::Int64, tch::Device::Cpu))
                .remainder(4)
                .eq(0)
                .to_kind(Kind::Float)
                .view(w.size().as_slice());
            let _ = w.shallow_clone().g_mul_(&keep);
        });
        let mut state = Masked::dense(&net);
        state.quantize(&net, 2, 4, 20);
        let cb = state.layers[2].codebook.as_ref().unwrap();
        assert_eq!(cb.positions.numel(), 250);
        assert_eq!(state.densities(&net)[2], 0.25);
        // A ratio under the zeros already there prunes them all the same.
        let mut state = Masked::dense(&net);
        assert_eq!(state.prune(&net, 2, PruneRule::SparseRatio(0.5)), 250);
    }

    #[test]
    fn quantized_weights_are_codebook_values_after_training_steps() {
        tch::manual_seed(4);
        let net = Net::init(&Arch::lenet_300_100(), tch::Device::Cpu);
        let mut state = Masked::dense(&net);
        state.prune(&net, 1, PruneRule::SparseRatio(0.7));
        state.quantize(&net, 1, 3, 50);
        let recipe = crate::config::Config::resolve("lenet-300-100")
            .unwrap()
            .train;
        let x = Tensor::rand([16, 1, 28, 28], (Kind::Float, tch::Device::Cpu));
        let y = Tensor::arange(16, (Kind::Int64, tch::Device::Cpu)).remainder(10);
        let before = tensor_to_vec(&state.layers[1].codebook.as_ref().unwrap().centroids);
        {
            let mut upd = CompressedSgd::new(&net, &recipe, &mut state, CentroidGrad::Sum);
            for _ in 0..3 {
                net.zero_grad();
                net.forward(&x).cross_entropy_for_logits(&y).backward();
                upd.step(&net, 0.01);
            }
        }
        let cb = state.layers[1].codebook.as_ref().unwrap();
        let centroids = tensor_to_vec(&cb.centroids);
        assert_ne!(before, centroids, "centroids moved");
        assert!(centroids.len() <= 8);
        let w = tensor_to_vec(&net.params[1].weight);
        let mask = tensor_to_vec(state.layers[1].mask.as_ref().unwrap());
        assert_eq!(mask.iter().filter(|&&m| m == 0.0).count(), 21_000);
        for (v, m) in w.iter().zip(&mask) {
            if *m == 0.0 {
                assert_eq!(*v, 0.0);
            } else {
                assert!(
                    centroids.iter().any(|c| c.to_bits() == v.to_bits()),
                    "{v} is a centroid"
                );
            }
        }
    }
}
