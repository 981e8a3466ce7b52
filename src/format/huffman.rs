//! Canonical, length-limited Huffman coding over `u32` symbols `0..alphabet`
//! (alphabet at most [`MAX_ALPHABET`] = 2^16): code lengths from frequencies
//! (package-merge, optimal under the [`MAX_CODE_LEN`] = 24 bit limit),
//! canonical code assignment, a compact table serialisation, and a
//! table-driven decoder.
//!
//! * **Canonical codes**: used symbols are sorted by (code length, symbol
//!   value); the first gets the all-zero code of its length, each next one the
//!   previous code plus one, shifted left when the length grows (DEFLATE,
//!   RFC 1951 §3.2.2). Code words are written MSB first ([`super::bits`]).
//! * **Single used symbol**: it gets the 1-bit code `0`, so every coded
//!   symbol costs at least one bit. The decoder relies on that to bound every
//!   symbol count by the bits actually present.
//! * **Table** (bit-packed, MSB first, zero-padded to a byte boundary):
//!   a 2-bit kind, then
//!   - `0` EMPTY: nothing (no symbols are coded);
//!   - `1` SINGLE: `eg(symbol)`;
//!   - `2` DENSE: `eg(last_symbol)`, a 3-bit width `w` (1..=5), then
//!     `last_symbol + 1` fields of `w` bits: the code length of every symbol
//!     `0..=last_symbol` (0 = unused);
//!   - `3` SPARSE: `eg(n_used - 1)`, a 3-bit width `w`, then per used symbol
//!     in increasing order `eg(symbol - previous - 1)` (previous starts at -1)
//!     and its code length in `w` bits (1..=24).
//!
//!   `eg(x)` is the order-0 Exp-Golomb code ([`super::bits`]). The encoder
//!   writes whichever of DENSE/SPARSE is shorter (DENSE on a tie).
//!   The reader checks symbols against the alphabet, lengths against the
//!   24-bit limit and the Kraft inequality (the code may be incomplete, never
//!   over-subscribed).

use super::bits::{exp_golomb_len, BitReader, BitWriter, BitsError};
use thiserror::Error;

/// Longest code word, in bits.
pub const MAX_CODE_LEN: u32 = 24;
/// Largest alphabet (number of distinct symbol values) supported.
pub const MAX_ALPHABET: u32 = 1 << 16;

/// Bits resolved by the decoder's lookup table in one step.
const LUT_BITS: u32 = 10;

const KIND_EMPTY: u32 = 0;
const KIND_SINGLE: u32 = 1;
const KIND_DENSE: u32 = 2;
const KIND_SPARSE: u32 = 3;

