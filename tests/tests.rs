//! Integration tests: the real binary, real libtorch, real MNIST at small size.

mod util;

mod bad_input;
mod byom;
mod compress;
mod cuda;
mod determinism;
mod export;
mod foundation;
mod import;
mod layers;
mod own_data;
mod search;
mod slurm;
mod torchscript;
mod workers;
