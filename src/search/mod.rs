//! The automatic search: `dc-search --floor F <model>`. Maximise compression subject to
//! validation accuracy ≥ F, with retraining inside the loop. One file per stage:
//!
//! 0. [`sparsify`] (`sparsifier = "l0"` only): L0 gates trained from the dense model; the
//!    sparsest gated model at the floor is what every later stage starts from;
//! 1. [`sensitivity`]: each layer's accuracy curve when pruned alone;
//! 2. [`bisection`]: one scalar δ (tolerated solo drop) turns the curves into a ratio per
//!    layer ([`delta`]); the largest δ whose pruned and retrained model is feasible;
//! 3. [`refinement`]: per-layer pushes from the smallest feasible model, chosen by a
//!    Gaussian process ([`gp`]) by expected saving × probability of feasibility;
//! 4. [`candidates`]: the models the bits stage starts from, the smallest feasible
//!    probes', optionally retrained longer;
//! 5. [`bits`]: weight widths per layer (a solo-sharing sweep and a rate–distortion
//!    chain, confirmed by codebook retraining);
//! 6. [`finish`]: the file, decoded and proved on validation; then the test set, once.
//!
//! Stages ask an accuracy [`oracle`] through the [`prober`], which owns warm starts, the
//! budget, the [`journal`] and the records ([`record`]). The real oracle retrains with
//! libtorch; [`synthetic`] answers from a noisy landscape, so strategies are compared over
//! many seeds in a second ([`synthetic::compare`], `dc-search bench search`). [`run`] holds
//! the stages in order; [`outputs`] writes the run folder. [`spec`] runs one probe from a
//! spec file (`dc-search probe`), outside the search's process.
//!
//! With `--workers N` the stages propose up to N probes at a time ([`parallel`] picks the
//! points); the prober runs them as one batch ([`batch`]), which the oracle hands to
//! [`workers`]: child processes of this binary or a Slurm array, one spec per probe.
//!
//! Every finished probe goes to the run folder's journal; a rerun replays it and goes on,
//! so a crash, a kill or Ctrl-C loses at most the probe that was running.

pub mod batch;
pub mod bisection;
pub mod bits;
pub mod calibration;
pub mod candidates;
pub mod config;
pub mod delta;
pub mod estimate;
pub mod finish;
pub mod gp;
pub mod journal;
pub mod oracle;
pub mod outputs;
pub mod parallel;
pub mod plan;
pub mod prober;
pub mod record;
pub mod refinement;
pub mod run;
pub mod sensitivity;
pub mod setup;
pub mod sparsify;
pub mod spec;
pub mod stages;
pub mod synthetic;
pub mod workers;

pub use config::{Floor, SearchConfig, Sparsifier};
pub use record::{Outcome, Phase, StageTimes, Trial};
pub use run::run;
