//! Human-readable tables: the compressed file's layer table in the spirit of the paper's
//! Table 3, and its exact byte account. Names read from a file are shown [`printable`].

use std::fmt::Write;

use crate::format::FileAccount;

/// `s` with control characters (and `|`, which would split a table cell) escaped, so a
/// name read from a file cannot move the cursor, recolour the terminal or break a line.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '|' {
                "\\|".to_string()
            } else if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Table 3 of Deep Compression for one file: per layer weights, kept %, weight and index
/// bits per nonzero before and after Huffman, bytes and ratio; totals; the byte account.
pub fn table3(acc: &FileAccount) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| layer | weights | kept % | weight bits (fixed → Huffman) | index bits (gap width: fixed → Huffman) | bytes | dense f32 bytes | ratio |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in &acc.layers {
        let bytes = l.bytes.total();
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {} → {:.2} | {}: {:.2} → {:.2} | {} | {} | {:.1}× |",
            printable(&l.name),
            l.dense_len,
            100.0 * l.density(),
            l.bits,
            l.weight_bits_huffman(),
            l.gap_bits,
            l.index_bits_fixed(),
            l.index_bits_huffman(),
            bytes,
            l.dense_f32_bytes(),
            l.dense_f32_bytes() as f64 / bytes.max(1) as f64
        );
    }
    let weights: u64 = acc.layers.iter().map(|l| l.dense_len).sum();
    let nnz: u64 = acc.layers.iter().map(|l| l.nnz).sum();
    let dense: u64 = acc.layers.iter().map(|l| l.dense_f32_bytes()).sum();
    let _ = writeln!(
        s,
        "| **total** | {weights} | {:.2} | | | {} | {dense} | {:.1}× |",
        100.0 * nnz as f64 / weights.max(1) as f64,
        acc.file_len,
        dense as f64 / acc.file_len.max(1) as f64
    );
    let t = &acc.total;
    let _ = writeln!(
        s,
        "\nbyte account: header {} + Huffman tables {} + codebooks {} + index streams {} + weight streams {} + biases {} + checksums {} = {} bytes (file {} bytes)",
        t.header,
        t.huffman_tables(),
        t.codebook,
        t.index_stream,
        t.weight_stream,
        t.bias,
        t.checksum,
        t.total(),
        acc.file_len
    );
    let core = t.huffman_tables() + t.codebook + t.index_stream + t.weight_stream;
    let _ = writeln!(
        s,
        "dense float32 model: {dense} bytes; this file: {} bytes = {:.1}× smaller; without header, biases and checksums (the paper's weights + index + codebook subtotal): {core} bytes = {:.1}×",
        acc.file_len,
        dense as f64 / acc.file_len.max(1) as f64,
        dense as f64 / core.max(1) as f64
    );
    s
}

#[cfg(test)]
mod tests {
    use crate::format::{self, BiasPrecision, CompressedModel, Layer, LayerKind};

    #[test]
    fn table_names_layers_and_accounts_for_the_file() {
        let m = CompressedModel {
            model: "lenet".into(),
            dataset: "mnist".into(),
            input_shape: vec![1, 28, 28],
            input_scale: 1.0 / 256.0,
            input_shift: 0.0,
            layers: vec![Layer {
                name: "conv1".into(),
                kind: LayerKind::Conv,
                shape: vec![2, 1, 2, 2],
                bits: 2,
                codebook: vec![-0.5, 0.5],
                positions: vec![0, 3, 6],
                clusters: vec![0, 1, 1],
                bias: vec![0.1, -0.1],
                bias_precision: BiasPrecision::F32,
            }],
        };
        let bytes = format::encode(&m).unwrap();
        let table = super::table3(&format::account(&bytes).unwrap());
        assert!(
            table.contains("| conv1 | 8 |") && table.contains("file"),
            "{table}"
        );
        assert!(
            table.contains(&format!("(file {} bytes)", bytes.len())),
            "{table}"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        use super::printable;
        assert_eq!(printable("fc1"), "fc1");
        assert_eq!(printable("a\u{1b}[2Jb\nc|d"), "a\\u{1b}[2Jb\\nc\\|d");
        assert!(!printable("\u{7}\r\t").chars().any(char::is_control));
    }
}
