//! Caffe `.caffemodel` files: a `NetParameter` protobuf, read with hand-written prost
//! messages holding only the fields dc-search needs (layer names, types and parameter
//! blobs; every other field is skipped). Both layer forms are read: current `layer`
//! (`LayerParameter`, field 100) and the old `layers` (`V1LayerParameter`, field 2).
//! Blob 0 of a layer is its weight, blob 1 its bias; Caffe's weight layout
//! (`[out, in, kh, kw]`, `[out, in]`) and its C,H,W flattening before the first fully
//! connected layer are PyTorch's, so values are taken as they are.
//!
//! [`to_caffemodel`] writes the same messages (a net's weights as a caffemodel), used by
//! the tests to build fixtures.
//!
//! ## Reference
//! `src/caffe/proto/caffe.proto` of BVLC Caffe (messages `NetParameter`,
//! `LayerParameter`, `V1LayerParameter`, `BlobProto`, `BlobShape`).

use anyhow::{bail, ensure, Context, Result};
use prost::Message;

use crate::models::{Arch, LayerKind};
use crate::weights::HostTensors;

/// `NetParameter`: the whole net.
#[derive(Clone, PartialEq, Message)]
pub struct NetParameter {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Old (V1) layers.
    #[prost(message, repeated, tag = "2")]
    pub layers: Vec<V1LayerParameter>,
    /// Current layers.
    #[prost(message, repeated, tag = "100")]
    pub layer: Vec<LayerParameter>,
}

/// `LayerParameter` (current form).
#[derive(Clone, PartialEq, Message)]
pub struct LayerParameter {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// e.g. `"Convolution"`, `"InnerProduct"`.
    #[prost(string, optional, tag = "2")]
    pub r#type: Option<String>,
    #[prost(message, repeated, tag = "7")]
    pub blobs: Vec<BlobProto>,
}

/// `V1LayerParameter` (old form; `type` is an enum).
#[derive(Clone, PartialEq, Message)]
pub struct V1LayerParameter {
    #[prost(string, optional, tag = "4")]
    pub name: Option<String>,
    /// `V1LayerParameter.LayerType`: [`V1_CONVOLUTION`], [`V1_INNER_PRODUCT`], …
    #[prost(int32, optional, tag = "5")]
    pub r#type: Option<i32>,
    #[prost(message, repeated, tag = "6")]
    pub blobs: Vec<BlobProto>,
}

/// `V1LayerParameter.LayerType.CONVOLUTION`.
pub const V1_CONVOLUTION: i32 = 4;
/// `V1LayerParameter.LayerType.INNER_PRODUCT`.
pub const V1_INNER_PRODUCT: i32 = 14;

/// `BlobProto`: a tensor, shaped by `shape` or by the legacy 4-D num/channels/height/width.
#[derive(Clone, PartialEq, Message)]
pub struct BlobProto {
    #[prost(int32, optional, tag = "1")]
    pub num: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    pub channels: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    pub height: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub width: Option<i32>,
    #[prost(float, repeated, packed = "true", tag = "5")]
    pub data: Vec<f32>,
    #[prost(message, optional, tag = "7")]
    pub shape: Option<BlobShape>,
    #[prost(double, repeated, packed = "true", tag = "8")]
    pub double_data: Vec<f64>,
}

/// `BlobShape`.
#[derive(Clone, PartialEq, Message)]
pub struct BlobShape {
    #[prost(int64, repeated, packed = "true", tag = "1")]
    pub dim: Vec<i64>,
}

/// Which layer form [`to_caffemodel`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaffeForm {
    /// `layer` (field 100) with `BlobShape` shapes, as current Caffe writes.
    Layer,
    /// Old `layers` (field 2) with legacy 4-D num/channels/height/width shapes.
    V1,
}

/// One layer's name, type (for messages) and blobs, whichever form it came in.
struct CaffeLayer<'a> {
    name: &'a str,
    kind: String,
    blobs: &'a [BlobProto],
}

fn v1_type_name(t: Option<i32>) -> String {
    match t {
        Some(V1_CONVOLUTION) => "CONVOLUTION".into(),
        Some(V1_INNER_PRODUCT) => "INNER_PRODUCT".into(),
        Some(n) => format!("V1 type {n}"),
        None => "no type".into(),
    }
}

