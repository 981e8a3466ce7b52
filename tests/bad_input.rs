//! The bad-input table: every way a user can hand dc-search something wrong, one test
//! each. Each runs the real binary and asserts a non-zero exit, exactly one error line
//! that names the thing and the fix, no panic or backtrace, and that nothing partial was
//! left behind (the output absent or unchanged, no `*.part` temp files, no cached model).
//!
//! Data comes from a small synthetic IDX set written per test (no MNIST needed), and the
//! model cache is a temp folder (`DC_SEARCH_CACHE`), so the tests take seconds.
//!
//! The rows for imported weights (`--weights`: a caffemodel or safetensors file with a
//! missing layer, a wrong shape, truncated or not the format at all) are in `import.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use dc_search::config::Config;
use dc_search::models::Net;
use dc_search::weights;
use tch::Device;

use crate::util::{dc_search, run, TestConfig};

/// A small LeNet-300-100 config that trains on the synthetic set in a second.
fn tiny() -> String {
    TestConfig {
        model: "lenet-300-100",
        validation: 40,
        split_seed: 7,
        batch_size: 16,
        iterations: 60,
        rest: "[compress]\nprune_epochs = 5.0\ncodebook_epochs = 1.0\n",
    }
    .toml()
}

/// A scratch folder: synthetic data in `data/`, a config `tiny.toml`, an empty model
/// cache `cache/`, and room for outputs.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let s = Scratch {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(s.data()).unwrap();
        std::fs::create_dir(s.cache()).unwrap();
        write_idx_set(&s.data(), 200, 20);
        s.config(&tiny());
        s
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn data(&self) -> PathBuf {
        self.path("data")
    }

    fn cache(&self) -> PathBuf {
        self.path("cache")
    }

    /// Writes `tiny.toml` with `text` and returns its path.
    fn config(&self, text: &str) -> PathBuf {
        let p = self.path("tiny.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `dc-search ARGS` with this scratch's cache and data, on the CPU, quiet.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = dc_search();
        c.env("DC_SEARCH_CACHE", self.cache())
            .env_remove("DC_SEARCH_DATA_DIR")
            .env_remove("RUST_BACKTRACE")
            .current_dir(self.dir.path())
            .args(args);
        c
    }

    /// Every file under the scratch folder with its bytes.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &mut out);
        out
    }

    /// Runs `c` and checks the refusal; returns the error line.
    fn refused(&self, c: Command, keys: &[&str]) -> String {
        let before = self.snapshot();
        let (code, out, err) = run(c);
        let after = self.snapshot();
        check_refusal(code, &out, &err, keys);
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>(),
            "files appeared or vanished: {err}"
        );
        assert!(before == after, "a file changed: {err}");
        err
    }
}

/// Every entry under `dir` with its bytes (a link: its target; a FIFO, device or socket:
/// its kind, never read).
fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    use std::os::unix::fs::FileTypeExt;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        assert!(
            !p.to_string_lossy().ends_with(".part"),
            "temp file left: {}",
            p.display()
        );
        let t = std::fs::symlink_metadata(&p).unwrap().file_type();
        if t.is_symlink() {
            let target = std::fs::read_link(&p).unwrap();
            out.insert(p, format!("link to {}", target.display()).into_bytes());
        } else if t.is_dir() {
            out.insert(p.clone(), Vec::new());
            walk(&p, out);
        } else if t.is_fifo() || t.is_char_device() || t.is_block_device() || t.is_socket() {
            out.insert(p, b"not a regular file".to_vec());
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
}

/// Makes a FIFO at `p`.
fn mkfifo(p: &Path) {
    let ok = Command::new("mkfifo").arg(p).status().unwrap();
    assert!(ok.success());
}

/// The longest error line (characters, `error: ` included).
const MAX_LINE: usize = 7 + dc_search::runtime::MAX_ERROR_CHARS;

/// Exit 2, one line on stderr starting `error:`, of at most [`MAX_LINE`] characters and no
/// control character, holding every key (case-insensitive), nothing that looks like a panic.
fn check_refusal(code: i32, out: &str, err: &str, keys: &[&str]) {
    assert_eq!(code, 2, "stdout: {out}\nstderr: {err}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "thread 'main'"] {
        assert!(!err.contains(bad), "looks like a panic: {err}");
    }
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        lines[0].chars().count() <= MAX_LINE,
        "{} characters: {err}",
        lines[0].chars().count()
    );
    assert!(!lines[0].chars().any(char::is_control), "{err:?}");
    let lower = lines[0].to_lowercase();
    for k in keys {
        assert!(lower.contains(&k.to_lowercase()), "missing {k:?} in: {err}");
    }
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Four IDX files: `train` and `test` images of random pixels, labels 0..9 by position.
fn write_idx_set(dir: &Path, train: u32, test: u32) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut pixels = |n: u32| -> Vec<u8> {
        (0..n as usize * 784)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect()
    };
    let labels = |n: u32| -> Vec<u8> { (0..n).map(|i| (i % 10) as u8).collect() };
    for (name, bytes) in [
        (
            "train-images-idx3-ubyte",
            idx(&[train, 28, 28], &pixels(train)),
        ),
        ("train-labels-idx1-ubyte", idx(&[train], &labels(train))),
        (
            "t10k-images-idx3-ubyte",
            idx(&[test, 28, 28], &pixels(test)),
        ),
        ("t10k-labels-idx1-ubyte", idx(&[test], &labels(test))),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// `train tiny.toml --data-dir data` on the scratch.
fn train_cmd(s: &Scratch) -> Command {
    let mut c = s.cmd(&[
        "train",
        "tiny.toml",
        "--device",
        "cpu",
        "--quiet",
        "--data-dir",
    ]);
    c.arg(s.data());
    c
}

/// `compress tiny.toml --ratios ratios --bits bits -o output`.
fn compress_to(s: &Scratch, ratios: &str, bits: &str, output: &str) -> Command {
    let mut c = s.cmd(&[
        "compress",
        "tiny.toml",
        "--ratios",
        ratios,
        "--bits",
        bits,
        "--device",
        "cpu",
        "--quiet",
        "-o",
        output,
        "--data-dir",
    ]);
    c.arg(s.data());
    c
}

/// [`compress_to`] writing `out/model.dcz`.
fn compress_cmd(s: &Scratch, ratios: &str, bits: &str) -> Command {
    compress_to(s, ratios, bits, "out/model.dcz")
}

/// The search on the scratch with `--floor floor --out out`.
fn search_to(s: &Scratch, floor: &str, out: &str) -> Command {
    let mut c = s.cmd(&[
        "--floor",
        floor,
        "--device",
        "cpu",
        "--quiet",
        "--out",
        out,
        "tiny.toml",
        "--data-dir",
    ]);
    c.arg(s.data());
    c
}

/// [`search_to`] with the run folder `run`.
fn search_cmd(s: &Scratch, floor: &str) -> Command {
    search_to(s, floor, "run")
}

// ---- data ----------------------------------------------------------------------------

#[test]
fn missing_data_dir() {
    let s = Scratch::new();
    let mut c = s.cmd(&["--floor", "0.9", "--quiet", "--out", "run", "tiny.toml"]);
    c.arg("--data-dir").arg(s.path("absent"));
    s.refused(c, &["absent", "train-images-idx3-ubyte", "--data-dir"]);
}

#[test]
fn idx_bad_magic() {
    let s = Scratch::new();
    let p = s.data().join("train-images-idx3-ubyte");
    let mut b = std::fs::read(&p).unwrap();
    b[0] = 0x50;
    std::fs::write(&p, b).unwrap();
    s.refused(
        train_cmd(&s),
        &["train-images-idx3-ubyte", "bad magic", "download it again"],
    );
}

#[test]
fn idx_truncated() {
    let s = Scratch::new();
    let p = s.data().join("t10k-images-idx3-ubyte");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 100]).unwrap();
    s.refused(
        train_cmd(&s),
        &["t10k-images-idx3-ubyte", "truncated", "download it again"],
    );
}

