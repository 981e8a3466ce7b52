//! How one symbol stream of a layer (its gap stream or its weight-code stream) is stored:
//! **fixed width** (every symbol in the same number of bits, no table) or **Huffman** (a
//! canonical code's table, then the code words), and the exact choice between the two.
//!
//! * **Fixed width** over an alphabet of `A` symbols: each symbol in
//!   [`fixed_width`]`(A)` bits, the smallest `w >= 1` with `A <= 2^w`, MSB first, padded
//!   with zero bits to a byte boundary. At least one bit per symbol, so a reader bounds
//!   every declared count by the bits present, as for Huffman codes. A value of `A` or
//!   more is an error.
//! * **Choice** ([`code_stream`]): both encodings are made and the one with fewer bytes
//!   (table included) is kept; fixed width on a tie (no table to read).
//!
//! A small or near-uniform stream often costs less in fixed width: the Huffman table is
//! paid once per stream, and a near-flat histogram saves little per symbol.

use super::bits::{BitReader, BitWriter, BitsError};
use super::huffman::{encode_stream, HuffmanError};
use thiserror::Error;

/// How a symbol stream is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// Canonical Huffman: the table, then the code words.
    Huffman,
    /// Every symbol in [`fixed_width`] bits, no table.
    Fixed,
}

impl Coding {
    /// The coding a stream is stored in, from its two sizes in bytes (Huffman's with its
    /// table): the smaller, fixed width on a tie (no table to read).
    pub fn smaller(fixed_bytes: u64, huffman_bytes: u64) -> Coding {
        if fixed_bytes <= huffman_bytes {
            Coding::Fixed
        } else {
            Coding::Huffman
        }
    }

    /// The name reports use: `Huffman` or `fixed`.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Huffman => "Huffman",
            Coding::Fixed => "fixed",
        }
    }
}

/// Errors of reading a fixed-width stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FixedError {
    /// The declared symbols need more bits than remain.
    #[error(
        "{count} symbols of {width} bits need {needed_bits} bits, only {available_bits} remain"
    )]
    CountExceedsData {
        count: u64,
        width: u32,
        needed_bits: u64,
        available_bits: u64,
    },
    /// A stored value is not a symbol of the alphabet.
    #[error("value {value} outside the alphabet of {alphabet} symbols")]
    SymbolOutOfRange { value: u32, alphabet: u32 },
    /// Truncation or non-zero padding.
    #[error(transparent)]
    Bits(#[from] BitsError),
}

/// Bits per symbol of the fixed-width coding of an alphabet of `alphabet` symbols: the
/// smallest `w >= 1` with `alphabet <= 2^w` (1 for alphabets of 0, 1 or 2 symbols).
pub fn fixed_width(alphabet: u32) -> u32 {
    (u32::BITS - alphabet.saturating_sub(1).leading_zeros()).max(1)
}

/// Bytes of `n` symbols in fixed width over `alphabet` symbols, padding included.
pub fn fixed_bytes(n: u64, alphabet: u32) -> u64 {
    (n * u64::from(fixed_width(alphabet))).div_ceil(8)
}

/// `symbols` in fixed width over `0..alphabet`, padded to a byte boundary.
pub fn encode_fixed(symbols: &[u32], alphabet: u32) -> Result<Vec<u8>, FixedError> {
    let width = fixed_width(alphabet);
    let mut w = BitWriter::new();
    for &s in symbols {
        if s >= alphabet {
            return Err(FixedError::SymbolOutOfRange { value: s, alphabet });
        }
        w.write_bits(s, width);
    }
    Ok(w.finish())
}

/// Reads `n` fixed-width symbols over `0..alphabet` and the zero padding after them.
/// `n` is checked against the bits left before anything is allocated.
pub fn decode_fixed(r: &mut BitReader, alphabet: u32, n: u64) -> Result<Vec<u32>, FixedError> {
    let width = fixed_width(alphabet);
    let needed_bits = n.saturating_mul(u64::from(width));
    if needed_bits > r.remaining_bits() {
        return Err(FixedError::CountExceedsData {
            count: n,
            width,
            needed_bits,
            available_bits: r.remaining_bits(),
        });
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let value = r.read_bits(width)?;
        if value >= alphabet {
            return Err(FixedError::SymbolOutOfRange { value, alphabet });
        }
        out.push(value);
    }
    r.align()?;
    Ok(out)
}

/// A stream as stored: its coding, the Huffman table (empty in fixed width) and the
/// symbols, each part padded to a byte boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodedStream {
    pub coding: Coding,
    pub table: Vec<u8>,
    pub stream: Vec<u8>,
}

impl CodedStream {
    /// Bytes stored: table and symbols.
    pub fn len(&self) -> usize {
        self.table.len() + self.stream.len()
    }

