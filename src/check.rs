//! Range checks shared by the config sections: each section's `check()` (`[data]`,
//! `[train]`, `[compress]`, `[search]`, `[torchscript]`) reports a setting outside its range
//! the same way, naming the key, its value and the allowed range.

use anyhow::{bail, Result};

/// A setting outside its range: `key = value is outside range` (a number in a short form:
/// `1e308` is not written out in 309 digits).
pub fn need(ok: bool, key: &str, value: impl std::fmt::Display, range: &str) -> Result<()> {
    if !ok {
        let text = value.to_string();
        let value = match text.parse::<f64>() {
            Ok(x) if text.len() > 12 => show(x),
            _ => text,
        };
        bail!("{key} = {value} is outside {range}");
    }
    Ok(())
}

/// A setting's value for a message: plain when ordinary, scientific when huge or tiny.
pub fn show(x: f64) -> String {
    if x == 0.0 || (1e-4..1e6).contains(&x.abs()) || !x.is_finite() {
        format!("{x}")
    } else {
        format!("{x:.3e}")
    }
}

/// Whether `v` lies in `[lo, hi]` (false for NaN).
pub fn within(v: f64, lo: f64, hi: f64) -> bool {
    v >= lo && v <= hi
}

/// Most iterations, epochs or probes any setting asks for.
pub const MAX_STEPS: f64 = 1.0e7;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_value_is_said_short() {
        let e = need(false, "compress.prune_epochs", 1e308, "[0, 10000]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "compress.prune_epochs = 1.000e308 is outside [0, 10000]"
        );
        let e = need(false, "search.workers", 300, "1..=256").unwrap_err();
        assert_eq!(e.to_string(), "search.workers = 300 is outside 1..=256");
    }
}
