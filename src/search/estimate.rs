//! The size model the search optimises before any file exists: bytes of a layer at a
//! given density and weight width, from the entropy bound of its positions (the `.dcz`
//! encoder picks a gap width per layer that comes within a few percent of it) plus
//! fixed-width cluster indices, the codebook and the biases at the file's precision. Pure
//! arithmetic.

/// Binary entropy in bits.
pub fn entropy(p: f64) -> f64 {
    if p <= 0.0 || p >= 1.0 {
        return 0.0;
    }
    -(p * p.log2() + (1.0 - p) * (1.0 - p).log2())
}

/// Bytes of one bias in the file: 2 (f16) or 4 (f32).
pub type BiasBytes = f64;

/// Estimated bytes of one layer with `weights` weights, `outputs` biases of `bias_bytes`
/// each, kept fraction `density` and `bits`-bit weights.
pub fn layer_bytes(
    weights: usize,
    outputs: usize,
    density: f64,
    bits: u8,
    bias_bytes: BiasBytes,
) -> f64 {
    let nnz = (density * weights as f64).round();
    let index_bits = weights as f64 * entropy(density) * 1.05;
    let weight_bits = nnz * bits as f64;
    let codebook = 4.0 * (1u64 << bits).min(nnz.max(1.0) as u64) as f64;
    (index_bits + weight_bits) / 8.0 + codebook + bias_bytes * outputs as f64 + 12.0
}

/// Estimated file bytes: the layers plus a header.
pub fn model_bytes(
    layers: &[(usize, usize)],
    densities: &[f64],
    bits: &[u8],
    bias_bytes: BiasBytes,
) -> f64 {
    150.0
        + layers
            .iter()
            .zip(densities)
            .zip(bits)
            .map(|(((w, o), d), b)| layer_bytes(*w, *o, *d, *b, bias_bytes))
            .sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_bound() {
        assert!((entropy(0.5) - 1.0).abs() < 1e-12);
        assert_eq!(entropy(0.0), 0.0);
        // H(0.015)/0.015 ≈ 7.5 bits per nonzero.
        assert!((entropy(0.015) / 0.015 - 7.5).abs() < 0.1);
    }

    #[test]
    fn denser_or_wider_is_bigger() {
        let a = layer_bytes(400_000, 500, 0.01, 4, 2.0);
        assert!(layer_bytes(400_000, 500, 0.02, 4, 2.0) > a);
        assert!(layer_bytes(400_000, 500, 0.01, 5, 2.0) > a);
        assert!(model_bytes(&[(500, 20), (400_000, 500)], &[0.5, 0.01], &[8, 4], 2.0) > a);
    }

    #[test]
    fn biases_are_priced_at_the_file_precision() {
        // 500 biases: f32 costs 1,000 bytes more than f16
        let f16 = layer_bytes(400_000, 500, 0.01, 4, 2.0);
        let f32 = layer_bytes(400_000, 500, 0.01, 4, 4.0);
        assert!((f32 - f16 - 1000.0).abs() < 1e-9);
    }
}
