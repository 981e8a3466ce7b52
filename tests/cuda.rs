//! libtorch's CUDA part present, no GPU: the binary run against the CUDA libtorch of
//! `scripts/setup.sh --cuda-libraries` (all NVIDIA libraries there, no driver or no GPU
//! here) computes on the CPU with `--device auto`, writes the same file as the CPU libtorch
//! does, and `--device cuda` stops with one line saying why. `scripts/test.sh` fetches that
//! libtorch and sets `DC_SEARCH_CUDA_LIBS`; where it cannot, the test says why and passes.

use std::path::PathBuf;

use crate::util::{dc_search, mnist_dir, run, TestConfig};

/// The lib folder of libtorch with its CUDA part: `DC_SEARCH_CUDA_LIBS`, which
/// `scripts/test.sh` sets once `scripts/setup.sh --cuda-libraries` has put it in the cache.
/// Without it (no PyPI to fetch from) the test says why it is skipped and passes.
fn cuda_libs(test: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("DC_SEARCH_CUDA_LIBS").map(PathBuf::from) else {
        eprintln!(
            "{test}: skipped: DC_SEARCH_CUDA_LIBS is not set (scripts/test.sh sets it after \
             `scripts/setup.sh --cuda-libraries`)"
        );
        return None;
    };
    assert!(
        dir.join("libtorch_cuda.so").is_file(),
        "DC_SEARCH_CUDA_LIBS={} has no libtorch_cuda.so: run `bash scripts/setup.sh --cuda-libraries`",
        dir.display()
    );
    Some(dir)
}

#[test]
fn cuda_libraries_without_a_gpu_compute_on_the_cpu_and_change_nothing() {
    let Some(libs) =
        cuda_libs("cuda_libraries_without_a_gpu_compute_on_the_cpu_and_change_nothing")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("small.toml");
    std::fs::write(
        &cfg,
        TestConfig {
            model: "lenet",
            validation: 1000,
            split_seed: 20160201,
            batch_size: 64,
            iterations: 30,
            rest: "[compress]\nprune_epochs = 0.01\ncodebook_epochs = 0.01\n",
        }
        .toml(),
    )
    .unwrap();
    let compress = |name: &str, device: &str, cuda: bool| {
        let file = dir.path().join(format!("{name}.dcz"));
        let mut c = dc_search();
        if cuda {
            c.env("LD_LIBRARY_PATH", &libs);
        }
        c.env("DC_SEARCH_CACHE", dir.path().join("cache"))
            .arg("compress")
            .arg(&cfg)
            .args(["--ratios", "0.4,0.85,0.92,0.8", "--bits", "6,5,4,4"])
            .args(["--threads", "2", "--device", device, "--max-loss", "100"])
            .arg("--data-dir")
            .arg(mnist_dir())
            .arg("-o")
            .arg(&file);
        let (code, out, err) = run(c);
        assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
        (std::fs::read(&file).unwrap(), err)
    };
    let (plain, err) = compress("plain", "cpu", false);
    assert_eq!(err.lines().next(), Some("device cpu, 2 threads"), "{err}");
    let (with_cuda, err) = compress("with-cuda", "auto", true);
    let first = err.lines().next().unwrap_or_default();
    if first.starts_with("device cuda") {
        // A machine with a GPU: the file decodes and evaluates on the CPU.
        let mut c = dc_search();
        c.arg("eval")
            .arg(dir.path().join("with-cuda.dcz"))
            .args(["--device", "cpu", "--quiet", "--data-dir"])
            .arg(mnist_dir());
        let (code, out, err) = run(c);
        assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
        return;
    }
    assert!(
        first.starts_with("device cpu, 2 threads (--device auto: ")
            && (first.contains("no NVIDIA driver") || first.contains("no GPU visible")),
        "{err}"
    );
    assert!(
        plain == with_cuda,
        "loading libtorch's CUDA part changed the file written on the CPU"
    );

    // `--device cuda` without a usable GPU: one line naming the cause.
    let mut c = dc_search();
    c.env("LD_LIBRARY_PATH", &libs)
        .arg("eval")
        .arg(&cfg)
        .args(["--device", "cuda", "--data-dir"])
        .arg(mnist_dir());
    let (code, _, err) = run(c);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: --device cuda: ")
            && (err.contains("no NVIDIA driver") || err.contains("sees no GPU"))
            && err.contains("or use --device cpu"),
        "{err}"
    );
}
