//! The search's plan: the numbers it works with once the model at hand has been measured
//! (probe length, noise, margins, probe budget), and the rules that turn the calibration's
//! measurements into them. Everything here is a pure function of accuracies, counts and
//! the config, never of the clock: seconds are measured only to say how long the plan will
//! take here and to keep an optional minute cap, so the same command and seed make the
//! same choices on any machine.
//!
//! ## The rules
//! - **Noise.** Decisions compare models on the same validation images, so what can flip
//!   one is the spread between retrainings of the same ratios with other seeds: the pooled
//!   standard deviation of the calibration's repeated probes ([`pooled_sd`], at least one
//!   image). The binomial σ of the validation set ([`binomial`]) moves every model alike;
//!   it says how far the file's test accuracy may land from its validation accuracy, and
//!   is reported beside it.
//! - **Probe length.** A ladder of retrainings from the dense model pruned to the ratios
//!   where each layer alone loses one point (the learning-rate range test's start: real
//!   damage to repair), each rung twice as long as the one before ([`LADDER_START_STEPS`]
//!   SGD steps first), [`LADDER_SEEDS`] seeds each. It is read on the validation *loss*,
//!   which moves smoothly where accuracy moves by whole images: the ladder stops once a
//!   doubling lowers the mean loss by less than half the loss's own seed-to-seed spread
//!   ([`ladder_done`]), and a probe is the shortest rung whose mean loss is within that
//!   half spread of the lowest ([`choose_epochs`]). The jump from the dense model is the
//!   largest a search makes (later probes start from warm starts), so this errs long.
//! - **Margins.** A ratio probe is feasible at floor + 1.25 σ, at most a quarter of the
//!   room between the dense accuracy and the floor (a margin of several σ would leave a
//!   drop budget of a few σ nothing to prune with), and one within 0.75 σ of that gets a
//!   second look ([`margin`], [`SECOND_LOOK_NOISE`]); on LeNet-5 (σ ≈ 0.0008, room
//!   0.004) these are the margins tuned by hand before (0.001, 0.0006).
//! - **Budget.** `8 × (layers + 1)` ratio probes ([`ratio_probes`]): the bisection's few
//!   and about eight pushes a layer for the refinement, which usually converges sooner.

use serde::{Deserialize, Serialize};

/// SGD steps of the calibration ladder's first rung.
pub const LADDER_START_STEPS: f64 = 256.0;
/// Rungs at most (the longest is 2^(n−1) times the first).
pub const LADDER_RUNGS: usize = 6;
/// Retrainings (seeds) per rung.
pub const LADDER_SEEDS: usize = 2;
/// A ratio probe's margin above the floor, in units of the noise ([`margin`]).
pub const MARGIN_NOISE: f64 = 1.25;
/// The band around the target where a ratio probe gets a second look, in units of the noise.
pub const SECOND_LOOK_NOISE: f64 = 0.75;
/// Ratio probes fewer than this are too few for the refinement to get anywhere: the
/// search says so when a minute cap allows no more.
pub const FEW_PROBES: usize = 15;

/// One rung of the calibration ladder: a retraining length and the validation accuracy
/// and loss each seed reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rung {
    pub epochs: f64,
    pub accuracies: Vec<f64>,
    pub losses: Vec<f64>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl Rung {
    pub fn mean_accuracy(&self) -> f64 {
        mean(&self.accuracies)
    }

    pub fn mean_loss(&self) -> f64 {
        mean(&self.losses)
    }
}

/// The smallest spread the loss is credited with (two equal losses are not proof of no
/// noise).
pub const MIN_LOSS_SD: f64 = 1e-4;

/// What the search works with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Retraining epochs of a ratio probe.
    pub probe_epochs: f64,
    /// Codebook retraining epochs of a bits probe.
    pub bits_epochs: f64,
    /// Ratio probes are feasible at floor + margin.
    pub margin: f64,
    /// Probes within this of the target get a second look.
    pub second_look: f64,
    /// σ of a probe's validation accuracy between retrainings (seeds).
    pub noise: f64,
    /// Binomial σ of the validation accuracy at the dense model's.
    pub binomial: f64,
    /// Most ratio probes (bisection and refinement).
    pub ratio_probes: usize,
    /// Most refinement probes.
    pub refine_probes: usize,
    /// The minute cap, if any.
    pub minutes: Option<f64>,
    /// Seconds of a retraining epoch here, as the calibration measured it (0 before).
    pub epoch_seconds: f64,
    /// The calibration ladder (empty when nothing was measured).
    pub ladder: Vec<Rung>,
    /// What the search said about its budget (too few probes for a minute cap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Binomial standard deviation of an accuracy `acc` measured on `n` images.
