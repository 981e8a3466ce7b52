//! TorchScript models: the committed fixture (`tests/fixtures/torchscript/`, made by its
//! `make_fixture.py`) trained briefly on real MNIST, pruned, quantized, retrained, encoded
//! and decoded back into the module, which must evaluate exactly like the in-memory one.

use std::path::PathBuf;

use dc_search::compress::encode::verify_decoded;
use dc_search::compress::prune::PruneRule;
use dc_search::compress::{encode, Plan, Trainer};
use dc_search::config::Config;
use dc_search::data;
use dc_search::format;
use dc_search::models::{tensor_to_vec, torchscript};
use dc_search::search::sensitivity;
use dc_search::train::{self, Recipe, Sgd};
use tch::{Device, Kind};

use crate::util::{dc_search, run, torch_seeded};

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torchscript")
        .join(file)
}

/// The fixture config's text.
fn fixture_toml() -> String {
    std::fs::read_to_string(fixture("tiny-cnn.toml")).unwrap()
}

fn fixture_config() -> Config {
    Config::resolve(fixture("tiny-cnn.toml").to_str().unwrap()).unwrap()
}

#[test]
fn torchscript_fixture_compresses_end_to_end() {
    let cfg = fixture_config();
    let ts = cfg.torchscript.as_ref().unwrap();
    let data = data::load(&cfg.data).expect("MNIST is installed: run scripts/setup.sh");
    let valid = data.valid.head(2000);
    let net = torchscript::load(&cfg.model, ts, Device::Cpu).unwrap();
    assert_eq!(net.arch.layers.len(), 3);
    assert_eq!(net.arch.layers[0].weight_shape, vec![6, 1, 5, 5]);
    assert_eq!(net.arch.layers[1].weight_shape, vec![32, 864]);
    let untrained = train::evaluate(&net, &valid).accuracy;
    assert!(untrained < 0.3, "the fixture is untrained: {untrained}");

    // Dense training through the module: SGD's in-place steps are the module's parameters.
    let recipe = Recipe {
        iterations: 400,
        ..cfg.train.clone()
    };
    // Held to the end: training and retraining draw from torch's global generator.
    let _g = torch_seeded(7);
    let mut sgd = Sgd::new(&net, &recipe);
    train::train(&net, &data.train, &recipe, &mut sgd, "dense", true).unwrap();
    let dense = train::evaluate(&net, &valid);
    assert!(dense.accuracy > 0.9, "trained module: {}", dense.accuracy);

    // A copy is an independent module: zeroing its last layer in place makes its logits 0
    // and leaves the original alone.
    let copy = net.copy();
    tch::no_grad(|| {
        let _ = copy.params[2].weight.shallow_clone().zero_();
        let _ = copy.params[2].bias.shallow_clone().zero_();
    });
    let x = data.valid.images.narrow(0, 0, 8);
    let logits = tch::no_grad(|| copy.forward(&x));
    assert_eq!(logits.abs().sum(Kind::Float).double_value(&[]), 0.0);
    assert_eq!(train::evaluate(&net, &valid), dense, "original unchanged");

    // The sensitivity sweep has no prefix to cache: it runs the whole module.
    let points = sensitivity::sweep(&net, &valid.head(500), &[0.0, 0.99]);
    assert_eq!(points.len(), 6);
    let dense500 = train::evaluate(&net, &valid.head(500)).accuracy;
    assert_eq!(points[0].accuracy, dense500);
    assert!(points[3].accuracy < dense500, "fc1 pruned 99 % hurts");

    let plan = Plan {
        rules: vec![
            PruneRule::SparseRatio(0.5),
            PruneRule::SparseRatio(0.9),
            PruneRule::SparseRatio(0.7),
        ],
        bits: vec![6, 4, 5],
    };
    let trainer = Trainer {
        train: &data.train,
        dense: &cfg.train,
        cfg: &cfg.compress,
        quiet: true,
    };
    let (state, stats) = trainer.compress(&net, &plan, &valid).unwrap();
    for (d, want) in stats.densities.iter().zip([0.5, 0.1, 0.3]) {
        assert!((d - want).abs() < 1e-2, "density {d} vs {want}");
    }
    // The module's own fc1 weight is pruned and shared: ≤ 16 distinct nonzero values.
    let w = tensor_to_vec(&net.params[1].weight);
    let nonzero: Vec<f32> = w.iter().copied().filter(|&v| v != 0.0).collect();
    assert_eq!(nonzero.len(), (0.1f64 * 27_648.0).round() as usize);
    let mut distinct: Vec<u32> = nonzero.iter().map(|v| v.to_bits()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() <= 16, "{} values", distinct.len());
    let compressed = train::evaluate(&net, &valid);
    assert!(
        compressed.accuracy > 0.88,
        "compressed module still works: {}",
        compressed.accuracy
    );

    let model = encode::to_model(
        &net,
        &state,
        "mnist",
        (cfg.data.input_scale.unwrap(), 0.0),
        cfg.compress.bias_precision,
    )
    .unwrap();
    assert_eq!(model.model, "tiny-cnn");
    assert_eq!(model.input_shape, vec![1, 28, 28]);
    let bytes = format::encode(&model).unwrap();
    assert!(bytes.len() < 12_000, "{} bytes", bytes.len());
    // Decoded into a fresh instance of the module from its file.
    let fresh = torchscript::load(&cfg.model, ts, Device::Cpu).unwrap();
    let decoded = encode::to_net_like(&format::decode(&bytes).unwrap(), &fresh).unwrap();
    verify_decoded(&net, &decoded).unwrap();
    assert_eq!(
        train::evaluate(&decoded, &valid),
        compressed,
        "the decoded module evaluates exactly like the in-memory one"
    );
    let x = data.test.images.narrow(0, 0, 64);
    let (a, b) = tch::no_grad(|| (net.forward(&x), decoded.forward(&x)));
    assert!(a.equal(&b), "same logits");
    // `fresh` itself keeps the untrained weights: decoding wrote into a copy.
    assert!(train::evaluate(&fresh, &valid).accuracy < 0.3);
}

