//! Relative sparse indexing (Deep Compression §2): the positions of a layer's
//! nonzero weights stored as gaps, each in a `gap_bits`-wide alphabet, with
//! filler entries for gaps that do not fit; and the per-layer choice of
//! `gap_bits` that minimises the stored size (the smaller of the fixed-width and the
//! Huffman coding of the stream, [`super::coding`]).
//!
//! **Rule.** Let `b = gap_bits` (1..=16) and `F = 2^b - 1`. Positions are
//! strictly increasing flat indices `p_0 < p_1 < ...` into the dense tensor.
//! The gap of a position is `g_i = p_i - p_{i-1}` with `p_{-1} = -1`, so every
//! gap is >= 1 (the first gap is `p_0 + 1`). A gap `g` is written as
//! `(g - 1) / F` filler symbols (value `F`) followed by the symbol
//! `(g - 1) % F` (a value in `0..F`). Symbol alphabet: `0..=F`, i.e. 2^b
//! symbols.
//!
//! **Decoding.** Keep `next` = the first position not yet passed, starting at
//! 0. A symbol `s < F` places a nonzero at `p = next + s` and sets
//! `next = p + 1`; the filler `F` only advances `next += F` and carries **no
//! weight** (so the cluster stream has exactly one entry per nonzero).
//! A stream never ends with a filler.
//!
//! Example, `b = 2` (`F = 3`): positions `[0, 1, 5, 6]` have gaps `1,1,4,1`
//! and are coded `0, 0, 3(filler), 0, 0`. With `b = 1` the code is a run
//! length bitmap: each position is one symbol, `1` = skip, `0` = nonzero.

use super::bits::BitWriter;
use super::bytes::varint_len;
use super::coding::{fixed_bytes, Coding};
use super::error::GapError;
use super::huffman::HuffmanCode;

/// Narrowest gap alphabet.
pub const MIN_GAP_BITS: u8 = 1;
/// Widest gap alphabet (2^16 symbols).
pub const MAX_GAP_BITS: u8 = 16;

/// The filler symbol (and filler advance) of a `gap_bits`-wide alphabet.
pub fn filler_symbol(gap_bits: u8) -> u32 {
    (1u32 << gap_bits.clamp(MIN_GAP_BITS, MAX_GAP_BITS)) - 1
}

fn check_width(gap_bits: u8) -> Result<u32, GapError> {
    if (MIN_GAP_BITS..=MAX_GAP_BITS).contains(&gap_bits) {
        Ok(filler_symbol(gap_bits))
    } else {
        Err(GapError::BadWidth { gap_bits })
    }
}

/// Gaps `p_i - p_{i-1}` (with `p_{-1} = -1`), checking strict increase.
fn gaps(positions: &[u32]) -> Result<Vec<u64>, GapError> {
    let mut prev: i64 = -1;
    positions
        .iter()
        .enumerate()
        .map(|(index, &p)| {
            let g = i64::from(p) - prev;
            prev = i64::from(p);
            if g < 1 {
                Err(GapError::NotIncreasing { index })
            } else {
                Ok(g as u64)
            }
        })
        .collect()
}

/// Codes strictly increasing `positions` as gap symbols of width `gap_bits`.
pub fn encode_gaps(positions: &[u32], gap_bits: u8) -> Result<Vec<u32>, GapError> {
    let f = u64::from(check_width(gap_bits)?);
    let mut out = Vec::with_capacity(positions.len());
    for g in gaps(positions)? {
        let fillers = (g - 1) / f;
        out.extend(std::iter::repeat_n(f as u32, fillers as usize));
        out.push(((g - 1) % f) as u32);
    }
    Ok(out)
}

/// Symbol frequencies (length `2^gap_bits`, the filler count last) of the
/// gap stream of `positions`, without building the stream.
pub fn gap_frequencies(positions: &[u32], gap_bits: u8) -> Result<Vec<u64>, GapError> {
    let f = check_width(gap_bits)?;
    Ok(frequencies_from_gaps(&gaps(positions)?, f))
}

