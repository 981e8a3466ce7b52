//! Command-line flags (clap), turned once into typed, validated settings ([`Mode`]): each
//! subcommand's arguments are one struct with its own `into_mode`; nothing past
//! [`Cli::into_mode`] sees the parser.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::search::workers::ExecutorKind;
use crate::search::Floor;

use crate::compress::mask::CentroidGrad;
use crate::compress::prune::PruneRule;
use crate::compress::{BiasPrecision, CompressConfig, Plan, Schedule};
use crate::config::Config;
use crate::data::{self, DatasetName};
use crate::export::ExportFormat;
use crate::runtime::{self, Runtime};

/// Help of a model argument: `{what} (lenet, …) or a path to a .toml config`, the presets
/// named from the registry.
fn preset_help(what: &str) -> String {
    format!(
        "{what} ({}) or a path to a .toml config",
        crate::models::registry::preset_names()
    )
}

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
    #[arg(help = preset_help("The search: a preset"))]
    model: Option<String>,
    #[command(flatten)]
    search: SearchFlags,
}

/// Flags of the default command, the search.
#[derive(Debug, Clone, Args)]
struct SearchFlags {
    /// Accuracy floor in (0, 1]: the decoded file's validation accuracy must reach it.
    #[arg(long, conflicts_with = "max_drop")]
    floor: Option<String>,
    /// The floor relative to the dense model instead: its validation accuracy minus this
    /// many percentage points (e.g. 0.5; for datasets where 0.99 makes no sense).
    #[arg(long, value_name = "POINTS")]
    max_drop: Option<String>,
    /// Budget: ratio probes (`40p`) or a cap in minutes (`26`, `26m`); default the
    /// config's (8 × (layers + 1) ratio probes, no cap). Only a cap in minutes makes the
    /// result depend on the machine's speed.
    #[arg(long)]
    budget: Option<String>,
    /// Run folder (default runs/<model>-<dataset>-floor<F> or …-maxdrop<P>; a finished
    /// run's folder is not reused: the next free `-2`, `-3`, … is taken instead).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Probes side by side (default 1: one at a time, in this process): the search proposes
    /// up to N at once and each runs as `dc-search probe` (search.workers).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Which weights the search keeps: `magnitude` (the largest; the default) or `l0`
    /// (L0 gates trained from the dense model first, then magnitude on top of their
    /// zeros); search.sparsifier.
    #[arg(long, value_enum)]
    sparsifier: Option<crate::search::Sparsifier>,
    /// Where probes side by side run: `local` (child processes, the threads shared among
    /// them) or `slurm` (one array job per batch; the run folder must be on storage every
    /// node shares).
    #[arg(long, value_enum, default_value = "local")]
    executor: ExecutorKind,
    /// sbatch arguments for --executor slurm, e.g. "--partition gpu --time 30 --gres gpu:1".
    #[arg(
        long,
        value_name = "ARGS",
        allow_hyphen_values = true,
        default_value = ""
    )]
    slurm_args: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the dense model with the config's recipe (cached; --retrain to force).
    Train(TrainArgs),
    /// Print validation and test accuracy of a dense model (trained first if needed) or of
    /// a compressed .dcz file (decoded first).
    Eval(EvalArgs),
    /// Prune, retrain, share weights, retrain the codebooks and write a .dcz file.
    Compress(CompressArgs),
    /// Sensitivity sweep: each layer pruned alone at each ratio of the grid, no retraining.
    Sensitivity(SensitivityArgs),
    /// Benchmarks: `bench sensitivity <model>` times the naive and the fast sweep; `bench
    /// train <model>` times training steps against this machine's measured peak; `bench
    /// search lenet` compares search strategies on the synthetic oracle over many seeds.
    Bench(BenchArgs),
    /// Print a compressed file's layer table (like the paper's Table 3) and byte account.
    Inspect(InspectArgs),
    /// One probe from a spec file (for worker processes and cluster array jobs): prune or
    /// share from the spec's warm start, retrain, measure on validation; writes the result
    /// (JSON, and the checkpoint when the probe is feasible) atomically.
    Probe(ProbeArgs),
    /// Export for other tools: a .dcz file's decoded model as a PyTorch safetensors state
    /// dict, or a search's ratios.json as an NNI config_list, a Distiller schedule or CSV.
    Export(ExportArgs),
}

