//! NumPy `.npz` archives (`np.savez`, `np.savez_compressed`) of a data set: `x_train`,
//! `y_train`, `x_test`, `y_test` and, optionally, `x_val`, `y_val`.
//!
//! Images are N×H×W (one channel), or N×C×H×W or N×H×W×C as `[data] layout` says, of
//! `uint8` or `float32`; labels are integers 0…K−1 (N, or N×1). Every array's header is read
//! and checked, and the memory the whole set needs is checked, before any pixel is read;
//! each array is then read once into a buffer of its own size (a channels-last array is
//! turned channels-first through one more such buffer).
//!
//! The archive is read with the `zip` crate (stored and deflated entries, zip64), each
//! `.npy` header with `npyz` (its Python-literal dict); the data bytes are read here.
//!
//! ## Reference
//! NumPy Enhancement Proposal 1, "A simple file format for NumPy arrays" (`.npy` v1–v3);
//! `numpy.savez`.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use npyz::{DType, NpyHeader, Order, TypeChar};

use super::raw::{self, Part, Pixels, RawData};
use super::Layout;

/// Longest `.npy` header read (NumPy writes a few hundred bytes).
const MAX_HEADER: u64 = 1 << 20;

/// An array's header: what it holds and how it is stored.
struct Header {
    shape: Vec<u64>,
    kind: TypeChar,
    width: usize,
    little: bool,
}

impl Header {
    fn len(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    fn describe(&self) -> String {
        let k = match self.kind {
            TypeChar::Int => "int",
            TypeChar::Uint => "uint",
            TypeChar::Float => "float",
            TypeChar::Bool => "bool",
            _ => "non-numeric",
        };
        format!("{k}{} {:?}", self.width * 8, self.shape)
    }
}

/// Reads the data set in the `.npz` at `path`.
pub fn read(path: &Path, layout: Option<Layout>) -> Result<RawData> {
    let src = path.display().to_string();
    crate::paths::check_regular(path, "data file")?;
    let file = File::open(path).with_context(|| format!("cannot read data file {src}"))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
        anyhow!("{src} is not a NumPy .npz archive (write it with numpy.savez): {e}")
    })?;
    let has =
        |zip: &zip::ZipArchive<_>, name: &str| zip.index_for_name(&format!("{name}.npy")).is_some();
    let names = zip
        .file_names()
        .filter_map(|n| n.ok()?.strip_suffix(".npy").map(str::to_string))
        .collect::<Vec<_>>()
        .join(", ");
    for name in ["x_train", "y_train", "x_test", "y_test"] {
        ensure!(
            has(&zip, name),
            "{src} has no array {name} (it holds {}): give x_train, y_train, x_test, y_test and \
             optionally x_val, y_val",
            if names.is_empty() { "none" } else { &names }
        );
    }
    let val = match (has(&zip, "x_val"), has(&zip, "y_val")) {
        (true, true) => true,
        (false, false) => false,
        _ => bail!("{src}: x_val and y_val go together: give both or neither"),
    };
    let mut sets = vec![("x_train", "y_train"), ("x_test", "y_test")];
    if val {
        sets.push(("x_val", "y_val"));
    }
    // Every header first: shapes, types and the memory the whole set needs.
    let mut values = 0u64;
    let mut width = 1u64;
    for (x, y) in &sets {
        let hx = header(&mut zip, &src, x)?;
        let hy = header(&mut zip, &src, y)?;
        image_shape(&src, x, &hx, layout)?;
        labels_len(&src, y, &hy)?;
        ensure!(
            hx.shape[0] == hy.shape[0],
            "{src}: {x} holds {} images but {y} holds {} labels; give one label per image",
            hx.shape[0],
            hy.shape[0]
        );
        let n = hx
            .len()
            .ok_or_else(|| anyhow!("{src}: {x} of shape {:?} is too large", hx.shape))?;
        values = values.saturating_add(n);
        width = width.max(hx.width as u64);
    }
    raw::check_memory(&src, values, width)?;
    let mut part = |x: &str, y: &str| -> Result<Part> {
        let hx = header(&mut zip, &src, x)?;
        let shape = image_shape(&src, x, &hx, layout)?;
        let pixels = read_images(&mut zip, &src, x, &hx, shape, layout)?;
        let hy = header(&mut zip, &src, y)?;
        let labels = read_labels(&mut zip, &src, y, &hy)?;
        Ok(Part {
            pixels,
            shape,
            labels,
        })
    };
    let train = part("x_train", "y_train")?;
    let test = part("x_test", "y_test")?;
    let valid = if val {
        Some(part("x_val", "y_val")?)
    } else {
        None
    };
    let data = RawData { train, valid, test };
    data.check(&src)?;
    Ok(data)
}

