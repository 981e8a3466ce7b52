#!/usr/bin/env python3
"""Measures candidate sparsifiers on LeNet-300-100 before any is built into dc-search.

Each method starts from the same dense model (dc-search's, exported as safetensors), trains
on the `.npz`'s training images only, and decides on its validation images; the result is a
safetensors state dict whose pruned weights are exact zeros, which dc-search then shares,
retrains and codes into a real `.dcz` (its search started from these weights: `dc-search
--floor 0.984 lenet-300-100 --data D.npz --weights OUT.safetensors`), so every method is
measured in real file bytes by the same pipeline.

Methods:
  magnitude  gradual magnitude pruning (Zhu & Gupta) to --sparsity per layer, the control;
  svd        sparse variational dropout (Molchanov et al. 2017): a log σ² per weight, local
             reparameterisation, the KL approximation of the paper, log α > --threshold
             pruned; --kl scales the KL term (1 = the ELBO).
  l0         L0 regularisation with hard-concrete gates per weight (Louizos et al. 2018),
             --lam the L0 penalty per weight (in units of the per-image loss).

    python sparsifier-candidates.py svd --npz mnist55k.npz --dense dense.safetensors \
        --epochs 30 --out svd.safetensors
Prints one JSON line: method, settings, kept fraction per layer, validation accuracy (of
the pruned model in float32), seconds.
"""

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

LAYERS = ["fc1", "fc2", "fc3"]
SCALE = 1 / 256  # the preset's input_scale


def data(path):
    d = np.load(path)
    f = lambda k: torch.tensor(d[k].reshape(len(d[k]), -1), dtype=torch.float32) * SCALE  # noqa: E731
    g = lambda k: torch.tensor(d[k].astype(np.int64))  # noqa: E731
    return (f("x_train"), g("y_train")), (f("x_val"), g("y_val"))


class SVDLinear(nn.Module):
    """A linear layer with a Gaussian weight per entry: mean θ, variance σ²."""

    def __init__(self, w, b):
        super().__init__()
        self.theta = nn.Parameter(w.clone())
        self.bias = nn.Parameter(b.clone())
        self.log_sigma2 = nn.Parameter(torch.full_like(w, -10.0))

    def log_alpha(self):
        return torch.clamp(self.log_sigma2 - torch.log(self.theta**2 + 1e-8), -10, 10)

    def forward(self, x, threshold):
        if self.training:
            mu = F.linear(x, self.theta, self.bias)
            var = F.linear(x * x, torch.exp(self.log_sigma2)) + 1e-8
            return mu + torch.sqrt(var) * torch.randn_like(mu)
        return F.linear(x, self.theta * (self.log_alpha() < threshold), self.bias)

    def kl(self):
        k1, k2, k3 = 0.63576, 1.87320, 1.48695
        la = self.log_alpha()
        return -(k1 * torch.sigmoid(k2 + k3 * la) - 0.5 * F.softplus(-la) - k1).sum()

    def mask(self, threshold):
        return self.log_alpha() < threshold


class L0Linear(nn.Module):
    """A linear layer with a hard-concrete gate per weight (β = 2/3, stretch to (−0.1, 1.1))."""

    beta, lo, hi = 2 / 3, -0.1, 1.1

    def __init__(self, w, b):
        super().__init__()
        self.weight = nn.Parameter(w.clone())
        self.bias = nn.Parameter(b.clone())
        self.log_a = nn.Parameter(torch.full_like(w, 2.0))  # gates start open (P(0) ≈ 0.03)

    def gate(self):
        if self.training:
            u = torch.rand_like(self.log_a).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + self.log_a) / self.beta)
        else:
            s = torch.sigmoid(self.log_a)
        return (s * (self.hi - self.lo) + self.lo).clamp(0, 1)

    def forward(self, x, threshold=None):
        return F.linear(x, self.weight * self.gate(), self.bias)

    def l0(self):
        shift = self.beta * math.log(-self.lo / self.hi)
        return torch.sigmoid(self.log_a - shift).sum()

    def mask(self, threshold=None):
        return self.gate() > 0


def accuracy(layers, x, y, threshold):
    for m in layers:
        m.eval()
    with torch.no_grad():
        h = x
        for i, m in enumerate(layers):
            h = m(h, threshold)
            if i < len(layers) - 1:
                h = F.relu(h)
        acc = float((h.argmax(1) == y).float().mean())
    for m in layers:
        m.train()
    return acc


