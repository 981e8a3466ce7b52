//! Byte-level encoding of the `.dcz` container: unsigned LEB128 varints,
//! little-endian scalars, length-prefixed strings, and a bounds-checked
//! [`Reader`] whose errors name the section and field.

use super::error::{FormatError, Section};
use super::model::MAX_NAME_LEN;

/// Bytes the LEB128 encoding of `x` takes (1..=10).
pub fn varint_len(x: u64) -> usize {
    let bits = 64 - (x | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `x` as unsigned LEB128: 7 bits per byte, least significant group
/// first, high bit set on every byte but the last.
pub fn write_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8 & 0x7F) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// Appends a string as `varint(len)` + UTF-8 bytes.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Bounds-checked little-endian reader over one section.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    section: Section,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`; errors name `section`.
    pub fn new(data: &'a [u8], section: Section) -> Self {
        Self {
            data,
            pos: 0,
            section,
        }
    }

    /// Bytes consumed.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// The unread bytes.
    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    /// The section errors are attributed to.
    pub fn section(&self) -> Section {
        self.section
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() as u64 {
            return Err(FormatError::Truncated {
                section: self.section,
                what,
                needed: n,
                available: self.remaining() as u64,
            });
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// Takes exactly `N` bytes.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn f32(&mut self, what: &'static str) -> Result<f32, FormatError> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    /// Reads an unsigned LEB128 varint; rejects overlong encodings (a final
    /// zero byte after the first) and values above `u64::MAX`.
    pub fn varint(&mut self, what: &'static str) -> Result<u64, FormatError> {
        let bad = FormatError::BadVarint {
            section: self.section,
            what,
        };
        let mut x: u64 = 0;
        for i in 0..10 {
            let b = self.u8(what)?;
            let low = u64::from(b & 0x7F);
            if i == 9 && b > 1 {
                return Err(bad);
            }
            x |= low << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(bad);
                }
                return Ok(x);
            }
        }
        Err(bad)
    }

    /// Reads a varint and checks it against `min..=max`.
    pub fn varint_in(
        &mut self,
        what: &'static str,
        min: u64,
        max: u64,
    ) -> Result<u64, FormatError> {
        let value = self.varint(what)?;
        self.check_range(what, value, min, max)
    }

    /// Checks `value` against `min..=max`.
    pub fn check_range(
        &self,
        what: &'static str,
        value: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, FormatError> {
        if value < min || value > max {
            return Err(FormatError::OutOfRange {
                section: self.section,
                what,
                value,
                min,
                max,
            });
        }
        Ok(value)
    }

    /// Reads a `varint(len)` + UTF-8 string of at most [`MAX_NAME_LEN`] bytes.
    pub fn string(&mut self, what: &'static str) -> Result<String, FormatError> {
        let len = self.varint_in(what, 0, MAX_NAME_LEN as u64)?;
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| FormatError::BadUtf8 {
            section: self.section,
            what,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_by_hand() {
        let cases: [(u64, &[u8]); 6] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (300, &[0xAC, 0x02]),
            (
                u64::MAX,
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ),
        ];
        for (x, bytes) in cases {
            let mut v = Vec::new();
            write_varint(&mut v, x);
            assert_eq!(v, bytes);
            assert_eq!(varint_len(x), bytes.len());
            let mut r = Reader::new(bytes, Section::Header);
            assert_eq!(r.varint("x"), Ok(x));
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn varint_rejects_malformed() {
        let bad = |b: &[u8]| Reader::new(b, Section::Header).varint("x");
        assert!(matches!(
            bad(&[0x80, 0x00]),
            Err(FormatError::BadVarint { .. })
        ));
        assert!(matches!(bad(&[0x80]), Err(FormatError::Truncated { .. })));
        assert!(matches!(bad(&[]), Err(FormatError::Truncated { .. })));
        let over = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02];
        assert!(matches!(bad(&over), Err(FormatError::BadVarint { .. })));
        let long = [0xFF; 11];
        assert!(matches!(bad(&long), Err(FormatError::BadVarint { .. })));
    }

    #[test]
    fn scalars_and_strings() {
        let mut v = Vec::new();
        write_str(&mut v, "héllo");
        v.extend_from_slice(&0x1234u16.to_le_bytes());
        v.extend_from_slice(&1.5f32.to_le_bytes());
        let mut r = Reader::new(&v, Section::Layer(2));
        assert_eq!(r.string("name").as_deref(), Ok("héllo"));
        assert_eq!(r.u16("v"), Ok(0x1234));
        assert_eq!(r.f32("f"), Ok(1.5));
        assert_eq!(
            r.u8("end"),
            Err(FormatError::Truncated {
                section: Section::Layer(2),
                what: "end",
                needed: 1,
                available: 0
            })
        );
        let bad = [2u8, 0xC3, 0x28];
        assert!(matches!(
            Reader::new(&bad, Section::Header).string("name"),
            Err(FormatError::BadUtf8 { .. })
        ));
        let long = [0x80u8, 0x02];
        assert!(matches!(
            Reader::new(&long, Section::Header).string("name"),
            Err(FormatError::OutOfRange { value: 256, .. })
        ));
    }
}