fn frequencies_from_gaps(gaps: &[u64], f: u32) -> Vec<u64> {
    let f64_ = u64::from(f);
    let mut freqs = vec![0u64; f as usize + 1];
    for &g in gaps {
        freqs[f as usize] += (g - 1) / f64_;
        freqs[((g - 1) % f64_) as usize] += 1;
    }
    freqs
}

/// Decodes gap symbols into `n_nonzero` positions below `dense_len`.
pub fn decode_gaps(
    symbols: &[u32],
    gap_bits: u8,
    n_nonzero: u64,
    dense_len: u64,
) -> Result<Vec<u32>, GapError> {
    let f = check_width(gap_bits)?;
    let mut out = Vec::with_capacity(n_nonzero.min(symbols.len() as u64) as usize);
    let mut next: u64 = 0;
    for &s in symbols {
        if s > f {
            return Err(GapError::SymbolOutOfRange {
                symbol: s,
                gap_bits,
            });
        }
        if s == f {
            next += u64::from(f);
            if next >= dense_len {
                return Err(GapError::FillerPastEnd { dense_len });
            }
            continue;
        }
        let position = next + u64::from(s);
        if position >= dense_len || position > u64::from(u32::MAX) {
            return Err(GapError::PositionOutOfRange {
                index: out.len(),
                position,
                dense_len,
            });
        }
        if out.len() as u64 == n_nonzero {
            return Err(GapError::CountMismatch {
                expected: n_nonzero,
                found: n_nonzero + 1,
            });
        }
        out.push(position as u32);
        next = position + 1;
    }
    if symbols.last() == Some(&f) {
        return Err(GapError::TrailingFiller);
    }
    if out.len() as u64 != n_nonzero {
        return Err(GapError::CountMismatch {
            expected: n_nonzero,
            found: out.len() as u64,
        });
    }
    Ok(out)
}

/// Outcome of [`choose_gap_bits`] / [`gap_cost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapChoice {
    /// The gap width.
    pub gap_bits: u8,
    /// Number of filler symbols in the stream.
    pub n_fillers: u64,
    /// How the gap stream is stored: the smaller of the two, fixed width on a tie.
    pub coding: Coding,
    /// Exact bytes stored for the index: the varint filler count and the gap stream in
    /// its coding (Huffman: table and code words), as in the `.dcz` file.
    pub coded_bytes: u64,
}

fn cost_from_gaps(gaps: &[u64], gap_bits: u8) -> Result<GapChoice, GapError> {
    let freqs = frequencies_from_gaps(gaps, check_width(gap_bits)?);
    let n_fillers = freqs[freqs.len() - 1];
    let code = HuffmanCode::from_frequencies(&freqs)?;
    let mut w = BitWriter::new();
    code.write_table(&mut w);
    let huffman = w.bit_len() / 8 + code.stream_bits(&freqs).div_ceil(8);
    let fixed = fixed_bytes(freqs.iter().sum(), 1 << gap_bits);
    let coding = Coding::smaller(fixed, huffman);
    let stream = match coding {
        Coding::Fixed => fixed,
        Coding::Huffman => huffman,
    };
    Ok(GapChoice {
        gap_bits,
        n_fillers,
        coding,
        coded_bytes: varint_len(n_fillers) as u64 + stream,
    })
}

/// Exact coded index size of `positions` at width `gap_bits`.
pub fn gap_cost(positions: &[u32], gap_bits: u8) -> Result<GapChoice, GapError> {
    cost_from_gaps(&gaps(positions)?, gap_bits)
}