/// `train`: the model and whether to ignore the cache.
#[derive(Debug, Args)]
struct TrainArgs {
    #[arg(help = preset_help("A preset"))]
    model: String,
    /// Train even if a cached model exists.
    #[arg(long)]
    retrain: bool,
    #[command(flatten)]
    common: Common,
}

/// `eval`: a model or a .dcz file.
#[derive(Debug, Args)]
struct EvalArgs {
    /// A preset, a path to a .toml config, or a .dcz file.
    target: String,
    /// For a .dcz made from a TorchScript module: the config it was made with.
    #[arg(long, value_name = "TOML")]
    ts_config: Option<String>,
    #[command(flatten)]
    limit: Limit,
    #[command(flatten)]
    common: Common,
}

/// `compress`: the model, its per-layer plan and the file to write.
#[derive(Debug, Args)]
struct CompressArgs {
    #[arg(help = preset_help("A preset"))]
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
    /// Refuse to write the file when its decoded validation accuracy is more than this
    /// many percentage points under the dense model's (default 5; chance level is
    /// always refused).
    #[arg(long, value_name = "POINTS")]
    max_loss: Option<String>,
    #[command(flatten)]
    tune: Tune,
    #[command(flatten)]
    common: Common,
}

/// `sensitivity`: the model and where the sweep goes.
#[derive(Debug, Args)]
struct SensitivityArgs {
    #[arg(help = preset_help("A preset"))]
    model: String,
    /// Output folder for sensitivity.csv and sensitivity.svg.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    #[command(flatten)]
    common: Common,
}

/// `bench`: which benchmark, on which model, how long.
#[derive(Debug, Args)]
struct BenchArgs {
    /// What to measure: sensitivity, train or search.
    what: String,
    #[arg(help = preset_help("A preset"))]
    model: String,
    /// `bench train`: steps timed per measurement.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// `bench search`: seeds per strategy.
    #[arg(long, default_value_t = 200)]
    runs: u64,
    /// `bench search`: the accuracy floor.
    #[arg(long, default_value_t = 0.99)]
    floor: f64,
    /// `bench search`: seconds of one retraining epoch in the synthetic landscape
    /// (measure it with `bench train`).
    #[arg(long, default_value_t = 18.0)]
    epoch_seconds: f64,
    #[command(flatten)]
    common: Common,
}

/// `inspect`: the file.
#[derive(Debug, Args)]
struct InspectArgs {
    /// A .dcz file.
    file: PathBuf,
    #[command(flatten)]
    limit: Limit,
}

