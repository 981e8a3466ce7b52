"""Makes the brought model and data of this run: fashion-cnn.pt, a small CNN trained in
PyTorch on Fashion-MNIST, and fashion-mnist.npz, the arrays it was trained on, as a user
would bring them to dc-search.

Data: Debian's fashion-mnist IDX files (/usr/share/datasets/fashion-mnist, installed by
scripts/setup.sh), written as uint8 N×28×28 arrays: x_train = the first 55,000 training
images (what the model is trained on), x_val = the last 5,000 (never seen in training:
dc-search decides on them), x_test = the 10,000 test images.

Model: conv 8@5x5 -> BatchNorm -> ReLU -> 2x2 max pool -> conv 16@5x5 (no bias) ->
BatchNorm -> ReLU -> 2x2 max pool -> fc 256->64 -> ReLU -> fc 64->10, as nn.Sequential
blocks (parameters `features.0.weight`, `classifier.1.weight`, …). Trained with Adam (lr
1e-3, batches of 128, 2 epochs, horizontal flips), inputs normalised by
transforms.Normalize((0.286,), (0.353,)) after ToTensor. Seed 0, two threads.

    /tmp/venv-torch/bin/python make_model.py      # torch 2.11.0 (CPU), numpy
"""

import gzip
import pathlib

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

HERE = pathlib.Path(__file__).parent
IDX = pathlib.Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.286, 0.353


def idx(name: str) -> np.ndarray:
    b = gzip.open(IDX / f"{name}.gz").read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


class FashionCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 5),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),  # [n, 8, 12, 12]
            nn.Conv2d(8, 16, 5, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),  # [n, 16, 4, 4]
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [n, 1, 28, 28]
        return self.classifier(self.features(x))


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    x, y = idx("train-images-idx3-ubyte"), idx("train-labels-idx1-ubyte").astype(np.int64)
    xt, yt = idx("t10k-images-idx3-ubyte"), idx("t10k-labels-idx1-ubyte").astype(np.int64)
    arrays = dict(x_train=x[:55000], y_train=y[:55000], x_val=x[55000:], y_val=y[55000:], x_test=xt, y_test=yt)
    np.savez(HERE / "fashion-mnist.npz", **arrays)
    norm = lambda a: (torch.from_numpy(a).float().unsqueeze(1) / 255 - MEAN) / STD
    xtr, ytr = norm(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
    model = FashionCnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for epoch in range(2):
        model.train()
        perm = torch.randperm(len(ytr), generator=g)
        for b in range(0, len(ytr), 128):
            idx_b = perm[b : b + 128]
            xb = xtr[idx_b]
            flip = torch.rand(len(idx_b), generator=g) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
            loss = F.cross_entropy(model(xb), ytr[idx_b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = lambda a, l: (model(norm(a)).argmax(1) == torch.from_numpy(l)).float().mean()
            print(f"epoch {epoch + 1}: validation {acc(arrays['x_val'], arrays['y_val']):.4f}, "
                  f"test {acc(xt, yt):.4f}")
    out = HERE / "fashion-cnn.pt"
    torch.jit.script(model).save(str(out))
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({out.stat().st_size} bytes, {n} parameters)")


if __name__ == "__main__":
    main()
