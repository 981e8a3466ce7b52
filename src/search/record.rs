//! The search's plain records: the stage a probe belongs to ([`Phase`]), one probe
//! ([`Trial`]), the time per stage ([`StageTimes`]) and the result ([`Outcome`]). The
//! journal, `trials.csv`, `summary.json` and the report read and write these.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The stage a probe belongs to; one name everywhere (`trials.csv`, the journal, the
/// stage times, progress lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// How long a probe must retrain and how noisy it is (`super::calibration`).
    Calibrate,
    /// The δ bracket over the sensitivity curves.
    Bisect,
    /// Per-layer pushes chosen by the Gaussian process.
    Refine,
    /// Weight widths (codebook retraining).
    Bits,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Calibrate => "calibrate",
            Phase::Bisect => "bisect",
            Phase::Refine => "refine",
            Phase::Bits => "bits",
        }
    }

    /// Whether the probe searched sparse ratios (these count against a probe budget; the
    /// calibration's do not).
    pub fn is_ratio(self) -> bool {
        matches!(self, Phase::Bisect | Phase::Refine)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One probe of the search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trial {
    pub probe: usize,
    pub phase: Phase,
    pub delta: Option<f64>,
    pub ratios: Vec<f64>,
    pub bits: Vec<u8>,
    pub valid_accuracy: f64,
    /// Mean validation cross-entropy (absent in journals written before it was recorded).
    #[serde(default)]
    pub valid_loss: Option<f64>,
    pub feasible: bool,
    pub nonzeros: usize,
    pub estimated_bytes: f64,
    pub seconds: f64,
    pub warm_start: String,
    /// Times the probe's retraining diverged and started again at a smaller learning rate
    /// (absent in journals written before it was recorded).
    #[serde(default)]
    pub lr_restarts: u32,
    /// Retraining epochs of the probe (absent in journals written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
}

/// The `warm_start` of a probe whose worker failed twice: it measured nothing and never
/// counts as feasible.
pub const LOST: &str = "lost";

impl Trial {
    /// Whether the probe was lost (its worker failed twice).
    pub fn is_lost(&self) -> bool {
        self.warm_start.starts_with(LOST)
    }
}

/// Time spent per stage, in seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageTimes {
    /// The sparsifier's gated training (0 for `"magnitude"`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sparsify: f64,
    pub sensitivity: f64,
    /// The learning-rate range test (0 when `retrain_lr` is not `"auto"`).
    #[serde(default)]
    pub lr_test: f64,
    /// The calibration (probe length and noise).
    #[serde(default)]
    pub calibrate: f64,
    #[serde(alias = "bisection")]
    pub bisect: f64,
    #[serde(alias = "refinement")]
    pub refine: f64,
    pub final_retrain: f64,
    pub bits: f64,
    pub encode_and_verify: f64,
    pub total: f64,
}

/// The search's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub model: String,
    pub dataset: String,
    pub floor: f64,
    pub margin: f64,
    pub dense_valid_accuracy: f64,
    pub ratios: Vec<f64>,
    pub bits: Vec<u8>,
    pub layers: Vec<String>,
    pub file: PathBuf,
    pub file_bytes: usize,
    pub dense_bytes: usize,
    pub compression_ratio: f64,
    pub decoded_valid_accuracy: f64,
    pub decoded_test_accuracy: f64,
    /// Images of the validation and test splits (with `--validation-from test` both are
    /// halves of the test set).
    #[serde(default)]
    pub valid_images: usize,
    #[serde(default)]
    pub test_images: usize,
    pub probes: usize,
    pub times: StageTimes,
    /// Where the dense model came from: a `--weights` file, or training with the recipe.
    #[serde(default)]
    pub dense_weights: String,
    /// Why the search stopped looking for smaller ratios.
    #[serde(default)]
    pub stopped: String,
    /// The device it ran on (`cpu`, `cuda:0`).
    #[serde(default)]
    pub device: String,
    /// The learning-rate range test that chose the retraining learning rate
    /// (`retrain_lr = "auto"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_test: Option<crate::compress::lr_range::LrTest>,
    /// The L0 gates' training the search started from (`sparsifier = "l0"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsifier: Option<crate::compress::gates::GateStats>,
    /// For a TorchScript model: the module file the `.dcz` pairs with, and the bytes of the
    /// state no named layer owns (the file and the ratio count the named layers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<crate::models::torchscript::PairBytes>,
    /// What the search worked with: probe length, noise, margins, budget (absent in
    /// summaries written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<super::plan::Plan>,
    /// The probes whose retraining diverged and started again at a smaller learning rate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lr_restarted_probes: Vec<usize>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// `v` rounded to three decimals (for messages).
pub fn round3(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
}
