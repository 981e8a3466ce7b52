//! The search end to end at small size (real MNIST, real retraining, tiny budgets), its
//! refusals, and its sensitivity sweep (the fast sweep equals the naive one).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{dc_search, mnist_dir, probe_spec, prune_spec, run, small_dense, TestConfig};

/// The tiny search's config: LeNet-300-100 on real MNIST, a few probes of a few batches.
fn tiny() -> String {
    TestConfig {
        model: "lenet-300-100",
        validation: 5000,
        split_seed: 20160201,
        batch_size: 64,
        iterations: 600,
        rest: TINY_SEARCH,
    }
    .toml()
}

const TINY_SEARCH: &str = r#"[compress]
codebook_epochs = 0.03
[search]
probe_epochs = 0.05
final_epochs = 0.05
bits_epochs = 0.02
bisection_probes = 3
refine_probes = 2
refine_push = 0.3
grid = [0.0, 0.5, 0.8, 0.9, 0.95, 0.98]
"#;

/// The tiny search in `dir` (config, cache) writing to `dir/<out>`.
pub(crate) fn search_command(dir: &Path, floor: &[&str], out: &str, extra: &[&str]) -> Command {
    search_command_with(dir, &tiny(), true, floor, out, extra)
}

/// [`search_command`] with the config `toml` (written as `dir/tiny.toml`), `--quiet` when
/// `quiet`.
fn search_command_with(
    dir: &Path,
    toml: &str,
    quiet: bool,
    floor: &[&str],
    out: &str,
    extra: &[&str],
) -> Command {
    let cfg = dir.join("tiny.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut c = dc_search();
    c.env("DC_SEARCH_CACHE", dir.join("cache"))
        .args(floor)
        .args(if quiet { &["--quiet"][..] } else { &[][..] })
        .args(["--device", "cpu", "--out"])
        .arg(dir.join(out))
        .arg("--data-dir")
        .arg(mnist_dir())
        .args(extra)
        .arg(&cfg);
    c
}

fn search(dir: &Path, floor: &str) -> (i32, String, String) {
    run(search_command(dir, &["--floor", floor], "run", &[]))
}

pub(crate) fn journal_lines(run_dir: &Path) -> usize {
    std::fs::read_to_string(run_dir.join("journal.jsonl"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Waits until the journal in `run_dir` holds `lines` lines while `child` runs: true if it
/// got there, false if the search ended first.
pub(crate) fn wait_for_journal(child: &mut Child, run_dir: &Path, lines: usize) -> bool {
    wait_until(child, || journal_lines(run_dir) >= lines)
}

/// Waits until `done()` while `child` runs: true if it got there, false if the child
/// ended first.
pub(crate) fn wait_until(child: &mut Child, done: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if done() {
            return true;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "search hangs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills `child` (SIGKILL) once `done()` holds: true if it did, false if the child ended
/// first.
pub(crate) fn kill_when(child: &mut Child, done: impl Fn() -> bool) -> bool {
    let killed = wait_until(child, done);
    if killed {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    killed
}

/// Two runs of the tiny search ended alike: the same ratios, the same file byte for byte,
/// the same probes in the same order with the same results, no probe journaled twice.
pub(crate) fn assert_same_run(whole: &Path, cut: &Path) {
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(read(whole, "ratios.json"), read(cut, "ratios.json"));
    assert_eq!(
        read(whole, "lenet-300-100.dcz"),
        read(cut, "lenet-300-100.dcz")
    );
    let probes = |d: &Path| -> Vec<String> {
        let csv = String::from_utf8(read(d, "trials.csv")).unwrap();
        csv.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                // drop seconds and warm start (the last fields) which may differ
                f[..9].join(",")
            })
            .collect()
    };
    assert_eq!(probes(whole), probes(cut));
    assert_eq!(journal_lines(whole), journal_lines(cut));
}

/// `--budget 4p --threads 2 --seed 3 --workers 2`, then `more`: the tiny search with two
/// workers.
pub(crate) fn two_workers<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--budget",
        "4p",
        "--threads",
        "2",
        "--seed",
        "3",
        "--workers",
        "2",
    ];
    v.extend_from_slice(more);
    v
}

/// Kills a search (SIGKILL) at several points, reruns it each time, and ends with the
/// same ratios, the same file (byte for byte) and the same probes as an uninterrupted run.
#[test]
fn killed_search_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--budget", "5p", "--threads", "2", "--seed", "3"];
    let (code, _, err) = run(search_command(
        dir.path(),
        &["--floor", "0.85"],
        "whole",
        &extra,
    ));
    assert_eq!(code, 0, "{err}");
    let whole = dir.path().join("whole");
    let total = journal_lines(&whole);
    assert!(
        total >= 9,
        "header, sweep, 5 ratio probes, bits probes, the chosen model: {total} lines"
    );

    // Where the uninterrupted run's journal holds its first final retraining and its first
    // bits probe (the tiny config retrains each candidate `final_epochs`).
    let lines: Vec<String> = std::fs::read_to_string(whole.join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let upto = |what: &str| 1 + lines.iter().position(|l| l.contains(what)).unwrap();
    let (first_candidate, first_bits) = (upto("{\"candidate\":"), upto("\"phase\":\"bits\""));
    assert!(first_candidate < first_bits, "{lines:?}");

    let cut = dir.path().join("cut");
    let mut kills = 0;
    // Kill once the journal holds the sweep (3 lines: during the first probe), then two
    // probes (during the third), then the first candidate's final retraining (during the
    // next one's, or the bits stage's sweep), then the first bits probe (during the bits
    // stage), then everything but the chosen model (during the last bits probe or the file).
    let mut points = vec![3, 5, first_candidate, first_bits, total - 1];
    points.dedup();
    for at in points {
        let mut child = search_command(dir.path(), &["--floor", "0.85"], "cut", &extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        kills += usize::from(kill_when(&mut child, || journal_lines(&cut) >= at));
    }
    assert!(
        kills >= 4,
        "the search was killed mid-way at least four times"
    );
    let (code, _, err) = run(search_command(
        dir.path(),
        &["--floor", "0.85"],
        "cut",
        &extra,
    ));
    assert_eq!(code, 0, "{err}");

    assert_same_run(&whole, &cut);
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    // A finished run keeps only its final model (pruned, and shared when a bits probe
    // measured it); rerunning it replays to the same file.
    let mut kept: Vec<_> = std::fs::read_dir(cut.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    kept.sort();
    assert_eq!(kept, vec!["final-shared.safetensors", "final.safetensors"]);
    let (code, _, err) = run(search_command(
        dir.path(),
        &["--floor", "0.85"],
        "cut",
        &extra,
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        read(&whole, "lenet-300-100.dcz"),
        read(&cut, "lenet-300-100.dcz")
    );
    assert_eq!(journal_lines(&whole), journal_lines(&cut));
}

/// The same command and seed write the same file on a machine several times slower
/// (simulated by a pause after every training step): without a minute cap nothing the
/// search decides reads the clock.
#[test]
fn a_slower_machine_writes_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--budget", "4p", "--threads", "2", "--seed", "3"];
    let timed = |out: &str, delay: &str| {
        let mut c = search_command(dir.path(), &["--floor", "0.85"], out, &extra);
        c.env("DC_SEARCH_STEP_DELAY_MS", delay);
        let t = Instant::now();
        let (code, _, err) = run(c);
        assert_eq!(code, 0, "{err}");
        t.elapsed().as_secs_f64()
    };
    let fast = timed("fast", "0");
    let slow = timed("slow", "5");
    // The pause acted: the epoch the slow run measured lasted at least its 859 steps
    // (55,000 training images in batches of 64) of 5 ms each, whatever the load.
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("slow/summary.json")).unwrap(),
    )
    .unwrap();
    let epoch = summary["plan"]["epoch_seconds"].as_f64().unwrap();
    assert!(
        epoch >= 0.9 * 859.0 * 0.005,
        "an epoch of {epoch:.2} s ({slow:.1} s against {fast:.1} s in all)"
    );
    assert_same_run(&dir.path().join("fast"), &dir.path().join("slow"));
}

/// `--sparsifier l0`: the gates train first (journaled, their model saved in the run
/// folder), close some weights exactly, the search starts from that model, and a search
/// killed after the gates and again after a probe resumes to the same file byte for byte.
#[test]
fn an_l0_search_starts_from_its_gates_and_resumes_to_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let toml = tiny() + "l0_epochs = 0.4\nl0_gate_lr = 0.1\nl0_lambda = 50\n";
    let extra = [
        "--budget",
        "4p",
        "--threads",
        "2",
        "--seed",
        "3",
        "--sparsifier",
        "l0",
    ];
    let floor = ["--floor", "0.85"];
    let command = |out: &str| search_command_with(dir.path(), &toml, true, &floor, out, &extra);
    let (code, _, err) = run(command("whole"));
    assert_eq!(code, 0, "{err}");
    let whole = dir.path().join("whole");
    assert!(whole.join("sparsifier.safetensors").is_file());
    let journal = std::fs::read_to_string(whole.join("journal.jsonl")).unwrap();
    assert!(
        journal
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("{\"sparsifier\":"),
        "the gates come before the sweep: {journal}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("summary.json")).unwrap())
            .unwrap();
    let g = &summary["sparsifier"];
    let sum = |k: &str| -> u64 {
        g[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum("weights"), 266_200);
    assert!(
        sum("kept") > 0 && sum("kept") < 266_200 * 9 / 10,
        "the gates closed some weights, not all: {g}"
    );
    assert!(summary["times"]["sparsify"].as_f64().unwrap() > 0.0);
    let report = std::fs::read_to_string(whole.join("report.md")).unwrap();
    assert!(
        report.contains("| sparsifier (`l0`) | L0 gates at λ"),
        "{report}"
    );
    let valid = summary["decoded_valid_accuracy"].as_f64().unwrap();
    assert!(valid >= 0.85, "decoded file meets the floor: {valid}");

    let cut = dir.path().join("cut");
    let mut kills = 0;
    for at in [2, 4] {
        let mut child = command("cut")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        kills += usize::from(kill_when(&mut child, || journal_lines(&cut) >= at));
    }
    assert_eq!(kills, 2, "killed after the gates and after the sweep");
    let (code, _, err) = run(command("cut"));
    assert_eq!(code, 0, "{err}");
    assert_same_run(&whole, &cut);
}

/// A search killed (SIGKILL) mid-way through a candidate's final retraining of two epochs,
/// after its first epoch was journaled, continues from that epoch's checkpoint (saying so
/// at once) and ends with the same file, byte for byte, as an uninterrupted run.
#[test]
fn killed_final_retraining_resumes_from_its_last_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let toml =
        tiny().replace("final_epochs = 0.05", "final_epochs = 2.0") + "bits_candidates = 2\n";
    assert!(toml.contains("final_epochs = 2.0"));
    let extra = ["--budget", "3p", "--threads", "2", "--seed", "3"];
    let floor = ["--floor", "0.85"];
    let command =
        |out: &str, quiet: bool| search_command_with(dir.path(), &toml, quiet, &floor, out, &extra);
    let (code, _, err) = run(command("whole", true));
    assert_eq!(code, 0, "{err}");
    let whole = dir.path().join("whole");
    let text = std::fs::read_to_string(whole.join("journal.jsonl")).unwrap();
    let epochs = text
        .lines()
        .filter(|l| l.starts_with("{\"final_epoch\":"))
        .count();
    let candidates = text
        .lines()
        .filter(|l| l.starts_with("{\"candidate\":"))
        .count();
    assert!(
        candidates >= 1 && epochs == 2 * candidates,
        "two epoch lines per final retraining: {text}"
    );

    // Killed once the first final retraining's first epoch is journaled: during its second.
    let cut = dir.path().join("cut");
    let mut child = command("cut", true)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first_epoch = || {
        std::fs::read_to_string(cut.join("journal.jsonl"))
            .is_ok_and(|t| t.contains("{\"final_epoch\":"))
    };
    assert!(
        kill_when(&mut child, first_epoch),
        "the search ended before its first final retraining"
    );
    let text = std::fs::read_to_string(cut.join("journal.jsonl")).unwrap();
    assert!(
        text.lines()
            .filter(|l| l.starts_with("{\"final_epoch\":"))
            .count()
            == 1
            && !text.contains("{\"candidate\":"),
        "killed mid-way through the first final retraining: {text}"
    );
    assert!(cut
        .join("checkpoints/candidate-0-epoch-1.safetensors")
        .is_file());

    let (code, _, err) = run(command("cut", false));
    assert_eq!(code, 0, "{err}");
    let resuming = err
        .lines()
        .find(|l| l.starts_with("resuming from"))
        .unwrap_or_default();
    assert!(
        resuming.contains("candidate 1's final retraining at epoch 1 of 2"),
        "{err}"
    );
    assert_same_run(&whole, &cut);
    let mut kept: Vec<_> = std::fs::read_dir(cut.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with("final"))
        .collect();
    kept.sort();
    assert!(kept.is_empty(), "only the final model is kept: {kept:?}");
}

/// Ctrl-C (SIGINT) stops a search at the next training step with a partial report and
/// status 130, writes no file, and the same command then resumes it to the end.
#[test]
fn interrupted_search_reports_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--budget", "4p", "--threads", "2"];
    let run_dir = dir.path().join("run");
    let mut child = search_command(dir.path(), &["--floor", "0.85"], "run", &extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_journal(&mut child, &run_dir, 2),
        "the search ended before its first probe"
    );
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted") && err.contains("Rerun the same command"),
        "{err}"
    );
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(
        report.contains("interrupted") && report.contains("journal.jsonl"),
        "{report}"
    );
    // It says where it stopped: the journal held the sweep, so in the calibration's first probe.
    assert!(report.contains("in the calibration."), "{report}");
    assert!(!run_dir.join("ratios.json").exists());
    assert!(!run_dir.join("lenet-300-100.dcz").exists());
    let (code, _, err) = run(search_command(
        dir.path(),
        &["--floor", "0.85"],
        "run",
        &extra,
    ));
    assert_eq!(code, 0, "{err}");
    assert!(run_dir.join("lenet-300-100.dcz").is_file());
}

/// A journal from other settings is refused, not silently mixed in.
#[test]
fn resume_with_other_settings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(
        run_dir.join("journal.jsonl"),
        "{\"header\":{\"journal\":1,\"key\":\"another run\"}}\n",
    )
    .unwrap();
    let (code, _, err) = search(dir.path(), "0.85");
    assert_eq!(code, 2);
    assert!(
        err.contains("journal.jsonl") && err.contains("other settings") && err.contains("--out"),
        "{err}"
    );
    assert!(!run_dir.join("ratios.json").exists());
}