pub fn binomial(acc: f64, n: usize) -> f64 {
    (acc.clamp(0.0, 1.0) * (1.0 - acc.clamp(0.0, 1.0)) / n.max(1) as f64).sqrt()
}

/// The pooled standard deviation of groups of repeated measurements about each group's
/// mean, at least `floor`.
pub fn pooled_sd<'a>(groups: impl IntoIterator<Item = &'a [f64]>, floor: f64) -> f64 {
    let (mut ss, mut dof) = (0.0, 0usize);
    for g in groups {
        let m = mean(g);
        ss += g.iter().map(|a| (a - m).powi(2)).sum::<f64>();
        dof += g.len().saturating_sub(1);
    }
    if dof == 0 {
        return floor;
    }
    (ss / dof as f64).sqrt().max(floor)
}

/// σ of a probe's validation accuracy between seeds, from the rungs; at least one image in
/// `n`.
pub fn accuracy_noise(rungs: &[Rung], n: usize) -> f64 {
    pooled_sd(rungs.iter().map(|r| &r.accuracies[..]), 1.0 / n.max(1) as f64)
}

/// σ of a probe's validation loss between seeds, from the rungs.
pub fn loss_noise(rungs: &[Rung]) -> f64 {
    pooled_sd(rungs.iter().map(|r| &r.losses[..]), MIN_LOSS_SD)
}

/// Whether the ladder can stop: its last doubling lowered the mean loss by less than half
/// the loss noise, or it has [`LADDER_RUNGS`] rungs.
pub fn ladder_done(rungs: &[Rung]) -> bool {
    let n = rungs.len();
    n >= LADDER_RUNGS
        || (n >= 2
            && rungs[n - 2].mean_loss() - rungs[n - 1].mean_loss() < 0.5 * loss_noise(rungs))
}

/// The probe length: the shortest rung whose mean loss is within half the loss noise of
/// the lowest rung's (a doubling that raised the loss does not make probes longer).
pub fn choose_epochs(rungs: &[Rung]) -> f64 {
    let half = 0.5 * loss_noise(rungs);
    let best = rungs.iter().map(Rung::mean_loss).fold(f64::INFINITY, f64::min);
    rungs
        .iter()
        .find(|r| r.mean_loss() <= best + half)
        .map_or(0.0, |r| r.epochs)
}

/// A ratio probe's margin above the floor: [`MARGIN_NOISE`] σ, at most a quarter of the
/// `room` between the dense accuracy and the floor.
pub fn margin(noise: f64, room: f64) -> f64 {
    (MARGIN_NOISE * noise).min(0.25 * room.max(0.0))
}

/// The ladder's lengths in epochs: [`LADDER_START_STEPS`] steps of `batch` images over a
/// training split of `train_images`, doubling.
pub fn ladder_epochs(train_images: usize, batch: i64) -> Vec<f64> {
    let first = LADDER_START_STEPS * batch.max(1) as f64 / train_images.max(1) as f64;
    (0..LADDER_RUNGS)
        .map(|k| first * f64::powi(2.0, k as i32))
        .collect()
}

/// The longest probe the frontier check may lengthen to: the ladder's last possible rung
/// (2^([`LADDER_RUNGS`] − 1) times its first).
pub fn ladder_epochs_cap(rungs: &[Rung]) -> f64 {
    rungs
        .first()
        .map_or(0.0, |r| r.epochs * f64::powi(2.0, LADDER_RUNGS as i32 - 1))
}

/// Ratio probes a model with `layers` compressible layers gets by default.
pub fn ratio_probes(layers: usize) -> usize {
    8 * (layers + 1)
}

/// Minutes a cap must be for `probes` ratio probes of `probe_seconds` each (a fifth more
/// for second looks), after `spent` seconds, with the refinement ending at `refine_share`
/// of the cap.
pub fn minutes_for(probes: usize, probe_seconds: f64, spent: f64, refine_share: f64) -> f64 {
    (spent + probes as f64 * probe_seconds * 1.2) / refine_share.max(1e-9) / 60.0
}