def run(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    (xt, yt), (xv, yv) = data(args.npz)
    dense = load_file(args.dense)
    n = len(xt)
    t0 = time.time()
    if args.method == "magnitude":
        ws = [nn.Parameter(dense[f"{k}.weight"].clone()) for k in LAYERS]
        bs = [nn.Parameter(dense[f"{k}.bias"].clone()) for k in LAYERS]
        masks = [torch.ones_like(w, dtype=torch.bool) for w in ws]
        target = [float(s) for s in args.sparsity.split(",")]
        opt = torch.optim.SGD(ws + bs, lr=args.lr, momentum=0.9, weight_decay=5e-4)
        steps = args.epochs * (n // 64)
        ramp = int(steps * 0.5)
        step = 0
        for _ in range(args.epochs):
            perm = torch.randperm(n)
            for i in range(0, n - 63, 64):
                if step <= ramp and step % max(1, ramp // 20) == 0:
                    frac = min(1.0, step / max(1, ramp))
                    for j, w in enumerate(ws):
                        s = target[j] * (1 - (1 - frac) ** 3)
                        k = int(s * w.numel())
                        if k > 0:
                            cut = w.detach().abs().flatten().kthvalue(k).values
                            masks[j] = w.detach().abs() > cut
                for g in opt.param_groups:
                    g["lr"] = args.lr * (1 - step / steps)
                b = perm[i : i + 64]
                h = xt[b]
                for j in range(3):
                    h = F.linear(h, ws[j] * masks[j], bs[j])
                    if j < 2:
                        h = F.relu(h)
                opt.zero_grad()
                F.cross_entropy(h, yt[b]).backward()
                opt.step()
                step += 1
        out = {f"{k}.weight": (ws[j] * masks[j]).detach() for j, k in enumerate(LAYERS)}
        out.update({f"{k}.bias": bs[j].detach() for j, k in enumerate(LAYERS)})
        with torch.no_grad():
            h = xv
            for j in range(3):
                h = F.linear(h, out[f"{LAYERS[j]}.weight"], out[f"{LAYERS[j]}.bias"])
                if j < 2:
                    h = F.relu(h)
            val = float((h.argmax(1) == yv).float().mean())
        kept = [float(m.float().mean()) for m in masks]
    else:
        cls = SVDLinear if args.method == "svd" else L0Linear
        layers = nn.ModuleList([cls(dense[f"{k}.weight"], dense[f"{k}.bias"]) for k in LAYERS])
        gates = [p for n_, p in layers.named_parameters() if n_.endswith(("log_sigma2", "log_a"))]
        rest = [p for n_, p in layers.named_parameters() if not n_.endswith(("log_sigma2", "log_a"))]
        opt = torch.optim.Adam([{"params": rest, "lr": args.lr}, {"params": gates, "lr": args.gate_lr}])
        base = [args.lr, args.gate_lr]
        steps = args.epochs * (n // args.batch)
        step = 0
        for epoch in range(args.epochs):
            perm = torch.randperm(n)
            for i in range(0, n - args.batch + 1, args.batch):
                for g, lr in zip(opt.param_groups, base):
                    g["lr"] = lr * (1 - step / steps)
                b = perm[i : i + args.batch]
                h = xt[b]
                for j, m in enumerate(layers):
                    h = m(h, args.threshold)
                    if j < 2:
                        h = F.relu(h)
                ce = F.cross_entropy(h, yt[b])
                if args.method == "svd":
                    ramp = min(1.0, step / max(1, steps * 0.3))
                    reg = args.kl * ramp * sum(m.kl() for m in layers) / n
                else:
                    reg = args.lam * sum(m.l0() for m in layers) / n
                opt.zero_grad()
                (ce + reg).backward()
                opt.step()
                step += 1
            if args.verbose:
                acc = accuracy(layers, xv, yv, args.threshold)
                layers.eval()  # L0's gates: their deterministic value, not a sample
                kept = [float(m.mask(args.threshold).float().mean()) for m in layers]
                layers.train()
                print(f"epoch {epoch + 1}: validation {acc:.4f}, kept {kept}", flush=True)
        val = accuracy(layers, xv, yv, args.threshold)
        layers.eval()
        out = {}
        with torch.no_grad():
            for k, m in zip(LAYERS, layers):
                mask = m.mask(args.threshold)
                w = m.theta if args.method == "svd" else m.weight * m.gate()
                out[f"{k}.weight"] = (w * mask).detach().contiguous()
                out[f"{k}.bias"] = m.bias.detach().contiguous()
        kept = [float(m.mask(args.threshold).float().mean()) for m in layers]
    save_file({k: v.contiguous() for k, v in out.items()}, args.out)
    total = sum(dense[f"{k}.weight"].numel() for k in LAYERS)
    nnz = sum(int((out[f"{k}.weight"] != 0).sum()) for k in LAYERS)
    print(
        json.dumps(
            {
                "method": args.method,
                "settings": {k: v for k, v in vars(args).items() if k not in ("npz", "dense", "out")},
                "kept": [round(k, 4) for k in kept],
                "kept_total": round(nnz / total, 5),
                "weights_kept": nnz,
                "validation": round(val, 4),
                "seconds": round(time.time() - t0, 1),
            }
        ),
        flush=True,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=["magnitude", "svd", "l0"])
    p.add_argument("--npz", required=True)
    p.add_argument("--dense", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--gate-lr", type=float, default=1e-2, help="lr of log σ² (svd) and log a (l0)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--kl", type=float, default=1.0)
    p.add_argument("--threshold", type=float, default=3.0)
    p.add_argument("--lam", type=float, default=0.1)
    p.add_argument("--sparsity", default="0.95,0.9,0.7")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--verbose", action="store_true")
    run(p.parse_args())


if __name__ == "__main__":
    main()