#[test]
fn idx_truncated_gzip() {
    use std::io::Write;
    let s = Scratch::new();
    let p = s.data().join("train-labels-idx1-ubyte");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&std::fs::read(&p).unwrap()).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::remove_file(&p).unwrap();
    std::fs::write(
        s.data().join("train-labels-idx1-ubyte.gz"),
        &gz[..gz.len() / 2],
    )
    .unwrap();
    s.refused(
        train_cmd(&s),
        &[
            "train-labels-idx1-ubyte.gz",
            "corrupt gzip",
            "download it again",
        ],
    );
}

#[test]
fn idx_image_label_count_mismatch() {
    let s = Scratch::new();
    std::fs::write(
        s.data().join("t10k-labels-idx1-ubyte"),
        idx(&[19], &[1; 19]),
    )
    .unwrap();
    s.refused(
        train_cmd(&s),
        &[
            "20 images",
            "19 labels",
            "t10k-labels-idx1-ubyte",
            "do not belong together",
            "download both again",
        ],
    );
}

#[test]
fn idx_label_out_of_range() {
    let s = Scratch::new();
    let mut labels = vec![0u8; 200];
    labels[17] = 12;
    std::fs::write(
        s.data().join("train-labels-idx1-ubyte"),
        idx(&[200], &labels),
    )
    .unwrap();
    s.refused(train_cmd(&s), &["label 12", "0..9", "download it again"]);
}

#[test]
fn batch_larger_than_the_training_set() {
    let s = Scratch::new();
    s.config(&tiny().replace("batch_size = 16", "batch_size = 512"));
    s.refused(
        train_cmd(&s),
        &["batch size 512", "160 training images", "train.batch_size"],
    );
}

// ---- compressed files ----------------------------------------------------------------

const SMALL_DCZ: &[u8] = include_bytes!("../fuzz/corpus/dcz_decode/small.dcz");

#[test]
fn dcz_bit_flipped() {
    let s = Scratch::new();
    let mut b = SMALL_DCZ.to_vec();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    std::fs::write(s.path("flipped.dcz"), b).unwrap();
    for cmd in ["inspect", "eval"] {
        s.refused(
            s.cmd(&[cmd, "flipped.dcz"]),
            &[
                "flipped.dcz",
                "not a valid dc-search compressed file",
                "checksum mismatch",
                "write it again",
            ],
        );
    }
}

#[test]
fn dcz_truncated() {
    let s = Scratch::new();
    std::fs::write(s.path("cut.dcz"), &SMALL_DCZ[..SMALL_DCZ.len() - 7]).unwrap();
    for cmd in ["inspect", "eval"] {
        s.refused(
            s.cmd(&[cmd, "cut.dcz"]),
            &[
                "cut.dcz",
                "not a valid dc-search compressed file",
                "truncated",
                "write it again",
            ],
        );
    }
}

#[test]
fn dcz_not_a_dcz() {
    let s = Scratch::new();
    std::fs::write(s.path("notes.dcz"), "hello, world").unwrap();
    s.refused(
        s.cmd(&["inspect", "notes.dcz"]),
        &["notes.dcz", "bad magic", "write it again"],
    );
}

// ---- dense weights (through the model cache until --weights lands) ------------------

/// Writes `tensors` as the cached dense model of `tiny.toml` (seed 1) and returns its path.
fn plant_cache(s: &Scratch, tensors: &[(String, Vec<i64>, Vec<f32>)]) -> PathBuf {
    let mut cfg = Config::resolve(s.path("tiny.toml").to_str().unwrap()).unwrap();
    cfg.data.dir = Some(s.data());
    // The key holds the scratch data's content.
    let data = dc_search::data::load(&cfg.data).unwrap();
    let name = dc_search::dense::cache_path(&cfg, &data.cache_id, 1)
        .file_name()
        .unwrap()
        .to_owned();
    let p = s.cache().join("models").join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, weights::to_safetensors(tensors, None).unwrap()).unwrap();
    p
}

fn dense_host() -> Vec<(String, Vec<i64>, Vec<f32>)> {
    let _g = crate::util::torch_seeded(1);
    Net::init(&dc_search::models::Arch::lenet_300_100(), Device::Cpu).to_host()
}

fn eval_cmd(s: &Scratch) -> Command {
    let mut c = s.cmd(&[
        "eval",
        "tiny.toml",
        "--device",
        "cpu",
        "--quiet",
        "--data-dir",
    ]);
    c.arg(s.data());
    c
}

#[test]
fn safetensors_missing_layer() {
    let s = Scratch::new();
    let mut t = dense_host();
    t.retain(|(n, _, _)| n != "fc2.weight");
    plant_cache(&s, &t);
    s.refused(
        eval_cmd(&s),
        &["cached model", "no tensor \"fc2.weight\"", "delete it"],
    );
}

#[test]
fn safetensors_wrong_shape() {
    let s = Scratch::new();
    let mut t = dense_host();
    let fc2 = t.iter_mut().find(|(n, _, _)| n == "fc2.weight").unwrap();
    fc2.1 = vec![300, 100];
    plant_cache(&s, &t);
    s.refused(
        eval_cmd(&s),
        &["cached model", "fc2.weight", "[300, 100]", "delete it"],
    );
}

#[test]
fn safetensors_with_nan() {
    let s = Scratch::new();
    let mut t = dense_host();
    t[4].2[3] = f32::NAN;
    plant_cache(&s, &t);
    s.refused(
        eval_cmd(&s),
        &["cached model", "fc3.weight", "non-finite", "delete it"],
    );
}

#[test]
fn safetensors_not_safetensors() {
    let s = Scratch::new();
    let p = plant_cache(&s, &dense_host());
    std::fs::write(&p, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    s.refused(eval_cmd(&s), &["cached model", "unreadable", "delete it"]);
}

// ---- flags ---------------------------------------------------------------------------

#[test]
fn unknown_model_name() {
    let s = Scratch::new();
    s.refused(
        s.cmd(&[
            "compress", "vgg16", "--ratios", "0.5", "--bits", "4", "-o", "o.dcz",
        ]),
        &["unknown model \"vgg16\"", "lenet-300-100", ".toml"],
    );
}

#[test]
fn floor_zero() {
    let s = Scratch::new();
    s.refused(search_cmd(&s, "0"), &["--floor 0", "(0, 1]"]);
}

#[test]
fn floor_above_one() {
    let s = Scratch::new();
    s.refused(search_cmd(&s, "1.5"), &["--floor 1.5", "(0, 1]"]);
}

#[test]
fn floor_nan() {
    let s = Scratch::new();
    s.refused(search_cmd(&s, "NaN"), &["--floor NaN", "(0, 1]"]);
}

#[test]
fn floor_not_a_number() {
    let s = Scratch::new();
    s.refused(
        search_cmd(&s, "abc"),
        &["--floor \"abc\" is not a number", "(0, 1]"],
    );
}

#[test]
fn bits_zero() {
    let s = Scratch::new();
    s.refused(
        compress_cmd(&s, "0.5,0.5,0.5", "0,6,6"),
        &["0 bits for layer fc1", "1 to 16"],
    );
}

#[test]
fn bits_seventeen() {
    let s = Scratch::new();
    s.refused(
        compress_cmd(&s, "0.5,0.5,0.5", "6,6,17"),
        &["17 bits for layer fc3", "1 to 16"],
    );
}

#[test]
fn ratio_negative() {
    let s = Scratch::new();
    s.refused(
        compress_cmd(&s, "0.5,-0.1,0.5", "6,6,6"),
        &["sparse ratio -0.1 for layer fc2", "[0, 1)"],
    );
}

#[test]
fn ratio_one_or_more() {
    let s = Scratch::new();
    for r in ["1", "1.2"] {
        s.refused(
            compress_cmd(&s, &format!("{r},0.5,0.5"), "6,6,6"),
            &[&format!("sparse ratio {r} for layer fc1"), "[0, 1)"],
        );
    }
}

// ---- outputs -------------------------------------------------------------------------

#[test]
fn output_under_a_regular_file() {
    let s = Scratch::new();
    std::fs::write(s.path("a-file"), "x").unwrap();
    s.refused(
        compress_to(&s, "0.5,0.5,0.5", "6,6,6", "a-file/sub/model.dcz"),
        &["a-file/sub", "a-file is a file", "writable place"],
    );
    s.refused(
        search_to(&s, "0.5", "a-file/run"),
        &["a-file/run", "a-file is a file", "writable place"],
    );
}

#[test]
fn output_in_proc() {
    let s = Scratch::new();
    s.refused(
        compress_to(&s, "0.5,0.5,0.5", "6,6,6", "/proc/x/model.dcz"),
        &["/proc/x", "not writable", "writable place"],
    );
}

#[test]
fn output_is_a_folder() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("out")).unwrap();
    s.refused(
        compress_to(&s, "0.5,0.5,0.5", "6,6,6", "out"),
        &["output out is a folder", "file name"],
    );
}