/// `probe`: a spec and where its result goes.
#[derive(Debug, Args)]
struct ProbeArgs {
    /// The probe's spec (JSON: the run's config, dense weights and their SHA-256, warm
    /// start, ratios or bits, epochs, seeds, threshold).
    #[arg(long, value_name = "SPEC.json")]
    spec: PathBuf,
    /// The result file (default: beside the spec, named by the spec's hash,
    /// `<sha256>.result.json`); a result of the same spec already there is not recomputed.
    #[arg(long, value_name = "RESULT.json")]
    out: Option<PathBuf>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Intra-op threads for libtorch (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Folder holding the four IDX files (default: the spec's config's, else where
    /// scripts/setup.sh put them; also DC_SEARCH_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
}

/// `export`: what to convert into what.
#[derive(Debug, Args)]
struct ExportArgs {
    /// A .dcz file (--to safetensors) or a ratios.json (--to nni|distiller|csv).
    input: PathBuf,
    /// What to write.
    #[arg(long, value_enum)]
    to: ExportFormat,
    /// Output file (required for safetensors; ratios print to stdout without it).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// For a .dcz made from a TorchScript module: the config it was made with (the export is
    /// then the module's whole state dict).
    #[arg(long, value_name = "TOML")]
    ts_config: Option<String>,
    /// The TorchScript module (.pt), overriding the --ts-config's torchscript.module.
    #[arg(long, value_name = "PT", requires = "ts_config")]
    torchscript: Option<PathBuf>,
    /// Put this before every module path of a ratio export: `module.` for a model wrapped in
    /// torch.nn.DataParallel (whose state dict names `module.features.0.weight`).
    #[arg(long, value_name = "PREFIX")]
    module_prefix: Option<String>,
    #[command(flatten)]
    limit: Limit,
}

/// How large a .dcz file's model may be.
#[derive(Debug, Clone, Args)]
pub struct Limit {
    /// Most dense weights (all layers together) a .dcz file may decode to (default 2^30).
    #[arg(long, value_name = "N")]
    max_params: Option<u64>,
}

impl Limit {
    fn get(&self) -> Result<u64> {
        match self.max_params {
            Some(0) => anyhow::bail!("--max-params 0: give at least 1 weight"),
            Some(n) => Ok(n),
            None => Ok(crate::format::MAX_TOTAL_DENSE),
        }
    }
}

/// Overrides of the config's `[compress]` section.
#[derive(Debug, Clone, Args)]
pub struct Tune {
    /// all-at-once, layer-wise (the seed's: one more layer pruned per stage) or gradual
    /// (Zhu & Gupta: cubic steps to the targets).
    #[arg(long, value_enum)]
    schedule: Option<Schedule>,
    /// Retraining epochs after each pruning stage.
    #[arg(long)]
    prune_epochs: Option<f64>,
    /// Codebook retraining epochs.
    #[arg(long)]
    codebook_epochs: Option<f64>,
    /// Retraining learning rate as a fraction of the dense recipe's (paper: 0.1); used
    /// with retrain_lr = recipe (the default but for a TorchScript config without [train]).
    #[arg(long)]
    lr_scale: Option<f64>,
    /// Where the retraining learning rate comes from: auto (a learning-rate range test on
    /// the validation split), recipe (the recipe's base_lr × lr_scale) or a number
    /// (`[compress] retrain_lr`).
    #[arg(long, value_name = "auto|recipe|LR")]
    retrain_lr: Option<String>,
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
    /// Seed of every random choice after the dense model: probes' batch order and
    /// augmentation, retraining, codebooks.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seed of the dense model's initialisation and training (the cache holds one model per
    /// seed), independent of --seed: searches with different --seed share one dense model.
    #[arg(long, default_value_t = 1)]
    dense_seed: u64,
    /// Folder holding the four IDX files (default: where scripts/setup.sh put them; also
    /// DC_SEARCH_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Built-in dataset, overriding the config's data.
    #[arg(long, value_enum)]
    dataset: Option<DatasetName>,
    /// Data from files, overriding the config's: a NumPy .npz (x_train, y_train, x_test,
    /// y_test, optionally x_val, y_val) or an image folder (train/<class>/*.png|jpg,
    /// test/<class>/…, optionally val/<class>/…).
    #[arg(long, value_name = "PATH", conflicts_with = "dataset")]
    data: Option<PathBuf>,
    /// How the .npz's 4-D image arrays' axes go: nchw (PyTorch's) or nhwc (channels last).
    #[arg(long, value_enum)]
    layout: Option<data::Layout>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
    /// Dense weights from a file instead of training: a Caffe .caffemodel or a PyTorch
    /// .safetensors state dict with the model's layer names (conv1.weight, conv1.bias, …).
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
    /// Hold the validation images out of the training set (default) or out of the test set
    /// (for imported weights trained on every training image; the test set is then the rest).
    #[arg(long, value_enum, value_name = "SET")]
    validation_from: Option<data::ValidationFrom>,
    /// The TorchScript module (.pt) of a config with a [torchscript] section, overriding
    /// its torchscript.module.
    #[arg(long, value_name = "PT")]
    torchscript: Option<PathBuf>,
}

/// Where the data to evaluate a file on comes from: `--data` (with `--layout`), else the
/// built-in data set the file names (from `--data-dir`, or set-up's folder).
#[derive(Debug, Clone, Default)]
pub struct FileData {
    pub path: Option<PathBuf>,
    pub layout: Option<data::Layout>,
    pub dir: Option<PathBuf>,
    /// `--dataset`: the built-in data set, over the one the file names.
    pub dataset: Option<DatasetName>,
    /// `--validation-from`, over the config's.
    pub validation_from: Option<data::ValidationFrom>,
}

impl FileData {
    /// Points `d` at this data for a file made on data set `dataset`.
    pub fn apply(&self, d: &mut data::DataConfig, dataset: &str) -> Result<()> {
        if let Some(v) = self.validation_from {
            d.validation_from = v;
        }
        if let Some(p) = &self.path {
            d.path = Some(p.clone());
            d.dataset = None;
            if self.layout.is_some() {
                d.layout = self.layout;
            }
            return Ok(());
        }
        if d.path.is_some() {
            return Ok(());
        }
        d.dataset = Some(match self.dataset {
            Some(given) => given,
            None => dataset.parse::<DatasetName>().map_err(|_| {
                anyhow::anyhow!(
                    "the file was made on data {dataset:?}, which is not built in: give it with --data PATH \
                     (its .npz or image folder)"
                )
            })?,
        });
        d.path = None;
        if self.dir.is_some() {
            d.dir = self.dir.clone();
        }
        Ok(())
    }
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
        /// The data to evaluate on (`--data`, `--layout`, `--data-dir`).
        data: FileData,
        /// The TorchScript config the file was made with (`None`: a zoo model's file).
        config: Option<Config>,
        /// `--max-params`: most dense weights the file may decode to.
        max_params: u64,
    },
    Compress {
        cfg: Config,
        rt: Runtime,
        plan: Plan,
        output: PathBuf,
        /// `--max-loss`: percentage points (see `compress::encode::check_decoded_accuracy`).
        max_loss: f64,
    },
    Inspect {
        file: PathBuf,
        max_params: u64,
    },
    Probe {
        spec: PathBuf,
        out: Option<PathBuf>,
        rt: Runtime,
        data_dir: Option<PathBuf>,
    },
    Export {
        input: PathBuf,
        to: ExportFormat,
        output: Option<PathBuf>,
        /// The TorchScript config of the file's module (`--ts-config`, `--torchscript` applied).
        config: Option<Config>,
        /// `--module-prefix` of ratio exports (empty for none).
        prefix: String,
        max_params: u64,
    },
    Search {
        cfg: Config,
        rt: Runtime,
        floor: Floor,
        out: PathBuf,
        command: String,
        /// `--executor` and `--slurm-args`.
        executor: (ExecutorKind, String),
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
    BenchTrain {
        cfg: Config,
        rt: Runtime,
        steps: usize,
    },
    BenchSearch {
        runs: u64,
        floor: f64,
        epoch_seconds: f64,
    },
}

/// Most steps `bench train --steps` times.
const MAX_BENCH_STEPS: usize = 1_000_000;
/// Most seeds per strategy `bench search --runs` takes (300 give the published table).
const MAX_BENCH_RUNS: u64 = 100_000;

/// Parses `--max-drop`: percentage points in (0, 100).
pub fn parse_max_drop(s: &str) -> Result<f64> {
    match s.trim().parse::<f64>() {
        Ok(p) if p > 0.0 && p < 100.0 => Ok(p),
        _ => anyhow::bail!(
            "--max-drop {s:?}: give the tolerated drop in percentage points of accuracy, more than 0 and \
             under 100, e.g. --max-drop 0.5"
        ),
    }
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

/// Parses the process arguments. Help and version print and exit 0; a usage error is one
/// line (clap's first paragraph, and where to look) and exit 2.
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // The first paragraph (`error: …` and what it lists), without the usage.
            let text = e.render().to_string();
            let first: Vec<&str> = text
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            let first = first.join(" ");
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            eprintln!(
                "error: {} (dc-search --help lists the commands and flags)",
                crate::runtime::one_line(first)
            );
            std::process::exit(2)
        }
    }
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
                // The config's range: 1e308 epochs would never end.
                if !crate::check::within(v, 0.0, crate::compress::MAX_EPOCHS) {
                    anyhow::bail!(
                        "{flag} {}: give a number of epochs from 0 to {}",
                        crate::check::show(v),
                        crate::compress::MAX_EPOCHS
                    );
                }
                *slot = v;
            }
        }
        if let Some(v) = self.lr_scale {
            if !(v > 0.0 && v <= crate::compress::MAX_LR_SCALE) {
                anyhow::bail!(
                    "--lr-scale {}: give a positive fraction of the dense learning rate, at most {}",
                    crate::check::show(v),
                    crate::compress::MAX_LR_SCALE
                );
            }
            c.lr_scale = v;
        }
        if let Some(v) = &self.retrain_lr {
            let r = match v.trim() {
                "auto" => crate::compress::RetrainLr::Auto,
                "recipe" => crate::compress::RetrainLr::Recipe,
                n => crate::compress::RetrainLr::Value(n.parse().map_err(|_| {
                    anyhow::anyhow!("--retrain-lr {v:?}: give auto, recipe or a learning rate")
                })?),
            };
            r.check("--retrain-lr")?;
            c.retrain_lr = Some(r);
        }
        if let Some(g) = self.centroid_grad {
            c.centroid_grad = g;
        }
        if let Some(b) = self.bias_precision {
            c.bias_precision = b;
        }
        // Whatever the flags set, the section's own checks hold as if the config said it.
        c.check().context("with the flags given")
    }
}

