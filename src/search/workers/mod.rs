//! Probes outside the search's process (`--workers N`): [`Workers`] writes each probe of
//! the search's batches as a probe spec ([`super::spec`]) into the run folder's
//! `workers/specs/` and hands the specs to an [`Executor`] — [`local`]: N child processes
//! of this binary (`dc-search probe --spec`), or [`slurm`]: one Slurm array job — then
//! reads each result and its checkpoint back. A task that fails is tried once more, then
//! reported lost (never feasible). Single probes (a second look, a final retraining, the
//! bits stage's solo sweep) stay in this process.

pub mod local;
pub mod slurm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::oracle::{Elsewhere, Job, JobResult, Measure, Oracle, Retrainer};
use super::spec::{self, Action, ProbeResult, ProbeSpec, SPEC_VERSION};
use crate::compress::mask::Masked;
use crate::models::Net;

/// Where probes of a batch run (`--executor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ExecutorKind {
    /// Child processes of this binary on this machine.
    #[default]
    Local,
    /// One Slurm array job per batch (`sbatch --array`).
    Slurm,
}

/// What a worker needs besides its spec: the binary, threads, device, data folder.
#[derive(Debug, Clone)]
pub struct Command {
    pub exe: PathBuf,
    /// `--threads` of each probe (`None`: the node's default).
    pub threads: Option<usize>,
    pub device: String,
    pub data_dir: Option<PathBuf>,
}

impl Command {
    /// `probe --spec SPEC` with this command's settings, as arguments.
    pub fn args(&self, spec: &str) -> Vec<String> {
        let mut a = vec!["probe".into(), "--spec".into(), spec.into()];
        a.extend(self.options());
        a
    }

    /// The options after `probe --spec SPEC`.
    pub fn options(&self) -> Vec<String> {
        let mut a = vec!["--quiet".into()];
        a.extend(["--device".into(), self.device.clone()]);
        if let Some(t) = self.threads {
            a.extend(["--threads".into(), t.to_string()]);
        }
        if let Some(d) = &self.data_dir {
            a.extend(["--data-dir".into(), d.display().to_string()]);
        }
        a
    }
}

/// A task's outcome: its result, or one line saying why it failed.
pub type Answer = std::result::Result<ProbeResult, String>;

/// Runs probe specs side by side. `Err` of the whole call (the executor cannot run at all)
/// stops the search; a task that failed is an `Err` answer.
pub trait Executor {
    fn run(&mut self, specs: &[PathBuf]) -> Result<Vec<Answer>>;
}

/// Runs every spec by `round` (which runs the given indices side by side and returns those
/// that failed, with why), runs the failed ones once more (`again` says how), and answers
/// each spec: its result, or why it failed twice.
pub fn with_one_retry(
    specs: &[PathBuf],
    again: &str,
    mut round: impl FnMut(&[usize]) -> Result<Vec<(usize, String)>>,
) -> Result<Vec<Answer>> {
    let all: Vec<usize> = (0..specs.len()).collect();
    let mut failed = round(&all)?;
    if crate::runtime::interrupted() {
        return Err(crate::runtime::Interrupted.into());
    }
    if !failed.is_empty() {
        for (_, why) in &failed {
            eprintln!("{why}; {again}");
        }
        let which: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
        failed = round(&which)?;
    }
    Ok((0..specs.len())
        .map(|i| match failed.iter().find(|(j, _)| *j == i) {
            Some((_, why)) => Err(why.clone()),
            None => read_result(&specs[i]).ok_or_else(|| "the result vanished".to_string()),
        })
        .collect())
}

/// The result a finished task left beside its spec (`None`: no result, or not this spec's).
pub fn read_result(spec_path: &Path) -> Option<ProbeResult> {
    let text =
        crate::paths::read_text(spec_path, "probe spec", crate::paths::MAX_TEXT_BYTES).ok()?;
    let s: ProbeSpec = serde_json::from_str(&text).ok()?;
    spec::existing_result(&spec::default_result_path(spec_path, &s), &s)
}

/// Bytes read from the end of a failed task's log to find why it failed.
pub const LOG_TAIL: u64 = 64 << 10;

/// The last non-empty line of a log (why a task failed), or `fallback`.
pub fn last_line(text: &str, fallback: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(fallback)
        .to_string()
}

/// The executor a search with `workers` side by side uses (`None` for one worker: the
/// search probes in its own process), checked before anything runs: `sbatch` missing is
/// one error line. `folder` is the run folder's `workers/`; `threads` the search's own.
pub fn executor(
    kind: ExecutorKind,
    workers: usize,
    slurm_args: &str,
    folder: &Path,
    rt: &crate::runtime::Runtime,
    data_dir: Option<PathBuf>,
) -> Result<Option<Box<dyn Executor>>> {
    if workers <= 1 {
        return Ok(None);
    }
    let exe = std::env::current_exe().context("cannot find this binary to start workers")?;
    let device = rt.device_name();
    Ok(Some(match kind {
        ExecutorKind::Local => {
            let threads = rt
                .threads
                .unwrap_or_else(|| tch::get_num_threads().max(1) as usize);
            Box::new(local::Local {
                command: Command {
                    exe,
                    threads: Some(local::share(threads, workers)),
                    device,
                    data_dir,
                },
            })
        }
        ExecutorKind::Slurm => Box::new(slurm::Slurm::new(
            Command {
                exe,
                threads: rt.threads,
                device,
                data_dir,
            },
            slurm_args,
            folder.to_path_buf(),
        )?),
    }))
}

