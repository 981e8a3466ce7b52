//! Command-line flags (clap), turned once into typed, validated settings ([`Mode`]);
//! nothing past [`Cli::into_mode`] sees the parser.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::compress::prune::PruneRule;
use crate::compress::{BiasPrecision, CompressConfig, Plan, Schedule};
use crate::config::Config;
use crate::data::{self, DatasetName};
use crate::masked::CentroidGrad;
use crate::runtime::{self, Runtime};

#[derive(Debug, Parser)]
#[command(
    name = "dc-search",
    version,
    about = "Deep Compression with an automatic per-layer sparsity search under an accuracy floor",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The search: a preset (lenet, lenet-300-100) or a path to a .toml config.
    model: Option<String>,
    #[command(flatten)]
    search: SearchFlags,
}

/// Flags of the default command, the search.
#[derive(Debug, Clone, Args)]
struct SearchFlags {
    /// Accuracy floor in (0, 1]: the decoded file's validation accuracy must reach it.
    #[arg(long)]
    floor: Option<String>,
    /// Time budget in minutes (default: the config's search.budget_minutes).
    #[arg(long)]
    budget: Option<f64>,
    /// Run folder (default searches/<model>-<dataset>-floor<F>).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the dense model with the config's recipe (cached; --retrain to force).
    Train {
        /// A preset (lenet, lenet-300-100) or a path to a .toml config.
        model: String,
        /// Train even if a cached model exists.
        #[arg(long)]
        retrain: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Print validation and test accuracy of a dense model (trained first if needed) or of
    /// a compressed .dcz file (decoded first).
    Eval {
        /// A preset, a path to a .toml config, or a .dcz file.
        target: String,
        #[command(flatten)]
        common: Common,
    },
    /// Prune, retrain, share weights, retrain the codebooks and write a .dcz file.
    Compress {
        /// A preset (lenet, lenet-300-100) or a path to a .toml config.
        model: String,
        /// Sparse ratio per layer (fraction removed), in layer order (0.33,0.8,0.9,0.8) or by
        /// name (conv1=0.33,fc1=0.9; unnamed layers 0).
        #[arg(long, conflicts_with = "quality")]
        ratios: Option<String>,
        /// Han 2015 rule instead: threshold = quality × std per layer (same list syntax).
        #[arg(long)]
        quality: Option<String>,
        /// Weight bits per layer (k = 2^bits clusters), same list syntax (unnamed layers 8).
        #[arg(long)]
        bits: String,
        /// The compressed file to write.
        #[arg(long, short)]
        output: PathBuf,
        #[command(flatten)]
        tune: Tune,
        #[command(flatten)]
        common: Common,
    },
    /// Sensitivity sweep: each layer pruned alone at each ratio of the grid, no retraining.
    Sensitivity {
        /// A preset (lenet, lenet-300-100) or a path to a .toml config.
        model: String,
        /// Output folder for sensitivity.csv and sensitivity.svg.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Benchmarks: `bench sensitivity <model>` times the naive and the fast sweep.
    Bench {
        /// What to time: sensitivity.
        what: String,
        /// A preset (lenet, lenet-300-100) or a path to a .toml config.
        model: String,
        #[command(flatten)]
        common: Common,
    },
    /// Print a compressed file's layer table (like the paper's Table 3) and byte account.
    Inspect {
        /// A .dcz file.
        file: PathBuf,
    },
}

/// Overrides of the config's `[compress]` section.
#[derive(Debug, Clone, Args)]
pub struct Tune {
    /// all-at-once or layer-wise (the seed's: one more layer pruned per stage).
    #[arg(long, value_enum)]
    schedule: Option<Schedule>,
    /// Retraining epochs after each pruning stage.
    #[arg(long)]
    prune_epochs: Option<f64>,
    /// Codebook retraining epochs.
    #[arg(long)]
    codebook_epochs: Option<f64>,
    /// Retraining learning rate as a fraction of the dense recipe's (paper: 0.1).
    #[arg(long)]
    lr_scale: Option<f64>,
    /// How a centroid's gradient aggregates its members': sum (paper) or mean (seed).
    #[arg(long, value_enum)]
    centroid_grad: Option<CentroidGrad>,
    /// Bias precision in the file: f32 or f16.
    #[arg(long, value_enum)]
    bias_precision: Option<BiasPrecision>,
}

/// Flags of every command that computes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Intra-op threads for libtorch (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of initialisation, batch order and every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Folder holding the four IDX files (default: where scripts/setup.sh put them; also
    /// DC_SEARCH_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Dataset, overriding the config's.
    #[arg(long, value_enum)]
    dataset: Option<DatasetName>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// What to run, with validated settings.
#[derive(Debug)]
pub enum Mode {
    Train {
        cfg: Config,
        rt: Runtime,
        retrain: bool,
    },
    Eval {
        cfg: Config,
        rt: Runtime,
    },
    EvalFile {
        file: PathBuf,
        rt: Runtime,
        data_dir: Option<PathBuf>,
    },
    Compress {
        cfg: Config,
        rt: Runtime,
        plan: Plan,
        output: PathBuf,
    },
    Inspect {
        file: PathBuf,
    },
    Search {
        cfg: Config,
        rt: Runtime,
        floor: f64,
        out: PathBuf,
        command: String,
    },
    Sensitivity {
        cfg: Config,
        rt: Runtime,
        out: PathBuf,
    },
    BenchSensitivity {
        cfg: Config,
        rt: Runtime,
    },
}

/// Parses the floor: a fraction in (0, 1].
pub fn parse_floor(s: &str) -> Result<f64> {
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        Ok(f) => anyhow::bail!(
            "--floor {f}: give the accuracy floor as a fraction in (0, 1], e.g. --floor 0.99"
        ),
        Err(_) => anyhow::bail!(
            "--floor {s:?} is not a number: give a fraction in (0, 1], e.g. --floor 0.99"
        ),
    }
}

/// Parses the process arguments (clap prints usage errors and exits).
pub fn parse() -> Cli {
    Cli::parse()
}

impl Tune {
    fn apply(&self, c: &mut CompressConfig) -> Result<()> {
        if let Some(s) = self.schedule {
            c.schedule = s;
        }
        for (flag, v, slot) in [
            ("--prune-epochs", self.prune_epochs, &mut c.prune_epochs),
            (
                "--codebook-epochs",
                self.codebook_epochs,
                &mut c.codebook_epochs,
            ),
        ] {
            if let Some(v) = v {
                if !(v >= 0.0 && v.is_finite()) {
                    anyhow::bail!("{flag} {v}: give a number of epochs, 0 or more");
                }
                *slot = v;
            }
        }
        if let Some(v) = self.lr_scale {
            if !(v > 0.0 && v.is_finite()) {
                anyhow::bail!(
                    "--lr-scale {v}: give a positive fraction of the dense learning rate"
                );
            }
            c.lr_scale = v;
        }
        if let Some(g) = self.centroid_grad {
            c.centroid_grad = g;
        }
        if let Some(b) = self.bias_precision {
            c.bias_precision = b;
        }
        Ok(())
    }
}

/// A .dcz path (by extension, or by its magic for other names).
fn is_dcz(target: &str) -> bool {
    let p = std::path::Path::new(target);
    p.extension().is_some_and(|e| e == "dcz")
        || std::fs::read(p)
            .map(|b| b.starts_with(&crate::format::MAGIC))
            .unwrap_or(false)
}

/// Refuses an output whose folder cannot be created or written, before any work starts.
/// Creates nothing: the folder is made when the first result is written, so a run that
/// fails on its inputs leaves no trace.
pub fn check_output(path: &std::path::Path) -> Result<()> {
    let fix = "(choose a writable place)";
    if path.is_dir() {
        anyhow::bail!(
            "output {} is a folder: give a file name in it {fix}",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The nearest folder that exists must be a folder and writable.
    let mut existing = dir.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = std::path::Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        anyhow::bail!(
            "cannot create output folder {}: {} is a file, not a folder {fix}",
            dir.display(),
            existing.display()
        );
    }
    tempfile::tempfile_in(existing).map_err(|e| {
        if existing == dir {
            anyhow::anyhow!("output folder {} is not writable: {e} {fix}", dir.display())
        } else {
            anyhow::anyhow!(
                "cannot create output folder {}: {} is not writable: {e} {fix}",
                dir.display(),
                existing.display()
            )
        }
    })?;
    Ok(())
}

/// Parses a per-layer list: `a,b,c` in layer order or `name=a,name=b` (others `default`).
pub fn per_layer<T: std::str::FromStr + Copy>(
    s: &str,
    names: &[String],
    default: T,
    flag: &str,
) -> Result<Vec<T>> {
    let items: Vec<&str> = s.split(',').map(str::trim).collect();
    let parse = |v: &str| -> Result<T> {
        v.parse::<T>()
            .map_err(|_| anyhow::anyhow!("{flag}: {v:?} is not a valid number"))
    };
    if items.iter().any(|i| i.contains('=')) {
        let mut out = vec![default; names.len()];
        for item in items {
            let Some((name, v)) = item.split_once('=') else {
                anyhow::bail!("{flag}: mix of named and positional values in {s:?}; use one style");
            };
            let Some(i) = names.iter().position(|n| n == name.trim()) else {
                anyhow::bail!(
                    "{flag}: no layer {:?}; the layers are {}",
                    name.trim(),
                    names.join(", ")
                );
            };
            out[i] = parse(v.trim())?;
        }
        return Ok(out);
    }
    if items.len() != names.len() {
        anyhow::bail!(
            "{flag}: {} values given for {} layers ({}); give one per layer or name them (layer=value)",
            items.len(),
            names.len(),
            names.join(", ")
        );
    }
    items.into_iter().map(parse).collect()
}

impl Common {
    fn runtime(&self) -> Result<Runtime> {
        if self.threads == Some(0) {
            anyhow::bail!("--threads 0: give at least 1");
        }
        Ok(Runtime {
            device: runtime::parse_device(&self.device)?,
            seed: self.seed,
            threads: self.threads,
            quiet: self.quiet,
        })
    }

    fn resolve(&self, model: &str) -> Result<(Config, Runtime)> {
        let mut cfg = Config::resolve(model)?;
        if let Some(d) = self.dataset {
            cfg.data.dataset = d;
        }
        if let Some(dir) = data::dir_from_env(self.data_dir.clone()) {
            cfg.data.dir = Some(dir);
        }
        Ok((cfg, self.runtime()?))
    }
}

impl Cli {
    /// Validates the flags into a [`Mode`].
    pub fn into_mode(self) -> Result<Mode> {
        match self.command {
            Some(Command::Train {
                model,
                retrain,
                common,
            }) => {
                let (cfg, rt) = common.resolve(&model)?;
                Ok(Mode::Train { cfg, rt, retrain })
            }
            Some(Command::Eval { target, common }) => {
                if is_dcz(&target) {
                    let rt = common.runtime()?;
                    return Ok(Mode::EvalFile {
                        file: target.into(),
                        rt,
                        data_dir: data::dir_from_env(common.data_dir),
                    });
                }
                let (cfg, rt) = common.resolve(&target)?;
                Ok(Mode::Eval { cfg, rt })
            }
            Some(Command::Compress {
                model,
                ratios,
                quality,
                bits,
                output,
                tune,
                common,
            }) => {
                let (mut cfg, rt) = common.resolve(&model)?;
                tune.apply(&mut cfg.compress)?;
                let names: Vec<String> = cfg.arch().layers.iter().map(|l| l.name.clone()).collect();
                let rules = match (ratios, quality) {
                    (Some(r), _) => per_layer::<f64>(&r, &names, 0.0, "--ratios")?
                        .into_iter()
                        .map(PruneRule::SparseRatio)
                        .collect(),
                    (None, Some(q)) => per_layer::<f64>(&q, &names, 0.0, "--quality")?
                        .into_iter()
                        .map(PruneRule::Quality)
                        .collect(),
                    (None, None) => anyhow::bail!(
                        "give --ratios (or --quality) per layer, e.g. --ratios 0.33,0.8,0.9,0.8"
                    ),
                };
                let plan = Plan {
                    rules,
                    bits: per_layer::<u8>(&bits, &names, 8, "--bits")?,
                };
                plan.check(&names)?;
                check_output(&output)?;
                Ok(Mode::Compress {
                    cfg,
                    rt,
                    plan,
                    output,
                })
            }
            Some(Command::Inspect { file }) => Ok(Mode::Inspect { file }),
            Some(Command::Sensitivity { model, out, common }) => {
                let (cfg, rt) = common.resolve(&model)?;
                check_output(&out.join("sensitivity.csv"))?;
                Ok(Mode::Sensitivity { cfg, rt, out })
            }
            Some(Command::Bench {
                what,
                model,
                common,
            }) => {
                if what != "sensitivity" {
                    anyhow::bail!("bench {what:?}: the benchmarks are `bench sensitivity <model>` (the search times itself per stage in report.md)");
                }
                let (cfg, rt) = common.resolve(&model)?;
                Ok(Mode::BenchSensitivity { cfg, rt })
            }
            None => {
                let Some(model) = self.model else {
                    anyhow::bail!(
                        "no model given: try `dc-search --floor 0.99 lenet` or `dc-search --help`"
                    );
                };
                let Some(floor) = self.search.floor else {
                    anyhow::bail!(
                        "the search needs --floor, e.g. `dc-search --floor 0.99 {model}`"
                    );
                };
                let floor = parse_floor(&floor)?;
                let (mut cfg, rt) = self.search.common.resolve(&model)?;
                if let Some(b) = self.search.budget {
                    if !(b > 0.0 && b.is_finite()) {
                        anyhow::bail!("--budget {b}: give the time budget in minutes, more than 0");
                    }
                    cfg.search.budget_minutes = b;
                }
                let out = self.search.out.unwrap_or_else(|| {
                    PathBuf::from("searches").join(format!(
                        "{}-{}-floor{floor}",
                        cfg.model,
                        cfg.data.dataset.as_str()
                    ))
                });
                check_output(&out.join("report.md"))?;
                let command = std::env::args().collect::<Vec<_>>().join(" ");
                Ok(Mode::Search {
                    cfg,
                    rt,
                    floor,
                    out,
                    command,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["conv1", "conv2", "fc1", "fc2"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn per_layer_lists_by_order_and_by_name() {
        assert_eq!(
            per_layer::<f64>("0.33,0.8,0.9,0.8", &names(), 0.0, "--ratios").unwrap(),
            vec![0.33, 0.8, 0.9, 0.8]
        );
        assert_eq!(
            per_layer::<u8>("fc1=5, conv1=8", &names(), 8, "--bits").unwrap(),
            vec![8, 8, 5, 8]
        );
        let e = per_layer::<f64>("0.1,0.2", &names(), 0.0, "--ratios")
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 values given for 4 layers"), "{e}");
        let e = per_layer::<f64>("fc9=0.1", &names(), 0.0, "--ratios")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no layer \"fc9\""), "{e}");
        let e = per_layer::<u8>("8,8,abc,5", &names(), 8, "--bits")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"abc\" is not a valid number"), "{e}");
        assert!(per_layer::<u8>("8,8,300,5", &names(), 8, "--bits").is_err());
    }

    #[test]
    fn floors_outside_zero_one_are_refused() {
        assert_eq!(parse_floor("0.99").unwrap(), 0.99);
        assert_eq!(parse_floor("1").unwrap(), 1.0);
        for bad in ["0", "1.5", "NaN", "abc", "-0.2", "inf"] {
            let e = parse_floor(bad).unwrap_err().to_string();
            assert!(e.contains("--floor") && e.contains("(0, 1]"), "{bad}: {e}");
        }
    }
}
