//! dc-search: Deep Compression (prune → retrain, k-means weight sharing → codebook
//! retraining, Huffman coding) with an automatic per-layer sparsity search under an
//! accuracy floor, writing a really small model file.
//!
//! Pipeline, top to bottom (nothing below imports what is above it):
//! `cli` → `commands` → `search` → `compress` (prune, schedule, mask, kmeans, encode) → `dense` → `train`
//! → `import` (caffemodel, safetensors) → `models`, `data`, `weights`, `paths`; `export` (ratios
//! and decoded files for other tools); `format` (the .dcz file) is pure bytes.

pub mod bench;
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
