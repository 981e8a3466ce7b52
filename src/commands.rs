//! One small function per command; [`run`] dispatches.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::{Cli, Floor, Mode};
use crate::compress::{self, encode, Plan};
use crate::config::Config;
use crate::data;
use crate::data::DatasetName;
use crate::dense;
use crate::export::{self, ExportFormat};
use crate::format;
use crate::models::Net;
use crate::report;
use crate::runtime::Runtime;
use crate::search::{self, outputs, sensitivity};
use crate::train;

/// Runs the command the user asked for, with SIGINT and SIGTERM caught
/// ([`crate::runtime::install`]).
pub fn run(cli: Cli) -> Result<()> {
    crate::runtime::install();
    // A brought module that fails inside a training or evaluation loop unwinds with its
    // error line (`models::torchscript::fail`); any other unwind is a panic and goes on.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(cli))) {
        Ok(r) => r,
        Err(payload) => match payload.downcast::<crate::models::torchscript::ScriptFailed>() {
            Ok(failed) => Err((*failed).into()),
            Err(other) => std::panic::resume_unwind(other),
        },
    }
}

/// Hands the command to its function.
fn dispatch(cli: Cli) -> Result<()> {
    match cli.into_mode()? {
        Mode::Train { cfg, rt, retrain } => train_cmd(&cfg, &rt, retrain),
        Mode::Eval { cfg, rt } => eval_cmd(&cfg, &rt),
        Mode::EvalFile {
            file,
            rt,
            data,
            config,
            max_params,
        } => eval_file_cmd(&file, &rt, data, config, max_params),
        Mode::Compress {
            cfg,
            rt,
            plan,
            output,
            max_loss,
        } => compress_cmd(&cfg, &rt, &plan, &output, max_loss),
        Mode::Inspect { file, max_params } => inspect_cmd(&file, max_params),
        Mode::Export {
            input,
            to,
            output,
            config,
            max_params,
        } => export_cmd(&input, to, output.as_deref(), config, max_params),
        Mode::Search {
            cfg,
            rt,
            floor,
            out,
            command,
            executor,
        } => search_cmd(&cfg, &rt, floor, &out, &command, &executor),
        Mode::Probe {
            spec,
            out,
            rt,
            data_dir,
        } => probe_cmd(&spec, out, &rt, data_dir),
        Mode::Sensitivity { cfg, rt, out } => sensitivity_cmd(&cfg, &rt, &out),
        Mode::BenchSensitivity { cfg, rt } => bench_sensitivity_cmd(&cfg, &rt),
        Mode::BenchTrain { cfg, rt, steps } => crate::bench::train(&cfg, &rt, steps),
        Mode::BenchSearch {
            runs,
            floor,
            epoch_seconds,
        } => bench_search_cmd(runs, floor, epoch_seconds),
    }
}

/// The data (on the host), then the device line: a command's inputs are read before it
/// says where it computes, so bad input gets its one error line alone.
fn load_data(cfg: &Config, rt: &Runtime) -> Result<data::Data> {
    let d = data::load(&cfg.data)?;
    rt.announce();
    Ok(d)
}

/// The data with every split on the run's device.
fn load_on_device(cfg: &Config, rt: &Runtime) -> Result<data::Data> {
    let d = load_data(cfg, rt)?;
    Ok(data::Data {
        name: d.name,
        train: d.train.to_device(rt.device),
        valid: d.valid.to_device(rt.device),
        test: d.test.to_device(rt.device),
    })
}

/// The validation images the sensitivity sweep uses: `search.sensitivity_images` of them
/// drawn at random (seeded by `data.split_seed`), or all of them.
fn sensitivity_split(cfg: &Config, valid: &data::Split) -> data::Split {
    match cfg.search.sensitivity_images {
        0 => valid.head(valid.len()),
        n => valid.sample(n, cfg.data.split_seed),
    }
}

fn sweep_and_write(
    cfg: &Config,
    net: &Net,
    valid: &data::Split,
    out: &Path,
    quiet: bool,
) -> Result<(Vec<sensitivity::Point>, f64)> {
    let t = std::time::Instant::now();
    let points = sensitivity::sweep(net, &sensitivity_split(cfg, valid), &cfg.search.grid);
    let secs = t.elapsed().as_secs_f64();
    sensitivity::write_csv(&points, valid.len(), &out.join("sensitivity.csv"))?;
    let names: Vec<String> = net.arch.layers.iter().map(|l| l.name.clone()).collect();
    outputs::plot_sensitivity(&points, &names, &out.join("sensitivity.svg"))?;
    if !quiet {
        eprintln!(
            "sensitivity: {} points in {secs:.1} s → {}",
            points.len(),
            out.join("sensitivity.csv").display()
        );
    }
    Ok((points, secs))
}

