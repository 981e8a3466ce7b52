//! One small function per command; [`run`] dispatches.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use crate::cli::{Cli, Mode};
use crate::compress::{self, encode, Plan};
use crate::data::DatasetName;
use crate::format;
use crate::models::Net;
use crate::report;
use crate::config::Config;
use crate::data;
use crate::dense;
use crate::runtime::Runtime;
use crate::train;

/// Runs the command the user asked for.
pub fn run(cli: Cli) -> Result<()> {
    match cli.into_mode()? {
        Mode::Train { cfg, rt, retrain } => train_cmd(&cfg, &rt, retrain),
        Mode::Eval { cfg, rt } => eval_cmd(&cfg, &rt),
        Mode::EvalFile { file, rt, data_dir } => eval_file_cmd(&file, &rt, data_dir),
        Mode::Compress { cfg, rt, plan, output } => compress_cmd(&cfg, &rt, &plan, &output),
        Mode::Inspect { file } => inspect_cmd(&file),
    }
}

fn train_cmd(cfg: &Config, rt: &Runtime, retrain: bool) -> Result<()> {
    rt.apply();
    let data = data::load(&cfg.data)?;
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
    let data = data::load(&cfg.data)?;
    let d = dense::obtain(cfg, &data, rt, false)?;
    report(&d, &data, rt)
}

fn report(d: &dense::Dense, data: &data::Data, rt: &Runtime) -> Result<()> {
    let v = train::evaluate(&d.net, &data.valid.to_device(rt.device));
    let t = train::evaluate(&d.net, &data.test.to_device(rt.device));
    println!("weights:    {}", d.path.display());
    println!("validation: accuracy {:.4} loss {:.4} ({} images)", v.accuracy, v.loss, v.n);
    println!("test:       accuracy {:.4} loss {:.4} ({} images)", t.accuracy, t.loss, t.n);
    Ok(())
}

/// Reads and decodes a .dcz file, naming it in every error.
pub fn read_dcz(file: &Path) -> Result<(Vec<u8>, format::CompressedModel)> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read compressed file {}", file.display()))?;
    let model = format::decode(&bytes).with_context(|| format!("{} is not a valid dc-search compressed file", file.display()))?;
    Ok((bytes, model))
}

/// The config a decoded file is evaluated with: its model's preset, its dataset and scaling.
fn file_config(model: &format::CompressedModel, data_dir: Option<PathBuf>) -> Result<Config> {
    let mut cfg = Config::resolve(&model.model)?;
    cfg.data.dataset = match model.dataset.as_str() {
        "mnist" => DatasetName::Mnist,
        "fashion-mnist" => DatasetName::FashionMnist,
        other => anyhow::bail!("the file was made on dataset {other:?}, which dc-search cannot load"),
    };
    cfg.data.input_scale = model.input_scale;
    cfg.data.dir = data_dir;
    Ok(cfg)
}

fn eval_file_cmd(file: &Path, rt: &Runtime, data_dir: Option<PathBuf>) -> Result<()> {
    rt.apply();
    let (bytes, model) = read_dcz(file)?;
    let cfg = file_config(&model, data_dir)?;
    let data = data::load(&cfg.data)?;
    let net = encode::to_net(&model, rt.device)?;
    let v = train::evaluate(&net, &data.valid.to_device(rt.device));
    let t = train::evaluate(&net, &data.test.to_device(rt.device));
    println!("file:       {} ({} bytes, model {}, dataset {})", file.display(), bytes.len(), model.model, model.dataset);
    println!("validation: accuracy {:.4} loss {:.4} ({} images)", v.accuracy, v.loss, v.n);
    println!("test:       accuracy {:.4} loss {:.4} ({} images)", t.accuracy, t.loss, t.n);
    Ok(())
}

fn inspect_cmd(file: &Path) -> Result<()> {
    let (bytes, model) = read_dcz(file)?;
    let acc = format::account(&bytes)?;
    println!("{} — model {}, dataset {}, {} bytes\n", file.display(), model.model, model.dataset, bytes.len());
    print!("{}", report::table3(&acc));
    Ok(())
}

/// Checks that decoding gives back exactly the in-memory weights (bit for bit).
pub fn verify_decoded(net: &Net, decoded: &Net) -> Result<()> {
    for ((name, a), (_, b)) in net.to_host().iter().map(|(n, _, v)| (n, v)).zip(decoded.to_host().iter().map(|(n, _, v)| (n, v))) {
        let same = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        ensure!(same, "decoded tensor {name} differs from the in-memory model: this is a bug in dc-search's encoder");
    }
    Ok(())
}

fn compress_cmd(cfg: &Config, rt: &Runtime, plan: &Plan, output: &Path) -> Result<()> {
    rt.apply();
    let data = data::load(&cfg.data)?;
    let dense = dense::obtain(cfg, &data, rt, false)?;
    let train_split = data.train.to_device(rt.device);
    rt.reseed(1);
    let (state, stats) = compress::compress(&dense.net, plan, &train_split, &data.valid.to_device(rt.device), &cfg.train, &cfg.compress, rt.quiet)?;
    let model = encode::to_model(&dense.net, &state, cfg.data.dataset.as_str(), cfg.data.input_scale, cfg.compress.bias_precision)?;
    let bytes = format::encode(&model)?;
    let decoded = encode::to_net(&format::decode(&bytes)?, rt.device)?;
    verify_decoded(&dense.net, &decoded)?;
    crate::paths::write_atomic(output, &bytes)?;
    print!("{}", report::table3(&format::account(&bytes)?));
    for st in &stats.stages {
        let t = st.train.as_ref().map(|t| format!(", {:.2} epochs in {:.1} s", t.epochs, t.seconds)).unwrap_or_default();
        println!("stage {:<15} validation accuracy {:.4}{t}", st.name, st.valid_accuracy);
    }
    let v = train::evaluate(&decoded, &data.valid.to_device(rt.device));
    let t = train::evaluate(&decoded, &data.test.to_device(rt.device));
    let dense_bytes = cfg.arch().num_params() * 4;
    println!(
        "wrote {} ({} bytes; dense float32 {} bytes; {:.1}x) in {:.0} s",
        output.display(),
        bytes.len(),
        dense_bytes,
        dense_bytes as f64 / bytes.len() as f64,
        stats.seconds
    );
    println!("decoded file, validation: accuracy {:.4} loss {:.4}", v.accuracy, v.loss);
    println!("decoded file, test:       accuracy {:.4} loss {:.4}", t.accuracy, t.loss);
    Ok(())
}