// ---- training ------------------------------------------------------------------------

#[test]
fn dense_training_diverges_to_nan() {
    let s = Scratch::new();
    s.config(&tiny().replace("base_lr = 0.01", "base_lr = 1e30"));
    s.refused(
        train_cmd(&s),
        &["training diverged", "nan", "base_lr", "nothing was cached"],
    );
    assert!(!s.cache().join("models").exists());
}

#[test]
fn retraining_at_a_rate_that_can_only_diverge_is_refused_before_any_work() {
    let s = Scratch::new();
    // A rate beyond 1000 × the dense one is refused up front; a retraining that diverges at
    // every fallback rate is the unit test
    // `compress::tests::a_diverging_retraining_starts_again_from_its_start_at_a_smaller_rate`.
    let mut c = compress_cmd(&s, "0.5,0.5,0.5", "6,6,6");
    c.args(["--lr-scale", "1e30"]);
    s.refused(c, &["--lr-scale", "at most 1000"]);
    assert!(!s.path("out").exists());
}

#[test]
fn a_diverging_retraining_starts_again_at_a_smaller_rate_and_says_so() {
    let s = Scratch::new();
    let (code, _, err) = run(train_cmd(&s));
    assert_eq!(code, 0, "{err}");
    // At 1000 times the rate the pruned retraining diverges, and again at √10 times less;
    // 10 times less trains.
    let mut c = compress_cmd(&s, "0.5,0.5,0.5", "6,6,6");
    c.args(["--lr-scale", "1000"]);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(it diverged 2 times and started again at smaller learning rates)"),
        "{out}"
    );
    // The search records it per probe in trials.csv and names the probes in report.md
    // (probes of 20 epochs at that rate: long enough for the loss to turn NaN).
    s.config(&format!(
        "{}[search]\nlr_scale = 1000.0\nmax_ratio = 0.5\nprobe_epochs = 20.0\n",
        tiny()
    ));
    let mut c = search_cmd(&s, "0.01");
    c.args(["--budget", "3p"]);
    let (code, _, err) = run(c);
    assert_eq!(code, 0, "{err}");
    let trials = std::fs::read_to_string(s.path("run/trials.csv")).unwrap();
    let header: Vec<&str> = trials.lines().next().unwrap().split(',').collect();
    let column = header.iter().position(|&h| h == "lr_restarts");
    let column = column.unwrap_or_else(|| panic!("no lr_restarts column: {trials}"));
    // The warm-start column may hold a quoted comma; count from the end.
    let from_end = header.len() - column;
    let restarted = trials
        .lines()
        .skip(1)
        .filter(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            cells[cells.len() - from_end] != "0"
        })
        .count();
    assert!(restarted > 0, "{trials}");
    let report = std::fs::read_to_string(s.path("run/report.md")).unwrap();
    assert!(
        report.contains("| retrainings that diverged | probe"),
        "{report}"
    );
}

// ---- compression that ruins the model --------------------------------------------------

