//! Foundation: binary start-up, data splits, short real training, determinism.

use dc_search::models::Net;
use dc_search::train::{self, Sgd};
use tch::Device;

use crate::util::{dc_search, mnist, mnist_dir, run, torch_seeded, TestConfig};

#[test]
fn binary_runs_without_ld_library_path() {
    let mut c = dc_search();
    c.arg("--version");
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.starts_with("dc-search "), "{out}");
}

#[test]
fn unknown_model_and_device_are_clear_errors() {
    let mut c = dc_search();
    c.args(["eval", "alexnet"]);
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown model \"alexnet\"") && err.contains("lenet-300-100"),
        "{err}"
    );

    let mut c = dc_search();
    c.args(["eval", "lenet", "--device", "gpu7"]);
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(err.contains("--device \"gpu7\""), "{err}");
}

#[test]
fn missing_data_dir_is_a_clear_error() {
    let mut c = dc_search();
    c.args([
        "eval",
        "lenet",
        "--data-dir",
        "/nonexistent/mnist",
        "--device",
        "cpu",
    ]);
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/mnist") && err.contains("scripts/setup.sh"),
        "{err}"
    );
}

#[test]
fn mnist_splits_hold_out_validation() {
    let (cfg, data) = mnist("lenet");
    assert_eq!(data.valid.len(), cfg.data.validation);
    assert_eq!(data.train.len(), 60_000 - cfg.data.validation);
    assert_eq!(data.test.len(), 10_000);
    let max = data.train.images.max().double_value(&[]);
    assert!(
        (max - 255.0 / 256.0).abs() < 1e-6,
        "Caffe scaling x/256, max {max}"
    );
}

/// A few hundred real SGD steps must beat chance (10 %) by far.
#[test]
fn short_training_beats_chance() {
    let (cfg, data) = mnist("lenet");
    let _g = torch_seeded(5);
    let net = Net::init(&cfg.arch(), Device::Cpu);
    let recipe = dc_search::train::Recipe {
        iterations: 150,
        ..cfg.train.clone()
    };
    let mut sgd = Sgd::new(&net, &recipe);
    train::train(&net, &data.train, &recipe, &mut sgd, "test", true).unwrap();
    let acc = train::evaluate(&net, &data.valid.head(2000)).accuracy;
    assert!(acc > 0.80, "validation accuracy after 150 steps: {acc}");
}

#[test]
fn same_seed_same_weights() {
    let (cfg, data) = mnist("lenet-300-100");
    let recipe = dc_search::train::Recipe {
        iterations: 40,
        ..cfg.train.clone()
    };
    let train_once = |seed: i64| {
        let _g = torch_seeded(seed);
        let net = Net::init(&cfg.arch(), Device::Cpu);
        let mut sgd = Sgd::new(&net, &recipe);
        train::train(&net, &data.train, &recipe, &mut sgd, "test", true).unwrap();
        net.to_host()
    };
    let a = train_once(11);
    assert_eq!(
        a,
        train_once(11),
        "same seed must give bit-identical weights"
    );
    assert_ne!(a, train_once(12));
}

/// The help texts list every preset (from the model registry) and every prune schedule.
#[test]
fn help_names_every_preset_and_schedule() {
    let (code, out, err) = run({
        let mut c = dc_search();
        c.arg("--help");
        c
    });
    assert_eq!(code, 0, "{err}");
    for p in dc_search::models::registry::PRESETS {
        assert!(
            out.contains(p.name),
            "{} missing from --help:\n{out}",
            p.name
        );
    }
    let (code, out, err) = run({
        let mut c = dc_search();
        c.args(["compress", "--help"]);
        c
    });
    assert_eq!(code, 0, "{err}");
    for schedule in ["all-at-once", "layer-wise", "gradual"] {
        assert!(out.contains(schedule), "{schedule} missing:\n{out}");
    }
}

/// With stderr not a terminal (CI, nohup, `| tee`) the progress bar is hidden, and training
/// prints a plain line every 5 % instead.
#[test]
fn training_prints_plain_progress_lines_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("small.toml");
    let toml = TestConfig {
        model: "lenet-300-100",
        validation: 1000,
        split_seed: 7,
        batch_size: 16,
        iterations: 1000,
        rest: "",
    }
    .toml();
    std::fs::write(&cfg, toml).unwrap();
    let mut c = dc_search();
    c.env("DC_SEARCH_CACHE", dir.path().join("cache"))
        .args(["train", "--device", "cpu", "--data-dir"])
        .arg(mnist_dir())
        .arg(&cfg);
    let (code, _, err) = run(c);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("iterations), loss") && l.contains("s left"))
        .collect();
    assert!(lines.len() >= 19, "{err}");
    assert!(lines.iter().any(|l| l.contains("100 %")), "{err}");
}
