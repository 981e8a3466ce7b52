//! Runtime settings shared by every command that computes (device, threads, seed), and how
//! the process ends when it must: SIGINT and SIGTERM, time limits, the error line.
//!
//! **Signals.** [`install`] (first thing of every command) catches SIGINT and SIGTERM and
//! starts a watchdog thread. By default a signal ends the process within a few tens of
//! milliseconds with exit 130 (SIGINT) or 143 (SIGTERM) and one error line, once no atomic
//! write is under way (`paths::writes_in_progress`), so nothing is left half-written. A
//! command with something to save first (the search: its journal, `trials.csv` and an
//! interrupted `report.md`) calls [`catch_interrupts`]: its loops see [`interrupted`] and
//! stop with [`Interrupted`], and the watchdog ends the process anyway after [`GRACE`] (a
//! computation with no check, such as a TorchScript forward that never returns). A second
//! signal ends it at once.
//!
//! **Time limits.** [`deadline`] bounds one call (a brought module's forward): past it, the
//! watchdog prints the caller's line and ends the process with exit 2 (a thread cannot be
//! stopped from outside; nothing is being written while a forward runs).
//!
//! **Error lines.** [`error_line`] makes an error one line of at most [`MAX_ERROR_CHARS`]
//! characters: libtorch's messages cut to their first line (not their C++ or TorchScript
//! stack), control characters escaped.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tch::Device;

/// The signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Whether the command stops by itself at its next check ([`catch_interrupts`]).
static GRACEFUL: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// How long a command that stops by itself has before the watchdog ends the process.
pub const GRACE: Duration = Duration::from_millis(800);

/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(20);

/// The error a long computation stops with after SIGINT (Ctrl-C) or SIGTERM.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&signal_said(SIGNAL.load(Ordering::SeqCst)))
    }
}

impl std::error::Error for Interrupted {}

/// `interrupted by SIGINT (Ctrl-C)` or `terminated by SIGTERM`.
fn signal_said(sig: i32) -> String {
    match sig {
        libc::SIGTERM => "terminated by SIGTERM".into(),
        libc::SIGINT | 0 => "interrupted by SIGINT (Ctrl-C)".into(),
        n => format!("stopped by signal {n}"),
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe: an atomic swap, and `_exit` on the second signal.
    if SIGNAL.swap(sig, Ordering::SeqCst) != 0 {
        unsafe { libc::_exit(128 + sig) };
    }
}

/// Catches SIGINT and SIGTERM (also when the process was started with them ignored, as a
/// shell does for background jobs) and starts the watchdog; see the module doc. Once per
/// process.
pub fn install() {
    INSTALL.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a plain handler that only touches an atomic (and calls `_exit`).
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
        let _ = std::thread::Builder::new()
            .name("dc-search-watchdog".into())
            .spawn(watchdog);
    });
}

/// Makes a signal stop the command at its next check of [`interrupted`] (with
/// [`Interrupted`]), so it can save what it has; the watchdog still ends the process after
/// [`GRACE`].
pub fn catch_interrupts() {
    GRACEFUL.store(true, Ordering::SeqCst);
}

/// Whether SIGINT or SIGTERM was received.
pub fn interrupted() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The signal received (SIGINT or SIGTERM), if any.
pub fn signal() -> Option<i32> {
    Some(SIGNAL.load(Ordering::SeqCst)).filter(|&s| s != 0)
}

/// Sleeps `d`, or less when a signal comes.
pub fn sleep_unless_interrupted(d: Duration) {
    let end = Instant::now() + d;
    while !interrupted() {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(TICK));
    }
}

/// The exit status of a command that ended with `err`: 128 + the signal for an
/// [`Interrupted`] one (130 for SIGINT, 143 for SIGTERM), else 2.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    match SIGNAL.load(Ordering::SeqCst) {
        sig @ 1..=127 if err.root_cause().is::<Interrupted>() => 128 + sig as u8,
        _ if err.root_cause().is::<Interrupted>() => 130,
        _ => 2,
    }
}

/// A time limit on one call: what to say and when.
type Limit = (Instant, Arc<str>);

static DEADLINE: Mutex<Option<Limit>> = Mutex::new(None);

/// Holds a time limit until dropped.
pub struct Deadline(());

impl Drop for Deadline {
    fn drop(&mut self) {
        *DEADLINE.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Puts a time limit of `limit` on what runs until the returned guard drops: past it, the
/// watchdog (when [`install`]ed) prints `error: {message}` and ends the process with exit 2.
pub fn deadline(limit: Duration, message: Arc<str>) -> Deadline {
    let at = Instant::now() + limit;
    *DEADLINE.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, message));
    Deadline(())
}

