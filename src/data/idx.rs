//! IDX file reader (the MNIST container): plain or gzip-compressed, checked.
//!
//! An IDX file is a big-endian header — two zero bytes, a type code (0x08 = u8), the
//! number of dimensions — then one u32 per dimension, then the data. Every check names
//! the file and what is wrong with it, so a user with a truncated download knows what to
//! fetch again.
//!
//! ## Reference
//! Y. LeCun, C. Cortes, "The MNIST database of handwritten digits", file-format section.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// The largest IDX file accepted (decompressed): 256 MiB, over 340,000 images of 28×28
/// (MNIST's largest file is 47 MB). Checked against the header before anything of that
/// size is allocated; a training set becomes f32 tensors four times its size.
const MAX_BYTES: u64 = 256 << 20;

/// Reads an IDX file of u8 data, transparently gunzipping a `.gz` (detected by magic).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = crate::paths::read_regular(path, "IDX file", MAX_BYTES + 64)?;
    decode_idx(&raw).with_context(|| {
        format!(
            "{} is not a valid IDX file (download it again, or point --data-dir at the \
             right folder)",
            path.display()
        )
    })
}

/// Decodes the bytes of an IDX file, plain or gzip-compressed. Nothing is allocated for
/// the data before the header's dimensions are checked against [`MAX_BYTES`], and a gzip
/// stream is inflated only up to the size its header declares (plus one byte, to notice
/// trailing data), so no header field can make the reader allocate more than the input
/// holds.
pub fn decode_idx(raw: &[u8]) -> Result<IdxArray> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return parse_idx(raw);
    }
    let corrupt = "corrupt gzip data";
    let mut gz = flate2::read::GzDecoder::new(raw);
    // The fixed part of the header, then the dimensions it announces.
    let mut bytes = Vec::new();
    (&mut gz).take(4).read_to_end(&mut bytes).context(corrupt)?;
    if bytes.len() == 4 && bytes[..3] == [0, 0, 0x08] && (1..=4).contains(&bytes[3]) {
        let ndim = bytes[3] as u64;
        (&mut gz)
            .take(4 * ndim)
            .read_to_end(&mut bytes)
            .context(corrupt)?;
        if bytes.len() as u64 == 4 + 4 * ndim {
            let expected = declared_len(&bytes)?;
            (&mut gz)
                .take(expected + 1)
                .read_to_end(&mut bytes)
                .context(corrupt)?;
            if bytes.len() as u64 > 4 + 4 * ndim + expected {
                bail!(
                    "trailing bytes after the {expected} data bytes of dimensions {:?}",
                    header_dims(&bytes)
                );
            }
        }
    }
    // A malformed header: parse_idx says what is wrong with it.
    parse_idx(&bytes)
}

/// The data length a complete header declares, refused above [`MAX_BYTES`].
fn declared_len(header: &[u8]) -> Result<u64> {
    let dims = header_dims(header);
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| n <= MAX_BYTES)
        .with_context(|| {
            format!("dimensions {dims:?} are absurdly large (more than {MAX_BYTES} bytes)")
        })
}

/// The dimensions of a header whose first 4 bytes and dimension fields are present.
fn header_dims(bytes: &[u8]) -> Vec<usize> {
    let ndim = bytes[3] as usize;
    (0..ndim)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect()
}

