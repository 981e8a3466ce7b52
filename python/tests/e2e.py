"""End-to-end test of the installed wheel against the installed torch, on real MNIST arrays
at test size (run by scripts/test-python.sh in a fresh venv; exits non-zero on failure).

It trains a small MLP in PyTorch on 8,000 MNIST training images (3,000 others validate),
runs the README's Python example on it verbatim (the search, then load_state_dict), and
checks that the loaded state dict scores on the test images what dc-search reported, that
the file and report exist and agree, that the binary ran against this venv's torch/lib,
that Ctrl-C stops a search and the same call resumes it to the same file, that the
sensitivity sweep and the ratio exports work, that a bad input raises DcSearchError with
the binary's one line, and that another torch release is named at import.

    python e2e.py README.md MNIST_DIR WORKDIR
"""

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def readme_example(readme: Path) -> str:
    """The README's Python example: the ```python block after the marker comment."""
    text = readme.read_text(encoding="utf-8")
    m = re.search(r"<!-- python example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no python example block after <!-- python example -->"
    return m.group(1)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x))


MEAN, STD = 0.1307, 0.3081


def normalise(x: np.ndarray) -> torch.Tensor:
    return (torch.tensor(x, dtype=torch.float32).unsqueeze(1) / 255.0 - MEAN) / STD


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(normalise(x)).argmax(1).numpy()
    return float((pred == y).mean())


def train_mlp(x: np.ndarray, y: np.ndarray) -> nn.Module:
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xs, ys = normalise(x), torch.from_numpy(y.astype(np.int64))
    for _ in range(4):
        perm = torch.randperm(len(xs))
        for i in range(0, len(xs), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xs[b]), ys[b]).backward()
            opt.step()
    return model.eval()