#[test]
fn small_search_writes_a_file_that_meets_the_floor() {
    // The floor relative to the dense model (--max-drop); the kill/resume test uses --floor.
    let dir = tempfile::tempdir().unwrap();
    let c = search_command(dir.path(), &["--max-drop", "4"], "run", &[]);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let run_dir = dir.path().join("run");
    for f in [
        "config.toml",
        "sensitivity.csv",
        "sensitivity.svg",
        "trials.csv",
        "pareto.svg",
        "ratios.json",
        "summary.json",
        "report.md",
        "lenet-300-100.dcz",
    ] {
        assert!(run_dir.join(f).is_file(), "{f} missing");
    }
    // Markdown renders an indented line as code: every table row starts at column 0.
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    for row in [
        "| device |",
        "| why the ratio search ended |",
        "## Per layer",
    ] {
        assert!(
            report.lines().any(|l| l.starts_with(row)),
            "{row} not at the start of a line:\n{report}"
        );
    }
    assert!(!report.lines().any(|l| l.starts_with(' ')), "{report}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    let valid = summary["decoded_valid_accuracy"].as_f64().unwrap();
    let dense = summary["dense_valid_accuracy"].as_f64().unwrap();
    let floor = summary["floor"].as_f64().unwrap();
    assert!(
        (floor - (dense - 0.04)).abs() < 1e-9,
        "floor {floor} = dense {dense} - 4 points"
    );
    assert!(
        valid >= floor,
        "decoded file meets the floor: {valid} < {floor}"
    );
    let ratios: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("ratios.json")).unwrap())
            .unwrap();
    let layers = ratios["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    let kept: f64 = layers
        .iter()
        .zip([235_200.0, 30_000.0, 1_000.0])
        .map(|(l, n)| (1.0 - l["sparse_ratio"].as_f64().unwrap()) * n)
        .sum();
    assert!(
        kept < 0.5 * 266_200.0,
        "it pruned more than half the weights: {layers:?}"
    );
    let csv = std::fs::read_to_string(run_dir.join("sensitivity.csv")).unwrap();
    assert!(
        csv.starts_with("layer,sparse_ratio,nonzeros,accuracy,loss,images,accuracy_se\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 1 + 3 * 6);
    // The machine-readable summary line and an independent decode of the file agree.
    let line: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        line["bytes"].as_u64().unwrap(),
        std::fs::metadata(run_dir.join("lenet-300-100.dcz"))
            .unwrap()
            .len()
    );
    let mut c = dc_search();
    c.env("DC_SEARCH_CACHE", dir.path().join("cache"))
        .arg("eval")
        .arg(run_dir.join("lenet-300-100.dcz"))
        .arg("--data-dir")
        .arg(mnist_dir());
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("validation: accuracy {valid:.4}")),
        "{out}"
    );
}

