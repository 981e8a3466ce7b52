//! Data augmentation of training batches: random whole-pixel shifts (torchvision's random
//! crop with padding), rotations and scalings, and horizontal flips, each image its own,
//! drawn from torch's generator. Training asks for it through its recipe's [`Augment`]
//! settings. What moves in from outside the image is 0 in the normalised inputs (black for
//! inputs only scaled; with `[data] mean/std`, the mean colour).

use tch::{Kind, Tensor};

/// How training batches are augmented (a recipe's `augment_*` settings; all 0 = none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Whole-pixel shifts in −shift..=shift per axis.
    pub shift: i64,
    /// Rotations in ±rotate degrees.
    pub rotate: f64,
    /// Scale factors in [1 − scale, 1 + scale].
    pub scale: f64,
    /// Each image mirrored left–right with probability ½.
    pub flip: bool,
}

impl Augment {
    /// Augments a training batch `[n, c, h, w]`: whole-pixel shifts alone
    /// ([`shift_augment`]), or with random rotation and scaling ([`affine_augment`]).
    /// A shift of ±s is torchvision's `RandomCrop(size, padding=s)`; then, with `flip`,
    /// [`flip_augment`].
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let y = if self.rotate == 0.0 && self.scale == 0.0 {
            shift_augment(x, self.shift)
        } else {
            affine_augment(x, self.shift, self.rotate, self.scale)
        };
        if self.flip {
            flip_augment(&y)
        } else {
            y
        }
    }
}

/// Mirrors each image of `[n, c, h, w]` left–right with probability ½ (torchvision's
/// `RandomHorizontalFlip`), from torch's generator.
pub fn flip_augment(x: &Tensor) -> Tensor {
    let n = x.size()[0];
    let flip = Tensor::rand([n], (Kind::Float, x.device()))
        .lt(0.5)
        .view([n, 1, 1, 1]);
    x.flip([3]).where_self(&flip, x)
}

/// Moves each image of `[n, c, h, w]` by its own random affine map: a whole-pixel shift in
/// −s..=s per axis, a rotation in ±`degrees` and a scale factor in [1 − `scale`, 1 + `scale`]
/// about the centre (bilinear, zeros outside), from torch's generator.
pub fn affine_augment(x: &Tensor, s: i64, degrees: f64, scale: f64) -> Tensor {
    let n = x.size()[0];
    let opts = (Kind::Float, x.device());
    let (tx, ty) = random_translations(x, s);
    let angle = (Tensor::rand([n], opts) * 2.0 - 1.0) * degrees.to_radians();
    let factor = (Tensor::rand([n], opts) * 2.0 - 1.0) * scale + 1.0;
    // affine_grid maps output to input coordinates: the inverse of the image's motion.
    let cos = angle.cos() / &factor;
    let sin = angle.sin() / &factor;
    warp(x, [&cos, &(-&sin), &tx, &sin, &cos, &ty], 0)
}

/// Shifts each image of `[n, c, h, w]` by its own random offset in −s..=s pixels per axis
/// (exact whole-pixel moves, zeros shifted in), from torch's generator.
pub fn shift_augment(x: &Tensor, s: i64) -> Tensor {
    if s == 0 {
        return x.shallow_clone();
    }
    let n = x.size()[0];
    let opts = (Kind::Float, x.device());
    let (tx, ty) = random_translations(x, s);
    let one = Tensor::ones([n], opts);
    let zero = Tensor::zeros([n], opts);
    warp(x, [&one, &zero, &tx, &zero, &one, &ty], 1)
}

/// A random whole-pixel offset in −s..=s per image and axis of `[n, c, h, w]`, as
/// affine_grid translations (coordinates in [−1, 1]: one pixel is 2/size).
fn random_translations(x: &Tensor, s: i64) -> (Tensor, Tensor) {
    let size = x.size();
    let (n, h, w) = (size[0], size[2], size[3]);
    let d = Tensor::randint_low(-s, s + 1, [n, 2], (Kind::Int64, x.device())).to_kind(Kind::Float);
    (
        d.select(1, 0) * (2.0 / w as f64),
        d.select(1, 1) * (2.0 / h as f64),
    )
}