/// Errors of Huffman table parsing, encoding and decoding.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HuffmanError {
    /// Underlying bit stream error (truncation, padding).
    #[error(transparent)]
    Bits(#[from] BitsError),
    /// The alphabet is larger than [`MAX_ALPHABET`].
    #[error("alphabet of {alphabet} symbols exceeds the maximum {MAX_ALPHABET}")]
    AlphabetTooLarge { alphabet: u64 },
    /// A symbol (in the data or in a table) is outside the alphabet.
    #[error("symbol {symbol} outside the alphabet of {alphabet} symbols")]
    SymbolOutOfRange { symbol: u64, alphabet: u32 },
    /// The encoder was asked to code a symbol that has no code word.
    #[error("symbol {symbol} has no code word")]
    SymbolNotInCode { symbol: u32 },
    /// A stored table is malformed.
    #[error("invalid Huffman table: {reason}")]
    InvalidTable { reason: &'static str },
    /// The bits at the current position are not a code word.
    #[error("invalid code word in stream")]
    InvalidCode,
    /// More symbols were requested than the remaining bits could hold.
    #[error("{count} symbols requested but only {available_bits} bits remain")]
    CountExceedsData { count: u64, available_bits: u64 },
}

/// Computes optimal length-limited code lengths (package-merge) for symbols
/// with the given frequencies. Returns one length per symbol, 0 for symbols
/// with frequency 0. A single used symbol gets length 1. (If more than
/// `2^max_len` symbols are used no such code exists; the flat code of
/// `ceil(log2 n)` bits is returned instead. Cannot happen with
/// [`MAX_CODE_LEN`] and [`MAX_ALPHABET`].)
pub fn code_lengths(freqs: &[u64], max_len: u32) -> Vec<u8> {
    let mut lengths = vec![0u8; freqs.len()];
    let mut used: Vec<(u64, usize)> = freqs
        .iter()
        .enumerate()
        .filter(|(_, &f)| f > 0)
        .map(|(s, &f)| (f, s))
        .collect();
    match used.len() {
        0 => return lengths,
        1 => {
            lengths[used[0].1] = 1;
            return lengths;
        }
        _ => {}
    }
    used.sort_unstable();
    let weights: Vec<u64> = used.iter().map(|&(f, _)| f).collect();
    let max_len = max_len.clamp(1, 32);
    // Package-merge needs n <= 2^max_len; fall back to the flat code if not.
    let lens = if (weights.len() as u64) <= (1u64 << max_len) {
        package_merge(&weights, max_len)
    } else {
        let flat = (64 - (weights.len() as u64 - 1).leading_zeros()) as u8;
        vec![flat; weights.len()]
    };
    for (&(_, s), l) in used.iter().zip(lens) {
        lengths[s] = l;
    }
    lengths
}

/// Package-merge (Larmore & Hirschberg) on ascending weights `w` (n >= 2,
/// n <= 2^max_len). Returns the code length of each weight, in order.
fn package_merge(w: &[u64], max_len: u32) -> Vec<u8> {
    let n = w.len();
    // flags[j - 1][k]: item k of list j (j >= 1) is a package (true) or a leaf.
    // List 0 is the leaves alone.
    let mut flags: Vec<Vec<bool>> = Vec::with_capacity(max_len as usize);
    let mut prev: Vec<u64> = w.to_vec();
    for _ in 1..max_len {
        let packages: Vec<u64> = prev.chunks_exact(2).map(|c| c[0] + c[1]).collect();
        let mut merged = Vec::with_capacity(n + packages.len());
        let mut f = Vec::with_capacity(n + packages.len());
        let (mut i, mut j) = (0, 0);
        while i < n || j < packages.len() {
            // Leaves first on ties.
            if j >= packages.len() || (i < n && w[i] <= packages[j]) {
                merged.push(w[i]);
                f.push(false);
                i += 1;
            } else {
                merged.push(packages[j]);
                f.push(true);
                j += 1;
            }
        }
        flags.push(f);
        prev = merged;
    }
    // Select the first 2n - 2 items of the last list and walk down: each
    // selected leaf adds one to its length; selected packages select the
    // first 2p items of the list below.
    let mut lens = vec![0u8; n];
    let mut m = 2 * n - 2;
    for j in (0..max_len as usize).rev() {
        let packages_in = if j == 0 {
            0
        } else {
            let f = &flags[j - 1];
            let m2 = m.min(f.len());
            f[..m2].iter().filter(|&&p| p).count()
        };
        let leaves_in = (m - packages_in).min(n);
        for l in &mut lens[..leaves_in] {
            *l += 1;
        }
        m = 2 * packages_in;
    }
    lens
}

/// A canonical Huffman code: a length and code word per used symbol.
/// Stored sparsely, so a table naming a few large symbols stays small in
/// memory too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuffmanCode {
    /// Used symbols in increasing order.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    symbol: u32,
    len: u8,
    code: u32,
}

impl HuffmanCode {
    /// Builds the optimal length-limited code for symbol frequencies
    /// `freqs[s]`, `freqs.len()` being the alphabet size.
    pub fn from_frequencies(freqs: &[u64]) -> Result<Self, HuffmanError> {
        if freqs.len() as u64 > u64::from(MAX_ALPHABET) {
            return Err(HuffmanError::AlphabetTooLarge {
                alphabet: freqs.len() as u64,
            });
        }
        Self::from_lengths(&code_lengths(freqs, MAX_CODE_LEN))
    }

    /// Builds the code for a symbol stream over `0..alphabet`.
    pub fn from_symbols(symbols: &[u32], alphabet: u32) -> Result<Self, HuffmanError> {
        Self::from_frequencies(&frequencies(symbols, alphabet)?)
    }