/// Tries every width 1..=16 and returns the one with the fewest stored bytes, in the
/// better of its two codings (the narrowest width on a tie).
pub fn choose_gap_bits(positions: &[u32]) -> Result<GapChoice, GapError> {
    let g = gaps(positions)?;
    let mut best = cost_from_gaps(&g, MIN_GAP_BITS)?;
    let mut last = best;
    for b in MIN_GAP_BITS + 1..=MAX_GAP_BITS {
        // Once a width needs no filler, every wider one codes the same symbols with the
        // same Huffman code (the filler unused), so costs the same in Huffman and more in
        // fixed width: it cannot win.
        if last.n_fillers == 0 {
            break;
        }
        last = cost_from_gaps(&g, b)?;
        if last.coded_bytes < best.coded_bytes {
            best = last;
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(positions: &[u32], gap_bits: u8, dense_len: u64) -> Vec<u32> {
        let s = encode_gaps(positions, gap_bits).unwrap();
        let back = decode_gaps(&s, gap_bits, positions.len() as u64, dense_len).unwrap();
        assert_eq!(back, positions);
        let f = gap_frequencies(positions, gap_bits).unwrap();
        assert_eq!(f.iter().sum::<u64>(), s.len() as u64);
        s
    }

    #[test]
    fn filler_boundary_b2() {
        // b = 2: F = 3, gaps 1..=3 fit as symbols 0..=2.
        assert_eq!(round_trip(&[0], 2, 100), vec![0]); // first position 0
        assert_eq!(round_trip(&[2], 2, 100), vec![2]); // gap 3 = 2^b - 1
        assert_eq!(round_trip(&[3], 2, 100), vec![3, 0]); // gap 4 = 2^b
        assert_eq!(round_trip(&[4], 2, 100), vec![3, 1]); // gap 5 = 2^b + 1
        assert_eq!(round_trip(&[9], 2, 100), vec![3, 3, 3, 0]); // 3 fillers
        assert_eq!(round_trip(&[0, 1, 5, 6], 2, 7), vec![0, 0, 3, 0, 0]); // last = len-1
        assert_eq!(round_trip(&[1, 8, 11], 2, 12), vec![1, 3, 3, 0, 2]);
    }

    #[test]
    fn filler_boundary_other_widths() {
        // b = 1: a bitmap, 1 = skip, 0 = nonzero.
        assert_eq!(round_trip(&[0, 3, 4], 1, 5), vec![0, 1, 1, 0, 0]);
        // b = 16 at the limits.
        assert_eq!(round_trip(&[65_534], 16, 1 << 20), vec![65_534]);
        assert_eq!(round_trip(&[65_535], 16, 1 << 20), vec![65_535, 0]);
        assert_eq!(round_trip(&[65_536], 16, 1 << 20), vec![65_535, 1]);
        assert_eq!(
            round_trip(&[u32::MAX - 1], 16, u64::from(u32::MAX)).len(),
            65_537
        );
    }

    #[test]
    fn empty_layer() {
        assert_eq!(round_trip(&[], 5, 10), Vec::<u32>::new());
        assert_eq!(decode_gaps(&[], 5, 0, 0), Ok(vec![]));
        assert_eq!(
            decode_gaps(&[], 5, 1, 10),
            Err(GapError::CountMismatch {
                expected: 1,
                found: 0
            })
        );
    }

    #[test]
    fn decode_errors() {
        // Position 7 with dense_len 7.
        assert_eq!(
            decode_gaps(&[3, 3, 1], 2, 1, 7),
            Err(GapError::PositionOutOfRange {
                index: 0,
                position: 7,
                dense_len: 7
            })
        );
        assert_eq!(
            decode_gaps(&[0, 3], 2, 1, 100),
            Err(GapError::TrailingFiller)
        );
        assert_eq!(
            decode_gaps(&[3, 3], 2, 0, 5),
            Err(GapError::FillerPastEnd { dense_len: 5 })
        );
        assert_eq!(
            decode_gaps(&[4], 2, 1, 100),
            Err(GapError::SymbolOutOfRange {
                symbol: 4,
                gap_bits: 2
            })
        );
        assert_eq!(
            decode_gaps(&[0, 0, 0], 2, 2, 100),
            Err(GapError::CountMismatch {
                expected: 2,
                found: 3
            })
        );
        assert_eq!(
            decode_gaps(&[0], 0, 1, 10),
            Err(GapError::BadWidth { gap_bits: 0 })
        );
        assert_eq!(
            decode_gaps(&[0], 17, 1, 10),
            Err(GapError::BadWidth { gap_bits: 17 })
        );
        assert_eq!(
            encode_gaps(&[3, 3], 4),
            Err(GapError::NotIncreasing { index: 1 })
        );
        assert_eq!(
            encode_gaps(&[5, 2], 4),
            Err(GapError::NotIncreasing { index: 1 })
        );
    }

    /// Positions with each index kept independently with probability `p`.
    fn bernoulli(dense_len: u32, p: f64, seed: u64) -> Vec<u32> {
        let mut x = seed;
        (0..dense_len)
            .filter(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 11) as f64 / (1u64 << 53) as f64) < p
            })
            .collect()
    }

    fn entropy_bits_per_nonzero(p: f64) -> f64 {
        (-p * p.log2() - (1.0 - p) * (1.0 - p).log2()) / p
    }

    #[test]
    fn chooser_wide_at_low_density_narrow_at_high() {
        let sparse = bernoulli(1_000_000, 0.01, 7);
        let c = choose_gap_bits(&sparse).unwrap();
        assert!(c.gap_bits >= 6, "{c:?}");
        let bits = c.coded_bytes as f64 * 8.0 / sparse.len() as f64;
        let bound = entropy_bits_per_nonzero(0.01);
        assert!(bits < bound * 1.05, "{bits} vs {bound}");
        // The fixed 5-bit gap of the paper costs much more at 1.5% density.
        let p15 = bernoulli(1_000_000, 0.015, 9);
        let fixed5 = encode_gaps(&p15, 5).unwrap().len() as f64 * 5.0 / p15.len() as f64;
        let best = choose_gap_bits(&p15).unwrap();
        let best_bits = best.coded_bytes as f64 * 8.0 / p15.len() as f64;
        assert!(fixed5 > 12.0 && best_bits < 8.0, "{fixed5} {best_bits}");

        let dense = bernoulli(100_000, 0.5, 11);
        let c = choose_gap_bits(&dense).unwrap();
        assert!(c.gap_bits <= 3, "{c:?}");
        for b in MIN_GAP_BITS..=MAX_GAP_BITS {
            assert!(gap_cost(&dense, b).unwrap().coded_bytes >= c.coded_bytes);
        }
    }

    #[test]
    fn chooser_cost_is_exact() {
        let mut codings = std::collections::HashSet::new();
        for positions in [vec![0u32, 1, 5, 6, 40, 41, 300], bernoulli(3_000, 0.1, 5)] {
            for b in MIN_GAP_BITS..=MAX_GAP_BITS {
                let c = gap_cost(&positions, b).unwrap();
                codings.insert(c.coding);
                let s = encode_gaps(&positions, b).unwrap();
                let enc = super::super::coding::code_stream(&s, 1 << b).unwrap();
                assert_eq!(
                    (c.coded_bytes, c.coding),
                    ((varint_len(c.n_fillers) + enc.len()) as u64, enc.coding)
                );
                assert_eq!(
                    c.n_fillers,
                    s.iter().filter(|&&x| x == filler_symbol(b)).count() as u64
                );
            }
        }
        // Both codings occur among these widths.
        assert_eq!(codings.len(), 2);
    }

    #[test]
    fn chooser_equals_trying_every_width() {
        let exhaustive = |p: &[u32]| {
            let mut best = gap_cost(p, MIN_GAP_BITS).unwrap();
            for b in MIN_GAP_BITS + 1..=MAX_GAP_BITS {
                let c = gap_cost(p, b).unwrap();
                if c.coded_bytes < best.coded_bytes {
                    best = c;
                }
            }
            best
        };
        let cases = [
            vec![],
            vec![0],
            vec![3, 4, 70_000],
            bernoulli(5_000, 0.3, 1),
            bernoulli(50_000, 0.02, 2),
            bernoulli(200_000, 0.001, 3),
        ];
        for p in &cases {
            assert_eq!(
                choose_gap_bits(p).unwrap(),
                exhaustive(p),
                "{} positions",
                p.len()
            );
        }
    }
}
