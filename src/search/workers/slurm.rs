//! The Slurm executor: a batch's specs go to one array job (`sbatch --parsable
//! --array=…` of a generated script that runs `dc-search probe --spec
//! <folder>/specs/$SLURM_ARRAY_TASK_ID.json`, with `--slurm-args` passed through), waited
//! for by polling `squeue`. A task that left no result is reported with its job id and
//! log, submitted once more, then its probe is lost. The run folder must be on storage
//! every node shares: a task that cannot see its spec says so in one line (its log's last).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{last_line, read_result, with_one_retry, Answer, Command, Executor};

pub struct Slurm {
    command: Command,
    /// `--slurm-args`, split at whitespace (partition, time, GPUs, …).
    args: Vec<String>,
    /// The run folder's `workers/`.
    folder: PathBuf,
    /// Seconds between two `squeue` polls.
    pub poll: f64,
}

/// `s` single-quoted for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The array job's script: task `SLURM_ARRAY_TASK_ID` runs `specs/<id>.json`.
pub fn script(command: &Command, folder: &Path) -> String {
    let specs = folder.join("specs");
    let logs = folder.join("logs");
    let args: Vec<String> = command
        .args("$SPEC")
        .iter()
        .map(|a| {
            if a == "$SPEC" {
                "\"$spec\"".into()
            } else {
                quote(a)
            }
        })
        .collect();
    format!(
        "#!/bin/sh\n\
         #SBATCH --job-name=dc-search-probe\n\
         #SBATCH --output={logs}/slurm-%A_%a.out\n\
         spec={specs}/\"$SLURM_ARRAY_TASK_ID\".json\n\
         if [ ! -r \"$spec\" ]; then\n  \
         echo \"probe spec $spec: not visible on $(hostname): the run folder must be on storage every node shares\" >&2\n  \
         exit 2\n\
         fi\n\
         exec {exe} {args}\n",
        logs = logs.display(),
        specs = quote(&specs.display().to_string()),
        exe = quote(&command.exe.display().to_string()),
        args = args.join(" "),
    )
}

/// The job id in `sbatch --parsable`'s answer (`123` or `123;cluster`).
pub fn job_id(parsable: &str) -> Option<String> {
    let id = parsable.trim().split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_string())
}

/// Whether `sbatch` runs here: one error line saying what to do when it does not.
pub fn check_sbatch() -> Result<()> {
    match std::process::Command::new("sbatch").arg("--version").output() {
        Err(_) => bail!(
            "--executor slurm: sbatch not found: install Slurm's client tools (and run the search where jobs can be \
             submitted), or use --executor local"
        ),
        Ok(o) if !o.status.success() => bail!(
            "--executor slurm: `sbatch --version` failed: {}",
            last_line(&String::from_utf8_lossy(&o.stderr), "no output")
        ),
        Ok(_) => Ok(()),
    }
}

impl Slurm {
    /// Checks that `sbatch` runs here.
    pub fn new(command: Command, slurm_args: &str, folder: PathBuf) -> Result<Self> {
        check_sbatch()?;
        Ok(Slurm {
            command,
            args: slurm_args.split_whitespace().map(String::from).collect(),
            folder,
            poll: 1.0,
        })
    }

    fn log(&self, job: &str, task: usize) -> PathBuf {
        self.folder
            .join("logs")
            .join(format!("slurm-{job}_{task}.out"))
    }

    /// Submits the tasks `which` as one array; returns the job id.
    fn submit(&self, which: &[usize]) -> Result<String> {
        std::fs::create_dir_all(self.folder.join("logs"))
            .with_context(|| format!("cannot create {}", self.folder.join("logs").display()))?;
        let path = self.folder.join("probe-array.sh");
        crate::paths::write_text(&path, &script(&self.command, &self.folder))?;
        let array: Vec<String> = which.iter().map(usize::to_string).collect();
        let o = std::process::Command::new("sbatch")
            .arg("--parsable")
            .arg(format!("--array={}", array.join(",")))
            .args(&self.args)
            .arg(&path)
            .output()
            .context("--executor slurm: cannot run sbatch")?;
        let out = String::from_utf8_lossy(&o.stdout);
        match job_id(&out) {
            Some(id) if o.status.success() => Ok(id),
            _ => bail!(
                "--executor slurm: sbatch refused the probes' array ({}): {}",
                o.status,
                last_line(&String::from_utf8_lossy(&o.stderr), out.trim())
            ),
        }
    }

    /// Waits until `squeue` no longer lists the job (or the search is interrupted: the job
    /// is cancelled).
    fn wait(&self, job: &str) -> Result<()> {
        loop {
            if crate::runtime::interrupted() {
                let _ = std::process::Command::new("scancel").arg(job).status();
                return Err(crate::runtime::Interrupted.into());
            }
            let o = std::process::Command::new("squeue")
                .args(["-h", "-o", "%i", "-j", job])
                .output()
                .context("--executor slurm: cannot run squeue")?;
            // A finished job leaves the queue (or is unknown once purged).
            if !o.status.success() || String::from_utf8_lossy(&o.stdout).trim().is_empty() {
                return Ok(());
            }
            crate::runtime::sleep_unless_interrupted(Duration::from_secs_f64(self.poll));
        }
    }

    /// Runs the tasks `which`; those that left no result, with why.
    fn round(&self, specs: &[PathBuf], which: &[usize]) -> Result<Vec<(usize, String)>> {
        let job = self.submit(which)?;
        self.wait(&job)?;
        Ok(which
            .iter()
            .filter(|&&i| read_result(&specs[i]).is_none())
            .map(|&i| {
                let log = self.log(&job, i);
                let text = crate::paths::read_tail(&log, super::LOG_TAIL);
                (
                    i,
                    format!(
                        "Slurm task {job}_{i} ({}) failed; log {}: {}",
                        specs[i].display(),
                        log.display(),
                        last_line(&text, "no log written")
                    ),
                )
            })
            .collect())
    }
}

impl Executor for Slurm {
    fn run(&mut self, specs: &[PathBuf]) -> Result<Vec<Answer>> {
        with_one_retry(specs, "submitting it once more", |which| {
            self.round(specs, which)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_array_script_runs_the_tasks_spec() {
        let c = Command {
            exe: "/opt/dc search/dc-search".into(),
            threads: None,
            device: "cpu".into(),
            data_dir: None,
        };
        let s = script(&c, Path::new("/shared/run/workers"));
        assert!(
            s.starts_with("#!/bin/sh\n#SBATCH --job-name=dc-search-probe\n"),
            "{s}"
        );
        assert!(
            s.contains("#SBATCH --output=/shared/run/workers/logs/slurm-%A_%a.out\n"),
            "{s}"
        );
        assert!(
            s.contains("spec='/shared/run/workers/specs'/\"$SLURM_ARRAY_TASK_ID\".json\n"),
            "{s}"
        );
        assert!(
            s.contains("exec '/opt/dc search/dc-search' 'probe' '--spec' \"$spec\" '--quiet' '--device' 'cpu'\n"),
            "{s}"
        );
        assert!(s.contains("storage every node shares"), "{s}");
    }

    #[test]
    fn job_ids_are_read_from_sbatch_parsable() {
        assert_eq!(job_id("123\n").as_deref(), Some("123"));
        assert_eq!(job_id("77;cluster\n").as_deref(), Some("77"));
        assert_eq!(job_id("Submitted batch job 5"), None);
        assert_eq!(job_id(""), None);
    }
}
