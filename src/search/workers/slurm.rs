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

/// The array job's script, the same for every run: task `SLURM_ARRAY_TASK_ID` runs
/// `<specs>/<id>.json`. The specs folder, the binary and its options come as the script's
/// arguments ([`script_args`]), which sbatch hands over as they are: no path is ever part
/// of the script's text, so a newline, quote or `$(…)` in the run folder cannot add a line,
/// an `#SBATCH` option or a command. The options go on sbatch's command line
/// ([`sbatch_args`]).
pub const SCRIPT: &str = r#"#!/bin/sh
# dc-search probe array task: $1 the specs folder, $2 the dc-search binary, then its options.
spec="$1/$SLURM_ARRAY_TASK_ID.json"
exe="$2"
shift 2
if [ ! -r "$spec" ]; then
  echo "probe spec $spec: not visible on $(hostname): the run folder must be on storage every node shares" >&2
  exit 2
fi
exec "$exe" probe --spec "$spec" "$@"
"#;

/// The arguments of [`SCRIPT`] for `command` with specs in `folder/specs`.
pub fn script_args(command: &Command, folder: &Path) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> =
        vec![folder.join("specs").into(), command.exe.clone().into()];
    a.extend(command.options().into_iter().map(Into::into));
    a
}

/// sbatch's options for an array of `array` (`0,1,…`) whose logs go to `folder/logs/`: each
/// one argument, never parsed by a shell (a `%` in the folder is doubled: sbatch reads `%A`
/// and `%a` in `--output` as the job and task ids).
pub fn sbatch_args(folder: &Path, array: &str) -> Vec<std::ffi::OsString> {
    use std::os::unix::ffi::OsStrExt;
    let logs = folder.join("logs");
    let escaped = logs
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(Vec::new(), |mut v, &b| {
            v.push(b);
            if b == b'%' {
                v.push(b'%');
            }
            v
        });
    let mut output = std::ffi::OsString::from("--output=");
    output.push(std::ffi::OsStr::from_bytes(&escaped));
    output.push("/slurm-%A_%a.out");
    vec![
        "--parsable".into(),
        "--job-name=dc-search-probe".into(),
        output,
        format!("--array={array}").into(),
    ]
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
        crate::paths::write_text(&path, SCRIPT)?;
        let array: Vec<String> = which.iter().map(usize::to_string).collect();
        let o = std::process::Command::new("sbatch")
            .args(sbatch_args(&self.folder, &array.join(",")))
            .args(&self.args)
            .arg(&path)
            .args(script_args(&self.command, &self.folder))
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
    fn the_array_script_takes_its_paths_as_arguments() {
        assert!(!SCRIPT.lines().any(|l| l.starts_with("#SBATCH")));
        assert!(SCRIPT.contains("storage every node shares"));
        let c = Command {
            exe: "/opt/dc search/dc-search".into(),
            threads: None,
            device: "cpu".into(),
            data_dir: None,
        };
        assert_eq!(
            script_args(&c, Path::new("/shared/run/workers")),
            [
                "/shared/run/workers/specs",
                "/opt/dc search/dc-search",
                "--quiet",
                "--device",
                "cpu"
            ]
        );
        assert_eq!(
            sbatch_args(Path::new("/shared/run/workers"), "0,1"),
            [
                "--parsable",
                "--job-name=dc-search-probe",
                "--output=/shared/run/workers/logs/slurm-%A_%a.out",
                "--array=0,1"
            ]
        );
    }

    #[test]
    fn job_ids_are_read_from_sbatch_parsable() {
        assert_eq!(job_id("123\n").as_deref(), Some("123"));
        assert_eq!(job_id("77;cluster\n").as_deref(), Some("77"));
        assert_eq!(job_id("Submitted batch job 5"), None);
        assert_eq!(job_id(""), None);
    }

    /// A run folder whose path holds a newline, `#SBATCH`, quotes and `$(…)`: sh runs the
    /// script with each path one argument, as sbatch would.
    #[test]
    fn newlines_and_quotes_in_the_run_folder_stay_inside_their_words() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let folder = dir
            .path()
            .join("run\n#SBATCH --wrap=evil\n' \"$(touch pwned)\"%x/workers");
        std::fs::create_dir_all(folder.join("specs")).unwrap();
        std::fs::write(folder.join("specs/0.json"), "{}").unwrap();
        // The "binary": a script that writes its arguments, one per line.
        let exe = dir.path().join("fake dc-search");
        std::fs::write(&exe, "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$ARGS_OUT\"\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = Command {
            exe,
            threads: None,
            device: "cpu".into(),
            data_dir: Some(folder.join("data")),
        };
        let out = dir.path().join("args");
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("probe-array.sh")
            .args(script_args(&c, &folder))
            .env("SLURM_ARRAY_TASK_ID", "0")
            .env("ARGS_OUT", &out)
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(ok.success());
        assert!(!dir.path().join("pwned").exists());
        let args = std::fs::read_to_string(&out).unwrap();
        let spec = folder.join("specs/0.json").display().to_string();
        let data = folder.join("data").display().to_string();
        assert_eq!(
            args,
            format!("probe\n--spec\n{spec}\n--quiet\n--device\ncpu\n--data-dir\n{data}\n")
        );
        let a = sbatch_args(&folder, "0");
        assert_eq!(a.len(), 4);
        let output = a[2].to_string_lossy().to_string();
        assert!(
            output.contains("%%x/workers/logs/slurm-%A_%a.out"),
            "{output}"
        );
    }
}
