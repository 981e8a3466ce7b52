#!/usr/bin/env bash
# Reproduces the committed reference runs of the compression core (searches/core/): the seed's
# and the paper's settings, each compressed, written, decoded and evaluated.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$repo/target/release/dc-search"
cd "$repo"
out=searches/core
mkdir -p "$out"
only="${1:-}"
run() {
  local name="$1"; shift
  [ -n "$only" ] && [ "$only" != "$name" ] && return 0
  { echo "\$ dc-search $*"; "$bin" "$@" --quiet; echo; echo "\$ dc-search inspect searches/core/$name.dcz"; "$bin" inspect "$out/$name.dcz"; } > "$out/$name.txt"
}
run lenet-seed compress lenet --ratios 0.33,0.8,0.9,0.8 --bits 8,8,5,5 --centroid-grad mean -o "$out/lenet-seed.dcz"
run lenet-paper compress lenet --ratios 0.34,0.88,0.92,0.81 --bits 8,8,5,5 --centroid-grad mean -o "$out/lenet-paper.dcz"
run lenet-paper-sum compress lenet --ratios 0.34,0.88,0.92,0.81 --bits 8,8,5,5 --centroid-grad sum -o "$out/lenet-paper-sum.dcz"
run lenet-300-100-paper compress lenet-300-100 --ratios 0.92,0.91,0.74 --bits 6,6,6 -o "$out/lenet-300-100-paper.dcz"
