//! Magnitude pruning rules: which weights of one layer to remove. Pure functions on
//! slices; they compute a keep-mask and never touch a tensor (the masked layer applies it).
//!
//! - `sparse_ratio` (the seed's rule): remove `round(ratio · n)` weights, the smallest |w|
//!   first (ties by position), so the ratio is exact unless the layer already holds more
//!   exact zeros than that.
//! - `quality` (Han et al. 2015): remove every |w| < quality · std(w).
//!
//! Under both rules a weight that is already exactly zero is pruned: it counts as the
//! smallest, and it is removed even when the rule asks for less (weights brought in from an
//! earlier pruning keep their zeros as pruned, never as one huge cluster of kept zeros).
//!
//! ## Reference
//! S. Han, J. Pool, J. Tran, W. Dally, "Learning both Weights and Connections for
//! Efficient Neural Networks", NeurIPS 2015.

use serde::{Deserialize, Serialize};

/// How much of a layer to prune.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneRule {
    /// Fraction of the layer's weights to remove, in [0, 1).
    SparseRatio(f64),
    /// Threshold = quality × standard deviation of the layer's weights.
    Quality(f64),
}

/// The keep-mask (`true` = kept) of `weights` under `rule`.
pub fn keep_mask(weights: &[f32], rule: PruneRule) -> Vec<bool> {
    match rule {
        PruneRule::SparseRatio(r) => keep_by_ratio(weights, r),
        PruneRule::Quality(q) => {
            let t = (q * std_dev(weights)) as f32;
            weights.iter().map(|w| w.abs() >= t && *w != 0.0).collect()
        }
    }
}

/// Number of weights `ratio` removes from `n`.
pub fn pruned_count(n: usize, ratio: f64) -> usize {
    ((ratio.clamp(0.0, 1.0) * n as f64).round() as usize).min(n)
}

fn keep_by_ratio(weights: &[f32], ratio: f64) -> Vec<bool> {
    let m = pruned_count(weights.len(), ratio);
    let mut order: Vec<u32> = (0..weights.len() as u32).collect();
    if m > 0 && m < weights.len() {
        order.select_nth_unstable_by(m, |&a, &b| {
            weights[a as usize]
                .abs()
                .total_cmp(&weights[b as usize].abs())
                .then(a.cmp(&b))
        });
    }
    let mut keep: Vec<bool> = weights.iter().map(|&w| w != 0.0).collect();
    for &i in &order[..m] {
        keep[i as usize] = false;
    }
    keep
}

/// Population standard deviation (f64 accumulation).
pub fn std_dev(xs: &[f32]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    (xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_removes_the_smallest_exactly() {
        let w = [0.5, -0.1, 0.0, 2.0, -0.3, 0.1];
        // 50 % of 6 = 3: 0.0, then the tie -0.1 / 0.1 broken by position (index 1 first), then 0.1.
        assert_eq!(
            keep_mask(&w, PruneRule::SparseRatio(0.5)),
            vec![true, false, false, true, true, false]
        );
        // Nothing asked: every nonzero is kept, the exact zero is not.
        assert_eq!(
            keep_mask(&w, PruneRule::SparseRatio(0.0)),
            vec![true, true, false, true, true, true]
        );
        let two_thirds = keep_mask(&w, PruneRule::SparseRatio(0.67));
        assert_eq!(two_thirds.iter().filter(|&&k| k).count(), 2);
        assert!(two_thirds[0] && two_thirds[3]);
    }

    #[test]
    fn ratio_is_monotone() {
        let w: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 - 500.0)
            .collect();
        let a = keep_mask(&w, PruneRule::SparseRatio(0.3));
        let b = keep_mask(&w, PruneRule::SparseRatio(0.6));
        assert!(
            a.iter().zip(&b).all(|(&ka, &kb)| ka || !kb),
            "pruned at 30 % stays pruned at 60 %"
        );
        assert_eq!(b.iter().filter(|&&k| !k).count(), 600);
    }

    #[test]
    fn exact_zeros_are_pruned_even_under_a_smaller_ratio() {
        // Weights from an earlier pruning: 4 of 8 already zero; asking for 25 % removes the
        // zeros all the same, and -0.0 is a zero too.
        let w = [0.0, 0.9, -0.0, 0.2, 0.0, -0.7, 0.0, 0.4];
        let keep = keep_mask(&w, PruneRule::SparseRatio(0.25));
        assert_eq!(
            keep,
            vec![false, true, false, true, false, true, false, true]
        );
        assert_eq!(keep_mask(&w, PruneRule::SparseRatio(0.0)), keep);
        // A larger ratio goes on with the smallest nonzero.
        let keep = keep_mask(&w, PruneRule::SparseRatio(0.625));
        assert_eq!(keep.iter().filter(|&&k| k).count(), 3);
        assert!(!keep[3]);
        assert_eq!(
            keep_mask(&w, PruneRule::Quality(0.0)),
            vec![false, true, false, true, false, true, false, true]
        );
    }

    #[test]
    fn quality_uses_std() {
        let w = [1.0, -1.0, 1.0, -1.0, 0.1];
        // mean 0.02, std ≈ 0.8790; quality 1 → threshold 0.879: only ±1 kept.
        assert_eq!(
            keep_mask(&w, PruneRule::Quality(1.0)),
            vec![true, true, true, true, false]
        );
        assert!((std_dev(&[1.0, 3.0]) - 1.0).abs() < 1e-12);
    }
}
