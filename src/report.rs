//! Human-readable tables: the compressed file's layer table in the spirit of the paper's
//! Table 3, and its exact byte account. Names read from a file are shown [`printable`].

use std::fmt::Write;

use crate::format::{Coding, FileAccount};

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
/// bits per nonzero in fixed width and as stored (with the coding each stream uses:
/// `Huffman`, or `fixed` where fixed width was smaller), bytes and ratio; totals; the
/// byte account.
pub fn table3(acc: &FileAccount) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| layer | weights | kept % | weight bits (fixed → stored, coding) | index bits (gap width: fixed → stored, coding) | bytes | dense f32 bytes | ratio |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in &acc.layers {
        let bytes = l.bytes.total();
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {} → {:.2} {} | {}: {:.2} → {:.2} {} | {} | {} | {:.1}× |",
            printable(&l.name),
            l.dense_len,
            100.0 * l.density(),
            l.weight_bits_fixed(),
            l.weight_bits_stored(),
            coding(l.weight_coding),
            l.gap_bits,
            l.index_bits_fixed(),
            l.index_bits_stored(),
            coding(l.index_coding),
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
    let fixed = |c: fn(&crate::format::LayerAccount) -> Option<Coding>| {
        let streams: Vec<Coding> = acc.layers.iter().filter_map(c).collect();
        let n = streams.iter().filter(|&&c| c == Coding::Fixed).count();
        format!("{n} of {}", streams.len())
    };
    let _ = writeln!(
        s,
        "streams in fixed width (no table): weight {}, index {}",
        fixed(|l| l.weight_coding),
        fixed(|l| l.index_coding)
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

/// A stream's coding as the table shows it; `–` where the layer has no such stream.
fn coding(c: Option<Coding>) -> &'static str {
    c.map_or("–", Coding::name)
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
            origin: None,
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
        // 3 nonzeros over 2 centroids: 1 bit each in fixed width (1 byte for all three),
        // smaller than a Huffman table and stream; the index likewise.
        assert!(table.contains("| 1 → 2.67 fixed | 1: "), "{table}");
        assert!(!table.contains("Huffman |"), "{table}");
        assert!(
            table.contains("streams in fixed width (no table): weight 1 of 1, index 1 of 1"),
            "{table}"
        );
    }

    #[test]
    fn table_names_huffman_where_it_is_stored() {
        // 200 of 400 weights, nearly all in one of 16 centroids: Huffman beats 4 bits.
        let positions: Vec<u32> = (0..200).map(|i| 2 * i).collect();
        let clusters = (0..200)
            .map(|i| if i % 20 == 0 { i % 16 } else { 0 })
            .collect();
        let m = CompressedModel {
            model: "lenet".into(),
            dataset: "mnist".into(),
            input_shape: vec![400],
            input_scale: 1.0,
            input_shift: 0.0,
            layers: vec![Layer {
                name: "fc".into(),
                kind: LayerKind::Linear,
                shape: vec![1, 400],
                bits: 4,
                codebook: (0..16).map(|c| c as f32).collect(),
                positions,
                clusters,
                bias: vec![],
                bias_precision: BiasPrecision::F32,
            }],
            origin: None,
        };
        let acc = format::account(&format::encode(&m).unwrap()).unwrap();
        assert_eq!(acc.layers[0].weight_coding, Some(format::Coding::Huffman));
        let table = super::table3(&acc);
        let stored = acc.layers[0].weight_bits_stored();
        assert!(stored < 4.0, "{stored}");
        assert!(
            table.contains(&format!("| 4 → {stored:.2} Huffman |")),
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
