//! Datasets: finds the IDX files, checks them against each other, scales the inputs and
//! splits a seeded validation set off the training set. The test set is kept apart and
//! only evaluated when a command asks for the final figure.

pub mod augment;
pub mod idx;

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The datasets dc-search knows how to find.
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
}

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

/// How the data is read and split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: DatasetName,
    /// Images held out of the training set for every decision (default 5,000).
    pub validation: usize,
    /// Seed of the permutation that picks the validation images (independent of `--seed`,
    /// so every run of a preset validates on the same images).
    pub split_seed: u64,
    /// Input scaling; Caffe's LeNet multiplies pixels by 1/256 (`scale: 0.00390625`).
    pub input_scale: f32,
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

impl DataConfig {
    /// Range checks of the `[data]` section.
    pub fn check(&self) -> Result<()> {
        use crate::check::need;
        need(
            (1..=1_000_000).contains(&self.validation),
            "data.validation",
            self.validation,
            "1..=1000000 images",
        )?;
        let s = self.input_scale;
        need(
            s > 0.0 && s <= crate::format::MAX_INPUT_NORM,
            "data.input_scale",
            s,
            "(0, 1e6]",
        )
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

/// Images `[n, 1, 28, 28]` (f32, scaled) and labels `[n]` (i64).
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

/// Training, validation (held out of training) and test splits.
#[derive(Debug)]
pub struct Data {
    pub name: DatasetName,
    pub train: Split,
    pub valid: Split,
    pub test: Split,
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

fn read_pair(images: &Path, labels: &Path) -> Result<(Vec<u8>, Vec<u8>, usize)> {
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
    Ok((img.data, lab.data, img.dims[0]))
}

fn to_split(images: &[u8], labels: &[u8], n: usize, scale: f32) -> Split {
    let images = Tensor::from_slice(images)
        .view([n as i64, 1, 28, 28])
        .to_kind(Kind::Float)
        * scale as f64;
    let labels = Tensor::from_slice(labels).to_kind(Kind::Int64);
    Split { images, labels }
}

/// Loads the dataset, splits off `cfg.validation` training images with a seeded shuffle.
pub fn load(cfg: &DataConfig) -> Result<Data> {
    let dir = cfg.dir.clone().unwrap_or_else(|| cfg.dataset.default_dir());
    let paths: Vec<PathBuf> = FILES
        .iter()
        .map(|f| find(&dir, f, cfg.dataset))
        .collect::<Result<_>>()?;
    let (tr_img, tr_lab, n_train) = read_pair(&paths[0], &paths[1])?;
    let (te_img, te_lab, n_test) = read_pair(&paths[2], &paths[3])?;
    if cfg.validation_from == ValidationFrom::Test {
        ensure!(
            cfg.validation < n_test,
            "validation split of {} images leaves no test images ({} test images)",
            cfg.validation,
            n_test
        );
        let (valid, test) = hold_out(&te_img, &te_lab, n_test, cfg.validation, cfg.split_seed);
        return Ok(Data {
            name: cfg.dataset,
            train: to_split(&tr_img, &tr_lab, n_train, cfg.input_scale),
            valid: to_split(&valid.0, &valid.1, cfg.validation, cfg.input_scale),
            test: to_split(&test.0, &test.1, n_test - cfg.validation, cfg.input_scale),
        });
    }
    ensure!(
        cfg.validation < n_train,
        "validation split of {} images leaves nothing to train on ({} training images): \
         lower data.validation in the config",
        cfg.validation,
        n_train
    );
    let ((vi, vl), (ti, tl)) = hold_out(&tr_img, &tr_lab, n_train, cfg.validation, cfg.split_seed);
    Ok(Data {
        name: cfg.dataset,
        train: to_split(&ti, &tl, n_train - cfg.validation, cfg.input_scale),
        valid: to_split(&vi, &vl, cfg.validation, cfg.input_scale),
        test: to_split(&te_img, &te_lab, n_test, cfg.input_scale),
    })
}

/// Images and labels of one part of a split.
type Part = (Vec<u8>, Vec<u8>);

/// Splits `n` images into `k` held out by a seeded shuffle and the rest, both kept in file
/// order.
fn hold_out(img: &[u8], lab: &[u8], n: usize, k: usize, seed: u64) -> (Part, Part) {
    let order = validation_order(n, seed);
    let (held, rest) = order.split_at(k);
    let gather = |idx: &[usize]| -> Part {
        let mut sorted = idx.to_vec();
        sorted.sort_unstable();
        let mut i_out = Vec::with_capacity(sorted.len() * 784);
        let mut l_out = Vec::with_capacity(sorted.len());
        for &i in &sorted {
            i_out.extend_from_slice(&img[i * 784..(i + 1) * 784]);
            l_out.push(lab[i]);
        }
        (i_out, l_out)
    };
    (gather(held), gather(rest))
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

    #[test]
    fn dataset_names_parse_back() {
        for d in [DatasetName::Mnist, DatasetName::FashionMnist] {
            assert_eq!(d.as_str().parse::<DatasetName>().unwrap(), d);
        }
        assert!("cifar".parse::<DatasetName>().is_err());
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
            dataset: DatasetName::Mnist,
            validation: 10,
            split_seed: 1,
            input_scale: 1.0,
            dir: Some(dir.path().join("absent")),
            validation_from: ValidationFrom::Train,
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
            dataset: DatasetName::Mnist,
            validation: 1,
            split_seed: 1,
            input_scale: 1.0,
            dir: Some(dir.path().to_path_buf()),
            validation_from: ValidationFrom::Train,
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
            dataset: DatasetName::Mnist,
            validation: 4,
            split_seed: 3,
            input_scale: 1.0,
            dir: Some(dir.path().to_path_buf()),
            validation_from: ValidationFrom::Test,
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
