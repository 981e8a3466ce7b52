//! What a search does once before its stages: the sensitivity sweep (or its journaled
//! points), the learning-rate range test when `retrain_lr = "auto"` (or its journaled
//! result), and the journal's key. Each result is journaled, so a resumed run replays it
//! instead of measuring it again.

use std::path::Path;

use anyhow::Result;

use super::journal::Journal;
use super::outputs;
use super::sensitivity::{self, Point};
use super::SearchConfig;
use crate::compress::lr_range::{self, LrTest};
use crate::compress::prune::PruneRule;
use crate::compress::{CompressConfig, RetrainLr};
use crate::data::Split;
use crate::models::Net;
use crate::runtime::Runtime;
use crate::train::Recipe;

/// Seed offset of the learning-rate range test's retrainings.
pub const LR_TEST_SEED: u64 = 0x1e57;

/// The validation images the sensitivity sweep uses: `search.sensitivity_images` of them
/// drawn at random (seeded by `split_seed`), or all of them.
pub fn sensitivity_split(sc: &SearchConfig, valid: &Split, split_seed: u64) -> Split {
    match sc.sensitivity_images {
        0 => valid.head(valid.len()),
        n => valid.sample(n, split_seed),
    }
}

/// Sweeps every layer's sensitivity and writes `sensitivity.csv` and `sensitivity.svg`
/// into `out`; returns the points and the seconds the sweep took.
pub fn sweep_and_write(
    sc: &SearchConfig,
    split_seed: u64,
    net: &Net,
    valid: &Split,
    out: &Path,
    quiet: bool,
) -> Result<(Vec<Point>, f64)> {
    let t = std::time::Instant::now();
    let points = sensitivity::sweep(net, &sensitivity_split(sc, valid, split_seed), &sc.grid);
    let secs = t.elapsed().as_secs_f64();
    sensitivity::write_csv(&points, valid.len(), &out.join("sensitivity.csv"))?;
    let names: Vec<String> = net.arch.layers.iter().map(|l| l.name.clone()).collect();
    outputs::plot_sensitivity(&points, &names, &out.join("sensitivity.svg"))?;
    if !quiet {
        eprintln!(
            "sensitivity: {} points in {secs:.1} s → {}",
            points.len(),
            out.join("sensitivity.csv").display()
        );
    }
    Ok((points, secs))
}

/// The sweep's points from the journal, or swept, written and journaled now; with the
/// seconds it took and whether it was replayed.
pub fn sweep(
    journal: &mut Journal,
    sc: &SearchConfig,
    split_seed: u64,
    net: &Net,
    valid: &Split,
    out: &Path,
    quiet: bool,
) -> Result<(Vec<Point>, f64, bool)> {
    if let Some((points, secs)) = journal.replay_sweep() {
        return Ok((points, secs, true));
    }
    let (points, secs) = sweep_and_write(sc, split_seed, net, valid, out, quiet)?;
    journal.record_sweep(&points, secs)?;
    Ok((points, secs, false))
}

/// Whether either section asks for the learning-rate range test.
pub fn auto_lr(search: &SearchConfig, compress: &CompressConfig) -> bool {
    RetrainLr::is_auto(&search.retrain_lr) || RetrainLr::is_auto(&compress.retrain_lr)
}

/// The sections with each `retrain_lr = "auto"` replaced by the range test's choice.
pub fn with_lr(
    search: &SearchConfig,
    compress: &CompressConfig,
    test: Option<&LrTest>,
) -> (SearchConfig, CompressConfig) {
    let (mut s, mut c) = (search.clone(), compress.clone());
    if let Some(t) = test {
        RetrainLr::resolve(&mut s.retrain_lr, t.chosen);
        RetrainLr::resolve(&mut c.retrain_lr, t.chosen);
    }
    (s, c)
}