    /// Assigns canonical code words to the given lengths (0 = unused). Fails
    /// if a length exceeds [`MAX_CODE_LEN`] or the lengths over-subscribe the
    /// code space (Kraft sum > 1).
    pub fn from_lengths(lengths: &[u8]) -> Result<Self, HuffmanError> {
        if lengths.len() as u64 > u64::from(MAX_ALPHABET) {
            return Err(HuffmanError::AlphabetTooLarge {
                alphabet: lengths.len() as u64,
            });
        }
        let used = lengths
            .iter()
            .enumerate()
            .filter(|(_, &l)| l > 0)
            .map(|(s, &l)| (s as u32, l))
            .collect();
        Self::from_used(used)
    }

    /// Canonical codes for `(symbol, length)` pairs with strictly increasing
    /// symbols and lengths in 1..=24.
    fn from_used(used: Vec<(u32, u8)>) -> Result<Self, HuffmanError> {
        let mut count = [0u32; MAX_CODE_LEN as usize + 1];
        let mut kraft: u64 = 0;
        let mut prev: Option<u32> = None;
        for &(s, l) in &used {
            if prev.is_some_and(|p| s <= p) {
                return Err(HuffmanError::InvalidTable {
                    reason: "symbols not in increasing order",
                });
            }
            prev = Some(s);
            if l == 0 || u32::from(l) > MAX_CODE_LEN {
                return Err(HuffmanError::InvalidTable {
                    reason: "code length outside 1..=24",
                });
            }
            count[l as usize] += 1;
            kraft += 1u64 << (MAX_CODE_LEN - u32::from(l));
        }
        if kraft > 1u64 << MAX_CODE_LEN {
            return Err(HuffmanError::InvalidTable {
                reason: "code lengths over-subscribe the code space",
            });
        }
        let mut next = [0u32; MAX_CODE_LEN as usize + 1];
        let mut code = 0u32;
        for l in 1..=MAX_CODE_LEN as usize {
            code = (code + count[l - 1]) << 1;
            next[l] = code;
        }
        let entries = used
            .into_iter()
            .map(|(symbol, len)| {
                let code = next[len as usize];
                next[len as usize] += 1;
                Entry { symbol, len, code }
            })
            .collect();
        Ok(Self { entries })
    }

    /// Code length per symbol `0..=last used symbol` (0 = unused).
    pub fn lengths(&self) -> Vec<u8> {
        let n = self.entries.last().map_or(0, |e| e.symbol as usize + 1);
        let mut out = vec![0u8; n];
        for e in &self.entries {
            out[e.symbol as usize] = e.len;
        }
        out
    }

    /// Canonical code word of `symbol` and its length, if it has one.
    pub fn code(&self, symbol: u32) -> Option<(u32, u8)> {
        self.entries
            .binary_search_by_key(&symbol, |e| e.symbol)
            .ok()
            .map(|i| (self.entries[i].code, self.entries[i].len))
    }

    /// Number of symbols with a code word.
    pub fn used_symbols(&self) -> usize {
        self.entries.len()
    }

    /// Exact number of bits the symbols with frequencies `freqs` take
    /// (symbols without a code word are not counted).
    pub fn stream_bits(&self, freqs: &[u64]) -> u64 {
        self.entries
            .iter()
            .map(|e| freqs.get(e.symbol as usize).copied().unwrap_or(0) * u64::from(e.len))
            .sum()
    }

    /// Appends the code words of `symbols`.
    pub fn encode(&self, symbols: &[u32], w: &mut BitWriter) -> Result<(), HuffmanError> {
        let n = self.entries.last().map_or(0, |e| e.symbol as usize + 1);
        let mut lut = vec![(0u32, 0u8); n];
        for e in &self.entries {
            lut[e.symbol as usize] = (e.code, e.len);
        }
        for &s in symbols {
            match lut.get(s as usize) {
                Some(&(c, l)) if l > 0 => w.write_bits(c, u32::from(l)),
                _ => return Err(HuffmanError::SymbolNotInCode { symbol: s }),
            }
        }
        Ok(())
    }