/// A .dcz path (by extension, or by the magic of a regular file for other names: only its
/// first bytes are read).
fn is_dcz(target: &str) -> bool {
    let p = std::path::Path::new(target);
    p.extension().is_some_and(|e| e == "dcz")
        || crate::paths::read_prefix(p, crate::format::MAGIC.len())
            .is_some_and(|b| b.starts_with(&crate::format::MAGIC))
}

/// Refuses an output before any work starts (see [`crate::paths::check_output`]).
pub fn check_output(path: &std::path::Path) -> Result<()> {
    crate::paths::check_output(path)
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
        let mut seen = std::collections::HashSet::new();
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
            if !seen.insert(i) {
                anyhow::bail!(
                    "{flag}: layer {} is given twice in {s:?}; give each layer once",
                    names[i]
                );
            }
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

/// `--device` and `--threads` checked into a [`Runtime`] with the given seeds.
fn checked_runtime(
    device: &str,
    threads: Option<usize>,
    seed: u64,
    dense_seed: u64,
    quiet: bool,
) -> Result<Runtime> {
    if let Some(t) = threads {
        if !(1..=crate::config::MAX_THREADS).contains(&t) {
            anyhow::bail!(
                "--threads {t}: give 1 to {} threads (default: all cores)",
                crate::config::MAX_THREADS
            );
        }
    }
    Ok(Runtime {
        device: runtime::parse_device(device)?,
        seed,
        dense_seed,
        threads,
        quiet,
    })
}

impl Common {
    fn runtime(&self) -> Result<Runtime> {
        checked_runtime(
            &self.device,
            self.threads,
            self.seed,
            self.dense_seed,
            self.quiet,
        )
    }

    fn resolve(&self, model: &str) -> Result<(Config, Runtime)> {
        let mut cfg = Config::resolve(model)?;
        if let Some(d) = self.dataset {
            cfg.data.dataset = Some(d);
            cfg.data.path = None;
        }
        if let Some(p) = &self.data {
            if !p.exists() {
                anyhow::bail!(
                    "--data {}: no such file or folder (give an .npz or an image folder)",
                    p.display()
                );
            }
            cfg.data.path = Some(p.clone());
            cfg.data.dataset = None;
        }
        if let Some(l) = self.layout {
            cfg.data.layout = Some(l);
        }
        if let Some(dir) = data::dir_from_env(self.data_dir.clone()) {
            cfg.data.dir = Some(dir);
        }
        if let Some(v) = self.validation_from {
            cfg.data.validation_from = v;
        }
        if let Some(w) = &self.weights {
            if !w.exists() {
                anyhow::bail!(
                    "--weights {}: no such file (give a .caffemodel or .safetensors file)",
                    w.display()
                );
            }
            crate::paths::check_regular(w, "--weights")?;
            cfg.weights = Some(w.clone());
        }
        if let Some(pt) = &self.torchscript {
            let Some(ts) = cfg.torchscript.as_mut() else {
                anyhow::bail!(
                    "--torchscript {}: {model} is not a TorchScript config; give a config with a \
                     [torchscript] section naming the module's input shape and layers",
                    pt.display()
                );
            };
            ts.module = Some(pt.clone());
        }
        Ok((cfg, self.runtime()?))
    }
}

impl Cli {
    /// Validates the flags into a [`Mode`]: each subcommand's arguments convert themselves.
    pub fn into_mode(self) -> Result<Mode> {
        match self.command {
            Some(Command::Train(args)) => args.into_mode(),
            Some(Command::Eval(args)) => args.into_mode(),
            Some(Command::Compress(args)) => args.into_mode(),
            Some(Command::Inspect(args)) => args.into_mode(),
            Some(Command::Probe(args)) => args.into_mode(),
            Some(Command::Export(args)) => args.into_mode(),
            Some(Command::Sensitivity(args)) => args.into_mode(),
            Some(Command::Bench(args)) => args.into_mode(),
            None => self.search.into_mode(self.model),
        }
    }
}

impl TrainArgs {
    fn into_mode(self) -> Result<Mode> {
        let TrainArgs {
            model,
            retrain,
            common,
        } = self;
        if common.weights.is_some() {
            anyhow::bail!(
                "train trains from scratch; --weights already gives a dense model: use it \
                 with eval, compress, sensitivity or the search"
            );
        }
        let (cfg, rt) = common.resolve(&model)?;
        if cfg.torchscript.is_some() {
            anyhow::bail!(
                "{model} is a TorchScript model: it comes trained (its module's weights are the dense \
                 model); compress, eval, sensitivity and the search use them as they are"
            );
        }
        Ok(Mode::Train { cfg, rt, retrain })
    }
}

impl EvalArgs {
    fn into_mode(self) -> Result<Mode> {
        let EvalArgs {
            target,
            ts_config,
            limit,
            common,
        } = self;
        if is_dcz(&target) {
            if common.weights.is_some() {
                anyhow::bail!(
                    "{target} is a compressed file and carries its own weights; --weights \
                     goes with a model (eval lenet --weights FILE)"
                );
            }
            let config = match &ts_config {
                Some(c) => Some(common.resolve(c)?.0),
                None if common.torchscript.is_some() => anyhow::bail!(
                    "--torchscript with a .dcz file needs the module's config too: --ts-config CONFIG.toml"
                ),
                None => None,
            };
            let rt = common.runtime()?;
            return Ok(Mode::EvalFile {
                file: target.into(),
                rt,
                data: FileData {
                    path: common.data,
                    layout: common.layout,
                    dir: data::dir_from_env(common.data_dir),
                    dataset: common.dataset,
                    validation_from: common.validation_from,
                },
                config,
                max_params: limit.get()?,
            });
        }
        if ts_config.is_some() {
            anyhow::bail!("--ts-config is for `eval FILE.dcz`; to evaluate the dense module, give its config as the target");
        }
        let (cfg, rt) = common.resolve(&target)?;
        Ok(Mode::Eval { cfg, rt })
    }
}

impl CompressArgs {
    fn into_mode(self) -> Result<Mode> {
        let CompressArgs {
            model,
            ratios,
            quality,
            bits,
            output,
            max_loss,
            tune,
            common,
        } = self;
        let max_loss = match max_loss {
            Some(s) => crate::compress::encode::parse_max_loss(&s)?,
            None => crate::compress::encode::DEFAULT_MAX_LOSS,
        };
        let (mut cfg, rt) = common.resolve(&model)?;
        tune.apply(&mut cfg.compress)?;
        let names = cfg.layer_names();
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
            max_loss,
        })
    }
}

