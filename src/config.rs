//! Run configuration: a preset (`models::registry::PRESETS`, compiled from `configs/*.toml`)
//! or a TOML file given by path; each section checks its own ranges. The resolved config is
//! saved beside results.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::compress::{CompressConfig, RetrainLr};
use crate::data::DataConfig;
use crate::models::torchscript::TorchScriptConfig;
use crate::models::{registry, Arch};
use crate::search::config::SearchConfig;
use crate::train::Recipe;

/// Everything that determines a run, as read from a preset or file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A zoo model name (`models::registry::MODELS`), or with `[torchscript]` the name the
    /// TorchScript model's files carry.
    pub model: String,
    /// Dense weights imported from a file (`.caffemodel` or `.safetensors`, `--weights`)
    /// instead of trained with `[train]`'s recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<std::path::PathBuf>,
    /// The validation accuracy a brought model (TorchScript, `--weights`) is known to reach:
    /// one more than 5 points under it stops at once, naming the normalisation; 0 turns off
    /// the check that stops a brought model scoring near chance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_accuracy: Option<f64>,
    /// A TorchScript module instead of a zoo model (its section names the module file,
    /// input shape and compressible layers; see `models::torchscript`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torchscript: Option<TorchScriptConfig>,
    pub data: DataConfig,
    /// The dense training recipe (a TorchScript config may leave it out: it then retrains
    /// with `Recipe::retraining_default` at the rate of a range test, `retrain_lr`).
    pub train: Recipe,
    /// How compression retrains (defaults when absent).
    #[serde(default)]
    pub compress: CompressConfig,
    /// How the automatic search spends its budget (defaults when absent).
    #[serde(default)]
    pub search: SearchConfig,
}

/// Most threads libtorch is asked for (`--threads`).
pub const MAX_THREADS: usize = 1024;

/// One line for a TOML syntax or type error: the message, then the line and column and the
/// text of that line (never the multi-line snippet the parser draws).
fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("").trim();
    format!("{message} (line {line}, column {column}: `{line_text}`)")
}

