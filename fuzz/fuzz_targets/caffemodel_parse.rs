//! Fuzz target: the caffemodel parser (`import::caffe::parse`) on arbitrary bytes must
//! return tensors or an error, never panic, and never allocate more than the input holds:
//! run with `-malloc_limit_mb=64`.
#![no_main]

use dc_search::import::caffe::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = parse(data) {
        // Whatever decodes is consistent: each shape accounts for its values.
        for (shape, values) in tensors.values() {
            let n: i64 = shape.iter().product();
            assert_eq!(n as usize, values.len());
        }
    }
});
