//! Data from files, as a user brings it: MNIST and Fashion-MNIST written by the test as a
//! NumPy `.npz` and as PNG image folders evaluate exactly as the built-in IDX loader does,
//! and search to the same file; a colour data set (3×32×32, drawn by the test) goes through
//! eval, search and export with a TorchScript model trained in PyTorch
//! (`tests/fixtures/torchscript/colour-cnn.pt`, made by `make_colour_fixture.py`); bad data
//! and a wrongly normalised model get one line.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use dc_search::config::Config;
use dc_search::data::npz::npy_bytes as npy;
use dc_search::data::{self, idx, DatasetName};
use dc_search::models::torchscript;
use dc_search::train;
use rand::{Rng, SeedableRng};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

use crate::search::search_command;
use crate::util::{dc_search, run, TestConfig};

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torchscript")
        .join(file)
}

/// Writes `arrays` as the `.npz` `path` (as `numpy.savez` does: one stored `.npy` each).
fn npz<S: AsRef<str>>(path: &Path, arrays: &[(S, Vec<u8>)]) {
    let mut z = zip::ZipWriter::new(File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    for (name, bytes) in arrays {
        z.start_file(format!("{}.npy", name.as_ref()), opts)
            .unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

fn labels_i64(l: &[i64]) -> Vec<u8> {
    l.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Images (N×H×W bytes) and labels of one part.
struct Images {
    pixels: Vec<u8>,
    labels: Vec<i64>,
    len: usize,
}

impl Images {
    fn n(&self) -> usize {
        self.labels.len()
    }

    fn pick(&self, idx: &[usize]) -> Images {
        Images {
            pixels: idx
                .iter()
                .flat_map(|&i| self.pixels[i * self.len..(i + 1) * self.len].to_vec())
                .collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            len: self.len,
        }
    }
}

/// A built-in data set's training and test images as set-up installed them.
fn idx_parts(d: DatasetName) -> (Images, Images) {
    let dir = d.default_dir();
    let read = |stem: &str| {
        let p = [stem.to_string(), format!("{stem}.gz")]
            .into_iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .expect("set-up installed the data: run scripts/setup.sh");
        idx::read_idx(&p).unwrap().data
    };
    let part = |img: &str, lab: &str| Images {
        pixels: read(img),
        labels: read(lab).iter().map(|&l| i64::from(l)).collect(),
        len: 784,
    };
    (
        part("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        part("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    )
}

/// `(name, images)` as an `.npz` of 28×28 arrays (uint8 images, int64 labels).
fn grey_npz(path: &Path, parts: &[(&str, &Images)]) {
    let mut arrays = Vec::new();
    for (name, p) in parts {
        arrays.push((format!("x_{name}"), npy("|u1", &[p.n(), 28, 28], &p.pixels)));
        arrays.push((
            format!("y_{name}"),
            npy("<i8", &[p.n()], &labels_i64(&p.labels)),
        ));
    }
    npz(path, &arrays);
}

/// Writes `images` (C×H×W each) as PNG files `root/<part>/<label>/<index>.png`.
fn png_folder(root: &Path, part: &str, p: &Images, [c, h, w]: [usize; 3]) {
    for (i, (px, l)) in p.pixels.chunks(p.len).zip(&p.labels).enumerate() {
        let dir = root.join(part).join(l.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{i:05}.png"));
        if c == 1 {
            image::GrayImage::from_raw(w as u32, h as u32, px.to_vec())
                .unwrap()
                .save(&path)
                .unwrap();
        } else {
            let hwc: Vec<u8> = (0..h * w)
                .flat_map(|q| (0..c).map(move |ch| px[ch * h * w + q]))
                .collect();
            image::RgbImage::from_raw(w as u32, h as u32, hwc)
                .unwrap()
                .save(&path)
                .unwrap();
        }
    }
}

/// The accuracies of `eval` output: `(split, accuracy, loss)` per line.
fn accuracies(out: &str) -> Vec<(String, String, f64)> {
    out.lines()
        .filter(|l| l.starts_with("validation:") || l.starts_with("test:"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].to_string(), w[2].to_string(), w[4].parse().unwrap())
        })
        .collect()
}

/// `dc-search eval ARGS` on the CPU with the cache in `dir`; its stdout (asserting success).
fn eval(dir: &Path, args: &[&str]) -> String {
    let mut c = dc_search();
    c.env("DC_SEARCH_CACHE", dir.join("cache"))
        .arg("eval")
        .args(args)
        .args(["--device", "cpu", "--threads", "2", "--quiet"]);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{args:?}\nstdout: {out}\nstderr: {err}");
    out
}

/// A built-in data set written as an `.npz` (in file order, no validation arrays) and as a
/// PNG folder (the preset's validation images as `val/`, the test images, a few training
/// images) evaluates exactly as the IDX loader: the `.npz` through the same cached dense
/// model (its content is the built-in data set's), the folder with those weights.
fn files_evaluate_as_the_idx_loader(d: DatasetName) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.toml");
    let toml = TestConfig {
        model: "lenet-300-100",
        validation: 5000,
        split_seed: 20160201,
        batch_size: 64,
        iterations: 300,
        rest: "",
    }
    .toml();
    std::fs::write(&cfg, toml).unwrap();
    let cfg = cfg.to_str().unwrap();
    let idx_dir = d.default_dir();
    let builtin = eval(
        dir.path(),
        &[
            cfg,
            "--dataset",
            d.as_str(),
            "--data-dir",
            idx_dir.to_str().unwrap(),
        ],
    );
    let weights = builtin
        .lines()
        .find_map(|l| l.strip_prefix("weights:"))
        .unwrap()
        .trim()
        .to_string();
    let (train, test) = idx_parts(d);

    let path = dir.path().join(format!("{}.npz", d.as_str()));
    grey_npz(&path, &[("train", &train), ("test", &test)]);
    let from_npz = eval(dir.path(), &[cfg, "--data", path.to_str().unwrap()]);
    assert_eq!(from_npz, builtin, "the same lines, the same cached weights");

    let order = data::validation_order(train.n(), 20160201);
    let mut held = order[..5000].to_vec();
    held.sort_unstable();
    let mut rest = order[5000..6000].to_vec();
    rest.sort_unstable();
    let folder = dir.path().join(d.as_str());
    png_folder(&folder, "train", &train.pick(&rest), [1, 28, 28]);
    png_folder(&folder, "val", &train.pick(&held), [1, 28, 28]);
    png_folder(&folder, "test", &test, [1, 28, 28]);
    let from_png = eval(
        dir.path(),
        &[
            cfg,
            "--data",
            folder.to_str().unwrap(),
            "--weights",
            &weights,
        ],
    );
    let (a, b) = (accuracies(&builtin), accuracies(&from_png));
    assert_eq!(a.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.0, &x.1), (&y.0, &y.1), "{builtin}\n{from_png}");
        // The same images in another order: the loss sums in another order.
        assert!((x.2 - y.2).abs() <= 1e-4, "{builtin}\n{from_png}");
    }
}

#[test]
fn mnist_as_npz_and_png_folders_evaluates_as_the_idx_files() {
    files_evaluate_as_the_idx_loader(DatasetName::Mnist);
}

#[test]
fn fashion_mnist_as_npz_and_png_folders_evaluates_as_the_idx_files() {
    files_evaluate_as_the_idx_loader(DatasetName::FashionMnist);
}

/// The tiny search (tests/search.rs) on `--data` gives the file it gives on what the data
/// holds: MNIST as an `.npz` the file of the IDX loader, byte for byte; a PNG folder the
/// file of an `.npz` of the same images in the same order.
#[test]
fn files_search_to_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = idx_parts(DatasetName::Mnist);
    let path = dir.path().join("mnist.npz");
    grey_npz(&path, &[("train", &train), ("test", &test)]);
    let extra = ["--budget", "3p", "--threads", "2", "--seed", "3"];
    let search = |out: &str, data: Option<&Path>| {
        let mut more: Vec<&str> = extra.to_vec();
        if let Some(d) = data {
            more.extend(["--data", d.to_str().unwrap()]);
        }
        let (code, o, e) = run(search_command(dir.path(), &["--max-drop", "4"], out, &more));
        assert_eq!(code, 0, "stdout: {o}\nstderr: {e}");
        let run_dir = dir.path().join(out);
        let file = std::fs::read(run_dir.join("lenet-300-100.dcz")).unwrap();
        let ratios = std::fs::read_to_string(run_dir.join("ratios.json")).unwrap();
        (file, ratios)
    };
    let builtin = search("builtin", None);
    assert_eq!(search("npz", Some(&path)), builtin);

    // A small set in class order: the folder decodes to the arrays of the .npz.
    let by_class = |p: &Images, n: usize| {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by_key(|&i| p.labels[i]);
        p.pick(&idx)
    };
    let (tr, va, te) = (
        by_class(&train, 3000),
        by_class(&train.pick(&(3000..4000).collect::<Vec<_>>()), 1000),
        by_class(&test, 1000),
    );
    let small = dir.path().join("mnist-small.npz");
    grey_npz(&small, &[("train", &tr), ("val", &va), ("test", &te)]);
    let folder = dir.path().join("mnist-small");
    png_folder(&folder, "train", &tr, [1, 28, 28]);
    png_folder(&folder, "val", &va, [1, 28, 28]);
    png_folder(&folder, "test", &te, [1, 28, 28]);
    let from_npz = search("small-npz", Some(&small));
    assert_eq!(search("small-png", Some(&folder)), from_npz);
    assert!(
        from_npz.1.contains("\"dataset\": \"mnist-small\""),
        "{}",
        from_npz.1
    );
}

