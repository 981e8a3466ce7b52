//! dc-search: Deep Compression (prune → retrain, k-means weight sharing → codebook
//! retraining, Huffman coding) with an automatic per-layer sparsity search under an
//! accuracy floor, writing a really small model file.
//!
//! Pipeline, top to bottom (nothing below imports what is above it):
//! `cli` → `commands` → `dense` → `train` → `models`, `data`, `weights`, `paths`.

pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod dense;
pub mod models;
pub mod paths;
pub mod runtime;
pub mod train;
pub mod weights;
