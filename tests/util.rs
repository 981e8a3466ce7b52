//! Test helpers: the binary under test, a lock for torch's global generator, small test
//! configs, real MNIST (where it is, loaded as a preset splits it, a small dense model on it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use dc_search::config::Config;
use dc_search::data::{self, Data, DatasetName};
use dc_search::models::Net;
use dc_search::runtime::Runtime;
use dc_search::search::oracle::{Measure, Retrainer};
use dc_search::search::spec::{Action, ProbeResult, ProbeSpec, SPEC_VERSION};
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

/// The TorchScript fixture `tiny-cnn.pt` with its module's code changed by `edit` (see
/// [`forward_prefixed`]): a module that hangs, fails on some inputs or at some batch sizes,
/// made without Python. The archive is read (stored or deflated entries) and written again
/// stored, without the edited code's debug table.
pub fn torchscript_variant(edit: impl Fn(&str) -> String) -> Vec<u8> {
    let base = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torchscript/tiny-cnn.pt"),
    )
    .unwrap();
    let entries: Vec<(String, Vec<u8>)> = zip_entries(&base)
        .into_iter()
        .filter(|(n, _)| !n.ends_with("code/__torch__.py.debug_pkl"))
        .map(|(n, d)| {
            if n.ends_with("code/__torch__.py") {
                let code = edit(std::str::from_utf8(&d).unwrap());
                (n, code.into_bytes())
            } else {
                (n, d)
            }
        })
        .collect();
    stored_zip(&entries)
}

/// `forward`'s code of tiny-cnn with `prefix` before its first statement.
pub fn forward_prefixed(code: &str, prefix: &str) -> String {
    let at = "    x: Tensor) -> Tensor:\n";
    let i = code.find(at).expect("tiny-cnn's forward") + at.len();
    format!("{}{prefix}{}", &code[..i], &code[i..])
}

fn le16(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// Every entry of a zip archive (no zip64), by its central directory.
fn zip_entries(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let eocd = (0..zip.len() - 21)
        .rev()
        .find(|&i| zip[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .expect("a zip archive");
    let (count, mut at) = (le16(zip, eocd + 10), le32(zip, eocd + 16));
    let mut out = Vec::new();
    for _ in 0..count {
        assert_eq!(zip[at..at + 4], [0x50, 0x4b, 0x01, 0x02]);
        let (method, size) = (le16(zip, at + 10), le32(zip, at + 20));
        let (name_len, extra, comment) =
            (le16(zip, at + 28), le16(zip, at + 30), le16(zip, at + 32));
        let local = le32(zip, at + 42);
        let name = String::from_utf8(zip[at + 46..at + 46 + name_len].to_vec()).unwrap();
        let start = local + 30 + le16(zip, local + 26) + le16(zip, local + 28);
        let raw = &zip[start..start + size];
        let data = match method {
            0 => raw.to_vec(),
            8 => {
                let mut d = Vec::new();
                flate2::read::DeflateDecoder::new(raw)
                    .read_to_end(&mut d)
                    .unwrap();
                d
            }
            m => panic!("zip method {m}"),
        };
        out.push((name, data));
        at += 46 + name_len + extra + comment;
    }
    out
}

/// A zip archive of `entries`, stored (not compressed).
fn stored_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let crc = crc32fast::hash(data);
        let offset = out.len() as u32;
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, stored, time, date
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&[0, 0]); // no extra field
        };
        out.extend_from_slice(&[0x50, 0x4b, 0x03, 0x04]);
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&[0x50, 0x4b, 0x01, 0x02, 20, 0]);
        common(&mut central);
        central.extend_from_slice(&[0; 10]); // comment, disk, attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let (cd_offset, cd_len) = (out.len() as u32, central.len() as u32);
    out.extend_from_slice(&central);
    out.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0]);
    let n = (entries.len() as u16).to_le_bytes();
    out.extend_from_slice(&[n[0], n[1], n[0], n[1]]);
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A spec for `dc-search probe`: prune to `ratios` from `weights` (its sha256 beside),
/// `config`'s text, `epochs` of retraining, seed 1, random stream `offset`, models written
/// from 0.5 up.
pub fn prune_spec(
    config: String,
    weights: &Path,
    ratios: &[f64],
    epochs: f64,
    offset: u64,
) -> ProbeSpec {
    ProbeSpec {
        spec: SPEC_VERSION,
        config,
        dense: weights.to_path_buf(),
        dense_sha256: dc_search::paths::sha256_file(weights).unwrap(),
        warm_start: None,
        action: Action::Prune,
        ratios: ratios.to_vec(),
        bits: vec![],
        epochs,
        seed: 1,
        offset,
        threshold: 0.5,
    }
}

/// `dc-search probe` of `spec`, written as `dir/name`, on the CPU with torch's thread count
/// and the installed MNIST: (exit code, stdout, stderr).
pub fn probe_spec(dir: &Path, name: &str, spec: &ProbeSpec) -> (i32, String, String) {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(spec).unwrap()).unwrap();
    let mut c = dc_search();
    c.args(["probe", "--device", "cpu", "--threads"])
        .arg(probe_threads().to_string())
        .arg("--spec")
        .arg(&path)
        .arg("--data-dir")
        .arg(mnist_dir());
    run(c)
}

/// The threads a probe runs with in the tests (torch's count here, so that the in-process
/// number is the same).
pub fn probe_threads() -> usize {
    tch::get_num_threads().max(1) as usize
}

/// The runtime a test's in-process probe runs under: CPU, seed 1, the threads of
/// [`probe_threads`], quiet.
pub fn probe_runtime() -> Runtime {
    Runtime {
        device: Device::Cpu,
        seed: 1,
        dense_seed: 1,
        threads: Some(probe_threads()),
        quiet: true,
    }
}

/// The in-process probe oracle from `start` on `data` with `cfg`'s recipe and settings,
/// under `rt` (the one `dc-search probe` builds from a spec).
pub fn retrainer<'a>(
    start: &'a Net,
    data: &'a Data,
    cfg: &'a Config,
    rt: &'a Runtime,
) -> Retrainer<'a> {
    Retrainer::new(
        start,
        &data.train,
        &data.valid,
        &cfg.train,
        &cfg.compress,
        &cfg.search,
        rt,
    )
}

/// `dc-search probe`'s result `r` is the in-process probe's `m`: the same nonzeros and
/// accuracy, the loss to 10⁻⁴.
pub fn assert_same_probe(r: &ProbeResult, m: &Measure) {
    assert_eq!(m.nonzeros, r.nonzeros);
    assert_eq!(m.accuracy, r.valid_accuracy);
    assert!(
        (m.loss - r.valid_loss).abs() < 1e-4,
        "{} {}",
        m.loss,
        r.valid_loss
    );
}
