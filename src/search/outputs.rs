//! The search's run folder: `trials.csv`, `ratios.json` (what other tools consume),
//! `report.md`, `summary.json`, and SVG plots of the sensitivity curves and of every
//! probe's accuracy against size with its Pareto front. Every file is written atomically.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::sensitivity::Point;
use super::{Outcome, Trial};
use crate::paths::{write_atomic, write_text};

/// `trials.csv`: one row per probe; list columns are `;`-separated in layer order.
pub fn write_trials(trials: &[Trial], path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "probe",
        "phase",
        "delta",
        "ratios",
        "bits",
        "valid_accuracy",
        "feasible",
        "nonzeros",
        "estimated_bytes",
        "seconds",
        "warm_start",
        "valid_loss",
        "lr_restarts",
        "epochs",
    ])?;
    for t in trials {
        let join = |v: Vec<String>| v.join(";");
        w.write_record([
            t.probe.to_string(),
            t.phase.as_str().to_string(),
            t.delta.map(|d| format!("{d:.6}")).unwrap_or_default(),
            join(t.ratios.iter().map(|r| format!("{r:.5}")).collect()),
            join(t.bits.iter().map(|b| b.to_string()).collect()),
            format!("{:.4}", t.valid_accuracy),
            t.feasible.to_string(),
            t.nonzeros.to_string(),
            format!("{:.0}", t.estimated_bytes),
            format!("{:.1}", t.seconds),
            t.warm_start.clone(),
            t.valid_loss.map(|l| format!("{l:.5}")).unwrap_or_default(),
            t.lr_restarts.to_string(),
            t.epochs.map(|e| format!("{e:.3}")).unwrap_or_default(),
        ])?;
    }
    write_atomic(path, &w.into_inner()?)
}

/// One layer's entry in `ratios.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRatio {
    pub name: String,
    /// The sparse ratio the search chose (pruned before retraining).
    pub sparse_ratio: f64,
    pub bits: u8,
    /// The layer's weight as the model's state dict names it (`features.0.weight`): its
    /// module path, for NNI and Distiller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<String>,
    /// The share of the weight that is zero in the file (folding dead units away and
    /// centroids at zero can add to the searched ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sparse_ratio: Option<f64>,
}

/// `ratios.json`: per layer sparse ratio and weight bits, with what they were found for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    pub model: String,
    pub dataset: String,
    pub floor: f64,
    pub layers: Vec<LayerRatio>,
}

impl Ratios {
    pub fn from_outcome(o: &Outcome) -> Ratios {
        Ratios {
            model: o.model.clone(),
            dataset: o.dataset.clone(),
            floor: o.floor,
            layers: o
                .layers
                .iter()
                .zip(&o.ratios)
                .zip(&o.bits)
                .map(|((n, &r), &b)| LayerRatio {
                    name: n.clone(),
                    sparse_ratio: (r * 1e6).round() / 1e6,
                    bits: b,
                    weight: None,
                    file_sparse_ratio: None,
                })
                .collect(),
        }
    }

    /// Adds each layer's weight name (`weights`, in layer order) and its sparsity in the
    /// written `file`.
    pub fn with_file(
        mut self,
        weights: &[String],
        file: &crate::format::CompressedModel,
    ) -> Ratios {
        for ((l, w), f) in self.layers.iter_mut().zip(weights).zip(&file.layers) {
            l.weight = Some(w.clone());
            let zeros = f.dense_len().unwrap_or(0) as f64
                - f.clusters
                    .iter()
                    .filter(|&&c| f.codebook.get(c as usize).is_some_and(|&v| v != 0.0))
                    .count() as f64;
            let n = f.dense_len().unwrap_or(1).max(1) as f64;
            l.file_sparse_ratio = Some((zeros / n * 1e6).round() / 1e6);
        }
        self
    }
}

/// Plots the sensitivity curves (accuracy against sparse ratio, one line per layer).
pub fn plot_sensitivity(points: &[Point], layers: &[String], path: &Path) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let lo = points
            .iter()
            .map(|p| p.accuracy)
            .fold(1.0, f64::min)
            .max(0.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Sensitivity: validation accuracy with one layer pruned (no retraining)",
                ("sans-serif", 18),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..1.0, lo..1.0)?;
        chart
            .configure_mesh()
            .x_desc("sparse ratio")
            .y_desc("validation accuracy")
            .draw()?;
        for (i, layer) in layers.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| &p.layer == layer)
                .map(|p| (p.sparse_ratio, p.accuracy))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(layer.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(
                pts.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
        root.present()?;
    }
    write_text(path, &svg)
}

