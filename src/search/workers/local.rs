//! The local executor: one child process of this binary per probe of a batch, all side by
//! side (`dc-search probe --spec`, each with its share of the threads); a child that fails
//! is run once more, then its probe is reported lost. Each child's output goes to
//! `workers/logs/<index>.log` beside the specs.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};

use anyhow::{Context, Result};

use super::{last_line, read_result, with_one_retry, Answer, Command, Executor};

/// Threads of each of `workers` probes side by side out of `threads`: an even share, at
/// least 1.
pub fn share(threads: usize, workers: usize) -> usize {
    (threads / workers.max(1)).max(1)
}

pub struct Local {
    pub command: Command,
}

impl Local {
    fn spawn(&self, spec: &Path, log: &Path) -> Result<Child> {
        let out = crate::paths::create_regular(log)?;
        let err = out.try_clone()?;
        use std::os::unix::process::CommandExt;
        // A process group of its own: a Ctrl-C at the terminal reaches the search alone,
        // which passes it on once (`wait_all`).
        std::process::Command::new(&self.command.exe)
            .args(self.command.args(&spec.display().to_string()))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start the worker {} (use --workers 1 to probe in this process)",
                    self.command.exe.display()
                )
            })
    }

    /// Runs `specs[i]` for each `i` of `which` side by side; the indices that failed, with
    /// why.
    fn round(&self, specs: &[PathBuf], which: &[usize]) -> Result<Vec<(usize, String)>> {
        let logs = log_dir(specs)?;
        let mut children = which
            .iter()
            .map(|&i| {
                let log = logs.join(format!("{i}.log"));
                Ok((i, log.clone(), self.spawn(&specs[i], &log)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let statuses = wait_all(children.iter_mut().map(|(_, _, c)| c).collect())?;
        let mut failed = Vec::new();
        for ((i, log, _), status) in children.iter().zip(statuses) {
            let i = *i;
            if status.success() && read_result(&specs[i]).is_some() {
                continue;
            }
            let text = crate::paths::read_tail(log, super::LOG_TAIL);
            failed.push((
                i,
                format!(
                    "worker of {} failed ({status}; log {}): {}",
                    specs[i].display(),
                    log.display(),
                    last_line(&text, "no output")
                ),
            ));
        }
        Ok(failed)
    }
}

/// Waits for every child; on SIGINT or SIGTERM passes the signal on to those still running
/// (a SIGTERM sent to the search alone would leave them probing), waits for them and stops
/// with [`crate::runtime::Interrupted`].
fn wait_all(mut children: Vec<&mut Child>) -> Result<Vec<ExitStatus>> {
    let mut done: Vec<Option<ExitStatus>> = vec![None; children.len()];
    loop {
        for (c, d) in children.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                *d = c.try_wait().context("waiting for a worker")?;
            }
        }
        if done.iter().all(Option::is_some) {
            return Ok(done.into_iter().flatten().collect());
        }
        if let Some(sig) = crate::runtime::signal() {
            for (c, d) in children.iter_mut().zip(&done) {
                if d.is_none() {
                    // SAFETY: kill(2) on the id of a child this process started and has
                    // not reaped (so the id is still its own).
                    unsafe { libc::kill(c.id() as libc::pid_t, sig) };
                }
            }
            for (c, d) in children.iter_mut().zip(&done) {
                if d.is_none() {
                    let _ = c.wait();
                }
            }
            return Err(crate::runtime::Interrupted.into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `workers/logs/` beside the specs' folder, created.
fn log_dir(specs: &[PathBuf]) -> Result<PathBuf> {
    let specs_dir = specs
        .first()
        .and_then(|s| s.parent())
        .unwrap_or(Path::new("."));
    let logs = specs_dir.parent().unwrap_or(specs_dir).join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    Ok(logs)
}

impl Executor for Local {
    fn run(&mut self, specs: &[PathBuf]) -> Result<Vec<Answer>> {
        with_one_retry(specs, "trying it once more", |which| {
            self.round(specs, which)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_shared_evenly_and_never_below_one() {
        assert_eq!(share(8, 2), 4);
        assert_eq!(share(2, 2), 1);
        assert_eq!(share(2, 4), 1);
        assert_eq!(share(5, 2), 2);
        assert_eq!(share(3, 0), 3);
    }
}