/// A blob's shape and values (doubles converted to f32).
fn blob_tensor(b: &BlobProto) -> Result<(Vec<i64>, Vec<f32>)> {
    let shape: Vec<i64> = match &b.shape {
        Some(s) => s.dim.clone(),
        None => [b.num, b.channels, b.height, b.width]
            .iter()
            .map(|d| d.unwrap_or(0) as i64)
            .collect(),
    };
    let values: Vec<f32> = if b.data.is_empty() && !b.double_data.is_empty() {
        b.double_data.iter().map(|&v| v as f32).collect()
    } else {
        b.data.clone()
    };
    let numel = shape
        .iter()
        .try_fold(1i64, |a, &d| if d < 0 { None } else { a.checked_mul(d) });
    ensure!(
        numel == Some(values.len() as i64),
        "shape {shape:?} needs {} values, the blob holds {} (a truncated or corrupt file?)",
        numel
            .map(|n| n.to_string())
            .unwrap_or_else(|| "an impossible number of".into()),
        values.len()
    );
    Ok((shape, values))
}

/// Decodes caffemodel bytes into tensors with PyTorch names (`fc1.weight` = blob 0 of
/// layer `fc1`, `fc1.bias` = blob 1); layers without blobs (data, pooling, ReLU …) are
/// skipped, blobs past the second ignored. Shapes are the file's, unchecked.
pub fn parse(bytes: &[u8]) -> Result<HostTensors> {
    let net = NetParameter::decode(bytes).context(
        "not a valid Caffe model (NetParameter protobuf); give a .caffemodel written by \
         Caffe's Net::ToProto, or a .safetensors state dict",
    )?;
    let layers: Vec<CaffeLayer> = if !net.layer.is_empty() {
        net.layer
            .iter()
            .map(|l| CaffeLayer {
                name: l.name.as_deref().unwrap_or(""),
                kind: l.r#type.clone().unwrap_or_else(|| "no type".into()),
                blobs: &l.blobs,
            })
            .collect()
    } else {
        net.layers
            .iter()
            .map(|l| CaffeLayer {
                name: l.name.as_deref().unwrap_or(""),
                kind: v1_type_name(l.r#type),
                blobs: &l.blobs,
            })
            .collect()
    };
    ensure!(
        layers.iter().any(|l| !l.blobs.is_empty()),
        "the Caffe net {:?} has no layer with weights ({} layers; an empty file, a prototxt-only \
         net, or the pre-2014 V0 format?); give a trained .caffemodel",
        net.name.as_deref().unwrap_or(""),
        layers.len()
    );
    let mut out = HostTensors::new();
    for l in layers.iter().filter(|l| !l.blobs.is_empty()) {
        for (i, suffix) in ["weight", "bias"].iter().enumerate() {
            let Some(b) = l.blobs.get(i) else { continue };
            let t = blob_tensor(b).with_context(|| {
                format!("Caffe layer {:?} ({}) blob {i} ({suffix})", l.name, l.kind)
            })?;
            let key = format!("{}.{suffix}", l.name);
            if out.insert(key, t).is_some() {
                bail!(
                    "two Caffe layers named {:?} carry weights; rename one so each layer maps to one \
                     model layer",
                    l.name
                );
            }
        }
    }
    Ok(out)
}

fn blob(shape: &[i64], values: &[f32], form: CaffeForm) -> BlobProto {
    let mut b = BlobProto {
        data: values.to_vec(),
        ..Default::default()
    };
    match form {
        CaffeForm::Layer => {
            b.shape = Some(BlobShape {
                dim: shape.to_vec(),
            })
        }
        CaffeForm::V1 => {
            // Legacy blobs are 4-D, padded with leading 1s: an fc weight is (1, 1, out, in).
            let mut d = vec![1i64; 4usize.saturating_sub(shape.len())];
            d.extend_from_slice(shape);
            b.num = Some(d[0] as i32);
            b.channels = Some(d[1] as i32);
            b.height = Some(d[2] as i32);
            b.width = Some(d[3] as i32);
        }
    }
    b
}

/// Writes `tensors` (PyTorch names, every layer of `arch`) as a caffemodel named
/// `net_name`, in the given layer form: a data-free `NetParameter` with one
/// Convolution / InnerProduct layer per model layer holding its weight and bias blobs.
pub fn to_caffemodel(
    net_name: &str,
    arch: &Arch,
    tensors: &HostTensors,
    form: CaffeForm,
) -> Result<Vec<u8>> {
    let mut net = NetParameter {
        name: Some(net_name.into()),
        ..Default::default()
    };
    for spec in &arch.layers {
        let mut blobs = Vec::new();
        for suffix in ["weight", "bias"] {
            let key = format!("{}.{suffix}", spec.name);
            let Some((shape, values)) = tensors.get(&key) else {
                bail!("no tensor {key:?} to write");
            };
            blobs.push(blob(shape, values, form));
        }
        match form {
            CaffeForm::Layer => net.layer.push(LayerParameter {
                name: Some(spec.name.clone()),
                r#type: Some(
                    match spec.kind {
                        LayerKind::Conv => "Convolution",
                        LayerKind::Linear => "InnerProduct",
                    }
                    .into(),
                ),
                blobs,
            }),
            CaffeForm::V1 => net.layers.push(V1LayerParameter {
                name: Some(spec.name.clone()),
                r#type: Some(match spec.kind {
                    LayerKind::Conv => V1_CONVOLUTION,
                    LayerKind::Linear => V1_INNER_PRODUCT,
                }),
                blobs,
            }),
        }
    }
    Ok(net.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::sorted_names as names;

    fn tiny() -> HostTensors {
        let arch = Arch::lenet_300_100();
        arch.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                let n = l.weight_numel() as usize;
                [
                    (
                        format!("{}.weight", l.name),
                        (
                            l.weight_shape.clone(),
                            (0..n).map(|j| (i * 7 + j) as f32 * 1e-3).collect(),
                        ),
                    ),
                    (
                        format!("{}.bias", l.name),
                        (
                            vec![l.outputs()],
                            (0..l.outputs()).map(|j| -(j as f32)).collect(),
                        ),
                    ),
                ]
            })
            .collect()
    }

    #[test]
    fn both_forms_decode_to_what_was_written() {
        let arch = Arch::lenet_300_100();
        let t = tiny();
        for form in [CaffeForm::Layer, CaffeForm::V1] {
            let bytes = to_caffemodel("LeNet", &arch, &t, form).unwrap();
            let back = parse(&bytes).unwrap();
            assert_eq!(names(&back), names(&t), "{form:?}");
            for (k, (shape, v)) in &t {
                let (s2, v2) = &back[k];
                assert_eq!(v2, v, "{form:?} {k}");
                let mut want = shape.clone();
                if form == CaffeForm::V1 {
                    want = [vec![1; 4 - shape.len()], shape.clone()].concat();
                }
                assert_eq!(s2, &want, "{form:?} {k}");
            }
        }
    }

    #[test]
    fn double_data_and_a_short_blob() {
        let b = BlobProto {
            shape: Some(BlobShape { dim: vec![2, 2] }),
            double_data: vec![1.0, 2.0, 3.0, 4.0],
            ..Default::default()
        };
        assert_eq!(
            blob_tensor(&b).unwrap(),
            (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])
        );
        let b = BlobProto {
            shape: Some(BlobShape { dim: vec![2, 3] }),
            data: vec![0.0; 5],
            ..Default::default()
        };
        let e = blob_tensor(&b).unwrap_err().to_string();
        assert!(e.contains("needs 6 values, the blob holds 5"), "{e}");
    }

    #[test]
    fn garbage_and_empty_nets_are_refused() {
        let e = format!("{:#}", parse(&[0xff, 0xff, 0xff]).unwrap_err());
        assert!(e.contains("not a valid Caffe model"), "{e}");
        let empty = NetParameter {
            name: Some("x".into()),
            ..Default::default()
        }
        .encode_to_vec();
        let e = format!("{:#}", parse(&empty).unwrap_err());
        assert!(e.contains("no layer with weights"), "{e}");
    }

    /// Damaged files — every truncation, single-byte flips, random bytes — give an error
    /// or tensors, never a panic.
    #[test]
    fn damaged_files_never_panic() {
        use proptest::prelude::*;
        let bytes =
            to_caffemodel("LeNet", &Arch::lenet_300_100(), &tiny(), CaffeForm::Layer).unwrap();
        for cut in 0..bytes.len() {
            let _ = parse(&bytes[..cut]);
        }
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        runner
            .run(
                &(
                    0..bytes.len(),
                    any::<u8>(),
                    proptest::collection::vec(any::<u8>(), 0..256),
                ),
                |(at, xor, junk)| {
                    let mut b = bytes.clone();
                    b[at] ^= xor;
                    let _ = parse(&b);
                    let _ = parse(&junk);
                    Ok(())
                },
            )
            .unwrap();
    }
}