/// Four IDX files an MLP learns in a few iterations: an image of class c is noise with
/// rows 2c and 2c+1 lit.
fn write_learnable_idx_set(dir: &Path, train: u32, test: u32) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut images = |n: u32| -> Vec<u8> {
        let mut out = Vec::with_capacity(n as usize * 784);
        for i in 0..n {
            let c = (i % 10) as usize;
            for p in 0..784 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let row = p / 28;
                out.push(if row / 2 == c {
                    255
                } else {
                    (state >> 59) as u8
                });
            }
        }
        out
    };
    let labels = |n: u32| -> Vec<u8> { (0..n).map(|i| (i % 10) as u8).collect() };
    for (name, bytes) in [
        (
            "train-images-idx3-ubyte",
            idx(&[train, 28, 28], &images(train)),
        ),
        ("train-labels-idx1-ubyte", idx(&[train], &labels(train))),
        (
            "t10k-images-idx3-ubyte",
            idx(&[test, 28, 28], &images(test)),
        ),
        ("t10k-labels-idx1-ubyte", idx(&[test], &labels(test))),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn compress_that_collapses_the_model_writes_nothing() {
    let s = Scratch::new();
    write_learnable_idx_set(&s.data(), 200, 20);
    let (code, _, err) = run(train_cmd(&s));
    assert_eq!(code, 0, "{err}");
    // Everything pruned and no retraining: the decoded model answers one class.
    let mut c = compress_cmd(&s, "0.9999,0.9999,0.9999", "2,2,2");
    c.args(["--prune-epochs", "0", "--codebook-epochs", "0"]);
    s.refused(
        c,
        &[
            "collapsed to chance level",
            "nothing was written",
            "--max-loss",
        ],
    );
    assert!(!s.path("out").exists());
}

#[test]
fn compress_max_loss_out_of_range() {
    let s = Scratch::new();
    let mut c = compress_cmd(&s, "0.5,0.5,0.5", "6,6,6");
    c.arg("--max-loss=-3");
    s.refused(c, &["--max-loss \"-3\"", "percentage points"]);
}

// ---- compressed files with valid checksums but inconsistent contents ------------------

/// An empty (all pruned) LeNet-300-100 file: fc1 [300, 784], fc2 [100, 300], fc3 [10, 100].
fn empty_lenet_300_100() -> dc_search::format::CompressedModel {
    use dc_search::format::{BiasPrecision, CompressedModel, Layer, LayerKind};
    let layer = |name: &str, shape: [u32; 2]| Layer {
        name: name.into(),
        kind: LayerKind::Linear,
        shape: shape.to_vec(),
        bits: 2,
        codebook: vec![],
        positions: vec![],
        clusters: vec![],
        bias: vec![0.0; shape[0] as usize],
        bias_precision: BiasPrecision::F32,
    };
    CompressedModel {
        model: "lenet-300-100".into(),
        dataset: "mnist".into(),
        input_shape: vec![1, 28, 28],
        input_scale: 1.0 / 256.0,
        input_shift: 0.0,
        layers: vec![
            layer("fc1", [300, 784]),
            layer("fc2", [100, 300]),
            layer("fc3", [10, 100]),
        ],
        origin: None,
    }
}

/// Writes `m` with valid checksums whatever it holds, and returns the file name.
fn write_unchecked(s: &Scratch, name: &str, m: &dc_search::format::CompressedModel) -> String {
    let bytes = dc_search::format::encode_unchecked(m).unwrap();
    std::fs::write(s.path(name), bytes).unwrap();
    name.to_string()
}

fn eval_file(s: &Scratch, file: &str) -> Command {
    let mut c = s.cmd(&["eval", file, "--device", "cpu", "--quiet", "--data-dir"]);
    c.arg(s.data());
    c
}

#[test]
fn dcz_bias_longer_than_the_layer() {
    let s = Scratch::new();
    let good = empty_lenet_300_100();
    assert!(dc_search::format::encode(&good).is_ok());
    let mut m = good;
    m.layers[0].bias = vec![0.1; 5];
    let f = write_unchecked(&s, "bias5.dcz", &m);
    for c in [eval_file(&s, &f), s.cmd(&["inspect", &f])] {
        s.refused(
            c,
            &[
                "bias5.dcz",
                "fc1",
                "bias has 5 entries",
                "300",
                "write it again",
            ],
        );
    }
}

#[test]
fn dcz_two_layers_with_one_name() {
    let s = Scratch::new();
    let mut m = empty_lenet_300_100();
    m.layers[1].name = "fc1".into();
    let f = write_unchecked(&s, "twice.dcz", &m);
    s.refused(
        s.cmd(&["export", &f, "--to", "safetensors", "-o", "x.safetensors"]),
        &["twice.dcz", "both named \"fc1\"", "write it again"],
    );
}

#[test]
fn dcz_declares_a_huge_layer_in_a_few_bytes() {
    use dc_search::format::{BiasPrecision, CompressedModel, Layer, LayerKind};
    let s = Scratch::new();
    let m = CompressedModel {
        model: "m".into(),
        dataset: "mnist".into(),
        input_shape: vec![],
        input_scale: 1.0,
        input_shift: 0.0,
        layers: vec![Layer {
            name: "fc1".into(),
            kind: LayerKind::Linear,
            shape: vec![65_535, 65_535],
            bits: 1,
            codebook: vec![],
            positions: vec![],
            clusters: vec![],
            bias: vec![],
            bias_precision: BiasPrecision::F32,
        }],
        origin: None,
    };
    let f = write_unchecked(&s, "huge.dcz", &m);
    assert!(std::fs::metadata(s.path(&f)).unwrap().len() < 80);
    for c in [
        s.cmd(&["export", &f, "--to", "safetensors", "-o", "x.safetensors"]),
        s.cmd(&["inspect", &f]),
    ] {
        s.refused(c, &["huge.dcz", "4294836225 weights", "--max-params"]);
    }
    s.refused(
        s.cmd(&["inspect", &f, "--max-params", "0"]),
        &["--max-params 0"],
    );
}

#[test]
fn dcz_conv_layer_where_the_model_has_a_linear_one() {
    let s = Scratch::new();
    let mut m = empty_lenet_300_100();
    m.layers[1].kind = dc_search::format::LayerKind::Conv;
    let f = write_unchecked(&s, "kind.dcz", &m);
    s.refused(eval_file(&s, &f), &["fc2", "Conv", "Linear"]);
}

#[test]
fn dcz_input_scale_that_makes_nan() {
    let s = Scratch::new();
    let mut m = empty_lenet_300_100();
    m.input_scale = 3.0e38;
    let f = write_unchecked(&s, "scale.dcz", &m);
    s.refused(
        eval_file(&s, &f),
        &["scale.dcz", "input_scale", "write it again"],
    );
}

// ---- inputs that are not regular files ---------------------------------------------

#[test]
fn dev_zero_as_a_compressed_file() {
    let s = Scratch::new();
    s.refused(
        s.cmd(&["inspect", "/dev/zero"]),
        &["/dev/zero", "not a regular file"],
    );
    s.refused(
        eval_file(&s, "/dev/zero"),
        &["/dev/zero", "not a regular file"],
    );
}

#[test]
fn fifo_as_an_input() {
    let s = Scratch::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let fifo = elsewhere.path().join("pipe.dcz");
    let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(ok.success());
    let f = fifo.to_str().unwrap();
    s.refused(s.cmd(&["inspect", f]), &["pipe.dcz", "not a regular file"]);
    s.refused(eval_file(&s, f), &["pipe.dcz", "not a regular file"]);
}

#[test]
fn weights_from_dev_zero() {
    let s = Scratch::new();
    let mut c = eval_cmd(&s);
    c.args(["--weights", "/dev/zero"]);
    s.refused(c, &["--weights /dev/zero", "not a regular file"]);
}

// ---- settings ------------------------------------------------------------------------

#[test]
fn config_bits_max_sixty_four() {
    let s = Scratch::new();
    s.config(&format!("{}\n[search]\nbits_max = 64\n", tiny()));
    s.refused(
        search_cmd(&s, "0.5"),
        &["tiny.toml", "search.bits_max = 64", "1..=16"],
    );
}

#[test]
fn config_syntax_error_is_one_line() {
    let s = Scratch::new();
    s.config(&tiny().replace("validation = 40", "validation = forty"));
    s.refused(
        train_cmd(&s),
        &["tiny.toml", "line 5", "validation = forty"],
    );
}

#[test]
fn threads_a_hundred_thousand() {
    let s = Scratch::new();
    let mut c = eval_cmd(&s);
    c.args(["--threads", "100000"]);
    s.refused(c, &["--threads 100000", "1 to 1024"]);
}

// ---- run folders ---------------------------------------------------------------------

/// A run folder of a search with other settings: its journal, config and sensitivity.
fn plant_other_run(s: &Scratch) {
    let run = s.path("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(
        run.join("journal.jsonl"),
        "{\"header\":{\"journal\":1,\"key\":\"another run\"}}\n",
    )
    .unwrap();
    for f in ["config.toml", "sensitivity.csv", "sensitivity.svg"] {
        std::fs::write(run.join(f), "the other run's\n").unwrap();
    }
}

#[test]
fn resume_with_other_settings_writes_nothing() {
    let s = Scratch::new();
    let (code, _, err) = run(train_cmd(&s));
    assert_eq!(code, 0, "{err}");
    plant_other_run(&s);
    s.refused(
        search_cmd(&s, "0.01"),
        &["journal.jsonl", "belongs to a search with other settings"],
    );
}

#[test]
fn run_folder_held_by_a_live_search() {
    let s = Scratch::new();
    let (code, _, err) = run(train_cmd(&s));
    assert_eq!(code, 0, "{err}");
    std::fs::create_dir(s.path("run")).unwrap();
    // This test's own process stands for the other search.
    std::fs::write(s.path("run/lock"), format!("{}\n", std::process::id())).unwrap();
    s.refused(
        search_cmd(&s, "0.01"),
        &["run folder run is in use", "another --out"],
    );
}

// ---- smaller ---------------------------------------------------------------------------

#[test]
fn ratios_name_a_layer_twice() {
    let s = Scratch::new();
    s.refused(
        compress_cmd(&s, "fc1=0.5,fc1=0.9", "6,6,6"),
        &["--ratios", "layer fc1 is given twice"],
    );
}

#[test]
fn ratios_json_with_a_newline_in_a_layer_name() {
    let s = Scratch::new();
    let text = r#"{"model":"lenet","dataset":"mnist","floor":0.99,"layers":[{"name":"fc1\n- evil: 1","sparse_ratio":0.5,"bits":5}]}"#;
    std::fs::write(s.path("ratios.json"), text).unwrap();
    s.refused(
        s.cmd(&["export", "ratios.json", "--to", "distiller"]),
        &["ratios.json", "[A-Za-z0-9_.-]"],
    );
}

// ---- one bounded reader for every input ------------------------------------------------

/// A probe spec of the tiny config whose dense weights are `dense`.
fn spec_with_dense(s: &Scratch, dense: &str) -> PathBuf {
    let spec = dc_search::search::spec::ProbeSpec {
        spec: dc_search::search::spec::SPEC_VERSION,
        config: tiny(),
        dense: dense.into(),
        dense_sha256: "00".into(),
        warm_start: None,
        action: dc_search::search::spec::Action::Prune,
        ratios: vec![0.5, 0.5, 0.5],
        bits: vec![],
        epochs: 1.0,
        seed: 1,
        offset: 1,
        threshold: 0.5,
    };
    let p = s.path("spec.json");
    std::fs::write(&p, serde_json::to_string(&spec).unwrap()).unwrap();
    p
}

fn probe_cmd(s: &Scratch, spec: &Path) -> Command {
    let mut c = s.cmd(&["probe", "--device", "cpu", "--quiet", "--spec"]);
    c.arg(spec).arg("--data-dir").arg(s.data());
    c
}

#[test]
fn a_probe_spec_that_is_a_fifo_or_a_device() {
    let s = Scratch::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let fifo = elsewhere.path().join("spec.json");
    mkfifo(&fifo);
    s.refused(
        probe_cmd(&s, &fifo),
        &["probe spec", "spec.json", "a FIFO (named pipe)"],
    );
    s.refused(
        probe_cmd(&s, Path::new("/dev/zero")),
        &["probe spec /dev/zero", "a character device"],
    );
}

#[test]
fn a_probe_result_that_is_a_fifo_is_not_waited_on() {
    let s = Scratch::new();
    let spec = spec_with_dense(&s, "/dev/zero");
    // The result the spec names is a FIFO: read without blocking, found not to be one, and
    // the probe goes on to hash its dense weights, which /dev/zero is not either.
    let elsewhere = tempfile::tempdir().unwrap();
    let result = elsewhere.path().join("r.result.json");
    mkfifo(&result);
    let mut c = probe_cmd(&s, &spec);
    c.arg("--out").arg(&result);
    s.refused(c, &["r.result.json", "a FIFO", "never replaced"]);
}

#[test]
fn dense_weights_to_hash_from_dev_zero() {
    let s = Scratch::new();
    let spec = spec_with_dense(&s, "/dev/zero");
    s.refused(
        probe_cmd(&s, &spec),
        &["the dense weights", "/dev/zero", "a character device"],
    );
    std::os::unix::fs::symlink("/dev/zero", s.path("zero.safetensors")).unwrap();
    let spec = spec_with_dense(&s, s.path("zero.safetensors").to_str().unwrap());
    s.refused(
        probe_cmd(&s, &spec),
        &[
            "zero.safetensors",
            "a link to /dev/zero, a character device",
        ],
    );
}

#[test]
fn a_data_file_that_is_a_folder_or_a_link_to_dev_zero() {
    let s = Scratch::new();
    let images = s.data().join("train-images-idx3-ubyte");
    std::fs::remove_file(&images).unwrap();
    std::fs::create_dir(&images).unwrap();
    s.refused(
        train_cmd(&s),
        &[
            "train-images-idx3-ubyte",
            "is a folder",
            "not a regular file",
        ],
    );
    std::fs::remove_dir(&images).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &images).unwrap();
    s.refused(
        train_cmd(&s),
        &[
            "train-images-idx3-ubyte",
            "a link to /dev/zero, a character device",
        ],
    );
}

