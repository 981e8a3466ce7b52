//! Error types of the `.dcz` container: [`FormatError`] (what went wrong and
//! in which [`Section`]), [`Stream`] (which coded stream of a layer) and [`GapError`]
//! (gap coding, `gaps`).

use super::coding::FixedError;
use super::huffman::HuffmanError;
use super::model::ModelError;
use std::fmt;
use thiserror::Error;

/// Errors of gap coding.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GapError {
    /// `gap_bits` outside 1..=16.
    #[error("gap width {gap_bits} outside 1..=16")]
    BadWidth { gap_bits: u8 },
    /// Positions are not strictly increasing.
    #[error("position #{index} is not greater than the previous one")]
    NotIncreasing { index: usize },
    /// A symbol is outside `0..2^gap_bits`.
    #[error("gap symbol {symbol} outside the {gap_bits}-bit alphabet")]
    SymbolOutOfRange { symbol: u32, gap_bits: u8 },
    /// A decoded position is not below the dense length.
    #[error("nonzero #{index} at position {position} is outside the dense length {dense_len}")]
    PositionOutOfRange {
        index: usize,
        position: u64,
        dense_len: u64,
    },
    /// Fillers advance past the end of the dense tensor.
    #[error("filler advances past the dense length {dense_len}")]
    FillerPastEnd { dense_len: u64 },
    /// The stream ends with a filler.
    #[error("gap stream ends with a filler")]
    TrailingFiller,
    /// The number of nonzeros in the stream differs from the declared count.
    #[error("gap stream holds {found} nonzeros, expected {expected}")]
    CountMismatch { expected: u64, found: u64 },
    /// Huffman coding failed while sizing a width.
    #[error(transparent)]
    Huffman(#[from] HuffmanError),
}

/// Part of a `.dcz` file an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Magic, version and header length.
    Preamble,
    /// The file header (model info and layer table).
    Header,
    /// The section of layer `i` (0-based, in file order).
    Layer(usize),
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Preamble => write!(f, "preamble"),
            Section::Header => write!(f, "header"),
            Section::Layer(i) => write!(f, "layer {i}"),
        }
    }
}

/// One of the two coded streams of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The gap (sparse index) stream.
    Index,
    /// The cluster (codebook index) stream.
    Weight,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Index => write!(f, "index"),
            Stream::Weight => write!(f, "weight"),
        }
    }
}

/// Everything that can go wrong encoding or decoding a `.dcz` file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    /// The file does not start with `DCZ\0`.
    #[error("not a .dcz file: bad magic bytes {found:02x?}")]
    BadMagic { found: [u8; 4] },
    /// The format version is not the one this reader implements.
    #[error(
        "unsupported .dcz format version {found} (this reader supports versions 1 to {supported}; a newer dc-search may read it)"
    )]
    UnsupportedVersion { found: u16, supported: u16 },
    /// The data ended inside a field.
    #[error("{section}: truncated in {what}: need {needed} bytes, {available} available")]
    Truncated {
        section: Section,
        what: &'static str,
        needed: u64,
        available: u64,
    },
    /// A LEB128 varint is overlong or overflows 64 bits.
    #[error("{section}: malformed varint in {what}")]
    BadVarint {
        section: Section,
        what: &'static str,
    },
    /// A field is outside its allowed range.
    #[error("{section}: {what} = {value} outside the allowed range {min}..={max}")]
    OutOfRange {
        section: Section,
        what: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    /// A string field is not UTF-8.
    #[error("{section}: {what} is not valid UTF-8")]
    BadUtf8 {
        section: Section,
        what: &'static str,
    },
    /// A section's CRC32 does not match its bytes.
    #[error("{section}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch {
        section: Section,
        stored: u32,
        computed: u32,
    },
    /// A declared count needs more bits than the section has left.
    #[error(
        "{section}: {what} = {count} needs at least {needed_bits} bits, only {available_bits} left"
    )]
    CountExceedsData {
        section: Section,
        what: &'static str,
        count: u64,
        needed_bits: u64,
        available_bits: u64,
    },
    /// Fields of a layer contradict each other.
    #[error("{section}: {what}")]
    Inconsistent {
        section: Section,
        what: &'static str,
    },
    /// A Huffman table or stream is corrupt.
    #[error("{section}: {stream} stream: {source}")]
    Huffman {
        section: Section,
        stream: Stream,
        source: HuffmanError,
    },
    /// A fixed-width stream is corrupt.
    #[error("{section}: {stream} stream (fixed width): {source}")]
    Fixed {
        section: Section,
        stream: Stream,
        source: FixedError,
    },
    /// The gap stream does not decode to valid positions.
    #[error("{section}: index stream: {source}")]
    Gaps { section: Section, source: GapError },
    /// A section's contents did not fill exactly its declared length.
    #[error("{section}: declared length {declared} bytes, contents used {used}")]
    SectionLength {
        section: Section,
        declared: u64,
        used: u64,
    },
    /// Bytes after the last layer section.
    #[error("{count} trailing bytes after the last layer section")]
    TrailingBytes { count: u64 },
    /// The model violates an invariant (raised by `encode`, and by `decode`
    /// for decoded values such as non-finite floats).
    #[error("invalid model: {0}")]
    InvalidModel(#[from] ModelError),
}
