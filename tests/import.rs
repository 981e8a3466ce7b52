//! Bring your own model, take your ratios elsewhere: caffemodel and safetensors fixtures
//! built here (both Caffe layer forms) import exactly, bad files are named with their
//! layer, `--weights` reaches eval and compress, and every export reads back.

use std::path::{Path, PathBuf};

use dc_search::compress::prune::PruneRule;
use dc_search::compress::{encode, fold, CompressConfig, Plan, Trainer};
use dc_search::format;
use dc_search::import::{self, caffe, WeightsFormat};
use dc_search::models::{Arch, Net};
use dc_search::search::outputs::{LayerRatio, Ratios};
use dc_search::train::{self, Recipe, Sgd};
use dc_search::weights::{self, HostTensors};
use tch::Device;

use crate::util::{dc_search, mnist, run, torch_seeded};

/// A randomly initialised net's tensors (seeded).
fn random_host(arch: &Arch, seed: i64) -> HostTensors {
    let _g = torch_seeded(seed);
    let net = Net::init(arch, Device::Cpu);
    // Non-zero biases, so a bias mix-up shows.
    let mut t: HostTensors = net
        .to_host()
        .into_iter()
        .map(|(n, s, v)| (n, (s, v)))
        .collect();
    for (name, (_, v)) in t.iter_mut() {
        if name.ends_with(".bias") {
            for (i, b) in v.iter_mut().enumerate() {
                *b = 0.01 * i as f32 - 0.05;
            }
        }
    }
    t
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn caffemodel_fixtures_in_both_forms_import_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for arch in [Arch::lenet(), Arch::lenet_300_100()] {
        let t = random_host(&arch, 7);
        for form in [caffe::CaffeForm::Layer, caffe::CaffeForm::V1] {
            let bytes = caffe::to_caffemodel("LeNet", &arch, &t, form).unwrap();
            let p = write(
                dir.path(),
                &format!("{}-{form:?}.caffemodel", arch.name),
                &bytes,
            );
            let (got, fmt) = import::read_weights(&p, &arch).unwrap();
            assert_eq!(fmt, WeightsFormat::Caffe);
            assert_eq!(got, t, "{} {form:?}: bit-exact", arch.name);
            // Sniffed without the extension too.
            let q = write(dir.path(), "weights.bin", &bytes);
            assert_eq!(import::read_weights(&q, &arch).unwrap().0, t);
        }
    }
}

#[test]
fn safetensors_state_dict_imports_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let arch = Arch::lenet();
    let t = random_host(&arch, 8);
    let list: Vec<(String, Vec<i64>, Vec<f32>)> = t
        .iter()
        .map(|(n, (s, v))| (n.clone(), s.clone(), v.clone()))
        .collect();
    let bytes = weights::to_safetensors(&list, None).unwrap();
    let p = write(dir.path(), "lenet.safetensors", &bytes);
    let (got, fmt) = import::read_weights(&p, &arch).unwrap();
    assert_eq!(fmt, WeightsFormat::Safetensors);
    assert_eq!(got, t);
    // Made for the other model: a clear shape error naming its first layer.
    let e = format!(
        "{:#}",
        import::read_weights(&p, &Arch::lenet_300_100()).unwrap_err()
    );
    assert!(
        e.contains("lenet.safetensors")
            && e.contains("layer fc1")
            && e.contains("different architecture"),
        "{e}"
    );
}

/// `eval` through the binary, returning its stdout (asserting success).
fn eval(args: &[&str], weights: &Path) -> String {
    let mut c = dc_search();
    c.args(["eval"])
        .args(args)
        .args(["--device", "cpu", "--quiet", "--weights"])
        .arg(weights);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    out
}

fn accuracy_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.starts_with("validation:") || l.starts_with("test:"))
        .collect()
}

#[test]
fn eval_with_caffemodel_and_safetensors_of_one_net_agree() {
    let dir = tempfile::tempdir().unwrap();
    let arch = Arch::lenet_300_100();
    let t = random_host(&arch, 9);
    let cm = write(
        dir.path(),
        "net.caffemodel",
        &caffe::to_caffemodel("n", &arch, &t, caffe::CaffeForm::V1).unwrap(),
    );
    let list: Vec<(String, Vec<i64>, Vec<f32>)> = t
        .iter()
        .map(|(n, (s, v))| (n.clone(), s.clone(), v.clone()))
        .collect();
    let st = write(
        dir.path(),
        "net.safetensors",
        &weights::to_safetensors(&list, None).unwrap(),
    );
    let a = eval(&["lenet-300-100"], &cm);
    let b = eval(&["lenet-300-100"], &st);
    assert!(
        a.contains("net.caffemodel"),
        "says where the weights came from: {a}"
    );
    assert_eq!(accuracy_lines(&a).len(), 2, "{a}");
    assert_eq!(accuracy_lines(&a), accuracy_lines(&b));
}