impl Config {
    /// Resolves a preset name or a path to a TOML config.
    pub fn resolve(name_or_path: &str) -> Result<Config> {
        if let Some(text) = registry::preset(name_or_path) {
            return Config::parse(text, &format!("preset {name_or_path}"));
        }
        let path = Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") || path.exists() {
            let bytes =
                crate::paths::read_regular(path, "config file", crate::paths::MAX_TEXT_BYTES)?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("config file {} is not UTF-8 text", path.display()))?;
            let mut cfg = Config::parse(&text, &path.display().to_string())?;
            let folder = path.parent().unwrap_or(Path::new(""));
            // A data path is relative to the config file, like the module's.
            if let Some(p) = cfg.data.path.as_mut().filter(|p| p.is_relative()) {
                *p = folder.join(&*p);
            }
            if let Some(ts) = cfg.torchscript.as_mut() {
                // A TorchScript module path is relative to the config file.
                if let Some(m) = ts.module.as_mut().filter(|m| m.is_relative()) {
                    *m = path.parent().unwrap_or(Path::new("")).join(&*m);
                }
                ts.origin = Some(crate::models::origin::of_config(path, text.as_bytes()));
            }
            return Ok(cfg);
        }
        bail!(
            "unknown model {name_or_path:?}: give a preset ({}) or a path to a .toml config",
            registry::preset_names()
        )
    }

    /// Parses and checks a TOML config; `source` names it in errors, each on one line
    /// naming the key, its allowed range (or the syntax problem and its position) and
    /// `source`.
    pub fn parse(text: &str, source: &str) -> Result<Config> {
        // A TorchScript model comes trained: without `[train]` it retrains with
        // `Recipe::retraining_default`, appended so that error positions stay the user's,
        // and its retraining learning rate comes from a range test unless `retrain_lr` says
        // otherwise.
        let with_recipe;
        let mut untrained = false;
        let text = match toml::from_str::<toml::Table>(text) {
            Ok(t) if t.contains_key("torchscript") && !t.contains_key("train") => {
                let recipe =
                    toml::to_string(&Recipe::retraining_default()).expect("a recipe serialises");
                with_recipe = format!("{text}\n[train]\n{recipe}");
                untrained = true;
                with_recipe.as_str()
            }
            _ => text,
        };
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!("{source}: invalid config: {}", toml_error_line(text, &e))
        })?;
        if untrained {
            cfg.search.retrain_lr.get_or_insert(RetrainLr::Auto);
            cfg.compress.retrain_lr.get_or_insert(RetrainLr::Auto);
        }
        cfg.check()
            .with_context(|| format!("{source}: invalid config"))?;
        Ok(cfg)
    }

    /// Range-checks every setting, section by section.
    pub fn check(&self) -> Result<()> {
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
                if ts.input_shift != 0.0
                    && (self.data.mean.is_some() || self.data.input_shift != 0.0)
                {
                    bail!(
                        "torchscript.input_shift and [data] mean/std or input_shift both shift the \
                         inputs: give the normalisation once, in [data]"
                    );
                }
            }
        }
        if let Some(e) = self.expected_accuracy {
            crate::check::need(
                (0.0..=1.0).contains(&e),
                "expected_accuracy",
                e,
                "[0, 1] (a validation accuracy; 0 = no check)",
            )?;
        }
        self.data.check()?;
        self.train.check()?;
        self.compress.check()?;
        self.search.check()
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

    /// Each compressible layer's weight as the model's state dict names it
    /// (`conv1.weight`; a TorchScript module's parameter, e.g. `features.0.weight`).
    pub fn layer_weights(&self) -> Vec<String> {
        match &self.torchscript {
            Some(ts) => ts.layers.iter().map(|l| l.weight.clone()).collect(),
            None => self
                .layer_names()
                .into_iter()
                .map(|n| format!("{n}.weight"))
                .collect(),
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::config::Auto;

    /// `docs/config.md`'s keys by section (`""` for the top level): each row `| `key` | …`
    /// under the row `| **`[section]`** | …` that opens its section.
    fn documented_keys() -> Vec<(String, String)> {
        let mut section = String::new();
        let mut keys = Vec::new();
        for line in include_str!("../docs/config.md").lines() {
            if let Some(rest) = line.strip_prefix("| **`[") {
                section = rest.split(']').next().unwrap().to_string();
            } else if let Some(rest) = line.strip_prefix("| `") {
                keys.push((section.clone(), rest.split('`').next().unwrap().to_string()));
            }
        }
        keys
    }

    /// A config with every optional key set, so that every key serialises.
    fn every_key_set() -> Config {
        let mut c = Config::resolve("lenet").unwrap();
        c.weights = Some("w.safetensors".into());
        c.expected_accuracy = Some(0.9);
        let ts = "module = \"m.pt\"\ninput_shape = [3, 32, 32]\ninput_shift = 0.5\n\
                  layers = [{ name = \"conv1\", weight = \"conv1.weight\", bias = \"conv1.bias\" }]";
        c.torchscript = Some(toml::from_str(ts).unwrap());
        let d = &mut c.data;
        d.path = Some("d.npz".into());
        d.layout = Some(crate::data::Layout::Nhwc);
        d.input_shift = 0.5;
        d.mean = Some(vec![0.5]);
        d.std = Some(vec![0.25]);
        d.dir = Some("idx".into());
        d.validation_from = crate::data::ValidationFrom::Test;
        c.train.augment_flip = true;
        c.compress.retrain_lr = Some(RetrainLr::Auto);
        c.search.retrain_lr = Some(RetrainLr::Auto);
        c
    }

    /// `docs/config.md` and the config structs agree on every key: each key a config can
    /// hold is documented in its section, and each documented key is one the config takes
    /// there (set alone in a preset, it is never an unknown field).
    #[test]
    fn docs_and_the_config_agree_on_every_key() {
        let documented = documented_keys();
        let value: toml::Value = toml::from_str(&every_key_set().to_toml()).unwrap();
        let mut keys = Vec::new();
        for (k, v) in value.as_table().unwrap() {
            match v.as_table() {
                Some(t) => keys.extend(t.keys().map(|key| (k.clone(), key.clone()))),
                None => keys.push((String::new(), k.clone())),
            }
        }
        for (section, key) in &keys {
            assert!(
                documented.contains(&(section.clone(), key.clone())),
                "[{section}] {key} is not in docs/config.md"
            );
        }
        for preset in registry::PRESETS.map(|p| p.name) {
            let value: toml::Value =
                toml::from_str(&Config::resolve(preset).unwrap().to_toml()).unwrap();
            for (k, v) in value.as_table().unwrap() {
                for key in v
                    .as_table()
                    .map_or(vec![k.clone()], |t| t.keys().cloned().collect())
                {
                    let section = if v.is_table() {
                        k.clone()
                    } else {
                        String::new()
                    };
                    assert!(
                        documented.contains(&(section, key.clone())),
                        "{preset}: {k} {key}"
                    );
                }
            }
        }
        let base: toml::Table =
            toml::from_str(&Config::resolve("lenet").unwrap().to_toml()).unwrap();
        for (section, key) in &documented {
            let mut t = base.clone();
            let target = if section.is_empty() {
                &mut t
            } else {
                t.entry(section.clone())
                    .or_insert(toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .unwrap()
            };
            target.insert(key.clone(), toml::Value::Integer(0));
            if let Err(e) = Config::parse(&toml::to_string(&t).unwrap(), "docs") {
                let e = format!("{e:#}");
                assert!(
                    !e.contains("unknown field"),
                    "docs/config.md lists [{section}] {key}, which a config does not take: {e}"
                );
            }
        }
    }

    #[test]
    fn presets_parse_and_round_trip() {
        for name in registry::PRESETS.map(|p| p.name) {
            let c = Config::resolve(name).unwrap();
            assert!(registry::arch(&c.model).is_ok(), "{name}");
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
    fn a_torchscript_config_needs_no_train_section() {
        let text = include_str!("../tests/fixtures/torchscript/tiny-cnn.toml");
        let (head, rest) = text.split_once("[train]").unwrap();
        let (_, tail) = rest.split_once("[compress]").unwrap();
        let without = format!("{head}[compress]{tail}");
        let c = Config::parse(&without, "tiny-cnn.toml").unwrap();
        assert_eq!(c.train, Recipe::retraining_default());
        assert!(c.train.check().is_ok());
        // Its retraining learning rate comes from the range test…
        assert_eq!(c.search.retrain_lr, Some(RetrainLr::Auto));
        assert_eq!(c.compress.retrain_lr, Some(RetrainLr::Auto));
        // …unless the config says otherwise.
        let fixed = format!("{without}\n[search]\nretrain_lr = \"recipe\"\n");
        let f = Config::parse(&fixed, "tiny-cnn.toml").unwrap();
        assert_eq!(f.search.retrain_lr, Some(RetrainLr::Recipe));
        assert_eq!(f.compress.retrain_lr, Some(RetrainLr::Auto));
        let e = format!(
            "{:#}",
            Config::parse(&fixed.replace("\"recipe\"", "\"fast\""), "x.toml").unwrap_err()
        );
        assert!(e.contains("retrain_lr") && e.contains("\"auto\""), "{e}");
        // It round-trips with the recipe written out.
        assert_eq!(Config::parse(&c.to_toml(), "round trip").unwrap(), c);
        // A zoo config (or one with `[train]`) keeps the recipe's rate.
        let zoo = Config::resolve("lenet").unwrap();
        assert_eq!(
            (zoo.search.retrain_lr, zoo.compress.retrain_lr),
            (None, None)
        );
        // A zoo model still needs its dense recipe.
        let zoo = "model = \"lenet\"\n[data]\ndataset = \"mnist\"\nvalidation = 5000\nsplit_seed = 1\ninput_scale = 0.00390625\n";
        let e = Config::parse(zoo, "zoo.toml").unwrap_err().to_string();
        assert!(e.contains("train"), "{e}");
        // Errors still point at the user's lines.
        let bad = without.replace("validation = 5000", "validation = 0");
        let e = format!("{:#}", Config::parse(&bad, "tiny-cnn.toml").unwrap_err());
        assert!(e.contains("data.validation"), "{e}");
    }

    #[test]
    fn older_run_folders_configs_still_load() {
        // A v0.1 run folder's config: the refinement no longer reads refine_candidates.
        let text = include_str!("../tests/fixtures/configs/older-run.toml");
        let c = Config::parse(text, "config.toml").unwrap();
        assert_eq!(c.search.refine_candidates, Some(4000));
        assert!(!c.to_toml().contains("refine_candidates"));
    }

    /// One row per setting: a value outside its range is refused when the config is read,
    /// in one line naming the key, its range and the file.
    #[test]
    fn every_setting_is_range_checked() {
        type Row = (&'static str, &'static str, fn(&mut Config));
        let rows: &[Row] = &[
            ("data.validation", "1..=1000000", |c| c.data.validation = 0),
            ("data.input_scale", "(0, 1e6]", |c| {
                c.data.input_scale = Some(0.0)
            }),
            ("data.input_scale", "(0, 1e6]", |c| {
                c.data.input_scale = Some(1e30)
            }),
            ("train.base_lr", "positive", |c| c.train.base_lr = 0.0),
            ("train.momentum", "[0, 1)", |c| c.train.momentum = 1.0),
            ("train.weight_decay", "[0, 1]", |c| {
                c.train.weight_decay = -0.1
            }),
            ("train.gamma", "[0, 1e6]", |c| c.train.gamma = -1.0),
            ("train.power", "[0, 1000]", |c| c.train.power = f64::NAN),
            ("train.batch_size", "1..=1000000", |c| {
                c.train.batch_size = 0
            }),
            ("train.iterations", "1..=10000000", |c| {
                c.train.iterations = 0
            }),
            ("train.iterations", "1..=10000000", |c| {
                c.train.iterations = 1 << 40
            }),
            ("train.bias_lr_mult", "[0, 1000]", |c| {
                c.train.bias_lr_mult = -2.0
            }),
            ("train.augment_shift", "0..=14", |c| {
                c.train.augment_shift = 15
            }),
            ("train.augment_rotate", "[0, 180]", |c| {
                c.train.augment_rotate = 200.0
            }),
            ("train.augment_scale", "[0, 1)", |c| {
                c.train.augment_scale = 1.0
            }),
            ("compress.prune_epochs", "[0, 10000]", |c| {
                c.compress.prune_epochs = -1.0
            }),
            ("compress.codebook_epochs", "[0, 10000]", |c| {
                c.compress.codebook_epochs = f64::INFINITY
            }),
            ("compress.lr_scale", "(0, 1000]", |c| {
                c.compress.lr_scale = 0.0
            }),
            ("compress.centroid_lr_scale", "(0, 1000]", |c| {
                c.compress.centroid_lr_scale = -1.0
            }),
            ("compress.kmeans_iters", "1..=100000", |c| {
                c.compress.kmeans_iters = 0
            }),
            ("compress.gradual_steps", "1..=1000", |c| {
                c.compress.gradual_steps = 0
            }),
            ("compress.gradual_ramp", "[0, 1]", |c| {
                c.compress.gradual_ramp = 1.5
            }),
            ("search.margin", "[0, 0.5]", |c| {
                c.search.margin = Auto::Is(-0.001)
            }),
            ("search.recovery_gap", "[0, 0.5]", |c| {
                c.search.recovery_gap = 2.0
            }),
            ("search.probe_epochs", "(0, 10000]", |c| {
                c.search.probe_epochs = Auto::Is(0.0)
            }),
            ("search.final_epochs", "[0, 10000]", |c| {
                c.search.final_epochs = -3.0
            }),
            ("search.second_look", "[0, 0.5]", |c| {
                c.search.second_look = Auto::Is(-0.1)
            }),
            ("search.climb_factor", "(1, 100]", |c| {
                c.search.climb_factor = 1.0
            }),
            ("search.bisection_tolerance", "(0, 10]", |c| {
                c.search.bisection_tolerance = 0.0
            }),
            ("search.bisect_share", "(0, 1]", |c| {
                c.search.bisect_share = 1.5
            }),
            ("search.refine_share", "(0, 1]", |c| {
                c.search.refine_share = 0.0
            }),
            ("search.bits_share", "(0, 1]", |c| {
                c.search.bits_share = -1.0
            }),
            ("search.bits_probes", "1..=100", |c| {
                c.search.bits_probes = 0
            }),
            ("search.near_miss_shrink", "(0, 1]", |c| {
                c.search.near_miss_shrink = 0.0
            }),
            ("search.bits_candidates", "1..=20", |c| {
                c.search.bits_candidates = 0
            }),
            ("search.bits_epochs", "(0, 10000]", |c| {
                c.search.bits_epochs = Auto::Is(0.0)
            }),
            ("search.lr_scale", "(0, 1000]", |c| c.search.lr_scale = 0.0),
            ("search.retrain_lr", "(0, 10]", |c| {
                c.search.retrain_lr = Some(RetrainLr::Value(0.0))
            }),
            ("compress.retrain_lr", "(0, 10]", |c| {
                c.compress.retrain_lr = Some(RetrainLr::Value(20.0))
            }),
            ("search.budget_minutes", "[0, 1e6]", |c| {
                c.search.budget_minutes = -1.0
            }),
            ("search.budget_probes", "0..=1000000", |c| {
                c.search.budget_probes = 1 << 40
            }),
            ("search.bisection_probes", "1..=1000", |c| {
                c.search.bisection_probes = 0
            }),
            ("search.refine_probes", "0..=100000", |c| {
                c.search.refine_probes = 1 << 40
            }),
            ("search.refine_push", "(0, 1)", |c| {
                c.search.refine_push = 1.5
            }),
            ("search.refine_min_push", "(0, 1)", |c| {
                c.search.refine_min_push = 0.0
            }),
            ("search.refine_min_saving", "[0, 1)", |c| {
                c.search.refine_min_saving = 1.0
            }),
            ("search.l0_epochs", "(0, 10000]", |c| {
                c.search.l0_epochs = Some(0.0)
            }),
            ("search.l0_lambda", "(0, 1000000]", |c| {
                c.search.l0_lambda = Some(-5.0)
            }),
            ("search.l0_lr", "(0, 1]", |c| c.search.l0_lr = Some(2.0)),
            ("search.l0_gate_lr", "(0, 10]", |c| {
                c.search.l0_gate_lr = Some(f64::NAN)
            }),
            ("search.l0_tries", "1..=16", |c| c.search.l0_tries = Some(0)),
            ("search.bits_min", "1..=16", |c| c.search.bits_min = 0),
            ("search.bits_max", "1..=16", |c| c.search.bits_max = 64),
            ("search.provisional_bits", "1..=16", |c| {
                c.search.provisional_bits = 17
            }),
            ("search.bits_min", "1..=search.bits_max (3)", |c| {
                c.search.bits_min = 5;
                c.search.bits_max = 3;
            }),
            ("search.max_ratio", "(0, 1)", |c| c.search.max_ratio = 1.0),
            ("search.grid", "strictly increasing", |c| {
                c.search.grid = vec![0.5, 0.2]
            }),
            ("search.grid", "[0, 1)", |c| c.search.grid = vec![0.0, 1.0]),
            ("search.grid", "1 to 1000", |c| c.search.grid = vec![]),
        ];
        for (key, range, set) in rows {
            let mut c = Config::resolve("lenet").unwrap();
            set(&mut c);
            let e = format!("{:#}", Config::parse(&c.to_toml(), "x.toml").unwrap_err());
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(
                e.starts_with("x.toml: invalid config: ")
                    && e.contains(&format!("{key} = "))
                    && e.contains(range),
                "{key}: {e}"
            );
        }
    }

    #[test]
    fn the_sparsifier_is_read_from_the_search_section() {
        let mut c = Config::resolve("lenet").unwrap();
        // Written out only when it is not the default.
        assert!(!c.to_toml().contains("sparsifier"));
        c.search.sparsifier = crate::search::Sparsifier::L0;
        c.search.l0_lambda = Some(2.5);
        let text = c.to_toml();
        assert!(text.contains("sparsifier = \"l0\""), "{text}");
        let back = Config::parse(&text, "x.toml").unwrap();
        assert_eq!(back.search.sparsifier, crate::search::Sparsifier::L0);
        assert_eq!(back.search.gate_config().lambda, 2.5);
        assert_eq!(back.search.gate_config().epochs, 20.0);
        let e = format!(
            "{:#}",
            Config::parse(&text.replace("\"l0\"", "\"svd\""), "x.toml").unwrap_err()
        );
        assert!(e.contains("sparsifier") && e.contains("magnitude"), "{e}");
    }

    #[test]
    fn syntax_and_type_errors_are_one_line_with_key_and_position() {
        let text = "model = \"lenet\"\n[data]\nvalidation = \"many\"\n";
        let e = format!("{:#}", Config::parse(text, "x.toml").unwrap_err());
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(
            e.contains("x.toml") && e.contains("line 3, column 14") && e.contains("validation"),
            "{e}"
        );
        let e = format!("{:#}", Config::parse("model = \n", "y.toml").unwrap_err());
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("y.toml") && e.contains("line 1"), "{e}");
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
