#!/usr/bin/env bash
# Runs the test suite from a fresh clone: set-up (cached, idempotent), then every test
# (unit, integration, property) in release mode against real libtorch and real MNIST.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"
cargo test --release "$@"
