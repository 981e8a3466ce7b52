//! Structure-aware fuzz target of the `.dcz` reader, past the checksums: the input drives
//! a compressed model shaped like a tiny three-layer MLP (`tiny-mlp`, 4x4 inputs: the
//! readers' code paths are those of LeNet-300-100 at a fraction of its cost per execution;
//! nonzeros, codebook, bias), structural
//! mutations of it (bias lengths, duplicate names, shapes, ranks, kinds, input
//! normalisation, huge empty layers), its encoding with valid checksums
//! (`encode_unchecked`), then byte mutations and `reseal`, which recomputes the CRCs. What
//! decodes must be consistent and must go through every reader without a panic: folding
//! dead units (and encoding the result again), the fit check every command that decodes a
//! file runs (`check_fits`: a file that passes it must load and export, one that fails it
//! must not load), export to safetensors and import of that export (the same weights, bit
//! for bit), loading onto the tiny MLP (`to_net_like`) and a forward pass, and the path of
//! a file that names a zoo model instead (`to_net`: LeNet-5 or LeNet-300-100, whose shapes
//! the file must match before anything of its size is built). Biases come empty, dense or
//! mostly zero (stored with a bitmap), in f32, f16 or i8.
#![no_main]

use dc_search::compress::encode::{check_fits, to_net, to_net_like};
use dc_search::compress::fold;
use dc_search::format::{
    decode, decode_with_limit, encode, encode_unchecked, reseal, BiasPrecision, CompressedModel,
    Layer, LayerKind, Origin,
};
use dc_search::import::{parse_weights, WeightsFormat};
use dc_search::models::{Arch, LayerSpec, Net, Op};
use libfuzzer_sys::fuzz_target;

/// Reads the input a byte at a time (zeros once it runs out).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

fn base_model(inp: &mut Input) -> CompressedModel {
    let layer = |inp: &mut Input, name: &str, shape: [u32; 2]| {
        let dense = shape[0] * shape[1];
        let nnz = u32::from(inp.u8());
        let step = (dense / nnz.max(1)).max(1);
        let positions: Vec<u32> = (0..nnz).map(|i| i * step).filter(|&p| p < dense).collect();
        let k = 1 + u32::from(inp.u8() % 8);
        let clusters = positions.iter().map(|_| u32::from(inp.u8()) % k).collect();
        Layer {
            name: name.into(),
            kind: LayerKind::Linear,
            shape: shape.to_vec(),
            bits: 3,
            codebook: (0..k).map(|i| i as f32 * 0.1 - 0.3).collect(),
            positions,
            clusters,
            bias: match inp.u8() % 3 {
                0 => vec![],
                1 => vec![0.01; shape[0] as usize],
                // mostly zeros: stored with a bitmap
                _ => (0..shape[0])
                    .map(|i| if i % 3 == 0 { 0.01 } else { 0.0 })
                    .collect(),
            },
            bias_precision: match inp.u8() % 3 {
                0 => BiasPrecision::F32,
                1 => BiasPrecision::F16,
                _ => BiasPrecision::I8,
            },
        }
    };
    CompressedModel {
        model: "tiny-mlp".into(),
        dataset: "mnist".into(),
        input_shape: vec![1, 4, 4],
        input_scale: 1.0 / 256.0,
        input_shift: 0.0,
        layers: vec![
            layer(inp, "fc1", [12, 16]),
            layer(inp, "fc2", [8, 12]),
            layer(inp, "fc3", [4, 8]),
        ],
        // Half the models carry the TorchScript config they were made from.
        origin: (inp.u8() % 2 == 1).then(|| Origin {
            config: "tiny-cnn.toml".into(),
            sha256: [inp.u8(); 32],
        }),
    }
}