    /// Appends the table (see the module doc) and pads to a byte boundary.
    pub fn write_table(&self, w: &mut BitWriter) {
        let used: Vec<(u32, u8)> = self.entries.iter().map(|e| (e.symbol, e.len)).collect();
        match used.as_slice() {
            [] => w.write_bits(KIND_EMPTY, 2),
            [(s, 1)] => {
                w.write_bits(KIND_SINGLE, 2);
                w.write_exp_golomb(*s);
            }
            _ => {
                let (dense, sparse) = table_body_bits(&used);
                let width = length_width(&used);
                if dense <= sparse {
                    let last = used[used.len() - 1].0;
                    w.write_bits(KIND_DENSE, 2);
                    w.write_exp_golomb(last);
                    w.write_bits(width, 3);
                    let mut it = used.iter().peekable();
                    for s in 0..=last {
                        let l = match it.peek() {
                            Some(&&(u, l)) if u == s => {
                                it.next();
                                l
                            }
                            _ => 0,
                        };
                        w.write_bits(u32::from(l), width);
                    }
                } else {
                    w.write_bits(KIND_SPARSE, 2);
                    w.write_exp_golomb(used.len() as u32 - 1);
                    w.write_bits(width, 3);
                    let mut prev: i64 = -1;
                    for &(s, l) in &used {
                        w.write_exp_golomb((i64::from(s) - prev - 1) as u32);
                        w.write_bits(u32::from(l), width);
                        prev = i64::from(s);
                    }
                }
            }
        }
        w.align();
    }

    /// Size in bytes of the table as [`write_table`](Self::write_table)
    /// writes it.
    pub fn table_bytes(&self) -> u64 {
        let mut w = BitWriter::new();
        self.write_table(&mut w);
        w.bit_len() / 8
    }

    /// Reads a table written by [`write_table`](Self::write_table) for an
    /// alphabet of `alphabet` symbols, including the padding to a byte
    /// boundary. Memory use is bounded by the bits the table occupies.
    pub fn read_table(r: &mut BitReader, alphabet: u32) -> Result<Self, HuffmanError> {
        if alphabet > MAX_ALPHABET {
            return Err(HuffmanError::AlphabetTooLarge {
                alphabet: u64::from(alphabet),
            });
        }
        let check = |s: u64| {
            if s >= u64::from(alphabet) {
                Err(HuffmanError::SymbolOutOfRange {
                    symbol: s,
                    alphabet,
                })
            } else {
                Ok(s as u32)
            }
        };
        let kind = r.read_bits(2)?;
        let code = match kind {
            KIND_EMPTY => Self::from_used(Vec::new())?,
            KIND_SINGLE => {
                let s = check(u64::from(r.read_exp_golomb(MAX_CODE_LEN)?))?;
                Self::from_used(vec![(s, 1)])?
            }
            KIND_DENSE => {
                let last = check(u64::from(r.read_exp_golomb(MAX_CODE_LEN)?))?;
                let width = read_width(r)?;
                let n = u64::from(last) + 1;
                if n * u64::from(width) > r.remaining_bits() {
                    return Err(HuffmanError::InvalidTable {
                        reason: "dense table longer than the data",
                    });
                }
                let mut used = Vec::new();
                for s in 0..=last {
                    let l = read_length(r, width, true)?;
                    if l > 0 {
                        used.push((s, l));
                    }
                }
                if used.is_empty() {
                    return Err(HuffmanError::InvalidTable {
                        reason: "dense table without any used symbol",
                    });
                }
                Self::from_used(used)?
            }
            _ => {
                let n_used = u64::from(r.read_exp_golomb(MAX_CODE_LEN)?) + 1;
                let width = read_width(r)?;
                if n_used > u64::from(alphabet) {
                    return Err(HuffmanError::InvalidTable {
                        reason: "more used symbols than the alphabet holds",
                    });
                }
                if n_used * (1 + u64::from(width)) > r.remaining_bits() {
                    return Err(HuffmanError::InvalidTable {
                        reason: "sparse table longer than the data",
                    });
                }
                let mut used = Vec::with_capacity(n_used as usize);
                let mut prev: i64 = -1;
                for _ in 0..n_used {
                    let delta = i64::from(r.read_exp_golomb(MAX_CODE_LEN)?);
                    let s = check((prev + 1 + delta) as u64)?;
                    used.push((s, read_length(r, width, false)?));
                    prev = i64::from(s);
                }
                Self::from_used(used)?
            }
        };
        r.align()?;
        Ok(code)
    }

    /// A table-driven decoder for this code.
    pub fn decoder(&self) -> Decoder {
        Decoder::new(self)
    }
}