/// After a finished run: the workers' specs, results, checkpoints and warm starts go (the
/// journal replays the run without them); their logs stay.
pub fn tidy(folder: &Path) -> Result<()> {
    for sub in ["specs", "warm"] {
        let d = folder.join(sub);
        if d.is_dir() {
            std::fs::remove_dir_all(&d)
                .with_context(|| format!("cannot remove {}", d.display()))?;
        }
    }
    Ok(())
}

/// What every spec of a run shares.
pub struct SpecBase {
    /// The run's config as its `config.toml`.
    pub config: String,
    pub dense: PathBuf,
    pub dense_sha256: String,
    /// The run's `--seed`.
    pub seed: u64,
}

/// A run's workers: batches of the search's [`Retrainer`] go to the executor as specs
/// under `folder` (the run folder's `workers/`, on storage every node shares for a cluster).
pub struct Workers {
    pub exec: Box<dyn Executor>,
    pub base: SpecBase,
    pub folder: PathBuf,
}

/// Saves a warm start once, named by its content (so a rerun writes the same specs).
fn save_warm_start(here: &Retrainer, folder: &Path, model: &(Net, Masked)) -> Result<PathBuf> {
    let dir = folder.join("warm");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!("incoming-{}.safetensors", std::process::id()));
    here.save(model, &tmp)?;
    let named = dir.join(format!("{}.safetensors", crate::paths::sha256_file(&tmp)?));
    std::fs::rename(&tmp, &named)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), named.display()))?;
    Ok(named)
}

impl Workers {
    /// The spec of one job.
    fn spec(&self, job: &Job<(Net, Masked)>, warm_start: Option<PathBuf>) -> ProbeSpec {
        let (action, ratios, bits, epochs, seed) = match job {
            Job::Prune {
                ratios,
                epochs,
                seed,
                ..
            } => (Action::Prune, ratios.clone(), vec![], *epochs, *seed),
            Job::Quantize {
                bits, epochs, seed, ..
            } => (Action::Quantize, vec![], bits.clone(), *epochs, *seed),
        };
        ProbeSpec {
            spec: SPEC_VERSION,
            config: self.base.config.clone(),
            dense: self.base.dense.clone(),
            dense_sha256: self.base.dense_sha256.clone(),
            warm_start,
            action,
            ratios,
            bits,
            epochs,
            seed: self.base.seed,
            offset: seed,
            // The search judges feasibility; every worker writes its model (the second look
            // and the recovery retraining need it whatever it scored).
            threshold: f64::MIN_POSITIVE,
        }
    }
}

impl Elsewhere for Workers {
    fn run_batch(
        &mut self,
        here: &Retrainer,
        jobs: &[Job<(Net, Masked)>],
    ) -> Result<Vec<JobResult<(Net, Masked)>>> {
        let specs_dir = self.folder.join("specs");
        std::fs::create_dir_all(&specs_dir)
            .with_context(|| format!("cannot create {}", specs_dir.display()))?;
        // Each warm start saved once per batch (by address: jobs share them).
        let mut warm: HashMap<usize, PathBuf> = HashMap::new();
        let mut paths = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let from = match job {
                Job::Prune { from, .. } => *from,
                Job::Quantize { model, .. } => Some(*model),
            };
            let warm_start = match from {
                Some(m) => {
                    let key = m as *const (Net, Masked) as usize;
                    let path = match warm.get(&key) {
                        Some(p) => p.clone(),
                        None => save_warm_start(here, &self.folder, m)?,
                    };
                    warm.insert(key, path.clone());
                    Some(path)
                }
                None => None,
            };
            let path = specs_dir.join(format!("{i}.json"));
            let spec = self.spec(job, warm_start);
            crate::paths::write_text(&path, &serde_json::to_string_pretty(&spec)?)?;
            paths.push(path);
        }
        self.exec
            .run(&paths)?
            .into_iter()
            .map(|a| {
                let r = match a {
                    Ok(r) => r,
                    Err(why) => return Ok(Err(why)),
                };
                let Some(checkpoint) = &r.checkpoint else {
                    return Ok(Err("the worker wrote no checkpoint".into()));
                };
                let measure = Measure {
                    accuracy: r.valid_accuracy,
                    loss: r.valid_loss,
                    nonzeros: r.nonzeros,
                    seconds: r.seconds,
                    lr_restarts: r.lr_restarts,
                };
                Ok(Ok((here.load(checkpoint)?, measure)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_runs_probe_with_the_runs_settings() {
        let c = Command {
            exe: "/bin/dc-search".into(),
            threads: Some(2),
            device: "cpu".into(),
            data_dir: Some("/data/mnist".into()),
        };
        assert_eq!(
            c.args("/run/workers/specs/0.json").join(" "),
            "probe --spec /run/workers/specs/0.json --quiet --device cpu --threads 2 --data-dir /data/mnist"
        );
    }

    #[test]
    fn a_failed_tasks_reason_is_its_logs_last_line() {
        assert_eq!(
            last_line("a\nerror: no such spec\n\n", "?"),
            "error: no such spec"
        );
        assert_eq!(last_line("", "no log"), "no log");
    }
}