#[test]
fn bad_weight_files_name_the_file_and_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let arch = Arch::lenet();
    let t = random_host(&arch, 10);
    let good = caffe::to_caffemodel("LeNet", &arch, &t, caffe::CaffeForm::Layer).unwrap();

    // Missing layer: fc2 left out (the net written for a 3-layer arch).
    let mut three = arch.clone();
    three.layers.pop();
    let missing = write(
        dir.path(),
        "missing.caffemodel",
        &caffe::to_caffemodel("LeNet", &three, &t, caffe::CaffeForm::Layer).unwrap(),
    );
    // Wrong shape: conv1 with 3x3 kernels.
    let mut small = t.clone();
    small.insert("conv1.weight".into(), (vec![20, 1, 3, 3], vec![0.1; 180]));
    let mut arch3 = arch.clone();
    arch3.layers[0].weight_shape = vec![20, 1, 3, 3];
    let shape = write(
        dir.path(),
        "shape.caffemodel",
        &caffe::to_caffemodel("LeNet", &arch3, &small, caffe::CaffeForm::V1).unwrap(),
    );
    // Truncated: the file cut in the middle of a blob.
    let truncated = write(dir.path(), "cut.caffemodel", &good[..good.len() / 2]);
    let garbage = write(
        dir.path(),
        "junk.safetensors",
        b"\x00\x01\x02 not a tensor file",
    );

    for (file, want) in [
        (
            &missing,
            vec![
                "missing.caffemodel",
                "layer fc2",
                "no tensor \"fc2.weight\"",
                "rename",
            ],
        ),
        (
            &shape,
            vec![
                "shape.caffemodel",
                "layer conv1",
                "[20, 1, 3, 3]",
                "[20, 1, 5, 5]",
            ],
        ),
        (
            &truncated,
            vec!["cut.caffemodel", "not a valid Caffe model"],
        ),
        (
            &garbage,
            vec!["junk.safetensors", "not a valid safetensors file"],
        ),
    ] {
        let e = format!("{:#}", import::read_weights(file, &arch).unwrap_err());
        for w in &want {
            assert!(e.contains(w), "{}: wants {w:?} in: {e}", file.display());
        }
        // The binary says the same and stops.
        let mut c = dc_search();
        c.args(["eval", "lenet", "--device", "cpu", "--weights"])
            .arg(file);
        let (code, out, err) = run(c);
        assert_eq!(code, 2, "{out}");
        assert!(err.contains(want[0]) && err.contains(want[1]), "{err}");
    }

    let mut c = dc_search();
    c.args(["eval", "lenet", "--weights"])
        .arg(dir.path().join("nope.caffemodel"));
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(
        err.contains("nope.caffemodel") && err.contains("no such file"),
        "{err}"
    );

    let mut c = dc_search();
    c.args(["train", "lenet", "--weights"]).arg(&missing);
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(err.contains("train trains from scratch"), "{err}");
}

/// A small compressed lenet-300-100 written as a .dcz (a few hundred iterations).
fn small_dcz(path: &Path) {
    let (cfg, data) = mnist("lenet-300-100");
    let recipe = Recipe {
        iterations: 300,
        ..cfg.train.clone()
    };
    // Held to the end: training and retraining draw from torch's global generator.
    let _g = torch_seeded(4);
    let net = Net::init(&cfg.arch(), Device::Cpu);
    let mut sgd = Sgd::new(&net, &recipe);
    train::train(&net, &data.train, &recipe, &mut sgd, "dense", true).unwrap();
    let ccfg = CompressConfig {
        prune_epochs: 0.03,
        codebook_epochs: 0.03,
        ..CompressConfig::default()
    };
    let plan = Plan {
        rules: vec![
            PruneRule::SparseRatio(0.9),
            PruneRule::SparseRatio(0.8),
            PruneRule::SparseRatio(0.5),
        ],
        bits: vec![5, 5, 6],
    };
    let trainer = Trainer {
        train: &data.train,
        dense: &cfg.train,
        cfg: &ccfg,
        quiet: true,
    };
    let (state, _) = trainer
        .compress(&net, &plan, &data.valid.head(500))
        .unwrap();
    let model = encode::to_model(
        &net,
        &state,
        "mnist",
        cfg.data.input_scale,
        ccfg.bias_precision,
    )
    .unwrap();
    std::fs::write(path, format::encode(&model).unwrap()).unwrap();
}

