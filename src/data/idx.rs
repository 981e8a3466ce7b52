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

/// The largest IDX file accepted (decompressed); MNIST's largest is 47 MB.
const MAX_BYTES: u64 = 1 << 30;

/// Reads an IDX file of u8 data, transparently gunzipping a `.gz` (detected by magic).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw =
        std::fs::read(path).with_context(|| format!("cannot read IDX file {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_BYTES)
            .read_to_end(&mut out)
            .with_context(|| {
                format!("{}: corrupt gzip data (download it again)", path.display())
            })?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).with_context(|| format!("{}: not a valid IDX file", path.display()))
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
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n as u64 <= MAX_BYTES)
        .with_context(|| format!("dimensions {dims:?} are absurdly large"))?;
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