/// Plots every probe's validation accuracy against its estimated size, the Pareto front of
/// the feasible ratio probes, and `threshold` (the ratio probes' floor + margin).
pub fn plot_pareto(trials: &[Trial], threshold: f64, path: &Path) -> Result<()> {
    let floor = threshold;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        // Probes far below the floor sit on the bottom edge, so the region around the
        // floor keeps its resolution.
        let ylo = trials
            .iter()
            .map(|t| t.valid_accuracy)
            .fold(floor, f64::min)
            .max(floor - 0.015)
            - 0.002;
        let kb: Vec<(f64, f64)> = trials
            .iter()
            .map(|t| (t.estimated_bytes / 1000.0, t.valid_accuracy.max(ylo)))
            .collect();
        let xmax = kb.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
        let yhi = kb.iter().map(|p| p.1).fold(floor, f64::max) + 0.002;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Probes: validation accuracy against estimated size",
                ("sans-serif", 18),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..xmax, ylo..yhi)?;
        chart
            .configure_mesh()
            .x_desc("estimated size (KB)")
            .y_desc("validation accuracy")
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, floor), (xmax, floor)],
                RED.stroke_width(1),
            ))?
            .label("floor + margin (ratio probes' threshold)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .draw_series(trials.iter().zip(&kb).map(|(t, &p)| {
                let c = if t.feasible {
                    BLUE.filled()
                } else {
                    BLACK.mix(0.4).filled()
                };
                Circle::new(p, 4, c)
            }))?
            .label("probe (blue: feasible)")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, BLUE.filled()));
        chart
            .draw_series(LineSeries::new(
                pareto_front(trials, &kb),
                GREEN.stroke_width(2),
            ))?
            .label("Pareto front of the feasible ratio probes")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
        root.present()?;
    }
    write_text(path, &svg)
}

/// The Pareto front of the feasible ratio probes (`points[i]`: trial i's (KB, accuracy)):
/// the most accurate one at or under each size, smallest first. Infeasible probes and bits
/// probes are not on it.
pub fn pareto_front(trials: &[Trial], points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = trials
        .iter()
        .zip(points)
        .filter(|(t, _)| t.feasible && t.phase.is_ratio())
        .map(|(_, &p)| p)
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut front: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        if front.last().is_none_or(|l| p.1 > l.1) {
            front.push(p);
        }
    }
    front
}

/// The report of an interrupted search: the best feasible probe so far.
/// `stage` is what the search was doing ([`super::prober::Prober::stage`]; empty before the
/// bisection).
pub fn write_interrupted(
    trials: &[Trial],
    stage: &str,
    floor: f64,
    command: &str,
    path: &Path,
) -> Result<()> {
    let best = trials
        .iter()
        .filter(|t| t.feasible && t.phase.is_ratio())
        .min_by(|a, b| a.estimated_bytes.total_cmp(&b.estimated_bytes));
    let stage = if stage.is_empty() {
        "the sensitivity sweep or the learning-rate range test"
    } else {
        stage
    };
    let mut s = format!(
        "# dc-search report: interrupted\n\nCommand: `{command}`\n\nThe search stopped after {} probes \
         (Ctrl-C), in {stage}. Every finished stage and probe is in `journal.jsonl`; rerun the same command to \
         resume.\n\n",
        trials.len()
    );
    match best {
        Some(t) => {
            s += &format!(
                "Best feasible probe so far (validation ≥ floor {floor:.4} + margin): probe {}, ratios {:?}, \
                 validation accuracy {:.4}, {} nonzeros, ≈{:.0} bytes estimated. No file was written yet.\n",
                t.probe, t.ratios, t.valid_accuracy, t.nonzeros, t.estimated_bytes
            );
        }
        None => s += "No probe has reached the floor yet.\n",
    }
    crate::paths::write_text(path, &s)
}

/// The report's account of a TorchScript model's bytes: the file and the ratio count the
/// named layers only; the compressed model is the pair module + file.
fn pair_section(pair: &crate::models::torchscript::PairBytes, file_bytes: usize) -> String {
    let name = pair
        .module
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    format!(
        "\n## Which bytes are counted\n\nThe file holds the named layers, and its size and the compression count \
         them alone (against those layers in float32). The compressed model is the pair module + file: the \
         module brings its code and the state no named layer owns, {other} bytes of tensors.\n\n\
         | the pair | bytes |\n|---|---:|\n\
         | on disk: `{name}` + the file | {module} + {file_bytes} = {disk} |\n\
         | shipped as code + state: the file + the state no layer owns | {file_bytes} + {other} = {state} |\n\n",
        other = pair.other_state_bytes,
        module = pair.module_bytes,
        disk = pair.module_bytes + file_bytes,
        state = file_bytes + pair.other_state_bytes,
    )
}