#[test]
fn a_config_that_is_a_fifo() {
    let s = Scratch::new();
    std::fs::remove_file(s.path("tiny.toml")).unwrap();
    mkfifo(&s.path("tiny.toml"));
    s.refused(train_cmd(&s), &["config file tiny.toml", "a FIFO"]);
}

#[test]
fn a_cached_model_that_is_a_folder() {
    let s = Scratch::new();
    let p = plant_cache(&s, &dense_host());
    std::fs::remove_file(&p).unwrap();
    std::fs::create_dir(&p).unwrap();
    s.refused(train_cmd(&s), &["cached model", "is a folder", "remove it"]);
}

#[test]
fn an_empty_cache_variable_is_unset_not_the_working_folder() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("home")).unwrap();
    let mut c = train_cmd(&s);
    c.env("DC_SEARCH_CACHE", "").env("HOME", s.path("home"));
    let (code, _, err) = run(c);
    assert_eq!(code, 0, "{err}");
    assert!(!s.path("models").exists(), "cached in the working folder");
    assert!(s.path("home/.cache/dc-search/models").is_dir());
}

// ---- one output rule for every output --------------------------------------------------

#[test]
fn outputs_that_are_not_regular_files_are_never_replaced() {
    let s = Scratch::new();
    mkfifo(&s.path("pipe.dcz"));
    std::os::unix::fs::symlink("/dev/null", s.path("null.dcz")).unwrap();
    for (out, kind) in [
        ("pipe.dcz", "a FIFO (named pipe)"),
        ("null.dcz", "a link to /dev/null, a character device"),
        ("/dev/null", "a character device"),
    ] {
        // Refused before the work: no dense model was trained (the cache stays empty).
        s.refused(
            compress_to(&s, "0.5,0.5,0.5", "6,6,6", out),
            &[out, kind, "never replaced"],
        );
        s.refused(
            s.cmd(&["export", "ratios.json", "--to", "csv", "-o", out]),
            &[out, kind],
        );
    }
}

#[test]
fn an_output_named_as_a_folder_is_refused_before_the_work() {
    let s = Scratch::new();
    s.refused(
        compress_to(&s, "0.5,0.5,0.5", "6,6,6", "missing/"),
        &["output missing/", "names a folder", "file name"],
    );
    let f = write_unchecked(&s, "m.dcz", &empty_lenet_300_100());
    s.refused(
        s.cmd(&["export", &f, "--to", "safetensors", "-o", "new/"]),
        &["output new/", "names a folder"],
    );
}

#[test]
fn an_output_through_dotdot_of_a_missing_folder_creates_nothing() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("a")).unwrap();
    s.refused(
        compress_to(&s, "0.5,0.5,0.5", "6,6,6", "a/missing/../x.dcz"),
        &["a/missing", "..", "writable place"],
    );
    s.refused(
        search_to(&s, "0.5", "a/missing/../run"),
        &["a/missing", ".."],
    );
    assert!(!s.path("a/missing").exists());
}

// ---- run folders: only dc-search's are written into -------------------------------------

#[test]
fn out_into_a_folder_of_other_files() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("mine/checkpoints")).unwrap();
    for f in ["config.toml", "report.md", "trials.csv"] {
        std::fs::write(s.path("mine").join(f), "the user's own\n").unwrap();
    }
    // Refused before the dense model is trained (the cache stays empty).
    s.refused(
        search_to(&s, "0.5", "mine"),
        &[
            "--out mine",
            "checkpoints, config.toml, report.md",
            "not a dc-search run folder",
            "new or empty folder",
        ],
    );
}

#[test]
fn a_journal_without_its_header_line() {
    let s = Scratch::new();
    let (code, _, err) = run(train_cmd(&s));
    assert_eq!(code, 0, "{err}");
    std::fs::create_dir(s.path("run")).unwrap();
    std::fs::write(
        s.path("run/journal.jsonl"),
        "{\"sweep\":{\"points\":[],\"seconds\":1.0}}\n{\"sweep\":{\"points\":[],\"seconds\":2.0}}\n",
    )
    .unwrap();
    s.refused(
        search_cmd(&s, "0.01"),
        &["journal.jsonl", "has no header line", "another --out"],
    );
}

#[test]
fn a_lock_that_is_a_folder_or_a_fifo() {
    let s = Scratch::new();
    let (code, _, err) = run(train_cmd(&s));
    assert_eq!(code, 0, "{err}");
    std::fs::create_dir_all(s.path("run/lock")).unwrap();
    s.refused(
        search_cmd(&s, "0.01"),
        &["lock", "is a folder", "not the lock file", "remove it"],
    );
    std::fs::remove_dir(s.path("run/lock")).unwrap();
    mkfifo(&s.path("run/lock"));
    s.refused(search_cmd(&s, "0.01"), &["lock", "a FIFO (named pipe)"]);
}

// ---- SIGINT and SIGTERM stop every long command ----------------------------------------

/// Starts `c` (not quiet), waits for a stderr line holding `ready`, then a moment, sends
/// `sig` and returns the exit code, the stderr lines after `ready` and how long the process
/// took to end after the signal. Nothing is written meanwhile that the caller does not
/// check: the scratch's files are compared around the whole run.
fn stop_with(c: Command, sig: i32, ready: &str) -> (i32, Vec<String>, std::time::Duration) {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut c = c;
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines() {
            tx.send(line.unwrap_or_default()).unwrap();
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline - std::time::Instant::now())
            .unwrap_or_else(|_| panic!("no line with {ready:?} before 120 s: {seen:?}"));
        let hit = line.contains(ready);
        seen.push(line);
        if hit {
            break;
        }
    }
    // The long part is under way.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "it ended by itself: {seen:?}"
    );
    let sent = std::time::Instant::now();
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    reader.join().unwrap();
    let after: Vec<String> = rx.try_iter().collect();
    (status.code().unwrap_or(-1), after, took)
}