#[test]
fn floor_above_the_dense_model_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = search(dir.path(), "1.0");
    assert_eq!(code, 2);
    assert!(
        err.contains("already under the floor 1.0000") && err.contains("lower --floor"),
        "{err}"
    );
    assert!(!dir.path().join("run").join("trials.csv").exists());
}

#[test]
fn nonsense_floors_are_refused() {
    for f in ["0", "1.5", "NaN", "abc"] {
        let mut c = dc_search();
        c.args(["--floor", f, "lenet"]);
        let (code, _, err) = run(c);
        assert_eq!(code, 2, "{f}");
        assert!(
            err.contains("--floor") && err.contains("(0, 1]"),
            "{f}: {err}"
        );
    }
}

#[test]
fn fast_sensitivity_sweep_equals_the_naive_one() {
    use dc_search::search::sensitivity;
    let (_g, _, data, net) = small_dense("lenet", 150);
    let valid = data.valid.head(600);
    let grid = [0.0, 0.3, 0.9, 0.99];
    let naive = sensitivity::sweep_naive(&net, &valid, &grid);
    // three chunks, the last one partial
    let fast = sensitivity::sweep_chunked(&net, &valid, &grid, 250);
    assert_eq!(naive.len(), 16);
    assert_eq!(fast.len(), naive.len());
    for (a, b) in naive.iter().zip(&fast) {
        assert_eq!(
            (&a.layer, a.sparse_ratio, a.nonzeros),
            (&b.layer, b.sparse_ratio, b.nonzeros)
        );
        // float rounding of a different summation order may flip at most a near-tie
        assert!(
            (a.accuracy - b.accuracy).abs() <= 1.0 / 600.0 + 1e-12,
            "{a:?} vs {b:?}"
        );
        assert!((a.loss - b.loss).abs() < 1e-4, "{a:?} vs {b:?}");
        assert_eq!(b.images, 600);
    }
    // the sweep measured something: 99 % of conv2 pruned hurts
    let conv2_99 = &fast[7];
    assert_eq!(
        (conv2_99.layer.as_str(), conv2_99.sparse_ratio),
        ("conv2", 0.99)
    );
    assert!(conv2_99.accuracy < fast[4].accuracy, "{fast:?}");
}

