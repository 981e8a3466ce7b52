//! Bring your own model: caffemodel and safetensors fixtures built here (both Caffe layer
//! forms) import exactly, bad files are named with their layer, and `--weights` reaches eval
//! and compress.

use dc_search::import::{self, caffe, WeightsFormat};
use dc_search::models::{Arch, Net};
use dc_search::weights::{self, HostTensors};
use tch::Device;

use crate::util::{
    accuracy_lines, dc_search, eval_with_weights, run, torch_seeded, write_file as write,
};

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
    let a = eval_with_weights(&["lenet-300-100"], &cm);
    let b = eval_with_weights(&["lenet-300-100"], &st);
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
