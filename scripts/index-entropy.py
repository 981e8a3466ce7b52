"""How small a `.dcz` file's index streams could get under the format's gap coding: for each
layer of a decoded model, the order-0 entropy of its gap symbols (fillers of value 2^w - 1
plus a remainder, as in docs/format.md §6) at the best gap width w, in row-major order (the
format's) and in column-major order, beside the bound of an unstructured mask (nnz positions
drawn independently). Huffman tables are not counted.

    python3 -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch==2.11.0 safetensors
    dc-search export FILE.dcz --to safetensors -o model.safetensors
    /tmp/venv-torch/bin/python scripts/index-entropy.py model.safetensors
"""

import collections
import math
import sys

from safetensors.torch import load_file


def entropy_bits(counts):
    n = sum(counts.values())
    return -sum(c * math.log2(c / n) for c in counts.values() if c > 0)


def gap_bits(positions, width):
    filler = (1 << width) - 1
    symbols = collections.Counter()
    prev = -1
    for p in positions:
        g = p - prev
        prev = p
        symbols[filler] += (g - 1) // filler
        symbols[(g - 1) % filler] += 1
    return entropy_bits(symbols)


def best(positions):
    return min((gap_bits(positions, w), w) for w in range(1, 17))


def main(path):
    tensors = load_file(path)
    total_rows = total_best = 0.0
    for name, v in tensors.items():
        if not name.endswith("weight"):
            continue
        w = v.reshape(v.shape[0], -1) != 0
        rows = w.flatten().nonzero().flatten().tolist()
        cols = w.t().flatten().nonzero().flatten().tolist()
        n, k = w.numel(), len(rows)
        p = k / n
        iid = n * (-p * math.log2(p) - (1 - p) * math.log2(1 - p)) if 0 < k < n else 0.0
        br, wr = best(rows)
        bc, wc = best(cols)
        total_rows += br
        total_best += min(br, bc)
        print(f"{name:14s} {tuple(w.shape)} nnz {k:6d}: row-major {br / 8:6.0f} B (width {wr}), "
              f"column-major {bc / 8:6.0f} B (width {wc}), unstructured bound {iid / 8:6.0f} B")
    print(f"index streams at order-0 entropy: row-major {total_rows / 8:.0f} B, "
          f"the better order per layer {total_best / 8:.0f} B")


if __name__ == "__main__":
    main(sys.argv[1])
