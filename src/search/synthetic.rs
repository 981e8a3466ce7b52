//! A synthetic accuracy oracle: a noisy landscape shaped like LeNet-5's (measured probes of
//! the committed searches), answering a probe in microseconds with simulated seconds. With
//! it a whole search runs in well under a millisecond, so a strategy (a set of
//! `[search]` settings) is judged on its median and spread over hundreds of seeds
//! ([`compare`], `dc-search bench search`) before a real run is spent on it.
//!
//! The landscape: validation accuracy of a pruned, fully retrained model is the dense
//! accuracy minus, per layer, `scale · (knee / density)^power`; a probe falls short of it
//! by `jump_cost · Σ ln(d_from / d_to)²` (pruning in one big jump is not recovered in a
//! probe's epochs), which further retraining shrinks; weight sharing at `b` bits costs
//! `quant[l] · 4^-(b-2)` after codebook retraining and three times that without. Every
//! measurement adds Gaussian noise of `noise` (retraining and the finite validation set).

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::{Auto, SearchConfig};
use super::oracle::{Measure, Oracle};
use super::prober::{Clock, Prober};
use super::record::{Phase, StageTimes};
use super::sensitivity;
use super::{calibration, stages};

/// The landscape's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Landscape {
    /// `(name, weights, outputs)` per layer.
    pub layers: Vec<(String, usize, usize)>,
    pub dense: f64,
    /// Per layer, the kept fraction at which its penalty reaches `scale`.
    pub knees: Vec<f64>,
    pub scale: f64,
    pub power: f64,
    /// Per layer, the accuracy lost by 2-bit sharing after codebook retraining.
    pub quant: Vec<f64>,
    pub noise: f64,
    pub jump_cost: f64,
    /// Epochs of retraining that recover all but 1/e of a deficit.
    pub tau: f64,
    /// Seconds of one retraining epoch (probes scale with their epochs).
    pub seconds_per_epoch: f64,
    /// The sensitivity curves measured on the real model (`(ratio, accuracy)` per layer, no
    /// retraining), which the bisection starts from; `None`: derived from the landscape.
    pub sweep: Option<Vec<Vec<(f64, f64)>>>,
}

impl Landscape {
    /// LeNet-5 on MNIST, fitted by `scripts/fit-landscape.py` to the 116 ratio probes and 51
    /// bits probes of `searches/lenet-mnist-floor0.99-seed{1,2,3}` (dense 99.41 % validation;
    /// scale fixed, knees, power and jump cost fitted; the residual's rms, 0.0008, is the
    /// noise), 18 s per epoch (`bench search --epoch-seconds` sets the machine's). Its
    /// sensitivity curves are its own: they start the bisection where the fitted accuracies
    /// balance the layers, while the real sweep (no retraining) starts it with conv2 far
    /// from its retrained limit, leaving the refinement that room to find
    /// ([`Landscape::lenet_measured_sweep`]).
    pub fn lenet() -> Landscape {
        Landscape {
            layers: vec![
                ("conv1".into(), 500, 20),
                ("conv2".into(), 25_000, 50),
                ("fc1".into(), 400_000, 500),
                ("fc2".into(), 5_000, 10),
            ],
            dense: 0.9941,
            knees: vec![0.2267, 0.0172, 0.0124, 0.15],
            scale: 0.0015,
            power: 1.634,
            quant: vec![0.00001, 0.0, 0.0008, 0.00122],
            noise: 0.0008,
            jump_cost: 0.000005,
            tau: 1.5,
            seconds_per_epoch: 18.0,
            sweep: None,
        }
    }

    /// [`Landscape::lenet`] starting from the sensitivity curves the real sweep measured
    /// (the same for every seed) instead of its own.
    pub fn lenet_measured_sweep() -> Landscape {
        Landscape {
            sweep: Some(curves_of(LENET_SWEEP, &["conv1", "conv2", "fc1", "fc2"])),
            ..Landscape::lenet()
        }
    }

