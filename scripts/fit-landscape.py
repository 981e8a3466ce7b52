"""Fits the synthetic LeNet-5 landscape of `dc-search bench search` (src/search/synthetic.rs,
`Landscape::lenet`) to the probes of committed searches.

Ratio probes (bisection and refinement): validation accuracy = dense − Σ_l scale·(knee_l/d_l)^power
− jump_cost·Σ_l ln(d_from/d_to)²·e^(−1), d_l the kept fraction of layer l and d_from that of the
probe's warm start (a 1.5-epoch probe leaves e^(−1) of a jump's deficit). dense is fixed at the
dense model's validation accuracy and scale at 0.0015 (it only trades off against the knees);
knees, power and jump_cost are fitted by least squares. The residual's rms is the noise the
landscape draws per probe. Bits probes: the accuracy a bits probe lost against its candidate's
own ratio probe = Σ_l quant_l·4^(2 − b_l), quant_l ≥ 0, by least squares.

    python3 -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch==2.11.0
    /tmp/venv-torch/bin/python scripts/fit-landscape.py searches/lenet-mnist-floor0.99-seed{1,2,3}
"""

import csv
import math
import re
import sys

import torch

DENSE, SCALE = 0.9941, 0.0015


def rows_of(folders):
    rows = []
    for f in folders:
        for r in csv.DictReader(open(f"{f}/trials.csv")):
            r["run"] = f
            rows.append(r)
    return rows


def warm(w):
    m = re.search(r"\[([^\]]*)\]", w)
    return [0.0] * 4 if m is None else [float(x) for x in m.group(1).split(",")]


def fit(params, loss, steps=6000):
    opt = torch.optim.Adam(params, lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()


def main(folders):
    torch.manual_seed(0)
    rows = rows_of(folders)
    ratio = [r for r in rows if r["phase"] in ("bisect", "refine")]
    f64 = torch.float64
    d = (1 - torch.tensor([[float(x) for x in r["ratios"].split(";")] for r in ratio], dtype=f64)).clamp(min=1e-6)
    dw = (1 - torch.tensor([warm(r["warm_start"]) for r in ratio], dtype=f64)).clamp(min=1e-6)
    acc = torch.tensor([float(r["valid_accuracy"]) for r in ratio], dtype=f64)
    jump = ((dw / d).log().clamp(min=0) ** 2).sum(1)
    lk = torch.log(torch.tensor([0.166, 0.0148, 0.0104, 0.16], dtype=f64)).requires_grad_()
    lp = torch.tensor(math.log(3.0), dtype=f64, requires_grad=True)
    lj = torch.tensor(math.log(2e-4), dtype=f64, requires_grad=True)

    def pred():
        return DENSE - (SCALE * (lk.exp() / d) ** lp.exp()).sum(1) - lj.exp() * jump * math.exp(-1.0)

    fit([lk, lp, lj], lambda: ((pred() - acc) ** 2).mean())
    rms = (pred() - acc).detach().pow(2).mean().sqrt().item()
    print(f"{len(acc)} ratio probes of {len(folders)} searches")
    print("knees", [round(k, 4) for k in lk.exp().tolist()], "power", round(lp.exp().item(), 3),
          "jump_cost", f"{lj.exp().item():.2g}", f"rms residual (noise) {rms:.5f}")

    xs, ys = [], []
    for b in (r for r in rows if r["phase"] == "bits"):
        cand = [r for r in ratio if r["run"] == b["run"] and r["ratios"] == b["ratios"] and r["feasible"] == "true"]
        if cand:
            xs.append([4.0 ** (2 - int(x)) for x in b["bits"].split(";")])
            ys.append(float(cand[-1]["valid_accuracy"]) - float(b["valid_accuracy"]))
    x, y = torch.tensor(xs, dtype=f64), torch.tensor(ys, dtype=f64)
    lq = torch.full((x.shape[1],), -7.0, dtype=f64, requires_grad=True)
    fit([lq], lambda: ((x @ lq.exp() - y) ** 2).mean(), 4000)
    q = lq.exp().detach()
    print(f"{len(y)} bits probes: quant", [round(v, 5) for v in q.tolist()],
          f"rms residual {(x @ q - y).pow(2).mean().sqrt().item():.5f}")


if __name__ == "__main__":
    main(sys.argv[1:])