/// Bits of the DENSE and SPARSE table bodies (after the 2-bit kind, before
/// padding) for the used `(symbol, length)` pairs.
fn table_body_bits(used: &[(u32, u8)]) -> (u64, u64) {
    let width = u64::from(length_width(used));
    let last = used[used.len() - 1].0;
    let dense = exp_golomb_len(last) + 3 + (u64::from(last) + 1) * width;
    let mut sparse = exp_golomb_len(used.len() as u32 - 1) + 3;
    let mut prev: i64 = -1;
    for &(s, _) in used {
        sparse += exp_golomb_len((i64::from(s) - prev - 1) as u32) + width;
        prev = i64::from(s);
    }
    (dense, sparse)
}

/// Width in bits of the length fields: enough for the longest length.
fn length_width(used: &[(u32, u8)]) -> u32 {
    let max = used.iter().map(|&(_, l)| l).max().unwrap_or(1);
    32 - u32::from(max).leading_zeros()
}

fn read_width(r: &mut BitReader) -> Result<u32, HuffmanError> {
    let width = r.read_bits(3)?;
    if !(1..=5).contains(&width) {
        return Err(HuffmanError::InvalidTable {
            reason: "length field width outside 1..=5",
        });
    }
    Ok(width)
}

fn read_length(r: &mut BitReader, width: u32, zero_ok: bool) -> Result<u8, HuffmanError> {
    let l = r.read_bits(width)?;
    if l > MAX_CODE_LEN {
        return Err(HuffmanError::InvalidTable {
            reason: "code length above 24",
        });
    }
    if l == 0 && !zero_ok {
        return Err(HuffmanError::InvalidTable {
            reason: "zero code length in a sparse table",
        });
    }
    Ok(l as u8)
}

/// Symbol frequencies of `symbols` over `0..alphabet`.
pub fn frequencies(symbols: &[u32], alphabet: u32) -> Result<Vec<u64>, HuffmanError> {
    if alphabet > MAX_ALPHABET {
        return Err(HuffmanError::AlphabetTooLarge {
            alphabet: u64::from(alphabet),
        });
    }
    let mut f = vec![0u64; alphabet as usize];
    for &s in symbols {
        match f.get_mut(s as usize) {
            Some(c) => *c += 1,
            None => {
                return Err(HuffmanError::SymbolOutOfRange {
                    symbol: u64::from(s),
                    alphabet,
                })
            }
        }
    }
    Ok(f)
}

/// Canonical decoder: a 2^10-entry lookup table for short codes, and the
/// first code / symbol offset per length for the rest.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// `symbol << 8 | length` for codes of length <= LUT_BITS, 0 = miss.
    lut: Vec<u32>,
    /// Symbols sorted by (length, symbol).
    sorted: Vec<u32>,
    first_code: [u32; MAX_CODE_LEN as usize + 1],
    first_index: [u32; MAX_CODE_LEN as usize + 1],
    count: [u32; MAX_CODE_LEN as usize + 1],
}

impl Decoder {
    fn new(code: &HuffmanCode) -> Self {
        let mut count = [0u32; MAX_CODE_LEN as usize + 1];
        for e in &code.entries {
            count[e.len as usize] += 1;
        }
        let mut by_len: Vec<&Entry> = code.entries.iter().collect();
        by_len.sort_by_key(|e| (e.len, e.symbol));
        let sorted: Vec<u32> = by_len.iter().map(|e| e.symbol).collect();
        let mut first_code = [0u32; MAX_CODE_LEN as usize + 1];
        let mut first_index = [0u32; MAX_CODE_LEN as usize + 1];
        let (mut c, mut idx) = (0u32, 0u32);
        for l in 1..=MAX_CODE_LEN as usize {
            c = (c + count[l - 1]) << 1;
            first_code[l] = c;
            first_index[l] = idx;
            idx += count[l];
        }
        let mut lut = vec![0u32; 1 << LUT_BITS];
        for e in by_len {
            let l = u32::from(e.len);
            if l > LUT_BITS {
                break;
            }
            let shift = LUT_BITS - l;
            let start = (e.code << shift) as usize;
            for slot in &mut lut[start..start + (1 << shift)] {
                *slot = (e.symbol << 8) | l;
            }
        }
        Self {
            lut,
            sorted,
            first_code,
            first_index,
            count,
        }
    }

