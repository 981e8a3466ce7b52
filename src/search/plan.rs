//! The search's plan: the numbers it works with once the model at hand has been measured
//! (probe length, noise, margins, probe budget), and the rules that turn the calibration's
//! measurements into them. Everything here is a pure function of accuracies, counts and
//! the config, never of the clock: seconds are measured only to say how long the plan will
//! take here and to keep an optional minute cap, so the same command and seed make the
//! same choices on any machine.
//!
//! ## The rules
//! - **Noise.** σ is the larger of two spreads ([`noise`]): between retrainings of the same
//!   ratios with other seeds (the pooled standard deviation of the calibration's repeated
//!   probes, [`pooled_sd`]), and the binomial σ of the validation set at the dense
//!   accuracy ([`binomial`]). The seeds' spread from one warm start is the smaller part on
//!   LeNet-5 (0.0002 against a probe-to-probe scatter of 0.0008 in the committed searches,
//!   where warm starts differ too); the binomial σ (0.0011) is of that scatter's size.
//! - **Probe length.** A ladder of retrainings from the dense model pruned to the ratios
//!   where each layer alone loses one point (the learning-rate range test's start: real
//!   damage to repair), each rung twice as long as the one before ([`LADDER_START_STEPS`]
//!   SGD steps first), [`LADDER_SEEDS`] seeds each. It is read on the validation *loss*,
//!   which moves smoothly where accuracy moves by whole images. A doubling is *flat* when
//!   it lowers the mean loss by less than half the loss's own seed-to-seed spread, or by
//!   less than [`DIMINISHING`] of what the ladder gained so far (twice the retraining for
//!   a seventh of the gain); the ladder stops at the first flat doubling
//!   ([`ladder_done`]) and a probe is as long as the rung it doubled ([`choose_epochs`]),
//!   or the longest rung. LeNet-5 gets 2.4 epochs, LeNet-300-100 on Fashion-MNIST, whose
//!   loss keeps falling, 9.5.
//! - **Margins.** A ratio probe is feasible at floor + 1.25 σ, at most a quarter of the
//!   room between the dense accuracy and the floor (a margin of several σ would leave a
//!   drop budget of a few σ nothing to prune with), and one within 0.75 σ of that gets a
//!   second look (also at most a quarter of the room: [`margin`], [`second_look`]); on
//!   LeNet-5 (σ 0.0011, room 0.0044) these are 0.0011 and 0.0008, near the margins tuned
//!   by hand before (0.001, 0.0006).
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
/// A doubling of the probe length that gains less than this fraction of what the ladder
/// gained so far is not worth its cost.
pub const DIMINISHING: f64 = 0.15;
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
    /// σ of a probe's validation accuracy the decisions use ([`noise`]).
    pub noise: f64,
    /// The spread between retrainings (seeds) of the same ratios, measured.
    #[serde(default)]
    pub seed_spread: f64,
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
    pooled_sd(
        rungs.iter().map(|r| &r.accuracies[..]),
        1.0 / n.max(1) as f64,
    )
}

/// σ of a probe's validation loss between seeds, from the rungs.
pub fn loss_noise(rungs: &[Rung]) -> f64 {
    pooled_sd(rungs.iter().map(|r| &r.losses[..]), MIN_LOSS_SD)
}

/// σ of a probe's accuracy for the search's decisions: the larger of the seeds' spread
/// and the binomial σ.
pub fn noise(seed_spread: f64, binomial: f64) -> f64 {
    seed_spread.max(binomial)
}

/// Whether doubling rung `k − 1` into rung `k` was flat: it lowered the mean loss by less
/// than half the loss noise, or by less than [`DIMINISHING`] of the ladder's gain so far.
fn flat(rungs: &[Rung], k: usize, loss_sd: f64) -> bool {
    let gain = rungs[k - 1].mean_loss() - rungs[k].mean_loss();
    let so_far = rungs[0].mean_loss() - rungs[k].mean_loss();
    gain < (0.5 * loss_sd).max(DIMINISHING * so_far)
}

/// Whether the ladder can stop: its last doubling was flat, or it has [`LADDER_RUNGS`]
/// rungs.
pub fn ladder_done(rungs: &[Rung]) -> bool {
    let n = rungs.len();
    n >= LADDER_RUNGS || (n >= 2 && flat(rungs, n - 1, loss_noise(rungs)))
}

/// The probe length: the rung whose doubling was the first flat one, or the longest rung
/// when none was.
pub fn choose_epochs(rungs: &[Rung]) -> f64 {
    let sd = loss_noise(rungs);
    (1..rungs.len())
        .find(|&k| flat(rungs, k, sd))
        .map(|k| rungs[k - 1].epochs)
        .or_else(|| rungs.last().map(|r| r.epochs))
        .unwrap_or(0.0)
}

/// The band around the target where a ratio probe gets a second look:
/// [`SECOND_LOOK_NOISE`] σ, at most a quarter of the room.
pub fn second_look(noise: f64, room: f64) -> f64 {
    (SECOND_LOOK_NOISE * noise).min(0.25 * room.max(0.0))
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
    fn the_probe_is_the_rung_whose_doubling_was_first_flat() {
        // seed spread 0.001 in every rung; the loss falls 0.02, 0.01, 0.0002: doubling
        // rung 2 gained under half the spread
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
    fn diminishing_returns_end_the_ladder_where_the_noise_would_not() {
        // LeNet-5 from the one-point ratios (measured): the loss falls by 0.0141, 0.0088,
        // 0.0058, 0.0041, 0.0028, each far above the seeds' spread; doubling 2.38 epochs
        // gained 12.5 % of the ladder's gain so far
        let lenet = [
            rung(0.298, &[0.0599, 0.0601]),
            rung(0.596, &[0.0457, 0.0460]),
            rung(1.192, &[0.0368, 0.0374]),
            rung(2.383, &[0.0311, 0.0315]),
            rung(4.766, &[0.0270, 0.0273]),
            rung(9.533, &[0.0247, 0.0241]),
        ];
        assert!(!ladder_done(&lenet[..4]));
        assert!(ladder_done(&lenet[..5]));
        assert_eq!(choose_epochs(&lenet[..5]), 2.383);
        // LeNet-300-100 on Fashion-MNIST (measured): each doubling gains a fifth or more
        let fashion = [
            rung(0.298, &[0.33830, 0.33478]),
            rung(0.596, &[0.33478, 0.33245]),
            rung(1.192, &[0.32811, 0.32809]),
            rung(2.383, &[0.32437, 0.32485]),
            rung(4.766, &[0.32010, 0.32210]),
            rung(9.533, &[0.31750, 0.31780]),
        ];
        assert!(!ladder_done(&fashion[..5]));
        assert_eq!(choose_epochs(&fashion), 9.533);
    }

    #[test]
    fn decisions_take_the_larger_noise_and_keep_three_quarters_of_the_room() {
        assert_eq!(noise(0.0002, 0.0011), 0.0011);
        assert_eq!(noise(0.0016, 0.0011), 0.0016);
        assert!((second_look(0.0011, 0.0044) - 0.000825).abs() < 1e-12);
        assert!((second_look(0.0044, 0.005) - 0.00125).abs() < 1e-12);
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
