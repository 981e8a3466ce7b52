//! Bring your own model, as a user would: the trained BatchNorm / dropout / padded-conv
//! fixture (`tests/fixtures/torchscript/bn-cnn.pt`, trained with Adam by its
//! `make_bn_fixture.py`, config without `[train]`) through a tiny search and `export --to
//! safetensors`; the export must be the module's whole state dict — every key PyTorch's
//! `state_dict()` listed (`bn-cnn.state.json`), same shapes and dtypes, nothing more — and,
//! loaded into a fresh module, evaluate to the `.dcz`'s accuracies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dc_search::config::Config;
use dc_search::data;
use dc_search::models::torchscript;
use dc_search::train;
use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::util::{dc_search, mnist_dir, run};

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torchscript")
        .join(file)
}

/// The fixture's config at test size: 2,000 validation images (500 of them for the
/// sensitivity sweep), a 3-point grid, widths 3–5, retraining of a few batches.
fn tiny_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(fixture("bn-cnn.toml"))
        .unwrap()
        .replace("validation = 5000", "validation = 2000");
    let path = dir.join("bn-cnn.toml");
    std::fs::write(
        &path,
        text + r#"
[compress]
codebook_epochs = 0.03

[search]
probe_epochs = 0.05
bits_epochs = 0.02
bisection_probes = 2
refine_probes = 1
bits_candidates = 1
bits_probes = 2
bits_min = 3
bits_max = 5
grid = [0.0, 0.5, 0.9]
sensitivity_images = 500
"#,
    )
    .unwrap();
    path
}

/// `bn-cnn.state.json`: PyTorch's state dict of the fixture, key → (shape, dtype, sum).
fn pytorch_state() -> BTreeMap<String, (Vec<usize>, String, f64)> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("bn-cnn.state.json")).unwrap())
            .unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, e)| {
            let shape = e["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let dtype = e["dtype"].as_str().unwrap().to_string();
            (k.clone(), (shape, dtype, e["sum"].as_f64().unwrap()))
        })
        .collect()
}

fn torch_dtype(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "float32",
        Dtype::I64 => "int64",
        other => panic!("unexpected dtype {other:?}"),
    }
}

/// A safetensors tensor as a CPU tensor of its own dtype.
fn to_tensor(st: &SafeTensors, name: &str) -> Tensor {
    let v = st.tensor(name).unwrap();
    let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
    let kind = match v.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::I64 => Kind::Int64,
        other => panic!("unexpected dtype {other:?}"),
    };
    Tensor::from_data_size(v.data(), &shape, kind)
}

