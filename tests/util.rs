//! Test helpers: the binary under test, a lock for torch's global generator, small test
//! configs, real MNIST (where it is, loaded as a preset splits it, a small dense model on it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use dc_search::config::Config;
use dc_search::data::{self, Data, DatasetName};
use dc_search::models::Net;
use dc_search::train::{self, LrPolicy, Recipe, Sgd};
use tch::Device;

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

/// `eval ARGS --weights WEIGHTS` through the binary on the CPU, returning its stdout
/// (asserting success).
pub fn eval_with_weights(args: &[&str], weights: &Path) -> String {
    let mut c = dc_search();
    c.args(["eval"])
        .args(args)
        .args(["--device", "cpu", "--quiet", "--weights"])
        .arg(weights);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    out
}

/// The `validation:` and `test:` lines of `eval`'s output.
pub fn accuracy_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.starts_with("validation:") || l.starts_with("test:"))
        .collect()
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Where scripts/setup.sh put MNIST (for `--data-dir`).
pub fn mnist_dir() -> PathBuf {
    DatasetName::Mnist.default_dir()
}

/// A small config for the binary: `model` on MNIST's layout with Caffe's `inv` recipe, sized
/// by the fields; `rest` is appended as written (more `[train]` keys, then other sections).
pub struct TestConfig<'a> {
    pub model: &'a str,
    pub validation: usize,
    pub split_seed: u64,
    pub batch_size: i64,
    pub iterations: i64,
    pub rest: &'a str,
}

impl TestConfig<'_> {
    /// The config as TOML (`validation` on line 5, for tests that break it there).
    pub fn toml(&self) -> String {
        let TestConfig {
            model,
            validation,
            split_seed,
            batch_size,
            iterations,
            rest,
        } = self;
        format!(
            r#"
model = "{model}"
[data]
dataset = "mnist"
validation = {validation}
split_seed = {split_seed}
input_scale = 0.00390625
[train]
base_lr = 0.01
momentum = 0.9
weight_decay = 0.0005
lr_policy = "inv"
gamma = 0.0001
power = 0.75
batch_size = {batch_size}
iterations = {iterations}
bias_lr_mult = 2.0
{rest}"#
        )
    }
}

/// A small dense model of `preset` trained `iterations` steps on real MNIST, with the guard
/// of [`torch_seeded`]: hold it to the end of the caller's retraining.
pub fn small_dense(preset: &str, iterations: i64) -> (MutexGuard<'static, ()>, Config, Data, Net) {
    let (mut cfg, data) = mnist(preset);
    // A quick model: Caffe's inv policy without rotations or scalings (a preset's long
    // poly recipe, cut to a few hundred steps, anneals before it has learnt much); the
    // returned config retrains with the same recipe.
    let recipe = Recipe {
        iterations,
        lr_policy: LrPolicy::Inv,
        gamma: 1e-4,
        power: 0.75,
        augment_rotate: 0.0,
        augment_scale: 0.0,
        ..cfg.train.clone()
    };
    let guard = torch_seeded(3);
    let net = Net::init(&cfg.arch(), Device::Cpu);
    let mut sgd = Sgd::new(&net, &recipe);
    train::train(&net, &data.train, &recipe, &mut sgd, "dense", true).unwrap();
    cfg.train = recipe;
    (guard, cfg, data, net)
}