/// Opens array `name` and reads its header, leaving the entry at its data.
fn open<'a, R: Read + std::io::Seek>(
    zip: &'a mut zip::ZipArchive<R>,
    src: &str,
    name: &str,
) -> Result<(zip::read::ZipFile<'a, R>, Header)> {
    let mut entry = zip
        .by_name(&format!("{name}.npy"))
        .map_err(|e| anyhow!("{src}: cannot open array {name}: {e}"))?;
    let h = NpyHeader::from_reader((&mut entry).take(MAX_HEADER))
        .map_err(|e| anyhow!("{src}: array {name} is not a NumPy .npy array: {e}"))?;
    ensure!(
        h.order() == Order::C,
        "{src}: array {name} is stored in Fortran order; save numpy.ascontiguousarray({name})"
    );
    let DType::Plain(t) = h.dtype() else {
        bail!("{src}: array {name} has a structured or sub-array type; give a plain numeric array");
    };
    let little = !matches!(t.endianness(), npyz::Endianness::Big);
    let header = Header {
        shape: h.shape().to_vec(),
        kind: t.type_char(),
        width: t.num_bytes().unwrap_or(0),
        little,
    };
    Ok((entry, header))
}

fn header<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    src: &str,
    name: &str,
) -> Result<Header> {
    Ok(open(zip, src, name)?.1)
}

/// `[C, H, W]` of one image of images array `name`.
fn image_shape(src: &str, name: &str, h: &Header, layout: Option<Layout>) -> Result<[usize; 3]> {
    let ok_type = matches!(
        (h.kind, h.width),
        (TypeChar::Uint, 1) | (TypeChar::Float, 4)
    );
    ensure!(
        ok_type,
        "{src}: {name} is {}; images must be uint8 or float32 ({name}.astype(numpy.float32))",
        h.describe()
    );
    let s: Vec<usize> = h.shape.iter().map(|&d| d as usize).collect();
    let shape = match (s.len(), layout) {
        (3, _) => [1, s[1], s[2]],
        (4, Some(Layout::Nchw)) => [s[1], s[2], s[3]],
        (4, Some(Layout::Nhwc)) => [s[3], s[1], s[2]],
        (4, None) => bail!(
            "{src}: {name} is 4-D {:?}: say how its axes go with [data] layout = \"nchw\" \
             (N×C×H×W, PyTorch's) or \"nhwc\" (N×H×W×C) (or --layout)",
            h.shape
        ),
        _ => bail!(
            "{src}: {name} has shape {:?}; give images as N×H×W, N×C×H×W or N×H×W×C",
            h.shape
        ),
    };
    ensure!(
        shape.iter().all(|&d| d > 0),
        "{src}: {name} has shape {:?}: images of zero size",
        h.shape
    );
    Ok(shape)
}

/// Labels in labels array `name` (N or N×1 integers).
fn labels_len(src: &str, name: &str, h: &Header) -> Result<u64> {
    ensure!(
        matches!(h.kind, TypeChar::Int | TypeChar::Uint) && (1..=8).contains(&h.width),
        "{src}: {name} is {}; labels must be integers 0, 1, …, K−1 ({name}.astype(numpy.int64))",
        h.describe()
    );
    match h.shape.as_slice() {
        [n] | [n, 1] => Ok(*n),
        _ => bail!(
            "{src}: {name} has shape {:?}; give one integer label per image (shape N)",
            h.shape
        ),
    }
}

