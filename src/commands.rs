//! One small function per command; [`run`] dispatches.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::{Cli, FileData, Mode};
use crate::compress::{self, encode, Plan};
use crate::config::Config;
use crate::data;
use crate::dense;
use crate::export::{self, ExportFormat};
use crate::format;
use crate::models::Net;
use crate::report;
use crate::runtime::Runtime;
use crate::search::Floor;
use crate::search::{self, sensitivity, setup};
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
        } => eval_file_cmd(&file, &rt, &data, config, max_params),
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
            prefix,
            max_params,
        } => export_cmd(&input, to, output.as_deref(), config, &prefix, max_params),
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
    Ok(load_data(cfg, rt)?.to_device(rt.device))
}

fn sensitivity_cmd(cfg: &Config, rt: &Runtime, out: &Path) -> Result<()> {
    rt.apply();
    let data = load_on_device(cfg, rt)?;
    let dense = dense::obtain(cfg, &data, rt, false)?;
    dense::check_brought(cfg, &dense, &data, rt)?;
    let (points, secs) = setup::sweep_and_write(
        &cfg.search,
        cfg.data.split_seed,
        &dense.net,
        &data.valid,
        out,
        rt.quiet,
    )?;
    println!(
        "wrote {} and {} ({} points, {secs:.1} s)",
        out.join("sensitivity.csv").display(),
        out.join("sensitivity.svg").display(),
        points.len()
    );
    Ok(())
}

fn bench_search_cmd(runs: u64, floor: f64, epoch_seconds: f64) -> Result<()> {
    use crate::search::synthetic::{self, Landscape};
    let lenet = Landscape {
        seconds_per_epoch: epoch_seconds,
        ..Landscape::lenet()
    };
    println!(
        "Search strategies on synthetic oracles, {runs} seeds each. compression: estimated file bytes against \
         dense float32; 3≤1.15: triples of seeds (1–3, 4–6, …) whose largest file is at most 1.15× their \
         smallest; met: the decoded file reached the floor; true<F: its noiseless accuracy is under the floor; \
         minutes: simulated; ratio probes include the calibration's; ended: the ratio search ended by itself, \
         not by a budget.\n"
    );
    let tables = [
        (
            format!(
                "LeNet-5 (fitted to the committed searches: dense {:.4}, noise σ {:.4}, {} s per epoch), floor {floor}",
                lenet.dense, lenet.noise, lenet.seconds_per_epoch
            ),
            lenet.clone(),
            floor,
        ),
        (
            "The same, its bisection started from the sensitivity curves the real sweep measured \
             (searches/lenet-mnist-floor0.99-seed1/sensitivity.csv) instead of its own"
                .to_string(),
            Landscape {
                seconds_per_epoch: epoch_seconds,
                ..Landscape::lenet_measured_sweep()
            },
            floor,
        ),
        {
            let r = Landscape::residual8();
            (
                format!(
                    "A landscape of another shape: 8 layers of a residual CNN (dense {:.2}, noise σ {:.4}, recovery τ {} \
                     epochs, {} s per epoch), floor dense − 1 point",
                    r.dense, r.noise, r.tau, r.seconds_per_epoch
                ),
                r.clone(),
                r.dense - 0.01,
            )
        },
    ];
    for (title, land, floor) in tables {
        println!("{title}:\n");
        print!(
            "{}",
            synthetic::compare(&land, &synthetic::strategies(), floor, runs)?
        );
        println!();
    }
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
        let sub = sensitivity::sweep(
            &dense.net,
            &setup::sensitivity_split(&cfg.search, &data.valid, cfg.data.split_seed),
            grid,
        );
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
    dense::check_brought(cfg, &dense, &data, rt)?;
    let config_toml = |lr: Option<f64>| with_lr(cfg, lr).to_toml();
    let layer_weights = cfg.layer_weights();
    let inputs = search::run::Inputs {
        model: &cfg.model,
        data: &cfg.data,
        layer_weights: &layer_weights,
        train: &cfg.train,
        compress: &cfg.compress,
        search: &cfg.search,
        weights: cfg.weights.as_deref(),
        config_toml: &config_toml,
    };
    let place = search::run::Place {
        out,
        command,
        executor: *executor,
        slurm_args,
        started: start,
    };
    let search::run::Done {
        outcome,
        table,
        ratios,
    } = search::run(&inputs, &data, &dense.net, &dense.path, floor, rt, &place)?;
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
            "floor": outcome.floor, "minutes": outcome.times.total / 60.0, "ratios": ratios.layers,
        }))?
    );
    Ok(())
}