const COLOURS: [[i32; 3]; 4] = [[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]];

/// `n` synthetic colour images as `make_colour_fixture.py` draws them (its own generator):
/// a filled square of side 8–16 whose colour (jittered by ±40) is the class, on dark noise;
/// C×H×W each.
fn shapes(n: usize, seed: u64) -> Images {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(n * 3072);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let mut img: Vec<i32> = (0..3072).map(|_| rng.random_range(0..60)).collect();
        let label = rng.random_range(0..4usize);
        let side = rng.random_range(8..=16usize);
        let (r0, c0) = (
            rng.random_range(0..=32 - side),
            rng.random_range(0..=32 - side),
        );
        let colour: Vec<i32> = COLOURS[label]
            .iter()
            .map(|&v| v + rng.random_range(-40..=40))
            .collect();
        for (ch, &v) in colour.iter().enumerate() {
            for r in r0..r0 + side {
                for c in c0..c0 + side {
                    img[ch * 1024 + r * 32 + c] = v;
                }
            }
        }
        pixels.extend(img.iter().map(|&v| v.clamp(0, 255) as u8));
        labels.push(label as i64);
    }
    Images {
        pixels,
        labels,
        len: 3072,
    }
}

/// Writes the colour data set into `dir` as `colour.npz` (N×H×W×C, as the fixture's config
/// says) and the fixture's config, at test size, as `colour.toml`; returns its path.
fn colour_setup(dir: &Path, extra: &str) -> PathBuf {
    let parts = [
        ("train", shapes(1200, 1)),
        ("val", shapes(300, 2)),
        ("test", shapes(300, 3)),
    ];
    let mut arrays = Vec::new();
    for (name, p) in &parts {
        let hwc: Vec<u8> = p
            .pixels
            .chunks(3072)
            .flat_map(|img| (0..1024).flat_map(move |q| (0..3).map(move |c| img[c * 1024 + q])))
            .collect();
        arrays.push((format!("x_{name}"), npy("|u1", &[p.n(), 32, 32, 3], &hwc)));
        arrays.push((
            format!("y_{name}"),
            npy("<i8", &[p.n()], &labels_i64(&p.labels)),
        ));
    }
    npz(&dir.join("colour.npz"), &arrays);
    let folder = dir.join("colour");
    for (name, p) in &parts {
        png_folder(&folder, name, p, [3, 32, 32]);
    }
    let text = std::fs::read_to_string(fixture("colour-cnn.toml"))
        .unwrap()
        .replace(
            "module = \"colour-cnn.pt\"",
            &format!("module = {:?}", fixture("colour-cnn.pt").to_str().unwrap()),
        );
    let path = dir.join("colour.toml");
    std::fs::write(&path, text + extra).unwrap();
    path
}