/// Ratio probes of `probe_seconds` each that fit in a cap of `minutes`, after `spent`
/// seconds, with the refinement ending at `refine_share` of the cap.
pub fn probes_within(minutes: f64, probe_seconds: f64, spent: f64, refine_share: f64) -> usize {
    let left = minutes * 60.0 * refine_share - spent;
    (left / (probe_seconds * 1.2).max(1e-9)).max(0.0).floor() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rung with these losses (accuracies 0.99 each).
    fn rung(epochs: f64, losses: &[f64]) -> Rung {
        Rung {
            epochs,
            accuracies: vec![0.99; losses.len()],
            losses: losses.to_vec(),
        }
    }

    #[test]
    fn binomial_sigma_of_5000_images_at_99_percent() {
        assert!((binomial(0.99, 5000) - 0.001407).abs() < 1e-5);
        assert_eq!(binomial(1.0, 5000), 0.0);
    }

    #[test]
    fn noise_pools_the_spread_within_groups_and_has_a_floor() {
        // pairs differing by 0.002 and 0.004: variances 2e-6 and 8e-6, pooled 5e-6
        let g: [&[f64]; 2] = [&[0.990, 0.992], &[0.991, 0.995]];
        assert!((pooled_sd(g, 0.0) - 5e-6f64.sqrt()).abs() < 1e-9);
        let r = Rung {
            epochs: 1.0,
            accuracies: vec![0.99, 0.99],
            losses: vec![0.03, 0.03],
        };
        // identical measurements: one image, the loss's floor
        assert_eq!(accuracy_noise(std::slice::from_ref(&r), 5000), 1.0 / 5000.0);
        assert_eq!(loss_noise(&[r]), MIN_LOSS_SD);
        // single measurements have no spread to pool
        let one: [&[f64]; 1] = [&[0.99]];
        assert_eq!(pooled_sd(one, 0.001), 0.001);
    }

    #[test]
    fn the_probe_is_the_shortest_rung_within_half_the_loss_noise_of_the_lowest() {
        // seed spread 0.001 in every rung (σ = 0.001/√2); the loss falls 0.02, 0.01, 0.0002
        let r = [
            rung(0.25, &[0.0800, 0.0810]),
            rung(0.5, &[0.0600, 0.0610]),
            rung(1.0, &[0.0500, 0.0510]),
            rung(2.0, &[0.0498, 0.0508]),
        ];
        assert_eq!(choose_epochs(&r), 1.0);
        assert!(ladder_done(&r));
        assert!(!ladder_done(&r[..3]));
        // still falling at the top: the longest rung
        assert_eq!(choose_epochs(&r[..2]), 0.5);
        // a doubling that raised the loss stops the ladder and is not taken
        let d = [
            rung(0.3, &[0.336, 0.337]),
            rung(0.6, &[0.330, 0.331]),
            rung(1.2, &[0.334, 0.335]),
        ];
        assert!(ladder_done(&d));
        assert_eq!(choose_epochs(&d), 0.6);
        assert_eq!(choose_epochs(&[]), 0.0);
    }

    #[test]
    fn a_slow_steady_fall_keeps_the_ladder_climbing() {
        // Fashion-MNIST's LeNet-300-100 from the one-point ratios: every doubling lowers the
        // loss by 2–5 times its seed spread, so no rung is flat
        let r = [
            rung(0.298, &[0.33830, 0.33478]),
            rung(0.596, &[0.33478, 0.33245]),
            rung(1.192, &[0.32811, 0.32809]),
            rung(2.383, &[0.32437, 0.32485]),
        ];
        assert!(!ladder_done(&r));
        assert_eq!(choose_epochs(&r), 2.383);
    }

    #[test]
    fn the_ladder_stops_at_its_last_rung() {
        let r: Vec<Rung> = (0..LADDER_RUNGS)
            .map(|k| rung(k as f64, &[0.5 - 0.05 * k as f64]))
            .collect();
        assert!(ladder_done(&r));
        assert!(!ladder_done(&r[..LADDER_RUNGS - 1]));
    }

    #[test]
    fn the_margin_is_noise_but_at_most_a_quarter_of_the_room() {
        assert!((margin(0.0008, 0.0041) - 0.001).abs() < 1e-12);
        // a drop budget of a few σ keeps three quarters of it for pruning
        assert!((margin(0.004, 0.005) - 0.00125).abs() < 1e-12);
        assert_eq!(margin(0.001, -0.01), 0.0);
    }

    #[test]
    fn ladder_lengths_are_256_steps_doubling() {
        let l = ladder_epochs(55_000, 64);
        assert_eq!(l.len(), LADDER_RUNGS);
        assert!((l[0] - 256.0 * 64.0 / 55_000.0).abs() < 1e-12);
        assert!((l[3] / l[0] - 8.0).abs() < 1e-12);
        assert!((ladder_epochs_cap(&[rung(l[0], &[0.1])]) - l[LADDER_RUNGS - 1]).abs() < 1e-12);
    }

    #[test]
    fn budgets() {
        assert_eq!(ratio_probes(4), 40);
        // 10 probes of 6 s (7.2 s with second looks) after 60 s, refinement at 78 %
        let m = minutes_for(10, 6.0, 60.0, 0.78);
        assert!((m - (60.0 + 72.0) / 0.78 / 60.0).abs() < 1e-9);
        assert_eq!(probes_within(m + 1e-9, 6.0, 60.0, 0.78), 10);
        assert_eq!(probes_within(0.5, 6.0, 60.0, 0.78), 0);
    }
}
