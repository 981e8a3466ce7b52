//! The `.dcz` container: [`encode`] a [`CompressedModel`] to bytes,
//! [`decode`] it back bit-exactly, and [`account`] for every byte of a file
//! ([`FileAccount`]). The byte layout is specified in `docs/format.md`.
//!
//! Layout summary (little-endian, varints are unsigned LEB128):
//! `"DCZ\0"`, `u16` version, `varint` header length, header (names, input
//! normalisation, layer table of section lengths), `u32` CRC32 of everything
//! before it; then per layer: its section and a `u32` CRC32 of
//! `u32 layer index ‖ section`. Nothing may follow the last layer.
//!
//! Decoding validates every count against the bytes left before allocating,
//! so a corrupt or hostile file costs at most a small constant factor of its
//! own size in memory, and yields a [`FormatError`], never a panic. A decoded
//! model is also consistent, so whoever builds tensors from it cannot be
//! surprised: every bias matches its layer's outputs, names are unique, and the
//! dense weights of all layers together stay under a cap ([`MAX_TOTAL_DENSE`]
//! or the one given to [`decode_with_limit`]), checked as each shape is read,
//! before anything of that size exists.

use super::bits::BitReader;
use super::bytes::{write_str, write_varint, Reader};
use super::coding::{code_stream, decode_fixed, fixed_width, CodedStream, Coding};
use super::error::{FormatError, Section, Stream};
use super::gaps::{choose_gap_bits, decode_gaps, encode_gaps, MAX_GAP_BITS, MIN_GAP_BITS};
use super::huffman::{encode_stream, HuffmanCode, HuffmanError};
use super::model::{
    i8_code, i8_exponent, pow2, BiasPrecision, CompressedModel, Layer, LayerKind, ModelError,
    Origin, I8_EXP_MAX, I8_EXP_MIN, MAX_BITS, MAX_DENSE_LEN, MAX_LAYERS, MAX_RANK, MAX_TOTAL_DENSE,
};

/// The first four bytes of every `.dcz` file.
pub const MAGIC: [u8; 4] = *b"DCZ\0";
/// The format version this module writes. Version 2 added biases stored without their
/// zeros (a bitmap of the nonzero ones, then their values); version 3 stores each coded
/// stream in fixed width or Huffman, whichever is smaller, with a flag per stream; version 4
/// records in the header the TorchScript config a file was made from ([`Origin`]).
pub const VERSION: u16 = 4;
/// The oldest version this module reads (version 1 files have dense biases only).
pub const MIN_VERSION: u16 = 1;
/// Flag on the bias precision byte: zeros omitted, a bitmap says which values are stored.
const SPARSE_BIAS: u8 = 2;
/// Flag on the gap bits byte (version 3): the index stream is stored in fixed width.
const INDEX_FIXED: u8 = 0x40;
/// Flag on the gap bits byte (version 3): the weight stream is stored in fixed width.
const WEIGHT_FIXED: u8 = 0x80;
/// The gap width itself, below the flags.
const GAP_BITS_MASK: u8 = 0x3f;

/// Serialises `m` after validating it ([`CompressedModel::validate`]).
/// The gap width of each layer is chosen by [`choose_gap_bits`]; each stream is stored
/// in fixed width or Huffman, whichever takes fewer bytes ([`code_stream`]).
pub fn encode(m: &CompressedModel) -> Result<Vec<u8>, FormatError> {
    m.validate()?;
    encode_unchecked(m)
}

/// Serialises `m` with valid checksums *without* validating it first: the bytes a buggy or
/// hostile writer could make. For tests and fuzzing of the decoder; it fails only where
/// a stream cannot be coded at all (positions out of order, clusters past the codebook).
pub fn encode_unchecked(m: &CompressedModel) -> Result<Vec<u8>, FormatError> {
    encode_as(m, VERSION)
}

/// `m` written in the layout of an older `version` (1, 2 or 3, for the tests that older
/// files still read): before version 4 without its origin, before version 3 every stream
/// in Huffman, and in version 1 every bias stored (a version 1 reader refuses i8 biases).
#[cfg(test)]
pub(crate) fn encode_version(m: &CompressedModel, version: u16) -> Vec<u8> {
    assert!((MIN_VERSION..VERSION).contains(&version));
    encode_as(m, version).expect("a valid model encodes")
}

/// [`encode_unchecked`] in the layout of `version`.
fn encode_as(m: &CompressedModel, version: u16) -> Result<Vec<u8>, FormatError> {
    let bodies = m
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| encode_layer(i, l, version))
        .collect::<Result<Vec<_>, _>>()?;
    let mut h = Vec::new();
    write_str(&mut h, &m.model);
    write_str(&mut h, &m.dataset);
    h.push(m.input_shape.len() as u8);
    for &d in &m.input_shape {
        write_varint(&mut h, u64::from(d));
    }
    h.extend_from_slice(&m.input_scale.to_le_bytes());
    h.extend_from_slice(&m.input_shift.to_le_bytes());
    if version >= 4 {
        match &m.origin {
            None => h.push(0),
            Some(o) => {
                h.push(1);
                write_str(&mut h, &o.config);
                h.extend_from_slice(&o.sha256);
            }
        }
    }
    write_varint(&mut h, bodies.len() as u64);
    for b in &bodies {
        write_varint(&mut h, b.len() as u64);
    }
    let total: usize = bodies.iter().map(|b| b.len() + 4).sum();
    let mut out = Vec::with_capacity(h.len() + 20 + total);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    write_varint(&mut out, h.len() as u64);
    out.extend_from_slice(&h);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    for (i, b) in bodies.iter().enumerate() {
        out.extend_from_slice(b);
        out.extend_from_slice(&layer_crc(i, b).to_le_bytes());
    }
    Ok(out)
}

/// Parses a `.dcz` file. Fails on any corruption, unknown version or
/// trailing bytes. F16 biases come back as the f16-rounded value widened to
/// f32 ([`BiasPrecision::round`]); everything else is bit-exact.
pub fn decode(bytes: &[u8]) -> Result<CompressedModel, FormatError> {
    decode_with_limit(bytes, MAX_TOTAL_DENSE)
}

/// [`decode`] with at most `max_total` dense weights in all layers together.
pub fn decode_with_limit(bytes: &[u8], max_total: u64) -> Result<CompressedModel, FormatError> {
    parse_limited(bytes, verify_checksums(), max_total).map(|(m, _)| m)
}

/// Parses a `.dcz` file (with all the checks of [`decode`]) and accounts for
/// each of its bytes.
pub fn account(bytes: &[u8]) -> Result<FileAccount, FormatError> {
    account_with_limit(bytes, MAX_TOTAL_DENSE)
}

/// [`account`] with at most `max_total` dense weights in all layers together.
pub fn account_with_limit(bytes: &[u8], max_total: u64) -> Result<FileAccount, FormatError> {
    parse_limited(bytes, verify_checksums(), max_total).map(|(_, a)| a)
}