/// `cfg` with each `retrain_lr = "auto"` replaced by `lr`, the range test's choice.
fn with_lr(cfg: &Config, lr: Option<f64>) -> Config {
    let mut c = cfg.clone();
    if let Some(lr) = lr {
        compress::RetrainLr::resolve(&mut c.search.retrain_lr, lr);
        compress::RetrainLr::resolve(&mut c.compress.retrain_lr, lr);
    }
    c
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
    // A TorchScript run whose start is not the module's own weights (the L0 gates' model,
    // `sparsify::FILE`): the spec's weights go into the module.
    let start = if cfg.torchscript.is_some() && s.dense != dense.path {
        Some(search::journal::load(&s.dense, &dense.net)?.0)
    } else {
        None
    };
    let start_net = start.as_ref().unwrap_or(&dense.net);
    s.check_layers(start_net.arch.layers.len())
        .with_context(|| format!("probe spec {source}"))?;
    let mut oracle = search::oracle::Retrainer::new(
        start_net,
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
            data.name,
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
    report(&d, &data, rt)?;
    // eval measures: the accuracies first, then what a search or compress would stop on.
    if let Err(e) = dense::check_brought(cfg, &d, &data, rt) {
        eprintln!("warning: {e:#}");
    }
    Ok(())
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

/// Sets `d`'s normalisation to the pair a file records (`input_scale`, `input_shift`).
fn file_norm(d: &mut data::DataConfig, model: &format::CompressedModel) {
    d.mean = None;
    d.std = None;
    d.input_scale = Some(model.input_scale);
    d.input_shift = model.input_shift;
}

/// The config of a zoo model's file: its model's preset with the normalisation the file
/// records.
fn file_config(model: &format::CompressedModel) -> Result<Config> {
    let mut cfg = Config::resolve(&model.model).with_context(|| {
        format!(
            "the file holds model {:?}; if it was made from a TorchScript module, give its config: \
             eval FILE.dcz --ts-config CONFIG.toml",
            model.model
        )
    })?;
    file_norm(&mut cfg.data, model);
    Ok(cfg)
}

/// The config and net of a file made from a TorchScript module: `cfg` names the module;
/// the file's input normalisation wins over the config's, unless the config gives `[data]
/// mean/std` (a normalisation per channel, which a file records as scale 1 and shift 0).
fn torchscript_file_net(
    model: &format::CompressedModel,
    mut cfg: Config,
    device: tch::Device,
) -> Result<(Config, Net)> {
    let Some(ts) = cfg.torchscript.as_mut() else {
        anyhow::bail!("--ts-config needs a config with a [torchscript] section");
    };
    if cfg.data.mean.is_none() {
        ts.input_shift = 0.0;
        file_norm(&mut cfg.data, model);
    }
    let ts = cfg.torchscript.as_ref().expect("checked above");
    let like = crate::models::torchscript::load(&cfg.model, ts, device)?;
    let net = encode::to_net_like(model, &like)?;
    Ok((cfg, net))
}

/// The one check of a decoded `.dcz` against its model, for every command that decodes one
/// (eval, export): the file's config and its net — a zoo model's by the name the file
/// carries, or with `--ts-config` the module's — after the file's model, input shape and
/// every layer's name, shape and kind were found to fit, before anything of the file's size
/// is allocated. The error names the file. With `from` (eval), the config then points at
/// the data to evaluate on: the data set the file names, or `--data`.
fn file_net(
    file: &Path,
    model: &format::CompressedModel,
    config: Option<Config>,
    from: Option<&FileData>,
    device: tch::Device,
) -> Result<(Config, Net)> {
    let made = match config {
        Some(cfg) => torchscript_file_net(model, cfg, device),
        None => file_config(model).and_then(|cfg| Ok((cfg, encode::to_net(model, device)?))),
    };
    let (mut cfg, net) = made.with_context(|| {
        format!(
            "{} does not fit its model (write it again from the model it is used with)",
            file.display()
        )
    })?;
    if let Some(from) = from {
        from.apply(&mut cfg.data, &model.dataset)
            .with_context(|| file.display().to_string())?;
    }
    Ok((cfg, net))
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
    from: &FileData,
    config: Option<Config>,
    max_params: u64,
) -> Result<()> {
    rt.apply();
    let (bytes, model) = read_dcz(file, max_params)?;
    check_origin(file, &model, config.as_ref())?;
    let (cfg, net) = file_net(file, &model, config, Some(from), rt.device)?;
    let data = load_data(&cfg, rt)?;
    net.fits(&data)?;
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
    prefix: &str,
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
            file_net(input, &model, None, None, tch::Device::Cpu)?;
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
        let (_, net) = file_net(input, &model, Some(cfg), None, tch::Device::Cpu)?;
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
             sparse_ratio, bits, optionally weight and file_sparse_ratio)",
            input.display()
        )
    })?;
    let out = export::ratios_as(&ratios, to, prefix)?;
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
    dense::check_brought(cfg, &dense, &data, rt)?;
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
            setup::LR_TEST_SEED,
        )?),
    };
    if let Some(t) = &lr_test {
        println!("{}", t.describe());
    }
    let resolved = with_lr(cfg, lr_test.as_ref().map(|t| t.chosen));
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
        &data.name,
        data.norm.file_pair(),
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