fn sensitivity_cmd(cfg: &Config, rt: &Runtime, out: &Path) -> Result<()> {
    rt.apply();
    let data = load_on_device(cfg, rt)?;
    let dense = dense::obtain(cfg, &data, rt, false)?;
    let (points, secs) = sweep_and_write(cfg, &dense.net, &data.valid, out, rt.quiet)?;
    println!(
        "wrote {} and {} ({} points, {secs:.1} s)",
        out.join("sensitivity.csv").display(),
        out.join("sensitivity.svg").display(),
        points.len()
    );
    Ok(())
}

fn bench_search_cmd(runs: u64, floor: f64, epoch_seconds: f64) -> Result<()> {
    use crate::search::synthetic;
    let land = synthetic::Landscape {
        seconds_per_epoch: epoch_seconds,
        ..synthetic::Landscape::lenet()
    };
    println!(
        "Search strategies on the synthetic LeNet-5 oracle (dense {:.4}, noise σ {:.4} per probe, {} s per \
         epoch), floor {floor}, {runs} seeds each.\ncompression: estimated file bytes against dense float32; 3≤1.15: \
         triples of seeds (1–3, 4–6, …) whose largest file is at most 1.15× their smallest; met: \
         the decoded file reached the floor; true<F: its noiseless accuracy is under the floor; ended: the \
         ratio search ended by itself, not by the budget.\n",
        land.dense, land.noise, land.seconds_per_epoch
    );
    print!(
        "{}",
        synthetic::compare(&land, &synthetic::strategies(), floor, runs)?
    );
    let measured = synthetic::Landscape {
        seconds_per_epoch: epoch_seconds,
        ..synthetic::Landscape::lenet_measured_sweep()
    };
    println!(
        "\nThe same landscape, its bisection started from the sensitivity curves the real sweep measured \
         (searches/lenet-mnist-floor0.99-seed1/sensitivity.csv) instead of its own:\n"
    );
    print!(
        "{}",
        synthetic::compare(&measured, &synthetic::strategies(), floor, runs)?
    );
    Ok(())
}

fn bench_sensitivity_cmd(cfg: &Config, rt: &Runtime) -> Result<()> {
    rt.apply();
    let data = load_on_device(cfg, rt)?;
    let dense = dense::obtain(cfg, &data, rt, false)?;
    let grid = &cfg.search.grid;
    let t = std::time::Instant::now();
    let naive = sensitivity::sweep_naive(&dense.net, &data.valid, grid);
    let naive_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let fast = sensitivity::sweep(&dense.net, &data.valid, grid);
    let fast_s = t.elapsed().as_secs_f64();
    let diff = |f: fn(&sensitivity::Point) -> f64| {
        naive
            .iter()
            .zip(&fast)
            .map(|(a, b)| (f(a) - f(b)).abs())
            .fold(0.0, f64::max)
    };
    println!(
        "sensitivity sweep of {} ({} layers × {} ratios, {} validation images, {} threads):",
        cfg.model,
        dense.net.arch.layers.len(),
        grid.len(),
        data.valid.len(),
        tch::get_num_threads()
    );
    println!("  naive (full network, full validation set per point):         {naive_s:.2} s");
    println!("  fast  (dense activations reused, changed channels recomputed): {fast_s:.2} s");
    println!("  speed-up: {:.2}x", naive_s / fast_s);
    if dense.net.script.is_some() {
        println!(
            "  (a TorchScript module is one op: both sweeps run the whole module per point, so \
             their times differ only by warm-up and load)"
        );
    }
    println!(
        "  largest difference over all {} points: accuracy {:.3} percentage points, loss {:.2e}",
        naive.len(),
        100.0 * diff(|p| p.accuracy),
        diff(|p| p.loss)
    );
    let n = cfg.search.sensitivity_images;
    if n > 0 && n < data.valid.len() {
        let t = std::time::Instant::now();
        let sub = sensitivity::sweep(&dense.net, &sensitivity_split(cfg, &data.valid), grid);
        let sub_s = t.elapsed().as_secs_f64();
        let total = data.valid.len();
        let se: Vec<f64> = sub
            .iter()
            .map(|p| sensitivity::subset_se(p.accuracy, p.images, total))
            .collect();
        let off: Vec<f64> = sub
            .iter()
            .zip(&fast)
            .map(|(s, f)| (s.accuracy - f.accuracy).abs())
            .collect();
        let within = off
            .iter()
            .zip(&se)
            .filter(|(o, s)| **o <= 2.0 * **s)
            .count();
        println!(
            "  subset (search.sensitivity_images = {n}): {sub_s:.2} s, {:.2}x the fast sweep; \
             images through the network {} against {}",
            fast_s / sub_s,
            sub.len() * n,
            fast.len() * total
        );
        println!(
            "  subset against all {total} images: largest accuracy difference {:.3} points, \
             largest stated standard error {:.3} points; {within} of {} points within 2 standard errors",
            100.0 * off.iter().copied().fold(0.0, f64::max),
            100.0 * se.iter().copied().fold(0.0, f64::max),
            sub.len()
        );
    }
    Ok(())
}