fn watchdog() {
    let mut signalled: Option<Instant> = None;
    loop {
        std::thread::sleep(TICK);
        let sig = SIGNAL.load(Ordering::SeqCst);
        if sig != 0 {
            let since = *signalled.get_or_insert_with(Instant::now);
            let stopping = GRACEFUL.load(Ordering::SeqCst) && since.elapsed() < GRACE;
            if !stopping && crate::paths::writes_in_progress() == 0 {
                end(&signal_said(sig), 128 + sig);
                return;
            }
        }
        let late = DEADLINE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| Instant::now() >= *at)
            .map(|(_, m)| m.clone());
        if let Some(message) = late {
            end(&message, 2);
            return;
        }
    }
}

/// Whether the process's error line was printed (by the command's end or the watchdog:
/// one of them, once).
static SAID: Mutex<bool> = Mutex::new(false);

/// Prints the error a command ended with as its one line (unless the watchdog already
/// ended the process) and returns the exit status ([`exit_code`]).
pub fn report_error(err: &anyhow::Error) -> u8 {
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !*said {
        *said = true;
        eprintln!("error: {}", error_line(err));
    }
    exit_code(err)
}

/// Prints `error: {message}` as one line and ends the process at once with `code` (no
/// destructors: another thread may be inside libtorch), unless the command's own error
/// line was printed: the process is then ending by itself.
fn end(message: &str, code: i32) {
    use std::io::Write;
    let said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if *said {
        return;
    }
    let line = format!("error: {}\n", one_line(message));
    let _ = std::io::stderr().write_all(line.as_bytes());
    crate::paths::remove_marked();
    // SAFETY: `_exit` ends the process without running anything else.
    unsafe { libc::_exit(code) }
}

/// The longest error line printed (characters, after escaping).
pub const MAX_ERROR_CHARS: usize = 300;

/// `err` with its causes, as one line (see [`one_line`]): each libtorch error cut to its
/// message ([`torch_message`]), and a cause left out when the error before it already says
/// it (an error whose message holds its source, as an OS error's often is, would be said
/// twice).
pub fn error_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = match cause.downcast_ref::<tch::TchError>() {
            Some(e) => torch_message(&e.to_string()),
            None => cause.to_string(),
        };
        if !parts.last().is_some_and(|p| p.ends_with(&text)) {
            parts.push(text);
        }
    }
    one_line(&parts.join(": "))
}

/// The message of a libtorch error without its C++ or TorchScript stack: for an error
/// raised inside a TorchScript module, the exception's own line (`RuntimeError: …`), else
/// the first line (tch's `Internal torch error:` prefix dropped).
pub fn torch_message(text: &str) -> String {
    let text = text.strip_prefix("Internal torch error: ").unwrap_or(text);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    if lines
        .iter()
        .any(|l| l.starts_with("Traceback of TorchScript"))
    {
        let raised = lines.iter().rev().find(|l| {
            l.split_once(": ").is_some_and(|(head, _)| {
                (head.ends_with("Error") || head.ends_with("Exception")) && !head.contains(' ')
            })
        });
        if let Some(l) = raised {
            return l.to_string();
        }
    }
    lines
        .iter()
        .find(|l| !l.is_empty())
        .map_or_else(String::new, |l| l.to_string())
}

