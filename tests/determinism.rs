//! Determinism: the same command with the same seed and thread count writes the same
//! bytes and prints the same figures, whether the dense model is trained or cached.

use std::path::Path;

use crate::util::{dc_search, mnist_dir, run, TestConfig};

/// LeNet-5 (convolutions, shift augmentation) trained and compressed for a few dozen
/// iterations on real MNIST.
fn small() -> String {
    TestConfig {
        model: "lenet",
        validation: 1000,
        split_seed: 20160201,
        batch_size: 64,
        iterations: 40,
        rest: "augment_shift = 2\n[compress]\nprune_epochs = 0.02\ncodebook_epochs = 0.01\n",
    }
    .toml()
}

/// Drops the wall-clock parts of a line ("in 3.2 s", "in 4 s") and the output path.
fn without_times(out: &str, file: &Path) -> String {
    let file = file.display().to_string();
    out.lines()
        .map(|line| {
            let line = line.replace(&file, "FILE");
            let words: Vec<&str> = line.split(' ').collect();
            let mut kept = Vec::new();
            let mut i = 0;
            while i < words.len() {
                let timed = words[i] == "in"
                    && words.get(i + 1).is_some_and(|w| w.parse::<f64>().is_ok())
                    && words.get(i + 2).is_some_and(|w| w.starts_with('s'));
                if timed {
                    i += 3;
                } else {
                    kept.push(words[i]);
                    i += 1;
                }
            }
            kept.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `compress` of the small config into `dir/<name>.dcz` with the model cache `cache`;
/// returns the file's bytes and the timing-free stdout.
fn compress(dir: &Path, cache: &Path, name: &str) -> (Vec<u8>, String) {
    let cfg = dir.join("small.toml");
    std::fs::write(&cfg, small()).unwrap();
    let file = dir.join(format!("{name}.dcz"));
    let mut c = dc_search();
    c.env("DC_SEARCH_CACHE", cache)
        .arg("compress")
        .arg(&cfg)
        .args([
            "--ratios",
            "0.4,0.85,0.92,0.8",
            "--bits",
            "6,5,4,4",
            "--seed",
            "5",
            "--threads",
            "2",
            "--device",
            "cpu",
            "--quiet",
            // Forty iterations lose more than the default 5 points to compression; this
            // test is about bytes, not accuracy.
            "--max-loss",
            "100",
            "--data-dir",
        ])
        .arg(mnist_dir())
        .arg("-o")
        .arg(&file);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    (std::fs::read(&file).unwrap(), without_times(&out, &file))
}

#[test]
fn same_seed_and_threads_give_identical_files_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let (a, out_a) = compress(dir.path(), &dir.path().join("cache-a"), "a");
    // An independent run: trains its own dense model.
    let (b, out_b) = compress(dir.path(), &dir.path().join("cache-b"), "b");
    // A run that loads the dense model the first one cached.
    let (c, out_c) = compress(dir.path(), &dir.path().join("cache-a"), "c");
    assert!(
        out_a.contains("dense float32"),
        "the ratio is printed: {out_a}"
    );
    assert_eq!(
        out_a, out_b,
        "printed figures differ between identical runs"
    );
    assert_eq!(
        out_a, out_c,
        "printed figures differ with a cached dense model"
    );
    assert!(a == b, "the .dcz differs between identical runs");
    assert!(a == c, "the .dcz differs with a cached dense model");
}
