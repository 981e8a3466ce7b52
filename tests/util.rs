//! Test helpers: the binary under test, a lock for torch's global generator, real data.

use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use dc_search::config::Config;
use dc_search::data::{self, Data};

/// The `dc-search` binary with a clean environment (no LD_LIBRARY_PATH).
pub fn dc_search() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dc-search"));
    c.env_remove("LD_LIBRARY_PATH");
    c
}

/// Runs a command and returns (exit code, stdout, stderr).
pub fn run(mut c: Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("the binary starts");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into(),
        String::from_utf8_lossy(&stderr).into(),
    )
}

/// Locks torch's global generator for this test and seeds it. Tests run side by side in
/// one process and initialisation, batches, augmentation and retraining all draw from that
/// generator: hold the guard until the test's last draw.
pub fn torch_seeded(seed: i64) -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    guard
}

/// Real MNIST as the preset splits it (scripts/setup.sh fetches it).
pub fn mnist(preset: &str) -> (Config, Data) {
    let cfg = Config::resolve(preset).unwrap();
    let data = data::load(&cfg.data).expect("MNIST is installed: run scripts/setup.sh");
    (cfg, data)
}