#[test]
fn torchscript_config_round_trips_as_saved_beside_results() {
    let cfg = fixture_config();
    assert!(cfg
        .torchscript
        .as_ref()
        .unwrap()
        .module
        .as_ref()
        .unwrap()
        .is_file());
    // The config's origin (file name and hash, for the files made from it) is not TOML.
    let origin = cfg.torchscript.as_ref().unwrap().origin.clone().unwrap();
    assert_eq!(origin.config, "tiny-cnn.toml");
    let mut back = Config::parse(&cfg.to_toml(), "config.toml").unwrap();
    back.torchscript.as_mut().unwrap().origin = Some(origin);
    assert_eq!(back, cfg);
    assert_eq!(cfg.layer_names(), vec!["conv1", "fc1", "fc2"]);
}

/// The error of loading the fixture module with its config's `from` replaced by `to`.
fn load_error(from: &str, to: &str) -> String {
    let text = fixture_toml().replace(from, to);
    let mut cfg = Config::parse(&text, "changed.toml").unwrap();
    let ts = cfg.torchscript.as_mut().unwrap();
    ts.module = Some(fixture("tiny-cnn.pt"));
    format!(
        "{:#}",
        torchscript::load(&cfg.model, ts, Device::Cpu).unwrap_err()
    )
}

#[test]
fn torchscript_parameter_missing_from_module_is_named() {
    let e = load_error("weight = \"fc2.weight\"", "weight = \"head.weight\"");
    assert!(
        e.contains("has no parameter \"head.weight\"")
            && e.contains("layer \"fc2\"")
            && e.contains("fc2.weight [10, 32]"),
        "{e}"
    );
}

#[test]
fn torchscript_input_shape_that_the_module_refuses_is_explained() {
    let e = load_error("input_shape = [1, 28, 28]", "input_shape = [784]");
    assert!(
        e.contains("forward of a batch of shape [1, 784] failed") && e.contains("input_shape"),
        "{e}"
    );
    // A shape of other size than the data's images is refused when the two meet
    // (`Net::fits`); the module alone refuses it already.
    let e = load_error("input_shape = [1, 28, 28]", "input_shape = [1, 28, 27]");
    assert!(
        e.contains("forward of a batch of shape [1, 1, 28, 27] failed"),
        "{e}"
    );
}

