//! Bit-level I/O for the `.dcz` format: an MSB-first [`BitWriter`] and a
//! bounds-checked [`BitReader`].
//!
//! Bit order: bits are packed **most significant bit first**. The first bit
//! written goes to bit 7 (value `0x80`) of byte 0, the ninth to bit 7 of byte 1,
//! and so on. A multi-bit value `v` written with width `n` is emitted from its
//! bit `n-1` down to bit 0, so a canonical Huffman code word appears in the
//! stream exactly as it is written on paper (`0b110` = bits `1`,`1`,`0`).
//! The last byte of a stream is padded with zero bits; readers check that the
//! padding is zero ([`BitReader::align`]).
//!
//! The reader never panics: reading past the end returns
//! [`BitsError::UnexpectedEnd`].

use thiserror::Error;

/// Errors of the bit reader.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BitsError {
    /// The stream ended before the requested bits.
    #[error("bit stream ended: needed {needed} more bits, {available} available")]
    UnexpectedEnd { needed: u64, available: u64 },
    /// Padding bits before a byte boundary were not zero.
    #[error("non-zero padding bits at the end of a bit stream")]
    NonZeroPadding,
    /// An Exp-Golomb integer had more leading zeros than allowed.
    #[error("variable-length integer in bit stream is too large")]
    IntegerTooLarge,
}

/// MSB-first bit writer over a growable byte buffer.
#[derive(Debug, Default, Clone)]
pub struct BitWriter {
    buf: Vec<u8>,
    /// Pending bits, right-aligned; only the low `n` bits are meaningful.
    acc: u64,
    /// Number of pending bits in `acc` (always < 8 between calls).
    n: u32,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the low `n` bits of `value`, most significant first.
    /// `n` must be at most 32 (larger values are clamped to 32).
    pub fn write_bits(&mut self, value: u32, n: u32) {
        debug_assert!(n <= 32, "write_bits width {n} > 32");
        let n = n.min(32);
        if n == 0 {
            return;
        }
        let v = u64::from(value) & ((1u64 << n) - 1);
        self.acc = (self.acc << n) | v;
        self.n += n;
        while self.n >= 8 {
            self.n -= 8;
            self.buf.push((self.acc >> self.n) as u8);
        }
        self.acc &= (1u64 << self.n) - 1;
    }

    /// Writes one bit.
    pub fn write_bit(&mut self, bit: bool) {
        self.write_bits(u32::from(bit), 1);
    }

    /// Writes `x` as an order-0 Exp-Golomb code: with `v = x + 1` of bit
    /// length `k`, `k - 1` zero bits followed by `v` in `k` bits.
    /// `x` must be below `2^31`.
    pub fn write_exp_golomb(&mut self, x: u32) {
        debug_assert!(x < 1 << 31, "exp-golomb value {x} too large");
        let v = u64::from(x) + 1;
        let k = 64 - v.leading_zeros();
        self.write_bits(0, k - 1);
        self.write_bits(v as u32, k);
    }

    /// Total number of bits written so far.
    pub fn bit_len(&self) -> u64 {
        self.buf.len() as u64 * 8 + u64::from(self.n)
    }

    /// Pads with zero bits up to the next byte boundary.
    pub fn align(&mut self) {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.write_bits(0, pad);
        }
    }

    /// Pads to a byte boundary and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.align();
        self.buf
    }
}

/// Number of bits an order-0 Exp-Golomb code of `x` takes.
pub fn exp_golomb_len(x: u32) -> u64 {
    let v = u64::from(x) + 1;
    let k = u64::from(64 - v.leading_zeros());
    2 * k - 1
}

/// MSB-first bit reader over a byte slice. Never reads outside the slice.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: u64,
}

impl<'a> BitReader<'a> {
    /// A reader positioned at the first bit of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Bits left until the end of the slice.
    pub fn remaining_bits(&self) -> u64 {
        (self.data.len() as u64 * 8).saturating_sub(self.pos)
    }

    /// Current position in bits.
    pub fn bit_pos(&self) -> u64 {
        self.pos
    }

    /// Number of bytes touched so far (the bit position rounded up).
    pub fn byte_pos(&self) -> usize {
        self.pos.div_ceil(8) as usize
    }

    /// Returns the next `n` bits (`n <= 32`) without consuming them; bits past
    /// the end of the data read as zero.
    pub fn peek_bits(&self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let n = n.min(32);
        let byte = (self.pos / 8) as usize;
        let off = (self.pos % 8) as u32;
        let mut word = [0u8; 8];
        if let Some(rest) = self.data.get(byte..) {
            let take = rest.len().min(8);
            word[..take].copy_from_slice(&rest[..take]);
        }
        let w = u64::from_be_bytes(word);
        ((w << off) >> (64 - n)) as u32
    }

    /// Skips `n` bits, failing if fewer remain.
    pub fn consume(&mut self, n: u32) -> Result<(), BitsError> {
        let available = self.remaining_bits();
        if u64::from(n) > available {
            return Err(BitsError::UnexpectedEnd {
                needed: u64::from(n),
                available,
            });
        }
        self.pos += u64::from(n);
        Ok(())
    }

