//! Runtime settings shared by every command that computes: device, threads, seed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Once, OnceLock};

use anyhow::{bail, Result};
use tch::Device;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static HANDLER: Once = Once::new();

/// The error a long computation stops with after Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("interrupted (Ctrl-C)")]
pub struct Interrupted;

/// Makes Ctrl-C (SIGINT/SIGTERM) set a flag that training loops check between steps,
/// instead of killing the process mid-write. A second Ctrl-C kills at once.
pub fn catch_interrupts() {
    HANDLER.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    });
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
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
    fn devices_parse() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("auto, cpu"));
        assert!(parse_device("cuda:x").is_err());
    }
}
