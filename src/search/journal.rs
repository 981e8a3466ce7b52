//! The search's journal: every finished probe is appended to `journal.jsonl` in the run
//! folder (one JSON line, flushed and synced) and every feasible probe's model is saved
//! beside it (`checkpoints/probe-NNN.safetensors`, written atomically before its line).
//! Each candidate's final retraining is journaled the same way: it runs as segments of at
//! most one epoch, each segment's model saved (`checkpoints/candidate-N-epoch-K`) before its
//! line, then the model kept (`checkpoints/candidate-N`), after whose line the epoch
//! checkpoints go. A run stopped mid-way through a final retraining continues it from its
//! last journaled epoch.
//! Rerunning the same command on the same folder replays the journal instead of
//! retraining, so the search resumes where it stopped and, the search being deterministic
//! for a seed and thread count, ends where an uninterrupted run would. The first line
//! holds a key of everything that decides the result; a different key is refused.
//!
//! The journal also owns the run folder: [`Journal::open`] first takes the folder's lock
//! (`lock`, holding the process id; refused while that process lives, taken over when it
//! does not) and checks the key, and writes nothing before both pass, so a refused resume
//! leaves the folder as it was. The lock goes when the journal is dropped. A torn last
//! line (a crash mid-write) is dropped; a corrupt line with lines after it is refused with
//! its line number, since what follows it cannot be trusted.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::record::Trial;
use crate::compress::mask::Masked;
use crate::models::Net;

/// One line of the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    /// First line: what the run is.
    Header { journal: u32, key: String },
    /// The sparsifier's model (`[search] sparsifier = "l0"`), before the sweep: its
    /// checkpoint in the run folder, saved before this line, and how its training went;
    /// no checkpoint when no try met the floor (the search starts from the dense model).
    Sparsifier {
        checkpoint: Option<String>,
        stats: crate::compress::gates::GateStats,
        /// Seconds of every try.
        seconds: f64,
    },
    /// The sensitivity sweep's points (`(layer, ratio, accuracy, loss)` as recorded in
    /// sensitivity.csv).
    Sweep {
        points: Vec<super::sensitivity::Point>,
        seconds: f64,
    },
    /// The learning-rate range test (`retrain_lr = "auto"`), after the sweep.
    LrTest {
        test: crate::compress::lr_range::LrTest,
    },
    /// A finished probe; `checkpoint` is its model when it was feasible.
    Probe {
        trial: Trial,
        checkpoint: Option<String>,
    },
    /// A candidate's final retraining (`final_epochs` > 0): the model kept (the retrained
    /// one, or the probe's when retraining scored lower) and its validation accuracy.
    Candidate {
        ratios: Vec<f64>,
        accuracy: f64,
        checkpoint: String,
        seconds: f64,
    },
    /// One finished segment (epoch) of candidate `index`'s final retraining of `of`
    /// epochs: `epoch` segments are done, `checkpoint` is the model after them, `accuracy`
    /// its validation accuracy, `seconds` the segment's time. (Named `index`, not
    /// `candidate`, so that no line but a [`Line::Candidate`] starts `{"candidate":`.)
    FinalEpoch {
        index: usize,
        ratios: Vec<f64>,
        epoch: usize,
        of: f64,
        accuracy: f64,
        checkpoint: String,
        seconds: f64,
    },
    /// The chosen model (after the final retraining, if any) and its widths.
    Final {
        ratios: Vec<f64>,
        /// Its widths (absent in journals written before they were recorded).
        #[serde(default)]
        bits: Option<Vec<u8>>,
        checkpoint: String,
        seconds: f64,
        /// Its validation accuracy (absent in journals written before it was recorded).
        #[serde(default)]
        accuracy: Option<f64>,
        /// The shared model the bits stage measured at those widths, which the file is made
        /// from (absent when none was kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shared: Option<String>,
    },
}

/// The chosen model read back.
pub struct Chosen {
    pub ratios: Vec<f64>,
    pub bits: Vec<u8>,
    pub checkpoint: PathBuf,
    pub seconds: f64,
    pub accuracy: Option<f64>,
    /// The shared model's checkpoint, when the bits stage kept one.
    pub shared: Option<PathBuf>,
}

/// Writes a model's checkpoint to the path it is given.
pub type Saver<'s> = &'s dyn Fn(&Path) -> Result<()>;

/// A probe read back from the journal; `checkpoint` is its model when it was feasible and
/// its file is still there.
pub struct Replayed {
    pub trial: Trial,
    pub checkpoint: Option<PathBuf>,
}

/// A candidate's final retraining read back from the journal.
#[derive(Debug, Clone, PartialEq)]
pub enum CandidateReplay {
    /// It finished: the model kept, its validation accuracy, the retraining's seconds.
    Done {
        checkpoint: PathBuf,
        accuracy: f64,
        seconds: f64,
    },
    /// Its first `segments` segments finished: the model after the last of them, that
    /// model's validation accuracy, and their seconds in all.
    Part {
        segments: usize,
        checkpoint: PathBuf,
        accuracy: f64,
        seconds: f64,
    },
}

