//! Probes side by side on this machine (`--workers 2`, the local executor: child processes
//! of the binary): a search that writes its file, killed mid-batch and at later points,
//! resumes to the same result as an uninterrupted run.

use std::path::Path;
use std::process::Stdio;

use crate::search::{assert_same_run, journal_lines, kill_when, search_command, two_workers};
use crate::util::run;

/// Whether a worker's result file is in the run's `workers/specs/`.
fn a_result_is_there(run_dir: &Path) -> bool {
    std::fs::read_dir(run_dir.join("workers/specs")).is_ok_and(|d| {
        d.filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".result.json"))
    })
}

#[test]
fn two_local_workers_search_and_a_run_killed_mid_batch_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let extra = two_workers(&[]);
    let floor = ["--floor", "0.85"];
    let (code, out, err) = run(search_command(dir.path(), &floor, "whole", &extra));
    assert_eq!(code, 0, "{err}");
    let whole = dir.path().join("whole");
    assert!(out.contains("\"bytes\""), "{out}");
    // Two child processes probed side by side (their logs), and the run's specs, results
    // and warm starts went when it finished.
    for log in ["0.log", "1.log"] {
        assert!(whole.join("workers/logs").join(log).is_file(), "{log}");
    }
    assert!(!whole.join("workers/specs").exists());
    let csv = std::fs::read_to_string(whole.join("trials.csv")).unwrap();
    let ratio_probes = csv
        .lines()
        .filter(|l| l.contains(",bisect,") || l.contains(",refine,"))
        .count();
    assert_eq!(ratio_probes, 4, "{csv}");
    let config = std::fs::read_to_string(whole.join("config.toml")).unwrap();
    assert!(config.contains("workers = 2"), "{config}");

    let lines: Vec<String> = std::fs::read_to_string(whole.join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let total = lines.len();
    let first_bits = 1 + lines
        .iter()
        .position(|l| l.contains("\"phase\":\"bits\""))
        .unwrap();

    let cut = dir.path().join("cut");
    let spawn = || {
        search_command(dir.path(), &floor, "cut", &extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut kills = 0;
    // Mid-batch: a worker's result is written, the batch is not journaled yet.
    kills += usize::from(kill_when(&mut spawn(), || {
        a_result_is_there(&cut) && journal_lines(&cut) <= 3
    }));
    // After the first batch, after the first bits probes, before the chosen model.
    for at in [5, first_bits, total - 1] {
        kills += usize::from(kill_when(&mut spawn(), || journal_lines(&cut) >= at));
    }
    assert!(
        kills >= 3,
        "the search was killed mid-way at least three times"
    );
    let (code, _, err) = run(search_command(dir.path(), &floor, "cut", &extra));
    assert_eq!(code, 0, "{err}");
    assert_same_run(&whole, &cut);
}