    /// Decodes one symbol.
    pub fn decode(&self, r: &mut BitReader) -> Result<u32, HuffmanError> {
        let e = self.lut[r.peek_bits(LUT_BITS) as usize];
        if e != 0 {
            r.consume(e & 0xFF)?;
            return Ok(e >> 8);
        }
        let v = r.peek_bits(MAX_CODE_LEN);
        for l in 1..=MAX_CODE_LEN {
            let c = v >> (MAX_CODE_LEN - l);
            let k = c.wrapping_sub(self.first_code[l as usize]);
            if k < self.count[l as usize] {
                r.consume(l)?;
                let i = (self.first_index[l as usize] + k) as usize;
                return self.sorted.get(i).copied().ok_or(HuffmanError::InvalidCode);
            }
        }
        // Distinguish truncation from a genuinely invalid pattern.
        if r.remaining_bits() < u64::from(MAX_CODE_LEN) {
            return Err(HuffmanError::Bits(BitsError::UnexpectedEnd {
                needed: u64::from(MAX_CODE_LEN),
                available: r.remaining_bits(),
            }));
        }
        Err(HuffmanError::InvalidCode)
    }

    /// Decodes exactly `n` symbols. `n` is checked against the remaining
    /// bits (each code word takes at least one bit) before allocating.
    pub fn decode_n(&self, r: &mut BitReader, n: u64) -> Result<Vec<u32>, HuffmanError> {
        if n > r.remaining_bits() {
            return Err(HuffmanError::CountExceedsData {
                count: n,
                available_bits: r.remaining_bits(),
            });
        }
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            out.push(self.decode(r)?);
        }
        Ok(out)
    }
}

/// A coded stream: the serialised table and the code words, each padded to
/// a byte boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedStream {
    pub table: Vec<u8>,
    pub stream: Vec<u8>,
}

/// Builds the optimal code for `symbols` over `0..alphabet`, and returns the
/// table and the coded stream.
pub fn encode_stream(symbols: &[u32], alphabet: u32) -> Result<EncodedStream, HuffmanError> {
    let code = HuffmanCode::from_symbols(symbols, alphabet)?;
    let mut t = BitWriter::new();
    code.write_table(&mut t);
    let mut s = BitWriter::new();
    code.encode(symbols, &mut s)?;
    Ok(EncodedStream {
        table: t.finish(),
        stream: s.finish(),
    })
}