/// Checks a stop: exit 128 + the signal, one error line naming the signal (SIGTERM never
/// called Ctrl-C), within a second and a half (a second, and the machine's load).
fn check_stop((code, lines, took): (i32, Vec<String>, std::time::Duration), sig: i32) {
    let said = if sig == libc::SIGTERM {
        "terminated by SIGTERM"
    } else {
        "interrupted by SIGINT (Ctrl-C)"
    };
    assert_eq!(code, 128 + sig, "{lines:?}");
    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{lines:?}");
    assert!(errors[0].contains(said), "{lines:?}");
    if sig == libc::SIGTERM {
        assert!(!errors[0].contains("Ctrl-C"), "{lines:?}");
    }
    assert!(
        took < std::time::Duration::from_millis(1500),
        "took {took:?} to stop"
    );
}

/// A config whose training and retraining take minutes on the scratch's data.
fn long_config(s: &Scratch) {
    s.config(
        &tiny()
            .replace("iterations = 60", "iterations = 10000000")
            .replace("prune_epochs = 5.0", "prune_epochs = 10000.0"),
    );
}

/// The scratch's dense model trained (the quick config), then the long config written.
fn trained_then_long(s: &Scratch) {
    let (code, _, err) = run(train_cmd(s));
    assert_eq!(code, 0, "{err}");
    long_config(s);
    cache_as_current(s);
}

/// The scratch's cache file for `tiny.toml` as it is now.
fn cache_file(s: &Scratch) -> PathBuf {
    let mut cfg = Config::resolve(s.path("tiny.toml").to_str().unwrap()).unwrap();
    cfg.data.dir = Some(s.data());
    // The scratch's data are not MNIST's: the key holds their content.
    let data = dc_search::data::load(&cfg.data).unwrap();
    let name = dc_search::dense::cache_path(&cfg, &data.cache_id, 1)
        .file_name()
        .unwrap()
        .to_owned();
    s.cache().join("models").join(name)
}

/// The scratch's one cached dense model copied to the cache entry of `tiny.toml` as it is
/// now (a config with another recipe keys another entry: the quick one stands in for it).
fn cache_as_current(s: &Scratch) {
    let cached = std::fs::read_dir(s.cache().join("models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let key = cache_file(s);
    if key != cached {
        std::fs::copy(&cached, &key).unwrap();
    }
}

/// A command without `--quiet`.
fn loud(c: Command) -> Command {
    let mut c2 = Command::new(c.get_program());
    c2.args(c.get_args().filter(|a| *a != "--quiet"));
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => c2.env(k, v),
            None => c2.env_remove(k),
        };
    }
    if let Some(d) = c.get_current_dir() {
        c2.current_dir(d);
    }
    c2
}

#[test]
fn train_stops_on_sigint_and_sigterm_and_caches_nothing() {
    let s = Scratch::new();
    long_config(&s);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let before = s.snapshot();
        check_stop(stop_with(loud(train_cmd(&s)), sig, "device cpu"), sig);
        assert!(before == s.snapshot(), "a file changed");
    }
}

#[test]
fn compress_stops_on_sigint_and_sigterm_and_writes_nothing() {
    let s = Scratch::new();
    trained_then_long(&s);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let before = s.snapshot();
        let c = loud(compress_cmd(&s, "0.5,0.5,0.5", "6,6,6"));
        check_stop(stop_with(c, sig, "device cpu"), sig);
        assert!(before == s.snapshot(), "a file changed");
    }
}

#[test]
fn sensitivity_stops_on_sigint_and_sigterm_and_writes_nothing() {
    let s = Scratch::new();
    trained_then_long(&s);
    // A sweep of 3 layers × 999 ratios.
    let grid: Vec<String> = (0..999).map(|i| format!("{}", i as f64 / 1000.0)).collect();
    s.config(&format!(
        "{}[search]\ngrid = [{}]\n",
        std::fs::read_to_string(s.path("tiny.toml")).unwrap(),
        grid.join(", ")
    ));
    cache_as_current(&s);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let before = s.snapshot();
        let mut c = s.cmd(&[
            "sensitivity",
            "tiny.toml",
            "--device",
            "cpu",
            "--out",
            "sweep",
        ]);
        c.arg("--data-dir").arg(s.data());
        check_stop(stop_with(c, sig, "device cpu"), sig);
        assert!(before == s.snapshot(), "a file changed");
    }
}

#[test]
fn bench_stops_on_sigint_and_sigterm() {
    let s = Scratch::new();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let c = s.cmd(&["bench", "search", "lenet", "--runs", "100000"]);
        // Its first line is on stdout: wait for the process to be running, then signal.
        let mut c = c;
        c.stdout(std::process::Stdio::null());
        let mut child = c.stderr(std::process::Stdio::piped()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert!(child.try_wait().unwrap().is_none());
        let sent = std::time::Instant::now();
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        let out = child.wait_with_output().unwrap();
        let took = sent.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<String> = err.lines().map(String::from).collect();
        check_stop((out.status.code().unwrap_or(-1), lines, took), sig);
    }
}

#[test]
fn a_search_stops_on_sigint_and_sigterm_and_keeps_its_journal() {
    let s = Scratch::new();
    trained_then_long(&s);
    s.config(&format!(
        "{}[search]\nprobe_epochs = 10000.0\n",
        std::fs::read_to_string(s.path("tiny.toml")).unwrap()
    ));
    cache_as_current(&s);
    // The first run sweeps, the second replays the sweep; then each retrains its first probe.
    for (sig, ready) in [
        (libc::SIGINT, "sensitivity:"),
        (libc::SIGTERM, "resuming from"),
    ] {
        let c = loud(search_cmd(&s, "0.01"));
        check_stop(stop_with(c, sig, ready), sig);
        assert!(s.path("run/journal.jsonl").is_file());
        assert!(!s.path("run/lock").exists(), "the lock was left");
        let report = std::fs::read_to_string(s.path("run/report.md")).unwrap();
        assert!(report.contains("interrupted"), "{report}");
        // No temporary file left (walk asserts it).
        walk(&s.path("run"), &mut BTreeMap::new());
    }
}

// ---- a brought TorchScript module that fails past its load-time checks -----------------

/// Writes `m.pt` (tiny-cnn with its code changed by `edit`) and `ts.toml`, a config of it
/// on the scratch's data with a forward time limit of 1.5 s; returns the config's name.
fn torchscript_scratch(s: &Scratch, edit: impl Fn(&str) -> String) -> &'static str {
    std::fs::write(s.path("m.pt"), crate::util::torchscript_variant(edit)).unwrap();
    let config = tiny()
        .replace("model = \"lenet-300-100\"", "model = \"tiny-cnn\"")
        .replace(
            "[data]",
            "[torchscript]\nmodule = \"m.pt\"\ninput_shape = [1, 28, 28]\nforward_seconds = 1.5\n\
             layers = [ { name = \"conv1\", weight = \"conv1.weight\", bias = \"conv1.bias\" },\n\
             { name = \"fc1\", weight = \"fc1.weight\", bias = \"fc1.bias\" },\n\
             { name = \"fc2\", weight = \"fc2.weight\", bias = \"fc2.bias\" } ]\n[data]",
        );
    std::fs::write(s.path("ts.toml"), config).unwrap();
    "ts.toml"
}

fn ts_cmd(s: &Scratch, args: &[&str]) -> Command {
    let mut c = s.cmd(args);
    c.args(["--device", "cpu", "--quiet", "--data-dir"])
        .arg(s.data());
    c
}

