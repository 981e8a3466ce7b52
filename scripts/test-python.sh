#!/usr/bin/env bash
# test-python.sh — the Python package end to end, as a user installs it: builds the wheel
# (scripts/wheel.sh), makes a fresh venv, installs torch 2.11.0 (pip, from PyPI; wheels
# set-up already cached are taken from the cache) and the wheel, and runs
# python/tests/e2e.py: the README's Python example on a small MLP trained on real MNIST
# arrays, and the checks beside it. Called by scripts/test.sh.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${DC_SEARCH_CACHE:-$HOME/.cache/dc-search}"
wheel="$(bash "$repo/scripts/wheel.sh")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
start=$SECONDS
"$work/venv/bin/pip" install -q --find-links "$cache/wheels" torch==2.11.0 "$wheel"
echo "test-python: torch 2.11.0 and $(basename "$wheel") installed in a fresh venv in $((SECONDS - start)) s" >&2
"$work/venv/bin/python" "$repo/python/tests/e2e.py" "$repo/README.md" "$cache/data/mnist" "$work/run"
