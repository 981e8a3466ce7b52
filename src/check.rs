//! Range checks shared by the config sections: each section's `check()` (`[data]`,
//! `[train]`, `[compress]`, `[search]`, `[torchscript]`) reports a setting outside its range
//! the same way, naming the key, its value and the allowed range.

use anyhow::{bail, Result};

/// A setting outside its range: `key = value is outside range`.
pub fn need(ok: bool, key: &str, value: impl std::fmt::Display, range: &str) -> Result<()> {
    if !ok {
        bail!("{key} = {value} is outside {range}");
    }
    Ok(())
}

/// Whether `v` lies in `[lo, hi]` (false for NaN).
pub fn within(v: f64, lo: f64, hi: f64) -> bool {
    v >= lo && v <= hi
}

/// Most iterations, epochs or probes any setting asks for.
pub const MAX_STEPS: f64 = 1.0e7;