    /// A landscape of another shape: eight layers of a small residual CNN on a harder data
    /// set (dense 91 %), twice LeNet-5's noise and slower to recover from a jump (τ 4
    /// epochs, jump cost 60× LeNet-5's), its sensitivity curves its own. Not fitted to any
    /// run: it is there so that a rule tuned on LeNet-5 is also tried where LeNet-5's
    /// numbers (probe length, margins) are wrong.
    pub fn residual8() -> Landscape {
        Landscape {
            layers: vec![
                ("stem".into(), 144, 16),
                ("res1a".into(), 2_304, 16),
                ("res1b".into(), 2_304, 16),
                ("dw".into(), 144, 16),
                ("pw".into(), 512, 32),
                ("conv3".into(), 9_216, 32),
                ("fc1".into(), 20_480, 64),
                ("fc2".into(), 640, 10),
            ],
            dense: 0.91,
            knees: vec![0.5, 0.06, 0.06, 0.5, 0.15, 0.03, 0.012, 0.2],
            scale: 0.002,
            power: 1.5,
            quant: vec![0.0004, 0.0002, 0.0002, 0.0006, 0.0004, 0.0006, 0.001, 0.002],
            noise: 0.0016,
            jump_cost: 0.0003,
            tau: 4.0,
            seconds_per_epoch: 12.0,
            sweep: None,
        }
    }

    /// Accuracy of a fully retrained model pruned to `ratios`.
    pub fn accuracy(&self, ratios: &[f64]) -> f64 {
        self.dense
            - ratios
                .iter()
                .zip(&self.knees)
                .map(|(r, k)| self.scale * (k / (1.0 - r).max(1e-6)).powf(self.power))
                .sum::<f64>()
    }

    fn quant_penalty(&self, bits: &[u8]) -> f64 {
        bits.iter()
            .zip(&self.quant)
            .map(|(&b, q)| q * 4f64.powi(2 - b as i32))
            .sum()
    }

    /// The sensitivity curves (`(ratio, accuracy)` per layer, no retraining): the measured
    /// sweep when there is one, else the penalty of a retrained model three times denser on
    /// `grid`.
    pub fn curves(&self, grid: &[f64]) -> Vec<Vec<(f64, f64)>> {
        if let Some(sweep) = &self.sweep {
            return sweep.clone();
        }
        (0..self.layers.len())
            .map(|l| {
                grid.iter()
                    .map(|&r| {
                        let d = (1.0 - r).max(1e-6);
                        let pen = self.scale * (3.0 * self.knees[l] / d).powf(self.power);
                        (r, (self.dense - pen).max(0.1))
                    })
                    .collect()
            })
            .collect()
    }

    fn loss_of(&self, accuracy: f64) -> f64 {
        0.02 + 2.5 * (self.dense - accuracy).max(0.0)
    }
}

/// `sensitivity.csv` of the LeNet-5 searches the landscape is fitted to (the sweep has no
/// randomness: every seed's is this one).
const LENET_SWEEP: &str =
    include_str!("../../searches/lenet-mnist-floor0.99-seed1/sensitivity.csv");

/// Each of `layers`' curve in the committed `sensitivity.csv` `text`.
fn curves_of(text: &str, layers: &[&str]) -> Vec<Vec<(f64, f64)>> {
    let points = sensitivity::read_csv(text).expect("the committed sensitivity.csv reads");
    layers
        .iter()
        .map(|l| sensitivity::curve(&points, l).collect())
        .collect()
}

/// A synthetic model: its ratios, the accuracy its last retraining did not recover, its
/// widths once shared, and then the validation accuracy measured of it (a real shared
/// model is written as it is, so what was measured of it is its file's validation
/// accuracy; the noise stands for retraining and the finite validation set). Its
/// checkpoint is its JSON, so a synthetic search journals and resumes like a real one.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Model {
    pub ratios: Vec<f64>,
    pub deficit: f64,
    pub bits: Option<Vec<u8>>,
    pub measured: Option<f64>,
}

/// The oracle over a [`Landscape`], with its own seeded noise.
pub struct Synthetic {
    pub land: Landscape,
    rng: ChaCha8Rng,
}