impl InspectArgs {
    fn into_mode(self) -> Result<Mode> {
        let InspectArgs { file, limit } = self;
        Ok(Mode::Inspect {
            file,
            max_params: limit.get()?,
        })
    }
}

impl ProbeArgs {
    fn into_mode(self) -> Result<Mode> {
        let ProbeArgs {
            spec,
            out,
            device,
            threads,
            data_dir,
            quiet,
        } = self;
        if let Some(o) = &out {
            check_output(o)?;
        }
        // The seeds are the spec's; the dense model is read, never initialised.
        Ok(Mode::Probe {
            spec,
            out,
            rt: checked_runtime(&device, threads, 1, 1, quiet)?,
            data_dir,
        })
    }
}

impl ExportArgs {
    fn into_mode(self) -> Result<Mode> {
        let ExportArgs {
            input,
            to,
            output,
            ts_config,
            torchscript,
            module_prefix,
            limit,
        } = self;
        let prefix = module_prefix.unwrap_or_default();
        if !prefix.is_empty() && !crate::export::safe_name(&prefix) {
            anyhow::bail!(
                "--module-prefix {prefix:?}: give a module path prefix of [A-Za-z0-9_.-] (e.g. module.)"
            );
        }
        let dcz = is_dcz(&input.to_string_lossy());
        match (to, dcz) {
            (ExportFormat::Safetensors, false) => anyhow::bail!(
                "--to safetensors exports a compressed model: give a .dcz file, not {}",
                input.display()
            ),
            (ExportFormat::Safetensors, true) if output.is_none() => {
                anyhow::bail!("--to safetensors writes a binary file: give -o FILE.safetensors")
            }
            (ExportFormat::Nni | ExportFormat::Distiller | ExportFormat::Csv, true) => {
                anyhow::bail!(
                    "--to {} exports a search's ratios: give its ratios.json, not the .dcz file",
                    to.to_possible_value().expect("a value").get_name()
                )
            }
            _ => {}
        }
        if let Some(o) = &output {
            check_output(o)?;
        }
        let config = match &ts_config {
            Some(_) if to != ExportFormat::Safetensors => anyhow::bail!(
                "--ts-config goes with --to safetensors and a .dcz file made from a TorchScript module"
            ),
            Some(c) => {
                let mut cfg = Config::resolve(c)?;
                let Some(ts) = cfg.torchscript.as_mut() else {
                    anyhow::bail!(
                        "--ts-config {c}: not a TorchScript config; give the config with the \
                         [torchscript] section the file was made with"
                    );
                };
                if let Some(pt) = torchscript {
                    ts.module = Some(pt);
                }
                Some(cfg)
            }
            None => None,
        };
        Ok(Mode::Export {
            input,
            to,
            output,
            config,
            prefix,
            max_params: limit.get()?,
        })
    }
}