/// Reads `len` values of `width` bytes each in blocks, handing each value's bytes (in the
/// file's byte order) to `put`.
fn read_values(
    r: &mut impl Read,
    len: u64,
    width: usize,
    mut put: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; width * 16_384];
    let mut left = len;
    while left > 0 {
        let n = left.min(16_384) as usize;
        r.read_exact(&mut buf[..n * width])?;
        for v in buf[..n * width].chunks_exact(width) {
            put(v);
        }
        left -= n as u64;
    }
    Ok(())
}

fn read_images<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    src: &str,
    name: &str,
    h: &Header,
    shape: [usize; 3],
    layout: Option<Layout>,
) -> Result<Pixels> {
    let (mut entry, _) = open(zip, src, name)?;
    let len = h.len().expect("checked with the headers");
    let short = |e: std::io::Error| anyhow!("{src}: array {name} ends early or is damaged: {e}");
    let pixels = if h.width == 1 {
        let mut v = vec![0u8; len as usize];
        entry.read_exact(&mut v).map_err(short)?;
        Pixels::U8(v)
    } else {
        let mut v = Vec::with_capacity(len as usize);
        let little = h.little;
        read_values(&mut entry, len, 4, |b| {
            let b = [b[0], b[1], b[2], b[3]];
            v.push(if little {
                f32::from_le_bytes(b)
            } else {
                f32::from_be_bytes(b)
            });
        })
        .map_err(short)?;
        Pixels::F32(v)
    };
    Ok(match (layout, h.shape.len()) {
        (Some(Layout::Nhwc), 4) => match pixels {
            Pixels::U8(v) => Pixels::U8(raw::channels_first(&v, shape)),
            Pixels::F32(v) => Pixels::F32(raw::channels_first(&v, shape)),
        },
        _ => pixels,
    })
}

fn read_labels<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    src: &str,
    name: &str,
    h: &Header,
) -> Result<Vec<i64>> {
    let n = labels_len(src, name, h)?;
    let (mut entry, _) = open(zip, src, name)?;
    let (signed, little, width) = (h.kind == TypeChar::Int, h.little, h.width);
    let mut out = Vec::with_capacity(n as usize);
    read_values(&mut entry, n, width, |b| {
        let mut le = [0u8; 8];
        for (i, &x) in b.iter().enumerate() {
            le[if little { i } else { width - 1 - i }] = x;
        }
        let negative = signed && le[width - 1] & 0x80 != 0;
        if negative {
            for x in &mut le[width..] {
                *x = 0xff;
            }
        }
        let v = u64::from_le_bytes(le);
        // An unsigned value above i64's range reads as negative: out of range either way.
        out.push(v as i64);
    })
    .map_err(|e| anyhow!("{src}: array {name} ends early or is damaged: {e}"))?;
    Ok(out)
}