/// Recomputes every CRC of `bytes` in place, wherever the preamble and layer table still
/// say where the sections are: after a mutation, the file passes the checksum checks and
/// the parser behind them is reached (for structure-aware fuzzing and property tests).
/// Returns whether every section was found.
pub fn reseal(bytes: &mut [u8]) -> bool {
    let mut r = Reader::new(bytes, Section::Preamble);
    let header = (|| {
        r.array::<4>("magic").ok()?;
        let version = r.u16("version").ok()?;
        let len = r.varint("header length").ok()?;
        let body = r.take(len, "header").ok()?.to_vec();
        Some((body, r.pos(), version))
    })();
    let Some((body, header_end, version)) = header else {
        return false;
    };
    if bytes.len() < header_end + 4 {
        return false;
    }
    let crc = crc32fast::hash(&bytes[..header_end]);
    bytes[header_end..header_end + 4].copy_from_slice(&crc.to_le_bytes());
    // The layer table: skip names, input shape and normalisation, then read the lengths.
    let mut h = Reader::new(&body, Section::Header);
    let lens = (|| {
        h.string("model name").ok()?;
        h.string("dataset name").ok()?;
        let rank = h.u8("input rank").ok()?;
        for _ in 0..rank {
            h.varint("input dimension").ok()?;
        }
        h.f32("input scale").ok()?;
        h.f32("input shift").ok()?;
        read_origin(&mut h, version).ok()?;
        let n = h.varint("layer count").ok()?.min(MAX_LAYERS as u64);
        (0..n)
            .map(|_| h.varint("layer section length").ok())
            .collect::<Option<Vec<u64>>>()
    })();
    let Some(lens) = lens else {
        return false;
    };
    let mut at = header_end + 4;
    for (i, len) in lens.into_iter().enumerate() {
        let Some(end) = usize::try_from(len).ok().and_then(|l| at.checked_add(l)) else {
            return false;
        };
        if end + 4 > bytes.len() {
            return false;
        }
        let crc = layer_crc(i, &bytes[at..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        at = end + 4;
    }
    true
}

/// The header's origin (version 4): a flag byte (0 none, 1 present), then the config's name
/// and SHA-256. Before version 4 there is no such field.
fn read_origin(h: &mut Reader, version: u16) -> Result<Option<Origin>, FormatError> {
    if version < 4 {
        return Ok(None);
    }
    let flag = h.u8("origin flag")?;
    h.check_range("origin flag", u64::from(flag), 0, 1)?;
    if flag == 0 {
        return Ok(None);
    }
    Ok(Some(Origin {
        config: h.string("config name")?,
        sha256: h.array("config sha256")?,
    }))
}

/// Checksums are verified except in fuzzing builds (`--cfg fuzzing`, set by
/// cargo-fuzz), so the fuzzer can reach the parser behind them.
#[allow(unexpected_cfgs)]
fn verify_checksums() -> bool {
    !cfg!(fuzzing)
}

/// CRC32 of a layer section, bound to the layer's position in the file.
fn layer_crc(index: usize, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(index as u32).to_le_bytes());
    h.update(body);
    h.finalize()
}

fn huffman_err(section: Section, stream: Stream) -> impl Fn(HuffmanError) -> FormatError {
    move |source| FormatError::Huffman {
        section,
        stream,
        source,
    }
}

/// Layer `i`'s section in the layout of `version`: before version 3 every stream is in
/// Huffman, before version 2 every bias is stored.
fn encode_layer(i: usize, l: &Layer, version: u16) -> Result<Vec<u8>, FormatError> {
    let code = |symbols: &[u32], alphabet: u32| {
        if version >= 3 {
            code_stream(symbols, alphabet)
        } else {
            encode_stream(symbols, alphabet).map(|h| CodedStream {
                coding: Coding::Huffman,
                table: h.table,
                stream: h.stream,
            })
        }
    };
    let section = Section::Layer(i);
    let dense_len = l.dense_len().unwrap_or(0);
    let nnz = l.positions.len() as u64;
    let mut b = Vec::new();
    write_str(&mut b, &l.name);
    b.push(l.kind.to_u8());
    b.push(l.shape.len() as u8);
    for &d in &l.shape {
        write_varint(&mut b, u64::from(d));
    }
    b.push(l.bits);
    write_varint(&mut b, l.codebook.len() as u64);
    for c in &l.codebook {
        b.extend_from_slice(&c.to_le_bytes());
    }
    write_varint(&mut b, nnz);
    let index = if nnz > 0 && nnz < dense_len {
        let gap_err = |source| FormatError::Gaps { section, source };
        let choice = choose_gap_bits(&l.positions).map_err(gap_err)?;
        let symbols = encode_gaps(&l.positions, choice.gap_bits).map_err(gap_err)?;
        let coded =
            code(&symbols, 1 << choice.gap_bits).map_err(huffman_err(section, Stream::Index))?;
        debug_assert!(version < 3 || coded.coding == choice.coding);
        Some((choice.gap_bits, choice.n_fillers, coded))
    } else {
        None
    };
    let weight = if nnz > 0 {
        Some(
            code(&l.clusters, l.codebook.len() as u32)
                .map_err(huffman_err(section, Stream::Weight))?,
        )
    } else {
        None
    };
    let fixed = |c: &CodedStream, flag: u8| if c.coding == Coding::Fixed { flag } else { 0 };
    let flags = index.as_ref().map_or(0, |(_, _, c)| fixed(c, INDEX_FIXED))
        | weight.as_ref().map_or(0, |c| fixed(c, WEIGHT_FIXED));
    b.push(index.as_ref().map_or(0, |&(gap_bits, _, _)| gap_bits) | flags);
    if let Some((_, n_fillers, coded)) = &index {
        write_varint(&mut b, *n_fillers);
        b.extend_from_slice(&coded.table);
        b.extend_from_slice(&coded.stream);
    }
    if let Some(coded) = &weight {
        b.extend_from_slice(&coded.table);
        b.extend_from_slice(&coded.stream);
    }
    write_biases(&mut b, &l.bias, l.bias_precision, version >= 2);
    Ok(b)
}

/// Bias precision byte, length and values; when leaving the zeros out (a bitmap of the
/// stored ones, least significant bit first) is `allowed` and smaller, that layout. i8
/// biases carry their scale's exponent (an `i8`) before the values.
fn write_biases(b: &mut Vec<u8>, bias: &[f32], precision: BiasPrecision, allowed: bool) {
    let exponent = i8_exponent(bias);
    let values: Vec<Vec<u8>> = bias
        .iter()
        .map(|&x| match precision {
            BiasPrecision::F32 => x.to_le_bytes().to_vec(),
            BiasPrecision::F16 => half::f16::from_f32(x).to_le_bytes().to_vec(),
            BiasPrecision::I8 => i8_code(x, exponent).to_le_bytes().to_vec(),
        })
        .collect();
    let zero = |v: &Vec<u8>| v.iter().all(|&x| x == 0);
    let kept = values.iter().filter(|v| !zero(v)).count();
    let width = precision.width();
    let sparse = allowed && bias.len().div_ceil(8) + kept * width < bias.len() * width;
    b.push(precision.to_u8() | if sparse { SPARSE_BIAS } else { 0 });
    write_varint(b, bias.len() as u64);
    if sparse {
        let mut bitmap = vec![0u8; bias.len().div_ceil(8)];
        for (i, v) in values.iter().enumerate() {
            if !zero(v) {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        b.extend_from_slice(&bitmap);
    }
    if precision == BiasPrecision::I8 {
        b.push(exponent as i8 as u8);
    }
    for v in values.iter().filter(|v| !sparse || !zero(v)) {
        b.extend_from_slice(v);
    }
}

/// Parses and accounts; `verify` = check CRCs (off only to test the parser
/// behind them).
#[cfg(test)]
pub(crate) fn parse(
    bytes: &[u8],
    verify: bool,
) -> Result<(CompressedModel, FileAccount), FormatError> {
    parse_limited(bytes, verify, MAX_TOTAL_DENSE)
}

/// [`parse`] with at most `max_total` dense weights in all.
pub(crate) fn parse_limited(
    bytes: &[u8],
    verify: bool,
    max_total: u64,
) -> Result<(CompressedModel, FileAccount), FormatError> {
    let mut r = Reader::new(bytes, Section::Preamble);
    let magic: [u8; 4] = r.array("magic")?;
    if magic != MAGIC {
        return Err(FormatError::BadMagic { found: magic });
    }
    let version = r.u16("version")?;
    if !(MIN_VERSION..=VERSION).contains(&version) {
        return Err(FormatError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    let header_len = r.varint("header length")?;
    let body = r.take(header_len, "header")?;
    let header_end = r.pos();
    let stored = r.u32("header checksum")?;
    if verify {
        let computed = crc32fast::hash(&bytes[..header_end]);
        if computed != stored {
            return Err(FormatError::ChecksumMismatch {
                section: Section::Header,
                stored,
                computed,
            });
        }
    }

    let mut h = Reader::new(body, Section::Header);
    let model = h.string("model name")?;
    let dataset = h.string("dataset name")?;
    let rank = h.u8("input rank")?;
    h.check_range("input rank", u64::from(rank), 0, MAX_RANK as u64)?;
    let mut input_shape = Vec::with_capacity(usize::from(rank));
    for _ in 0..rank {
        input_shape.push(h.varint_in("input dimension", 0, u64::from(u32::MAX))? as u32);
    }
    let input_scale = h.f32("input scale")?;
    let input_shift = h.f32("input shift")?;
    let origin = read_origin(&mut h, version)?;
    let n_layers = h.varint_in("layer count", 0, MAX_LAYERS as u64)?;
    if n_layers > h.remaining() as u64 {
        return Err(FormatError::Truncated {
            section: Section::Header,
            what: "layer table",
            needed: n_layers,
            available: h.remaining() as u64,
        });
    }
    let mut lens = Vec::with_capacity(n_layers as usize);
    for _ in 0..n_layers {
        lens.push(h.varint("layer section length")?);
    }
    if h.remaining() != 0 {
        return Err(FormatError::SectionLength {
            section: Section::Header,
            declared: header_len,
            used: h.pos() as u64,
        });
    }
    let available = r.remaining() as u64;
    let declared = lens
        .iter()
        .try_fold(0u64, |acc, &l| acc.checked_add(l)?.checked_add(4))
        .unwrap_or(u64::MAX);
    if declared > available {
        return Err(FormatError::Truncated {
            section: Section::Header,
            what: "layer sections",
            needed: declared,
            available,
        });
    }
    if declared < available {
        return Err(FormatError::TrailingBytes {
            count: available - declared,
        });
    }

    let header = ByteCounts {
        header: header_end as u64,
        checksum: 4,
        ..ByteCounts::default()
    };
    let mut total = header;
    let mut layers = Vec::with_capacity(lens.len());
    let mut accounts = Vec::with_capacity(lens.len());
    let mut dense_total = 0u64;
    for (i, &len) in lens.iter().enumerate() {
        let section = Section::Layer(i);
        let body = r.take(len, "layer section")?;
        let stored = r.u32("layer checksum")?;
        if verify {
            let computed = layer_crc(i, body);
            if computed != stored {
                return Err(FormatError::ChecksumMismatch {
                    section,
                    stored,
                    computed,
                });
            }
        }
        let (layer, acct) = parse_layer(body, i, version, &mut dense_total, max_total)?;
        total.add(&acct.bytes);
        layers.push(layer);
        accounts.push(acct);
    }
    let model = CompressedModel {
        model,
        dataset,
        input_shape,
        input_scale,
        input_shift,
        layers,
        origin,
    };
    model.validate_with(max_total)?;
    let account = FileAccount {
        version,
        file_len: bytes.len() as u64,
        header,
        layers: accounts,
        total,
    };
    Ok((model, account))
}

/// Reads `n` symbols in `coding` from the start of `r`'s unread bytes (Huffman: the
/// table, then the code words); returns the symbols and the table and stream sizes in
/// bytes.
fn read_coded(
    r: &mut Reader,
    stream: Stream,
    coding: Coding,
    alphabet: u32,
    n: u64,
) -> Result<(Vec<u32>, u64, u64), FormatError> {
    let section = r.section();
    let err = huffman_err(section, stream);
    let mut br = BitReader::new(r.rest());
    let (symbols, table) = match coding {
        Coding::Fixed => {
            let symbols =
                decode_fixed(&mut br, alphabet, n).map_err(|source| FormatError::Fixed {
                    section,
                    stream,
                    source,
                })?;
            (symbols, 0)
        }
        Coding::Huffman => {
            let code = HuffmanCode::read_table(&mut br, alphabet).map_err(&err)?;
            let table = br.byte_pos();
            let symbols = code.decoder().decode_n(&mut br, n).map_err(&err)?;
            br.align().map_err(|e| err(e.into()))?;
            (symbols, table)
        }
    };
    let end = br.byte_pos();
    r.take(end as u64, "coded stream")?;
    Ok((symbols, table as u64, (end - table) as u64))
}

/// Parses layer `i`; `dense_total` counts the dense weights of the layers so far, which
/// may not pass `max_total`.
fn parse_layer(
    body: &[u8],
    i: usize,
    version: u16,
    dense_total: &mut u64,
    max_total: u64,
) -> Result<(Layer, LayerAccount), FormatError> {
    let section = Section::Layer(i);
    let mut r = Reader::new(body, section);
    let name = r.string("layer name")?;
    let kind_b = r.u8("layer kind")?;
    let kind = LayerKind::from_u8(kind_b).ok_or(FormatError::OutOfRange {
        section,
        what: "layer kind",
        value: u64::from(kind_b),
        min: 0,
        max: 1,
    })?;
    let rank = r.u8("shape rank")?;
    r.check_range("shape rank", u64::from(rank), 1, MAX_RANK as u64)?;
    let mut shape = Vec::with_capacity(usize::from(rank));
    let mut dense_len: u64 = 1;
    for _ in 0..rank {
        let d = r.varint_in("shape dimension", 1, u64::from(u32::MAX))?;
        dense_len = dense_len.saturating_mul(d);
        shape.push(d as u32);
    }
    r.check_range("dense size", dense_len, 1, MAX_DENSE_LEN)?;
    *dense_total = dense_total.saturating_add(dense_len);
    if *dense_total > max_total {
        return Err(ModelError::TooLarge {
            total: *dense_total,
            limit: max_total,
        }
        .into());
    }
    let bits = r.u8("bits")?;
    r.check_range("bits", u64::from(bits), 1, u64::from(MAX_BITS))?;
    let cb_len = r.varint_in("codebook length", 0, 1u64 << bits)?;
    let codebook: Vec<f32> = r
        .take(cb_len * 4, "codebook")?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let nnz = r.varint_in("nonzero count", 0, dense_len)?;
    // Version 3 keeps a flag per stream above the gap width: fixed width or Huffman.
    let gap_byte = r.u8("gap bits")?;
    let (gap_bits, flags) = if version >= 3 {
        (gap_byte & GAP_BITS_MASK, gap_byte & !GAP_BITS_MASK)
    } else {
        (gap_byte, 0)
    };
    let coding = |flag: u8| {
        if flags & flag != 0 {
            Coding::Fixed
        } else {
            Coding::Huffman
        }
    };
    let sparse = nnz > 0 && nnz < dense_len;
    if sparse {
        r.check_range(
            "gap bits",
            u64::from(gap_bits),
            u64::from(MIN_GAP_BITS),
            u64::from(MAX_GAP_BITS),
        )?;
    } else if gap_bits != 0 {
        return Err(FormatError::Inconsistent {
            section,
            what: "gap bits must be 0 for an empty or fully dense layer",
        });
    }
    if !sparse && flags & INDEX_FIXED != 0 {
        return Err(FormatError::Inconsistent {
            section,
            what: "index stream flagged fixed-width on a layer without one (empty or fully dense)",
        });
    }
    if nnz == 0 && flags & WEIGHT_FIXED != 0 {
        return Err(FormatError::Inconsistent {
            section,
            what: "weight stream flagged fixed-width on a layer without nonzeros",
        });
    }
    if nnz > 0 && cb_len == 0 {
        return Err(FormatError::Inconsistent {
            section,
            what: "layer has nonzeros but an empty codebook",
        });
    }
    let n_fillers = if sparse { r.varint("filler count")? } else { 0 };
    // Every code word takes at least one bit: one gap symbol per nonzero and
    // filler, one cluster symbol per nonzero.
    let needed_bits = if sparse {
        nnz.saturating_mul(2).saturating_add(n_fillers)
    } else {
        nnz
    };
    let available_bits = r.remaining() as u64 * 8;
    if needed_bits > available_bits {
        return Err(FormatError::CountExceedsData {
            section,
            what: if sparse && n_fillers > nnz {
                "filler count"
            } else {
                "nonzero count"
            },
            count: if sparse && n_fillers > nnz {
                n_fillers
            } else {
                nnz
            },
            needed_bits,
            available_bits,
        });
    }
    let mut bytes = ByteCounts {
        codebook: cb_len * 4,
        checksum: 4,
        ..ByteCounts::default()
    };
    let positions = if sparse {
        let (symbols, t, s) = read_coded(
            &mut r,
            Stream::Index,
            coding(INDEX_FIXED),
            1 << gap_bits,
            nnz + n_fillers,
        )?;
        bytes.index_table = t;
        bytes.index_stream = s;
        decode_gaps(&symbols, gap_bits, nnz, dense_len)
            .map_err(|source| FormatError::Gaps { section, source })?
    } else {
        (0..nnz).map(|p| p as u32).collect()
    };
    let clusters = if nnz > 0 {
        let (symbols, t, s) = read_coded(
            &mut r,
            Stream::Weight,
            coding(WEIGHT_FIXED),
            cb_len as u32,
            nnz,
        )?;
        bytes.weight_table = t;
        bytes.weight_stream = s;
        symbols
    } else {
        Vec::new()
    };
    let prec_b = r.u8("bias precision")?;
    // Version 1 knows dense f32 and f16 biases only.
    let max_prec = if version >= 2 { 6 } else { 1 };
    let bias_precision = BiasPrecision::from_u8(prec_b & !SPARSE_BIAS)
        .filter(|_| prec_b <= max_prec)
        .ok_or(FormatError::OutOfRange {
            section,
            what: "bias precision",
            value: u64::from(prec_b),
            min: 0,
            max: u64::from(max_prec),
        })?;
    let bias_len = r.varint("bias length")?;
    let width = bias_precision.width() as u64;
    // Sparse: a bitmap of the stored values (bit i of byte i / 8), then those values.
    let bitmap = if prec_b & SPARSE_BIAS != 0 {
        let map = r.take(bias_len.div_ceil(8), "bias bitmap")?;
        if bias_len % 8 != 0 && map.last().is_some_and(|&b| b >> (bias_len % 8) != 0) {
            return Err(FormatError::OutOfRange {
                section,
                what: "bias bitmap bits past the last bias",
                value: u64::from(map[map.len() - 1] >> (bias_len % 8)),
                min: 0,
                max: 0,
            });
        }
        Some(map)
    } else {
        None
    };
    let stored_len = bitmap.map_or(bias_len, |m| {
        m.iter().map(|b| u64::from(b.count_ones())).sum()
    });
    let exponent = if bias_precision == BiasPrecision::I8 {
        let e = i32::from(r.u8("bias scale exponent")? as i8);
        if !(I8_EXP_MIN..=I8_EXP_MAX).contains(&e) {
            return Err(FormatError::OutOfRange {
                section,
                what: "bias scale exponent + 128",
                value: (e + 128) as u64,
                min: (I8_EXP_MIN + 128) as u64,
                max: (I8_EXP_MAX + 128) as u64,
            });
        }
        e
    } else {
        0
    };
    let raw = r.take(stored_len.saturating_mul(width), "bias")?;
    // i8 codes are -127..=127, so that re-encoding the values gives them back exactly.
    if bias_precision == BiasPrecision::I8 && raw.contains(&0x80) {
        return Err(FormatError::OutOfRange {
            section,
            what: "i8 bias code + 128",
            value: 0,
            min: 1,
            max: 255,
        });
    }
    let values: Vec<f32> = match bias_precision {
        BiasPrecision::I8 => raw
            .iter()
            .map(|&q| f32::from(q as i8) * pow2(exponent))
            .collect(),
        BiasPrecision::F32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        BiasPrecision::F16 => raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    };
    let bias: Vec<f32> = match bitmap {
        None => values,
        Some(map) => {
            let mut stored = values.into_iter();
            (0..bias_len as usize)
                .map(|i| {
                    if map[i / 8] >> (i % 8) & 1 == 1 {
                        stored.next().unwrap_or(0.0)
                    } else {
                        0.0
                    }
                })
                .collect()
        }
    };
    bytes.bias = raw.len() as u64
        + bitmap.map_or(0, |m| m.len() as u64)
        + u64::from(bias_precision == BiasPrecision::I8);
    if r.remaining() != 0 {
        return Err(FormatError::SectionLength {
            section,
            declared: body.len() as u64,
            used: r.pos() as u64,
        });
    }
    bytes.header = body.len() as u64 + 4 - bytes.total();
    let layer = Layer {
        name,
        kind,
        shape,
        bits,
        codebook,
        positions,
        clusters,
        bias,
        bias_precision,
    };
    let acct = LayerAccount {
        name: layer.name.clone(),
        kind,
        shape: layer.shape.clone(),
        dense_len,
        nnz,
        n_fillers,
        gap_bits,
        index_coding: sparse.then(|| coding(INDEX_FIXED)),
        weight_coding: (nnz > 0).then(|| coding(WEIGHT_FIXED)),
        bits,
        codebook_len: cb_len,
        bias_len,
        bias_precision,
        bytes,
    };
    Ok((layer, acct))
}

/// Byte counts of one part of a file (the file header, one layer, or the
/// total). Each byte of a file is counted in exactly one field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteCounts {
    /// Fixed metadata: for the file header, magic + version + header length
    /// + header (incl. layer table); for a layer, its name, kind, shape,
    ///   bits, counts, gap width, filler count and bias precision/length.
    pub header: u64,
    /// Huffman table of the index (gap) stream (0 in fixed width).
    pub index_table: u64,
    /// Huffman table of the weight (cluster) stream (0 in fixed width).
    pub weight_table: u64,
    /// Codebook centroids (4 bytes each).
    pub codebook: u64,
    /// Gap stream, Huffman-coded or in fixed width.
    pub index_stream: u64,
    /// Cluster stream, Huffman-coded or in fixed width.
    pub weight_stream: u64,
    /// Bias values.
    pub bias: u64,
    /// CRC32 fields (4 bytes per section).
    pub checksum: u64,
}

impl ByteCounts {
    /// Both Huffman tables.
    pub fn huffman_tables(&self) -> u64 {
        self.index_table + self.weight_table
    }

    /// Sum of all fields.
    pub fn total(&self) -> u64 {
        self.header
            + self.index_table
            + self.weight_table
            + self.codebook
            + self.index_stream
            + self.weight_stream
            + self.bias
            + self.checksum
    }

    fn add(&mut self, o: &ByteCounts) {
        self.header += o.header;
        self.index_table += o.index_table;
        self.weight_table += o.weight_table;
        self.codebook += o.codebook;
        self.index_stream += o.index_stream;
        self.weight_stream += o.weight_stream;
        self.bias += o.bias;
        self.checksum += o.checksum;
    }
}

/// Account of one layer section.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerAccount {
    pub name: String,
    pub kind: LayerKind,
    pub shape: Vec<u32>,
    /// Product of the shape.
    pub dense_len: u64,
    /// Number of nonzeros.
    pub nnz: u64,
    /// Filler entries in the gap stream.
    pub n_fillers: u64,
    /// Gap width (0 = no index stream: empty or fully dense layer).
    pub gap_bits: u8,
    /// How the index stream is stored (`None`: there is none).
    pub index_coding: Option<Coding>,
    /// How the weight stream is stored (`None`: no nonzeros).
    pub weight_coding: Option<Coding>,
    /// Weight index width.
    pub bits: u8,
    pub codebook_len: u64,
    pub bias_len: u64,
    pub bias_precision: BiasPrecision,
    /// Bytes of the section, its CRC included.
    pub bytes: ByteCounts,
}

impl LayerAccount {
    /// Fraction of weights kept.
    pub fn density(&self) -> f64 {
        self.nnz as f64 / self.dense_len.max(1) as f64
    }

    fn per_nonzero(&self, bits: f64) -> f64 {
        if self.nnz == 0 {
            0.0
        } else {
            bits / self.nnz as f64
        }
    }

    /// Index bits per nonzero before Huffman: `(nnz + fillers) * gap_bits / nnz`.
    pub fn index_bits_fixed(&self) -> f64 {
        self.per_nonzero(((self.nnz + self.n_fillers) * u64::from(self.gap_bits)) as f64)
    }

    /// Index bits per nonzero as stored (in [`Self::index_coding`]), table included.
    pub fn index_bits_stored(&self) -> f64 {
        self.per_nonzero(((self.bytes.index_table + self.bytes.index_stream) * 8) as f64)
    }

    /// Weight bits per nonzero in fixed width: the smallest width that holds every
    /// codebook index ([`fixed_width`] of the codebook length, at most `bits`; 0 for
    /// empty layers).
    pub fn weight_bits_fixed(&self) -> f64 {
        if self.nnz == 0 {
            return 0.0;
        }
        f64::from(fixed_width(
            self.codebook_len.min(u64::from(u32::MAX)) as u32
        ))
    }

    /// Weight bits per nonzero as stored (in [`Self::weight_coding`]), table included.
    pub fn weight_bits_stored(&self) -> f64 {
        self.per_nonzero(((self.bytes.weight_table + self.bytes.weight_stream) * 8) as f64)
    }

    /// Size of the uncompressed layer as dense f32 weights and biases.
    pub fn dense_f32_bytes(&self) -> u64 {
        (self.dense_len + self.bias_len) * 4
    }
}

/// Exact account of a `.dcz` file: `header.total()` plus the sum of
/// `layers[i].bytes.total()` equals `file_len`; `total` is that sum per field.
#[derive(Debug, Clone, PartialEq)]
pub struct FileAccount {
    /// Format version of the file (before 3, every stream is Huffman-coded).
    pub version: u16,
    pub file_len: u64,
    /// File header: magic, version, header length, header, header CRC.
    pub header: ByteCounts,
    pub layers: Vec<LayerAccount>,
    /// Sum of the header and all layers, field by field.
    pub total: ByteCounts,
}

impl FileAccount {
    /// Dense f32 size of all layers divided by the file size.
    pub fn compression_ratio(&self) -> f64 {
        let dense: u64 = self.layers.iter().map(LayerAccount::dense_f32_bytes).sum();
        dense as f64 / self.file_len.max(1) as f64
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::error::GapError;
    use crate::format::model::{LayerProblem, ModelError};

    pub(crate) fn sample_model() -> CompressedModel {
        // fc: 2x100 = 200 weights, positions with gaps up to 60.
        let fc_positions: Vec<u32> = vec![0, 1, 2, 5, 9, 40, 41, 100, 160, 199];
        CompressedModel {
            model: "lenet".into(),
            dataset: "mnist".into(),
            input_shape: vec![1, 28, 28],
            input_scale: 1.0 / 256.0,
            input_shift: 0.0,
            layers: vec![
                Layer {
                    name: "conv1".into(),
                    kind: LayerKind::Conv,
                    shape: vec![4, 1, 3, 3],
                    bits: 3,
                    codebook: vec![-0.75, -0.1, 0.1, 0.5, -0.0],
                    positions: vec![0, 3, 4, 7, 20, 35],
                    clusters: vec![0, 1, 1, 2, 3, 4],
                    bias: vec![0.1, -0.2, 0.3, f32::from_bits(1)],
                    bias_precision: BiasPrecision::F32,
                },
                Layer {
                    name: "fc".into(),
                    kind: LayerKind::Linear,
                    shape: vec![2, 100],
                    bits: 5,
                    codebook: vec![0.01, 0.02],
                    clusters: vec![0, 1, 0, 0, 1, 1, 0, 0, 0, 1],
                    positions: fc_positions,
                    bias: vec![BiasPrecision::F16.round(0.1), -2.5],
                    bias_precision: BiasPrecision::F16,
                },
                Layer {
                    name: "dense".into(),
                    kind: LayerKind::Linear,
                    shape: vec![3, 2],
                    bits: 1,
                    codebook: vec![1.0, -1.0],
                    positions: (0..6).collect(),
                    clusters: vec![0, 1, 1, 0, 0, 0],
                    bias: vec![],
                    bias_precision: BiasPrecision::F32,
                },
                Layer {
                    name: "empty".into(),
                    kind: LayerKind::Linear,
                    shape: vec![5],
                    bits: 8,
                    codebook: vec![],
                    positions: vec![],
                    clusters: vec![],
                    bias: vec![],
                    bias_precision: BiasPrecision::F16,
                },
            ],
            origin: None,
        }
    }

    /// Field-by-field equality with f32 compared by bits.
    pub(crate) fn bit_equal(a: &CompressedModel, b: &CompressedModel) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        a.model == b.model
            && a.dataset == b.dataset
            && a.input_shape == b.input_shape
            && a.input_scale.to_bits() == b.input_scale.to_bits()
            && a.input_shift.to_bits() == b.input_shift.to_bits()
            && a.layers.len() == b.layers.len()
            && a.layers.iter().zip(&b.layers).all(|(x, y)| {
                x.name == y.name
                    && x.kind == y.kind
                    && x.shape == y.shape
                    && x.bits == y.bits
                    && bits(&x.codebook) == bits(&y.codebook)
                    && x.positions == y.positions
                    && x.clusters == y.clusters
                    && bits(&x.bias) == bits(&y.bias)
                    && x.bias_precision == y.bias_precision
            })
    }

    /// A file with valid CRCs around hand-made header and layer bodies.
    pub(crate) fn assemble(header_body: &[u8], layers: &[Vec<u8>]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&VERSION.to_le_bytes());
        write_varint(&mut out, header_body.len() as u64);
        out.extend_from_slice(header_body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        for (i, b) in layers.iter().enumerate() {
            out.extend_from_slice(b);
            out.extend_from_slice(&layer_crc(i, b).to_le_bytes());
        }
        out
    }

    /// Header body for `layers` (model "m", dataset "d", input [1], no origin).
    pub(crate) fn header_for(layers: &[Vec<u8>]) -> Vec<u8> {
        let mut h = vec![1, b'm', 1, b'd', 1, 1];
        h.extend_from_slice(&1.0f32.to_le_bytes());
        h.extend_from_slice(&0.0f32.to_le_bytes());
        h.push(0); // no origin
        write_varint(&mut h, layers.len() as u64);
        for l in layers {
            write_varint(&mut h, l.len() as u64);
        }
        h
    }

    pub(crate) fn file_with_layer(body: Vec<u8>) -> Vec<u8> {
        let layers = vec![body];
        assemble(&header_for(&layers), &layers)
    }

    /// Layer body prefix up to and including `bits`.
    pub(crate) fn layer_prefix(shape: &[u64], bits: u8) -> Vec<u8> {
        let mut b = vec![1, b'x', 1, shape.len() as u8];
        for &d in shape {
            write_varint(&mut b, d);
        }
        b.push(bits);
        b
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let m = sample_model();
        let bytes = encode(&m).unwrap();
        let back = decode(&bytes).unwrap();
        assert!(bit_equal(&m, &back), "{m:?}\n{back:?}");
        // -0.0 centroid and the subnormal bias survived by bits.
        assert_eq!(back.layers[0].codebook[4].to_bits(), (-0.0f32).to_bits());
        assert_eq!(back.layers[0].bias[3].to_bits(), 1);
        // Encoding is deterministic.
        assert_eq!(encode(&back).unwrap(), bytes);
    }

    #[test]
    fn f16_bias_decodes_to_rounded_value() {
        let mut m = sample_model();
        m.layers[1].bias = vec![0.1, 1.0 / 3.0];
        let back = decode(&encode(&m).unwrap()).unwrap();
        assert_eq!(
            back.layers[1].bias,
            vec![
                BiasPrecision::F16.round(0.1),
                BiasPrecision::F16.round(1.0 / 3.0)
            ]
        );
        assert_ne!(back.layers[1].bias[0], 0.1);
    }

    #[test]
    fn dense_weights_after_decode() {
        let m = decode(&encode(&sample_model()).unwrap()).unwrap();
        let w = m.layers[2].dense_weights();
        assert_eq!(w, vec![1.0, -1.0, -1.0, 1.0, 1.0, 1.0]);
        let w0 = m.layers[0].dense_weights();
        assert_eq!(w0.len(), 36);
        assert_eq!((w0[0], w0[3], w0[35], w0[1]), (-0.75, -0.1, -0.0, 0.0));
        assert_eq!(m.layers[3].dense_weights(), vec![0.0; 5]);
    }

    #[test]
    fn account_sums_to_file_length() {
        let bytes = encode(&sample_model()).unwrap();
        let a = account(&bytes).unwrap();
        let sum: u64 = a.header.total() + a.layers.iter().map(|l| l.bytes.total()).sum::<u64>();
        assert_eq!(sum, bytes.len() as u64);
        assert_eq!(a.total.total(), bytes.len() as u64);
        assert_eq!(a.file_len, bytes.len() as u64);
        assert_eq!(a.total.checksum, 4 * 5);
        // Header: 4 magic + 2 version + 1 length varint + body.
        // body = "lenet"(6) + "mnist"(6) + rank(1) + 1,28,28 (3) + 8 floats + origin (1)
        //        + count(1) + 4 section lengths (1 each) = 30.
        assert_eq!(a.header.header, 4 + 2 + 1 + 30);
        let conv = &a.layers[0];
        assert_eq!(conv.bytes.codebook, 20);
        assert_eq!(conv.bytes.bias, 16);
        assert_eq!((conv.nnz, conv.dense_len), (6, 36));
        assert!(conv.gap_bits >= 1);
        let fc = &a.layers[1];
        assert_eq!(fc.bytes.bias, 4);
        assert_eq!(fc.bias_precision, BiasPrecision::F16);
        // Two centroids (of 2^5): 1 bit each in fixed width.
        assert_eq!(fc.weight_bits_fixed(), 1.0);
        // 10 nonzeros: 1-bit codes -> 2 bytes either way; Huffman would add a DENSE
        // table over 2 symbols = kind 2 + eg(1) 3 + width 3 + 2x1 = 10 bits -> 2 bytes.
        assert_eq!(fc.weight_coding, Some(Coding::Fixed));
        assert_eq!((fc.bytes.weight_table, fc.bytes.weight_stream), (0, 2));
        assert_eq!(fc.weight_bits_stored(), 16.0 / 10.0);
        let dense = &a.layers[2];
        assert_eq!((dense.gap_bits, dense.bytes.index_stream), (0, 0));
        assert_eq!(dense.index_coding, None);
        assert_eq!(dense.index_bits_fixed(), 0.0);
        let empty = &a.layers[3];
        assert_eq!((empty.index_coding, empty.weight_coding), (None, None));
        assert_eq!(empty.bytes.total(), empty.bytes.header + 4);
        // "empty": name 6 + kind 1 + rank 1 + dim 1 + bits 1 + cb 1 + nnz 1
        //          + gap 1 + prec 1 + bias len 1 = 15.
        assert_eq!(empty.bytes.header, 15);
    }

    #[test]
    fn account_matches_gap_chooser() {
        let m = sample_model();
        let a = account(&encode(&m).unwrap()).unwrap();
        for (l, la) in m.layers.iter().zip(&a.layers).take(2) {
            let c = choose_gap_bits(&l.positions).unwrap();
            assert_eq!(la.gap_bits, c.gap_bits);
            assert_eq!(la.n_fillers, c.n_fillers);
            let varint = crate::format::bytes::varint_len(c.n_fillers) as u64;
            assert_eq!(
                la.bytes.index_table + la.bytes.index_stream + varint,
                c.coded_bytes
            );
        }
    }

    #[test]
    fn empty_model_round_trips() {
        let m = CompressedModel {
            model: String::new(),
            dataset: String::new(),
            input_shape: vec![],
            input_scale: 1.0,
            input_shift: -0.5,
            layers: vec![],
            origin: None,
        };
        let bytes = encode(&m).unwrap();
        assert_eq!(bytes.len(), 4 + 2 + 1 + 13 + 4);
        assert!(bit_equal(&decode(&bytes).unwrap(), &m));
    }

    #[test]
    fn encoder_rejects_invalid_models() {
        let mut m = sample_model();
        m.layers[1].positions[3] = 1;
        assert_eq!(
            encode(&m),
            Err(FormatError::InvalidModel(ModelError::Layer {
                layer: 1,
                name: "fc".into(),
                problem: LayerProblem::NotIncreasing { index: 3 }
            }))
        );
        let mut m = sample_model();
        m.layers[0].clusters[0] = 5;
        assert!(matches!(
            encode(&m),
            Err(FormatError::InvalidModel(ModelError::Layer {
                problem: LayerProblem::ClusterOutOfRange { .. },
                ..
            }))
        ));
        let mut m = sample_model();
        m.layers[0].codebook = vec![0.0; 9];
        assert!(encode(&m).is_err());
        let mut m = sample_model();
        m.layers[0].shape = vec![u32::MAX, u32::MAX, 2];
        assert!(encode(&m).is_err());
    }

    #[test]
    fn truncation_at_every_offset_is_an_error() {
        let bytes = encode(&sample_model()).unwrap();
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix {n}");
            assert!(account(&bytes[..n]).is_err(), "prefix {n}");
            assert!(parse(&bytes[..n], false).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn single_byte_flips_never_panic_and_are_caught_by_crcs() {
        let bytes = encode(&sample_model()).unwrap();
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0x10, 0x80, 0xFF] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                assert!(decode(&b).is_err(), "flip {mask:#x} at {i}");
                // Without the CRCs the parser itself must cope.
                let _ = parse(&b, false);
            }
        }
    }

    #[test]
    fn trailing_garbage_magic_and_version() {
        let mut bytes = encode(&sample_model()).unwrap();
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(FormatError::TrailingBytes { count: 1 }));
        let mut bytes = encode(&sample_model()).unwrap();
        bytes[0] = b'X';
        assert_eq!(
            decode(&bytes),
            Err(FormatError::BadMagic { found: *b"XCZ\0" })
        );
        let mut bytes = encode(&sample_model()).unwrap();
        bytes[4] = 5;
        assert_eq!(
            decode(&bytes),
            Err(FormatError::UnsupportedVersion {
                found: 5,
                supported: 4
            })
        );
        bytes[4] = 0;
        assert!(matches!(
            decode(&bytes),
            Err(FormatError::UnsupportedVersion { found: 0, .. })
        ));
        assert!(matches!(decode(b""), Err(FormatError::Truncated { .. })));
    }

    /// A one-layer model whose biases hold `zeros` zeros among `n`.
    fn with_biases(n: usize, zeros: usize, precision: BiasPrecision) -> CompressedModel {
        let bias: Vec<f32> = (0..n)
            .map(|i| if i < zeros { 0.0 } else { 0.5 + i as f32 })
            .rev()
            .collect();
        let bias = precision.round_all(&bias);
        CompressedModel {
            model: "m".into(),
            dataset: "d".into(),
            input_shape: vec![3],
            input_scale: 1.0,
            input_shift: 0.0,
            layers: vec![Layer {
                name: "fc".into(),
                kind: LayerKind::Linear,
                shape: vec![n as u32, 3],
                bits: 1,
                codebook: vec![1.0],
                positions: vec![2],
                clusters: vec![0],
                bias,
                bias_precision: precision,
            }],
            origin: None,
        }
    }

    #[test]
    fn zero_biases_are_left_out_when_that_is_smaller() {
        for precision in [BiasPrecision::F16, BiasPrecision::F32, BiasPrecision::I8] {
            // i8 biases carry one exponent byte
            let e = u64::from(precision == BiasPrecision::I8);
            let w = precision.width() as u64;
            for (n, zeros) in [(11, 0), (11, 1), (11, 3), (11, 11), (16, 8), (1, 1)] {
                let m = with_biases(n, zeros, precision);
                let bytes = encode(&m).unwrap();
                let back = decode(&bytes).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&back.layers[0].bias), bits(&m.layers[0].bias));
                let dense = n as u64 * w + e;
                let sparse = (n as u64).div_ceil(8) + (n - zeros) as u64 * w + e;
                let stored = account(&bytes).unwrap().layers[0].bytes.bias;
                assert_eq!(
                    stored,
                    dense.min(sparse),
                    "{precision:?} n {n} zeros {zeros}"
                );
            }
        }
        // -0.0 is not a zero here: it is stored, and comes back bit for bit.
        let mut m = with_biases(16, 16, BiasPrecision::F32);
        m.layers[0].bias[3] = -0.0;
        let back = decode(&encode(&m).unwrap()).unwrap();
        assert_eq!(back.layers[0].bias[3].to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn sparse_biases_are_checked() {
        let m = with_biases(11, 9, BiasPrecision::F16);
        let good = encode(&m).unwrap();
        let (_, acct) = parse(&good, false).unwrap();
        // The layer section ends: precision byte, bias_len, 2-byte bitmap, 2 × f16.
        let section_end = good.len() - 4;
        let bitmap_hi = section_end - 4 - 1;
        assert_eq!(acct.layers[0].bytes.bias, 2 + 4);
        // a bit past the last bias
        let mut bad = good.clone();
        bad[bitmap_hi] |= 0x80;
        assert!(matches!(
            parse(&bad, false),
            Err(FormatError::OutOfRange {
                what: "bias bitmap bits past the last bias",
                ..
            })
        ));
        // a bitmap promising more values than there are bytes
        let mut bad = good.clone();
        bad[bitmap_hi] |= 0x04;
        assert!(parse(&bad, false).is_err());
        // version 1 knows no sparse biases
        let mut v1 = encode_version(&m, 2);
        v1[4] = 1;
        assert!(matches!(
            parse(&v1, false),
            Err(FormatError::OutOfRange {
                what: "bias precision",
                ..
            })
        ));
        // and still reads its own dense ones
        let v1 = encode_version(&m, 1);
        let (back, _) = parse(&v1, true).unwrap();
        assert!(bit_equal(&back, &m));
    }

    #[test]
    fn version_1_and_2_files_still_decode() {
        let m = sample_model();
        for version in [1, 2] {
            let old = encode_version(&m, version);
            assert_eq!(u16::from_le_bytes([old[4], old[5]]), version);
            let back = decode(&old).unwrap();
            assert!(bit_equal(&back, &m), "version {version}");
            let a = account(&old).unwrap();
            assert_eq!(a.total.total(), old.len() as u64);
            assert!(a
                .layers
                .iter()
                .all(|l| l.index_coding != Some(Coding::Fixed)
                    && l.weight_coding != Some(Coding::Fixed)));
            // Written again, the file is version 3 and never larger.
            let again = encode(&back).unwrap();
            assert!(again.len() <= old.len(), "{} > {}", again.len(), old.len());
        }
    }

    #[test]
    fn committed_files_of_older_versions_decode() {
        // A version 1 file (the fuzz corpus) and a version 2 file (a LeNet-5 search's result
        // at 154.9×, written before version 3).
        let files: [(&str, &[u8], u16); 2] = [
            (
                "fuzz/corpus/dcz_decode/small.dcz",
                include_bytes!("../../fuzz/corpus/dcz_decode/small.dcz"),
                1,
            ),
            (
                "tests/fixtures/lenet-v2.dcz",
                include_bytes!("../../tests/fixtures/lenet-v2.dcz"),
                2,
            ),
        ];
        for (name, old, version) in files {
            assert_eq!(u16::from_le_bytes([old[4], old[5]]), version, "{name}");
            let m = decode(old).unwrap_or_else(|e| panic!("{name}: {e}"));
            let again = encode(&m).unwrap();
            assert!(bit_equal(&decode(&again).unwrap(), &m), "{name}");
            // Version 4 adds one byte: the header's origin flag.
            assert!(
                again.len() <= old.len() + 1,
                "{name}: {} > {} + 1",
                again.len(),
                old.len()
            );
        }
    }

    #[test]
    fn stream_flags_are_checked() {
        let m = sample_model();
        let good = encode(&m).unwrap();
        let a = account(&good).unwrap();
        // conv1 stores both streams in fixed width: 6 nonzeros over 5 centroids.
        let conv = &a.layers[0];
        assert_eq!(
            (conv.index_coding, conv.weight_coding),
            (Some(Coding::Fixed), Some(Coding::Fixed))
        );
        // 6 nonzeros × 3 bits
        assert_eq!(conv.bytes.weight_stream, 3);
        // The gap byte of conv1 follows its nonzero count: name 6, kind 1, rank 1, dims 4,
        // bits 1, codebook 1 + 20, nnz 1.
        let at = a.header.total() as usize + 6 + 1 + 1 + 4 + 1 + 21 + 1;
        assert_eq!(good[at], conv.gap_bits | INDEX_FIXED | WEIGHT_FIXED);
        // Read as version 2, the flags are a gap width out of range (version 3's layout is
        // version 2's header).
        let mut v2 = encode_version(&m, 3);
        v2[4] = 2;
        assert!(reseal(&mut v2));
        assert!(matches!(
            decode(&v2),
            Err(FormatError::OutOfRange {
                section: Section::Layer(0),
                what: "gap bits",
                ..
            })
        ));
        // The reserved bit above the gap width.
        let mut bad = good.clone();
        bad[at] |= 0x20;
        assert!(reseal(&mut bad));
        assert!(matches!(
            decode(&bad),
            Err(FormatError::OutOfRange {
                what: "gap bits",
                ..
            })
        ));
        // Without its flag, the fixed-width weight stream is read as a Huffman table.
        let mut bad = good.clone();
        bad[at] &= !WEIGHT_FIXED;
        assert!(reseal(&mut bad));
        assert!(decode(&bad).is_err());
        // Flags on layers without those streams: the fully dense and the empty layer.
        for (layer, flag) in [(2, INDEX_FIXED), (3, WEIGHT_FIXED), (3, INDEX_FIXED)] {
            let mut mm = m.clone();
            mm.layers.truncate(layer + 1);
            mm.layers.drain(..layer);
            let mut bad = encode(&mm).unwrap();
            let a = account(&bad).unwrap();
            let l = &a.layers[0];
            // The gap byte is the last header byte before the streams.
            let name = 1 + l.name.len();
            let at = a.header.total() as usize
                + name
                + 2
                + l.shape.len()
                + 1
                + 1
                + 4 * l.codebook_len as usize
                + 1;
            assert_eq!(bad[at] & GAP_BITS_MASK, 0);
            bad[at] |= flag;
            assert!(reseal(&mut bad));
            assert!(
                matches!(decode(&bad), Err(FormatError::Inconsistent { .. })),
                "layer {layer} flag {flag:#x}: {:?}",
                decode(&bad)
            );
        }
    }

    #[test]
    fn truncated_fixed_streams_are_refused() {
        // One layer, 40 nonzeros of 64 over 3 centroids: the weight stream is 2 bits each.
        let l = Layer {
            name: "fc".into(),
            kind: LayerKind::Linear,
            shape: vec![64],
            bits: 2,
            codebook: vec![-1.0, 0.5, 1.0],
            positions: (0..40).map(|i| i + i / 3).collect(),
            clusters: (0..40).map(|i| i % 3).collect(),
            bias: vec![],
            bias_precision: BiasPrecision::F32,
        };
        let m = CompressedModel {
            model: "m".into(),
            dataset: "d".into(),
            input_shape: vec![64],
            input_scale: 1.0,
            input_shift: 0.0,
            layers: vec![l],
            origin: None,
        };
        let good = encode(&m).unwrap();
        let a = account(&good).unwrap();
        assert_eq!(a.layers[0].weight_coding, Some(Coding::Fixed));
        assert_eq!(a.layers[0].bytes.weight_stream, 10);
        // A value 3 (past the codebook) in the weight stream: the bias bytes follow it.
        let end = good.len() - 4 - 2;
        let mut bad = good.clone();
        bad[end - 1] |= 0b1100_0000;
        assert!(reseal(&mut bad));
        assert!(matches!(
            decode(&bad),
            Err(FormatError::Fixed {
                section: Section::Layer(0),
                stream: Stream::Weight,
                source: crate::format::FixedError::SymbolOutOfRange {
                    value: 3,
                    alphabet: 3
                },
            })
        ));
        // The section cut inside the weight stream (4 of its 10 bytes and the bias gone).
        let body = good[a.header.total() as usize..end - 4].to_vec();
        assert!(matches!(
            decode(&file_with_layer(body)),
            Err(FormatError::Fixed {
                stream: Stream::Weight,
                source: crate::format::FixedError::CountExceedsData {
                    count: 40,
                    width: 2,
                    needed_bits: 80,
                    available_bits: 48
                },
                ..
            })
        ));
    }

    #[test]
    fn crafted_absurd_counts_are_rejected() {
        // Huge layer count.
        let mut h = header_for(&[]);
        h.pop();
        write_varint(&mut h, 1_000_000_000);
        assert!(matches!(
            decode(&assemble(&h, &[])),
            Err(FormatError::OutOfRange {
                section: Section::Header,
                what: "layer count",
                ..
            })
        ));
        // Plausible count, but no table behind it.
        let mut h = header_for(&[]);
        h.pop();
        write_varint(&mut h, 4000);
        assert!(matches!(
            decode(&assemble(&h, &[])),
            Err(FormatError::Truncated {
                what: "layer table",
                ..
            })
        ));
        // Section length 10^15 in the layer table.
        let mut h = header_for(&[]);
        h.pop();
        write_varint(&mut h, 1);
        write_varint(&mut h, 1_000_000_000_000_000);
        assert!(matches!(
            decode(&assemble(&h, &[])),
            Err(FormatError::Truncated {
                what: "layer sections",
                ..
            })
        ));
        // Shape whose product is ~1.8e19.
        let b = layer_prefix(&[u64::from(u32::MAX); 3], 4);
        assert!(matches!(
            decode(&file_with_layer(b)),
            Err(FormatError::OutOfRange {
                section: Section::Layer(0),
                what: "dense size",
                ..
            })
        ));
        // Dimension above u32.
        let b = layer_prefix(&[1 << 40], 4);
        assert!(matches!(
            decode(&file_with_layer(b)),
            Err(FormatError::OutOfRange {
                what: "shape dimension",
                ..
            })
        ));
        // A 65535x65535 layer is over the default cap on the dense size.
        let mut b = layer_prefix(&[65_535, 65_535], 4);
        b.push(1);
        b.extend_from_slice(&1.0f32.to_le_bytes());
        write_varint(&mut b, 4_000_000_000);
        b.push(16);
        write_varint(&mut b, 0);
        b.extend_from_slice(&[0; 16]);
        assert!(matches!(
            decode(&file_with_layer(b.clone())),
            Err(FormatError::InvalidModel(ModelError::TooLarge {
                total: 4_294_836_225,
                limit: MAX_TOTAL_DENSE
            }))
        ));
        // Under a larger cap: nnz of 4e9, one centroid, no data behind.
        assert!(matches!(
            decode_with_limit(&file_with_layer(b), MAX_DENSE_LEN),
            Err(FormatError::CountExceedsData {
                what: "nonzero count",
                count: 4_000_000_000,
                ..
            })
        ));
        // Fully dense 65535x65535 layer (no index stream): still needs a bit
        // per nonzero.
        let mut b = layer_prefix(&[65_535, 65_535], 4);
        b.push(1);
        b.extend_from_slice(&1.0f32.to_le_bytes());
        write_varint(&mut b, 65_535 * 65_535);
        b.push(0);
        b.extend_from_slice(&[0; 16]);
        assert!(matches!(
            decode_with_limit(&file_with_layer(b), MAX_DENSE_LEN),
            Err(FormatError::CountExceedsData { .. })
        ));
        // Huge filler count.
        let mut b = layer_prefix(&[1000], 4);
        b.push(1);
        b.extend_from_slice(&1.0f32.to_le_bytes());
        write_varint(&mut b, 1);
        b.push(3);
        write_varint(&mut b, u64::MAX);
        assert!(matches!(
            decode(&file_with_layer(b)),
            Err(FormatError::CountExceedsData {
                what: "filler count",
                ..
            })
        ));
        // nnz above the dense size.
        let mut b = layer_prefix(&[10], 4);
        b.push(0);
        write_varint(&mut b, 11);
        assert!(matches!(
            decode(&file_with_layer(b)),
            Err(FormatError::OutOfRange {
                what: "nonzero count",
                value: 11,
                ..
            })
        ));
        // Codebook longer than 2^bits, and one whose bytes are missing.
        let mut b = layer_prefix(&[10], 2);
        write_varint(&mut b, 5);
        assert!(matches!(
            decode(&file_with_layer(b)),
            Err(FormatError::OutOfRange {
                what: "codebook length",
                ..
            })
        ));
        let mut b = layer_prefix(&[10], 16);
        write_varint(&mut b, 65_536);
        assert!(matches!(
            decode(&file_with_layer(b)),
            Err(FormatError::Truncated {
                what: "codebook",
                ..
            })
        ));
        // Bias length 2^60.
        let mut b = layer_prefix(&[10], 4);
        b.push(0); // codebook length
        b.push(0); // nnz
        b.push(0); // gap bits
        b.push(0); // bias precision
        write_varint(&mut b, 1 << 60);
        assert!(matches!(
            decode(&file_with_layer(b)),
            Err(FormatError::Truncated { what: "bias", .. })
        ));
        // gap_bits 17, and gap_bits set on an empty layer.
        let mut b = layer_prefix(&[10], 4);
        b.push(1);
        b.extend_from_slice(&1.0f32.to_le_bytes());
        b.push(1);
        b.push(17);
        assert!(matches!(
            decode(&file_with_layer(b)),
            Err(FormatError::OutOfRange {
                what: "gap bits",
                value: 17,
                ..
            })
        ));
        let mut b = layer_prefix(&[10], 4);
        b.extend_from_slice(&[0, 0, 5]);
        assert!(matches!(
            decode(&file_with_layer(b)),
            Err(FormatError::Inconsistent { .. })
        ));
    }

    #[test]
    fn checksum_valid_but_inconsistent_files_are_refused() {
        // fc1's bias of 5 values on a 300-output layer.
        let mut m = sample_model();
        m.layers[1].bias = vec![0.5; 5];
        let bytes = encode_unchecked(&m);
        assert!(matches!(
            decode(&bytes),
            Err(FormatError::InvalidModel(ModelError::Layer {
                layer: 1,
                problem: LayerProblem::BiasLength { len: 5, outputs: 2 },
                ..
            }))
        ));
        // Two layers with one name.
        let mut m = sample_model();
        m.layers[2].name = "conv1".into();
        assert!(matches!(
            decode(&encode_unchecked(&m)),
            Err(FormatError::InvalidModel(ModelError::DuplicateName {
                first: 0,
                second: 2,
                ..
            }))
        ));
        // Input scales that turn pixels into infinities.
        let mut m = sample_model();
        m.input_scale = 3.0e38;
        assert!(matches!(
            decode(&encode_unchecked(&m)),
            Err(FormatError::InvalidModel(ModelError::InputNorm { .. }))
        ));
        // The 67-byte file: an empty 65535x65535 layer, refused before anything of
        // that size is made, and accepted under a larger cap.
        let mut b = layer_prefix(&[65_535, 65_535], 4);
        b.extend_from_slice(&[0, 0, 0, 0, 0]);
        let file = file_with_layer(b);
        assert!(matches!(
            decode(&file),
            Err(FormatError::InvalidModel(ModelError::TooLarge { .. }))
        ));
        assert!(decode_with_limit(&file, 1 << 33).is_ok());
        assert!(matches!(
            decode_with_limit(&encode(&sample_model()).unwrap(), 100),
            Err(FormatError::InvalidModel(ModelError::TooLarge {
                limit: 100,
                ..
            }))
        ));
    }

    fn encode_unchecked(m: &CompressedModel) -> Vec<u8> {
        super::encode_unchecked(m).unwrap()
    }

    #[test]
    fn reseal_makes_a_mutated_file_pass_its_checksums() {
        let good = encode(&sample_model()).unwrap();
        let mut b = good.clone();
        assert!(reseal(&mut b));
        assert_eq!(b, good);
        // A flipped bit in the last layer's bias: the checksum would catch it; resealed,
        // the parser itself decides.
        let n = b.len();
        b[n - 6] ^= 0x40;
        assert!(matches!(
            decode(&b),
            Err(FormatError::ChecksumMismatch { .. })
        ));
        assert!(reseal(&mut b));
        assert!(!matches!(
            decode(&b),
            Err(FormatError::ChecksumMismatch { .. })
        ));
        assert!(!reseal(&mut b[..10].to_vec()));
    }

    #[test]
    fn crafted_valid_layer_by_hand() {
        // 8 weights, positions [1, 6] with gap_bits 2: gaps 2, 5 -> symbols
        // 1, 3(filler), 1. Gap table: DENSE last=3 (eg "00100"), width 1,
        // lengths 0,1,0,1 -> 10 00100 001 0101 = 14 bits -> 2 bytes.
        // Canonical codes: symbol 1 = "0", symbol 3 = "1". Stream "010" ->
        // 0b0100_0000. Clusters [0, 0] with a one-entry codebook: SINGLE
        // table eg(0) = "1": 01 1 -> 0b0110_0000; stream "00".
        let mut b = layer_prefix(&[8], 1);
        b.push(1);
        b.extend_from_slice(&0.5f32.to_le_bytes());
        b.push(2); // nnz
        b.push(2); // gap bits
        b.push(1); // fillers
        b.extend_from_slice(&[0b1000_1000, 0b0101_0100]);
        b.push(0b0100_0000);
        b.extend_from_slice(&[0b0110_0000, 0b0000_0000]);
        b.extend_from_slice(&[0, 0]); // bias f32, none
        let m = decode(&file_with_layer(b.clone())).unwrap();
        let l = &m.layers[0];
        assert_eq!(l.positions, vec![1, 6]);
        assert_eq!(l.clusters, vec![0, 0]);
        assert_eq!(
            l.dense_weights(),
            vec![0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0]
        );
        // Now claim a 2nd filler: the zero padding decodes as one more
        // nonzero, which the gap decoder rejects.
        b[13] = 2;
        assert!(matches!(
            decode(&file_with_layer(b.clone())),
            Err(FormatError::Huffman {
                stream: Stream::Index,
                ..
            }) | Err(FormatError::Gaps { .. })
        ));
        // Or put the nonzero past the end: dense size 6.
        let mut c = b.clone();
        c[13] = 1;
        c[4] = 6;
        assert_eq!(
            decode(&file_with_layer(c)),
            Err(FormatError::Gaps {
                section: Section::Layer(0),
                source: GapError::PositionOutOfRange {
                    index: 1,
                    position: 6,
                    dense_len: 6
                }
            })
        );
    }

    #[test]
    fn origin_round_trips_and_older_versions_have_none() {
        let mut m = sample_model();
        m.origin = Some(Origin {
            config: "tiny-cnn.toml".into(),
            sha256: [0xab; 32],
        });
        let bytes = encode(&m).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.origin, m.origin);
        // 1 flag byte + "tiny-cnn.toml" (1 + 13) + 32 against a file without origin.
        let none = encode(&CompressedModel {
            origin: None,
            ..m.clone()
        })
        .unwrap();
        assert_eq!(bytes.len(), none.len() + 46);
        assert_eq!(decode(&none).unwrap().origin, None);
        assert_eq!(decode(&encode_version(&m, 3)).unwrap().origin, None);
        // A flag other than 0 or 1 is refused. (reseal fixes the header checksum, then
        // cannot read the layer table past the bad flag; the layers' checksums still hold.)
        let at = 7 + m.model.len() + 1 + m.dataset.len() + 1 + 1 + m.input_shape.len() + 8;
        let mut bad = none.clone();
        assert_eq!(bad[at], 0, "the origin flag");
        bad[at] = 2;
        assert!(!reseal(&mut bad));
        let e = decode(&bad).unwrap_err().to_string();
        assert!(e.contains("origin flag"), "{e}");
    }

    #[test]
    fn worked_example_of_the_docs() {
        // docs/format.md §11: keep the two in sync.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        let m = CompressedModel {
            model: "tiny".into(),
            dataset: "demo".into(),
            input_shape: vec![4],
            input_scale: 1.0,
            input_shift: 0.0,
            layers: vec![Layer {
                name: "fc".into(),
                kind: LayerKind::Linear,
                shape: vec![2, 4],
                bits: 2,
                codebook: vec![-0.5, 0.25],
                positions: vec![1, 6],
                clusters: vec![1, 0],
                bias: vec![0.5, -1.0],
                bias_precision: BiasPrecision::F16,
            }],
            origin: None,
        };
        let hex = |h: &str| -> Vec<u8> {
            h.split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect()
        };
        let want = hex(
            "44 43 5a 00 04 00 17 04 74 69 6e 79 04 64 65 6d 6f 01 04 00 00 80 3f \
             00 00 00 00 00 01 1c 3b d2 41 1d 02 66 63 01 02 02 04 02 02 00 00 00 bf \
             00 00 80 3e 02 c1 05 bc 80 01 02 00 38 00 bc fd 2a 20 49",
        );
        let bytes = encode(&m).unwrap();
        assert_eq!(bytes, want);
        // Version 3, as the previous edition of the document showed it: no origin byte.
        let v3 = hex(
            "44 43 5a 00 03 00 16 04 74 69 6e 79 04 64 65 6d 6f 01 04 00 00 80 3f \
             00 00 00 00 01 1c ce 64 96 d6 02 66 63 01 02 02 04 02 02 00 00 00 bf \
             00 00 80 3e 02 c1 05 bc 80 01 02 00 38 00 bc fd 2a 20 49",
        );
        assert_eq!(encode_version(&m, 3), v3);
        assert!(bit_equal(&decode(&v3).unwrap(), &decode(&bytes).unwrap()));
        // The same model in version 2 (both streams Huffman-coded), as the previous
        // edition of the document showed it: still read, to the same model.
        let v2 = hex(
            "44 43 5a 00 02 00 16 04 74 69 6e 79 04 64 65 6d 6f 01 04 00 00 80 3f \
             00 00 00 00 01 20 47 88 72 5c 02 66 63 01 02 02 04 02 02 00 00 00 bf \
             00 00 80 3e 02 01 05 91 c0 bc 91 c0 80 01 02 00 38 00 bc f1 c2 22 05",
        );
        assert_eq!(encode_version(&m, 2), v2);
        assert!(bit_equal(&decode(&v2).unwrap(), &decode(&bytes).unwrap()));
        assert_eq!(
            decode(&bytes).unwrap().layers[0].dense_weights(),
            vec![0.0, 0.25, 0.0, 0.0, 0.0, 0.0, -0.5, 0.0]
        );
        let a = account(&bytes).unwrap();
        assert_eq!(
            a.header,
            ByteCounts {
                header: 30,
                checksum: 4,
                ..ByteCounts::default()
            }
        );
        let l = &a.layers[0];
        assert_eq!(
            l.bytes,
            ByteCounts {
                header: 14,
                index_table: 0,
                weight_table: 0,
                codebook: 8,
                index_stream: 1,
                weight_stream: 1,
                bias: 4,
                checksum: 4,
            }
        );
        assert_eq!((l.gap_bits, l.n_fillers), (1, 5));
        assert_eq!(
            (l.index_coding, l.weight_coding),
            (Some(Coding::Fixed), Some(Coding::Fixed))
        );
        assert_eq!(l.index_bits_fixed(), 3.5);
        assert_eq!(l.index_bits_stored(), 4.0);
        assert_eq!(l.weight_bits_fixed(), 1.0);
        assert_eq!(l.weight_bits_stored(), 4.0);
        assert_eq!(a.total.total(), 66);
        // In version 2 the two Huffman tables cost 2 bytes each.
        let a2 = account(&v2).unwrap();
        assert_eq!(a2.total.total(), 69);
        assert_eq!(a2.layers[0].bytes.huffman_tables(), 4);
        assert_eq!(a2.layers[0].weight_coding, Some(Coding::Huffman));
    }

    #[test]
    fn decoded_non_finite_values_are_rejected() {
        let mut b = layer_prefix(&[4], 1);
        b.push(1);
        b.extend_from_slice(&f32::NAN.to_le_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            decode(&file_with_layer(b)),
            Err(FormatError::InvalidModel(ModelError::Layer {
                problem: LayerProblem::NonFiniteCodebook { index: 0 },
                ..
            }))
        ));
    }
}