impl SensitivityArgs {
    fn into_mode(self) -> Result<Mode> {
        let SensitivityArgs { model, out, common } = self;
        let (cfg, rt) = common.resolve(&model)?;
        check_output(&out.join("sensitivity.csv"))?;
        Ok(Mode::Sensitivity { cfg, rt, out })
    }
}

impl BenchArgs {
    fn into_mode(self) -> Result<Mode> {
        let BenchArgs {
            what,
            model,
            steps,
            runs,
            floor,
            epoch_seconds,
            common,
        } = self;
        match what.as_str() {
            "sensitivity" => {
                let (cfg, rt) = common.resolve(&model)?;
                Ok(Mode::BenchSensitivity { cfg, rt })
            }
            "train" => {
                if !(1..=MAX_BENCH_STEPS).contains(&steps) {
                    anyhow::bail!(
                        "bench train --steps {steps}: give 1 to {MAX_BENCH_STEPS} steps"
                    );
                }
                let (cfg, rt) = common.resolve(&model)?;
                Ok(Mode::BenchTrain { cfg, rt, steps })
            }
            "search" => {
                if model != "lenet" {
                    anyhow::bail!("bench search {model:?}: the synthetic landscape is LeNet-5's; give `lenet`");
                }
                // Each run is kept for the table: the count bounds the memory too.
                let ok = (1..=MAX_BENCH_RUNS).contains(&runs)
                    && floor > 0.0
                    && floor <= 1.0
                    && epoch_seconds > 0.0
                    && epoch_seconds <= 1e6;
                if !ok {
                    anyhow::bail!(
                        "bench search --runs {runs} --floor {floor} --epoch-seconds {epoch_seconds}: --runs must be \
                         1 to {MAX_BENCH_RUNS}, --floor in (0, 1] and --epoch-seconds in (0, 1e6]"
                    );
                }
                Ok(Mode::BenchSearch {
                    runs,
                    floor,
                    epoch_seconds,
                })
            }
            _ => anyhow::bail!(
                "bench {what:?}: the benchmarks are `bench sensitivity <model>`, `bench train <model>` and \
                 `bench search lenet`"
            ),
        }
    }
}