impl Synthetic {
    pub fn new(land: Landscape, seed: u64) -> Synthetic {
        Synthetic {
            land,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn gauss(&mut self) -> f64 {
        // Box–Muller
        let u1: f64 = self.rng.random::<f64>().max(1e-12);
        let u2: f64 = self.rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// The model's accuracy without noise.
    pub fn expected(&self, m: &Model) -> f64 {
        self.land.accuracy(&m.ratios)
            - m.deficit
            - m.bits.as_ref().map_or(0.0, |b| self.land.quant_penalty(b))
    }

    fn measure(&mut self, m: &Model, epochs: f64) -> Measure {
        let acc = self.expected(m) + self.land.noise * self.gauss();
        let nonzeros = m
            .ratios
            .iter()
            .zip(&self.land.layers)
            .map(|(r, (_, w, _))| ((1.0 - r) * *w as f64).round() as usize)
            .sum();
        Measure {
            accuracy: acc,
            loss: self.land.loss_of(acc),
            nonzeros,
            seconds: epochs * self.land.seconds_per_epoch + 1.0,
            ..Default::default()
        }
    }
}

/// Retraining `epochs` recovers this fraction of a deficit, `tau` the landscape's.
fn recovered(epochs: f64, tau: f64) -> f64 {
    1.0 - (-epochs / tau).exp()
}

impl Oracle for Synthetic {
    type Model = Model;

    fn prune(
        &mut self,
        from: Option<&Model>,
        ratios: &[f64],
        epochs: f64,
        _seed: u64,
    ) -> Result<(Model, Measure)> {
        let start: Vec<f64> = match from {
            Some(m) => m.ratios.clone(),
            None => vec![0.0; ratios.len()],
        };
        let jump: f64 = start
            .iter()
            .zip(ratios)
            .map(|(a, b)| ((1.0 - a) / (1.0 - b).max(1e-6)).ln().max(0.0).powi(2))
            .sum();
        let carried = from.map_or(0.0, |m| m.deficit);
        let deficit =
            (carried + self.land.jump_cost * jump) * (1.0 - recovered(epochs, self.land.tau));
        let m = Model {
            ratios: ratios.to_vec(),
            deficit,
            bits: None,
            measured: None,
        };
        let meas = self.measure(&m, epochs);
        Ok((m, meas))
    }

    fn retrain(&mut self, model: &Model, epochs: f64, _seed: u64) -> Result<(Model, Measure)> {
        let m = Model {
            deficit: model.deficit * (1.0 - recovered(epochs, self.land.tau)),
            ..model.clone()
        };
        let meas = self.measure(&m, epochs);
        Ok((m, meas))
    }

    fn quantize(
        &mut self,
        model: &Model,
        bits: &[u8],
        epochs: f64,
        _seed: u64,
    ) -> Result<(Model, Measure)> {
        let mut m = Model {
            bits: Some(bits.to_vec()),
            ..model.clone()
        };
        let meas = self.measure(&m, epochs);
        m.measured = Some(meas.accuracy);
        Ok((m, meas))
    }

    fn evaluate(&mut self, model: &Model) -> Result<Measure> {
        let acc = self.expected(model);
        Ok(Measure {
            accuracy: acc,
            loss: self.land.loss_of(acc),
            nonzeros: 0,
            seconds: 0.3,
            ..Default::default()
        })
    }

    fn quantize_one(&mut self, model: &Model, layer: usize, bits: u8) -> Result<Measure> {
        let pen = 3.0 * self.land.quant[layer] * 4f64.powi(2 - bits as i32);
        let acc = self.expected(model) - pen;
        Ok(Measure {
            accuracy: acc,
            loss: self.land.loss_of(acc),
            nonzeros: 0,
            seconds: 0.3,
            ..Default::default()
        })
    }

    fn save(&self, model: &Model, path: &std::path::Path) -> Result<()> {
        crate::paths::write_text(path, &serde_json::to_string(model)?)
    }

    fn load(&self, path: &std::path::Path) -> Result<Model> {
        let text = crate::paths::read_regular(path, "synthetic checkpoint", 1 << 20)?;
        Ok(serde_json::from_slice(&text)?)
    }
}

/// One synthetic search's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub ratios: Vec<f64>,
    pub bits: Vec<u8>,
    /// Estimated file bytes and compression against dense float32.
    pub bytes: f64,
    pub compression: f64,
    /// The decoded file's measured validation accuracy (after widening, as the real file
    /// stage does) and its accuracy without noise.
    pub file_accuracy: f64,
    pub true_accuracy: f64,
    /// Whether a file reaching the floor was made.
    pub met_floor: bool,
    pub minutes: f64,
    pub ratio_probes: usize,
    pub bits_probes: usize,
    /// Rounds of probing (a batch side by side is one).
    pub rounds: usize,
    /// Whether the ratio search ended by itself rather than by a minute cap or the probe
    /// budget.
    pub ended_itself: bool,
}

/// A whole search on the synthetic oracle with settings `cfg`, noise seed `seed`.
pub fn search(land: &Landscape, cfg: &SearchConfig, floor: f64, seed: u64) -> Result<Run> {
    let oracle = Synthetic::new(land.clone(), seed);
    let mut p = Prober::new(oracle, cfg, floor, land.layers.clone(), Clock::Simulated);
    p.count(15.0); // the sensitivity sweep
    let curves = land.curves(&cfg.grid);
    let mut times = StageTimes::default();
    let shape = calibration::Shape {
        train_images: 55_000,
        batch: 64,
        valid_images: 5_000,
        dense_accuracy: land.dense,
    };
    let chosen = stages::choose(&mut p, &curves, &shape, &mut times)?;
    // The file stage: the shared model the bits stage measured, else codebook retraining
    // (1 epoch); widened a bit per layer (and retrained) while it misses the floor.
    let mut bits = chosen.bits.clone();
    let mut shared = chosen.shared.clone();
    let (file_accuracy, q) = loop {
        let (q, m) = match shared.take() {
            Some(q) => {
                let acc = q.measured.unwrap_or_else(|| p.oracle.expected(&q));
                let m = Measure {
                    accuracy: acc,
                    loss: 0.0,
                    nonzeros: 0,
                    seconds: 1.0,
                    ..Default::default()
                };
                (q, m)
            }
            None => p.oracle.quantize(&chosen.model, &bits, 1.0, 3000)?,
        };
        p.count(m.seconds + 5.0);
        if m.accuracy >= floor || bits.iter().all(|&b| b >= cfg.bits_max) {
            break (m.accuracy, q);
        }
        bits.iter_mut()
            .for_each(|b| *b = (*b + 1).min(cfg.bits_max));
    };
    let dense_bytes: usize = land.layers.iter().map(|(_, w, o)| 4 * (w + o)).sum();
    let bytes = p.est_bytes(&chosen.ratios, &bits);
    let bits_probes = p.trials.iter().filter(|t| t.phase == Phase::Bits).count();
    Ok(Run {
        ratios: chosen.ratios.clone(),
        bits,
        bytes,
        compression: dense_bytes as f64 / bytes,
        file_accuracy,
        true_accuracy: p.oracle.expected(&q),
        met_floor: file_accuracy >= floor,
        minutes: p.elapsed() / 60.0,
        ratio_probes: p.trials.len() - bits_probes,
        bits_probes,
        rounds: p.rounds,
        ended_itself: !chosen.stopped.contains("budget"),
    })
}

/// Median and the 10th and 90th percentiles of `v`.
pub fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let q = |f: f64| s[((s.len() - 1) as f64 * f).round() as usize];
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (q(0.5), q(0.1), q(0.9))
}

/// The fraction of consecutive triples of `v` (seeds 1–3, 4–6, …) whose largest value is at
/// most `ratio` × their smallest: how often three runs land within `ratio` of each other.
pub fn triples_within(v: &[f64], ratio: f64) -> f64 {
    let triples: Vec<&[f64]> = v.chunks_exact(3).collect();
    if triples.is_empty() {
        return f64::NAN;
    }
    let ok = triples
        .iter()
        .filter(|t| {
            let hi = t.iter().copied().fold(f64::MIN, f64::max);
            let lo = t.iter().copied().fold(f64::MAX, f64::min);
            hi <= ratio * lo
        })
        .count();
    ok as f64 / triples.len() as f64
}

/// Runs every strategy over `seeds` and returns one table row each: compression (median,
/// p10–p90), runs whose file met the floor, runs whose true accuracy is under the floor,
/// minutes, ratio and bits probes, runs that ended by themselves.
pub fn compare(
    land: &Landscape,
    strategies: &[(String, SearchConfig)],
    floor: f64,
    seeds: u64,
) -> Result<String> {
    let mut out = format!(
        "{:<34} {:>22} {:>7} {:>7} {:>8} {:>16} {:>11} {:>6} {:>6} {:>6}\n",
        "strategy",
        "compression p50 [p10–p90]",
        "3≤1.15",
        "met",
        "true<F",
        "minutes p50 [p90]",
        "ratio probes",
        "bits",
        "rounds",
        "ended"
    );
    for (name, cfg) in strategies {
        // A search that ends with an error (no feasible probe) made no file.
        let all: Vec<Result<Run>> = (1..=seeds).map(|s| search(land, cfg, floor, s)).collect();
        let failed = all.iter().filter(|r| r.is_err()).count();
        let runs: Vec<Run> = all.into_iter().filter_map(|r| r.ok()).collect();
        let n = seeds as f64;
        if runs.is_empty() {
            out += &format!("{name:<34} every run failed\n");
            continue;
        }
        let pick = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let (c50, c10, c90) = spread(&pick(&|r| r.compression));
        let close = triples_within(&pick(&|r| r.compression), 1.15);
        let (m50, _, m90) = spread(&pick(&|r| r.minutes));
        let (p50, _, _) = spread(&pick(&|r| r.ratio_probes as f64));
        let (b50, _, _) = spread(&pick(&|r| r.bits_probes as f64));
        let (r50, _, _) = spread(&pick(&|r| r.rounds as f64));
        let met = runs.iter().filter(|r| r.met_floor).count() as f64 / n;
        let under = runs.iter().filter(|r| r.true_accuracy < floor).count() as f64 / n;
        let ended = runs.iter().filter(|r| r.ended_itself).count() as f64 / n;
        out += &format!(
            "{:<34} {:>7.1}× [{:>5.1}–{:>5.1}] {:>6.0}% {:>6.0}% {:>7.0}% {:>8.1} [{:>5.1}] {:>11.0} {:>6.0} {:>6.0} {:>5.0}%\n",
            name,
            c50,
            c10,
            c90,
            100.0 * close,
            100.0 * met,
            100.0 * under,
            m50,
            m90,
            p50,
            b50,
            r50,
            100.0 * ended
        );
        if failed > 0 {
            out += &format!(
                "{:<34} ({failed} runs made no file: no feasible probe)\n",
                ""
            );
        }
    }
    Ok(out)
}

/// The previous version's rules: LeNet-5's numbers fixed (1.5-epoch probes, margin 0.001,
/// second looks within 0.0006, bits probes of 0.5 epochs), a 10-minute budget, no probe
/// cap but 40 refinement probes.
pub fn rules_v2() -> SearchConfig {
    SearchConfig {
        probe_epochs: Auto::Is(1.5),
        margin: Auto::Is(0.001),
        second_look: Auto::Is(0.0006),
        bits_epochs: Auto::Is(0.5),
        budget_minutes: 10.0,
        budget_probes: 1_000_000,
        refine_probes: 40,
        ..SearchConfig::default()
    }
}

/// The strategies `bench search` compares: this version's defaults (worked out from the
/// model), the previous version's fixed numbers, and one change at a time.
pub fn strategies() -> Vec<(String, SearchConfig)> {
    use super::config::Bisection;
    let v3 = SearchConfig::default();
    let v2 = rules_v2();
    vec![
        ("0.2 rules (LeNet-5's numbers, 10 min)".into(), v2.clone()),
        (
            "0.2 rules, 30 min".into(),
            SearchConfig {
                budget_minutes: 30.0,
                ..v2.clone()
            },
        ),
        ("0.3 default (calibrated, probe budget)".into(), v3.clone()),
        (
            "0.3, 10-minute cap".into(),
            SearchConfig {
                budget_minutes: 10.0,
                ..v3.clone()
            },
        ),
        (
            "0.3, 2 workers".into(),
            SearchConfig {
                workers: 2,
                ..v3.clone()
            },
        ),
        (
            "0.3, 4 workers".into(),
            SearchConfig {
                workers: 4,
                ..v3.clone()
            },
        ),
        (
            "0.3 with LeNet-5's probe length (1.5)".into(),
            SearchConfig {
                probe_epochs: Auto::Is(1.5),
                ..v3.clone()
            },
        ),
        (
            "0.3 with LeNet-5's margins".into(),
            SearchConfig {
                margin: Auto::Is(0.001),
                second_look: Auto::Is(0.0006),
                ..v3.clone()
            },
        ),
        (
            "0.3 without second looks".into(),
            SearchConfig {
                second_look: Auto::Is(0.0),
                ..v3.clone()
            },
        ),
        (
            "0.3 + brent bisection".into(),
            SearchConfig {
                bisection: Bisection::Brent,
                ..v3.clone()
            },
        ),
        (
            "0.3, near misses halve".into(),
            SearchConfig {
                near_miss_shrink: 0.5,
                ..v3.clone()
            },
        ),
        (
            "0.3 with one bits candidate".into(),
            SearchConfig {
                bits_candidates: 1,
                ..v3.clone()
            },
        ),
        (
            "0.3, budget 80 ratio probes".into(),
            SearchConfig {
                budget_probes: 2 * super::plan::ratio_probes(4),
                ..v3
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lenet_landscape_starts_from_the_measured_sweep() {
        let land = Landscape::lenet_measured_sweep();
        let c = land.curves(&[0.5]);
        assert_eq!(c.len(), 4);
        // conv2 alone at 90 % pruned, as sensitivity.csv has it.
        let row = LENET_SWEEP
            .lines()
            .find(|l| l.starts_with("conv2,0.9,"))
            .unwrap();
        let acc: f64 = row.split(',').nth(3).unwrap().parse().unwrap();
        assert!(c[1].contains(&(0.9, acc)), "{:?}", c[1]);
        assert!(c.iter().all(|l| l.len() >= 10));
        // Without a sweep the curves come from the landscape, on the grid asked for.
        let own = Landscape {
            sweep: None,
            ..land
        }
        .curves(&[0.5, 0.9]);
        assert!(own.iter().all(|l| l.len() == 2));
    }

    #[test]
    fn a_whole_synthetic_search_runs_in_a_blink_and_meets_its_floor() {
        let t = std::time::Instant::now();
        let land = Landscape::lenet();
        let cfg = SearchConfig::default();
        let r = search(&land, &cfg, 0.99, 1).unwrap();
        assert!(t.elapsed().as_secs_f64() < 1.0);
        assert!(r.met_floor, "{r:?}");
        assert!(r.compression > 50.0, "{r:?}");
        assert!(
            r.ratio_probes <= 2 * crate::search::plan::ratio_probes(4),
            "{r:?}"
        );
        // deterministic for a seed
        assert_eq!(r, search(&land, &cfg, 0.99, 1).unwrap());
    }

    #[test]
    fn a_machine_twice_as_slow_makes_the_same_search() {
        // Without a minute cap nothing the search decides depends on the clock.
        for land in [Landscape::lenet(), Landscape::residual8()] {
            let floor = land.dense - 0.005;
            let slow = Landscape {
                seconds_per_epoch: 2.0 * land.seconds_per_epoch,
                ..land.clone()
            };
            let cfg = SearchConfig::default();
            for seed in 1..=5 {
                let a = search(&land, &cfg, floor, seed).unwrap();
                let b = search(&slow, &cfg, floor, seed).unwrap();
                assert!(b.minutes > 1.5 * a.minutes, "{a:?} {b:?}");
                assert_eq!(Run { minutes: 0.0, ..a }, Run { minutes: 0.0, ..b });
            }
            // A minute cap makes the clock count: the slow machine probes less.
            let capped = SearchConfig {
                budget_minutes: 6.0,
                ..SearchConfig::default()
            };
            let a = search(&land, &capped, floor, 1).unwrap();
            let b = search(&slow, &capped, floor, 1).unwrap();
            assert!(b.ratio_probes < a.ratio_probes, "{a:?} {b:?}");
        }
    }

    #[test]
    fn workers_side_by_side_reach_as_much_in_fewer_rounds() {
        let land = Landscape::lenet();
        let median = |workers: usize| {
            let cfg = SearchConfig {
                workers,
                ..SearchConfig::default()
            };
            let runs: Vec<Run> = (1..=200)
                .map(|s| search(&land, &cfg, 0.99, s).unwrap())
                .collect();
            let pick = |f: &dyn Fn(&Run) -> f64| spread(&runs.iter().map(f).collect::<Vec<_>>()).0;
            (
                pick(&|r| r.compression),
                pick(&|r| r.rounds as f64),
                pick(&|r| r.minutes),
            )
        };
        let (c1, r1, m1) = median(1);
        for q in [2, 4] {
            let (c, r, m) = median(q);
            assert!(c >= 0.97 * c1, "{q} workers: {c:.1}× against {c1:.1}×");
            assert!(
                r < 0.8 * r1 && m < m1,
                "{q} workers: {r} rounds, {m:.1} min against {r1}, {m1:.1}"
            );
        }
    }

    #[test]
    fn the_landscape_is_monotone_in_every_layer() {
        let land = Landscape::lenet();
        let a = land.accuracy(&[0.5, 0.9, 0.98, 0.8]);
        assert!(land.accuracy(&[0.5, 0.95, 0.98, 0.8]) < a);
        assert!(land.accuracy(&[0.5, 0.9, 0.99, 0.8]) < a);
        assert!(a < land.dense);
    }

    #[test]
    fn triples_within_a_ratio() {
        // (1, 1.1, 1.14) is within 1.15; (1, 1, 1.2) is not; the seventh value is left over
        let v = [1.0, 1.1, 1.14, 1.0, 1.0, 1.2, 5.0];
        assert_eq!(triples_within(&v, 1.15), 0.5);
        assert!(triples_within(&[1.0, 2.0], 1.15).is_nan());
    }

    #[test]
    fn spread_of_known_values() {
        let v: Vec<f64> = (0..=10).map(|i| i as f64).collect();
        assert_eq!(spread(&v), (5.0, 1.0, 9.0));
    }
}
