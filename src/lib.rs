//! dc-search: Deep Compression (prune → retrain, k-means weight sharing → codebook
//! retraining, Huffman coding) with an automatic per-layer sparsity search under an
//! accuracy floor, writing a really small model file.
//!
//! Layers, top to bottom: a module imports only modules below it, and `format/` has no
//! circle inside (`tests/layers.rs` reads the sources and checks both against this list;
//! unit-test modules are not held to it):
//! `commands` (one function per command) → `cli` (flags → typed settings) → `bench` →
//! `dense` (the cached baseline) → `config` (the sections together) → `export` → `search` →
//! `report` → `compress` (prune, schedule, mask, kmeans, encode) → `train` → `import`
//! (caffemodel, safetensors) → `weights` → `models` → `data` → `runtime` → `cuda` → `check`
//! (range checks of settings) → `paths` → `format` (the .dcz file, pure bytes).

pub mod bench;
pub mod check;
pub mod cli;
pub mod commands;
pub mod compress;
pub mod config;
pub mod cuda;
pub mod data;
pub mod dense;
pub mod export;
pub mod format;
pub mod import;
pub mod models;
pub mod paths;
pub mod report;
pub mod runtime;
pub mod search;
pub mod train;
pub mod weights;
