//! Integration tests: the real binary, real libtorch, real MNIST at small size.

mod util;

mod compress;
mod foundation;
mod import;
mod search;
mod torchscript;
