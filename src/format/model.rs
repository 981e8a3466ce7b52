//! The in-memory compressed model ([`CompressedModel`], [`Layer`]) that the
//! `.dcz` container stores, its limits, and its validation ([`ModelError`]).

use thiserror::Error;

/// Longest model, dataset or layer name, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Most layers in one file.
pub const MAX_LAYERS: usize = 4096;
/// Highest rank of a weight or input shape.
pub const MAX_RANK: usize = 8;
/// Largest dense size (product of a weight shape); positions are `u32`.
pub const MAX_DENSE_LEN: u64 = u32::MAX as u64;
/// Default cap on the dense weights of all layers together ([`CompressedModel::validate`]);
/// [`CompressedModel::validate_with`] and `decode_with_limit` take another.
pub const MAX_TOTAL_DENSE: u64 = 1 << 30;
/// Largest magnitude of the input normalisation's scale and shift: larger values turn
/// pixel values into infinities and the logits into NaN.
pub const MAX_INPUT_NORM: f32 = 1.0e6;
/// Widest weight index (the codebook holds at most 2^16 centroids).
pub const MAX_BITS: u8 = 16;
/// Largest finite f16 magnitude.
const F16_MAX: f32 = 65_504.0;

/// A pruned, weight-shared model as stored in a `.dcz` file.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressedModel {
    /// Zoo model name, e.g. `"lenet"`.
    pub model: String,
    /// Dataset, e.g. `"mnist"`.
    pub dataset: String,
    /// Input shape without the batch dimension, e.g. `[1, 28, 28]`.
    pub input_shape: Vec<u32>,
    /// Input normalisation `x * input_scale + input_shift`.
    pub input_scale: f32,
    /// See `input_scale`.
    pub input_shift: f32,
    /// Layers in file order.
    pub layers: Vec<Layer>,
    /// The TorchScript config the file was made from (version 4), if any.
    pub origin: Option<Origin>,
}

/// The TorchScript config a file was made from: its file name and the SHA-256 of its bytes,
/// so that `eval FILE.dcz` can say which config to pass and notice a different one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The config's file name without its folder, e.g. `"tiny-cnn.toml"`.
    pub config: String,
    /// SHA-256 of the config file's bytes.
    pub sha256: [u8; 32],
}

/// Kind of a layer (stored as a `u8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// Convolution (`0`).
    Conv,
    /// Fully connected (`1`).
    Linear,
}

impl LayerKind {
    /// The stored byte.
    pub fn to_u8(self) -> u8 {
        match self {
            LayerKind::Conv => 0,
            LayerKind::Linear => 1,
        }
    }
    /// Parses the stored byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(LayerKind::Conv),
            1 => Some(LayerKind::Linear),
            _ => None,
        }
    }
}

/// Precision of a stored bias (stored as a `u8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BiasPrecision {
    /// IEEE binary32, bit-exact (`0`).
    F32,
    /// IEEE binary16 (`1`): values are rounded to nearest-even on encode and
    /// decode to that rounded value, widened to f32.
    F16,
    /// Signed 8-bit integers times one power of two per layer (`4`, version 2): the
    /// smallest `2^e` with every |bias| ≤ 127 · 2^e; values are rounded to the nearest
    /// multiple of it on encode ([`BiasPrecision::round_all`]).
    I8,
}

/// Exponent range of [`BiasPrecision::I8`]'s scale `2^e` (normal f32 powers of two, with
/// 127 · 2^e finite).
pub const I8_EXP_MIN: i32 = -126;
pub const I8_EXP_MAX: i32 = 100;