#[test]
fn torchscript_unchanged_runs() {
    // The rows below change one thing of this module, which works as it is.
    let s = Scratch::new();
    let cfg = torchscript_scratch(&s, |c| c.to_string());
    let (code, out, err) = run(ts_cmd(&s, &["eval", cfg]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("validation: accuracy"), "{out}");
}

#[test]
fn torchscript_forward_that_never_returns() {
    let s = Scratch::new();
    let cfg = torchscript_scratch(&s, |c| {
        crate::util::forward_prefixed(
            c,
            "    i = 0\n    while bool(torch.ge(torch.sum(torch.abs(x)), 0.)):\n      i = i + 1\n",
        )
    });
    let t = std::time::Instant::now();
    s.refused(
        ts_cmd(&s, &["eval", cfg]),
        &[
            "m.pt",
            "ran past torchscript.forward_seconds = 1.5 s",
            "never ends",
        ],
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn torchscript_that_fails_on_real_inputs() {
    let s = Scratch::new();
    // Zeros (the load-time check) pass; a real image does not.
    let cfg = torchscript_scratch(&s, |c| {
        crate::util::forward_prefixed(
            c,
            "    if bool(torch.gt(torch.max(x), 0.5)):\n      \
             ops.prim.RaiseException(\"real input\", \"builtins.Exception\")\n    else:\n      pass\n",
        )
    });
    for args in [
        &["eval", cfg][..],
        &[
            "compress",
            cfg,
            "--ratios",
            "0.5,0.5,0.5",
            "--bits",
            "4,4,4",
            "-o",
            "x.dcz",
        ],
    ] {
        s.refused(
            ts_cmd(&s, args),
            &["m.pt failed in forward", "builtins.Exception: real input"],
        );
    }
}

#[test]
fn torchscript_that_fails_at_another_batch_size() {
    let s = Scratch::new();
    // Batches of 1 and 3 (the load-time check) pass; evaluation's 40 does not.
    let cfg = torchscript_scratch(&s, |c| {
        crate::util::forward_prefixed(
            c,
            "    if torch.gt(torch.size(x, 0), 8):\n      \
             ops.prim.RaiseException(\"batch too large\", \"builtins.RuntimeError\")\n    else:\n      pass\n",
        )
    });
    s.refused(
        ts_cmd(
            &s,
            &[
                "compress",
                cfg,
                "--ratios",
                "0.5,0.5,0.5",
                "--bits",
                "4,4,4",
                "-o",
                "x.dcz",
            ],
        ),
        &[
            "m.pt failed in forward (a batch of 40)",
            "builtins.RuntimeError: batch too large",
        ],
    );
    // Logits of another shape at a batch size the check did not try.
    let cfg = torchscript_scratch(&s, |c| {
        c.replace(
            "return torch.div(_3, temperature)",
            "if torch.gt(torch.size(x, 0), 8):\n      return torch.narrow(torch.div(_3, temperature), 1, 0, 9)\n    \
             else:\n      return torch.div(_3, temperature)",
        )
    });
    s.refused(
        ts_cmd(&s, &["eval", cfg]),
        &["m.pt", "returned shape [40, 9]", "[n, 10] when loaded"],
    );
    // A batch of 3 fails when loaded: refused before anything runs.
    let cfg = torchscript_scratch(&s, |c| {
        crate::util::forward_prefixed(c, "    x = torch.reshape(x, [1, 1, 28, 28])\n")
    });
    s.refused(
        ts_cmd(&s, &["eval", cfg]),
        &[
            "m.pt",
            "a batch of shape [3, 1, 28, 28] failed",
            "shape '[1, 1, 28, 28]' is invalid",
        ],
    );
}

#[test]
fn torchscript_with_fewer_logits_than_classes() {
    let s = Scratch::new();
    let cfg = torchscript_scratch(&s, |c| {
        c.replace(
            "return torch.div(_3, temperature)",
            "return torch.narrow(torch.div(_3, temperature), 1, 0, 5)",
        )
    });
    for args in [
        &["eval", cfg][..],
        &[
            "compress",
            cfg,
            "--ratios",
            "0.5,0.5,0.5",
            "--bits",
            "4,4,4",
            "-o",
            "x.dcz",
        ],
    ] {
        s.refused(
            ts_cmd(&s, args),
            &[
                "gives 5 logits per image",
                "10 classes",
                "an output per class",
            ],
        );
    }
}

// ---- one check that a .dcz fits its model, for every command that decodes one ------------

/// `export FILE --to safetensors -o x.safetensors`.
fn export_cmd(s: &Scratch, file: &str) -> Command {
    s.cmd(&["export", file, "--to", "safetensors", "-o", "x.safetensors"])
}

#[test]
fn export_checks_the_file_against_its_model_as_eval_does() {
    let s = Scratch::new();
    type Break = fn(&mut dc_search::format::CompressedModel);
    let cases: [(&str, Break, &str); 6] = [
        (
            "other-model.dcz",
            |m| m.model = "lenet".into(),
            "model lenet has 4",
        ),
        ("swapped.dcz", |m| m.layers.swap(1, 2), "file layer fc3"),
        (
            "missing.dcz",
            |m| drop(m.layers.pop()),
            "the file has 2 layers",
        ),
        (
            "extra.dcz",
            |m| {
                let l = m.layers[2].clone();
                m.layers.push(dc_search::format::Layer {
                    name: "fc4".into(),
                    ..l
                })
            },
            "the file has 4 layers",
        ),
        (
            "conv.dcz",
            |m| m.layers[1].kind = dc_search::format::LayerKind::Conv,
            "holds Conv weights",
        ),
        (
            "input.dcz",
            |m| m.input_shape = vec![1, 14, 56],
            "input shape [1, 14, 56]",
        ),
    ];
    for (name, break_it, says) in cases {
        let mut m = empty_lenet_300_100();
        break_it(&mut m);
        let f = write_unchecked(&s, name, &m);
        for c in [export_cmd(&s, &f), eval_file(&s, &f)] {
            s.refused(c, &[name, "does not fit its model", says]);
        }
    }
    // A file made on data that is not built in (a user's arrays) fits its model: it exports
    // (a state dict holds no data), and eval asks for the data by name.
    let mut m = empty_lenet_300_100();
    m.dataset = "cifar10".into();
    let f = write_unchecked(&s, "dataset.dcz", &m);
    let (code, _, err) = run(export_cmd(&s, &f));
    assert_eq!(code, 0, "{err}");
    s.refused(
        eval_file(&s, &f),
        &[
            "dataset.dcz",
            "\"cifar10\", which is not built in",
            "--data PATH",
        ],
    );
}

#[test]
fn export_of_a_tiny_file_declaring_a_huge_layer_allocates_nothing() {
    let s = Scratch::new();
    let mut m = empty_lenet_300_100();
    // Just under 2^30 weights in all: within the default --max-params, 4 GiB if made dense.
    m.layers[0].shape = vec![32_768, 32_767];
    m.layers[0].bias.clear();
    let f = write_unchecked(&s, "huge-fc1.dcz", &m);
    assert!(std::fs::metadata(s.path(&f)).unwrap().len() < 200);
    let t = std::time::Instant::now();
    s.refused(
        export_cmd(&s, &f),
        &["huge-fc1.dcz", "does not fit its model", "[32768, 32767]"],
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
}

/// A LeNet-300-100 file whose only path from the input is pixel 0 → fc1 unit 0 → fc2 unit 0
/// → class 3 (weights 1), class 5 with bias 0.5: its logits move with the input, so with
/// its input shift.
fn one_pixel_model(shift: f32) -> dc_search::format::CompressedModel {
    let mut m = empty_lenet_300_100();
    for (l, position) in [(0, 0), (1, 0), (2, 300)] {
        m.layers[l].codebook = vec![1.0];
        m.layers[l].positions = vec![position];
        m.layers[l].clusters = vec![0];
    }
    m.layers[2].bias[5] = 0.5;
    m.input_shift = shift;
    m
}

#[test]
fn a_zoo_files_input_shift_is_honoured() {
    let s = Scratch::new();
    // The preset's 5,000 validation images.
    write_idx_set(&s.data(), 5200, 100);
    let loss = |name: &str, shift: f32| -> String {
        let f = write_unchecked(&s, name, &one_pixel_model(shift));
        let (code, out, err) = run(eval_file(&s, &f));
        assert_eq!(code, 0, "{err}");
        out.lines()
            .find(|l| l.starts_with("validation:"))
            .unwrap()
            .to_string()
    };
    let (plain, shifted) = (loss("plain.dcz", 0.0), loss("shifted.dcz", 10.0));
    assert_ne!(plain, shifted, "the shift was ignored");
}

#[test]
fn eval_of_a_file_honours_validation_from_test() {
    let s = Scratch::new();
    // The preset's 5,000 validation images come out of 6,000 test images.
    write_idx_set(&s.data(), 200, 6000);
    let f = write_unchecked(&s, "m.dcz", &empty_lenet_300_100());
    let mut c = eval_file(&s, &f);
    c.args(["--validation-from", "test"]);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("validation held out of the test images"),
        "{out}"
    );
    assert!(
        out.contains("(5000 images)") && out.contains("(1000 images)"),
        "{out}"
    );
    // Without it, 5,000 validation images cannot come out of 200 training images.
    s.refused(
        eval_file(&s, &f),
        &["validation split of 5000 images", "200 training images"],
    );
}

// ---- flags range-checked like the config; allocations bounded ---------------------------

#[test]
fn epochs_and_rate_flags_out_of_range() {
    let s = Scratch::new();
    for (flag, value, says) in [
        ("--prune-epochs", "1e308", "--prune-epochs 1.000e308"),
        ("--codebook-epochs", "1e308", "--codebook-epochs 1.000e308"),
        ("--prune-epochs", "=-1", "--prune-epochs -1"),
        ("--lr-scale", "1e9", "--lr-scale 1.000e9"),
    ] {
        let mut c = compress_cmd(&s, "0.5,0.5,0.5", "6,6,6");
        match value.strip_prefix('=') {
            Some(v) => c.arg(format!("{flag}={v}")),
            None => c.args([flag, value]),
        };
        // Refused before the dense model is trained (the cache stays empty).
        let line = s.refused(c, &[says]);
        assert!(line.len() < 200, "{line}");
    }
}

#[test]
fn budget_out_of_range() {
    let s = Scratch::new();
    for b in ["1e308", "2000000p"] {
        let mut c = search_cmd(&s, "0.5");
        c.args(["--budget", b]);
        s.refused(c, &[&format!("--budget \"{b}\""), "at most"]);
    }
}

#[test]
fn bench_sizes_that_would_not_fit_in_memory() {
    let s = Scratch::new();
    let t = std::time::Instant::now();
    s.refused(
        s.cmd(&["bench", "search", "lenet", "--runs", "4000000000"]),
        &["--runs 4000000000", "1 to 100000"],
    );
    s.refused(
        s.cmd(&[
            "bench",
            "train",
            "tiny.toml",
            "--steps",
            "18446744073709551615",
        ]),
        &["--steps 18446744073709551615", "1 to 1000000"],
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn ratios_export_with_bits_or_floor_out_of_range() {
    let s = Scratch::new();
    let ratios = |floor: &str, bits: u8| {
        format!(
            r#"{{"model":"lenet","dataset":"mnist","floor":{floor},"layers":[{{"name":"fc1","sparse_ratio":0.5,"bits":{bits}}}]}}"#
        )
    };
    for (text, says) in [
        (ratios("0.99", 0), "bits 0 is outside 1..=16"),
        (ratios("0.99", 255), "bits 255 is outside 1..=16"),
        (ratios("5", 5), "floor 5 is outside (0, 1]"),
        (ratios("0", 5), "floor 0 is outside (0, 1]"),
    ] {
        std::fs::write(s.path("ratios.json"), &text).unwrap();
        for to in ["nni", "distiller", "csv"] {
            s.refused(
                s.cmd(&["export", "ratios.json", "--to", to, "-o", "out.txt"]),
                &["ratios.json", says],
            );
        }
    }
}

// ---- the Slurm batch script -------------------------------------------------------------

#[test]
fn slurm_with_a_newline_and_quotes_in_the_run_folder() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    // Data a model learns, so that the calibration finds something to prune and the
    // bisection sends its probes to the workers.
    write_learnable_idx_set(&s.data(), 200, 20);
    // A fake sbatch: answers --version, else keeps its arguments (NUL-separated) and the
    // script it was given, and refuses the job.
    let bin = s.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let kept = s.path("sbatch-args");
    std::fs::write(
        bin.join("sbatch"),
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\nprintf '%s\\0' \"$@\" > '{}'\n\
             echo 'sbatch: error: no partition here' >&2\nexit 1\n",
            kept.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("sbatch"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = "run\n#SBATCH --wrap='touch pwned'\n'$(touch pwned)'";
    let mut c = search_to(&s, "0.01", out);
    c.args(["--workers", "2", "--executor", "slurm", "--budget", "2p"]);
    c.env(
        "PATH",
        format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
    );
    let (code, stdout, err) = run(c);
    check_refusal(
        code,
        &stdout,
        &err,
        &["sbatch refused", "no partition here"],
    );
    assert!(!s.path("pwned").exists());
    let args: Vec<String> = std::fs::read(&kept)
        .unwrap()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8(a.to_vec()).unwrap())
        .collect();
    let workers = Path::new(out).join("workers");
    let script_at = args
        .iter()
        .position(|a| a.ends_with("probe-array.sh"))
        .unwrap();
    // The options, one argument each; the script, the same text for every run; then the
    // specs folder and the binary, each one argument.
    assert!(args.contains(&format!(
        "--output={}/logs/slurm-%A_%a.out",
        workers.display()
    )));
    assert_eq!(
        std::fs::read_to_string(s.path(&args[script_at])).unwrap(),
        dc_search::search::workers::slurm::SCRIPT
    );
    assert_eq!(
        args[script_at + 1],
        workers.join("specs").display().to_string()
    );
    assert_eq!(args[script_at + 2], env!("CARGO_BIN_EXE_dc-search"));
}

// ---- error lines: one line, at most 300 characters, control characters escaped ---------

#[test]
fn names_with_newlines_and_terminal_escapes_are_escaped() {
    let s = Scratch::new();
    let mut m = empty_lenet_300_100();
    m.layers[1].name = "fc2\nerror: fake\u{1b}[2J".into();
    let f = write_unchecked(&s, "names.dcz", &m);
    for c in [eval_file(&s, &f), export_cmd(&s, &f)] {
        s.refused(c, &["names.dcz", "fc2\\nerror: fake\\u{1b}[2J"]);
    }
    // What eval prints of a file it evaluates is escaped too.
    let mut m = one_pixel_model(0.0);
    m.dataset = "mnist".into();
    write_idx_set(&s.data(), 5200, 100);
    let f = write_unchecked(&s, "ok.dcz", &m);
    let (code, out, err) = run(eval_file(&s, &f));
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains('\u{1b}'), "{out}");
}

#[test]
fn a_two_megabyte_name_makes_a_short_line() {
    let s = Scratch::new();
    let name = format!("fc1\n{}", "x".repeat(2 << 20));
    let text = format!(
        r#"{{"model":"lenet","dataset":"mnist","floor":0.99,"layers":[{{"name":{name:?},"sparse_ratio":0.5,"bits":5}}]}}"#
    );
    std::fs::write(s.path("ratios.json"), text).unwrap();
    s.refused(
        s.cmd(&["export", "ratios.json", "--to", "csv"]),
        &["ratios.json", "fc1\\nxxx", " … ", "plain names only"],
    );
}

#[test]
fn a_usage_error_is_one_line() {
    let s = Scratch::new();
    for args in [
        &[
            "compress",
            "tiny.toml",
            "--bits",
            "4,4,4",
            "--prune-epochs",
            "abc",
        ][..],
        &["compress", "tiny.toml"],
        &["--no-such-flag"],
    ] {
        s.refused(s.cmd(args), &["dc-search --help"]);
    }
}
