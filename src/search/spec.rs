//! One probe as a job: `dc-search probe --spec SPEC.json`. A spec holds everything a probe
//! needs (the run's config, the dense weights and their hash, the warm start's checkpoint,
//! the ratios or widths, epochs, seeds and the threshold it must reach); its result holds the
//! validation measure and, when it is feasible, the checkpoint it wrote. This is how a probe
//! leaves the search's process: for worker processes on one machine or a cluster's array
//! jobs. A result is named by the spec's hash, so one that is already there is not
//! recomputed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::oracle::{Oracle, Retrainer};

/// The spec format's version.
pub const SPEC_VERSION: u32 = 1;

/// What the probe does to its warm start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Prune to `ratios` and retrain (from the dense model when there is no warm start).
    Prune,
    /// Share each layer's weights at `bits` and retrain the codebooks.
    Quantize,
}

/// One probe, self-contained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// [`SPEC_VERSION`].
    pub spec: u32,
    /// The run's config, as its `config.toml`.
    pub config: String,
    /// The dense weights the run started from: the cached model, the imported file or the
    /// TorchScript module.
    pub dense: PathBuf,
    /// SHA-256 of the file at `dense` (hex): a changed file is refused.
    pub dense_sha256: String,
    /// The checkpoint to start from (`None`: the dense model).
    pub warm_start: Option<PathBuf>,
    pub action: Action,
    /// Sparse ratio per layer (`prune`).
    pub ratios: Vec<f64>,
    /// Weight bits per layer (`quantize`).
    pub bits: Vec<u8>,
    pub epochs: f64,
    /// The run's `--seed`.
    pub seed: u64,
    /// The probe's seed offset: its randomness is seeded with `seed + offset`.
    pub offset: u64,
    /// Validation accuracy the probe must reach to be feasible (its checkpoint is then
    /// written).
    pub threshold: f64,
}

/// What a probe measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// [`ProbeSpec::sha256`] of the spec it answers.
    pub spec_sha256: String,
    pub valid_accuracy: f64,
    pub valid_loss: f64,
    pub nonzeros: usize,
    pub seconds: f64,
    pub feasible: bool,
    /// Times its retraining diverged and started again at a smaller learning rate.
    #[serde(default)]
    pub lr_restarts: u32,
    /// The probe's model, written when it is feasible.
    pub checkpoint: Option<PathBuf>,
}

impl ProbeSpec {
    /// Reads and checks a spec file.
    pub fn read(path: &Path) -> Result<Self> {
        // On a cluster, a spec no node can see is the usual cause: say so after the reason.
        let text = crate::paths::read_text(path, "probe spec", crate::paths::MAX_TEXT_BYTES)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e:#} (on a cluster, the run folder must be on storage every node shares)"
                )
            })?;
        let spec: ProbeSpec = serde_json::from_str(&text)
            .with_context(|| format!("probe spec {}: not a valid spec", path.display()))?;
        spec.check()
            .with_context(|| format!("probe spec {}", path.display()))?;
        Ok(spec)
    }

    /// Range checks that need no model.
    pub fn check(&self) -> Result<()> {
        if self.spec != SPEC_VERSION {
            bail!(
                "spec version {} (this dc-search reads version {SPEC_VERSION}); write it again with this version",
                self.spec
            );
        }
        if !(self.epochs > 0.0 && self.epochs <= 1e4) {
            bail!("epochs {} outside (0, 10000]", self.epochs);
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            bail!("threshold {} outside (0, 1]", self.threshold);
        }
        match self.action {
            Action::Prune => {
                if let Some(r) = self.ratios.iter().find(|r| !(0.0..1.0).contains(*r)) {
                    bail!("sparse ratio {r} outside [0, 1)");
                }
            }
            Action::Quantize => {
                if let Some(b) = self.bits.iter().find(|b| !(1..=16).contains(*b)) {
                    bail!("weight bits {b} outside 1..=16");
                }
                if self.warm_start.is_none() {
                    bail!("a quantize probe needs a warm start: the pruned model to share");
                }
            }
        }
        Ok(())
    }

    /// SHA-256 (hex) of the spec's JSON: names its result.
    pub fn sha256(&self) -> String {
        let json = serde_json::to_string(self).expect("a spec serialises");
        crate::paths::sha256_hex(json.as_bytes())
    }

    /// Checks the spec against the model's layers.
    pub fn check_layers(&self, layers: usize) -> Result<()> {
        let (what, n) = match self.action {
            Action::Prune => ("ratios", self.ratios.len()),
            Action::Quantize => ("bits", self.bits.len()),
        };
        if n != layers {
            bail!("{n} {what} for a model with {layers} layers");
        }
        Ok(())
    }
}

/// The result file beside `spec_path`, named by the spec's hash.
pub fn default_result_path(spec_path: &Path, spec: &ProbeSpec) -> PathBuf {
    spec_path.with_file_name(format!("{}.result.json", spec.sha256()))
}

/// The checkpoint a feasible probe writes beside its result (`x.result.json` →
/// `x.safetensors`).
pub fn checkpoint_path(result: &Path) -> PathBuf {
    let name = result
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".result.json")
        .or_else(|| name.strip_suffix(".json"))
        .unwrap_or(&name);
    result.with_file_name(format!("{stem}.safetensors"))
}

