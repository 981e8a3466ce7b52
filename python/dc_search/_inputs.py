"""What the binary reads, made from a training script's objects.

Owns: turning an ``nn.Module`` into a saved TorchScript module (scripted, or traced when it
cannot be scripted), finding its compressible layers (``Conv2d`` and ``Linear``, by module
path), turning arrays (NumPy or torch) into the ``.npz`` the binary reads, and writing the
TOML config that names them.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

#: Module types whose weight the search compresses when ``layers`` is None.
COMPRESSIBLE = ("Conv2d", "Linear")


def _type_name(module: Any) -> str:
    # A ScriptModule keeps the Python class name as `original_name`.
    return getattr(module, "original_name", None) or type(module).__name__


def model_name(model: Any) -> str:
    """A name for files and run folders: the model's class name, lower case."""
    name = re.sub(r"[^a-z0-9]+", "-", _type_name(model).lower()).strip("-")
    return name or "model"


def find_layers(model: Any, layers: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
    """The config's ``layers``: each named by its module path, with its weight (and bias)
    parameter. ``layers`` None: every ``Conv2d`` and ``Linear`` in module order; else the
    given module paths, each of which must have a ``weight``."""
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    if layers is None:
        paths = [p for p, m in modules.items() if p and _type_name(m) in COMPRESSIBLE]
        if not paths:
            raise ValueError(
                "the model has no Conv2d or Linear module to compress: name its layers "
                "(layers=['features.0', ...], module paths whose .weight to compress)"
            )
    else:
        paths = list(layers)
    out = []
    for p in paths:
        if f"{p}.weight" not in params:
            raise ValueError(
                f"layer {p!r}: the model has no parameter {p}.weight (give module paths "
                f"as model.named_modules() lists them)"
            )
        entry = {"name": p, "weight": f"{p}.weight"}
        if f"{p}.bias" in params:
            entry["bias"] = f"{p}.bias"
        out.append(entry)
    return out


def as_array(x: Any, what: str) -> np.ndarray:
    """A NumPy array of a NumPy array or a torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == object:
        raise ValueError(f"{what}: not a numeric array")
    return a


def images(x: Any, what: str) -> np.ndarray:
    """Images as the binary reads them: uint8 kept, other numbers as float32."""
    a = as_array(x, what)
    if a.ndim not in (3, 4):
        raise ValueError(f"{what}: images must be N×H×W, N×C×H×W or N×H×W×C, not shape {a.shape}")
    return a if a.dtype == np.uint8 else a.astype(np.float32)


def labels(y: Any, what: str) -> np.ndarray:
    """Labels as integers 0…K−1."""
    a = as_array(y, what).reshape(-1)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integers 0…K−1, not {a.dtype}")
    return a.astype(np.int64)


def layout_of(x: np.ndarray, given: Optional[str]) -> Optional[str]:
    """``nchw`` or ``nhwc`` for 4-D images: as given, else by where a channel axis of 1 or 3
    is."""
    if x.ndim != 4:
        return None
    if given is not None:
        if given not in ("nchw", "nhwc"):
            raise ValueError(f"layout must be 'nchw' or 'nhwc', not {given!r}")
        return given
    first, last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
    if first and not last:
        return "nchw"
    if last and not first:
        return "nhwc"
    raise ValueError(
        f"images of shape {x.shape}: say which axis holds the channels (layout='nchw' or 'nhwc')"
    )


def input_shape(x: np.ndarray, layout: Optional[str]) -> List[int]:
    """One input as forward() takes it: C×H×W."""
    if x.ndim == 3:
        return [1, int(x.shape[1]), int(x.shape[2])]
    if layout == "nhwc":
        return [int(x.shape[3]), int(x.shape[1]), int(x.shape[2])]
    return [int(d) for d in x.shape[1:]]


Pair = Tuple[Any, Any]


@dataclass
class Data:
    """The arrays of one run, checked and converted."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: Optional[np.ndarray]
    y_val: Optional[np.ndarray]
    layout: Optional[str]

    @staticmethod
    def of(train: Pair, test: Pair, valid: Optional[Pair], layout: Optional[str]) -> "Data":
        xt, yt = images(train[0], "train images"), labels(train[1], "train labels")
        xs, ys = images(test[0], "test images"), labels(test[1], "test labels")
        xv = yv = None
        if valid is not None:
            xv, yv = images(valid[0], "validation images"), labels(valid[1], "validation labels")
        lay = layout_of(xt, layout)
        return Data(xt, yt, xs, ys, xv, yv, lay)

    def save(self, path: Path) -> None:
        """Writes the ``.npz`` (uncompressed, as ``np.savez``) with fixed member dates, so
        the same arrays give the same bytes: a rerun on the same run folder resumes."""
        arrays = dict(x_train=self.x_train, y_train=self.y_train, x_test=self.x_test, y_test=self.y_test)
        if self.x_val is not None:
            arrays.update(x_val=self.x_val, y_val=self.y_val)
        tmp = path.with_name(path.name + ".part")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for key, a in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with z.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(a), allow_pickle=False)
        tmp.replace(path)

    def example(self, mean, std) -> Any:
        """Two training inputs as forward() takes them, normalised as the binary does (for
        tracing)."""
        import torch

        x = torch.tensor(np.asarray(self.x_train[:2]), dtype=torch.float32)
        if self.x_train.dtype == np.uint8:
            x = x / 255.0
        if x.dim() == 3:
            x = x.unsqueeze(1)
        elif self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        if mean is not None:
            c = x.shape[1]
            m = torch.tensor(np.broadcast_to(np.asarray(mean, np.float32), (c,)).copy()).view(1, c, 1, 1)
            s = torch.tensor(np.broadcast_to(np.asarray(std, np.float32), (c,)).copy()).view(1, c, 1, 1)
            x = (x - m) / s
        return x.contiguous()


