//! A whole search on real data, in one call: the run folder's journal and lock, the set-up
//! ([`super::setup`]: sweep, range test), the oracle (in-process or with workers), the
//! stages ([`super::stages`]), the file ([`super::finish`]) and every output of the run
//! folder (`config.toml` resolved, `trials.csv`, `pareto.svg`, `ratios.json`,
//! `summary.json`, `report.md`). `dc-search --floor F <model>` is this, plus printing.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use super::config::{Floor, SearchConfig};
use super::journal::Journal;
use super::oracle::Retrainer;
use super::outputs::{self, Ratios};
use super::prober::{Clock, Prober};
use super::record::{Outcome, StageTimes};
use super::{calibration, finish, sensitivity, setup, sparsify, stages, workers};
use crate::compress::CompressConfig;
use crate::data::{Data, DataConfig};
use crate::models::Net;
use crate::runtime::Runtime;
use crate::train::{self, Recipe};

/// The config's sections a search reads, and the whole config as TOML for the run folder
/// and the workers' specs.
pub struct Inputs<'a> {
    /// The model's name (`model` of the config).
    pub model: &'a str,
    pub data: &'a DataConfig,
    pub train: &'a Recipe,
    /// `[compress]`, with the search's bias precision.
    pub compress: &'a CompressConfig,
    pub search: &'a SearchConfig,
    /// The imported dense weights (`--weights`), if any.
    pub weights: Option<&'a Path>,
    /// Each layer's weight tensor by its module path, for `ratios.json`.
    pub layer_weights: &'a [String],
    /// The whole config as TOML; with `Some(lr)`, each `retrain_lr = "auto"` resolved to it.
    pub config_toml: &'a dyn Fn(Option<f64>) -> String,
}

/// Where a search runs and writes.
pub struct Place<'a> {
    /// The run folder.
    pub out: &'a Path,
    /// The command line, shell-quoted, for the report.
    pub command: &'a str,
    pub executor: workers::ExecutorKind,
    pub slurm_args: &'a str,
    /// When the command started (the report's total time).
    pub started: Instant,
}

/// A finished search: its outcome, the file's Table 3 and the ratios written.
pub struct Done {
    pub outcome: Outcome,
    pub table: String,
    pub ratios: Ratios,
}