fn mutate_model(m: &mut CompressedModel, inp: &mut Input) {
    for _ in 0..inp.u8() % 4 {
        let (op, at, v) = (inp.u8(), usize::from(inp.u8()), inp.u32());
        let n = m.layers.len();
        let i = at % n;
        match op % 9 {
            0 => m.layers[i].bias = vec![0.5; (v % 20) as usize],
            1 => m.layers[i].name = m.layers[(i + 1) % n].name.clone(),
            2 => {
                let d = at % m.layers[i].shape.len();
                // mostly small; now and then past the decode cap below
                m.layers[i].shape[d] = 1 + v % if v & 1 == 0 { 40 } else { 70_000 };
            }
            3 => m.layers[i].shape.push(1 + v % 3),
            4 => m.layers[i].kind = LayerKind::Conv,
            5 => m.input_scale = f32::from_bits(v),
            6 => m.input_shift = f32::from_bits(v),
            7 => {
                let l = &mut m.layers[i];
                l.shape = vec![1 + v % 65_535, 65_535];
                l.positions.clear();
                l.clusters.clear();
                l.bias.clear();
            }
            _ => {
                m.layers.remove(i);
                if m.layers.is_empty() {
                    return;
                }
            }
        }
    }
}

/// The tiny MLP the inputs describe: 16 inputs, 12, 8 and 4 units.
fn tiny_mlp() -> Arch {
    let fc = |name: &str, out: i64, inp: i64| LayerSpec {
        name: name.into(),
        kind: dc_search::models::LayerKind::Linear,
        weight_shape: vec![out, inp],
        bias: true,
    };
    Arch {
        name: "tiny-mlp".into(),
        input_shape: vec![1, 4, 4],
        layers: vec![fc("fc1", 12, 16), fc("fc2", 8, 12), fc("fc3", 4, 8)],
        ops: vec![Op::Flatten, Op::Linear(0), Op::Relu, Op::Linear(1), Op::Relu, Op::Linear(2)],
    }
}

thread_local! {
    /// The model files are loaded onto (one per process: libFuzzer runs one thread).
    static NET: Net = {
        tch::set_num_threads(1);
        Net::init(&tiny_mlp(), tch::Device::Cpu)
    };
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let mut m = base_model(&mut inp);
    mutate_model(&mut m, &mut inp);
    let Ok(mut bytes) = encode_unchecked(&m) else {
        return;
    };
    for _ in 0..inp.u8() % 4 {
        let (at, v) = (inp.u32() as usize, inp.u8());
        let n = bytes.len();
        bytes[at % n] ^= v;
    }
    reseal(&mut bytes);
    // The readers build dense tensors of what decodes; at the default cap (2^30 weights,
    // 4 GB of f32) a tiny input may ask for more than libFuzzer's 2 GB RSS limit, by design.
    // 2^20 weights (4 MB) lets the small shapes through and refuses the huge ones before
    // anything is allocated, which is the check under test.
    let Ok(model) = decode_with_limit(&bytes, 1 << 20) else {
        return;
    };
    assert!(model.validate().is_ok());
    // Folding dead units of whatever decodes keeps a model that encodes and decodes.
    let mut folded = model.clone();
    fold::fold(&mut folded.layers, &fold::links(&tiny_mlp()));
    if let Ok(again) = encode(&folded) {
        assert!(decode(&again).is_ok());
    }
    // The commands' one check of a file against its model decides everything after it.
    let fits = check_fits(&model, &tiny_mlp()).is_ok();
    if fits {
        let st = dc_search::export::dcz_to_safetensors(&model).expect("a fitting file exports");
        let back = parse_weights(&st, WeightsFormat::Safetensors, &tiny_mlp())
            .expect("an export imports onto its model");
        for l in &model.layers {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let (_, w) = &back[&format!("{}.weight", l.name)];
            assert_eq!(bits(w), bits(&l.dense_weights()), "{} round trip", l.name);
        }
    }
    NET.with(|net| {
        let loaded = to_net_like(&model, net);
        assert_eq!(loaded.is_ok(), fits, "loads exactly when it fits");
        if let Ok(loaded) = loaded {
            let x = tch::Tensor::ones([2, 1, 4, 4], (tch::Kind::Float, tch::Device::Cpu));
            let y = loaded.forward(&x);
            assert_eq!(y.size(), vec![2, 4]);
        }
    });
    // The same file under a zoo model's name: refused unless it matches that model.
    let zoo = match inp.u8() % 3 {
        0 => return,
        1 => "lenet",
        _ => "lenet-300-100",
    };
    let mut named = model;
    named.model = zoo.into();
    if let Ok(net) = to_net(&named, tch::Device::Cpu) {
        assert!(check_fits(&named, &net.arch).is_ok());
    }
});