/// `probe --spec`: a probe run from its spec file by the binary gives the number the same
/// probe gives in-process (same seed, same threads); a feasible probe's checkpoint is the
/// next spec's warm start; a result already there is not recomputed; a missing warm start
/// and changed dense weights are refused in one line.
#[test]
fn a_probe_from_its_spec_gives_the_in_process_number() {
    use dc_search::search::oracle::Oracle;
    use dc_search::search::spec::{Action, ProbeResult, ProbeSpec};

    let (_guard, cfg, data, net) = small_dense("lenet-300-100", 300);
    let dir = tempfile::tempdir().unwrap();
    let dense = dir.path().join("dense.safetensors");
    let bytes = dc_search::weights::to_safetensors(&net.to_host(), None).unwrap();
    std::fs::write(&dense, bytes).unwrap();
    let (ratios, epochs, offset) = (vec![0.9, 0.8, 0.5], 0.05, 1000);
    let spec = prune_spec(cfg.to_toml(), &dense, &ratios, epochs, offset);
    let probe = |name: &str, s: &ProbeSpec| probe_spec(dir.path(), name, s);
    let (code, out, err) = probe("prune.json", &spec);
    assert_eq!(code, 0, "{err}");
    let r: ProbeResult = serde_json::from_str(out.trim()).unwrap();
    let result_file = dir.path().join(format!("{}.result.json", spec.sha256()));
    let on_disk: ProbeResult =
        serde_json::from_str(&std::fs::read_to_string(&result_file).unwrap()).unwrap();
    assert_eq!(on_disk, r);
    assert!(r.feasible);
    let checkpoint = r
        .checkpoint
        .clone()
        .expect("a feasible probe writes its model");
    assert!(checkpoint.is_file());

    // The same probe in this process.
    let rt = crate::util::probe_runtime();
    let mut oracle = crate::util::retrainer(&net, &data, &cfg, &rt);
    let (model, m) = oracle.prune(None, &ratios, epochs, offset).unwrap();
    crate::util::assert_same_probe(&r, &m);
    let from_disk = oracle.load(&checkpoint).unwrap();
    assert_eq!(
        oracle.evaluate(&from_disk).unwrap().accuracy,
        oracle.evaluate(&model).unwrap().accuracy
    );

    // Again: answered from the result file, not probed again.
    let (code, out2, err) = probe("prune.json", &spec);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("already there"), "{err}");
    assert_eq!(out2.trim(), out.trim());

    // Its checkpoint is the next probe's warm start: weight sharing at 4 bits.
    let quantize = ProbeSpec {
        action: Action::Quantize,
        warm_start: Some(checkpoint.clone()),
        bits: vec![4, 4, 4],
        epochs: 0.02,
        offset: 2000,
        ..spec.clone()
    };
    let (code, out, err) = probe("quantize.json", &quantize);
    assert_eq!(code, 0, "{err}");
    let q: ProbeResult = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(q.nonzeros, r.nonzeros);

    // Refusals: a warm start that is not there, dense weights that changed.
    let missing = ProbeSpec {
        warm_start: Some(dir.path().join("gone.safetensors")),
        ..quantize.clone()
    };
    let (code, _, err) = probe("missing.json", &missing);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("gone.safetensors") && err.contains("no such checkpoint"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let changed = ProbeSpec {
        dense_sha256: "0".repeat(64),
        offset: 1001,
        ..spec.clone()
    };
    let (code, _, err) = probe("changed.json", &changed);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("changed since the spec was written"), "{err}");
}