/// Parses IDX bytes (u8 element type only).
pub fn parse_idx(bytes: &[u8]) -> Result<IdxArray> {
    if bytes.len() < 4 {
        bail!(
            "file is {} bytes, shorter than the 4-byte IDX magic",
            bytes.len()
        );
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        bail!(
            "bad magic {:02x} {:02x} {:02x} {:02x}: IDX files start with two zero bytes",
            bytes[0],
            bytes[1],
            bytes[2],
            bytes[3]
        );
    }
    if bytes[2] != 0x08 {
        bail!(
            "element type 0x{:02x} is not supported (only 0x08, unsigned byte)",
            bytes[2]
        );
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 || ndim > 4 {
        bail!("{ndim} dimensions: expected 1 to 4");
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        bail!(
            "truncated header: {} bytes, need {header} for {ndim} dimensions",
            bytes.len()
        );
    }
    let dims = header_dims(bytes);
    let expected = declared_len(bytes)? as usize;
    let have = bytes.len() - header;
    if have < expected {
        bail!("truncated: dimensions {dims:?} need {expected} data bytes, the file has {have}");
    }
    if have > expected {
        bail!(
            "{} trailing bytes after the {expected} data bytes of dimensions {dims:?}",
            have - expected
        );
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

#[cfg(test)]
pub(crate) fn encode_idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn err(bytes: &[u8]) -> String {
        format!("{:#}", parse_idx(bytes).unwrap_err())
    }

    #[test]
    fn parses_images_and_labels() {
        let img = encode_idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let a = parse_idx(&img).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data[11], 12);
        let lab = encode_idx(&[3], &[7, 0, 9]);
        assert_eq!(parse_idx(&lab).unwrap().data, vec![7, 0, 9]);
    }

    #[test]
    fn rejects_each_malformation() {
        assert!(err(&[0, 0]).contains("shorter than"));
        assert!(err(&[1, 0, 8, 1, 0, 0, 0, 0]).contains("bad magic"));
        assert!(err(&[0, 0, 0x0d, 1, 0, 0, 0, 0]).contains("element type"));
        assert!(err(&[0, 0, 8, 0]).contains("0 dimensions"));
        assert!(err(&[0, 0, 8, 2, 0, 0, 0, 1]).contains("truncated header"));
        let mut short = encode_idx(&[2, 2], &[1, 2, 3, 4]);
        short.pop();
        assert!(err(&short).contains("truncated: dimensions [2, 2] need 4"));
        let mut long = encode_idx(&[2], &[1, 2]);
        long.push(0);
        assert!(err(&long).contains("1 trailing bytes"));
        let e = format!("{:#}", decode_idx(&gzip(&long)).unwrap_err());
        assert!(e.contains("trailing bytes after the 2 data bytes"), "{e}");
        let huge = encode_idx(&[u32::MAX, u32::MAX, u32::MAX], &[]);
        assert!(err(&huge).contains("absurdly large"));
    }

    #[test]
    fn reads_gzip_and_names_the_file() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-idx1-ubyte.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&encode_idx(&[3], &[1, 2, 3])).unwrap();
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        assert_eq!(read_idx(&p).unwrap().data, vec![1, 2, 3]);

        let bad = dir.path().join("bad.gz");
        std::fs::write(&bad, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        let e = format!("{:#}", read_idx(&bad).unwrap_err());
        assert!(e.contains("bad.gz") && e.contains("corrupt gzip"), "{e}");

        let missing = dir.path().join("nope");
        let e = format!("{:#}", read_idx(&missing).unwrap_err());
        assert!(
            e.contains("cannot read IDX file") && e.contains("nope"),
            "{e}"
        );
    }
}

/// Property tests: arbitrary bytes never panic, and no header field makes the reader
/// allocate more than its input holds (measured with the `.dcz` property tests'
/// per-thread allocation probe).
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::format::proptests::peak_alloc as largest_alloc;
    use proptest::prelude::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// A header of `dims` (any u32s) followed by a short body.
    fn header_and_body() -> impl Strategy<Value = (Vec<u32>, Vec<u8>)> {
        (
            prop::collection::vec(
                prop_oneof![0u32..64, any::<u32>(), Just(u32::MAX), Just(1 << 20)],
                1..=4,
            ),
            prop::collection::vec(any::<u8>(), 0..256),
        )
    }

    /// Allowance for the reader's fixed buffers (dims, messages, the inflater's window).
    const SLACK: usize = 128 << 10;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_idx(&raw);
            let mut gz = vec![0x1f, 0x8b];
            gz.extend_from_slice(&raw);
            let _ = decode_idx(&gz);
        }

        #[test]
        fn declared_sizes_beyond_the_input_are_refused_without_allocating(
            (dims, body) in header_and_body()
        ) {
            let plain = encode_idx(&dims, &body);
            let declared: u128 = dims.iter().map(|&d| d as u128).product();
            let (res, largest) = largest_alloc(|| decode_idx(&plain));
            prop_assert!(largest <= plain.len() + SLACK, "plain: {largest} bytes for a {}-byte input", plain.len());
            prop_assert_eq!(res.is_ok(), declared == body.len() as u128);
            if declared > body.len() as u128 {
                let e = format!("{:#}", res.unwrap_err());
                prop_assert!(e.contains("truncated") || e.contains("absurdly large"), "{}", e);
            }
            // gzip: the inflated size is bounded by what the stream holds, whatever the
            // header claims.
            let gz = gzip(&plain);
            let (res, largest) = largest_alloc(|| decode_idx(&gz));
            prop_assert!(largest <= plain.len() + SLACK, "gzip: {largest} bytes for {} inflated", plain.len());
            prop_assert_eq!(res.is_ok(), declared == body.len() as u128);
        }
    }

    #[test]
    fn a_128_megabyte_claim_in_twenty_bytes_allocates_nothing_big() {
        let claim = encode_idx(&[1 << 10, 1 << 10, 1 << 7], &[7; 4]);
        for input in [claim.clone(), gzip(&claim)] {
            let (res, largest) = largest_alloc(|| decode_idx(&input));
            let e = format!("{:#}", res.unwrap_err());
            assert!(e.contains("truncated: dimensions [1024, 1024, 128]"), "{e}");
            assert!(largest <= SLACK, "{largest}");
        }
    }

    #[test]
    fn claims_over_the_cap_are_refused_before_reading() {
        // 1.37 million 28×28 images (1.07 GB), and 400,000 (313 MB).
        for n in [1_370_000u32, 400_000] {
            let claim = encode_idx(&[n, 28, 28], &[7; 4]);
            for input in [claim.clone(), gzip(&claim)] {
                let (res, largest) = largest_alloc(|| decode_idx(&input));
                let e = format!("{:#}", res.unwrap_err());
                assert!(e.contains("absurdly large"), "{e}");
                assert!(largest <= SLACK, "{largest}");
            }
        }
    }
}