    /// Whether nothing is stored (no symbols in fixed width).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes `symbols` over `0..alphabet` both ways and keeps the smaller (fixed width on a
/// tie): the sizes compared are the bytes written, the Huffman table included.
pub fn code_stream(symbols: &[u32], alphabet: u32) -> Result<CodedStream, HuffmanError> {
    let huffman = encode_stream(symbols, alphabet)?;
    // Every symbol is in the alphabet once the Huffman code was built.
    let fixed = encode_fixed(symbols, alphabet).map_err(|_| HuffmanError::SymbolOutOfRange {
        symbol: u64::from(symbols.iter().copied().max().unwrap_or(0)),
        alphabet,
    })?;
    let huffman_bytes = huffman.table.len() + huffman.stream.len();
    Ok(
        match Coding::smaller(fixed.len() as u64, huffman_bytes as u64) {
            Coding::Fixed => CodedStream {
                coding: Coding::Fixed,
                table: Vec::new(),
                stream: fixed,
            },
            Coding::Huffman => CodedStream {
                coding: Coding::Huffman,
                table: huffman.table,
                stream: huffman.stream,
            },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::huffman::decode_stream;

    /// Encodes with [`code_stream`], decodes with the matching reader, and checks that
    /// the stored size is the smaller of the two encodings.
    fn round_trip(symbols: &[u32], alphabet: u32) -> CodedStream {
        let c = code_stream(symbols, alphabet).unwrap();
        let mut bytes = c.table.clone();
        bytes.extend_from_slice(&c.stream);
        let mut r = BitReader::new(&bytes);
        let back = match c.coding {
            Coding::Fixed => decode_fixed(&mut r, alphabet, symbols.len() as u64).unwrap(),
            Coding::Huffman => decode_stream(&mut r, alphabet, symbols.len() as u64).unwrap(),
        };
        assert_eq!(back, symbols);
        assert_eq!(r.remaining_bits(), 0);
        let h = encode_stream(symbols, alphabet).unwrap();
        let f = encode_fixed(symbols, alphabet).unwrap();
        assert_eq!(c.len(), f.len().min(h.table.len() + h.stream.len()));
        c
    }

    #[test]
    fn widths() {
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 8, 9, 64, 65, 1 << 16].map(fixed_width),
            [1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 16]
        );
        assert_eq!(fixed_bytes(7, 2), 1);
        assert_eq!(fixed_bytes(9, 2), 2);
        assert_eq!(fixed_bytes(3, 64), 3);
    }

    #[test]
    fn fixed_packs_msb_first() {
        // Alphabet 5: 3 bits each. 4 = 100, 1 = 001, 3 = 011 -> 1000 0101 1(000 0000).
        assert_eq!(
            encode_fixed(&[4, 1, 3], 5).unwrap(),
            vec![0b1000_0101, 0b1000_0000]
        );
        assert_eq!(
            encode_fixed(&[5], 5),
            Err(FixedError::SymbolOutOfRange {
                value: 5,
                alphabet: 5
            })
        );
    }

    #[test]
    fn fixed_wins_on_a_small_near_uniform_stream() {
        // 12 symbols spread evenly over 8: Huffman needs 3 bits each too, plus its table.
        let symbols: Vec<u32> = (0..12).map(|i| i % 8).collect();
        let c = round_trip(&symbols, 8);
        assert_eq!(c.coding, Coding::Fixed);
        assert_eq!((c.table.len(), c.stream.len()), (0, 5));
        // One centroid: one bit per symbol, no table.
        let c = round_trip(&[0; 20], 1);
        assert_eq!((c.coding, c.len()), (Coding::Fixed, 3));
        // No symbols at all: nothing stored.
        let c = round_trip(&[], 4);
        assert!(c.coding == Coding::Fixed && c.is_empty());
    }

    #[test]
    fn huffman_wins_on_a_skewed_stream() {
        // 1000 symbols over 64, nearly all 0: about 1 bit each instead of 6.
        let symbols: Vec<u32> = (0..1000)
            .map(|i| if i % 50 == 0 { i % 64 } else { 0 })
            .collect();
        let c = round_trip(&symbols, 64);
        assert_eq!(c.coding, Coding::Huffman);
        assert!(c.len() < 200, "{} bytes", c.len());
    }

    #[test]
    fn decoding_is_checked() {
        // Alphabet 5, value 7 stored.
        let bytes = [0b1110_0000];
        assert_eq!(
            decode_fixed(&mut BitReader::new(&bytes), 5, 1),
            Err(FixedError::SymbolOutOfRange {
                value: 7,
                alphabet: 5
            })
        );
        // Three 3-bit symbols do not fit in one byte; refused before reading.
        assert_eq!(
            decode_fixed(&mut BitReader::new(&bytes), 8, 3),
            Err(FixedError::CountExceedsData {
                count: 3,
                width: 3,
                needed_bits: 9,
                available_bits: 8
            })
        );
        // Non-zero padding.
        assert_eq!(
            decode_fixed(&mut BitReader::new(&[0b0100_0001]), 2, 2),
            Err(FixedError::Bits(BitsError::NonZeroPadding))
        );
        // A huge count is refused without allocating.
        assert!(matches!(
            decode_fixed(&mut BitReader::new(&bytes), 1 << 16, u64::MAX),
            Err(FixedError::CountExceedsData { .. })
        ));
    }
}
