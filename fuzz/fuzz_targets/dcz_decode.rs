//! Fuzz target: `decode` and `account` of the `.dcz` format on arbitrary
//! bytes must return `Ok` or a `FormatError`, never panic, and agree with
//! each other. cargo-fuzz builds with `--cfg fuzzing`, which turns off the
//! CRC comparison so the fuzzer reaches the parser behind the checksums.
#![no_main]

use dc_search::format::{account, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = decode(data);
    let accounted = account(data);
    assert_eq!(decoded.is_ok(), accounted.is_ok());
    if let (Ok(model), Ok(acct)) = (decoded, accounted) {
        // The account covers every byte.
        assert_eq!(acct.total.total(), data.len() as u64);
        // Whatever decodes is a valid model that encodes and decodes again.
        let again = encode(&model).expect("decoded model re-encodes");
        let back = decode(&again).expect("re-encoded model decodes");
        assert_eq!(back.layers.len(), model.layers.len());
        for (a, b) in model.layers.iter().zip(&back.layers) {
            assert_eq!(a.positions, b.positions);
            assert_eq!(a.clusters, b.clusters);
        }
    }
});
