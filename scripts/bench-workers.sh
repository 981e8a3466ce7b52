#!/usr/bin/env bash
# Probes per hour on this machine: N real probes (`dc-search probe --spec`, each pruning the
# cached dense model and retraining it the preset's probe_epochs) run one at a time with all
# threads, against the same number run two side by side with the threads split between them.
# Every probe is its own process (start-up, data and dense model loading included), as a
# worker's would be.
#
#   scripts/bench-workers.sh [PRESET] [N] [THREADS]      (default: lenet 6 2)
#
# Run it alone on the machine: the point is the CPU share.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
preset="${1:-lenet}"
n="${2:-6}"
threads="${3:-2}"
half=$((threads / 2 > 0 ? threads / 2 : 1))
bin="$repo/target/release/dc-search"
config="$repo/configs/$preset.toml"
[ -x "$bin" ] || { echo "bench-workers: build first (cargo build --release)" >&2; exit 2; }
[ -f "$config" ] || { echo "bench-workers: no preset $preset (configs/$preset.toml)" >&2; exit 2; }

dense="$("$bin" train "$preset" --device cpu | sed -n 's/^weights: *//p')"
[ -f "$dense" ] || { echo "bench-workers: no dense model for $preset" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# One spec per probe: the same ratios, another seed offset each (so none is answered from
# an earlier result).
python3 - "$config" "$dense" "$work" "$n" <<'EOF'
import hashlib, json, sys, tomllib
config, dense, work, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
text = open(config).read()
cfg = tomllib.loads(text)
layers = {"lenet": 4, "lenet-caffe": 4, "lenet-300-100": 3}[cfg["model"]]
ratios = [0.6, 0.65, 0.9, 0.75][:layers] if layers == 4 else [0.85, 0.8, 0.6]
epochs = cfg.get("search", {}).get("probe_epochs", 1.5)
sha = hashlib.sha256(open(dense, "rb").read()).hexdigest()
for i in range(2 * n):
    spec = {"spec": 1, "config": text, "dense": dense, "dense_sha256": sha, "warm_start": None,
            "action": "prune", "ratios": ratios, "bits": [], "epochs": epochs, "seed": 1,
            "offset": 1000 + i, "threshold": 0.5}
    json.dump(spec, open(f"{work}/spec-{i}.json", "w"))
EOF

probe() { # spec-index threads
    "$bin" probe --spec "$work/spec-$1.json" --out "$work/result-$1.json" --device cpu \
        --threads "$2" -q >/dev/null
}
now() { date +%s.%N; }

t0="$(now)"
for ((i = 0; i < n; i++)); do probe "$i" "$threads"; done
t1="$(now)"
for ((i = n; i < 2 * n; i += 2)); do
    probe "$i" "$half" &
    if ((i + 1 < 2 * n)); then probe $((i + 1)) "$half" & fi
    wait
done
t2="$(now)"

python3 - "$work" "$n" "$threads" "$half" "$t0" "$t1" "$t2" "$preset" <<'EOF'
import json, sys
work, n, threads, half = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0, t1, t2 = map(float, sys.argv[5:8])
preset = sys.argv[8]
res = [json.load(open(f"{work}/result-{i}.json")) for i in range(2 * n)]
one, two = t1 - t0, t2 - t1
acc = lambda rs: ", ".join(f"{r['valid_accuracy']:.4f}" for r in rs)
sec = lambda rs: sum(r["seconds"] for r in rs) / len(rs)
print(f"{preset}: {n} probes each way, every probe its own `dc-search probe` process")
print(f"  1 worker  x {threads} threads: {one:7.1f} s wall, {3600 * n / one:6.0f} probes/hour "
      f"(retraining {sec(res[:n]):.1f} s per probe; validation {acc(res[:n])})")
print(f"  2 workers x {half} thread{'s' if half > 1 else ''}:  {two:7.1f} s wall, {3600 * n / two:6.0f} probes/hour "
      f"(retraining {sec(res[n:]):.1f} s per probe; validation {acc(res[n:])})")
print(f"  2 workers / 1 worker: {one / two:.2f}x probes per hour")
EOF
