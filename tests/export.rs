//! Take a model or its ratios elsewhere: a .dcz file's decoded model as a safetensors state
//! dict evaluates like the file, and a search's ratios.json exports to NNI, Distiller and CSV
//! and reads back.

use std::path::Path;

use dc_search::compress::prune::PruneRule;
use dc_search::compress::{encode, fold, CompressConfig, Plan, Trainer};
use dc_search::format;
use dc_search::models::{Arch, Net};
use dc_search::search::outputs::{LayerRatio, Ratios};
use dc_search::train::{self, Recipe, Sgd};
use dc_search::weights;
use tch::Device;

use crate::util::{
    accuracy_lines, dc_search, eval_with_weights, mnist, run, torch_seeded, write_file as write,
};

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
        (cfg.data.input_scale.unwrap(), 0.0),
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
    let from_st = eval_with_weights(&["lenet-300-100"], &st);
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
            weight: None,
            file_sparse_ratio: None,
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
                weight: None,
                file_sparse_ratio: None,
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