def main() -> None:
    readme, mnist, work = (Path(a).resolve() for a in sys.argv[1:4])
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    x_all, y_all = idx(mnist / "train-images-idx3-ubyte"), idx(mnist / "train-labels-idx1-ubyte")
    # The model trains on x_train; validation images it has never seen decide.
    x_train, y_train = x_all[:8000], y_all[:8000]
    x_val, y_val = x_all[8000:11000], y_all[8000:11000]
    x_test, y_test = (
        idx(mnist / "t10k-images-idx3-ubyte")[:2000],
        idx(mnist / "t10k-labels-idx1-ubyte")[:2000],
    )
    model = train_mlp(x_train, y_train)
    dense = accuracy(model, x_test, y_test)
    print(f"dense MLP: test accuracy {dense:.4f}", flush=True)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]

    import dc_search

    # The README's example, verbatim, on this model and these arrays.
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    t0 = time.time()
    scope = dict(
        model=model, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test
    )
    exec(readme_example(readme), scope)
    seconds = time.time() - t0
    result = scope["result"]
    print(
        f"README example: {result.bytes} B, {result.compression:.1f}x, valid {result.valid_accuracy:.4f}, "
        f"test {result.test_accuracy:.4f}, {seconds:.0f} s; files in {result.run_dir}",
        flush=True,
    )

    # The loaded state dict scores what dc-search reported (same decoded weights, same
    # normalisation; float differences may flip an image or two).
    got = accuracy(model, x_test, y_test)
    assert abs(got - result.test_accuracy) <= 2 / len(y_test), (got, result.test_accuracy)
    assert result.valid_accuracy >= result.floor, (result.valid_accuracy, result.floor)
    # Layers found by module path; the state dict holds what the file says.
    assert sorted(result.ratios) == sorted(names) == sorted(result.bits), (result.ratios, names)
    sd = model.state_dict()
    for n in names:
        w = sd[f"{n}.weight"]
        zeros = float((w == 0).float().mean())
        assert abs(zeros - result.ratios[n]) < 1e-3, (n, zeros, result.ratios[n])
        assert len(torch.unique(w[w != 0])) <= 2 ** result.bits[n], n
    assert result.file.is_file() and result.file.stat().st_size == result.bytes
    assert result.report_path.is_file() and result.sensitivity.is_file()
    assert set(result.state_dict) == set(sd)

    # The binary ran against this venv's libtorch.
    env = dc_search._runtime.environment()
    ldd = subprocess.run(
        ["ldd", str(dc_search._runtime.binary())], env=env, capture_output=True, text=True
    ).stdout
    lib = str(dc_search._runtime.torch_lib())
    line = next(x for x in ldd.splitlines() if "libtorch_cpu.so" in x)
    assert lib in line, (lib, line)

    # Ctrl-C: a search interrupted in another Python process stops within seconds, and the
    # same call with the same out resumes it to the file the uninterrupted call wrote.
    torch.save(dense_state, work / "dense.pt")
    np.savez(
        work / "arrays.npz",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
    )
    call = (
        readme_example(readme)
        .split("model.load_state_dict")[0]
        .replace("threads=2)", "threads=2, out='interrupted', progress=False, verbose=True)")
    )
    assert "out='interrupted'" in call, call
    child = (
        f"import sys, numpy as np, torch; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from e2e import MLP\n"
        "model = MLP(); model.load_state_dict(torch.load('dense.pt')); model.eval()\n"
        "globals().update(np.load('arrays.npz'))\n" + call
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stderr=subprocess.PIPE, text=True)
    trials = work / "interrupted" / "trials.csv"
    deadline = time.time() + 300
    while not (trials.is_file() and len(trials.read_text().splitlines()) > 8):
        assert proc.poll() is None and time.time() < deadline, "the child search ended early"
        time.sleep(0.2)
    t_int = time.time()
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    stopped = time.time() - t_int
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
    assert stopped < 10, stopped
    print(
        f"Ctrl-C: the child search stopped {stopped:.1f} s after SIGINT, "
        f"{len(trials.read_text().splitlines()) - 1} probes journaled",
        flush=True,
    )
    # The rerun, as the interrupted script would make it (its model class is e2e.MLP).
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from e2e import MLP as ScriptMLP

    again = dict(scope, model=ScriptMLP())
    again["model"].load_state_dict(dense_state)
    lines = io.StringIO()
    with contextlib.redirect_stderr(lines):
        exec(call, again)
    resumed = again["result"]
    assert "resum" in lines.getvalue(), lines.getvalue()[-2000:]
    assert resumed.file.read_bytes() == result.file.read_bytes(), (resumed.bytes, result.bytes)
    print(f"resumed: the same {resumed.bytes}-byte file as the uninterrupted search", flush=True)

    # Ratios for other tools.
    nni = dc_search.export_ratios(result, to="nni")
    assert [c["op_names"][0] for c in nni] == names, nni
    csv_text = dc_search.export_ratios(result, to="csv")
    assert csv_text.startswith("layer,sparse_ratio,bits,weight"), csv_text
    assert dc_search.export_ratios(result, to="csv", output=work / "ratios.csv") == csv_text
    assert (work / "ratios.csv").read_text() == csv_text

    # The sensitivity sweep.
    # The sensitivity sweep, of a ScriptModule, on two layers named by module path.
    s = dc_search.sensitivity(
        torch.jit.script(model),
        (x_train, y_train),
        (x_test, y_test),
        valid=(x_val, y_val),
        layers=["body.1", "head"],
        mean=[MEAN],
        std=[STD],
        progress=False,
        threads=2,
    )
    assert sorted(s.curves) == ["body.1", "head"] and s.svg.is_file(), s
    assert all(len(c) > 5 and c[0][0] == 0.0 for c in s.curves.values()), s.curves

    # A bad input: the binary's one line as an exception.
    bad = y_train.copy()
    bad[0] = 12  # more classes than the model's 10 outputs
    try:
        dc_search.compress(
            model, (x_train, bad), (x_test, y_test), valid=(x_val, y_val), floor=0.5, progress=False
        )
    except dc_search.DcSearchError as e:
        msg = str(e)
        assert "\n" not in msg and len(msg) < 400 and "label" in msg, msg
        print(f"bad labels: DcSearchError: {msg}", flush=True)
    else:
        raise AssertionError("labels beyond the model's outputs were accepted")

    # Another torch release is named at import.
    probe = (
        "import warnings, torch; torch.__version__ = '2.10.0+cpu'\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always'); import dc_search\n"
        "print([str(x.message) for x in w if x.category is dc_search.TorchVersionWarning])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "the installed torch is 2.10.0" in out and "2.11.0" in out, out
    print("python e2e: all checks passed", flush=True)


if __name__ == "__main__":
    main()