impl BiasPrecision {
    /// The stored byte.
    pub fn to_u8(self) -> u8 {
        match self {
            BiasPrecision::F32 => 0,
            BiasPrecision::F16 => 1,
            BiasPrecision::I8 => 4,
        }
    }
    /// Parses the stored byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(BiasPrecision::F32),
            1 => Some(BiasPrecision::F16),
            4 => Some(BiasPrecision::I8),
            _ => None,
        }
    }
    /// Bytes per stored value.
    pub fn width(self) -> usize {
        match self {
            BiasPrecision::F32 => 4,
            BiasPrecision::F16 => 2,
            BiasPrecision::I8 => 1,
        }
    }
    /// The value `decode` returns for `x` stored at this precision, for the precisions
    /// that round each value alone (f32, f16); i8's rounding depends on the whole layer
    /// ([`BiasPrecision::round_all`]).
    pub fn round(self, x: f32) -> f32 {
        match self {
            BiasPrecision::F32 | BiasPrecision::I8 => x,
            BiasPrecision::F16 => half::f16::from_f32(x).to_f32(),
        }
    }
    /// The values `decode` returns for a layer's biases `b` stored at this precision.
    /// Idempotent: rounding rounded values changes nothing.
    pub fn round_all(self, b: &[f32]) -> Vec<f32> {
        match self {
            BiasPrecision::I8 => {
                let e = i8_exponent(b);
                b.iter()
                    .map(|&x| f32::from(i8_code(x, e)) * pow2(e))
                    .collect()
            }
            _ => b.iter().map(|&x| self.round(x)).collect(),
        }
    }
}

/// `2^e` for `e` in the normal range.
pub fn pow2(e: i32) -> f32 {
    f32::from_bits(((e.clamp(I8_EXP_MIN, I8_EXP_MAX) + 127) as u32) << 23)
}

/// The i8 scale's exponent for biases `b`: the smallest `e` with max |b| ≤ 127 · 2^e
/// (clamped to the normal range; `I8_EXP_MIN` when all are zero).
pub fn i8_exponent(b: &[f32]) -> i32 {
    let max = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let mut e = I8_EXP_MIN;
    while e < I8_EXP_MAX && max > 127.0 * pow2(e) {
        e += 1;
    }
    e
}

/// The stored code of `x` at scale `2^e` (nearest, clamped to ±127).
pub fn i8_code(x: f32, e: i32) -> i8 {
    (x / pow2(e)).round().clamp(-127.0, 127.0) as i8
}

/// One pruned, weight-shared layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Layer name, e.g. `"conv1"`.
    pub name: String,
    /// Conv or Linear.
    pub kind: LayerKind,
    /// Weight shape, e.g. `[20, 1, 5, 5]` or `[500, 800]`.
    pub shape: Vec<u32>,
    /// Weight index width: the codebook holds at most `2^bits` centroids.
    pub bits: u8,
    /// Centroids (non-empty when there are nonzeros).
    pub codebook: Vec<f32>,
    /// Flat (row-major) indices of the nonzeros, strictly increasing.
    pub positions: Vec<u32>,
    /// Codebook index of each nonzero (same length as `positions`).
    pub clusters: Vec<u32>,
    /// Bias, possibly empty.
    pub bias: Vec<f32>,
    /// Precision the bias is stored in.
    pub bias_precision: BiasPrecision,
}

impl Layer {
    /// Product of the shape, if it does not overflow `u64`.
    pub fn dense_len(&self) -> Option<u64> {
        dense_len(&self.shape)
    }

    /// The dense weights (row-major, length = product of the shape): zero
    /// everywhere except `w[positions[i]] = codebook[clusters[i]]`. Entries
    /// with an out-of-range position or cluster (invalid models only) are
    /// skipped. Allocates the full dense size: validate untrusted models
    /// first.
    pub fn dense_weights(&self) -> Vec<f32> {
        let n = self.dense_len().unwrap_or(0).min(MAX_DENSE_LEN) as usize;
        let mut w = vec![0.0f32; n];
        for (&p, &c) in self.positions.iter().zip(&self.clusters) {
            if let (Some(slot), Some(&v)) = (w.get_mut(p as usize), self.codebook.get(c as usize)) {
                *slot = v;
            }
        }
        w
    }
}