/// What the range test needs: the dense model, the splits and the sections.
pub struct LrInputs<'a> {
    pub dense: &'a Net,
    pub train_split: &'a Split,
    pub valid: &'a Split,
    pub train: &'a Recipe,
    pub compress: &'a CompressConfig,
    pub search: &'a SearchConfig,
    pub rt: &'a Runtime,
}

/// `retrain_lr = "auto"`: the range test from the curves' ratios at
/// [`lr_range::START_DROP`] (or its journaled result); `None` when no section asks for it.
/// Returns the test and whether it was replayed.
pub fn lr_test(
    journal: &mut Journal,
    i: &LrInputs,
    curves: &[Vec<(f64, f64)>],
    dense_acc: f64,
) -> Result<(Option<LrTest>, bool)> {
    if !auto_lr(i.search, i.compress) {
        return Ok((None, false));
    }
    let (test, replayed) = match journal.replay_lr_test() {
        Some(t) => (t, true),
        None => {
            let ratios = super::delta::ratios_for_delta(
                curves,
                dense_acc,
                lr_range::START_DROP,
                i.search.max_ratio,
            );
            let rules: Vec<PruneRule> = ratios.iter().map(|&r| PruneRule::SparseRatio(r)).collect();
            let t = lr_range::run(
                i.dense,
                &rules,
                i.train_split,
                i.valid,
                i.train,
                i.compress,
                i.rt,
                LR_TEST_SEED,
            )?;
            journal.record_lr_test(&t)?;
            (t, false)
        }
    };
    if !i.rt.quiet {
        eprintln!(
            "{}{}",
            test.describe(),
            if replayed { " (journaled)" } else { "" }
        );
    }
    Ok((Some(test), replayed))
}

/// What decides a search's result: the config as TOML (before the range test resolves
/// it), the floor, seed, threads, device and the dense weights (by content, so a changed
/// file at the same path is not mistaken for the old one). A journal written under
/// another key is not resumed.
pub fn journal_key(
    config_toml: &str,
    rt: &Runtime,
    floor: f64,
    dense: &Path,
    data: &crate::data::CacheId,
) -> String {
    let weights = crate::paths::sha256_file(dense).unwrap_or_else(|_| dense.display().to_string());
    let mut text = format!(
        "{config_toml}\nfloor={floor}\nseed={}\nthreads={:?}\ndevice={}\ndense={weights}",
        rt.seed,
        rt.threads,
        rt.device_name(),
    );
    // Data from files by content: other arrays at the same path are another run.
    if let Some(sha) = &data.sha256 {
        text += &format!("\ndata={}:{sha}", data.name);
    }
    crate::paths::sha256_hex(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal's key holds the dense weights by content: a file changed at the same path
    /// is another run, the same bytes at another path are the same one.
    #[test]
    fn the_journal_key_hashes_the_dense_weights_content() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b.safetensors"),
        );
        std::fs::write(&a, b"weights one").unwrap();
        std::fs::write(&b, b"weights one").unwrap();
        let toml = "model = \"lenet\"\n";
        let rt = Runtime {
            device: tch::Device::Cpu,
            seed: 1,
            dense_seed: 1,
            threads: Some(1),
            quiet: true,
        };
        let mnist = crate::data::CacheId::builtin(crate::data::DatasetName::Mnist);
        let key = |p: &Path| journal_key(toml, &rt, 0.99, p, &mnist);
        let before = key(&a);
        assert_eq!(before, key(&b));
        std::fs::write(&a, b"weights two").unwrap();
        assert_ne!(before, key(&a));
        assert_ne!(before, journal_key(toml, &rt, 0.98, &b, &mnist));
        assert_ne!(
            before,
            journal_key("model = \"x\"\n", &rt, 0.99, &b, &mnist)
        );
        let arrays = |sha: &str| crate::data::CacheId {
            name: "mine".into(),
            sha256: Some(sha.into()),
        };
        let mine = journal_key(toml, &rt, 0.99, &b, &arrays("aa"));
        assert_ne!(before, mine);
        assert_ne!(mine, journal_key(toml, &rt, 0.99, &b, &arrays("bb")));
    }
}