impl SearchFlags {
    fn into_mode(self, model: Option<String>) -> Result<Mode> {
        let Some(model) = model else {
            anyhow::bail!(
                "no model given: try `dc-search --floor 0.99 lenet` or `dc-search --help`"
            );
        };
        let floor = match (&self.floor, &self.max_drop) {
            (Some(f), _) => Floor::Absolute(parse_floor(f)?),
            (None, Some(p)) => Floor::MaxDrop(parse_max_drop(p)?),
            (None, None) => anyhow::bail!(
                "the search needs --floor (e.g. `dc-search --floor 0.99 {model}`) or --max-drop \
                 (points below the dense model, e.g. `--max-drop 0.5`)"
            ),
        };
        let (mut cfg, rt) = self.common.resolve(&model)?;
        match self.budget.as_deref().map(parse_budget).transpose()? {
            Some(Budget::Minutes(m)) => cfg.search.budget_minutes = m,
            Some(Budget::Probes(p)) => {
                // The probe count rules, without a minute cap.
                cfg.search.budget_probes = p;
                cfg.search.budget_minutes = 0.0;
            }
            None => {}
        }
        if let Some(s) = self.sparsifier {
            cfg.search.sparsifier = s;
        }
        let sparsifier_tag = match cfg.search.sparsifier {
            crate::search::Sparsifier::Magnitude => "",
            crate::search::Sparsifier::L0 => "-l0",
        };
        let out = self.out.unwrap_or_else(|| {
            crate::paths::fresh_run_folder(
                Path::new("runs"),
                &format!(
                    "{}-{}-{}{sparsifier_tag}",
                    cfg.model,
                    cfg.data.name(),
                    floor.tag()
                ),
            )
        });
        check_output(&out.join("report.md"))?;
        crate::search::journal::check_folder(&out)?;
        let command = shell_command(std::env::args());
        if let Some(n) = self.workers {
            crate::check::need((1..=256).contains(&n), "--workers", n, "1..=256")?;
            cfg.search.workers = n;
        }
        // Whatever the flags set, the config's own checks hold as if it said it.
        cfg.check().context("with the flags given")?;
        if self.executor == ExecutorKind::Slurm && cfg.search.workers > 1 {
            crate::search::workers::slurm::check_sbatch()?;
        }
        Ok(Mode::Search {
            cfg,
            rt,
            floor,
            out,
            command,
            executor: (self.executor, self.slurm_args),
        })
    }
}

