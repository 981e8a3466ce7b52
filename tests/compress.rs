//! Deep Compression core on real data at small size: masks through retraining, codebook
//! retraining, and a file that decodes bit-exactly to the in-memory model.

use dc_search::compress::encode::verify_decoded;
use dc_search::compress::prune::PruneRule;
use dc_search::compress::{encode, BiasPrecision, CompressConfig, Plan, Trainer};
use dc_search::format;
use dc_search::models::tensor_to_vec;
use dc_search::train;
use tch::Device;

use crate::util::{dc_search, run, small_dense};

fn round_trip(bias: BiasPrecision) {
    let (_g, cfg, data, net) = small_dense("lenet-300-100", 300);
    let ccfg = CompressConfig {
        prune_epochs: 0.05,
        codebook_epochs: 0.05,
        bias_precision: bias,
        ..CompressConfig::default()
    };
    let plan = Plan {
        rules: vec![
            PruneRule::SparseRatio(0.92),
            PruneRule::SparseRatio(0.91),
            PruneRule::SparseRatio(0.74),
        ],
        bits: vec![6, 6, 6],
    };
    let trainer = Trainer {
        train: &data.train,
        dense: &cfg.train,
        cfg: &ccfg,
        quiet: true,
    };
    let valid = data.valid.head(1000);
    let (state, stats) = trainer.compress(&net, &plan, &valid).unwrap();
    // Exact ratios survive retraining: pruned weights stayed zero.
    for (d, want) in stats.densities.iter().zip([0.08, 0.09, 0.26]) {
        assert!((d - want).abs() < 1e-3, "density {d} vs {want}");
    }
    let w = tensor_to_vec(&net.params[0].weight);
    assert_eq!(
        w.iter().filter(|&&v| v != 0.0).count(),
        (0.08f64 * 235_200.0).round() as usize
    );
    let model = encode::to_model(
        &net,
        &state,
        "mnist",
        (cfg.data.input_scale.unwrap(), 0.0),
        bias,
    )
    .unwrap();
    let bytes = format::encode(&model).unwrap();
    let decoded = encode::to_net(&format::decode(&bytes).unwrap(), Device::Cpu).unwrap();
    verify_decoded(&net, &decoded).unwrap();
    let a = train::evaluate(&net, &valid);
    let b = train::evaluate(&decoded, &valid);
    assert_eq!(a, b, "decoded model evaluates identically");
    assert!(
        a.accuracy > 0.8,
        "compressed small model still works: {}",
        a.accuracy
    );
    assert!(bytes.len() < 30_000, "{} bytes", bytes.len());
    let acc = format::account(&bytes).unwrap();
    assert_eq!(acc.total.total(), bytes.len() as u64);
}

#[test]
fn compressed_file_decodes_bit_exactly_f32_biases() {
    round_trip(BiasPrecision::F32);
}

#[test]
fn compressed_file_decodes_bit_exactly_f16_biases() {
    round_trip(BiasPrecision::F16);
}

#[test]
fn compress_flags_are_checked_before_any_work() {
    for (args, want) in [
        (
            vec!["--ratios", "0.3,0.8,1.0,0.8", "--bits", "8,8,5,5"],
            "outside [0, 1)",
        ),
        (
            vec!["--ratios", "0.3,0.8,-0.1,0.8", "--bits", "8,8,5,5"],
            "outside [0, 1)",
        ),
        (
            vec!["--ratios", "0.3,0.8,0.9,0.8", "--bits", "0,8,5,5"],
            "weight bits must be 1 to 16",
        ),
        (
            vec!["--ratios", "0.3,0.8,0.9,0.8", "--bits", "8,17,5,5"],
            "weight bits must be 1 to 16",
        ),
        (
            vec!["--ratios", "0.3,0.8", "--bits", "8,8,5,5"],
            "2 values given for 4 layers",
        ),
        (
            vec!["--ratios", "0.3,x,0.9,0.8", "--bits", "8,8,5,5"],
            "\"x\" is not a valid number",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.dcz");
        let mut c = dc_search();
        c.args(["compress", "lenet"])
            .args(&args)
            .arg("-o")
            .arg(&out);
        let (code, _, err) = run(c);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing partial left"
        );
    }
}

#[test]
fn unwritable_output_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut c = dc_search();
    c.args([
        "compress",
        "lenet",
        "--ratios",
        "0.3,0.8,0.9,0.8",
        "--bits",
        "8,8,5,5",
        "-o",
    ])
    .arg(file.join("out.dcz"));
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(err.contains("cannot create output folder"), "{err}");
}

#[test]
fn corrupt_and_missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.dcz");
    std::fs::write(&bad, b"DCZ\0garbage").unwrap();
    for cmd in ["inspect", "eval"] {
        let mut c = dc_search();
        c.arg(cmd).arg(&bad);
        let (code, _, err) = run(c);
        assert_eq!(code, 2);
        assert!(
            err.contains("bad.dcz") && err.contains("not a valid dc-search compressed file"),
            "{cmd}: {err}"
        );
    }
    let mut c = dc_search();
    c.arg("inspect").arg(dir.path().join("missing.dcz"));
    let (code, _, err) = run(c);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read compressed file") && err.contains("missing.dcz"),
        "{err}"
    );
}
