//! One-dimensional k-means for weight sharing: Lloyd's algorithm on the surviving weights
//! of a layer, with the paper's linear initialisation (centroids evenly spaced between the
//! smallest and largest weight). Deterministic: sums in f64 in a fixed order, ties to the
//! lower centroid, an empty cluster keeps its centroid.
//!
//! ## Reference
//! S. Han, H. Mao, W. Dally, "Deep Compression", ICLR 2016, §3.2 (linear initialisation).

/// Centroids and the cluster of each input value.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    pub centroids: Vec<f32>,
    pub assignments: Vec<u32>,
    pub iterations: usize,
}

/// `k` evenly spaced values from `min` to `max` (one value, `min`, when `k == 1`).
pub fn linear_init(values: &[f32], k: usize) -> Vec<f32> {
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if values.is_empty() {
        return Vec::new();
    }
    if k <= 1 {
        return vec![lo];
    }
    (0..k)
        .map(|j| (lo as f64 + (hi as f64 - lo as f64) * j as f64 / (k - 1) as f64) as f32)
        .collect()
}

/// Index of the centroid nearest to `v` in `sorted` (ascending `(value, index)` pairs).
fn nearest(sorted: &[(f32, u32)], v: f32) -> u32 {
    let p = sorted.partition_point(|&(c, _)| c < v);
    if p == 0 {
        return sorted[0].1;
    }
    if p == sorted.len() {
        return sorted[p - 1].1;
    }
    let (lo, hi) = (sorted[p - 1], sorted[p]);
    if v - lo.0 <= hi.0 - v {
        lo.1
    } else {
        hi.1
    }
}

/// Clusters `values` into at most `k` clusters (`k ≥ 1`), stopping when no assignment
/// changes or after `max_iter` rounds.
pub fn kmeans_1d(values: &[f32], k: usize, max_iter: usize) -> KMeans {
    let mut centroids = linear_init(values, k.max(1));
    let mut assignments = vec![0u32; values.len()];
    if values.is_empty() {
        return KMeans {
            centroids,
            assignments,
            iterations: 0,
        };
    }
    let mut iterations = 0;
    for it in 0..max_iter.max(1) {
        iterations = it + 1;
        let mut sorted: Vec<(f32, u32)> = centroids
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut changed = it == 0;
        for (a, &v) in assignments.iter_mut().zip(values) {
            let n = nearest(&sorted, v);
            changed |= *a != n;
            *a = n;
        }
        if !changed {
            break;
        }
        let mut sum = vec![0f64; centroids.len()];
        let mut count = vec![0usize; centroids.len()];
        for (&a, &v) in assignments.iter().zip(values) {
            sum[a as usize] += v as f64;
            count[a as usize] += 1;
        }
        for j in 0..centroids.len() {
            if count[j] > 0 {
                centroids[j] = (sum[j] / count[j] as f64) as f32;
            }
        }
    }
    KMeans {
        centroids,
        assignments,
        iterations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_init_spans_min_to_max() {
        assert_eq!(
            linear_init(&[-1.0, 3.0, 0.5], 5),
            vec![-1.0, 0.0, 1.0, 2.0, 3.0]
        );
        assert_eq!(linear_init(&[2.0, 4.0], 1), vec![2.0]);
        assert!(linear_init(&[], 4).is_empty());
    }

    #[test]
    fn two_obvious_groups() {
        let v = [0.9, 1.0, 1.1, -2.1, -2.0, -1.9];
        let km = kmeans_1d(&v, 2, 100);
        // init -2.1 and 1.1; the groups are found in one step and their means are the centroids.
        assert_eq!(km.assignments, vec![1, 1, 1, 0, 0, 0]);
        assert!((km.centroids[0] + 2.0).abs() < 1e-6 && (km.centroids[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn hand_checked_three_clusters() {
        // init 0, 5, 10. Assign: {0,1,2}→0 (2 is nearer 0 than 5? |2-0|=2 < |2-5|=3), {4,6}→1, {9,10}→2.
        // means 1, 5, 9.5; re-assign: 2 → |2-1|=1 vs 3 → stays; nothing changes.
        let km = kmeans_1d(&[0.0, 1.0, 2.0, 4.0, 6.0, 9.0, 10.0], 3, 100);
        assert_eq!(km.centroids, vec![1.0, 5.0, 9.5]);
        assert_eq!(km.assignments, vec![0, 0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn empty_cluster_keeps_its_centroid_and_ties_go_low() {
        // init 0, 1, 2 (k = 3): nothing near 1 except the tie-free values.
        let km = kmeans_1d(&[0.0, 0.0, 2.0, 2.0], 3, 10);
        assert_eq!(km.centroids, vec![0.0, 1.0, 2.0]);
        assert_eq!(km.assignments, vec![0, 0, 2, 2]);
        // 0.5 is equidistant from 0 and 1: goes to the lower.
        let s = [(0.0, 0u32), (1.0, 1u32)];
        assert_eq!(nearest(&s, 0.5), 0);
    }

    #[test]
    fn deterministic_and_more_clusters_never_worse() {
        let v: Vec<f32> = (0..5000)
            .map(|i| ((i as f32 * 0.618).sin() * 3.0).powi(3))
            .collect();
        let sse = |km: &KMeans| -> f64 {
            v.iter()
                .zip(&km.assignments)
                .map(|(&x, &a)| (x as f64 - km.centroids[a as usize] as f64).powi(2))
                .sum()
        };
        let a = kmeans_1d(&v, 16, 200);
        assert_eq!(a, kmeans_1d(&v, 16, 200));
        assert!(sse(&kmeans_1d(&v, 32, 200)) < sse(&a));
    }
}