#[test]
fn exported_safetensors_evaluates_like_the_dcz() {
    let dir = tempfile::tempdir().unwrap();
    let dcz = dir.path().join("small.dcz");
    small_dcz(&dcz);
    let st = dir.path().join("out").join("small.safetensors");

    let mut c = dc_search();
    c.args(["export"])
        .arg(&dcz)
        .args(["--to", "safetensors", "-o"])
        .arg(&st);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("small.safetensors"), "{out}");

    // The state dict holds the decoded file's exact values, pruned zeros included.
    let decoded = format::decode(&std::fs::read(&dcz).unwrap()).unwrap();
    let t = weights::read_safetensors(&st).unwrap();
    for l in &decoded.layers {
        assert_eq!(t[&format!("{}.weight", l.name)].1, l.dense_weights());
        assert_eq!(t[&format!("{}.bias", l.name)].1, l.bias);
    }

    let mut c = dc_search();
    c.args(["eval"]).arg(&dcz).args(["--device", "cpu"]);
    let (code, from_dcz, err) = run(c);
    assert_eq!(code, 0, "{err}");
    let from_st = eval(&["lenet-300-100"], &st);
    assert_eq!(accuracy_lines(&from_dcz).len(), 2, "{from_dcz}");
    assert_eq!(accuracy_lines(&from_dcz), accuracy_lines(&from_st));

    // compress takes --weights too: the imported model is what it starts from.
    let out_dcz = dir.path().join("again.dcz");
    let mut c = dc_search();
    c.args([
        "compress",
        "lenet-300-100",
        "--ratios",
        "0.9,0.8,0.5",
        "--bits",
        "5,5,6",
        "--prune-epochs",
        "0",
        "--codebook-epochs",
        "0",
        "--device",
        "cpu",
        "--weights",
    ])
    .arg(&st)
    .arg("-o")
    .arg(&out_dcz);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("weights imported from") && err.contains("small.safetensors"),
        "{err}"
    );
    // Already pruned at these ratios: pruning again keeps the same weights (and the file
    // written has the dead units folded away, as that of any compress).
    let again = format::decode(&std::fs::read(&out_dcz).unwrap()).unwrap();
    let mut folded = decoded.clone();
    fold::fold(
        &mut folded.layers,
        &fold::links(&Arch::by_name("lenet-300-100").unwrap()),
    );
    for (a, b) in again.layers.iter().zip(&folded.layers) {
        assert_eq!(a.positions, b.positions, "{}", a.name);
    }

    // A .dcz cannot become ratios, ratios cannot become safetensors.
    let mut c = dc_search();
    c.args(["export"]).arg(&dcz).args(["--to", "nni"]);
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(err.contains("give its ratios.json"), "{err}");
    let mut c = dc_search();
    c.args(["export"]).arg(&dcz).args(["--to", "safetensors"]);
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(err.contains("-o FILE.safetensors"), "{err}");
}

#[test]
fn ratios_export_to_every_format_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let ratios = Ratios {
        model: "lenet".into(),
        dataset: "mnist".into(),
        floor: 0.99,
        layers: [
            ("conv1", 0.530549, 4),
            ("conv2", 0.944607, 6),
            ("fc1", 0.932676, 3),
            ("fc2", 0.784914, 3),
        ]
        .iter()
        .map(|&(n, r, b)| LayerRatio {
            name: n.into(),
            sparse_ratio: r,
            bits: b,
        })
        .collect(),
    };
    let json = write(
        dir.path(),
        "ratios.json",
        serde_json::to_string_pretty(&ratios).unwrap().as_bytes(),
    );
    let export = |to: &str, out: Option<&Path>| -> String {
        let mut c = dc_search();
        c.arg("export").arg(&json).args(["--to", to]);
        if let Some(o) = out {
            c.arg("-o").arg(o);
        }
        let (code, stdout, err) = run(c);
        assert_eq!(code, 0, "{to}: {err}");
        match out {
            Some(o) => std::fs::read_to_string(o).unwrap(),
            None => stdout,
        }
    };

    let nni: serde_json::Value =
        serde_json::from_str(&export("nni", Some(&dir.path().join("config_list.json")))).unwrap();
    let back: Vec<(String, f64)> = nni
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["op_names"][0].as_str().unwrap().to_string(),
                c["sparse_ratio"].as_f64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, f64)> = ratios
        .layers
        .iter()
        .map(|l| (l.name.clone(), l.sparse_ratio))
        .collect();
    assert_eq!(back, want);

    let yaml: serde_norway::Value = serde_norway::from_str(&export("distiller", None)).unwrap();
    let back: Vec<(String, f64)> = ratios
        .layers
        .iter()
        .map(|l| {
            let p = &yaml["pruners"][format!("{}_pruner", l.name).as_str()];
            let w = p["weights"][0].as_str().unwrap();
            (
                w.trim_end_matches(".weight").to_string(),
                p["final_sparsity"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(back, want);

    let csv = export("csv", Some(&dir.path().join("ratios.csv")));
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let back: Vec<LayerRatio> = rd
        .records()
        .map(|r| {
            let r = r.unwrap();
            LayerRatio {
                name: r[0].into(),
                sparse_ratio: r[1].parse().unwrap(),
                bits: r[2].parse().unwrap(),
            }
        })
        .collect();
    assert_eq!(back, ratios.layers);

    let mut c = dc_search();
    c.arg("export")
        .arg(&json)
        .args(["--to", "safetensors", "-o"])
        .arg(dir.path().join("x.st"));
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(err.contains("give a .dcz file"), "{err}");
    let bad = write(dir.path(), "bad.json", b"{\"layers\": 3}");
    let mut c = dc_search();
    c.arg("export").arg(&bad).args(["--to", "csv"]);
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.json") && err.contains("not a dc-search ratios.json"),
        "{err}"
    );
}
