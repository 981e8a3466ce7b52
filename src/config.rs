//! Run configuration: presets compiled from `configs/*.toml` (so an installed binary works
//! anywhere) or a TOML file given by path. The resolved config is saved beside results.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::compress::CompressConfig;
use crate::data::DataConfig;
use crate::models::torchscript::TorchScriptConfig;
use crate::models::Arch;
use crate::search::config::SearchConfig;
use crate::train::Recipe;

/// Everything that determines a run, as read from a preset or file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A zoo model name (`lenet`, `lenet-300-100`), or with `[torchscript]` the name the
    /// TorchScript model's files carry.
    pub model: String,
    /// Dense weights imported from a file (`.caffemodel` or `.safetensors`, `--weights`)
    /// instead of trained with `[train]`'s recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<std::path::PathBuf>,
    /// A TorchScript module instead of a zoo model (its section names the module file,
    /// input shape and compressible layers; see `models::torchscript`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torchscript: Option<TorchScriptConfig>,
    pub data: DataConfig,
    /// The dense training recipe.
    pub train: Recipe,
    /// How compression retrains (defaults when absent).
    #[serde(default)]
    pub compress: CompressConfig,
    /// How the automatic search spends its budget (defaults when absent).
    #[serde(default)]
    pub search: SearchConfig,
}

/// Presets compiled into the binary: `(name, toml)`.
pub const PRESETS: [(&str, &str); 3] = [
    ("lenet", include_str!("../configs/lenet.toml")),
    ("lenet-caffe", include_str!("../configs/lenet-caffe.toml")),
    (
        "lenet-300-100",
        include_str!("../configs/lenet-300-100.toml"),
    ),
];

