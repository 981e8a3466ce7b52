//! Test-only: property tests of the `.dcz` codec (random valid models round
//! trip; random and mutated bytes never panic) and a per-thread allocation
//! probe that bounds what the decoder allocates for hostile input.

use super::bits::BitWriter;
use super::bytes::{varint_len, write_varint};
use super::coding::{fixed_bytes, Coding};
use super::dcz::tests::{assemble, bit_equal, file_with_layer, header_for, layer_prefix};
use super::dcz::{account, decode, encode, encode_unchecked, encode_version, parse, reseal};
use super::model::{BiasPrecision, CompressedModel, Layer, LayerKind, MAX_TOTAL_DENSE};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Records the largest single allocation made by the current thread.
struct Probe;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = PEAK.try_with(|p| {
        if size > p.get() {
            p.set(size);
        }
    });
}

unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static PROBE: Probe = Probe;

/// Runs `f` and returns the largest single allocation it made (the IDX reader's
/// property tests use it too).
pub(crate) fn peak_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.with(|p| p.set(0));
    let t = f();
    (t, PEAK.with(|p| p.get()))
}

/// Largest single allocation the decoder may make for `len` input bytes:
/// a constant (Huffman lookup tables) plus a small multiple of the input.
fn alloc_budget(len: usize) -> usize {
    16 * 1024 + 64 * len
}