#[test]
fn torchscript_cli_compress_then_eval_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.dcz");
    let cfg = fixture("tiny-cnn.toml");
    // Copy the module elsewhere: --torchscript overrides the config's path.
    let pt = dir.path().join("copy.pt");
    std::fs::copy(fixture("tiny-cnn.pt"), &pt).unwrap();
    let mut c = dc_search();
    c.arg("compress")
        .arg(&cfg)
        .arg("--torchscript")
        .arg(&pt)
        .args([
            "--ratios",
            "conv1=0.5,fc1=0.9,fc2=0.7",
            "--bits",
            "6,4,5",
            "--prune-epochs",
            "0.3",
            "--threads",
            "2",
            "--quiet",
            "-o",
        ])
        .arg(&out);
    let (code, stdout, err) = run(c);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let line = |s: &str, prefix: &str| {
        s.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {s}"))
            .to_string()
    };
    let compressed = line(&stdout, "decoded file, validation:");
    let acc: f64 = compressed
        .split_whitespace()
        .nth(4)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        acc > 0.5,
        "retrained from the untrained fixture: {compressed}"
    );

    // `eval` of the file with a config and the module copy.
    let eval_with = |config: &std::path::Path| {
        let mut c = dc_search();
        c.arg("eval")
            .arg(&out)
            .arg("--ts-config")
            .arg(config)
            .args(["--threads", "2", "--torchscript"])
            .arg(&pt);
        let (code, stdout, err) = run(c);
        assert_eq!(code, 0, "{stdout}\n{err}");
        (stdout, err)
    };
    let (stdout, _) = eval_with(&cfg);
    assert!(stdout.contains("model tiny-cnn"), "{stdout}");
    assert_eq!(
        line(&stdout, "validation:").split_whitespace().nth(2),
        compressed.split_whitespace().nth(4),
        "eval of the file: {stdout}"
    );

    // Without its config, the file names the config it was made from and its hash.
    let mut c = dc_search();
    c.arg("eval").arg(&out);
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    let sha = dc_search::paths::sha256_hex(fixture_toml().as_bytes());
    assert_eq!(
        err.trim(),
        format!(
            "error: {} was made from TorchScript config tiny-cnn.toml (sha256 {}…): pass \
             --ts-config PATH/tiny-cnn.toml",
            out.display(),
            &sha[..16]
        )
    );
    // Another config (here an edited copy) is used, with a warning naming both.
    let edited = dir.path().join("edited.toml");
    std::fs::write(&edited, fixture_toml() + "# edited\n").unwrap();
    let (_, err) = eval_with(&edited);
    assert!(
        err.starts_with("warning: ")
            && err.contains("tiny-cnn.toml (sha256")
            && err.contains("the config given is edited.toml"),
        "{err}"
    );
    // inspect names the config too.
    let mut c = dc_search();
    c.arg("inspect").arg(&out);
    let (code, stdout, err) = run(c);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("made from TorchScript config tiny-cnn.toml (sha256"),
        "{stdout}"
    );
    // A missing module file is named.
    let mut c = dc_search();
    c.arg("eval")
        .arg(&out)
        .arg("--ts-config")
        .arg(&cfg)
        .arg("--torchscript")
        .arg(dir.path().join("nope.pt"));
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read TorchScript module") && err.contains("nope.pt"),
        "{err}"
    );
}

/// A worker's probe of a TorchScript run whose start is not the module's own weights (the
/// L0 gates' model of `--sparsifier l0`): `dc-search probe` loads the spec's weights into
/// the module and gives the number the search's own process gives from that start.
#[test]
fn a_torchscript_probe_starts_from_the_specs_weights() {
    use dc_search::search::oracle::Oracle;
    use dc_search::search::spec::ProbeResult;

    let cfg = fixture_config();
    let ts = cfg.torchscript.as_ref().unwrap();
    let data = data::load(&cfg.data).expect("MNIST is installed: run scripts/setup.sh");
    // The start: the module trained briefly, half of fc1 closed (as gates close weights).
    let start = torchscript::load(&cfg.model, ts, Device::Cpu).unwrap();
    let recipe = Recipe {
        iterations: 150,
        ..cfg.train.clone()
    };
    let _g = torch_seeded(11);
    let mut sgd = Sgd::new(&start, &recipe);
    train::train(&start, &data.train, &recipe, &mut sgd, "dense", true).unwrap();
    tch::no_grad(|| {
        let w = start.params[1].weight.shallow_clone();
        let half = w.size()[1] / 2;
        let _ = w.narrow(1, 0, half).zero_();
    });
    let dir = tempfile::tempdir().unwrap();
    let start_file = dir.path().join("sparsifier.safetensors");
    let bytes = dc_search::weights::to_safetensors(&start.to_host(), None).unwrap();
    std::fs::write(&start_file, bytes).unwrap();

    let (ratios, epochs, offset) = (vec![0.3, 0.8, 0.5], 0.05, 1000);
    let spec = crate::util::prune_spec(cfg.to_toml(), &start_file, &ratios, epochs, offset);
    let (code, out, err) = crate::util::probe_spec(dir.path(), "prune.json", &spec);
    assert_eq!(code, 0, "{err}");
    let r: ProbeResult = serde_json::from_str(out.trim()).unwrap();

    // The same probe in this process, from the start.
    let rt = crate::util::probe_runtime();
    let mut oracle = crate::util::retrainer(&start, &data, &cfg, &rt);
    let (_, m) = oracle.prune(None, &ratios, epochs, offset).unwrap();
    crate::util::assert_same_probe(&r, &m);
    // From the module's own (untrained) weights the probe would score far less.
    assert!(r.valid_accuracy > 0.5, "{}", r.valid_accuracy);
}
