//! Prune schedules: *when* each layer is pruned during retraining (the rules in `prune`
//! decide which weights, the mask in `mask` applies them, `Trainer::prune_and_retrain` runs
//! the stages).
//!
//! ## Reference
//! M. Zhu, S. Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
//! compression", 2017 (the gradual schedule).

use serde::{Deserialize, Serialize};

/// Order in which layers are pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Prune every layer, then retrain once.
    AllAtOnce,
    /// The seed's way: prune one more layer per stage, retraining after each.
    LayerWise,
    /// Zhu & Gupta's gradual pruning: every layer moves from its current sparsity to its
    /// target in `gradual_steps` steps (cubic: big steps first, small ones last), training
    /// between steps over the first `gradual_ramp` of the epochs, then at the targets.
    Gradual,
}

/// Sparsity after step `s` of `steps` going from `from` to `to` (Zhu & Gupta's cubic
/// schedule; never below `from`, exactly `to` at the last step).
pub fn gradual_ratio(from: f64, to: f64, s: usize, steps: usize) -> f64 {
    if to <= from {
        return to;
    }
    let left = 1.0 - s.min(steps) as f64 / steps.max(1) as f64;
    to - (to - from) * left.powi(3)
}

/// Retraining epochs after gradual step `s` of `steps`: the first `ramp` of `epochs` is
/// split evenly over the steps, and the last step also gets the rest.
pub fn gradual_epochs(epochs: f64, ramp: f64, s: usize, steps: usize) -> f64 {
    if s == steps {
        epochs * (1.0 - ramp) + epochs * ramp / steps as f64
    } else {
        epochs * ramp / steps as f64
    }
}

#[cfg(test)]
mod tests {
    use super::gradual_ratio;

    #[test]
    fn gradual_ratio_is_cubic_and_ends_at_target() {
        assert_eq!(gradual_ratio(0.5, 0.9, 4, 4), 0.9);
        // first step removes most: 1 - (3/4)^3 = 0.578 of the way
        let r1 = gradual_ratio(0.5, 0.9, 1, 4);
        assert!((r1 - (0.9 - 0.4 * 0.421875)).abs() < 1e-12);
        let rs: Vec<f64> = (1..=4).map(|s| gradual_ratio(0.5, 0.9, s, 4)).collect();
        assert!(rs.windows(2).all(|w| w[1] > w[0]));
        let steps: Vec<f64> = rs.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            steps.windows(2).all(|w| w[1] < w[0]),
            "steps shrink: {steps:?}"
        );
        // nothing to do when already there
        assert_eq!(gradual_ratio(0.9, 0.9, 1, 4), 0.9);
    }
}
