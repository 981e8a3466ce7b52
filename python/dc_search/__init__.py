"""dc-search from Python: Deep Compression of a PyTorch model under an accuracy floor.

    import dc_search
    result = dc_search.compress(model, train=(x_train, y_train), test=(x_test, y_test),
                                floor=0.99, mean=[0.1307], std=[0.3081])
    model.load_state_dict(result.state_dict)          # the decoded compressed weights
    print(result.bytes, result.ratios, result.bits, result.report_path)

The work is done by the ``dc-search`` binary this package's wheel installs, run against the
installed PyTorch's libtorch (``torch/lib``; torch 2.11.0). This module owns the public API:
:func:`compress` (the search), :func:`sensitivity` (the per-layer sweep) and
:func:`export_ratios` (ratios for NNI, Distiller or CSV); ``_inputs`` turns the model and
arrays into the binary's files, ``_runtime`` finds torch and the binary and runs it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _inputs, _runtime
from ._runtime import TORCH_VERSION, DcSearchError, TorchVersionWarning

__all__ = [
    "compress",
    "sensitivity",
    "export_ratios",
    "Result",
    "Sensitivity",
    "DcSearchError",
    "TorchVersionWarning",
    "TORCH_VERSION",
]

_runtime.check_torch(at_import=True)

Pair = Tuple[Any, Any]


@dataclass
class Result:
    """What a search wrote and measured.

    ``state_dict`` is the decoded compressed model as the module's whole state dict (for
    ``load_state_dict``, strict); ``ratios`` and ``bits`` are per layer (module path): the
    fraction of weights the file prunes and the bits of each kept weight's index.
    ``valid_accuracy`` and ``test_accuracy`` are the decoded file's, measured by dc-search.
    """

    state_dict: Dict[str, Any]
    ratios: Dict[str, float]
    bits: Dict[str, int]
    bytes: int
    compression: float
    valid_accuracy: float
    test_accuracy: float
    floor: float
    file: Path
    run_dir: Path
    report_path: Path
    sensitivity: Path
    safetensors: Path
    summary: Dict[str, Any] = field(repr=False)


@dataclass
class Sensitivity:
    """A sensitivity sweep: each layer pruned alone at each ratio, no retraining.
    ``curves[layer]`` lists ``(sparse_ratio, validation_accuracy)``."""

    csv: Path
    svg: Path
    curves: Dict[str, List[Tuple[float, float]]]


def _prepare(
    model: Any,
    train: Pair,
    test: Pair,
    valid: Optional[Pair],
    layers: Optional[Sequence[str]],
    mean: Any,
    std: Any,
    layout: Optional[str],
    validation: Optional[int],
    expected_accuracy: Optional[float],
    workdir: Union[str, Path],
    name: Optional[str],
    data_name: str,
    tag: str,
) -> Tuple[str, Path]:
    """Writes the module, the arrays and the config into ``workdir/inputs/<name>-<tag>/``;
    returns the model's name and the config's path."""
    data = _inputs.Data.of(train, test, valid, layout)
    name = name or _inputs.model_name(model)
    found = _inputs.find_layers(model, layers)
    folder = Path(workdir) / "inputs" / f"{name}-{data_name}-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    data.save(folder / f"{data_name}.npz")
    _inputs.save_module(model, folder / f"{name}.pt", data.example(mean, std))
    config = folder / f"{name}.toml"
    _inputs.write_config(
        config,
        name,
        Path(f"{name}.pt"),
        _inputs.input_shape(data.x_train, data.layout),
        found,
        Path(f"{data_name}.npz"),
        data.layout,
        mean,
        std,
        validation,
        expected_accuracy,
    )
    return name, config


def _common(
    seed: Optional[int], threads: Optional[int], device: Optional[str], validation_from: Optional[str]
) -> List[str]:
    args: List[str] = []
    if validation_from is not None:
        args += ["--validation-from", str(validation_from)]
    if seed is not None:
        args += ["--seed", str(int(seed))]
    if threads is not None:
        args += ["--threads", str(int(threads))]
    if device is not None:
        args += ["--device", str(device)]
    return args


def _free_folder(base: Path) -> Path:
    """``base``, or the next ``base-2``, ``base-3``, … that does not exist."""
    if not base.exists():
        return base
    n = 2
    while base.with_name(f"{base.name}-{n}").exists():
        n += 1
    return base.with_name(f"{base.name}-{n}")


def compress(
    model: Any,
    train: Pair,
    test: Pair,
    *,
    floor: Optional[float] = None,
    max_drop: Optional[float] = None,
    valid: Optional[Pair] = None,
    layers: Optional[Sequence[str]] = None,
    mean: Any = None,
    std: Any = None,
    layout: Optional[str] = None,
    budget: Union[int, str, None] = None,
    sparsifier: Optional[str] = None,
    validation: Optional[int] = None,
    validation_from: Optional[str] = None,
    expected_accuracy: Optional[float] = None,
    out: Union[str, Path, None] = None,
    workdir: Union[str, Path] = "runs",
    name: Optional[str] = None,
    data_name: str = "data",
    seed: Optional[int] = None,
    threads: Optional[int] = None,
    device: Optional[str] = None,
    progress: bool = True,
    verbose: bool = False,
    args: Sequence[str] = (),
) -> Result:
    """Searches each layer's sparse ratio and bits so that the decoded model keeps
    ``floor`` validation accuracy (or loses at most ``max_drop`` points), writes the
    ``.dcz`` file, and returns it decoded as a state dict with what was measured.

    ``model``: a trained ``nn.Module`` (scripted with ``torch.jit.script``, traced if that
    fails) or a ``ScriptModule``; it is left as it was. ``train``, ``test`` and optionally
    ``valid``: ``(images, labels)`` as NumPy arrays or tensors, images ``uint8`` (pixels) or
    float, N×H×W, N×C×H×W or N×H×W×C (``layout='nhwc'``), labels integers 0…K−1. The
    validation images decide everything; the test images are evaluated once, at the end.
    Without ``valid``, ``validation`` images (default 5000) are held out of ``train``, which
    a model trained on all of ``train`` has seen: give ``valid``, or ``validation_from='test'``
    to hold them out of ``test`` instead. ``mean``/``std``: the
    ``transforms.Normalize`` after ``ToTensor`` the model was trained with (``uint8``
    pixels are divided by 255 first; float images are taken as they are).
    ``layers``: module paths to compress (default every ``Conv2d`` and ``Linear``).
    ``budget``: ratio probes (an int, or ``"40p"``) or a cap in minutes (``"26m"``).
    ``sparsifier``: ``"magnitude"`` (the default) or ``"l0"`` (L0 gates trained from the
    model first; the search prunes on top of their zeros).
    ``out``: the run folder (default ``workdir/<name>-<data>-floor<F>``, a new one each
    call); the same call with the same ``out`` resumes a stopped search. ``args``: further
    ``dc-search`` flags. A failure raises :class:`DcSearchError` with dc-search's message.
    """
    if (floor is None) == (max_drop is None):
        raise ValueError("give exactly one of floor (e.g. 0.99) and max_drop (points, e.g. 0.5)")
    tag = f"floor{floor:g}" if floor is not None else f"maxdrop{max_drop:g}"
    name, config = _prepare(
        model,
        train,
        test,
        valid,
        layers,
        mean,
        std,
        layout,
        validation,
        expected_accuracy,
        workdir,
        name,
        data_name,
        tag,
    )
    run_dir = Path(out) if out is not None else _free_folder(Path(workdir) / f"{name}-{data_name}-{tag}")
    cmd = [str(config)]
    cmd += ["--floor", f"{floor}"] if floor is not None else ["--max-drop", f"{max_drop}"]
    if budget is not None:
        cmd += ["--budget", f"{budget}p" if isinstance(budget, int) else str(budget)]
    if sparsifier is not None:
        cmd += ["--sparsifier", sparsifier]
    cmd += ["--out", str(run_dir), *_common(seed, threads, device, validation_from), *map(str, args)]
    summary = _runtime.summary(_runtime.run(cmd, progress, verbose, desc=f"dc-search {name}"))
    dcz = Path(summary["file"])
    run_dir = dcz.parent
    st_path = run_dir / f"{name}.safetensors"
    _runtime.run(
        ["export", str(dcz), "--to", "safetensors", "--ts-config", str(config), "-o", str(st_path)],
        progress=False,
    )
    from safetensors.torch import load_file

    layers_out = summary["ratios"]
    return Result(
        state_dict=load_file(str(st_path)),
        ratios={r["name"]: float(r["file_sparse_ratio"]) for r in layers_out},
        bits={r["name"]: int(r["bits"]) for r in layers_out},
        bytes=int(summary["bytes"]),
        compression=float(summary["compression"]),
        valid_accuracy=float(summary["valid_accuracy"]),
        test_accuracy=float(summary["test_accuracy"]),
        floor=float(summary["floor"]),
        file=dcz,
        run_dir=run_dir,
        report_path=run_dir / "report.md",
        sensitivity=run_dir / "sensitivity.csv",
        safetensors=st_path,
        summary=summary,
    )


def _curves(path: Path) -> Dict[str, List[Tuple[float, float]]]:
    curves: Dict[str, List[Tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            curves.setdefault(row["layer"], []).append((float(row["sparse_ratio"]), float(row["accuracy"])))
    return curves


def sensitivity(
    model: Any,
    train: Pair,
    test: Pair,
    *,
    valid: Optional[Pair] = None,
    layers: Optional[Sequence[str]] = None,
    mean: Any = None,
    std: Any = None,
    layout: Optional[str] = None,
    validation: Optional[int] = None,
    validation_from: Optional[str] = None,
    out: Union[str, Path, None] = None,
    workdir: Union[str, Path] = "runs",
    name: Optional[str] = None,
    data_name: str = "data",
    threads: Optional[int] = None,
    device: Optional[str] = None,
    progress: bool = True,
    verbose: bool = False,
    args: Sequence[str] = (),
) -> Sensitivity:
    """The sensitivity sweep: each layer pruned alone at each ratio of the grid, measured
    on the validation images without retraining (``sensitivity.csv`` and ``.svg`` in
    ``out``, default ``workdir/<name>-<data>-sensitivity``). Arguments as :func:`compress`."""
    name, config = _prepare(
        model,
        train,
        test,
        valid,
        layers,
        mean,
        std,
        layout,
        validation,
        None,
        workdir,
        name,
        data_name,
        "sensitivity",
    )
    folder = Path(out) if out is not None else Path(workdir) / f"{name}-{data_name}-sensitivity"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        "sensitivity",
        str(config),
        "--out",
        str(folder),
        *_common(None, threads, device, validation_from),
        *map(str, args),
    ]
    _runtime.run(cmd, progress, verbose, desc=f"sensitivity {name}")
    path = folder / "sensitivity.csv"
    return Sensitivity(csv=path, svg=folder / "sensitivity.svg", curves=_curves(path))


def export_ratios(
    source: Union[Result, str, Path],
    to: str = "nni",
    *,
    module_prefix: Optional[str] = None,
    output: Union[str, Path, None] = None,
) -> Any:
    """A search's ratios for another tool: ``to='nni'`` an NNI 3.x ``config_list`` (a
    list of dicts, for a pruner), ``'distiller'`` a Distiller schedule (YAML text), ``'csv'``
    ``layer,sparse_ratio,bits,weight`` text. ``source``: a :class:`Result`, a run folder or
    its ``ratios.json``. ``module_prefix``: e.g. ``'module.'`` under ``DataParallel``.
    ``output``: also write it there."""
    if to not in ("nni", "distiller", "csv"):
        raise ValueError(f"to must be 'nni', 'distiller' or 'csv', not {to!r}")
    path = source.run_dir if isinstance(source, Result) else Path(source)
    if path.is_dir():
        path = path / "ratios.json"
    cmd = ["export", str(path), "--to", to]
    if module_prefix:
        cmd += ["--module-prefix", module_prefix]
    if output is None:
        text = "\n".join(_runtime.run(cmd, progress=False)) + "\n"
    else:
        # dc-search writes it, under its one output rule (temp file and rename, only a
        # regular file replaced), and it is read back.
        _runtime.run([*cmd, "-o", str(output)], progress=False)
        text = Path(output).read_text(encoding="utf-8")
    return json.loads(text) if to == "nni" else text