fn search_cmd(
    cfg: &Config,
    rt: &Runtime,
    floor: Floor,
    out: &Path,
    command: &str,
    (executor, slurm_args): &(search::workers::ExecutorKind, String),
) -> Result<()> {
    let start = std::time::Instant::now();
    let mut cfg = cfg.clone();
    cfg.compress.bias_precision = cfg.search.bias_precision;
    let cfg = &cfg;
    rt.apply();
    let data = load_on_device(cfg, rt)?;
    let dense = dense::obtain(cfg, &data, rt, false)?;
    // The budget is the search's: training the dense model (first run on a machine) is not
    // counted against it.
    let search_start = std::time::Instant::now();
    let dense_acc = train::evaluate(&dense.net, &data.valid).accuracy;
    let floor = floor.resolve(dense_acc);
    if floor <= 0.0 || floor.is_nan() {
        anyhow::bail!(
            "--max-drop leaves no floor: the dense {} reaches only {dense_acc:.4} on validation",
            cfg.model
        );
    }
    if dense_acc < floor {
        anyhow::bail!(
            "the dense {} reaches validation accuracy {dense_acc:.4}, already under the floor {floor:.4}: nothing can be \
             removed; lower --floor (e.g. --floor {:.3})",
            cfg.model,
            (dense_acc - 0.002).max(0.001)
        );
    }
    // Nothing is written before the run folder's lock is taken and its journal (if any)
    // is known to belong to this run.
    let key = journal_key(cfg, rt, floor, &dense.path);
    let mut journal = search::journal::Journal::open(out, &key)?;
    let workers = out.join("workers");
    let exec = search::workers::executor(
        *executor,
        cfg.search.workers,
        slurm_args,
        &workers,
        rt,
        cfg.data.dir.clone(),
    )?;
    if journal.pending() > 0 && !rt.quiet {
        eprintln!(
            "resuming from {}: {} journaled",
            out.join("journal.jsonl").display(),
            journal.summary()
        );
    }
    crate::paths::write_text(&out.join("config.toml"), &cfg.to_toml())?;
    if !rt.quiet {
        let held = match cfg.data.validation_from {
            data::ValidationFrom::Train => "held out of the training images",
            data::ValidationFrom::Test => "held out of the test images",
        };
        eprintln!(
            "decisions on {} validation images ({held}); the {} test images are evaluated once, at the end",
            data.valid.len(),
            data.test.len()
        );
        eprintln!(
            "dense {}: validation accuracy {dense_acc:.4}; floor {floor} (+ margin {})",
            cfg.model, cfg.search.margin
        );
    }
    let mut times = search::StageTimes::default();
    let (points, secs, sweep_replayed) = match journal.replay_sweep() {
        Some((points, secs)) => (points, secs, true),
        None => {
            let (points, secs) = sweep_and_write(cfg, &dense.net, &data.valid, out, rt.quiet)?;
            journal.record_sweep(&points, secs)?;
            (points, secs, false)
        }
    };
    times.sensitivity = secs;
    crate::runtime::catch_interrupts();
    let train_split = data.train.to_device(rt.device);
    let curves: Vec<Vec<(f64, f64)>> = dense
        .net
        .arch
        .layers
        .iter()
        .map(|l| sensitivity::curve(&points, &l.name).collect())
        .collect();
    // `retrain_lr = "auto"`: the range test (or its journaled result) fixes the learning
    // rate; probes, workers and the file retrain with it as a number.
    let (lr_test, lr_test_replayed) = match auto_lr(cfg) {
        false => (None, false),
        true => {
            let (test, replayed) = match journal.replay_lr_test() {
                Some(t) => (t, true),
                None => {
                    let ratios = search::delta::ratios_for_delta(
                        &curves,
                        dense_acc,
                        compress::lr_range::START_DROP,
                        cfg.search.max_ratio,
                    );
                    let rules: Vec<compress::prune::PruneRule> = ratios
                        .iter()
                        .map(|&r| compress::prune::PruneRule::SparseRatio(r))
                        .collect();
                    let t = compress::lr_range::run(
                        &dense.net,
                        &rules,
                        &train_split,
                        &data.valid,
                        &cfg.train,
                        &cfg.compress,
                        rt,
                        LR_TEST_SEED,
                    )?;
                    journal.record_lr_test(&t)?;
                    (t, false)
                }
            };
            if !rt.quiet {
                eprintln!(
                    "{}{}",
                    test.describe(),
                    if replayed { " (journaled)" } else { "" }
                );
            }
            (Some(test), replayed)
        }
    };
    times.lr_test = lr_test.as_ref().map_or(0.0, |t| t.seconds);
    let resolved = with_lr(cfg, lr_test.as_ref());
    let mut oracle = search::oracle::Retrainer::new(
        &dense.net,
        &train_split,
        &data.valid,
        &cfg.train,
        &resolved.compress,
        &resolved.search,
        rt,
    );
    if let Some(exec) = exec {
        let base = search::workers::SpecBase {
            config: resolved.to_toml(),
            dense: dense.path.clone(),
            dense_sha256: crate::paths::sha256_file(&dense.path)?,
            seed: rt.seed,
        };
        oracle.elsewhere = Some(Box::new(search::workers::Workers {
            exec,
            base,
            folder: workers.clone(),
        }));
    }
    let layers = dense
        .net
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
    let at = search::prober::Thresholds::new(floor, cfg.search.margin, cfg.search.bits_margin);
    let mut p = search::prober::Prober::new(
        oracle,
        &cfg.search,
        at,
        layers,
        search::prober::Clock::Wall(search_start),
    )
    .with_journal(journal)
    .with_outputs(&out.join("trials.csv"), rt.quiet);
    if sweep_replayed {
        // The replayed sweep's time counts against the budget as it did when it ran.
        p.count_replayed(secs);
    }
    if lr_test_replayed {
        p.count_replayed(times.lr_test);
    }
    let result = search::run::choose(&mut p, &curves, dense_acc, &mut times).and_then(|chosen| {
        let file = out.join(format!("{}.dcz", cfg.model));
        let run = search::finish::RunInfo {
            model: &cfg.model,
            data: &cfg.data,
            compress: &cfg.compress,
            weights: cfg.weights.as_deref(),
        };
        search::finish::file(
            &mut p, &run, chosen, file, &data.test, dense_acc, &mut times,
        )
    });
    // New probes rewrite trials.csv as they finish; probes replayed from the journal are
    // written here, once (a run killed between journaling a probe and rewriting the CSV
    // left it a probe short).
    p.write_trials()?;
    outputs::plot_pareto(
        &p.trials,
        floor + cfg.search.margin,
        &out.join("pareto.svg"),
    )?;
    let mut outcome = match result {
        Err(e) if e.is::<crate::runtime::Interrupted>() => {
            let report = out.join("report.md");
            outputs::write_interrupted(&p.trials, &p.stage, floor, command, &report)?;
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
    outcome.times.total = start.elapsed().as_secs_f64();
    outcome.lr_test = lr_test;
    let ratios = outputs::Ratios::from_outcome(&outcome);
    crate::paths::write_text(
        &out.join("ratios.json"),
        &serde_json::to_string_pretty(&ratios)?,
    )?;
    crate::paths::write_text(
        &out.join("summary.json"),
        &serde_json::to_string_pretty(&outcome)?,
    )?;
    let (bytes, _) = read_dcz(&outcome.file, format::MAX_TOTAL_DENSE)?;
    let table = report::table3(&format::account(&bytes)?);
    outputs::write_report(&outcome, &table, command, &out.join("report.md"))?;
    if let Some(j) = p.journal() {
        j.drop_probe_checkpoints()?;
    }
    search::workers::tidy(&out.join("workers"))?;
    // --quiet hides progress, never the result.
    print!("{table}");
    println!(
        "\n{}: {} bytes, {:.1}x smaller than dense float32; decoded file: validation {:.4}, test {:.4}; {:.1} min; report {}",
        outcome.file.display(),
        outcome.file_bytes,
        outcome.compression_ratio,
        outcome.decoded_valid_accuracy,
        outcome.decoded_test_accuracy,
        outcome.times.total / 60.0,
        out.join("report.md").display()
    );
    println!(
        "{}",
        serde_json::to_string(&serde_json::json!({
            "file": outcome.file, "bytes": outcome.file_bytes, "compression": outcome.compression_ratio,
            "valid_accuracy": outcome.decoded_valid_accuracy, "test_accuracy": outcome.decoded_test_accuracy,
            "floor": floor, "minutes": outcome.times.total / 60.0, "ratios": ratios.layers,
        }))?
    );
    Ok(())
}

/// Seed offset of the learning-rate range test's retrainings.
const LR_TEST_SEED: u64 = 0x1e57;

/// Whether a section of `cfg` asks for the learning-rate range test.
fn auto_lr(cfg: &Config) -> bool {
    compress::RetrainLr::is_auto(&cfg.search.retrain_lr)
        || compress::RetrainLr::is_auto(&cfg.compress.retrain_lr)
}

/// `cfg` with each `retrain_lr = "auto"` replaced by the range test's choice.
fn with_lr(cfg: &Config, test: Option<&compress::lr_range::LrTest>) -> Config {
    let mut c = cfg.clone();
    if let Some(t) = test {
        compress::RetrainLr::resolve(&mut c.search.retrain_lr, t.chosen);
        compress::RetrainLr::resolve(&mut c.compress.retrain_lr, t.chosen);
    }
    c
}

/// What decides a search's result: the resolved config, floor, seed, threads and the dense
/// weights (by content, so a changed file at the same path is not mistaken for the old
/// one). A journal written under another key is not resumed.
fn journal_key(cfg: &Config, rt: &Runtime, floor: f64, dense: &Path) -> String {
    let weights = crate::paths::sha256_file(dense).unwrap_or_else(|_| dense.display().to_string());
    let text = format!(
        "{}\nfloor={floor}\nseed={}\nthreads={:?}\ndevice={}\ndense={weights}",
        cfg.to_toml(),
        rt.seed,
        rt.threads,
        rt.device_name(),
    );
    crate::paths::sha256_hex(text.as_bytes())
}

/// `probe --spec`: one probe from its spec; prints the result's JSON line.
fn probe_cmd(
    spec_path: &Path,
    out: Option<PathBuf>,
    rt: &Runtime,
    data_dir: Option<PathBuf>,
) -> Result<()> {
    use search::spec;
    let s = spec::ProbeSpec::read(spec_path)?;
    let out = out.unwrap_or_else(|| spec::default_result_path(spec_path, &s));
    if let Some(r) = spec::existing_result(&out, &s) {
        if !rt.quiet {
            eprintln!(
                "{}: the result of this spec is already there; not probed again",
                out.display()
            );
        }
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let source = spec_path.display().to_string();
    let mut cfg = Config::parse(&s.config, &source)?;
    if let Some(dir) = data::dir_from_env(data_dir) {
        cfg.data.dir = Some(dir);
    }
    let actual = crate::paths::sha256_file(&s.dense).with_context(|| {
        format!(
            "probe spec {source}: the dense weights (on a cluster, the run folder and the cache must be on storage every node shares)"
        )
    })?;
    if actual != s.dense_sha256 {
        anyhow::bail!(
            "probe spec {source}: the dense weights {} changed since the spec was written (sha256 {actual}, the spec says {}); write the spec again",
            s.dense.display(),
            s.dense_sha256
        );
    }
    // The dense model is read from the spec's file, never trained here.
    if cfg.torchscript.is_none() {
        cfg.weights = Some(s.dense.clone());
    }
    let rt = Runtime {
        seed: s.seed,
        quiet: true,
        ..*rt
    };
    rt.apply();
    let data = load_on_device(&cfg, &rt)?;
    let dense = dense::obtain(&cfg, &data, &rt, false)?;
    s.check_layers(dense.net.arch.layers.len())
        .with_context(|| format!("probe spec {source}"))?;
    let mut oracle = search::oracle::Retrainer::new(
        &dense.net,
        &data.train,
        &data.valid,
        &cfg.train,
        &cfg.compress,
        &cfg.search,
        &rt,
    );
    let result = spec::run(&mut oracle, &s, &spec::checkpoint_path(&out))?;
    let json = serde_json::to_string(&result)?;
    crate::paths::write_text(&out, &format!("{json}\n"))?;
    println!("{json}");
    Ok(())
}

fn train_cmd(cfg: &Config, rt: &Runtime, retrain: bool) -> Result<()> {
    rt.apply();
    let data = load_data(cfg, rt)?;
    let d = dense::obtain(cfg, &data, rt, retrain)?;
    if let Some(s) = &d.trained {
        println!(
            "trained {} on {} ({} iterations, {:.2} epochs) in {:.1} s: {:.2} s/epoch on {}",
            cfg.model,
            cfg.data.dataset.as_str(),
            s.iterations,
            s.epochs,
            s.seconds,
            s.seconds_per_epoch,
            rt.device_name()
        );
    } else {
        println!("cached model found (use --retrain to train again)");
    }
    report(&d, &data, rt)
}

fn eval_cmd(cfg: &Config, rt: &Runtime) -> Result<()> {
    rt.apply();
    let data = load_data(cfg, rt)?;
    let d = dense::obtain(cfg, &data, rt, false)?;
    report(&d, &data, rt)
}

fn report(d: &dense::Dense, data: &data::Data, rt: &Runtime) -> Result<()> {
    let v = train::evaluate(&d.net, &data.valid.to_device(rt.device));
    let t = train::evaluate(&d.net, &data.test.to_device(rt.device));
    println!("weights:    {}", d.path.display());
    print_accuracies(&v, &t);
    Ok(())
}

/// Prints validation and test accuracy and loss.
fn print_accuracies(v: &train::Eval, t: &train::Eval) {
    println!(
        "validation: accuracy {:.4} loss {:.4} ({} images)",
        v.accuracy, v.loss, v.n
    );
    println!(
        "test:       accuracy {:.4} loss {:.4} ({} images)",
        t.accuracy, t.loss, t.n
    );
}

/// Reads and decodes a .dcz file of at most `max_params` dense weights in all, naming it in
/// every error.
pub fn read_dcz(file: &Path, max_params: u64) -> Result<(Vec<u8>, format::CompressedModel)> {
    let bytes = crate::paths::read_regular(file, "compressed file", MAX_DCZ_BYTES)?;
    let model = format::decode_with_limit(&bytes, max_params).with_context(|| {
        format!(
            "{} is not a valid dc-search compressed file (damaged or not a .dcz: write it \
             again with `dc-search compress` or a search; a larger model needs --max-params)",
            file.display()
        )
    })?;
    Ok((bytes, model))
}

/// The largest .dcz file read (a file holds at most 2^32 weights of a few bits each).
const MAX_DCZ_BYTES: u64 = 1 << 34;

/// The dataset a file was made on, if dc-search can load it.
fn file_dataset(model: &format::CompressedModel) -> Result<DatasetName> {
    model.dataset.parse().map_err(|_| {
        anyhow::anyhow!(
            "the file was made on dataset {:?}, which dc-search cannot load",
            model.dataset
        )
    })
}

/// The config a decoded file is evaluated with: its model's preset, its dataset and scaling.
fn file_config(model: &format::CompressedModel) -> Result<Config> {
    let mut cfg = Config::resolve(&model.model).with_context(|| {
        format!(
            "the file holds model {:?}; if it was made from a TorchScript module, give its config: \
             eval FILE.dcz --ts-config CONFIG.toml",
            model.model
        )
    })?;
    cfg.data.dataset = file_dataset(model)?;
    cfg.data.input_scale = model.input_scale;
    Ok(cfg)
}

/// The config and net of a file made from a TorchScript module: `cfg` names the module; the
/// file's dataset and input normalisation win over the config's.
fn torchscript_file_net(
    model: &format::CompressedModel,
    mut cfg: Config,
    device: tch::Device,
) -> Result<(Config, Net)> {
    let Some(ts) = cfg.torchscript.as_mut() else {
        anyhow::bail!("--ts-config needs a config with a [torchscript] section");
    };
    ts.input_shift = model.input_shift;
    cfg.data.input_scale = model.input_scale;
    cfg.data.dataset = file_dataset(model)?;
    let like = crate::models::torchscript::load(&cfg.model, ts, device)?;
    let net = encode::to_net_like(model, &like)?;
    Ok((cfg, net))
}

/// The one check of a decoded `.dcz` against its model, for every command that decodes one
/// (eval, export): the file's config and its net — a zoo model's by the name the file
/// carries, or with `--ts-config` the module's — after the file's model, dataset, input
/// shape and every layer's name, shape and kind were found to fit, before anything of the
/// file's size is allocated. The error names the file.
fn file_net(
    file: &Path,
    model: &format::CompressedModel,
    config: Option<Config>,
    device: tch::Device,
) -> Result<(Config, Net)> {
    let made = match config {
        Some(cfg) => torchscript_file_net(model, cfg, device),
        None => file_config(model).and_then(|cfg| Ok((cfg, encode::to_net(model, device)?))),
    };
    made.with_context(|| {
        format!(
            "{} does not fit its model (write it again from the model it is used with)",
            file.display()
        )
    })
}

/// `split` with `shift` added to every input (a zoo model's file made with an input shift:
/// zoo models have no shift of their own, so the data takes it).
fn shifted(split: &data::Split, shift: f32) -> data::Split {
    data::Split {
        images: &split.images + f64::from(shift),
        labels: split.labels.shallow_clone(),
    }
}

/// Checks `cfg` (the `--ts-config` given, if any) against the TorchScript config `file` was
/// made from: an error saying what to pass when none was given, a warning on stderr when
/// another one was.
fn check_origin(file: &Path, model: &format::CompressedModel, cfg: Option<&Config>) -> Result<()> {
    let given = cfg
        .and_then(|c| c.torchscript.as_ref())
        .and_then(|t| t.origin.as_ref());
    let name = file.display().to_string();
    if let Some(w) = crate::models::origin::check(&name, model.origin.as_ref(), given)? {
        eprintln!("{}", crate::runtime::one_line(&w));
    }
    Ok(())
}

fn eval_file_cmd(
    file: &Path,
    rt: &Runtime,
    flags: crate::cli::DataFlags,
    config: Option<Config>,
    max_params: u64,
) -> Result<()> {
    rt.apply();
    let (bytes, model) = read_dcz(file, max_params)?;
    check_origin(file, &model, config.as_ref())?;
    let zoo = config.is_none();
    let (mut cfg, net) = file_net(file, &model, config, rt.device)?;
    flags.apply(&mut cfg.data);
    let mut data = load_data(&cfg, rt)?;
    if zoo && model.input_shift != 0.0 {
        data.valid = shifted(&data.valid, model.input_shift);
        data.test = shifted(&data.test, model.input_shift);
    }
    crate::models::check_classes(&net, &[&data.valid.labels, &data.test.labels])?;
    let v = train::evaluate(&net, &data.valid.to_device(rt.device));
    let t = train::evaluate(&net, &data.test.to_device(rt.device));
    println!(
        "file:       {} ({} bytes, model {}, dataset {}{})",
        file.display(),
        bytes.len(),
        report::printable(&model.model),
        report::printable(&model.dataset),
        match cfg.data.validation_from {
            data::ValidationFrom::Train => "",
            data::ValidationFrom::Test => "; validation held out of the test images",
        }
    );
    print_accuracies(&v, &t);
    Ok(())
}

fn export_cmd(
    input: &Path,
    to: ExportFormat,
    output: Option<&Path>,
    config: Option<Config>,
    max_params: u64,
) -> Result<()> {
    if to == ExportFormat::Safetensors {
        let (_, model) = read_dcz(input, max_params)?;
        let out = output.expect("checked by the CLI");
        check_origin(input, &model, config.as_ref())?;
        let Some(cfg) = config else {
            if crate::models::Arch::by_name(&model.model).is_err() {
                anyhow::bail!(
                    "{} holds model {:?}, which is not in the zoo; if it was made from a TorchScript \
                     module, give its config: export FILE.dcz --to safetensors --ts-config CONFIG.toml -o OUT",
                    input.display(),
                    model.model
                );
            }
            // Checked as eval checks it, before its layers are made dense.
            file_net(input, &model, None, tch::Device::Cpu)?;
            let bytes = export::dcz_to_safetensors(&model)?;
            crate::paths::write_atomic(out, &bytes)?;
            println!(
                "wrote {} ({} bytes): decoded {} ({} layers) as a PyTorch state dict (f32)",
                out.display(),
                bytes.len(),
                input.display(),
                model.layers.len()
            );
            return Ok(());
        };
        let (_, net) = file_net(input, &model, Some(cfg), tch::Device::Cpu)?;
        let script = net
            .script
            .as_ref()
            .expect("a TorchScript config gives a module");
        let state = script.state_dict()?;
        let bytes = crate::weights::state_to_safetensors(
            &state,
            Some(export::state_dict_meta(&model, script.source())),
        )?;
        crate::paths::write_atomic(out, &bytes)?;
        println!(
            "wrote {} ({} bytes): the state dict of {} with {} decoded from {} ({} tensors: \
             {} layers decoded, the rest as saved in the module)",
            out.display(),
            bytes.len(),
            script.source().display(),
            model.model,
            input.display(),
            state.len(),
            model.layers.len()
        );
        return Ok(());
    }
    let bytes = crate::paths::read_regular(input, "ratios file", crate::paths::MAX_TEXT_BYTES)?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("ratios file {} is not UTF-8 text", input.display()))?;
    let ratios = export::parse_ratios(&text).with_context(|| {
        format!(
            "{} is not a dc-search ratios.json (model, dataset, floor, layers: name, \
             sparse_ratio, bits)",
            input.display()
        )
    })?;
    let out = export::ratios_as(&ratios, to)?;
    match output {
        Some(o) => {
            crate::paths::write_text(o, &out)?;
            println!("wrote {}", o.display());
        }
        None => print!("{out}"),
    }
    Ok(())
}

fn inspect_cmd(file: &Path, max_params: u64) -> Result<()> {
    let (bytes, model) = read_dcz(file, max_params)?;
    let acc = format::account_with_limit(&bytes, max_params)?;
    println!(
        "{} — model {}, dataset {}, {} bytes, format version {}\n",
        file.display(),
        report::printable(&model.model),
        report::printable(&model.dataset),
        bytes.len(),
        acc.version
    );
    if let Some(o) = &model.origin {
        println!(
            "made from TorchScript config {} (evaluate with --ts-config)\n",
            crate::models::origin::describe(o)
        );
    }
    print!("{}", report::table3(&acc));
    Ok(())
}

fn compress_cmd(
    cfg: &Config,
    rt: &Runtime,
    plan: &Plan,
    output: &Path,
    max_loss: f64,
) -> Result<()> {
    rt.apply();
    let data = load_data(cfg, rt)?;
    let dense = dense::obtain(cfg, &data, rt, false)?;
    let train_split = data.train.to_device(rt.device);
    let valid = data.valid.to_device(rt.device);
    // `retrain_lr = "auto"`: a range test from the plan's own pruning picks the rate.
    let lr_test = match compress::RetrainLr::is_auto(&cfg.compress.retrain_lr) {
        false => None,
        true => Some(compress::lr_range::run(
            &dense.net,
            &plan.rules,
            &train_split,
            &valid,
            &cfg.train,
            &cfg.compress,
            rt,
            LR_TEST_SEED,
        )?),
    };
    if let Some(t) = &lr_test {
        println!("{}", t.describe());
    }
    let resolved = with_lr(cfg, lr_test.as_ref());
    rt.reseed(1);
    let trainer = compress::Trainer {
        train: &train_split,
        dense: &cfg.train,
        cfg: &resolved.compress,
        quiet: rt.quiet,
    };
    let (state, stats) = trainer.compress(&dense.net, plan, &valid)?;
    let encode::Encoded {
        bytes,
        decoded,
        folded,
    } = encode::encode_and_decode(
        &dense.net,
        &state,
        cfg.data.dataset.as_str(),
        cfg.data.input_scale,
        cfg.compress.bias_precision,
    )?;
    if folded.units > 0 {
        println!(
            "folded {} dead or unread units away ({} weights)",
            folded.units, folded.weights
        );
    }
    let v = train::evaluate(&decoded, &valid);
    let classes = dense.net.arch.layers.last().map_or(1, |l| l.outputs());
    encode::check_decoded_accuracy(
        stats.stages[0].valid_accuracy,
        v.accuracy,
        classes,
        max_loss,
    )?;
    crate::paths::write_atomic(output, &bytes)?;
    print!("{}", report::table3(&format::account(&bytes)?));
    for st in &stats.stages {
        let t = st
            .train
            .as_ref()
            .map(|t| {
                let again = train::restarts_said(t.lr_restarts)
                    .map(|s| format!(" (it {s})"))
                    .unwrap_or_default();
                format!(", {:.2} epochs in {:.1} s{again}", t.epochs, t.seconds)
            })
            .unwrap_or_default();
        println!(
            "stage {:<15} validation accuracy {:.4}{t}",
            st.name, st.valid_accuracy
        );
    }
    let t = train::evaluate(&decoded, &data.test.to_device(rt.device));
    let dense_bytes = dense.net.arch.num_params() * 4;
    println!(
        "wrote {} ({} bytes; dense float32 {} bytes; {:.1}x) in {:.0} s",
        output.display(),
        bytes.len(),
        dense_bytes,
        dense_bytes as f64 / bytes.len() as f64,
        stats.seconds
    );
    println!(
        "decoded file, validation: accuracy {:.4} loss {:.4}",
        v.accuracy, v.loss
    );
    println!(
        "decoded file, test:       accuracy {:.4} loss {:.4}",
        t.accuracy, t.loss
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal's key holds the dense weights by content: a file changed at the same path
    /// is another run, the same bytes at another path are the same one.
    #[test]
    fn the_journal_key_hashes_the_dense_weights_content() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b.safetensors"),
        );
        std::fs::write(&a, b"weights one").unwrap();
        std::fs::write(&b, b"weights one").unwrap();
        let cfg = Config::resolve("lenet").unwrap();
        let rt = Runtime {
            device: tch::Device::Cpu,
            seed: 1,
            dense_seed: 1,
            threads: Some(1),
            quiet: true,
        };
        let key = |p: &Path| journal_key(&cfg, &rt, 0.99, p);
        let before = key(&a);
        assert_eq!(before, key(&b));
        std::fs::write(&a, b"weights two").unwrap();
        assert_ne!(before, key(&a));
        assert_ne!(before, journal_key(&cfg, &rt, 0.98, &b));
    }
}