impl Config {
    /// Resolves a preset name or a path to a TOML config.
    pub fn resolve(name_or_path: &str) -> Result<Config> {
        if let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name_or_path) {
            return Config::parse(text, &format!("preset {name_or_path}"));
        }
        let path = Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") || path.exists() {
            let bytes =
                crate::paths::read_regular(path, "config file", crate::paths::MAX_TEXT_BYTES)?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("config file {} is not UTF-8 text", path.display()))?;
            let mut cfg = Config::parse(&text, &path.display().to_string())?;
            // A TorchScript module path is relative to the config file.
            if let Some(m) = cfg.torchscript.as_mut().and_then(|t| t.module.as_mut()) {
                if m.is_relative() {
                    *m = path.parent().unwrap_or(Path::new("")).join(&*m);
                }
            }
            return Ok(cfg);
        }
        let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
        bail!(
            "unknown model {name_or_path:?}: give a preset ({}) or a path to a .toml config",
            names.join(", ")
        )
    }

    /// Parses and checks a TOML config; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Config> {
        let cfg: Config =
            toml::from_str(text).with_context(|| format!("{source}: invalid config"))?;
        cfg.check()
            .with_context(|| format!("{source}: invalid config"))?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        match &self.torchscript {
            None => {
                Arch::by_name(&self.model)?;
            }
            Some(ts) => {
                if self.model.is_empty() || self.model.len() > crate::format::MAX_NAME_LEN {
                    bail!(
                        "model: give the TorchScript model a name of 1 to {} bytes",
                        crate::format::MAX_NAME_LEN
                    );
                }
                ts.check()?;
            }
        }
        let t = &self.train;
        if !(t.base_lr > 0.0 && t.base_lr.is_finite()) {
            bail!("train.base_lr must be a positive number, got {}", t.base_lr);
        }
        if !(0.0..1.0).contains(&t.momentum) {
            bail!("train.momentum must be in [0, 1), got {}", t.momentum);
        }
        if t.batch_size < 1 || t.iterations < 1 {
            bail!("train.batch_size and train.iterations must be at least 1");
        }
        if t.augment_shift < 0 {
            bail!(
                "train.augment_shift must be ≥ 0 pixels, got {}",
                t.augment_shift
            );
        }
        if !(0.0..=180.0).contains(&t.augment_rotate) {
            bail!(
                "train.augment_rotate must be in [0, 180] degrees, got {}",
                t.augment_rotate
            );
        }
        if !(0.0..1.0).contains(&t.augment_scale) {
            bail!(
                "train.augment_scale must be in [0, 1), got {}",
                t.augment_scale
            );
        }
        let s = &self.search;
        for (key, v) in [
            ("refine_push", s.refine_push),
            ("refine_min_push", s.refine_min_push),
        ] {
            if !(v > 0.0 && v < 1.0) {
                bail!(
                    "search.{key} must be a fraction in (0, 1) of a layer's kept weights, got {v}"
                );
            }
        }
        if !(0.0..1.0).contains(&s.refine_min_saving) {
            bail!(
                "search.refine_min_saving must be a fraction in [0, 1) of the incumbent's bytes, got {}",
                s.refine_min_saving
            );
        }
        if !(self.data.input_scale > 0.0 && self.data.input_scale.is_finite()) {
            bail!(
                "data.input_scale must be positive, got {}",
                self.data.input_scale
            );
        }
        Ok(())
    }

    /// The zoo model's arch (a TorchScript model's comes from its module:
    /// `models::torchscript::load`).
    pub fn arch(&self) -> Arch {
        assert!(
            self.torchscript.is_none(),
            "a TorchScript config has no zoo arch: load its module"
        );
        Arch::by_name(&self.model).expect("checked when parsed")
    }

    /// The compressible layers' names, in order.
    pub fn layer_names(&self) -> Vec<String> {
        match &self.torchscript {
            Some(ts) => ts.layers.iter().map(|l| l.name.clone()).collect(),
            None => self.arch().layers.into_iter().map(|l| l.name).collect(),
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_round_trip() {
        for (name, _) in PRESETS {
            let c = Config::resolve(name).unwrap();
            assert!(crate::models::ZOO.contains(&c.model.as_str()), "{name}");
            assert_eq!(Config::parse(&c.to_toml(), "round trip").unwrap(), c);
        }
    }

    #[test]
    fn imported_weights_are_saved_with_the_config() {
        let mut c = Config::resolve("lenet").unwrap();
        assert!(!c.to_toml().contains("weights"));
        c.weights = Some("seed/lenet_iter_10000.caffemodel".into());
        let text = c.to_toml();
        assert!(
            text.contains("weights = \"seed/lenet_iter_10000.caffemodel\""),
            "{text}"
        );
        assert_eq!(Config::parse(&text, "round trip").unwrap(), c);
    }

    #[test]
    fn older_run_folders_configs_still_load() {
        // Written before session 4, whose refinement no longer reads refine_candidates.
        let text = include_str!("../searches/lenet-mnist-floor0.99-session2/config.toml");
        let c = Config::parse(text, "config.toml").unwrap();
        assert_eq!(c.search.refine_candidates, Some(4000));
        assert!(!c.to_toml().contains("refine_candidates"));
    }

    #[test]
    fn unknown_names_and_bad_values_are_explained() {
        let e = format!("{:#}", Config::resolve("vgg").unwrap_err());
        assert!(
            e.contains("unknown model \"vgg\"") && e.contains("lenet-300-100"),
            "{e}"
        );
        let text_ok = include_str!("../configs/lenet.toml");
        let text = text_ok.replace("base_lr = 0.01", "base_lr = -1");
        let e = format!("{:#}", Config::parse(&text, "x.toml").unwrap_err());
        assert!(e.contains("x.toml") && e.contains("base_lr"), "{e}");
        let e = format!(
            "{:#}",
            Config::parse(
                &format!("{text_ok}\n[search]\nrefine_push = 1.5\n"),
                "x.toml"
            )
            .unwrap_err()
        );
        assert!(e.contains("search.refine_push"), "{e}");
        let e = format!(
            "{:#}",
            Config::parse(
                &format!("{text_ok}\n[search]\nrefine_min_saving = 1.0\n"),
                "x.toml"
            )
            .unwrap_err()
        );
        assert!(e.contains("search.refine_min_saving"), "{e}");
        let e = format!("{:#}", Config::resolve("/nonexistent/c.toml").unwrap_err());
        assert!(e.contains("cannot read config file"), "{e}");
    }
}