/// Reads a table and then `n` symbols (each part padded to a byte boundary)
/// from `r`.
pub fn decode_stream(r: &mut BitReader, alphabet: u32, n: u64) -> Result<Vec<u32>, HuffmanError> {
    let code = HuffmanCode::read_table(r, alphabet)?;
    let out = code.decoder().decode_n(r, n)?;
    r.align()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kraft(lengths: &[u8]) -> f64 {
        lengths
            .iter()
            .filter(|&&l| l > 0)
            .map(|&l| 0.5f64.powi(i32::from(l)))
            .sum()
    }

    /// Cost of an unrestricted Huffman code: the sum of all merged weights.
    fn huffman_cost(freqs: &[u64]) -> u64 {
        let mut w: Vec<u64> = freqs.iter().copied().filter(|&f| f > 0).collect();
        if w.len() < 2 {
            return w.iter().sum();
        }
        let mut cost = 0;
        while w.len() > 1 {
            w.sort_unstable_by(|a, b| b.cmp(a));
            let a = w.pop().unwrap_or(0);
            let b = w.pop().unwrap_or(0);
            cost += a + b;
            w.push(a + b);
        }
        cost
    }

    fn cost(freqs: &[u64], lengths: &[u8]) -> u64 {
        freqs.iter().zip(lengths).map(|(&f, &l)| f * l as u64).sum()
    }

    fn round_trip(symbols: &[u32], alphabet: u32) -> EncodedStream {
        let enc = encode_stream(symbols, alphabet).expect("encode");
        let mut bytes = enc.table.clone();
        bytes.extend_from_slice(&enc.stream);
        let mut r = BitReader::new(&bytes);
        let dec = decode_stream(&mut r, alphabet, symbols.len() as u64).expect("decode");
        assert_eq!(dec, symbols);
        assert_eq!(r.remaining_bits(), 0);
        enc
    }

    #[test]
    fn small_code_by_hand() {
        // freqs 1,1,2,4 -> lengths 3,3,2,1 ; canonical: 3:"0", 2:"10",
        // 0:"110", 1:"111".
        let code = HuffmanCode::from_frequencies(&[1, 1, 2, 4]).unwrap();
        assert_eq!(code.lengths(), vec![3, 3, 2, 1]);
        assert_eq!(code.code(3), Some((0b0, 1)));
        assert_eq!(code.code(2), Some((0b10, 2)));
        assert_eq!(code.code(0), Some((0b110, 3)));
        assert_eq!(code.code(1), Some((0b111, 3)));
        let mut w = BitWriter::new();
        code.encode(&[3, 2, 0, 1], &mut w).unwrap();
        // 0 10 110 111 -> 0101_1011 1(pad 0000000)
        assert_eq!(w.finish(), vec![0b0101_1011, 0b1000_0000]);
        // Table: kind DENSE "10", eg(3)="00100", width 2 "010", lengths
        // 3,3,2,1 -> "11 11 10 01": 10 00100 010 11111001 -> 18 bits.
        let mut t = BitWriter::new();
        code.write_table(&mut t);
        assert_eq!(t.bit_len(), 24);
        assert_eq!(t.finish(), vec![0b1000_1000, 0b1011_1110, 0b0100_0000]);
    }

    #[test]
    fn empty_stream() {
        let enc = round_trip(&[], 16);
        assert_eq!(enc.table, vec![0]); // kind EMPTY, padded
        assert!(enc.stream.is_empty());
    }

    #[test]
    fn single_symbol_gets_one_bit() {
        let enc = round_trip(&[5, 5, 5, 5, 5, 5, 5, 5, 5], 8);
        // SINGLE "01", eg(5) = "00110" -> 0100_1100
        assert_eq!(enc.table, vec![0b0100_1100]);
        assert_eq!(enc.stream, vec![0, 0]);
        // Symbol 0 too.
        round_trip(&[0], 1);
    }

    #[test]
    fn single_symbol_stream_rejects_one_bits() {
        let code = HuffmanCode::from_lengths(&[1]).unwrap();
        let bytes = [0b1000_0000];
        let mut r = BitReader::new(&bytes);
        assert_eq!(
            code.decoder().decode(&mut r),
            Err(HuffmanError::Bits(BitsError::UnexpectedEnd {
                needed: 24,
                available: 8
            }))
        );
        let bytes = [0xFF, 0xFF, 0xFF, 0xFF];
        let mut r = BitReader::new(&bytes);
        assert_eq!(
            code.decoder().decode(&mut r),
            Err(HuffmanError::InvalidCode)
        );
    }

    #[test]
    fn random_streams_round_trip() {
        let mut x: u64 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for &alphabet in &[2u32, 3, 17, 256, 4096, 65_536] {
            let symbols: Vec<u32> = (0..3000)
                .map(|_| {
                    // Skewed: small symbols much more common.
                    let r = next();
                    let bound = 1 + (r % u64::from(alphabet));
                    ((next() % bound) as u32).min(alphabet - 1)
                })
                .collect();
            let enc = round_trip(&symbols, alphabet);
            let code = HuffmanCode::from_symbols(&symbols, alphabet).unwrap();
            assert_eq!(code.table_bytes(), enc.table.len() as u64);
        }
    }

    #[test]
    fn length_limit_is_respected_and_optimal_codes_match_huffman() {
        // Fibonacci frequencies force a depth of n-1 without a limit.
        let mut fib = vec![1u64, 1];
        while fib.len() < 40 {
            let n = fib[fib.len() - 1] + fib[fib.len() - 2];
            fib.push(n);
        }
        let lengths = code_lengths(&fib, MAX_CODE_LEN);
        assert_eq!(lengths.iter().copied().max(), Some(24));
        assert!((kraft(&lengths) - 1.0).abs() < 1e-12);
        // Unlimited would be 39 deep; with a big enough limit we get Huffman.
        let unl = code_lengths(&fib, 32);
        assert_eq!(unl.iter().copied().max(), Some(32));
        let unl = code_lengths(&fib[..30], 32);
        assert_eq!(unl.iter().copied().max(), Some(29));
        assert_eq!(cost(&fib[..30], &unl), huffman_cost(&fib[..30]));
        // The limited code is no worse than Huffman + the forced moves.
        assert!(cost(&fib, &lengths) >= huffman_cost(&fib));
        // Round trip a stream that uses the deepest codes.
        let mut symbols = Vec::new();
        for (s, &f) in fib.iter().enumerate().take(20) {
            symbols.extend(std::iter::repeat_n(s as u32, f as usize));
        }
        symbols.extend(20..40u32);
        let code = HuffmanCode::from_lengths(&lengths).unwrap();
        let mut w = BitWriter::new();
        code.write_table(&mut w);
        code.encode(&symbols, &mut w).unwrap();
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        let back = HuffmanCode::read_table(&mut r, 40).unwrap();
        assert_eq!(back, code);
        assert_eq!(
            back.decoder()
                .decode_n(&mut r, symbols.len() as u64)
                .unwrap(),
            symbols
        );
    }

    #[test]
    fn package_merge_is_optimal_on_small_inputs() {
        let cases: [&[u64]; 5] = [
            &[1, 1],
            &[5, 1, 1, 1, 1],
            &[10, 10, 10, 10],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 100],
            &[3, 0, 0, 7, 1, 0, 2],
        ];
        for f in cases {
            let l = code_lengths(f, MAX_CODE_LEN);
            assert_eq!(cost(f, &l), huffman_cost(f), "{f:?}");
            assert!((kraft(&l) - 1.0).abs() < 1e-12);
        }
        // Tight limit: 4 equal symbols with a 2-bit limit; 5 with 3 bits.
        assert_eq!(code_lengths(&[1, 1, 1, 100], 2), vec![2, 2, 2, 2]);
        let l = code_lengths(&[1, 1, 1, 1, 1000], 3);
        assert_eq!(l, vec![3, 3, 3, 3, 1]);
    }

    #[test]
    fn sparse_table_is_used_for_few_symbols_in_a_big_alphabet() {
        let symbols = [60_000u32, 60_000, 3, 65_535];
        let enc = round_trip(&symbols, 65_536);
        assert!(enc.table.len() < 12, "{}", enc.table.len());
        assert_eq!(enc.table[0] >> 6, KIND_SPARSE as u8);
    }

    #[test]
    fn table_rejects_bad_input() {
        // Symbol outside the alphabet (SINGLE 5 with alphabet 4).
        let bytes = [0b0100_1100];
        assert_eq!(
            HuffmanCode::read_table(&mut BitReader::new(&bytes), 4),
            Err(HuffmanError::SymbolOutOfRange {
                symbol: 5,
                alphabet: 4
            })
        );
        // DENSE over 3 symbols with width 1, all lengths 1: over-subscribed.
        // 10 011 001 111 -> 1001_1001 1110_0000
        let bytes = [0b1001_1001, 0b1110_0000];
        assert!(matches!(
            HuffmanCode::read_table(&mut BitReader::new(&bytes), 4),
            Err(HuffmanError::InvalidTable { .. })
        ));
        // Width 0.
        let bytes = [0b1001_1000, 0];
        assert!(matches!(
            HuffmanCode::read_table(&mut BitReader::new(&bytes), 4),
            Err(HuffmanError::InvalidTable { .. })
        ));
        // Truncated.
        assert!(HuffmanCode::read_table(&mut BitReader::new(&[]), 4).is_err());
        // Length 25 rejected by from_lengths.
        assert!(HuffmanCode::from_lengths(&[25, 1]).is_err());
        // Count larger than the remaining bits.
        let code = HuffmanCode::from_lengths(&[1, 1]).unwrap();
        assert!(matches!(
            code.decoder().decode_n(&mut BitReader::new(&[0]), 9),
            Err(HuffmanError::CountExceedsData { .. })
        ));
    }

    #[test]
    fn encode_rejects_symbols_without_code() {
        let code = HuffmanCode::from_frequencies(&[1, 0, 1]).unwrap();
        let mut w = BitWriter::new();
        assert_eq!(
            code.encode(&[1], &mut w),
            Err(HuffmanError::SymbolNotInCode { symbol: 1 })
        );
        assert!(encode_stream(&[7], 4).is_err());
        assert!(HuffmanCode::from_frequencies(&vec![1; 65_537]).is_err());
    }
}