/// A command line as a POSIX shell reads it back: each argument that is not plain
/// (`[A-Za-z0-9_./=:,+-]`) in single quotes.
pub fn shell_command(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./=:,+-".contains(c));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A search budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    Minutes(f64),
    Probes(usize),
}

/// Most minutes `--budget` takes (`search.budget_minutes`' range).
const MAX_BUDGET_MINUTES: f64 = 1e6;
/// Most probes `--budget Np` takes (`search.budget_probes`' range).
const MAX_BUDGET_PROBES: usize = 1_000_000;

/// Parses `--budget`: `26`, `26m`, `26min` (minutes) or `40p`, `40probes` (ratio probes).
pub fn parse_budget(s: &str) -> Result<Budget> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        anyhow::anyhow!(
            "--budget {s:?}: give minutes (e.g. 26 or 26m, at most {MAX_BUDGET_MINUTES}) or ratio \
             probes (e.g. 40p, at most {MAX_BUDGET_PROBES}), more than 0"
        )
    };
    match unit {
        "" | "m" | "min" | "minutes" => {
            let m: f64 = num.parse().map_err(|_| bad())?;
            if !(m > 0.0 && m <= MAX_BUDGET_MINUTES) {
                return Err(bad());
            }
            Ok(Budget::Minutes(m))
        }
        "p" | "probes" => match num.parse::<usize>() {
            Ok(p) if p > 0 && p <= MAX_BUDGET_PROBES => Ok(Budget::Probes(p)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_in_minutes_or_probes() {
        assert_eq!(parse_budget("26").unwrap(), Budget::Minutes(26.0));
        assert_eq!(parse_budget("2.5m").unwrap(), Budget::Minutes(2.5));
        assert_eq!(parse_budget("40p").unwrap(), Budget::Probes(40));
        assert_eq!(parse_budget("7probes").unwrap(), Budget::Probes(7));
        for bad in [
            "0", "-3", "abc", "5x", "0p", "1.5p", "NaN", "", "1e308", "inf", "2000000p",
        ] {
            let e = parse_budget(bad).unwrap_err().to_string();
            assert!(e.contains("--budget"), "{bad}: {e}");
        }
    }

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
        let e = per_layer::<f64>("fc1=0.5,fc1=0.9", &names(), 0.0, "--ratios")
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer fc1 is given twice"), "{e}");
    }

    #[test]
    fn command_lines_are_shell_quoted() {
        let args = [
            "dc-search",
            "--out",
            "my runs/a",
            "--floor",
            "0.99",
            "it's",
            "",
        ];
        assert_eq!(
            shell_command(args.map(String::from)),
            r"dc-search --out 'my runs/a' --floor 0.99 'it'\''s' ''"
        );
    }

    #[test]
    fn max_drop_is_points_below_dense() {
        assert_eq!(parse_max_drop("0.5").unwrap(), 0.5);
        assert!((Floor::MaxDrop(0.5).resolve(0.91) - 0.905).abs() < 1e-12);
        assert_eq!(Floor::Absolute(0.99).resolve(0.5), 0.99);
        for bad in ["0", "-1", "100", "abc", "NaN"] {
            let e = parse_max_drop(bad).unwrap_err().to_string();
            assert!(
                e.contains("--max-drop") && e.contains("percentage points"),
                "{bad}: {e}"
            );
        }
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