def _same_module(a: Any, b: Any) -> bool:
    """Whether two ScriptModules compute the same thing: the same parameters and buffers
    (names, dtypes, values) and the same code in every submodule."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    if list(sa) != list(sb):
        return False
    for k in sa:
        if sa[k].dtype != sb[k].dtype or sa[k].shape != sb[k].shape or not torch.equal(sa[k], sb[k]):
            return False
    ma, mb = dict(a.named_modules()), dict(b.named_modules())
    if list(ma) != list(mb):
        return False
    for k in ma:
        try:
            if ma[k].code != mb[k].code:
                return False
        except (AttributeError, RuntimeError):
            pass
    return True


def save_module(model: Any, path: Path, example: Any) -> None:
    """Saves ``model`` as TorchScript in eval mode: a ScriptModule as it is, else scripted,
    else (when scripting fails) traced on ``example``. The caller's model keeps its mode.

    ``torch.jit.save`` writes other bytes for the same module in another process (a random
    serialisation id, constants in hash order), and a search's journal knows its dense
    model by the file's bytes: a file already at ``path`` holding the same module is kept,
    so that a rerun after Ctrl-C resumes."""
    import torch

    was = model.training
    model.eval()
    try:
        if isinstance(model, torch.jit.ScriptModule):
            scripted = model
        else:
            try:
                scripted = torch.jit.script(model)
            except Exception as e:  # scripting covers less Python than tracing
                warnings.warn(
                    f"dc_search: torch.jit.script failed ({str(e).splitlines()[0]}); tracing "
                    f"instead, which records one path through forward()",
                    stacklevel=3,
                )
                with torch.no_grad():
                    scripted = torch.jit.trace(model, example)
        if path.is_file():
            try:
                if _same_module(torch.jit.load(str(path), map_location="cpu"), scripted):
                    return
            except Exception:
                pass  # unreadable or another module: written anew below
        tmp = path.with_name(path.name + ".part")
        scripted.save(str(tmp))
        tmp.replace(path)
    finally:
        model.train(was)


def _toml(v: Any) -> str:
    """A TOML value of a string, number, bool, list or dict of those (JSON's string escapes
    are TOML's)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    return "[" + ", ".join(_toml(x) for x in v) + "]"


def _floats(v: Any) -> List[float]:
    return [float(x) for x in np.atleast_1d(np.asarray(v, dtype=np.float64))]


def write_config(
    path: Path,
    name: str,
    module: Path,
    shape: List[int],
    layers: List[Dict[str, str]],
    data: Path,
    layout: Optional[str],
    mean: Any,
    std: Any,
    validation: Optional[int],
    expected_accuracy: Optional[float],
) -> None:
    """The TOML config of a brought TorchScript model and its ``.npz``."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (as transforms.Normalize(mean, std)), or neither")
    lines = [f"model = {_toml(name)}"]
    if expected_accuracy is not None:
        lines.append(f"expected_accuracy = {_toml(float(expected_accuracy))}")
    lines += [
        "",
        "[torchscript]",
        f"module = {_toml(str(module))}",
        f"input_shape = {_toml(shape)}",
        "layers = [",
        *(f"    {_toml(layer)}," for layer in layers),
        "]",
        "",
        "[data]",
        f"path = {_toml(str(data))}",
    ]
    if layout is not None:
        lines.append(f"layout = {_toml(layout)}")
    if mean is not None:
        lines += [f"mean = {_toml(_floats(mean))}", f"std = {_toml(_floats(std))}"]
    if validation is not None:
        lines.append(f"validation = {int(validation)}")
    tmp = path.with_name(path.name + ".part")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
