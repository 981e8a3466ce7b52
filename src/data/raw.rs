//! Data as its files hold it, before it becomes tensors: images as stored (`u8` or `f32`,
//! N×C×H×W), integer labels, the checks every source shares (lengths, label range, NaN,
//! one image size, memory), the hold-out of a validation split, and the content hash that
//! keys the dense-model cache.

use anyhow::{bail, ensure, Result};
use sha2::{Digest, Sha256};

/// Largest class label accepted (labels are 0..K−1 with K at most this plus one).
pub const MAX_LABEL: i64 = 999_999;

/// Pixel values as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl Pixels {
    /// Bytes per stored value.
    pub fn width(&self) -> u64 {
        match self {
            Pixels::U8(_) => 1,
            Pixels::F32(_) => 4,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Pixels::U8(v) => v.len(),
            Pixels::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `numpy`'s name of the type (`uint8`, `float32`).
    pub fn dtype(&self) -> &'static str {
        match self {
            Pixels::U8(_) => "uint8",
            Pixels::F32(_) => "float32",
        }
    }

    /// The values of images `idx` (each `len` values), in that order.
    fn gather(&self, idx: &[usize], len: usize) -> Pixels {
        fn pick<T: Copy>(v: &[T], idx: &[usize], len: usize) -> Vec<T> {
            let mut out = Vec::with_capacity(idx.len() * len);
            for &i in idx {
                out.extend_from_slice(&v[i * len..(i + 1) * len]);
            }
            out
        }
        match self {
            Pixels::U8(v) => Pixels::U8(pick(v, idx, len)),
            Pixels::F32(v) => Pixels::F32(pick(v, idx, len)),
        }
    }
}

/// Images and labels of one part of a data set (train, validation or test).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub pixels: Pixels,
    /// `[channels, height, width]` of one image.
    pub shape: [usize; 3],
    pub labels: Vec<i64>,
}

