//! One small function per command; [`run`] dispatches.

use anyhow::Result;

use crate::cli::{Cli, Mode};
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
