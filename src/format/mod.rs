//! The `.dcz` compressed model file format of Deep Compression (Han, Mao &
//! Dally, ICLR 2016): pruned positions stored as relative gaps with fillers,
//! shared-weight cluster indices against a per-layer codebook, each stream in
//! Huffman or fixed width (whichever is smaller), biases in f32, f16 or i8, and a
//! CRC32 per section.
//!
//! * [`bits`]: MSB-first bit writer/reader.
//! * [`huffman`]: canonical length-limited (24-bit) Huffman codes and their
//!   compact tables.
//! * [`coding`]: fixed-width coding of a stream and the exact choice between it
//!   and Huffman.
//! * [`gaps`]: relative sparse index with filler symbols, and the per-layer
//!   gap width chooser.
//! * [`model`]: the in-memory [`CompressedModel`] and its validation.
//! * [`dcz`]: the container: [`encode`], [`decode`], [`account`].
//!
//! The byte layout is specified in `docs/format.md`. Everything here is pure
//! functions on slices; decoding untrusted bytes never panics and never
//! allocates more than a small multiple of the input.

pub mod bits;
pub mod bytes;
pub mod coding;
pub mod dcz;
pub mod error;
pub mod gaps;
pub mod huffman;
pub mod model;
#[cfg(test)]
pub(crate) mod proptests;

pub use coding::{code_stream, fixed_width, CodedStream, Coding, FixedError};
pub use dcz::{
    account, account_with_limit, decode, decode_with_limit, encode, encode_unchecked, reseal,
    ByteCounts, FileAccount, LayerAccount, MAGIC, VERSION,
};
pub use error::{FormatError, GapError, Section, Stream};
pub use gaps::{choose_gap_bits, decode_gaps, encode_gaps, GapChoice};
pub use huffman::{HuffmanCode, HuffmanError, MAX_ALPHABET, MAX_CODE_LEN};
pub use model::{
    BiasPrecision, CompressedModel, Layer, LayerKind, LayerProblem, ModelError, Origin, MAX_BITS,
    MAX_DENSE_LEN, MAX_INPUT_NORM, MAX_LAYERS, MAX_NAME_LEN, MAX_RANK, MAX_TOTAL_DENSE,
};