/// Product of `shape` in `u64`, `None` on overflow.
pub fn dense_len(shape: &[u32]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
}

/// A problem with one layer (see [`ModelError::Layer`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayerProblem {
    #[error("name is {len} bytes long, the limit is {MAX_NAME_LEN}")]
    NameTooLong { len: usize },
    #[error("shape rank {rank} outside 1..={MAX_RANK}")]
    Rank { rank: usize },
    #[error("shape dimension {dim} is zero")]
    ZeroDim { dim: usize },
    #[error("shape product exceeds {MAX_DENSE_LEN}")]
    ShapeTooLarge,
    #[error("bits = {bits} outside 1..={MAX_BITS}")]
    BitsOutOfRange { bits: u8 },
    #[error("codebook has {len} entries, more than 2^bits = {max}")]
    CodebookTooLong { len: usize, max: u64 },
    #[error("codebook is empty but the layer has nonzeros")]
    EmptyCodebook,
    #[error("{positions} positions but {clusters} clusters")]
    LengthMismatch { positions: usize, clusters: usize },
    #[error("position #{index} is not greater than the previous one")]
    NotIncreasing { index: usize },
    #[error("position #{index} = {position} is not below the dense size {dense_len}")]
    PositionOutOfRange {
        index: usize,
        position: u32,
        dense_len: u64,
    },
    #[error("cluster #{index} = {cluster} is not below the codebook length {codebook_len}")]
    ClusterOutOfRange {
        index: usize,
        cluster: u32,
        codebook_len: usize,
    },
    #[error("codebook[{index}] is not finite")]
    NonFiniteCodebook { index: usize },
    #[error("bias[{index}] is not finite")]
    NonFiniteBias { index: usize },
    #[error("bias[{index}] overflows f16")]
    BiasOverflowsF16 { index: usize },
    #[error("bias[{index}] is too large for i8 biases")]
    BiasOverflowsI8 { index: usize },
    #[error("bias has {len} entries, more than {MAX_DENSE_LEN}")]
    BiasTooLong { len: usize },
    #[error("bias has {len} entries; it must be empty or hold one per output ({outputs})")]
    BiasLength { len: usize, outputs: u32 },
}