/// Reads a result file if it answers `spec` (`None` when it is missing or answers another).
pub fn existing_result(path: &Path, spec: &ProbeSpec) -> Option<ProbeResult> {
    let text = crate::paths::read_text(path, "probe result", crate::paths::MAX_TEXT_BYTES).ok()?;
    let r: ProbeResult = serde_json::from_str(&text).ok()?;
    let checkpoint_there = r.checkpoint.as_ref().is_none_or(|c| c.is_file());
    (r.spec_sha256 == spec.sha256() && checkpoint_there).then_some(r)
}

/// Runs the probe with `oracle`; a feasible probe's model goes to `checkpoint`.
pub fn run(oracle: &mut Retrainer, spec: &ProbeSpec, checkpoint: &Path) -> Result<ProbeResult> {
    let from = match &spec.warm_start {
        Some(p) => {
            if !p.is_file() {
                bail!(
                    "warm start {}: no such checkpoint (on a cluster, the run folder must be on storage every node \
                     shares)",
                    p.display()
                );
            }
            Some(oracle.load(p)?)
        }
        None => None,
    };
    let (model, m) = match (spec.action, from.as_ref()) {
        (Action::Prune, from) => oracle.prune(from, &spec.ratios, spec.epochs, spec.offset)?,
        (Action::Quantize, Some(from)) => {
            oracle.quantize(from, &spec.bits, spec.epochs, spec.offset)?
        }
        (Action::Quantize, None) => bail!("a quantize probe needs a warm start"),
    };
    let feasible = m.accuracy >= spec.threshold;
    if feasible {
        oracle.save(&model, checkpoint)?;
    }
    Ok(ProbeResult {
        spec_sha256: spec.sha256(),
        valid_accuracy: m.accuracy,
        valid_loss: m.loss,
        nonzeros: m.nonzeros,
        seconds: m.seconds,
        feasible,
        lr_restarts: m.lr_restarts,
        checkpoint: feasible.then(|| checkpoint.to_path_buf()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProbeSpec {
        ProbeSpec {
            spec: SPEC_VERSION,
            config: "model = \"lenet\"\n".into(),
            dense: "dense.safetensors".into(),
            dense_sha256: "00".into(),
            warm_start: None,
            action: Action::Prune,
            ratios: vec![0.5, 0.8],
            bits: vec![],
            epochs: 1.5,
            seed: 1,
            offset: 1000,
            threshold: 0.99,
        }
    }

    #[test]
    fn specs_round_trip_and_their_hash_names_them() {
        let s = spec();
        let json = serde_json::to_string(&s).unwrap();
        let back: ProbeSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.sha256(), s.sha256());
        let mut other = s.clone();
        other.offset += 1;
        assert_ne!(other.sha256(), s.sha256());
        let p = default_result_path(Path::new("/runs/specs/a.json"), &s);
        assert_eq!(
            p,
            PathBuf::from(format!("/runs/specs/{}.result.json", s.sha256()))
        );
        assert_eq!(
            checkpoint_path(&p),
            PathBuf::from(format!("/runs/specs/{}.safetensors", s.sha256()))
        );
    }

    /// A result (and every journaled number) reads back as the very f64 it was written
    /// from: `serde_json`'s default parser may miss by an ulp (6.490780832 read back
    /// printed 6.4907808320000004), which would make a replayed probe differ from the one
    /// run; the `float_roundtrip` feature parses exactly.
    #[test]
    fn results_read_back_bit_for_bit() {
        for seconds in [6.490780832, 0.1 + 0.2, 1e-300, 123456.789012345] {
            let r = ProbeResult {
                spec_sha256: "ab".into(),
                valid_accuracy: 0.9846,
                valid_loss: 0.8193642186164856,
                nonzeros: 3,
                seconds,
                feasible: true,
                lr_restarts: 0,
                checkpoint: None,
            };
            let json = serde_json::to_string(&r).unwrap();
            let back: ProbeResult = serde_json::from_str(&json).unwrap();
            assert_eq!(back.seconds.to_bits(), seconds.to_bits(), "{json}");
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
        }
    }

    #[test]
    fn bad_specs_are_refused_in_one_line() {
        type Case = (fn(&mut ProbeSpec), &'static str);
        let cases: Vec<Case> = vec![
            (|s| s.spec = 9, "spec version 9"),
            (|s| s.epochs = 0.0, "epochs 0"),
            (|s| s.threshold = 1.5, "threshold 1.5"),
            (|s| s.ratios = vec![0.5, 1.0], "sparse ratio 1"),
            (
                |s| {
                    s.action = Action::Quantize;
                    s.bits = vec![3, 2];
                },
                "needs a warm start",
            ),
            (
                |s| {
                    s.action = Action::Quantize;
                    s.bits = vec![0, 2];
                    s.warm_start = Some("w.safetensors".into());
                },
                "weight bits 0",
            ),
        ];
        for (break_it, says) in cases {
            let mut s = spec();
            break_it(&mut s);
            let e = s.check().unwrap_err().to_string();
            assert!(e.contains(says), "{e} / {says}");
        }
        assert!(spec().check().is_ok());
        assert!(spec()
            .check_layers(4)
            .unwrap_err()
            .to_string()
            .contains("2 ratios for a model with 4 layers"));
        // Unknown keys are refused (a typo must not be ignored).
        let mut v = serde_json::to_value(spec()).unwrap();
        v["epoch"] = serde_json::json!(3.0);
        assert!(serde_json::from_value::<ProbeSpec>(v).is_err());
    }
}
