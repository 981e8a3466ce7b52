//! Probes as a real Slurm array job (`--executor slurm`). `scripts/test.sh` starts a
//! single-node Slurm when it runs as root (`scripts/slurm-up.sh`) and sets
//! `DC_SEARCH_SLURM=1`; without it these tests say why they are skipped and pass.

use std::path::PathBuf;

use dc_search::search::spec::{Action, ProbeSpec, SPEC_VERSION};
use dc_search::search::workers::{slurm::Slurm, Command, Executor};

use crate::search::{search_command, two_workers};
use crate::util::{dc_search, mnist_dir, run, small_dense};

/// Whether a Slurm is up for the tests (else says so).
fn slurm_up(test: &str) -> bool {
    let up = std::env::var("DC_SEARCH_SLURM").as_deref() == Ok("1");
    if !up {
        eprintln!(
            "{test}: skipped: no Slurm for the tests (scripts/test.sh starts one as root and sets DC_SEARCH_SLURM=1)"
        );
    }
    up
}

#[test]
fn a_search_with_two_slurm_workers_writes_its_file() {
    if !slurm_up("a_search_with_two_slurm_workers_writes_its_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let extra = two_workers(&["--executor", "slurm"]);
    let (code, out, err) = run(search_command(
        dir.path(),
        &["--floor", "0.85"],
        "run",
        &extra,
    ));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"bytes\""), "{out}");
    let logs: Vec<String> = std::fs::read_dir(dir.path().join("run/workers/logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        logs.iter()
            .any(|l| l.starts_with("slurm-") && l.ends_with("_1.out")),
        "array tasks' logs: {logs:?}"
    );
}

#[test]
fn a_failing_slurm_task_is_reported_with_its_job_id_and_log_and_is_lost() {
    if !slurm_up("a_failing_slurm_task_is_reported_with_its_job_id_and_log_and_is_lost") {
        return;
    }
    let (_guard, cfg, _data, net) = small_dense("lenet-300-100", 100);
    let dir = tempfile::tempdir().unwrap();
    let dense = dir.path().join("dense.safetensors");
    std::fs::write(
        &dense,
        dc_search::weights::to_safetensors(&net.to_host(), None).unwrap(),
    )
    .unwrap();
    let folder = dir.path().join("workers");
    std::fs::create_dir_all(folder.join("specs")).unwrap();
    // A quantize probe whose warm start (the checkpoint it shares) is not there.
    let spec = ProbeSpec {
        spec: SPEC_VERSION,
        config: cfg.to_toml(),
        dense: dense.clone(),
        dense_sha256: dc_search::paths::sha256_file(&dense).unwrap(),
        warm_start: Some(dir.path().join("gone.safetensors")),
        action: Action::Quantize,
        ratios: vec![],
        bits: vec![4, 4, 4],
        epochs: 0.02,
        seed: 1,
        offset: 2000,
        threshold: 0.5,
    };
    let path: PathBuf = folder.join("specs/0.json");
    std::fs::write(&path, serde_json::to_string(&spec).unwrap()).unwrap();
    let command = Command {
        exe: env!("CARGO_BIN_EXE_dc-search").into(),
        threads: Some(1),
        device: "cpu".into(),
        data_dir: Some(mnist_dir()),
    };
    let mut slurm = Slurm::new(command, "", folder.clone()).unwrap();
    slurm.poll = 0.2;
    let answers = slurm.run(&[path]).unwrap();
    assert_eq!(answers.len(), 1);
    let why = answers[0]
        .as_ref()
        .expect_err("the task failed: its probe is lost");
    // Tried twice: the error names the second array job's task and its log.
    assert!(why.starts_with("Slurm task "), "{why}");
    let job = why["Slurm task ".len()..].split('_').next().unwrap();
    let log = folder.join(format!("logs/slurm-{job}_0.out"));
    assert!(why.contains(&log.display().to_string()), "{why}");
    assert!(why.contains("no such checkpoint"), "{why}");
    assert!(log.is_file());
    assert_eq!(why.lines().count(), 1, "{why}");
}

#[test]
fn slurm_without_sbatch_is_refused_in_one_line() {
    let mut c = dc_search();
    c.env("PATH", "/nonexistent").args([
        "--floor",
        "0.9",
        "--workers",
        "2",
        "--executor",
        "slurm",
        "lenet",
    ]);
    let (code, _, err) = run(c);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("sbatch not found") && err.contains("--executor local"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