/// The report's row naming the probes whose retraining diverged and started again.
fn restart_row(probes: &[usize]) -> String {
    let list: Vec<String> = probes.iter().map(|p| p.to_string()).collect();
    format!(
        "| retrainings that diverged | probe{} {}: started again from their start at a smaller learning rate \
         (`lr_restarts` in `trials.csv`) |",
        if probes.len() > 1 { "s" } else { "" },
        list.join(", ")
    )
}

/// The report's section on what the search worked with and how it was measured.
fn plan_section(p: &super::plan::Plan, floor: f64, valid_images: usize) -> String {
    let mut s = format!(
        "\n## The plan (worked out from the model)\n\n| | value |\n|---|---|\n\
         | ratio probes | {:.2} epochs of retraining each; at most {} (bisection and refinement) |\n\
         | bits probes | {:.2} epochs of codebook retraining each |\n\
         | noise σ of a probe's validation accuracy | {:.4}: the larger of the seeds' spread ({:.4}) and the binomial σ of {} \
         validation images ({:.4}) |\n\
         | feasible at | floor + {:.4} = {:.4} |\n\
         | second looks | within {:.4} of that |\n\
         | a retraining epoch here | {:.1} s |\n",
        p.probe_epochs,
        p.ratio_probes,
        p.bits_epochs,
        p.noise,
        p.seed_spread,
        valid_images,
        p.binomial,
        p.margin,
        floor + p.margin,
        p.second_look,
        p.epoch_seconds,
    );
    if let Some(m) = p.minutes {
        s += &format!("| minute cap | {m} |\n");
    }
    for w in &p.warnings {
        s += &format!("| warning | {w} |\n");
    }
    if !p.ladder.is_empty() {
        s += "\nCalibration (probes of phase `calibrate` in `trials.csv`): retraining epochs → validation accuracy and \
              loss, one per seed.\n\n| epochs | accuracy | loss |\n|---:|---|---|\n";
        for r in &p.ladder {
            let list = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            s += &format!(
                "| {:.2} | {} | {} |\n",
                r.epochs,
                list(&r.accuracies),
                list(&r.losses)
            );
        }
    }
    s
}