/// `s` as one line of at most [`MAX_ERROR_CHARS`] characters: control characters (a
/// newline, a terminal escape) and invisible direction marks escaped (`\n`, `\u{1b}`);
/// a longer text keeps its start and its end (where the fix is) around ` … `.
pub fn one_line(s: &str) -> String {
    let escaped: Vec<char> = s
        .chars()
        .flat_map(|c| {
            let hidden = c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            let out: Vec<char> = if hidden {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            out
        })
        .collect();
    if escaped.len() <= MAX_ERROR_CHARS {
        return escaped.into_iter().collect();
    }
    let tail = MAX_ERROR_CHARS / 3;
    let head = MAX_ERROR_CHARS - tail - 3;
    let mut out: String = escaped[..head].iter().collect();
    out += " … ";
    out.extend(&escaped[escaped.len() - tail..]);
    out
}

/// Where and how tensors are computed.
#[derive(Debug, Clone, Copy)]
pub struct Runtime {
    pub device: Device,
    pub seed: u64,
    /// Seed of the dense model's initialisation and training.
    pub dense_seed: u64,
    pub threads: Option<usize>,
    pub quiet: bool,
}

/// Why `--device auto` computes on the CPU, when it does (for the device line).
static AUTO_ON_CPU: OnceLock<String> = OnceLock::new();

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` and `cuda` load libtorch's CUDA part
/// first ([`crate::cuda`]); `auto` falls back to the CPU (and the device line says why),
/// `cuda` without a usable GPU is an error saying why.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "auto" => Ok(match crate::cuda::devices() {
            Ok(_) => Device::Cuda(0),
            Err(why) => {
                let _ = AUTO_ON_CPU.set(why.short());
                Device::Cpu
            }
        }),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => cuda(n),
            _ => bail!("--device {s:?} is not one of auto, cpu, cuda, cuda:N"),
        },
    }
}

fn cuda(n: usize) -> Result<Device> {
    let count = match crate::cuda::devices() {
        Ok(c) => c,
        Err(why) => bail!("--device cuda: {why}; or use --device cpu"),
    };
    if n >= count {
        bail!("--device cuda:{n} asked, but libtorch sees {count} CUDA device(s); use cuda:0 … cuda:{}", count - 1);
    }
    Ok(Device::Cuda(n))
}

impl Runtime {
    /// Applies threads, chooses deterministic algorithms on a GPU, and seeds torch's
    /// generators.
    pub fn apply(&self) {
        if let Some(t) = self.threads {
            tch::set_num_threads(t as i32);
        }
        if let Device::Cuda(_) = self.device {
            if let Err(why) = crate::cuda::make_deterministic() {
                eprintln!("warning: deterministic algorithms not chosen ({why}): the same seed may give another model");
            }
        }
        self.reseed(0);
    }

    /// Says (unless quiet, once per process) which device computes: the first line of a
    /// computing command, printed once its inputs have been read, so that bad input still
    /// gets one error line alone.
    pub fn announce(&self) {
        static SAID: Once = Once::new();
        if !self.quiet {
            SAID.call_once(|| eprintln!("{}", self.device_line()));
        }
    }

    /// `device cuda:0 (NVIDIA H200)`, or `device cpu, 2 threads` and why `--device auto` did
    /// not take a GPU.
    pub fn device_line(&self) -> String {
        let mut s = format!("device {}", self.device_name());
        if let Device::Cuda(n) = self.device {
            if let Some(name) = crate::cuda::device_name(n) {
                s += &format!(" ({name})");
            }
        }
        if self.device == Device::Cpu {
            s += &format!(", {} threads", tch::get_num_threads());
            if let Some(why) = AUTO_ON_CPU.get() {
                s += &format!(" (--device auto: {why})");
            }
        }
        s
    }

    /// Waits for the device's queued work (timings on a GPU); nothing on the CPU.
    pub fn synchronize(&self) {
        if let Device::Cuda(n) = self.device {
            tch::Cuda::synchronize(n as i64);
        }
    }

    /// Seeds torch's generators with the run seed plus `offset` (a stage number), so each
    /// stage's randomness is fixed whatever ran before it.
    pub fn reseed(&self, offset: u64) {
        tch::manual_seed(self.seed.wrapping_add(offset) as i64);
    }

    /// Seeds torch's generators for the dense model's initialisation and training.
    pub fn reseed_dense(&self) {
        tch::manual_seed(self.dense_seed as i64);
    }

    pub fn device_name(&self) -> String {
        match self.device {
            Device::Cpu => "cpu".into(),
            Device::Cuda(n) => format!("cuda:{n}"),
            d => format!("{d:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_one_escaped_line_of_bounded_length() {
        assert_eq!(
            one_line("layer \"fc1\nx\u{1b}[31m\""),
            "layer \"fc1\\nx\\u{1b}[31m\""
        );
        assert_eq!(one_line("a\u{202e}b"), "a\\u{202e}b");
        let long = format!("start {} the fix", "x".repeat(2_000_000));
        let l = one_line(&long);
        assert_eq!(l.chars().count(), MAX_ERROR_CHARS);
        assert!(l.starts_with("start xx") && l.ends_with("xx the fix") && l.contains(" … "));
        let e = anyhow::Error::from(tch::TchError::Torch(
            "Target 5 is out of bounds.\nException raised from nll_loss_out_frame at /pytorch/x.cpp:12\nframe #0: c10::Error".into(),
        ))
        .context("training");
        assert_eq!(error_line(&e), "training: Target 5 is out of bounds.");
        // A cause its error already says is said once.
        let os = std::io::Error::from_raw_os_error(21);
        let said = os.to_string();
        #[derive(Debug, thiserror::Error)]
        #[error("cannot rename: {source}")]
        struct Wrapped {
            source: std::io::Error,
        }
        let e = anyhow::Error::from(Wrapped { source: os }).context("output x");
        assert_eq!(error_line(&e), format!("output x: cannot rename: {said}"));
    }

    #[test]
    fn a_torchscript_error_is_its_raised_line() {
        let text = "The following operation failed in the TorchScript interpreter.\n\
                    Traceback of TorchScript (most recent call last):\n  \
                    File \"code/__torch__.py\", line 12, in forward\n    \
                    _0 = uninitialized(Tensor)\n    \
                    ops.prim.RaiseException(\"real input\", \"builtins.Exception\")\n    \
                    ~~~~~~~~~~~~~~~~~~~~~~~ <--- HERE\n\
                    builtins.Exception: real input\n";
        assert_eq!(torch_message(text), "builtins.Exception: real input");
        assert_eq!(
            torch_message("Internal torch error: shape '[2, 784]' is invalid for input of size 784\nException raised from x"),
            "shape '[2, 784]' is invalid for input of size 784"
        );
    }

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("auto, cpu"));
        assert!(parse_device("cuda:x").is_err());
    }
}
