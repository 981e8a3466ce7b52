//! Image folders in torchvision's `ImageFolder` layout: `train/<class>/*.png|jpg`,
//! `test/<class>/…` and, optionally, `val/<class>/…`. Classes are the class folders sorted by
//! name (label 0 is the first); within a class, images are taken in the order of
//! torchvision's `make_dataset` (folders, then file names, sorted), so the labels and order
//! are the ones PyTorch's `ImageFolder` gives.
//!
//! Images are decoded with the `image` crate (PNG and JPEG only). Every image must have the
//! size of the first; 8-bit greyscale images give one channel, and when any image has colour
//! every image gives three (RGB; an alpha channel is dropped, a grey image repeated, as
//! PIL's `convert("RGB")`). Headers are read first (sizes, colour, the memory needed), then
//! the images are decoded in parallel into one buffer.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use image::{ColorType, ImageDecoder, ImageReader};
use rayon::prelude::*;

use super::raw::{self, Part, Pixels, RawData};

/// Extensions torchvision's `ImageFolder` takes as images; dc-search decodes the first three.
const READ: [&str; 3] = ["png", "jpg", "jpeg"];
const OTHER_IMAGES: [&str; 6] = ["ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// Whether `path` is a folder of the `ImageFolder` layout (rather than a file).
pub fn is_folder(path: &Path) -> bool {
    path.is_dir()
}

/// Reads the data set in folder `root`.
pub fn read(root: &Path) -> Result<RawData> {
    let src = root.display().to_string();
    let train_dir = root.join("train");
    let test_dir = root.join("test");
    for d in [&train_dir, &test_dir] {
        ensure!(
            d.is_dir(),
            "{src} has no folder {}: an image folder holds train/<class>/*.png and \
             test/<class>/*.png (and optionally val/<class>/…)",
            d.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    let classes = class_folders(&train_dir)?;
    ensure!(
        !classes.is_empty(),
        "{}: no class folders; put each class's images in train/<class>/",
        train_dir.display()
    );
    let val_dir = root.join("val");
    let mut parts = vec![("train", train_dir), ("test", test_dir)];
    if val_dir.is_dir() {
        parts.push(("val", val_dir));
    }
    for (_, dir) in &parts {
        let these = class_folders(dir)?;
        if let Some(c) = classes.iter().find(|c| !these.contains(c)) {
            bail!(
                "{}: no class folder {c:?} (train/ has it): give every part the same classes",
                dir.display()
            );
        }
        if let Some(c) = these.iter().find(|c| !classes.contains(c)) {
            bail!(
                "{}: class folder {c:?} is not in train/: give every part the same classes",
                dir.display()
            );
        }
    }
    let mut listed = Vec::new();
    for (name, dir) in &parts {
        let mut files = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let found = images_in(&dir.join(class))?;
            ensure!(
                !found.is_empty(),
                "{}: class folder {class:?} holds no PNG or JPEG image",
                dir.display()
            );
            files.extend(found.into_iter().map(|f| (f, label as i64)));
        }
        listed.push((*name, files));
    }
    // Headers: one size, the colour, the memory.
    let heads: Vec<(PathBuf, (u32, u32), bool)> = listed
        .iter()
        .flat_map(|(_, f)| f.iter())
        .collect::<Vec<_>>()
        .par_iter()
        .map(|(p, _)| head(p).map(|(size, colour)| (p.clone(), size, colour)))
        .collect::<Result<_>>()?;
    let (first, size, _) = &heads[0];
    if let Some((p, s, _)) = heads.iter().find(|(_, s, _)| s != size) {
        bail!(
            "image {} is {}×{} but {} is {}×{}: give images of one size",
            p.display(),
            s.0,
            s.1,
            first.display(),
            size.0,
            size.1
        );
    }
    let channels = if heads.iter().any(|(_, _, c)| *c) {
        3
    } else {
        1
    };
    let shape = [channels, size.1 as usize, size.0 as usize];
    let len: usize = shape.iter().product();
    raw::check_memory(&src, (heads.len() as u64).saturating_mul(len as u64), 1)?;
    let mut decoded = Vec::new();
    for (name, files) in listed {
        let mut pixels = vec![0u8; files.len() * len];
        pixels
            .par_chunks_mut(len)
            .zip(files.par_iter())
            .try_for_each(|(out, (p, _))| decode(p, shape, out))?;
        let part = Part {
            pixels: Pixels::U8(pixels),
            shape,
            labels: files.iter().map(|(_, l)| *l).collect(),
        };
        decoded.push((name, part));
    }
    let mut take = |n: &str| {
        decoded
            .iter()
            .position(|(m, _)| *m == n)
            .map(|i| decoded.remove(i).1)
    };
    let data = RawData {
        train: take("train").expect("listed"),
        test: take("test").expect("listed"),
        valid: take("val"),
    };
    data.check(&src)?;
    Ok(data)
}

/// The class folders of `dir`, sorted by name.
fn class_folders(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in
        std::fs::read_dir(dir).with_context(|| format!("cannot read folder {}", dir.display()))?
    {
        let e = e.with_context(|| format!("cannot read folder {}", dir.display()))?;
        if e.path().is_dir() {
            let name = e.file_name().into_string().map_err(|n| {
                anyhow!(
                    "{}: class folder {n:?} is not UTF-8; rename it",
                    dir.display()
                )
            })?;
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// The images under a class folder, in torchvision's order: folders (the class folder and
/// those below it) sorted by path, each one's files by name; files that are not images are
/// skipped, images other than PNG and JPEG refused.
fn images_in(class: &Path) -> Result<Vec<PathBuf>> {
    let mut folders = vec![class.to_path_buf()];
    let mut i = 0;
    while i < folders.len() {
        let mut subs = Vec::new();
        for e in std::fs::read_dir(&folders[i])
            .with_context(|| format!("cannot read folder {}", folders[i].display()))?
        {
            let p = e
                .with_context(|| format!("cannot read folder {}", folders[i].display()))?
                .path();
            if p.is_dir() {
                subs.push(p);
            }
        }
        folders.extend(subs);
        i += 1;
    }
    folders.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    let mut out = Vec::new();
    for f in folders {
        let mut files = Vec::new();
        for e in
            std::fs::read_dir(&f).with_context(|| format!("cannot read folder {}", f.display()))?
        {
            let p = e
                .with_context(|| format!("cannot read folder {}", f.display()))?
                .path();
            if p.is_dir() {
                continue;
            }
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if READ.contains(&ext.as_str()) {
                files.push(p);
            } else if OTHER_IMAGES.contains(&ext.as_str()) {
                bail!(
                    "image {} is .{ext}: dc-search reads PNG and JPEG images; convert it",
                    p.display()
                );
            }
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        out.extend(files);
    }
    Ok(out)
}

fn unreadable(p: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("cannot read image {}: {e}", p.display())
}

fn reader(p: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>> {
    crate::paths::check_regular(p, "image")?;
    ImageReader::open(p)
        .map_err(|e| unreadable(p, e))?
        .with_guessed_format()
        .map_err(|e| unreadable(p, e))
}

/// The size (width, height) of the image at `p` and whether it has colour.
fn head(p: &Path) -> Result<((u32, u32), bool)> {
    let d = reader(p)?.into_decoder().map_err(|e| unreadable(p, e))?;
    let colour = match d.color_type() {
        ColorType::L8 | ColorType::La8 => false,
        ColorType::Rgb8 | ColorType::Rgba8 => true,
        other => bail!(
            "image {} is {other:?}: dc-search reads 8-bit grey and colour images; save it with 8 bits per channel",
            p.display()
        ),
    };
    Ok((d.dimensions(), colour))
}

/// Decodes the image at `p` into `out` as `shape` (C×H×W, C = 1 grey or 3 RGB).
fn decode(p: &Path, [c, h, w]: [usize; 3], out: &mut [u8]) -> Result<()> {
    let img = reader(p)?.decode().map_err(|e| unreadable(p, e))?;
    ensure!(
        img.width() as usize == w && img.height() as usize == h,
        "image {} is {}×{}, not {w}×{h} as the others: give images of one size",
        p.display(),
        img.width(),
        img.height()
    );
    if c == 1 {
        out.copy_from_slice(img.to_luma8().as_raw());
    } else {
        let rgb = img.to_rgb8();
        out.copy_from_slice(&raw::channels_first(rgb.as_raw(), [3, h, w]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, w: u32, h: u32, v: u8, colour: bool) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if colour {
            image::RgbImage::from_fn(w, h, |x, _| image::Rgb([v, x as u8, 7]))
                .save(path)
                .unwrap();
        } else {
            image::GrayImage::from_pixel(w, h, image::Luma([v]))
                .save(path)
                .unwrap();
        }
    }

    #[test]
    fn classes_sorted_by_name_and_images_by_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        png(&r.join("train/b/2.png"), 2, 1, 20, false);
        png(&r.join("train/b/1.png"), 2, 1, 10, false);
        png(&r.join("train/a/z.png"), 2, 1, 30, false);
        png(&r.join("test/a/0.png"), 2, 1, 40, false);
        png(&r.join("test/b/0.png"), 2, 1, 50, false);
        std::fs::write(r.join("train/a/notes.txt"), "not an image").unwrap();
        let d = read(r).unwrap();
        assert_eq!(d.train.shape, [1, 1, 2]);
        assert_eq!(d.train.labels, vec![0, 1, 1]);
        assert_eq!(d.train.pixels, Pixels::U8(vec![30, 30, 10, 10, 20, 20]));
        assert_eq!(d.test.labels, vec![0, 1]);
        assert!(d.valid.is_none());
        // one colour image makes every image RGB, channels first
        png(&r.join("test/b/1.png"), 2, 1, 60, true);
        let d = read(r).unwrap();
        assert_eq!(d.train.shape, [3, 1, 2]);
        assert_eq!(
            d.test.pixels,
            Pixels::U8(
                [[40u8; 6], [50; 6]]
                    .concat()
                    .into_iter()
                    .chain([60, 60, 0, 1, 7, 7])
                    .collect()
            )
        );
    }

    #[test]
    fn bad_folders_get_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let e = |r: &Path| format!("{:#}", read(r).unwrap_err());
        assert!(e(r).contains("no folder train"));
        png(&r.join("train/a/0.png"), 2, 2, 1, false);
        png(&r.join("test/a/0.png"), 2, 2, 1, false);
        std::fs::create_dir_all(r.join("train/b")).unwrap();
        assert!(e(r).contains("no class folder \"b\""));
        std::fs::create_dir_all(r.join("test/b")).unwrap();
        assert!(e(r).contains("\"b\" holds no PNG or JPEG image"));
        png(&r.join("train/b/0.png"), 3, 2, 1, false);
        png(&r.join("test/b/0.png"), 2, 2, 1, false);
        assert!(e(r).contains("is 3×2 but") && e(r).contains("images of one size"));
        std::fs::write(r.join("train/b/0.png"), b"not a png").unwrap();
        assert!(e(r).contains("cannot read image"));
        std::fs::write(r.join("train/b/0.bmp"), b"BM").unwrap();
        assert!(e(r).contains("reads PNG and JPEG"));
    }
}