/// `report.md`: the table of the file, accuracies, time per stage, the command.
pub fn write_report(o: &Outcome, table3: &str, command: &str, path: &Path) -> Result<()> {
    let t = &o.times;
    let mut s = format!(
        "# dc-search report: {} on {}\n\nCommand: `{command}`\n\n\
         | | value |\n|---|---|\n\
         | floor (validation) | {:.4} (ratio probes need floor + margin {:.4}) |\n\
         | dense weights | {} |\n\
         | dense validation accuracy | {:.4} |\n\
         | decoded file validation accuracy | {:.4} ({} images) |\n\
         | decoded file **test** accuracy (evaluated once) | {:.4} ({} images) |\n\
         | file | `{}`: {} bytes |\n\
         | dense float32 | {} bytes |\n\
         | compression | **{:.1}×** |\n\
         | probes | {} |\n\
         | device | {} |\n\
         | why the ratio search ended | {} |\n\n\
         ## Per layer\n\n| layer | sparse ratio | kept % | bits |\n|---|---:|---:|---:|\n",
        o.model,
        o.dataset,
        o.floor,
        o.margin,
        o.dense_weights,
        o.dense_valid_accuracy,
        o.decoded_valid_accuracy,
        o.valid_images,
        o.decoded_test_accuracy,
        o.test_images,
        o.file
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default(),
        o.file_bytes,
        o.dense_bytes,
        o.compression_ratio,
        o.probes,
        o.device,
        o.stopped,
    );
    if let Some(t) = &o.lr_test {
        s = s.replacen(
            "\n\n## Per layer",
            &format!(
                "\n| retraining learning rate (`retrain_lr = \"auto\"`) | {} |\n\n## Per layer",
                t.describe()
            ),
            1,
        );
    }
    if let Some(g) = &o.sparsifier {
        // The gated model is the start exactly when it reached the floor.
        let used = if g.valid_accuracy >= o.floor {
            "the search started from it"
        } else {
            "under the floor: the search started from the dense model"
        };
        s = s.replacen(
            "\n\n## Per layer",
            &format!(
                "\n| sparsifier (`l0`) | {}; {used} |\n\n## Per layer",
                g.describe(&o.layers)
            ),
            1,
        );
    }
    if !o.lr_restarted_probes.is_empty() {
        s = s.replacen(
            "\n\n## Per layer",
            &format!("\n{}\n\n## Per layer", restart_row(&o.lr_restarted_probes)),
            1,
        );
    }
    for ((n, r), b) in o.layers.iter().zip(&o.ratios).zip(&o.bits) {
        s += &format!("| {n} | {r:.4} | {:.2} | {b} |\n", 100.0 * (1.0 - r));
    }
    if let Some(pair) = &o.pair {
        s += &pair_section(pair, o.file_bytes);
    }
    if let Some(plan) = &o.plan {
        s += &plan_section(plan, o.floor, o.valid_images);
    }
    s += &format!("\n## The file (like the paper's Table 3)\n\n{table3}\n");
    if t.sparsify > 0.0 {
        s += &format!(
            "## Time per stage (seconds)\n\nL0 gates before the sensitivity sweep: {:.0} s.\n\n",
            t.sparsify
        );
    } else {
        s += "## Time per stage (seconds)\n\n";
    }
    s += &format!(
        "| sensitivity | calibration | bisect | refine | candidates (final retraining) | bits | encode + verify | total |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n| {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n\n\
         Files: `sensitivity.csv`, `sensitivity.svg`, `trials.csv`, `pareto.svg`, `ratios.json`, `summary.json`, `config.toml`.\n",
        t.sensitivity, t.calibrate, t.bisect, t.refine, t.final_retrain, t.bits, t.encode_and_verify, t.total
    );
    write_text(path, &s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::Phase;

    fn trial(phase: Phase, feasible: bool) -> Trial {
        Trial {
            probe: 1,
            phase,
            delta: None,
            ratios: vec![],
            bits: vec![],
            valid_accuracy: 0.0,
            valid_loss: None,
            feasible,
            nonzeros: 0,
            estimated_bytes: 0.0,
            seconds: 0.0,
            warm_start: String::new(),
            lr_restarts: 0,
            epochs: None,
        }
    }

    #[test]
    fn the_report_names_the_probes_whose_retraining_started_again() {
        assert_eq!(
            restart_row(&[7]),
            "| retrainings that diverged | probe 7: started again from their start at a smaller learning \
             rate (`lr_restarts` in `trials.csv`) |"
        );
        assert!(restart_row(&[3, 12]).contains("| probes 3, 12: started"));
    }

    #[test]
    fn trials_csv_counts_each_probes_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trials.csv");
        let mut t = trial(Phase::Refine, true);
        t.lr_restarts = 2;
        write_trials(&[trial(Phase::Bisect, false), t], &path).unwrap();
        let mut r = csv::Reader::from_path(&path).unwrap();
        let col = r
            .headers()
            .unwrap()
            .iter()
            .position(|h| h == "lr_restarts")
            .unwrap();
        let v: Vec<String> = r.records().map(|x| x.unwrap()[col].to_string()).collect();
        assert_eq!(v, ["0", "2"]);
    }

    #[test]
    fn an_interrupted_report_names_the_stage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.md");
        let stage = "candidate 2's final retraining ([0.5, 0.9]), epoch 3 of 8";
        write_interrupted(
            &[trial(Phase::Refine, true)],
            stage,
            0.99,
            "dc-search x",
            &path,
        )
        .unwrap();
        let s = std::fs::read_to_string(&path).unwrap();
        assert!(s.contains(&format!("(Ctrl-C), in {stage}.")), "{s}");
        write_interrupted(&[], "", 0.99, "dc-search x", &path).unwrap();
        let s = std::fs::read_to_string(&path).unwrap();
        assert!(
            s.contains("in the sensitivity sweep or the learning-rate range test."),
            "{s}"
        );
    }

    #[test]
    fn the_pair_section_adds_up_the_bytes() {
        let pair = crate::models::torchscript::PairBytes {
            module: "m/bn-cnn.pt".into(),
            module_bytes: 1000,
            other_state_bytes: 404,
        };
        let s = pair_section(&pair, 3000);
        assert!(
            s.contains("| on disk: `bn-cnn.pt` + the file | 1000 + 3000 = 4000 |"),
            "{s}"
        );
        assert!(s.contains("| 3000 + 404 = 3404 |"), "{s}");
    }

    #[test]
    fn the_front_holds_only_feasible_ratio_probes() {
        let trials = [
            trial(Phase::Bisect, true),
            trial(Phase::Refine, false), // smaller and more accurate, but infeasible
            trial(Phase::Refine, true),
            trial(Phase::Bits, true),   // a bits probe: not a ratio probe
            trial(Phase::Refine, true), // larger and less accurate: dominated
        ];
        let points = [
            (20.0, 0.992),
            (10.0, 0.995),
            (15.0, 0.991),
            (5.0, 0.999),
            (25.0, 0.990),
        ];
        assert_eq!(
            pareto_front(&trials, &points),
            vec![(15.0, 0.991), (20.0, 0.992)]
        );
    }

    #[test]
    fn the_plot_names_its_threshold_floor_plus_margin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pareto.svg");
        let mut t = trial(Phase::Refine, true);
        t.estimated_bytes = 12_000.0;
        t.valid_accuracy = 0.991;
        plot_pareto(&[t], 0.991, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("floor + margin"), "{svg}");
        assert!(svg.contains("Pareto front of the feasible ratio probes"));
    }
}