/// The open journal of a run folder.
pub struct Journal {
    dir: PathBuf,
    file: File,
    _lock: RunLock,
    replay: VecDeque<Line>,
}

const VERSION: u32 = 1;
const NAME: &str = "journal.jsonl";
const LOCK: &str = "lock";

/// The exclusive lock of a run folder: a file `lock` holding the owner's process id,
/// removed on drop.
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir` (creating the folder): refused while another live process
    /// holds it, taken over from a process that is gone.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        crate::paths::create_output_dir(dir)
            .with_context(|| format!("cannot create run folder {}", dir.display()))?;
        let path = dir.join(LOCK);
        let me = std::process::id();
        for _ in 0..3 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(format!("{me}\n").as_bytes())
                        .and_then(|_| f.sync_all())
                        .with_context(|| format!("cannot write the lock {}", path.display()))?;
                    // Also when the process is ended at once (a signal, a time limit).
                    crate::paths::remove_at_exit(&path);
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if let Some(kind) = crate::paths::not_regular(&path) {
                        bail!(
                            "the run folder's lock {} is {kind}, not the lock file a search writes: remove it, or \
                             choose another --out",
                            path.display()
                        );
                    }
                    // A lock holds a process id: anything longer was not written by a search.
                    let text = crate::paths::read_regular(&path, "lock", 64)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    match text.trim().parse::<u32>() {
                        Ok(pid) if alive(pid) => bail!(
                            "run folder {} is in use by another search (process {pid}, see {}): wait for it to \
                             end, or choose another --out",
                            dir.display(),
                            path.display()
                        ),
                        // A stale lock (its process is gone, or it was torn): take it over.
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create the lock {}", path.display()))
                }
            }
        }
        bail!(
            "cannot take the lock {}: another search keeps taking it; choose another --out",
            path.display()
        )
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        crate::paths::unmark(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a run folder may hold before its journal is opened: nothing, a journal (a search
/// to resume), or a lock alone (a search stopped before it wrote its journal). Anything
/// else is not a dc-search run folder, and a search would write over its files
/// (`config.toml`, `report.md`, `checkpoints/`, …): refused, naming a few of them. A path
/// that is there but not a folder is refused too.
pub fn check_folder(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return match crate::paths::not_regular(dir) {
                Some(kind) if kind != "a folder" => bail!(
                    "run folder {} is {kind}: give --out a new or empty folder",
                    dir.display()
                ),
                None if std::fs::symlink_metadata(dir).is_ok() => bail!(
                    "run folder {} is a file: give --out a new or empty folder",
                    dir.display()
                ),
                _ => Err(e).with_context(|| format!("cannot read run folder {}", dir.display())),
            }
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.iter().any(|n| n == NAME) || names.iter().all(|n| n == LOCK) {
        return Ok(());
    }
    names.sort();
    let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
    bail!(
        "--out {} holds {} entries ({}{}) and no {NAME}: it is not a dc-search run folder, and a \
         search would write over its files; give --out a new or empty folder",
        dir.display(),
        names.len(),
        shown.join(", "),
        if names.len() > 3 { ", …" } else { "" }
    )
}

/// Whether process `pid` is alive (Linux: it has a `/proc` entry). The current process
/// counts as alive: one process holds a run folder once.
fn alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// The journal's lines, parsed. The last line may be torn (dropped); a corrupt line
/// before the last is an error naming its line number.
fn read_lines(path: &Path) -> Result<Vec<Line>> {
    let bytes = crate::paths::read_regular(path, "journal", 1 << 30)?;
    let raw: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut lines = Vec::with_capacity(raw.len());
    for (i, l) in raw.iter().enumerate() {
        match serde_json::from_slice::<Line>(l) {
            Ok(line) => lines.push(line),
            // A torn final line: the probe it described is simply run again.
            Err(_) if i + 1 == raw.len() => break,
            Err(e) => bail!(
                "{} line {} is corrupt ({e}) and {} more lines follow it: the journal cannot be trusted; \
                 delete the folder or choose another --out",
                path.display(),
                i + 1,
                raw.len() - i - 1
            ),
        }
    }
    Ok(lines)
}

impl Journal {
    /// Opens (or starts) the journal in `dir` for a run described by `key`, holding the
    /// folder's lock (see the module doc) for as long as the journal lives. An existing
    /// journal with another key, or with a corrupt line before its last, is refused; a
    /// torn last line (a crash mid-write) is dropped. Nothing is written before these
    /// checks pass.
    pub fn open(dir: &Path, key: &str) -> Result<Journal> {
        check_folder(dir)?;
        let lock = RunLock::acquire(dir)?;
        let path = dir.join(NAME);
        let mut replay = VecDeque::new();
        if std::fs::symlink_metadata(&path).is_ok() {
            let lines = read_lines(&path)?;
            let mut it = lines.into_iter();
            match it.next() {
                // Empty, or only a torn first line: nothing was journaled.
                None => {}
                Some(Line::Header { journal, key: k }) => {
                    if journal != VERSION || k != key {
                    bail!(
                        "{} belongs to a search with other settings (config, floor, seed, threads or dense \
                         model differ): rerun with the same command to resume it, or choose another --out \
                         (or delete that folder) to start afresh",
                        path.display()
                    );
                    }
                    replay.extend(it);
                }
                Some(_) => bail!(
                    "{} has no header line (its first line is a record of the search): it was cut or \
                     edited, and what it holds cannot be checked against this run; delete the folder or \
                     choose another --out",
                    path.display()
                ),
            }
        }
        // Rewrite the valid prefix (drops a torn line), then append.
        let mut text = serde_json::to_string(&Line::Header {
            journal: VERSION,
            key: key.to_string(),
        })? + "\n";
        for l in &replay {
            text += &(serde_json::to_string(l)? + "\n");
        }
        crate::paths::write_text(&path, &text)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot append to the journal {}", path.display()))?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            file,
            _lock: lock,
            replay,
        })
    }

    /// The journaled sparsifier: its checkpoint (as a path in the run folder; `None` when
    /// no try met the floor), its last try's stats and the seconds of all tries, if the
    /// run got that far.
    pub fn replay_sparsifier(
        &mut self,
    ) -> Option<(Option<PathBuf>, crate::compress::gates::GateStats, f64)> {
        let Some(Line::Sparsifier { .. }) = self.replay.front() else {
            return None;
        };
        let Some(Line::Sparsifier {
            checkpoint,
            stats,
            seconds,
        }) = self.replay.pop_front()
        else {
            unreachable!()
        };
        Some((checkpoint.map(|c| self.dir.join(c)), stats, seconds))
    }

    /// Saves the sparsifier's model (if one met the floor) as `name` in the run folder
    /// (atomically), then appends its line.
    pub fn record_sparsifier(
        &mut self,
        kept: Option<(&str, &Net)>,
        stats: &crate::compress::gates::GateStats,
        seconds: f64,
    ) -> Result<()> {
        if let Some((name, net)) = kept {
            save(&self.dir.join(name), net, &Masked::dense(net))?;
        }
        self.append(&Line::Sparsifier {
            checkpoint: kept.map(|(name, _)| name.to_string()),
            stats: stats.clone(),
            seconds,
        })
    }

    /// The journaled sensitivity sweep (its points and seconds), if the run got that far.
    pub fn replay_sweep(&mut self) -> Option<(Vec<super::sensitivity::Point>, f64)> {
        let Some(Line::Sweep { .. }) = self.replay.front() else {
            return None;
        };
        let Some(Line::Sweep { points, seconds }) = self.replay.pop_front() else {
            unreachable!()
        };
        Some((points, seconds))
    }

    /// Appends the sensitivity sweep.
    pub fn record_sweep(
        &mut self,
        points: &[super::sensitivity::Point],
        seconds: f64,
    ) -> Result<()> {
        self.append(&Line::Sweep {
            points: points.to_vec(),
            seconds,
        })
    }

    /// The journaled learning-rate range test, if the run got that far.
    pub fn replay_lr_test(&mut self) -> Option<crate::compress::lr_range::LrTest> {
        let Some(Line::LrTest { .. }) = self.replay.front() else {
            return None;
        };
        let Some(Line::LrTest { test }) = self.replay.pop_front() else {
            unreachable!()
        };
        Some(test)
    }

    /// Appends the learning-rate range test.
    pub fn record_lr_test(&mut self, test: &crate::compress::lr_range::LrTest) -> Result<()> {
        self.append(&Line::LrTest { test: test.clone() })
    }

    /// What the journal holds still to replay, in words (for the resume line).
    pub fn summary(&self) -> String {
        let probes = self
            .replay
            .iter()
            .filter(|l| matches!(l, Line::Probe { .. }))
            .count();
        let sweep = self.replay.iter().any(|l| matches!(l, Line::Sweep { .. }));
        let lr_test = self.replay.iter().any(|l| matches!(l, Line::LrTest { .. }));
        let candidates = self
            .replay
            .iter()
            .filter(|l| matches!(l, Line::Candidate { .. }))
            .count();
        let fin = self.has_final();
        // The final retraining the run stopped in, if any: its last finished segment.
        let mut partial = None;
        for l in &self.replay {
            match l {
                Line::FinalEpoch {
                    index, epoch, of, ..
                } => partial = Some((*index, *epoch, *of)),
                Line::Candidate { .. } => partial = None,
                _ => {}
            }
        }
        format!(
            "{}{}{probes} probes{}{}{}",
            if sweep { "the sensitivity sweep, " } else { "" },
            if lr_test {
                "the learning-rate range test, "
            } else {
                ""
            },
            match candidates {
                0 => String::new(),
                n => format!(", {n} final retraining(s)"),
            },
            match partial {
                Some((index, epoch, of)) if !fin => format!(
                    ", candidate {}'s final retraining at epoch {epoch} of {of}",
                    index + 1
                ),
                _ => String::new(),
            },
            if fin { ", the final model" } else { "" }
        )
    }

    /// Whether the journal holds more of the run and its next line is not a probe of
    /// `phase`: the run being replayed ended that stage there.
    pub fn stage_ended(&self, phase: super::record::Phase) -> bool {
        match self.replay.front() {
            Some(Line::Probe { trial, .. }) => trial.phase != phase,
            Some(_) => true,
            None => false,
        }
    }

    /// Probes still to replay.
    pub fn pending(&self) -> usize {
        self.replay.len()
    }

    fn append(&mut self, line: &Line) -> Result<()> {
        let text = serde_json::to_string(line)? + "\n";
        self.file
            .write_all(text.as_bytes())
            .and_then(|_| self.file.sync_data())
            .with_context(|| format!("cannot append to the journal in {}", self.dir.display()))
    }

    /// The next journaled probe if there is one; it must be the probe the search is about
    /// to run (same phase, ratios and bits), else the journal does not belong to this run.
    pub fn replay_probe(
        &mut self,
        phase: super::record::Phase,
        ratios: &[f64],
        bits: &[u8],
    ) -> Result<Option<Replayed>> {
        let Some(Line::Probe { .. }) = self.replay.front() else {
            return Ok(None);
        };
        let Some(Line::Probe { trial, checkpoint }) = self.replay.pop_front() else {
            unreachable!()
        };
        if trial.phase != phase || trial.bits != bits || !same(&trial.ratios, ratios) {
            bail!(
                "the journal in {} does not match this run at probe {} (it recorded {} {:?}, the search asks for \
                 {phase} {:?}): delete the folder or choose another --out",
                self.dir.display(),
                trial.probe,
                trial.phase,
                trial.ratios,
                ratios
            );
        }
        let checkpoint = match checkpoint {
            // After a finished run only the final model is kept; the probes' models are
            // not needed to replay it.
            Some(c) if !self.dir.join(&c).exists() && self.has_final() => None,
            Some(c) => Some(self.checkpoint(&c)?),
            None => None,
        };
        Ok(Some(Replayed { trial, checkpoint }))
    }

    /// Appends a finished probe (and saves its model through `save` when given).
    pub fn record_probe(&mut self, trial: &Trial, save: Option<Saver>) -> Result<()> {
        let checkpoint = match save {
            Some(save) => {
                let rel = format!("checkpoints/probe-{:03}.safetensors", trial.probe);
                save(&self.dir.join(&rel))?;
                Some(rel)
            }
            None => None,
        };
        self.append(&Line::Probe {
            trial: trial.clone(),
            checkpoint,
        })
    }

    /// The journaled final retraining of candidate `index` (with `ratios`), if the journal
    /// has it: whole, or its finished segments when the run stopped in it. Every line
    /// read must be of this candidate, its segments in order, else the journal does not
    /// belong to this run.
    pub fn replay_candidate(
        &mut self,
        index: usize,
        ratios: &[f64],
    ) -> Result<Option<CandidateReplay>> {
        let mut part: Option<(usize, String, f64)> = None;
        let mut spent = 0.0;
        while let Some(Line::FinalEpoch { .. }) = self.replay.front() {
            let Some(Line::FinalEpoch {
                index: i,
                ratios: recorded,
                epoch,
                accuracy,
                checkpoint,
                seconds,
                ..
            }) = self.replay.pop_front()
            else {
                unreachable!()
            };
            let next = part.as_ref().map_or(1, |p| p.0 + 1);
            if i != index || epoch != next || !same(&recorded, ratios) {
                bail!(
                    "the journal in {} does not match this run at the final retraining (it recorded candidate {} \
                     {recorded:?} at epoch {epoch}, the search asks for candidate {} {ratios:?} at epoch {next}): \
                     delete the folder or choose another --out",
                    self.dir.display(),
                    i + 1,
                    index + 1
                );
            }
            spent += seconds;
            part = Some((epoch, checkpoint, accuracy));
        }
        if let Some(Line::Candidate { .. }) = self.replay.front() {
            let Some(Line::Candidate {
                ratios: recorded,
                accuracy,
                checkpoint,
                seconds,
            }) = self.replay.pop_front()
            else {
                unreachable!()
            };
            if !same(&recorded, ratios) {
                bail!(
                    "the journal in {} does not match this run at the final retraining (it recorded {recorded:?}, \
                     the search asks for {ratios:?}): delete the folder or choose another --out",
                    self.dir.display()
                );
            }
            return Ok(Some(CandidateReplay::Done {
                checkpoint: self.checkpoint(&checkpoint)?,
                accuracy,
                seconds,
            }));
        }
        Ok(match part {
            Some((segments, checkpoint, accuracy)) => Some(CandidateReplay::Part {
                segments,
                checkpoint: self.checkpoint(&checkpoint)?,
                accuracy,
                seconds: spent,
            }),
            None => None,
        })
    }

    /// Saves candidate `index`'s model after segment `epoch` (1 = the first) of its final
    /// retraining of `of` epochs and appends it.
    #[allow(clippy::too_many_arguments)]
    pub fn record_epoch(
        &mut self,
        index: usize,
        ratios: &[f64],
        epoch: usize,
        of: f64,
        accuracy: f64,
        seconds: f64,
        save: Saver,
    ) -> Result<()> {
        let rel = format!("checkpoints/candidate-{index}-epoch-{epoch}.safetensors");
        save(&self.dir.join(&rel))?;
        self.append(&Line::FinalEpoch {
            index,
            ratios: ratios.to_vec(),
            epoch,
            of,
            accuracy,
            checkpoint: rel,
            seconds,
        })
    }

    /// The path of a journaled checkpoint (`rel` to the run folder), which must be there.
    fn checkpoint(&self, rel: &str) -> Result<PathBuf> {
        let path = self.dir.join(rel);
        if !path.is_file() {
            bail!(
                "the journal's checkpoint {} is missing: delete the run folder (or choose another --out) to search \
                 afresh",
                path.display()
            );
        }
        Ok(path)
    }

    /// Saves candidate `index`'s model after its final retraining and appends it.
    pub fn record_candidate(
        &mut self,
        index: usize,
        ratios: &[f64],
        accuracy: f64,
        seconds: f64,
        save: Saver,
    ) -> Result<()> {
        let rel = format!("checkpoints/candidate-{index}.safetensors");
        save(&self.dir.join(&rel))?;
        self.append(&Line::Candidate {
            ratios: ratios.to_vec(),
            accuracy,
            checkpoint: rel,
            seconds,
        })?;
        // Its epoch checkpoints are not needed once the whole retraining is journaled.
        let prefix = format!("candidate-{index}-epoch-");
        if let Ok(entries) = std::fs::read_dir(self.dir.join("checkpoints")) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    std::fs::remove_file(e.path())
                        .with_context(|| format!("cannot remove {}", e.path().display()))?;
                }
            }
        }
        Ok(())
    }

    fn has_final(&self) -> bool {
        self.replay.iter().any(|l| matches!(l, Line::Final { .. }))
    }

    /// The journaled choice of a run that got past the bits stage, with the bits probes
    /// recorded before it; `None` (nothing consumed) when the journal holds no choice.
    pub fn replay_chosen(&mut self) -> Result<Option<(Vec<Trial>, Chosen)>> {
        let at = self.replay.iter().position(|l| {
            !matches!(
                l,
                Line::Probe { .. } | Line::Candidate { .. } | Line::FinalEpoch { .. }
            )
        });
        let Some(at) = at else {
            return Ok(None);
        };
        let Some(Line::Final { bits: Some(_), .. }) = self.replay.get(at) else {
            return Ok(None);
        };
        // The bits probes go back into the records; the candidates' final retrainings are
        // not needed once the choice is known.
        let mut trials = Vec::new();
        for _ in 0..at {
            if let Some(Line::Probe { trial, .. }) = self.replay.pop_front() {
                trials.push(trial);
            }
        }
        let Some(Line::Final {
            ratios,
            bits: Some(bits),
            checkpoint,
            seconds,
            accuracy,
            shared,
        }) = self.replay.pop_front()
        else {
            unreachable!()
        };
        Ok(Some((
            trials,
            Chosen {
                ratios,
                bits,
                checkpoint: self.dir.join(checkpoint),
                seconds,
                accuracy,
                shared: shared.map(|s| self.dir.join(s)),
            },
        )))
    }

    /// Saves the final model through `save` and appends it.
    pub fn record_final(
        &mut self,
        ratios: &[f64],
        bits: &[u8],
        save: Saver,
        save_shared: Option<Saver>,
        seconds: f64,
        accuracy: f64,
    ) -> Result<()> {
        let rel = "checkpoints/final.safetensors".to_string();
        save(&self.dir.join(&rel))?;
        let shared = match save_shared {
            Some(save) => {
                let rel = "checkpoints/final-shared.safetensors".to_string();
                save(&self.dir.join(&rel))?;
                Some(rel)
            }
            None => None,
        };
        self.append(&Line::Final {
            ratios: ratios.to_vec(),
            bits: Some(bits.to_vec()),
            checkpoint: rel,
            seconds,
            accuracy: Some(accuracy),
            shared,
        })
    }

    /// After a finished run: removes the probes' models (a rerun replays from the final
    /// model) and any temporary file a killed run left, keeping the folder small.
    pub fn drop_probe_checkpoints(&self) -> Result<()> {
        let dir = self.dir.join("checkpoints");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            // Probe and candidate models (the candidates' epoch checkpoints among them), and
            // temporary files a killed run left half-written.
            if name.starts_with("probe-")
                || name.starts_with("candidate-")
                || (name.starts_with(".dc-search-") && name.ends_with(".part"))
            {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("cannot remove {}", e.path().display()))?;
            }
        }
        Ok(())
    }
}

fn same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-12)
}

/// Writes a checkpoint: weights under their PyTorch names plus each mask as `mask.<layer>`.
pub fn save(path: &Path, net: &Net, state: &Masked) -> Result<()> {
    let mut tensors = net.to_host();
    for (l, layer) in state.layers.iter().zip(&net.arch.layers) {
        if let Some(m) = &l.mask {
            tensors.push((
                format!("mask.{}", layer.name),
                m.size(),
                crate::models::tensor_to_vec(m),
            ));
        }
        // A shared layer's width: its weights are its codebook's values already.
        if let Some(cb) = &l.codebook {
            tensors.push((
                format!("bits.{}", layer.name),
                vec![1],
                vec![f32::from(cb.bits)],
            ));
        }
    }
    let bytes = crate::weights::to_safetensors(&tensors, None)?;
    crate::paths::write_atomic(path, &bytes)
}

/// Reads a checkpoint written by [`save`] into a copy of `like`.
pub fn load(path: &Path, like: &Net) -> Result<(Net, Masked)> {
    let host = crate::weights::read_safetensors(path)
        .with_context(|| format!("checkpoint of the journal {}", path.display()))?;
    let mut net = like.copy();
    net.load_host(&host, &format!("checkpoint {}", path.display()))?;
    let mut state = Masked::dense(&net);
    for (i, layer) in net.arch.layers.iter().enumerate() {
        if let Some((shape, values)) = host.get(&format!("mask.{}", layer.name)) {
            let m = Tensor::from_slice(values)
                .view(shape.as_slice())
                .to_device(net.params[i].weight.device());
            state.layers[i].mask = Some(m);
        }
        if let Some((_, b)) = host.get(&format!("bits.{}", layer.name)) {
            let bits = b.first().copied().unwrap_or(0.0);
            anyhow::ensure!(
                (1.0..=16.0).contains(&bits),
                "checkpoint {}: width {bits} of layer {} is not 1 to 16 bits",
                path.display(),
                layer.name
            );
            state
                .adopt_shared(&net, i, bits as u8)
                .with_context(|| format!("checkpoint {}", path.display()))?;
        }
    }
    Ok((net, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(key: &str) -> String {
        serde_json::to_string(&Line::Header {
            journal: VERSION,
            key: key.into(),
        })
        .unwrap()
    }

    fn probe_line(n: usize) -> String {
        format!("{{\"final\":{{\"ratios\":[0.{n}],\"checkpoint\":\"c{n}\",\"seconds\":1.0}}}}")
    }

    #[test]
    fn a_corrupt_line_in_the_middle_is_refused_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{}\n{}\n{{\"probe\": garbage\n{}\n",
            header("k"),
            probe_line(1),
            probe_line(2)
        );
        std::fs::write(dir.path().join(NAME), &text).unwrap();
        let e = format!("{:#}", Journal::open(dir.path(), "k").err().unwrap());
        assert!(
            e.contains("line 3 is corrupt") && e.contains("1 more lines"),
            "{e}"
        );
        // Nothing was rewritten, and the lock is gone.
        assert_eq!(
            std::fs::read_to_string(dir.path().join(NAME)).unwrap(),
            text
        );
        assert!(!dir.path().join(LOCK).exists());
        // A torn last line is dropped.
        let text = format!("{}\n{}\n{{\"fin", header("k"), probe_line(1));
        std::fs::write(dir.path().join(NAME), text).unwrap();
        let j = Journal::open(dir.path(), "k").unwrap();
        assert_eq!(j.pending(), 1);
    }

    #[test]
    fn the_run_folder_is_locked_while_a_journal_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), "k").unwrap();
        let lock = std::fs::read_to_string(dir.path().join(LOCK)).unwrap();
        assert_eq!(lock.trim(), std::process::id().to_string());
        let e = format!("{:#}", Journal::open(dir.path(), "k").err().unwrap());
        assert!(e.contains("in use by another search"), "{e}");
        drop(j);
        assert!(!dir.path().join(LOCK).exists());
        // A live process's lock (pid 1 always lives) is refused; a dead one's is taken over.
        std::fs::write(dir.path().join(LOCK), "1\n").unwrap();
        let e = format!("{:#}", Journal::open(dir.path(), "k").err().unwrap());
        assert!(e.contains("process 1"), "{e}");
        std::fs::write(dir.path().join(LOCK), "4294967295\n").unwrap();
        assert!(Journal::open(dir.path(), "k").is_ok());
        // A refused key leaves the journal as it was.
        let before = std::fs::read(dir.path().join(NAME)).unwrap();
        assert!(Journal::open(dir.path(), "other").is_err());
        assert_eq!(std::fs::read(dir.path().join(NAME)).unwrap(), before);
    }

    #[test]
    fn a_journal_without_its_header_is_refused_not_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{}\n{}\n", probe_line(1), probe_line(2));
        std::fs::write(dir.path().join(NAME), &text).unwrap();
        let e = format!("{:#}", Journal::open(dir.path(), "k").err().unwrap());
        assert!(e.contains("has no header line"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(NAME)).unwrap(),
            text
        );
        // An empty journal holds nothing to lose: it starts afresh.
        std::fs::write(dir.path().join(NAME), "").unwrap();
        assert_eq!(Journal::open(dir.path(), "k").unwrap().pending(), 0);
    }

    #[test]
    fn a_lock_that_is_not_a_lock_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(LOCK)).unwrap();
        let e = format!("{:#}", Journal::open(dir.path(), "k").err().unwrap());
        assert!(e.contains("lock") && e.contains("is a folder"), "{e}");
        assert!(dir.path().join(LOCK).is_dir());
        std::fs::remove_dir(dir.path().join(LOCK)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join(LOCK)).unwrap();
        let e = format!("{:#}", Journal::open(dir.path(), "k").err().unwrap());
        assert!(e.contains("a link to /dev/zero, a character device"), "{e}");
    }

    #[test]
    fn only_new_empty_or_journaled_folders_are_run_folders() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(check_folder(&d.join("new")).is_ok());
        assert!(check_folder(d).is_ok());
        std::fs::write(d.join(LOCK), "4294967295\n").unwrap();
        assert!(check_folder(d).is_ok());
        for f in ["config.toml", "report.md", "notes.txt", "zz"] {
            std::fs::write(d.join(f), "mine").unwrap();
        }
        let e = format!("{:#}", check_folder(d).unwrap_err());
        assert!(
            e.contains("holds 5 entries (config.toml, lock, notes.txt, …)")
                && e.contains("not a dc-search run folder"),
            "{e}"
        );
        assert!(Journal::open(d, "k").is_err());
        assert_eq!(
            std::fs::read_to_string(d.join("report.md")).unwrap(),
            "mine"
        );
        std::fs::write(d.join(NAME), format!("{}\n", header("k"))).unwrap();
        assert!(check_folder(d).is_ok());
        let e = format!("{:#}", check_folder(&d.join("zz")).unwrap_err());
        assert!(e.contains("is a file"), "{e}");
    }

    fn stub(p: &Path) -> Result<()> {
        crate::paths::write_atomic(p, b"model")
    }

    fn record_epochs(
        j: &mut Journal,
        index: usize,
        ratios: &[f64],
        epochs: std::ops::Range<usize>,
    ) {
        for k in epochs {
            j.record_epoch(index, ratios, k, 4.0, 0.9 + k as f64 / 100.0, 2.0, &stub)
                .unwrap();
        }
    }

    #[test]
    fn a_final_retraining_resumes_from_its_last_journaled_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ratios = [0.5, 0.75];
        let mut j = Journal::open(d, "k").unwrap();
        record_epochs(&mut j, 0, &ratios, 1..3);
        drop(j);
        assert!(d
            .join("checkpoints/candidate-0-epoch-2.safetensors")
            .is_file());

        let mut j = Journal::open(d, "k").unwrap();
        let said = j.summary();
        assert!(
            said.contains("candidate 1's final retraining at epoch 2 of 4"),
            "{said}"
        );
        let part = j.replay_candidate(0, &ratios).unwrap();
        assert_eq!(
            part,
            Some(CandidateReplay::Part {
                segments: 2,
                checkpoint: d.join("checkpoints/candidate-0-epoch-2.safetensors"),
                accuracy: 0.92,
                seconds: 4.0,
            })
        );
        // The rest of it, then the model kept: the epoch checkpoints go.
        record_epochs(&mut j, 0, &ratios, 3..5);
        j.record_candidate(0, &ratios, 0.94, 8.0, &stub).unwrap();
        let left: Vec<String> = std::fs::read_dir(d.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(left, vec!["candidate-0.safetensors"]);
        drop(j);

        // A rerun replays the whole retraining (its epoch lines read, not needed).
        let mut j = Journal::open(d, "k").unwrap();
        let said = j.summary();
        assert!(
            said.contains("1 final retraining(s)") && !said.contains("at epoch"),
            "{said}"
        );
        assert_eq!(
            j.replay_candidate(0, &ratios).unwrap(),
            Some(CandidateReplay::Done {
                checkpoint: d.join("checkpoints/candidate-0.safetensors"),
                accuracy: 0.94,
                seconds: 8.0,
            })
        );
        assert_eq!(j.pending(), 0);
        assert_eq!(j.replay_candidate(1, &ratios).unwrap(), None);
    }

    #[test]
    fn a_final_retraining_of_another_candidate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut j = Journal::open(d, "k").unwrap();
        record_epochs(&mut j, 0, &[0.5], 1..3);
        drop(j);
        let refused = |index: usize, ratios: &[f64]| {
            let mut j = Journal::open(d, "k").unwrap();
            let e = format!("{:#}", j.replay_candidate(index, ratios).err().unwrap());
            assert!(
                e.contains("does not match this run at the final retraining"),
                "{e}"
            );
        };
        refused(0, &[0.6]);
        refused(1, &[0.5]);
        // Epochs out of order (a line lost in the middle) are refused too.
        let text = std::fs::read_to_string(d.join(NAME)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(d.join(NAME), format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        refused(0, &[0.5]);
    }

    #[test]
    fn a_torn_epoch_line_is_run_again_and_old_journals_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut j = Journal::open(d, "k").unwrap();
        record_epochs(&mut j, 0, &[0.5], 1..3);
        drop(j);
        // The second epoch's line torn mid-write: the first is where the run resumes.
        let text = std::fs::read_to_string(d.join(NAME)).unwrap();
        std::fs::write(d.join(NAME), &text[..text.len() - 20]).unwrap();
        let mut j = Journal::open(d, "k").unwrap();
        assert!(j.summary().contains("at epoch 1 of 4"), "{}", j.summary());
        assert!(matches!(
            j.replay_candidate(0, &[0.5]).unwrap(),
            Some(CandidateReplay::Part { segments: 1, .. })
        ));
        drop(j);

        // A journal written before the final retraining was journaled by epoch: a candidate
        // line alone, then the chosen model, which replays past it.
        std::fs::write(d.join("checkpoints/candidate-0.safetensors"), "model").unwrap();
        let text = format!(
            "{}\n{}\n{}\n",
            header("k"),
            r#"{"candidate":{"ratios":[0.5],"accuracy":0.9,"checkpoint":"checkpoints/candidate-0.safetensors","seconds":3.0}}"#,
            r#"{"final":{"ratios":[0.5],"bits":[5],"checkpoint":"checkpoints/final.safetensors","seconds":1.0}}"#
        );
        std::fs::write(d.join(NAME), text).unwrap();
        let mut j = Journal::open(d, "k").unwrap();
        assert!(matches!(
            j.replay_candidate(0, &[0.5]).unwrap(),
            Some(CandidateReplay::Done { accuracy: 0.9, .. })
        ));
        drop(j);
        let mut j = Journal::open(d, "k").unwrap();
        let (trials, chosen) = j.replay_chosen().unwrap().unwrap();
        assert!(trials.is_empty());
        assert_eq!(chosen.bits, vec![5]);
        drop(j);
        // With epoch lines before the chosen model, too.
        let mut j = Journal::open(d, "k").unwrap();
        record_epochs(&mut j, 1, &[0.6], 1..2);
        drop(j);
        let text = std::fs::read_to_string(d.join(NAME)).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.swap(2, 3);
        std::fs::write(d.join(NAME), lines.join("\n") + "\n").unwrap();
        let mut j = Journal::open(d, "k").unwrap();
        assert_eq!(j.replay_chosen().unwrap().unwrap().1.bits, vec![5]);
    }

    #[test]
    fn the_lr_range_test_is_replayed_not_redone() {
        let dir = tempfile::tempdir().unwrap();
        let test = crate::compress::lr_range::LrTest {
            start: vec![0.5, 0.7],
            steps: 100,
            batch_size: 64,
            lrs: vec![1e-3, 1e-2],
            valid_loss: vec![Some(0.2), None],
            valid_accuracy: vec![Some(0.95), None],
            chosen: 1e-3,
            seconds: 3.5,
        };
        {
            let mut j = Journal::open(dir.path(), "k").unwrap();
            assert!(j.replay_lr_test().is_none());
            j.record_lr_test(&test).unwrap();
        }
        let mut j = Journal::open(dir.path(), "k").unwrap();
        assert!(j.summary().contains("the learning-rate range test"));
        assert_eq!(j.replay_lr_test(), Some(test));
        assert_eq!(j.pending(), 0);
    }
}