fn check_no_panic_and_bounded(bytes: &[u8]) {
    let (_, peak) = peak_alloc(|| {
        let _ = decode(bytes);
        let _ = account(bytes);
        let _ = parse(bytes, false);
    });
    assert!(
        peak <= alloc_budget(bytes.len()),
        "{peak} bytes allocated for {} input bytes",
        bytes.len()
    );
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn finite_f32(&mut self) -> f32 {
        let x = f32::from_bits(self.next() as u32);
        if x.is_finite() {
            x
        } else {
            -1.25
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_layer(
    shape: Vec<u32>,
    bits: u8,
    density: f64,
    seed: u64,
    bias_len: usize,
    f16: bool,
    conv: bool,
    name: String,
) -> Layer {
    let mut rng = Rng(seed | 1);
    let dense_len: u32 = shape.iter().product();
    let positions: Vec<u32> = (0..dense_len).filter(|_| rng.unit() < density).collect();
    let max_cb = (1u64 << bits).min(300);
    let cb_len = if positions.is_empty() && rng.below(2) == 0 {
        0
    } else {
        1 + rng.below(max_cb)
    };
    let codebook: Vec<f32> = (0..cb_len).map(|_| rng.finite_f32()).collect();
    let clusters: Vec<u32> = positions
        .iter()
        .map(|_| {
            // Skewed towards small indices.
            let bound = 1 + rng.below(cb_len);
            rng.below(bound) as u32
        })
        .collect();
    let bias_precision = match (f16, rng.below(3)) {
        (false, _) => BiasPrecision::F32,
        (true, 0) => BiasPrecision::I8,
        (true, _) => BiasPrecision::F16,
    };
    let bias: Vec<f32> = (0..bias_len)
        .map(|_| match bias_precision {
            BiasPrecision::F32 => rng.finite_f32(),
            // some zeros, which the file may leave out
            _ if rng.below(3) == 0 => 0.0,
            _ => (rng.unit() as f32 - 0.5) * 2000.0,
        })
        .collect();
    let bias = bias_precision.round_all(&bias);
    Layer {
        name,
        kind: if conv {
            LayerKind::Conv
        } else {
            LayerKind::Linear
        },
        shape,
        bits,
        codebook,
        positions,
        clusters,
        bias,
        bias_precision,
    }
}

fn arb_layer() -> impl Strategy<Value = Layer> {
    (
        prop::collection::vec(1u32..=40, 1..=3),
        1u8..=16,
        prop::sample::select(vec![0.0, 0.002, 0.02, 0.1, 0.5, 0.9, 1.0]),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        "[a-z0-9_.]{0,12}",
    )
        .prop_map(|(shape, bits, d, seed, has_bias, f16, conv, name)| {
            // A bias is empty or holds one value per output.
            let bl = if has_bias { shape[0] as usize } else { 0 };
            build_layer(shape, bits, d, seed, bl, f16, conv, name)
        })
}

fn arb_model() -> impl Strategy<Value = CompressedModel> {
    (
        prop::collection::vec(arb_layer(), 0..4),
        "[a-z0-9]{0,10}",
        "[a-z0-9]{0,10}",
        prop::collection::vec(any::<u32>(), 0..4),
        any::<u64>(),
    )
        .prop_map(|(mut layers, model, dataset, input_shape, seed)| {
            let mut rng = Rng(seed | 1);
            // Names are unique: each ends in its index.
            for (i, l) in layers.iter_mut().enumerate() {
                l.name = format!("{}{i}", l.name);
            }
            CompressedModel {
                model,
                dataset,
                input_shape,
                input_scale: (rng.unit() as f32 * 1000.0).max(f32::MIN_POSITIVE),
                input_shift: (rng.unit() as f32 - 0.5) * 1000.0,
                layers,
                origin: None,
            }
        })
}

/// A mutation: 0 = xor a byte, 1 = insert, 2 = delete, 3 = truncate.
fn mutate(bytes: &mut Vec<u8>, muts: &[(usize, u8, u8)]) {
    for &(at, v, op) in muts {
        if bytes.is_empty() {
            bytes.push(v);
            continue;
        }
        let i = at % bytes.len();
        match op {
            0 => bytes[i] ^= v.max(1),
            1 => bytes.insert(i, v),
            2 => {
                bytes.remove(i);
            }
            _ => bytes.truncate(i),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_models_round_trip(m in arb_model()) {
        let bytes = encode(&m).unwrap();
        let back = decode(&bytes).unwrap();
        prop_assert!(bit_equal(&m, &back));
        let a = account(&bytes).unwrap();
        prop_assert_eq!(a.total.total(), bytes.len() as u64);
        let layers: u64 = a.layers.iter().map(|l| l.bytes.total()).sum();
        prop_assert_eq!(a.header.total() + layers, bytes.len() as u64);
        for (l, la) in m.layers.iter().zip(&a.layers) {
            prop_assert_eq!(la.nnz, l.positions.len() as u64);
        }
    }

    /// Each stream is stored in the smaller of its codings: never more than fixed width,
    /// never more than the all-Huffman layout of version 2, which still decodes (as does
    /// version 1) to the same model.
    #[test]
    fn each_stream_is_stored_in_its_smaller_coding(m in arb_model()) {
        let bytes = encode(&m).unwrap();
        let a = account(&bytes).unwrap();
        // Version 1 knows no i8 biases.
        let i8_bias = m.layers.iter().any(|l| l.bias_precision == BiasPrecision::I8);
        for version in [1, 2, 3].into_iter().filter(|&v| v >= 2 || !i8_bias) {
            let old = encode_version(&m, version);
            prop_assert!(bit_equal(&m, &decode(&old).unwrap()));
            // Version 4 adds the origin: one flag byte when there is none.
            prop_assert!(bytes.len() <= old.len() + 1);
        }
        let a2 = account(&encode_version(&m, 2)).unwrap();
        for (l, (l2, l3)) in m.layers.iter().zip(a2.layers.iter().zip(&a.layers)) {
            let index = |la: &super::dcz::LayerAccount| {
                la.bytes.index_table + la.bytes.index_stream + if la.index_coding.is_some() {
                    varint_len(la.n_fillers) as u64
                } else {
                    0
                }
            };
            prop_assert!(index(l3) <= index(l2));
            let weight = |la: &super::dcz::LayerAccount| la.bytes.weight_table + la.bytes.weight_stream;
            prop_assert!(weight(l3) <= weight(l2));
            if l3.nnz > 0 {
                prop_assert!(weight(l3) <= fixed_bytes(l3.nnz, l.codebook.len() as u32));
                // Fixed width on a tie; a Huffman stream is strictly smaller.
                let fixed = fixed_bytes(l3.nnz, l.codebook.len() as u32);
                prop_assert_eq!(l3.weight_coding == Some(Coding::Fixed), weight(l3) == fixed);
            }
            if let Some(c) = l3.index_coding {
                let fixed = fixed_bytes(l3.nnz + l3.n_fillers, 1 << l3.gap_bits);
                prop_assert_eq!(c == Coding::Fixed, l3.bytes.index_stream == fixed && l3.bytes.index_table == 0);
            }
        }
    }

    #[test]
    fn mutated_files_never_panic(
        m in arb_model(),
        muts in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let mut bytes = encode(&m).unwrap();
        mutate(&mut bytes, &muts);
        check_no_panic_and_bounded(&bytes);
    }
}

/// A structural mutation of a decoded model, applied before encoding it with valid
/// checksums: each breaks (or may break) one invariant a reader relies on.
fn mutate_model(m: &mut CompressedModel, op: u8, at: usize, v: u32) {
    let n = m.layers.len();
    if n == 0 {
        m.input_scale = f32::from_bits(v);
        return;
    }
    let i = at % n;
    let l = &mut m.layers[i];
    match op % 8 {
        // A bias of another length than the layer's outputs.
        0 => l.bias = vec![0.5; (v % 50) as usize],
        // A name another layer has.
        1 => {
            let other = m.layers[(i + 1) % n].name.clone();
            m.layers[i].name = other;
        }
        // A dimension changed under the same positions and bias.
        2 => {
            let d = at % l.shape.len();
            l.shape[d] = 1 + v % 70_000;
        }
        // Another rank.
        3 => l.shape.push(1 + v % 3),
        // Another kind.
        4 => {
            l.kind = match l.kind {
                LayerKind::Conv => LayerKind::Linear,
                LayerKind::Linear => LayerKind::Conv,
            }
        }
        // Input normalisation from raw bits (NaN, infinities, zero, huge).
        5 => m.input_scale = f32::from_bits(v),
        6 => m.input_shift = f32::from_bits(v),
        // A huge empty layer.
        _ => {
            l.shape = vec![1 + v % 65_535, 65_535];
            l.positions.clear();
            l.clusters.clear();
            l.bias.clear();
        }
    }
}

/// What a reader may rely on in a model `decode` accepted.
fn check_consistent(m: &CompressedModel) {
    assert!(m.validate().is_ok());
    let mut names = std::collections::HashSet::new();
    let mut total = 0u64;
    for l in &m.layers {
        assert!(names.insert(l.name.clone()), "duplicate name {}", l.name);
        assert!(l.bias.is_empty() || l.bias.len() as u64 == u64::from(l.shape[0]));
        total += l.dense_len().unwrap();
    }
    assert!(total <= MAX_TOTAL_DENSE);
    assert!(m.input_scale > 0.0 && m.input_scale.is_finite() && m.input_shift.is_finite());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Checksum-valid files whose contents contradict each other: refused, or (when the
    /// mutation happened to keep them consistent) decoded to a model a reader can trust;
    /// never a panic, never a large allocation.
    #[test]
    fn checksum_valid_inconsistent_files_are_refused_or_consistent(
        m in arb_model(),
        muts in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u32>()), 1..4),
    ) {
        let mut m = m;
        for &(op, at, v) in &muts {
            mutate_model(&mut m, op, at, v);
        }
        // Positions past a shrunk shape cannot even be coded: nothing to read then.
        if let Ok(bytes) = encode_unchecked(&m) {
            check_no_panic_and_bounded(&bytes);
            if let Ok(back) = decode(&bytes) {
                check_consistent(&back);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Byte mutations with the checksums recomputed afterwards: the decoder's own checks,
    /// not the CRCs, must catch whatever is wrong.
    #[test]
    fn resealed_mutations_never_panic_and_decode_consistent(
        m in arb_model(),
        muts in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let mut bytes = encode(&m).unwrap();
        mutate(&mut bytes, &muts);
        reseal(&mut bytes);
        check_no_panic_and_bounded(&bytes);
        if let Ok(back) = decode(&bytes) {
            check_consistent(&back);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_no_panic_and_bounded(&bytes);
    }

    #[test]
    fn random_bytes_behind_a_valid_preamble_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        // A real header with one layer whose section is random bytes: the
        // (unchecked) parser runs into the layer parser.
        let layers = vec![body];
        let file = assemble(&header_for(&layers), &layers);
        check_no_panic_and_bounded(&file);
    }

    #[test]
    fn random_layer_tails_never_panic(
        shape in prop::collection::vec(1u64..100_000, 1..4),
        bits in 1u8..=16,
        tail in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut b = layer_prefix(&shape, bits);
        b.extend_from_slice(&tail);
        check_no_panic_and_bounded(&file_with_layer(b));
    }
}

#[test]
fn hostile_counts_allocate_little() {
    let mut files = Vec::new();
    // nnz of 4e9 in a 65535x65535 layer, and a fully dense one.
    for (nnz, gap) in [(4_000_000_000u64, 16u8), (65_535 * 65_535, 0)] {
        let mut b = layer_prefix(&[65_535, 65_535], 4);
        b.push(1);
        b.extend_from_slice(&1.0f32.to_le_bytes());
        write_varint(&mut b, nnz);
        b.push(gap);
        if gap > 0 {
            b.push(0);
        }
        b.extend_from_slice(&[0; 32]);
        files.push(file_with_layer(b));
    }
    // Huge layer count and section lengths.
    let mut h = header_for(&[]);
    h.pop();
    write_varint(&mut h, 4096);
    files.push(assemble(&h, &[]));
    let mut h = header_for(&[]);
    h.pop();
    write_varint(&mut h, 1);
    write_varint(&mut h, u64::MAX);
    files.push(assemble(&h, &[]));
    // A dense Huffman table claiming 65536 symbols in a few bytes.
    let mut b = layer_prefix(&[100_000], 16);
    b.push(1);
    b.extend_from_slice(&1.0f32.to_le_bytes());
    b.push(1); // nnz
    b.push(16); // gap bits
    b.push(0); // fillers
    let mut w = BitWriter::new();
    w.write_bits(2, 2); // DENSE
    w.write_exp_golomb(65_535); // last symbol
    w.write_bits(1, 3); // width 1
    w.write_bits(0xFFFF, 16);
    b.extend_from_slice(&w.finish());
    files.push(file_with_layer(b));
    // A SINGLE table naming the last symbol of a 2^16 alphabet.
    let mut b = layer_prefix(&[100_000], 16);
    b.push(1);
    b.extend_from_slice(&1.0f32.to_le_bytes());
    b.push(1); // nnz
    b.push(16); // gap bits
    b.push(0); // fillers
    let mut w = BitWriter::new();
    w.write_bits(1, 2); // SINGLE
    w.write_exp_golomb(65_535);
    w.write_bits(0, 1); // the one code word
    b.extend_from_slice(&w.finish());
    files.push(file_with_layer(b));
    for f in files {
        let (r, peak) = peak_alloc(|| parse(&f, true));
        assert!(r.is_err());
        assert!(peak <= 8 * 1024, "{peak} bytes for a {}-byte file", f.len());
    }
}