/// Why a [`CompressedModel`] cannot be stored (or a decoded one is invalid).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    /// Model or dataset name longer than [`MAX_NAME_LEN`].
    #[error("{what} is {len} bytes long, the limit is {MAX_NAME_LEN}")]
    NameTooLong { what: &'static str, len: usize },
    /// More than [`MAX_LAYERS`] layers.
    #[error("{count} layers, the limit is {MAX_LAYERS}")]
    TooManyLayers { count: usize },
    /// Input shape rank above [`MAX_RANK`].
    #[error("input shape rank {rank} above {MAX_RANK}")]
    InputRank { rank: usize },
    /// Input normalisation not finite.
    #[error("{what} is not finite")]
    NonFiniteInput { what: &'static str },
    /// Input normalisation that turns inputs into infinities or zeros.
    #[error("{what} = {value} is outside the usable range (scale in (0, {MAX_INPUT_NORM}], |shift| ≤ {MAX_INPUT_NORM})")]
    InputNorm { what: &'static str, value: String },
    /// Two layers with one name.
    #[error("layers {first} and {second} are both named {name:?}")]
    DuplicateName {
        name: String,
        first: usize,
        second: usize,
    },
    /// More dense weights in all than the cap.
    #[error("the layers hold {total} weights in all, more than the limit {limit}")]
    TooLarge { total: u64, limit: u64 },
    /// A layer is invalid.
    #[error("layer {layer} ({name}): {problem}")]
    Layer {
        layer: usize,
        name: String,
        problem: LayerProblem,
    },
}

impl CompressedModel {
    /// Checks every invariant the `.dcz` format relies on, with at most
    /// [`MAX_TOTAL_DENSE`] dense weights in all.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.validate_with(MAX_TOTAL_DENSE)
    }

    /// [`validate`](Self::validate) with at most `max_total` dense weights in all.
    pub fn validate_with(&self, max_total: u64) -> Result<(), ModelError> {
        let origin = self.origin.as_ref().map(|o| &o.config);
        let names = [
            ("model name", Some(&self.model)),
            ("dataset name", Some(&self.dataset)),
        ];
        for (what, s) in names.into_iter().chain([("config name", origin)]) {
            let Some(s) = s else { continue };
            if s.len() > MAX_NAME_LEN {
                return Err(ModelError::NameTooLong { what, len: s.len() });
            }
        }
        if self.input_shape.len() > MAX_RANK {
            return Err(ModelError::InputRank {
                rank: self.input_shape.len(),
            });
        }
        for (what, v) in [
            ("input_scale", self.input_scale),
            ("input_shift", self.input_shift),
        ] {
            if !v.is_finite() {
                return Err(ModelError::NonFiniteInput { what });
            }
        }
        let scale = self.input_scale;
        if !(scale > 0.0 && scale <= MAX_INPUT_NORM) {
            return Err(ModelError::InputNorm {
                what: "input_scale",
                value: scale.to_string(),
            });
        }
        if self.input_shift.abs() > MAX_INPUT_NORM {
            return Err(ModelError::InputNorm {
                what: "input_shift",
                value: self.input_shift.to_string(),
            });
        }
        if self.layers.len() > MAX_LAYERS {
            return Err(ModelError::TooManyLayers {
                count: self.layers.len(),
            });
        }
        let mut total = 0u64;
        let mut names = std::collections::HashMap::new();
        for (i, l) in self.layers.iter().enumerate() {
            l.validate().map_err(|problem| ModelError::Layer {
                layer: i,
                name: l.name.clone(),
                problem,
            })?;
            total = total.saturating_add(l.dense_len().unwrap_or(u64::MAX));
            if total > max_total {
                return Err(ModelError::TooLarge {
                    total,
                    limit: max_total,
                });
            }
            if let Some(first) = names.insert(l.name.as_str(), i) {
                return Err(ModelError::DuplicateName {
                    name: l.name.clone(),
                    first,
                    second: i,
                });
            }
        }
        Ok(())
    }
}

impl Layer {
    /// Checks this layer's invariants.
    pub fn validate(&self) -> Result<(), LayerProblem> {
        use LayerProblem as P;
        if self.name.len() > MAX_NAME_LEN {
            return Err(P::NameTooLong {
                len: self.name.len(),
            });
        }
        if self.shape.is_empty() || self.shape.len() > MAX_RANK {
            return Err(P::Rank {
                rank: self.shape.len(),
            });
        }
        if let Some(dim) = self.shape.iter().position(|&d| d == 0) {
            return Err(P::ZeroDim { dim });
        }
        let dense_len = match self.dense_len() {
            Some(n) if n <= MAX_DENSE_LEN => n,
            _ => return Err(P::ShapeTooLarge),
        };
        if !(1..=MAX_BITS).contains(&self.bits) {
            return Err(P::BitsOutOfRange { bits: self.bits });
        }
        let max = 1u64 << self.bits;
        if self.codebook.len() as u64 > max {
            return Err(P::CodebookTooLong {
                len: self.codebook.len(),
                max,
            });
        }
        if let Some(index) = self.codebook.iter().position(|v| !v.is_finite()) {
            return Err(P::NonFiniteCodebook { index });
        }
        if self.positions.len() != self.clusters.len() {
            return Err(P::LengthMismatch {
                positions: self.positions.len(),
                clusters: self.clusters.len(),
            });
        }
        if !self.positions.is_empty() && self.codebook.is_empty() {
            return Err(P::EmptyCodebook);
        }
        let mut prev: Option<u32> = None;
        for (index, &position) in self.positions.iter().enumerate() {
            if prev.is_some_and(|p| position <= p) {
                return Err(P::NotIncreasing { index });
            }
            if u64::from(position) >= dense_len {
                return Err(P::PositionOutOfRange {
                    index,
                    position,
                    dense_len,
                });
            }
            prev = Some(position);
        }
        if let Some(index) = self
            .clusters
            .iter()
            .position(|&c| c as usize >= self.codebook.len())
        {
            return Err(P::ClusterOutOfRange {
                index,
                cluster: self.clusters[index],
                codebook_len: self.codebook.len(),
            });
        }
        if self.bias.len() as u64 > MAX_DENSE_LEN {
            return Err(P::BiasTooLong {
                len: self.bias.len(),
            });
        }
        if !self.bias.is_empty() && self.bias.len() as u64 != u64::from(self.shape[0]) {
            return Err(P::BiasLength {
                len: self.bias.len(),
                outputs: self.shape[0],
            });
        }
        for (index, &b) in self.bias.iter().enumerate() {
            if !b.is_finite() {
                return Err(P::NonFiniteBias { index });
            }
            if self.bias_precision == BiasPrecision::I8 && b.abs() > 127.0 * pow2(I8_EXP_MAX) {
                return Err(P::BiasOverflowsI8 { index });
            }
            if self.bias_precision == BiasPrecision::F16 && b.abs() > F16_MAX {
                // Values just above 65504 still round down to it.
                if !self.bias_precision.round(b).is_finite() {
                    return Err(P::BiasOverflowsF16 { index });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> Layer {
        Layer {
            name: "fc".into(),
            kind: LayerKind::Linear,
            shape: vec![2, 3],
            bits: 2,
            codebook: vec![-0.5, 0.25],
            positions: vec![0, 4, 5],
            clusters: vec![1, 0, 1],
            bias: vec![0.1, 0.2],
            bias_precision: BiasPrecision::F32,
        }
    }

    #[test]
    fn dense_weights_by_hand() {
        assert_eq!(
            layer().dense_weights(),
            vec![0.25, 0.0, 0.0, 0.0, -0.5, 0.25]
        );
    }

    #[test]
    fn validation_catches_each_problem() {
        use LayerProblem as P;
        let check = |f: &dyn Fn(&mut Layer), want: P| {
            let mut l = layer();
            f(&mut l);
            assert_eq!(l.validate(), Err(want));
        };
        assert_eq!(layer().validate(), Ok(()));
        check(
            &|l| l.positions = vec![0, 4, 4],
            P::NotIncreasing { index: 2 },
        );
        check(
            &|l| l.positions = vec![0, 4, 6],
            P::PositionOutOfRange {
                index: 2,
                position: 6,
                dense_len: 6,
            },
        );
        check(
            &|l| l.clusters = vec![0, 2, 0],
            P::ClusterOutOfRange {
                index: 1,
                cluster: 2,
                codebook_len: 2,
            },
        );
        check(
            &|l| l.codebook = vec![0.0; 5],
            P::CodebookTooLong { len: 5, max: 4 },
        );
        check(&|l| l.bits = 0, P::BitsOutOfRange { bits: 0 });
        check(&|l| l.bits = 17, P::BitsOutOfRange { bits: 17 });
        check(&|l| l.shape = vec![65_536, 65_536], P::ShapeTooLarge);
        check(&|l| l.shape = vec![u32::MAX; 3], P::ShapeTooLarge);
        check(&|l| l.shape = vec![], P::Rank { rank: 0 });
        check(&|l| l.shape = vec![1; 9], P::Rank { rank: 9 });
        check(&|l| l.shape = vec![3, 0], P::ZeroDim { dim: 1 });
        check(
            &|l| {
                l.clusters.pop();
            },
            P::LengthMismatch {
                positions: 3,
                clusters: 2,
            },
        );
        check(&|l| l.codebook.clear(), P::EmptyCodebook);
        check(
            &|l| l.codebook[1] = f32::NAN,
            P::NonFiniteCodebook { index: 1 },
        );
        check(
            &|l| l.bias[0] = f32::INFINITY,
            P::NonFiniteBias { index: 0 },
        );
        check(
            &|l| {
                l.bias_precision = BiasPrecision::F16;
                l.bias[1] = 70_000.0;
            },
            P::BiasOverflowsF16 { index: 1 },
        );
        check(&|l| l.name = "x".repeat(256), P::NameTooLong { len: 256 });
        check(
            &|l| l.bias = vec![0.5; 5],
            P::BiasLength { len: 5, outputs: 2 },
        );
        // Empty layers are fine, also with an empty codebook.
        let mut l = layer();
        l.positions.clear();
        l.clusters.clear();
        l.codebook.clear();
        assert_eq!(l.validate(), Ok(()));
    }

    #[test]
    fn model_validation() {
        let m = CompressedModel {
            model: "m".into(),
            dataset: "d".into(),
            input_shape: vec![1, 2],
            input_scale: 1.0,
            input_shift: 0.0,
            layers: vec![layer()],
            origin: None,
        };
        assert_eq!(m.validate(), Ok(()));
        let mut bad = m.clone();
        bad.layers[0].bits = 0;
        assert!(matches!(
            bad.validate(),
            Err(ModelError::Layer { layer: 0, .. })
        ));
        let mut bad = m.clone();
        bad.input_scale = f32::NAN;
        assert!(bad.validate().is_err());
        let mut bad = m.clone();
        bad.input_shape = vec![1; 9];
        assert_eq!(bad.validate(), Err(ModelError::InputRank { rank: 9 }));
        for scale in [0.0, -1.0, 3.0e38] {
            let mut bad = m.clone();
            bad.input_scale = scale;
            assert!(
                matches!(bad.validate(), Err(ModelError::InputNorm { .. })),
                "{scale}"
            );
        }
        let mut bad = m.clone();
        bad.layers.push(layer());
        assert_eq!(
            bad.validate(),
            Err(ModelError::DuplicateName {
                name: "fc".into(),
                first: 0,
                second: 1
            })
        );
        bad.layers[1].name = "fc2".into();
        assert_eq!(bad.validate(), Ok(()));
        assert_eq!(
            bad.validate_with(11),
            Err(ModelError::TooLarge {
                total: 12,
                limit: 11
            })
        );
    }

    #[test]
    fn f16_rounding() {
        assert_eq!(
            BiasPrecision::F16.round(0.1),
            half::f16::from_bits(0x2E66).to_f32()
        );
        assert_eq!(BiasPrecision::F32.round(0.1), 0.1);
        assert_eq!(BiasPrecision::F16.round(65_519.0), 65_504.0);
    }

    #[test]
    fn i8_rounding_takes_the_smallest_power_of_two_and_is_idempotent() {
        // max 0.5 ≤ 127 · 2^-7 = 0.992, > 127 · 2^-8 = 0.496
        let b = [0.5, -0.1, 0.0, 0.0123];
        assert_eq!(i8_exponent(&b), -7);
        let r = BiasPrecision::I8.round_all(&b);
        assert_eq!(r, vec![64.0 / 128.0, -13.0 / 128.0, 0.0, 2.0 / 128.0]);
        assert_eq!(BiasPrecision::I8.round_all(&r), r);
        // all zeros, and a layer whose largest value shrinks by rounding
        assert_eq!(BiasPrecision::I8.round_all(&[0.0, -0.0]), vec![0.0, 0.0]);
        for scale in [1e-30f32, 1e-3, 0.7, 3.0, 1e20] {
            let b: Vec<f32> = (0..50)
                .map(|i| scale * ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let r = BiasPrecision::I8.round_all(&b);
            assert_eq!(BiasPrecision::I8.round_all(&r), r, "scale {scale}");
            let e = i8_exponent(&b);
            for (x, y) in b.iter().zip(&r) {
                assert!((x - y).abs() <= 0.5 * pow2(e), "{x} → {y} at 2^{e}");
            }
        }
    }
}
