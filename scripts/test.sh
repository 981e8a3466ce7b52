#!/usr/bin/env bash
# Runs the test suite from a fresh clone: set-up (cached, idempotent), then every test
# (unit, integration, property) in release mode against real libtorch and real MNIST, then
# the Python wheel in a fresh venv (scripts/test-python.sh). As
# root it first starts a single-node Slurm (scripts/slurm-up.sh: slurmctld, slurmd, munge)
# for tests/slurm.rs and stops it, by its PIDs, at the end; where Slurm cannot be started
# those tests say why and pass. Likewise tests/cuda.rs, without libtorch's CUDA part.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
# libtorch with its CUDA part and NVIDIA libraries (cached): tests/cuda.rs runs the binary
# against it to check that CUDA libraries without a GPU change nothing on the CPU.
if libs="$(bash "$repo/scripts/setup.sh" --cuda-libraries)"; then
    export DC_SEARCH_CUDA_LIBS="$libs"
else
    echo "tests/cuda.rs: libtorch's CUDA part could not be fetched; its test will be skipped" >&2
fi
cd "$repo"
slurm="$(mktemp -d)"
if bash "$repo/scripts/slurm-up.sh" start "$slurm"; then
    export SLURM_CONF="$slurm/slurm.conf" DC_SEARCH_SLURM=1
    trap 'bash "$repo/scripts/slurm-up.sh" stop "$slurm"' EXIT
else
    echo "tests/slurm.rs: its Slurm tests will be skipped" >&2
fi
cargo test --release "$@"
# The Python package end to end (a fresh venv, torch 2.11.0, the wheel): with the whole
# suite, not when cargo test was given a filter.
if [ $# -eq 0 ]; then
    bash "$repo/scripts/test-python.sh"
fi
