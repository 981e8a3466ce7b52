//! From sensitivity curves to a ratio vector: one scalar δ (tolerated solo accuracy drop)
//! gives each layer its largest sparse ratio whose drop, without retraining, stays within
//! δ — interpolated linearly between grid points, along the curve's monotone envelope.
//! Larger δ never gives a smaller ratio, which is what makes bisection over δ work.

/// Largest ratio of one curve (`(ratio, accuracy)` ascending by ratio, first point the
/// least pruned) whose drop below `dense` is at most `delta`.
pub fn ratio_for_delta(curve: &[(f64, f64)], dense: f64, delta: f64) -> f64 {
    let Some(&(r0, _)) = curve.first() else {
        return 0.0;
    };
    // Monotone envelope: the drop at r is the worst drop at any ratio ≤ r.
    let mut worst = f64::NEG_INFINITY;
    let mut prev = (r0, 0.0f64);
    for &(r, acc) in curve {
        let drop = (dense - acc).max(worst);
        if drop > delta {
            if r <= prev.0 || drop <= prev.1 {
                return prev.0;
            }
            let t = ((delta - prev.1) / (drop - prev.1)).clamp(0.0, 1.0);
            return prev.0 + t * (r - prev.0);
        }
        worst = drop;
        prev = (r, drop.max(0.0));
    }
    prev.0
}

/// The ratio vector for `delta`, one curve per layer, each capped at `max_ratio`.
pub fn ratios_for_delta(
    curves: &[Vec<(f64, f64)>],
    dense: f64,
    delta: f64,
    max_ratio: f64,
) -> Vec<f64> {
    curves
        .iter()
        .map(|c| ratio_for_delta(c, dense, delta).min(max_ratio))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_between_grid_points() {
        let c = [(0.0, 0.99), (0.5, 0.99), (0.8, 0.98), (0.9, 0.90)];
        assert_eq!(ratio_for_delta(&c, 0.99, 0.0), 0.5);
        // drop 0.01 at 0.8: δ = 0.005 → halfway from 0.5 to 0.8.
        assert!((ratio_for_delta(&c, 0.99, 0.005) - 0.65).abs() < 1e-9);
        // δ = 0.05: between 0.8 (0.01) and 0.9 (0.09) → 0.8 + 0.1·0.5.
        assert!((ratio_for_delta(&c, 0.99, 0.05) - 0.85).abs() < 1e-9);
        assert_eq!(ratio_for_delta(&c, 0.99, 0.5), 0.9);
    }

    #[test]
    fn monotone_in_delta_even_for_bumpy_curves() {
        let c = [(0.0, 0.99), (0.3, 0.97), (0.6, 0.985), (0.9, 0.5)];
        let mut last = 0.0;
        for i in 0..100 {
            let r = ratio_for_delta(&c, 0.99, i as f64 * 0.005);
            assert!(r >= last, "δ={} r={r} < {last}", i as f64 * 0.005);
            last = r;
        }
        assert_eq!(ratios_for_delta(&[c.to_vec()], 0.99, 1.0, 0.8), vec![0.8]);
    }
}