impl Part {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values in one image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Images `idx` (ascending) with their labels.
    pub fn gather(&self, idx: &[usize]) -> Part {
        Part {
            pixels: self.pixels.gather(idx, self.image_len()),
            shape: self.shape,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Splits off `k` images picked by `order` (a permutation of the images; its first `k`
    /// are held out): (held out, the rest), both in file order.
    pub fn hold_out(&self, order: &[usize], k: usize) -> (Part, Part) {
        let (held, rest) = order.split_at(k);
        let sorted = |idx: &[usize]| {
            let mut s = idx.to_vec();
            s.sort_unstable();
            s
        };
        (self.gather(&sorted(held)), self.gather(&sorted(rest)))
    }

    /// The checks each part must pass alone; `what` names it (`x_train`, `train/`).
    pub fn check(&self, what: &str) -> Result<()> {
        ensure!(!self.is_empty(), "{what} holds no images");
        let n = self.pixels.len() / self.image_len().max(1);
        ensure!(
            n == self.len() && self.pixels.len() == n * self.image_len(),
            "{what}: {} images but {} labels; give one label per image",
            n,
            self.len()
        );
        if let Some(i) = self
            .labels
            .iter()
            .position(|&l| !(0..=MAX_LABEL).contains(&l))
        {
            bail!(
                "{what}: label {} of image {i} is out of range: labels are the classes 0, 1, …, K−1",
                self.labels[i]
            );
        }
        if let Pixels::F32(v) = &self.pixels {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                bail!(
                    "{what}: image {} holds {} (value {i}): give finite values",
                    i / self.image_len(),
                    v[i]
                );
            }
        }
        Ok(())
    }
}

/// A whole data set as read: training images, validation images when the files give them,
/// test images.
#[derive(Debug, Clone, PartialEq)]
pub struct RawData {
    pub train: Part,
    pub valid: Option<Part>,
    pub test: Part,
}

impl RawData {
    /// Checks the parts against each other: one image shape and one pixel type.
    pub fn check(&self, source: &str) -> Result<()> {
        let parts = self.parts();
        for (name, p) in &parts {
            p.check(&format!("{source}: {name}"))?;
        }
        let (first, p0) = parts[0];
        for (name, p) in &parts[1..] {
            ensure!(
                p.shape == p0.shape,
                "{source}: {name} images are {} but {first} images are {}: give images of one size",
                show_shape(&p.shape),
                show_shape(&p0.shape)
            );
            ensure!(
                p.pixels.dtype() == p0.pixels.dtype(),
                "{source}: {name} images are {} but {first} images are {}: give one type",
                p.pixels.dtype(),
                p0.pixels.dtype()
            );
        }
        Ok(())
    }

    fn parts(&self) -> Vec<(&'static str, &Part)> {
        let mut v = vec![("train", &self.train)];
        if let Some(p) = &self.valid {
            v.push(("validation", p));
        }
        v.push(("test", &self.test));
        v
    }

    /// Classes K: one more than the largest label.
    pub fn classes(&self) -> usize {
        self.parts()
            .iter()
            .flat_map(|(_, p)| p.labels.iter())
            .max()
            .map_or(0, |&l| l as usize + 1)
    }

    /// SHA-256 (hex) of the content: every part's name, pixel type, image shape, values and
    /// labels, in order. Two data sets share it only when they hold the same images with the
    /// same labels in the same order (however the files stored them).
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for (name, p) in self.parts() {
            h.update(name.as_bytes());
            h.update(p.pixels.dtype().as_bytes());
            for d in [p.len(), p.shape[0], p.shape[1], p.shape[2]] {
                h.update((d as u64).to_le_bytes());
            }
            match &p.pixels {
                Pixels::U8(v) => h.update(v),
                Pixels::F32(v) => {
                    for chunk in v.chunks(4096) {
                        let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
                        h.update(&bytes);
                    }
                }
            }
            for chunk in p.labels.chunks(4096) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
                h.update(&bytes);
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `C×H×W`.
pub fn show_shape(s: &[usize]) -> String {
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// N×H×W×C values (one image after another, channels last) as N×C×H×W.
pub fn channels_first<T: Copy + Default>(v: &[T], [c, h, w]: [usize; 3]) -> Vec<T> {
    let len = c * h * w;
    let mut out = vec![T::default(); v.len()];
    for (src, dst) in v.chunks(len).zip(out.chunks_mut(len)) {
        for (p, px) in src.chunks(c).enumerate() {
            for (ch, &x) in px.iter().enumerate() {
                dst[ch * h * w + p] = x;
            }
        }
    }
    out
}

/// Refuses a data set that does not fit in memory, before it is read: `values` pixel values
/// of `width` bytes each as stored become `f32` tensors (held), and loading holds the stored
/// values beside them at most once more. `what` names the data in the error.
pub fn check_memory(what: &str, values: u64, width: u64) -> Result<()> {
    let held = values.saturating_mul(4);
    let need = held.saturating_add(values.saturating_mul(width));
    if let Some(avail) = available_memory() {
        if need > avail {
            bail!(
                "{what}: {values} pixel values need {} as float32 tensors and {} while loading, \
                 but only {} of memory is available: use a smaller data set (or fewer, smaller \
                 images) or a machine with more memory",
                gib(held),
                gib(need),
                gib(avail)
            );
        }
    }
    Ok(())
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `MemAvailable` of `/proc/meminfo` in bytes (`None` where there is none).
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(pixels: Vec<u8>, shape: [usize; 3], labels: Vec<i64>) -> Part {
        Part {
            pixels: Pixels::U8(pixels),
            shape,
            labels,
        }
    }

    #[test]
    fn channels_first_moves_the_channel_axis() {
        // two 1×2 images of 3 channels: pixel p of image n has channel values 100n+10p+c
        let v: Vec<u8> = (0..2)
            .flat_map(|n| (0..2).flat_map(move |p| (0..3).map(move |c| 100 * n + 10 * p + c)))
            .collect();
        let out = channels_first(&v, [3, 1, 2]);
        assert_eq!(out, vec![0, 10, 1, 11, 2, 12, 100, 110, 101, 111, 102, 112]);
    }

    #[test]
    fn hold_out_keeps_file_order_and_labels_with_their_images() {
        let p = part((0..5).collect(), [1, 1, 1], vec![0, 1, 2, 3, 4]);
        let (held, rest) = p.hold_out(&[3, 0, 4, 1, 2], 2);
        assert_eq!(held.pixels, Pixels::U8(vec![0, 3]));
        assert_eq!(held.labels, vec![0, 3]);
        assert_eq!(rest.pixels, Pixels::U8(vec![1, 2, 4]));
        assert_eq!(rest.labels, vec![1, 2, 4]);
    }

    #[test]
    fn bad_parts_are_named() {
        let e = |p: Part| format!("{:#}", p.check("x_train").unwrap_err());
        assert!(e(part(vec![0; 6], [1, 1, 2], vec![0, 1])).contains("3 images but 2 labels"));
        assert!(e(part(vec![0; 2], [1, 1, 2], vec![-1])).contains("label -1 of image 0"));
        assert!(e(part(vec![], [1, 1, 2], vec![])).contains("holds no images"));
        let nan = Part {
            pixels: Pixels::F32(vec![0.0, 1.0, f32::NAN, 0.0]),
            shape: [1, 1, 2],
            labels: vec![0, 1],
        };
        assert!(e(nan).contains("image 1 holds NaN"));
    }

    #[test]
    fn the_content_hash_follows_images_labels_and_order() {
        let d = |pix: Vec<u8>, labels: Vec<i64>| RawData {
            train: part(pix, [1, 1, 1], labels),
            valid: None,
            test: part(vec![9], [1, 1, 1], vec![0]),
        };
        let a = d(vec![1, 2], vec![0, 1]).sha256();
        assert_eq!(a, d(vec![1, 2], vec![0, 1]).sha256());
        assert_ne!(a, d(vec![2, 1], vec![1, 0]).sha256(), "order");
        assert_ne!(a, d(vec![1, 2], vec![0, 0]).sha256(), "labels");
        assert_ne!(a, d(vec![1, 3], vec![0, 1]).sha256(), "pixels");
    }

    #[test]
    fn a_data_set_larger_than_memory_is_refused_before_reading() {
        let e = format!(
            "{:#}",
            check_memory("big.npz", u64::MAX / 8, 1).unwrap_err()
        );
        assert!(
            e.contains("big.npz") && e.contains("memory is available"),
            "{e}"
        );
        assert!(check_memory("small.npz", 1000, 1).is_ok());
    }
}