    /// Reads `n` bits (`n <= 32`), most significant first.
    pub fn read_bits(&mut self, n: u32) -> Result<u32, BitsError> {
        let v = self.peek_bits(n);
        self.consume(n.min(32))?;
        Ok(v)
    }

    /// Reads one bit.
    pub fn read_bit(&mut self) -> Result<bool, BitsError> {
        Ok(self.read_bits(1)? == 1)
    }

    /// Reads an order-0 Exp-Golomb integer (see
    /// [`BitWriter::write_exp_golomb`]) with at most `max_zeros` leading zeros.
    pub fn read_exp_golomb(&mut self, max_zeros: u32) -> Result<u32, BitsError> {
        let max_zeros = max_zeros.min(31);
        let mut zeros = 0;
        while !self.read_bit()? {
            zeros += 1;
            if zeros > max_zeros {
                return Err(BitsError::IntegerTooLarge);
            }
        }
        let rest = self.read_bits(zeros)?;
        let v = (1u64 << zeros) | u64::from(rest);
        Ok((v - 1) as u32)
    }

    /// Skips to the next byte boundary; the skipped bits must be zero.
    pub fn align(&mut self) -> Result<(), BitsError> {
        let pad = ((8 - self.pos % 8) % 8) as u32;
        if self.read_bits(pad)? != 0 {
            return Err(BitsError::NonZeroPadding);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msb_first_packing() {
        let mut w = BitWriter::new();
        w.write_bits(0b110, 3);
        w.write_bits(0b1, 1);
        w.write_bits(0b0_0001_1111, 9);
        assert_eq!(w.bit_len(), 13);
        let bytes = w.finish();
        // 110 1 0000 | 1111 1 000(pad)
        assert_eq!(bytes, vec![0b1101_0000, 0b1111_1000]);
    }

    #[test]
    fn read_back_and_end_error() {
        let bytes = [0b1101_0000, 0b1111_1000];
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.read_bits(3), Ok(0b110));
        assert_eq!(r.read_bit(), Ok(true));
        assert_eq!(r.read_bits(9), Ok(0b0_0001_1111));
        assert_eq!(r.remaining_bits(), 3);
        assert_eq!(r.peek_bits(8), 0);
        assert_eq!(
            r.read_bits(4),
            Err(BitsError::UnexpectedEnd {
                needed: 4,
                available: 3
            })
        );
        assert_eq!(r.align(), Ok(()));
        assert_eq!(r.byte_pos(), 2);
        assert!(r.read_bit().is_err());
    }

    #[test]
    fn wide_values_and_32_bits() {
        let mut w = BitWriter::new();
        w.write_bits(1, 1);
        w.write_bits(0xDEAD_BEEF, 32);
        w.write_bits(0x00AB_CDEF, 24);
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.read_bits(1), Ok(1));
        assert_eq!(r.read_bits(32), Ok(0xDEAD_BEEF));
        assert_eq!(r.read_bits(24), Ok(0x00AB_CDEF));
        assert_eq!(r.align(), Ok(()));
        assert_eq!(r.remaining_bits(), 0);
    }

    #[test]
    fn nonzero_padding_is_rejected() {
        let bytes = [0b1000_0001];
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.read_bit(), Ok(true));
        assert_eq!(r.align(), Err(BitsError::NonZeroPadding));
    }

    #[test]
    fn exp_golomb_round_trip() {
        // x=0 -> "1", x=1 -> "010", x=2 -> "011", x=3 -> "00100".
        let mut w = BitWriter::new();
        for x in [0, 1, 2, 3] {
            w.write_exp_golomb(x);
        }
        assert_eq!(w.bit_len(), 1 + 3 + 3 + 5);
        let bytes = w.finish();
        assert_eq!(bytes, vec![0b1010_0110, 0b0100_0000]);
        let mut r = BitReader::new(&bytes);
        for x in [0, 1, 2, 3] {
            assert_eq!(r.read_exp_golomb(24), Ok(x));
        }
        for x in [0u32, 1, 7, 8, 65_535, 65_536, (1 << 24) - 1] {
            let mut w = BitWriter::new();
            w.write_exp_golomb(x);
            assert_eq!(w.bit_len(), exp_golomb_len(x));
            let b = w.finish();
            assert_eq!(BitReader::new(&b).read_exp_golomb(24), Ok(x));
        }
    }

    #[test]
    fn exp_golomb_limits() {
        // 30 zero bits then a one: more zeros than allowed.
        let bytes = [0, 0, 0, 0b0000_0010];
        assert_eq!(
            BitReader::new(&bytes).read_exp_golomb(24),
            Err(BitsError::IntegerTooLarge)
        );
        // All zeros: runs out of data.
        assert!(matches!(
            BitReader::new(&[0, 0]).read_exp_golomb(24),
            Err(BitsError::UnexpectedEnd { .. })
        ));
        assert!(BitReader::new(&[]).read_exp_golomb(24).is_err());
    }
}
