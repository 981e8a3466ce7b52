#!/usr/bin/env bash
# device-check.sh — one short, prepared check of dc-search on a GPU machine that has no
# internet and no cargo registry, in two halves:
#
#   scripts/device-check.sh pack          here: bundles the release binary, gzipped MNIST and
#                                         the cached dense LeNet-5 into .device/ (git-ignored,
#                                         about 18 MB)
#   scripts/device-check.sh run [DEVICE]  there (DEVICE: cuda, the default, or cpu for a dry
#                                         run): finds the installed PyTorch's libraries, prints
#                                         the GPU, then bench train, a 10-probe search, bench
#                                         sensitivity, the file evaluated on the CPU, and one
#                                         compression run twice (same seed: same file?), one
#                                         summary line per step; outputs under $OUT (or
#                                         .device/out)
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="$repo/.device"
say() { echo "device-check: $*"; }

pack() {
  set -e
  local cache="${DC_SEARCH_CACHE:-$HOME/.cache/dc-search}"
  local bin="$repo/target/release/dc-search"
  [ -x "$bin" ] || { say "build first: cargo build --release"; exit 1; }
  local model
  model="$(ls -t "$cache"/models/lenet-mnist-*.safetensors 2>/dev/null | head -1)"
  [ -n "$model" ] || { say "no cached dense LeNet-5: run dc-search train lenet first"; exit 1; }
  rm -rf "$bundle"; mkdir -p "$bundle/cache/models" "$bundle/cache/data/mnist"
  cp "$bin" "$bundle/dc-search"
  cp "$model" "$bundle/cache/models/"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    gzip -c "$cache/data/mnist/$f" > "$bundle/cache/data/mnist/$f.gz"
  done
  grep -qx '/.device/' "$repo/.git/info/exclude" 2>/dev/null || echo '/.device/' >> "$repo/.git/info/exclude"
  say "packed $(du -sh "$bundle" | cut -f1) into $bundle (carry .device)"
}

run() {
  local dev="${1:-cuda}" out="${OUT:-$bundle/out}" bin="$bundle/dc-search"
  mkdir -p "$out"
  [ -x "$bin" ] || { say "no bundle: run 'scripts/device-check.sh pack' where the binary was built"; exit 1; }
  # The binary's rpath names the build machine's libtorch; here the installed PyTorch's
  # torch/lib serves (same libtorch 2.11.0), and its libtorch_cuda.so is loaded at start-up.
  local torch_lib
  torch_lib="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)"
  if [ -n "$torch_lib" ]; then
    export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    say "libtorch: $torch_lib ($(python3 -c 'import torch; print(torch.__version__)'))"
  else
    say "libtorch: no PyTorch for python3; using the binary's own rpath"
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi -L | sed 's/^/device-check: /'
  export DC_SEARCH_CACHE="$bundle/cache" DC_SEARCH_CUDA=1
  local data="$bundle/cache/data/mnist" t0 rc
  step() {
    local name="$1"; shift
    t0=$(date +%s.%N)
    "$@" > "$out/$name.log" 2>&1; rc=$?
    printf 'device-check: %-22s exit %d, %6.1f s; %s\n' "$name" "$rc" \
      "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" "$(grep -v '^\[' "$out/$name.log" | tail -1 | cut -c1-150)"
  }
  step bench-train "$bin" bench train lenet --device "$dev" --steps 200 --data-dir "$data" --quiet
  step search-10p "$bin" --floor 0.99 lenet --device "$dev" --budget 10p --data-dir "$data" --out "$out/run"
  step bench-sensitivity "$bin" bench sensitivity lenet --device "$dev" --data-dir "$data" --quiet
  step eval-on-cpu "$bin" eval "$out/run/lenet.dcz" --device cpu --data-dir "$data" --quiet
  # The file decoded on the CPU against what the search measured on the device.
  python3 - "$out/search-10p.log" "$out/eval-on-cpu.log" "$dev" <<'PY' || true
import json, re, sys
run = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
ev = open(sys.argv[2]).read()
cpu = {k: (float(a), int(n)) for k, a, n in re.findall(r"^(validation|test):\s+accuracy ([0-9.]+) loss \S+ \((\d+) images\)", ev, re.M)}
for key, name in (("valid_accuracy", "validation"), ("test_accuracy", "test")):
    a, n = cpu[name]
    print(f"device-check: {name:<10} on {sys.argv[3]} {run[key]:.4f}, decoded on the cpu {a:.4f}: "
          f"{round(abs(run[key] - a) * n)} image(s) apart")
PY
  # Determinism: the same compression twice with the same seed, then the two files compared.
  local fixed=(compress lenet --ratios 0.7,0.93,0.97,0.85 --bits 6,4,3,4 --prune-epochs 1 --codebook-epochs 0.3
               --device "$dev" --data-dir "$data" --quiet)
  step compress-a "$bin" "${fixed[@]}" -o "$out/a.dcz"
  step compress-b "$bin" "${fixed[@]}" -o "$out/b.dcz"
  if cmp -s "$out/a.dcz" "$out/b.dcz"; then same=yes; else same=no; fi
  say "same seed, same file on $dev: $same ($(stat -c %s "$out/a.dcz" 2>/dev/null || echo 0) and $(stat -c %s "$out/b.dcz" 2>/dev/null || echo 0) bytes)"
  grep -h "s/epoch\|% of peak" "$out/bench-train.log" | sed 's/^/device-check:   /'
}

case "${1:-}" in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/device-check.sh pack | run [cuda|cpu]"; exit 2 ;;
esac