/// Searches `dense` (its weights file `dense_path`) on `data` (every split on the run's
/// device) under `floor`, writing into `place`.
/// The budget starts here: training a missing dense model is not counted against it.
pub fn run(
    i: &Inputs,
    data: &Data,
    dense: &Net,
    dense_path: &Path,
    floor: Floor,
    rt: &Runtime,
    place: &Place,
) -> Result<Done> {
    let out = place.out;
    let search_start = Instant::now();
    let dense_acc = train::evaluate(dense, &data.valid).accuracy;
    let floor = floor.resolve(dense_acc);
    if floor <= 0.0 || floor.is_nan() {
        anyhow::bail!(
            "--max-drop leaves no floor: the dense {} reaches only {dense_acc:.4} on validation",
            i.model
        );
    }
    if dense_acc < floor {
        anyhow::bail!(
            "the dense {} reaches validation accuracy {dense_acc:.4}, already under the floor {floor:.4}: nothing can be \
             removed; lower --floor (e.g. --floor {:.3})",
            i.model,
            (dense_acc - 0.002).max(0.001)
        );
    }
    // Nothing is written before the run folder's lock is taken and its journal (if any)
    // is known to belong to this run.
    let key = setup::journal_key(
        &(i.config_toml)(None),
        rt,
        floor,
        dense_path,
        &data.cache_id,
    );
    let mut journal = Journal::open(out, &key)?;
    let workers_dir = out.join("workers");
    let exec = workers::executor(
        place.executor,
        i.search.workers,
        place.slurm_args,
        &workers_dir,
        rt,
        i.data.dir.clone(),
    )?;
    if journal.pending() > 0 && !rt.quiet {
        eprintln!(
            "resuming from {}: {} journaled",
            out.join("journal.jsonl").display(),
            journal.summary()
        );
    }
    if !rt.quiet {
        eprintln!(
            "decisions on {} validation images ({}); the {} test images are evaluated once, at the end",
            data.valid.len(),
            data.valid_source,
            data.test.len()
        );
        eprintln!(
            "dense {}: validation accuracy {dense_acc:.4}; floor {floor:.4}",
            i.model
        );
    }
    let mut times = StageTimes::default();
    // `sparsifier = "l0"`: every later stage starts from the gated model, and takes its
    // accuracy as the curves' reference; the floor and the report keep the dense one's.
    let start = sparsify::start(
        &mut journal,
        &sparsify::Inputs {
            search: i.search,
            dense,
            train_split: &data.train,
            valid: &data.valid,
            train: i.train,
            compress: i.compress,
            rt,
            floor,
        },
        out,
    )?;
    times.sparsify = start.as_ref().map_or(0.0, |s| s.seconds);
    let (dense, dense_path, start_acc) = match &start {
        Some(sparsify::Start {
            net: Some((net, path)),
            stats,
            ..
        }) => (net, path.as_path(), stats.valid_accuracy),
        _ => (dense, dense_path, dense_acc),
    };
    let (points, secs, sweep_replayed) = setup::sweep(
        &mut journal,
        i.search,
        i.data.split_seed,
        dense,
        &data.valid,
        out,
        rt.quiet,
    )?;
    times.sensitivity = secs;
    crate::runtime::catch_interrupts();
    let curves: Vec<Vec<(f64, f64)>> = dense
        .arch
        .layers
        .iter()
        .map(|l| sensitivity::curve(&points, &l.name).collect())
        .collect();
    // `retrain_lr = "auto"`: the range test (or its journaled result) fixes the learning
    // rate; probes, workers and the file retrain with it as a number.
    let lr_inputs = setup::LrInputs {
        dense,
        train_split: &data.train,
        valid: &data.valid,
        train: i.train,
        compress: i.compress,
        search: i.search,
        rt,
    };
    let (lr_test, lr_test_replayed) = setup::lr_test(&mut journal, &lr_inputs, &curves, start_acc)?;
    times.lr_test = lr_test.as_ref().map_or(0.0, |t| t.seconds);
    let (search_cfg, compress_cfg) = setup::with_lr(i.search, i.compress, lr_test.as_ref());
    // The run folder's config is the resolved one: a number where the range test chose.
    let resolved_toml = (i.config_toml)(lr_test.as_ref().map(|t| t.chosen));
    crate::paths::write_text(&out.join("config.toml"), &resolved_toml)?;
    let mut oracle = Retrainer::new(
        dense,
        &data.train,
        &data.valid,
        i.train,
        &compress_cfg,
        &search_cfg,
        rt,
    );
    if let Some(exec) = exec {
        let base = workers::SpecBase {
            config: resolved_toml,
            dense: dense_path.to_path_buf(),
            dense_sha256: crate::paths::sha256_file(dense_path)?,
            seed: rt.seed,
        };
        oracle.elsewhere = Some(Box::new(workers::Workers {
            exec,
            base,
            folder: workers_dir.clone(),
        }));
    }
    let layers = dense
        .arch
        .layers
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                l.weight_numel() as usize,
                l.outputs() as usize,
            )
        })
        .collect();
    let sc = i.search;
    let mut p = Prober::new(oracle, sc, floor, layers, Clock::Wall(search_start))
        .with_journal(journal)
        .with_outputs(&out.join("trials.csv"), rt.quiet);
    if start.as_ref().is_some_and(|s| s.replayed) {
        p.count_replayed(times.sparsify);
    }
    if sweep_replayed {
        // The replayed sweep's time counts against the budget as it did when it ran.
        p.count_replayed(secs);
    }
    if lr_test_replayed {
        p.count_replayed(times.lr_test);
    }
    let shape = calibration::Shape {
        train_images: data.train.len(),
        batch: i.train.batch_size,
        valid_images: data.valid.len(),
        dense_accuracy: start_acc,
    };
    let result = stages::choose(&mut p, &curves, &shape, &mut times).and_then(|chosen| {
        let run = finish::RunInfo {
            model: i.model,
            dataset: &data.name,
            input: data.norm.file_pair(),
            compress: &compress_cfg,
            weights: i.weights,
        };
        let file = out.join(format!("{}.dcz", i.model));
        finish::file(
            &mut p, &run, chosen, file, &data.test, dense_acc, &mut times,
        )
    });
    // New probes rewrite trials.csv as they finish; probes replayed from the journal are
    // written here, once (a run killed between journaling a probe and rewriting the CSV
    // left it a probe short).
    p.write_trials()?;
    outputs::plot_pareto(&p.trials, p.at.probe, &out.join("pareto.svg"))?;
    let mut outcome = match result {
        Err(e) if e.is::<crate::runtime::Interrupted>() => {
            let report = out.join("report.md");
            outputs::write_interrupted(&p.trials, &p.stage, floor, place.command, &report)?;
            return Err(e.context(format!(
                "{} probes are journaled in {}; the best feasible so far is in {}. Rerun the same command to \
                 resume",
                p.trials.len(),
                out.join("journal.jsonl").display(),
                report.display()
            )));
        }
        r => r?,
    };
    outcome.times.total = place.started.elapsed().as_secs_f64();
    outcome.lr_test = lr_test;
    outcome.sparsifier = start.as_ref().map(|s| s.stats.clone());
    // The report's table and the ratios' real sparsity are read back from the file
    // written, not from memory.
    let bytes = crate::paths::read_regular(
        &outcome.file,
        "compressed file",
        outcome.file_bytes as u64 + 1,
    )?;
    let written = crate::format::decode(&bytes)?;
    let ratios = Ratios::from_outcome(&outcome).with_file(i.layer_weights, &written);
    crate::paths::write_text(
        &out.join("ratios.json"),
        &serde_json::to_string_pretty(&ratios)?,
    )?;
    crate::paths::write_text(
        &out.join("summary.json"),
        &serde_json::to_string_pretty(&outcome)?,
    )?;
    let table = crate::report::table3(&crate::format::account(&bytes)?);
    outputs::write_report(&outcome, &table, place.command, &out.join("report.md"))?;
    if let Some(j) = p.journal() {
        j.drop_probe_checkpoints()?;
    }
    workers::tidy(&workers_dir)?;
    Ok(Done {
        outcome,
        table,
        ratios,
    })
}