const COLOUR_SEARCH: &str = r#"
[compress]
codebook_epochs = 0.05

[search]
probe_epochs = 0.1
bits_epochs = 0.05
bisection_probes = 2
refine_probes = 1
bits_candidates = 1
bits_probes = 2
bits_min = 3
bits_max = 5
grid = [0.0, 0.5, 0.9]
"#;

/// A brought colour model end to end: eval on the `.npz` and on the PNG folder of the same
/// images, a search, the ratio exports by module path with the file's sparsity, the `.dcz`
/// evaluated again and exported as a state dict that evaluates as the file does.
#[test]
fn colour_data_runs_eval_search_and_export_with_a_torchscript_model() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = colour_setup(dir.path(), COLOUR_SEARCH);
    let c = cfg.to_str().unwrap();
    let npz = dir.path().join("colour.npz");
    let dense = eval(dir.path(), &[c]);
    let acc = accuracies(&dense);
    let valid: f64 = acc[0].1.parse().unwrap();
    assert!(valid >= 0.95, "the trained module on drawn data: {dense}");
    let png = eval(
        dir.path(),
        &[c, "--data", dir.path().join("colour").to_str().unwrap()],
    );
    for (x, y) in acc.iter().zip(&accuracies(&png)) {
        assert_eq!((&x.0, &x.1), (&y.0, &y.1), "{dense}\n{png}");
    }

    let run_dir = dir.path().join("run");
    let mut s = dc_search();
    s.env("DC_SEARCH_CACHE", dir.path().join("cache"))
        .args([
            "--max-drop",
            "3",
            "--budget",
            "3p",
            "--threads",
            "2",
            "--seed",
            "1",
        ])
        .args(["--device", "cpu", "--quiet", "--out"])
        .arg(&run_dir)
        .arg(c)
        .arg("--data")
        .arg(&npz);
    let (code, out, err) = run(s);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let json = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run_dir.join(f)).unwrap()).unwrap()
    };
    let summary = json("summary.json");
    // The dense size counts the biases the layers have: conv1 and conv2 have none.
    assert_eq!(
        summary["dense_bytes"].as_u64(),
        Some(4 * (216 + 1152 + 32768 + 32 + 128 + 4))
    );
    assert_eq!(summary["dataset"].as_str(), Some("colour"));
    let ratios = json("ratios.json");
    let layers = ratios["layers"].as_array().unwrap();
    let weights: Vec<&str> = layers
        .iter()
        .map(|l| l["weight"].as_str().unwrap())
        .collect();
    assert_eq!(
        weights,
        [
            "features.0.weight",
            "features.4.weight",
            "classifier.1.weight",
            "classifier.3.weight"
        ]
    );
    // The file holds at least the zeros the searched ratio prunes (⌊ratio × weights⌋; more
    // where folding dead units away zeroes others).
    for (l, n) in layers
        .iter()
        .zip([3 * 8 * 9, 8 * 16 * 9, 1024 * 32, 32 * 4])
    {
        let (searched, file) = (
            l["sparse_ratio"].as_f64().unwrap(),
            l["file_sparse_ratio"].as_f64().unwrap(),
        );
        let n = n as f64;
        assert!(
            (file * n).round() >= (searched * n).floor(),
            "{l}: {n} weights"
        );
    }
    let export = |args: &[&str]| {
        let mut e = dc_search();
        e.arg("export").args(args);
        let (code, out, err) = run(e);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    let rj = run_dir.join("ratios.json");
    let nni: serde_json::Value = serde_json::from_str(&export(&[
        rj.to_str().unwrap(),
        "--to",
        "nni",
        "--module-prefix",
        "module.",
    ]))
    .unwrap();
    assert_eq!(nni[0]["op_names"][0].as_str(), Some("module.features.0"));
    assert_eq!(nni[3]["op_names"][0].as_str(), Some("module.classifier.3"));
    assert_eq!(nni[1]["sparse_ratio"], layers[1]["file_sparse_ratio"]);
    let distiller = export(&[rj.to_str().unwrap(), "--to", "distiller"]);
    assert!(
        distiller.contains("weights: ['features.4.weight']"),
        "{distiller}"
    );

    // The file, evaluated with its config and the data again.
    let dcz = run_dir.join("colour-cnn.dcz");
    let file_eval = eval(
        dir.path(),
        &[
            dcz.to_str().unwrap(),
            "--ts-config",
            c,
            "--data",
            npz.to_str().unwrap(),
        ],
    );
    let file_acc = accuracies(&file_eval);
    assert_eq!(
        file_acc[0].1,
        format!("{:.4}", summary["decoded_valid_accuracy"].as_f64().unwrap()),
        "{file_eval}"
    );
    // Its state dict: every parameter and buffer of the module, no bias where the layer
    // has none, and loaded into a fresh module it evaluates as the file.
    let sd = dir.path().join("colour.safetensors");
    export(&[
        dcz.to_str().unwrap(),
        "--to",
        "safetensors",
        "--ts-config",
        c,
        "-o",
        sd.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&sd).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let names = st.names();
    assert!(names.contains(&"features.1.running_var") && names.contains(&"classifier.3.bias"));
    assert!(!names.contains(&"features.0.bias"), "{names:?}");
    let cfg = Config::resolve(c).unwrap();
    let mut cfg_data = cfg.data.clone();
    cfg_data.path = Some(npz.clone());
    let ts = cfg.torchscript.as_ref().unwrap();
    let fresh = torchscript::load(&cfg.model, ts, Device::Cpu).unwrap();
    tch::no_grad(|| {
        for (p, l) in fresh.params.iter().zip(&ts.layers) {
            let v = st.tensor(&l.weight).unwrap();
            let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
            p.weight
                .shallow_clone()
                .copy_(&Tensor::from_data_size(v.data(), &shape, Kind::Float));
        }
    });
    let data = data::load(&cfg_data).unwrap();
    let v = train::evaluate(&fresh, &data.valid).accuracy;
    assert_eq!(format!("{v:.4}"), file_acc[0].1);
}

/// One error line, exit 2.
fn refused(c: Command, want: &[&str]) {
    let (code, out, err) = run(c);
    assert_eq!(code, 2, "stdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("device ")).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    for w in want {
        assert!(err.contains(w), "{w:?} in {err}");
    }
}

#[test]
fn bad_data_and_a_wrong_normalisation_get_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = colour_setup(d, "");
    let cmd = |args: &[&str]| {
        let mut c = dc_search();
        c.env("DC_SEARCH_CACHE", d.join("cache"))
            .arg("eval")
            .args(args)
            .args(["--device", "cpu", "--quiet"]);
        c
    };
    let img = npy("|u1", &[2, 28, 28], &[0; 2 * 784]);
    let y2 = npy("<i8", &[2], &labels_i64(&[0, 1]));
    let write = |name: &str, arrays: &[(&str, Vec<u8>)]| {
        let p = d.join(name);
        npz(&p, arrays);
        p.to_str().unwrap().to_string()
    };
    // lengths that disagree
    let p = write(
        "short.npz",
        &[
            ("x_train", img.clone()),
            ("y_train", npy("<i8", &[3], &[0; 24])),
            ("x_test", img.clone()),
            ("y_test", y2.clone()),
        ],
    );
    refused(
        cmd(&["lenet", "--data", &p]),
        &["2 images but y_train holds 3 labels"],
    );
    // labels that are not integers, or out of range
    let p = write(
        "float.npz",
        &[
            ("x_train", img.clone()),
            ("y_train", npy("<f4", &[2], &[0; 8])),
            ("x_test", img.clone()),
            ("y_test", y2.clone()),
        ],
    );
    refused(
        cmd(&["lenet", "--data", &p]),
        &["y_train", "labels must be integers"],
    );
    let p = write(
        "neg.npz",
        &[
            ("x_train", img.clone()),
            ("y_train", npy("<i8", &[2], &labels_i64(&[0, -3]))),
            ("x_test", img.clone()),
            ("y_test", y2.clone()),
        ],
    );
    refused(
        cmd(&["lenet", "--data", &p]),
        &["label -3 of image 1 is out of range"],
    );
    let p = write(
        "eleven.npz",
        &[
            ("x_train", img.clone()),
            ("y_train", npy("<i8", &[2], &labels_i64(&[0, 11]))),
            ("x_val", img.clone()),
            ("y_val", y2.clone()),
            ("x_test", img.clone()),
            ("y_test", y2.clone()),
        ],
    );
    refused(
        cmd(&["lenet", "--data", &p]),
        &["gives 10 logits", "12 classes"],
    );
    // NaN
    let mut f = vec![0u8; 2 * 784 * 4];
    f[4 * 900..4 * 901].copy_from_slice(&f32::NAN.to_le_bytes());
    let p = write(
        "nan.npz",
        &[
            ("x_train", npy("<f4", &[2, 28, 28], &f)),
            ("y_train", y2.clone()),
            ("x_test", img.clone()),
            ("y_test", y2.clone()),
        ],
    );
    refused(cmd(&["lenet", "--data", &p]), &["image 1 holds NaN"]);
    // images the model does not take
    let npz_colour = d.join("colour.npz");
    refused(
        cmd(&[
            "lenet",
            "--data",
            npz_colour.to_str().unwrap(),
            "--layout",
            "nhwc",
        ]),
        &["model lenet takes images of 1×28×28", "3×32×32"],
    );
    // folders: images of different sizes, an empty class folder, an unreadable image
    let folder = d.join("colour");
    let c = cfg.to_str().unwrap();
    let f = folder.to_str().unwrap();
    image::RgbImage::new(30, 32)
        .save(folder.join("test/2/99999.png"))
        .unwrap();
    refused(
        cmd(&[c, "--data", f]),
        &["99999.png is 30×32", "images of one size"],
    );
    std::fs::write(folder.join("test/2/99999.png"), b"not a png").unwrap();
    refused(cmd(&[c, "--data", f]), &["cannot read image", "99999.png"]);
    std::fs::remove_file(folder.join("test/2/99999.png")).unwrap();
    std::fs::create_dir_all(folder.join("train/4")).unwrap();
    refused(cmd(&[c, "--data", f]), &["no class folder \"4\""]);
    std::fs::create_dir_all(folder.join("test/4")).unwrap();
    std::fs::create_dir_all(folder.join("val/4")).unwrap();
    refused(
        cmd(&[c, "--data", f]),
        &["class folder \"4\" holds no PNG or JPEG image"],
    );

    // A brought model given its inputs without its normalisation: the search stops before
    // it starts, naming the normalisation; eval prints its accuracies and says the same.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let raw = d.join("raw.toml");
    std::fs::write(
        &raw,
        text.replace("mean = [0.167, 0.168, 0.144]", "input_scale = 1.0")
            .replace("std = [0.187, 0.189, 0.143]", ""),
    )
    .unwrap();
    let said = [
        "validation accuracy",
        "far under its expected_accuracy 0.99",
        "not normalised as in its training",
        "set [data] mean and std",
    ];
    let mut search = dc_search();
    search
        .env("DC_SEARCH_CACHE", d.join("cache"))
        .args(["--max-drop", "1", "--device", "cpu", "--quiet", "--out"])
        .arg(d.join("run"))
        .arg(&raw);
    refused(search, &said);
    assert!(!d.join("run").join("sensitivity.csv").exists());
    let (code, out, err) = run(cmd(&[raw.to_str().unwrap()]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(accuracies(&out).len(), 2, "{out}");
    assert!(err.starts_with("warning: "), "{err}");
    for w in said {
        assert!(err.contains(w), "{w:?} in {err}");
    }
}
