#!/usr/bin/env bash
# wheel.sh — builds the Python wheel (python/: the dc_search module and the dc-search
# binary) into target/wheels/ and prints its path. Set-up first (scripts/setup.sh: libtorch,
# data), then maturin, pinned, from a venv in the cache; idempotent.
#   scripts/wheel.sh && pip install torch==2.11.0 target/wheels/dc_search-*.whl
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${DC_SEARCH_CACHE:-$HOME/.cache/dc-search}"
bash "$repo/scripts/setup.sh" >&2
tools="$cache/maturin-1.16.0"
if [ ! -x "$tools/bin/maturin" ]; then
    echo "wheel: installing maturin 1.16.0 into $tools" >&2
    python3 -m venv "$tools" && "$tools/bin/pip" install -q maturin==1.16.0
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)"
rm -f "$repo"/target/wheels/dc_search-"$version"-*.whl
(cd "$repo/python" && "$tools/bin/maturin" build --release --quiet >&2)
ls "$repo"/target/wheels/dc_search-"$version"-*.whl