/// Resamples each image of `[n, c, h, w]` through its own affine map, whose 2×3 matrix
/// entries (each `[n]`, row by row) map output to input coordinates; `mode` 0 bilinear,
/// 1 nearest; zeros outside.
fn warp(x: &Tensor, theta: [&Tensor; 6], mode: i64) -> Tensor {
    let n = x.size()[0];
    let theta = Tensor::stack(&theta, 1).view([n, 2, 3]);
    let grid = Tensor::affine_grid_generator(&theta, x.size().as_slice(), false);
    x.grid_sampler(&grid, mode, 0, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_augment_keeps_shape_and_mass_and_varies_per_image() {
        tch::manual_seed(3);
        // a centred blob: rotation and mild scaling keep it inside the frame
        let mut v = vec![0f32; 2 * 28 * 28];
        for i in 0..2 {
            for r in 10..18 {
                for c in 12..16 {
                    v[i * 784 + r * 28 + c] = 1.0;
                }
            }
        }
        let x = Tensor::from_slice(&v).view([2, 1, 28, 28]);
        let y = affine_augment(&x, 0, 30.0, 0.1);
        assert_eq!(y.size(), vec![2, 1, 28, 28]);
        let ya = tensor_to_vec_f(&y.get(0));
        let yb = tensor_to_vec_f(&y.get(1));
        assert!(ya.iter().all(|p| (0.0..=1.0 + 1e-6).contains(p)));
        assert_ne!(ya, yb, "each image gets its own transform");
        assert_ne!(ya, v[..784].to_vec(), "the image moved");
        // bilinear resampling of a ±10 % scaled blob keeps its mass within (1 ± 0.1)² · ~
        let mass: f32 = ya.iter().sum();
        assert!((20.0..=45.0).contains(&mass), "mass {mass} (input 32)");
        // no rotation, no scaling, no shift: the identity
        let same = affine_augment(&x, 0, 0.0, 0.0);
        assert!(same.allclose(&x, 1e-6, 1e-6, false));
    }

    #[test]
    fn shift_augment_moves_whole_pixels() {
        tch::manual_seed(9);
        let x = Tensor::arange(2 * 36, (Kind::Float, tch::Device::Cpu)).view([2, 1, 6, 6]) + 1.0;
        let y = shift_augment(&x, 2);
        for i in 0..2 {
            let a = tensor_to_vec_f(&x.get(i));
            let b = tensor_to_vec_f(&y.get(i));
            // every output pixel is an input pixel of the same image or a zero shifted in
            assert!(b.iter().all(|v| *v == 0.0 || a.contains(v)), "{b:?}");
            // a shift by (dx, dy): find it and check the whole image
            let found = (-2i64..=2)
                .flat_map(|dx| (-2i64..=2).map(move |dy| (dx, dy)))
                .any(|(dx, dy)| {
                    (0..6i64).all(|r| {
                        (0..6i64).all(|c| {
                            let (sr, sc) = (r + dy, c + dx);
                            let want = if (0..6).contains(&sr) && (0..6).contains(&sc) {
                                a[(sr * 6 + sc) as usize]
                            } else {
                                0.0
                            };
                            b[(r * 6 + c) as usize] == want
                        })
                    })
                });
            assert!(found, "image {i} is a whole-pixel shift: {b:?}");
        }
    }

    #[test]
    fn flip_augment_mirrors_some_images_and_keeps_the_others() {
        tch::manual_seed(4);
        let x = Tensor::arange(64 * 6, (Kind::Float, tch::Device::Cpu)).view([64, 1, 2, 3]);
        let y = flip_augment(&x);
        let mut flipped = 0;
        for i in 0..64 {
            let (a, b) = (x.get(i), y.get(i));
            if b.equal(&a.flip([2])) {
                flipped += 1;
            } else {
                assert!(b.equal(&a), "image {i} is itself or its mirror");
            }
        }
        assert!((16..=48).contains(&flipped), "{flipped} of 64 flipped");
    }

    fn tensor_to_vec_f(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.contiguous().view([-1])).unwrap()
    }
}
