//! Fuzz target: the IDX reader (`data::idx::decode_idx`, plain or gzip) on arbitrary
//! bytes must return `Ok` or an error, never panic, and never allocate more than the
//! input holds: run with `-malloc_limit_mb=64` (inputs are at most a few KB, so any
//! allocation driven by a header field instead of the data trips the limit).
#![no_main]

use dc_search::data::idx::{decode_idx, parse_idx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = decode_idx(data) {
        // What decodes is consistent: the dimensions account for every data byte.
        let n: usize = a.dims.iter().product();
        assert_eq!(n, a.data.len());
        assert!((1..=4).contains(&a.dims.len()));
        // A plain file decodes to itself through the byte parser.
        if !data.starts_with(&[0x1f, 0x8b]) {
            assert_eq!(parse_idx(data).ok(), Some(a));
        }
    }
});