#[test]
fn trained_batchnorm_module_searches_and_exports_its_whole_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = tiny_config(dir.path());
    let pt = fixture("bn-cnn.pt");
    let run_dir = dir.path().join("run");
    let mut c = dc_search();
    c.env("DC_SEARCH_CACHE", dir.path().join("cache"))
        .args(["--max-drop", "3", "--budget", "3p", "--threads", "2"])
        .args(["--quiet", "--device", "cpu", "--data-dir"])
        .arg(mnist_dir())
        .arg("--out")
        .arg(&run_dir)
        .arg("--torchscript")
        .arg(&pt)
        .arg(&cfg_path);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    // The sweep ran on 500 of the 2,000 validation images and says how far off that may be.
    let csv = std::fs::read_to_string(run_dir.join("sensitivity.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 4 * 3, "{csv}");
    assert!(rows.iter().all(|r| r[5] == "500"), "{csv}");
    assert!(
        rows.iter().any(|r| r[6].parse::<f64>().unwrap() > 0.001),
        "{csv}"
    );
    let dcz = run_dir.join("bn-cnn.dcz");
    assert_eq!(summary["file"].as_str(), dcz.to_str());
    let valid = summary["valid_accuracy"].as_f64().unwrap();
    let test = summary["test_accuracy"].as_f64().unwrap();
    assert!(
        valid >= summary["floor"].as_f64().unwrap(),
        "the file meets the floor: {out}"
    );
    // Without [train] the retraining learning rate came from the range test: in
    // summary.json, the report and the journal, and the probes used it.
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    let chosen = full["lr_test"]["chosen"].as_f64().unwrap();
    assert!(
        dc_search::compress::lr_range::GRID.contains(&chosen),
        "{full}"
    );
    assert!(full["times"]["lr_test"].as_f64().unwrap() > 0.0);
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains("retraining learning rate"), "{report}");
    // The pair module + file: the module's bytes on disk, and the state no named layer
    // owns (BatchNorm's 96 values and `temperature` in f32, two int64 counters: 404 bytes).
    let pt_bytes = std::fs::metadata(&pt).unwrap().len();
    let file_bytes = std::fs::metadata(&dcz).unwrap().len();
    assert_eq!(
        full["pair"]["module_bytes"].as_u64(),
        Some(pt_bytes),
        "{full}"
    );
    assert_eq!(
        full["pair"]["other_state_bytes"].as_u64(),
        Some(404),
        "{full}"
    );
    assert!(
        report.contains("## Which bytes are counted")
            && report.contains(&format!(
                "| {pt_bytes} + {file_bytes} = {} |",
                pt_bytes + file_bytes
            ))
            && report.contains(&format!("| {file_bytes} + 404 = {} |", file_bytes + 404)),
        "{report}"
    );
    assert!(
        full["dense_weights"]
            .as_str()
            .unwrap()
            .starts_with("as saved in the TorchScript module"),
        "{full}"
    );
    let journal = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap();
    assert!(journal.contains("\"lr_test\""), "{journal}");
    // The run folder's config is the resolved one: the rate the range test chose.
    let config = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    let resolved: toml::Value = toml::from_str(&config).unwrap();
    assert_eq!(
        resolved["search"]["retrain_lr"].as_float(),
        Some(chosen),
        "{config}"
    );

    let sd = dir.path().join("bn-cnn.safetensors");
    let mut c = dc_search();
    c.arg("export")
        .arg(&dcz)
        .args(["--to", "safetensors", "--ts-config"])
        .arg(&cfg_path)
        .arg("--torchscript")
        .arg(&pt)
        .arg("-o")
        .arg(&sd);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("17 tensors: 4 layers decoded"), "{out}");

    // Strictly PyTorch's keys, shapes and dtypes; what no layer owns exactly as saved.
    let bytes = std::fs::read(&sd).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let want = pytorch_state();
    let mut got: Vec<String> = st.names().into_iter().map(String::from).collect();
    got.sort();
    assert_eq!(got, want.keys().cloned().collect::<Vec<_>>());
    let mut cfg = Config::resolve(cfg_path.to_str().unwrap()).unwrap();
    let ts = cfg.torchscript.as_mut().unwrap();
    ts.module = Some(pt.clone());
    let layer_params: Vec<&String> = ts
        .layers
        .iter()
        .flat_map(|l| std::iter::once(&l.weight).chain(l.bias.as_ref()))
        .collect();
    let fresh = torchscript::load(&cfg.model, ts, Device::Cpu).unwrap();
    let saved: BTreeMap<String, Tensor> = fresh
        .script
        .as_ref()
        .unwrap()
        .state_dict()
        .unwrap()
        .into_iter()
        .collect();
    for (name, (shape, dtype, sum)) in &want {
        let v = st.tensor(name).unwrap();
        assert_eq!(v.shape(), &shape[..], "{name}");
        assert_eq!(torch_dtype(v.dtype()), dtype, "{name}");
        if layer_params.contains(&name) {
            continue;
        }
        let t = to_tensor(&st, name);
        assert!(t.equal(&saved[name]), "{name} is exported as saved");
        let s = t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
        assert!(
            (s - sum).abs() <= 1e-6 * sum.abs().max(1.0),
            "{name}: {s} vs {sum}"
        );
    }

    // Loaded into a fresh module, the state dict evaluates as the file did.
    tch::no_grad(|| {
        for (p, l) in fresh.params.iter().zip(&ts.layers) {
            p.weight.shallow_clone().copy_(&to_tensor(&st, &l.weight));
            if let Some(b) = &l.bias {
                p.bias.shallow_clone().copy_(&to_tensor(&st, b));
            }
        }
    });
    let data = data::load(&cfg.data).expect("MNIST is installed: run scripts/setup.sh");
    assert_eq!(train::evaluate(&fresh, &data.valid).accuracy, valid);
    assert_eq!(train::evaluate(&fresh, &data.test).accuracy, test);
}

/// A model of unknown recipe (`sgd-lenet`, trained with plain SGD; its config has no
/// `[train]`): `compress` retrains at the rate a range test picks, the same one every run for
/// a seed and thread count; `--retrain-lr recipe` keeps the recipe's rate and runs no test.
#[test]
fn a_model_without_train_retrains_at_the_rate_its_range_test_picks() {
    let dir = tempfile::tempdir().unwrap();
    let compress = |lr: &str| {
        let mut c = dc_search();
        c.env("DC_SEARCH_CACHE", dir.path().join("cache"))
            .arg("compress")
            .arg(fixture("sgd-lenet.toml"))
            .args(["--ratios", "0.3,0.7,0.95,0.7", "--bits", "6,5,4,5"])
            .args(["--prune-epochs", "0.05", "--codebook-epochs", "0.02"])
            .args(["--retrain-lr", lr, "--max-loss", "100"])
            .args(["--threads", "1", "--quiet", "--device", "cpu", "--data-dir"])
            .arg(mnist_dir())
            .arg("-o")
            .arg(dir.path().join("sgd.dcz"));
        let (code, out, err) = run(c);
        assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
        out
    };
    // The line without its seconds.
    let test_line = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("retraining lr "))
            .map(|l| l.rsplit_once(';').expect("seconds last").0.to_string())
    };
    let first = compress("auto");
    let line = test_line(&first).expect("the range test's line");
    let chosen: f64 = line["retraining lr ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        dc_search::compress::lr_range::GRID.contains(&chosen),
        "{line}"
    );
    assert!(
        line.contains("lowest validation loss after 100 steps"),
        "{line}"
    );
    assert_eq!(test_line(&compress("auto")), Some(line), "deterministic");
    assert_eq!(test_line(&compress("recipe")), None);
}