/// The bytes of a `.npy` file as NumPy writes them: a version 1 header for `descr` (`|u1`,
/// `<f4`, `<i8`, …) and `shape` (C order), then `data` (for tests and tools that write data
/// sets).
pub fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // The header ends with a newline, padded so that the data starts at a multiple of 64.
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(text.len() as u16).to_le_bytes());
    v.extend_from_slice(text.as_bytes());
    v.extend_from_slice(data);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn npy(descr: &str, shape: &[u64], data: &[u8]) -> Vec<u8> {
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        npy_bytes(descr, &shape, data)
    }

    pub(crate) fn npz(path: &Path, arrays: &[(&str, Vec<u8>)]) {
        let mut z = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, bytes) in arrays {
            z.start_file(
                format!("{name}.npy"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            z.write_all(bytes).unwrap();
        }
        z.finish().unwrap();
    }

    fn read_err(arrays: &[(&str, Vec<u8>)], layout: Option<Layout>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.npz");
        npz(&p, arrays);
        format!("{:#}", read(&p, layout).unwrap_err())
    }

    fn good() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("x_train", npy("|u1", &[2, 1, 2], &[1, 2, 3, 4])),
            (
                "y_train",
                npy(
                    "<i8",
                    &[2],
                    &[&1i64.to_le_bytes()[..], &0i64.to_le_bytes()].concat(),
                ),
            ),
            ("x_test", npy("|u1", &[1, 1, 2], &[5, 6])),
            ("y_test", npy("|u1", &[1], &[1])),
        ]
    }

    #[test]
    fn a_small_archive_reads_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.npz");
        npz(&p, &good());
        let d = read(&p, None).unwrap();
        assert_eq!(d.train.pixels, Pixels::U8(vec![1, 2, 3, 4]));
        assert_eq!(d.train.shape, [1, 1, 2]);
        assert_eq!(d.train.labels, vec![1, 0]);
        assert_eq!(d.test.labels, vec![1]);
        assert!(d.valid.is_none());
        assert_eq!(d.classes(), 2);
    }

    #[test]
    fn channels_last_float_arrays_read_channels_first() {
        // one 1×2 image of 2 channels, big-endian float32 and int16 labels
        let px: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let mut a = good();
        a[0] = ("x_train", npy(">f4", &[1, 1, 2, 2], &px));
        a[1] = ("y_train", npy("<i2", &[1, 1], &3i16.to_le_bytes()));
        a[2] = ("x_test", npy(">f4", &[1, 1, 2, 2], &px));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.npz");
        npz(&p, &a);
        let d = read(&p, Some(Layout::Nhwc)).unwrap();
        assert_eq!(d.train.shape, [2, 1, 2]);
        assert_eq!(d.train.pixels, Pixels::F32(vec![1.0, 3.0, 2.0, 4.0]));
        assert_eq!(d.train.labels, vec![3]);
        let d = read(&p, Some(Layout::Nchw)).unwrap();
        assert_eq!(d.train.shape, [1, 2, 2]);
        assert_eq!(d.train.pixels, Pixels::F32(vec![1.0, 2.0, 3.0, 4.0]));
        assert!(read_err(&a, None).contains("layout = \"nchw\""));
    }

    #[test]
    fn bad_archives_get_one_line_naming_the_array() {
        let mut a = good();
        a.remove(3);
        assert!(read_err(&a, None).contains("has no array y_test"));
        let mut a = good();
        a[1] = ("y_train", npy("<f4", &[2], &[0; 8]));
        assert!(read_err(&a, None).contains("labels must be integers"));
        let mut a = good();
        a[1] = ("y_train", npy("<i8", &[3], &[0; 24]));
        assert!(read_err(&a, None).contains("2 images but y_train holds 3 labels"));
        let mut a = good();
        a[0] = ("x_train", npy("<f8", &[2, 1, 2], &[0; 32]));
        assert!(read_err(&a, None).contains("uint8 or float32"));
        let mut a = good();
        a[2] = ("x_test", npy("|u1", &[1, 2, 2], &[0; 4]));
        assert!(read_err(&a, None).contains("images of one size"));
        let mut a = good();
        a[1] = (
            "y_train",
            npy(
                "<i8",
                &[2],
                &[&(-1i64).to_le_bytes()[..], &0i64.to_le_bytes()].concat(),
            ),
        );
        assert!(read_err(&a, None).contains("label -1"));
        let mut a = good();
        a[0] = ("x_train", npy("|u1", &[2, 1, 2], &[1, 2, 3]));
        assert!(read_err(&a, None).contains("ends early"));
        let mut a = good();
        a.push(("x_val", npy("|u1", &[1, 1, 2], &[0, 0])));
        assert!(read_err(&a, None).contains("x_val and y_val go together"));
        // a header declaring more than memory holds is refused before any pixel is read
        let mut a = good();
        a[0] = ("x_train", npy("|u1", &[1 << 40, 1, 2], &[]));
        a[1] = ("y_train", npy("<i8", &[1 << 40], &[]));
        assert!(read_err(&a, None).contains("memory is available"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("not.npz");
        std::fs::write(&p, b"hello").unwrap();
        assert!(format!("{:#}", read(&p, None).unwrap_err()).contains("not a NumPy .npz"));
    }
}
