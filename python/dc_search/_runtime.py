"""The dc-search binary and the PyTorch it runs against.

Owns: finding the installed torch and its ``torch/lib`` (the libtorch the binary loads),
the version check, finding the binary the wheel installed, and running it: arguments in,
progress lines to a progress bar, the last stdout line (a JSON summary) out, a failure as
:class:`DcSearchError` with the binary's one-line message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Sequence

#: The PyTorch release whose libtorch the binary was built against (tch 0.24 ↔ libtorch 2.11).
TORCH_VERSION = "2.11.0"


class DcSearchError(RuntimeError):
    """A dc-search command failed; the message is the binary's own error line."""


class TorchVersionWarning(UserWarning):
    """The installed torch is not the release the binary was built for."""


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - the message is the point
        raise ImportError(
            f"dc_search runs against an installed PyTorch {TORCH_VERSION}, and torch is not "
            f"installed here: pip install torch=={TORCH_VERSION}"
        ) from e
    return torch


def torch_version() -> str:
    """The installed torch's release, without its local part (``2.11.0+cu130`` → ``2.11.0``)."""
    return _torch().__version__.split("+")[0]


def torch_lib() -> Path:
    """The installed torch's ``lib`` folder: the libtorch the binary loads."""
    return Path(_torch().__file__).resolve().parent / "lib"


def check_torch(at_import: bool = False) -> None:
    """Warns (at import) or raises (before a run) when the installed torch is not the
    release the binary was built for: another libtorch would not load, or would load
    wrongly."""
    have = torch_version()
    if have == TORCH_VERSION:
        return
    msg = (
        f"dc_search: the installed torch is {have}, but this dc-search binary was built for "
        f"torch {TORCH_VERSION} (libtorch {TORCH_VERSION}) and runs only against it: "
        f"pip install torch=={TORCH_VERSION}"
    )
    if at_import:
        warnings.warn(msg, TorchVersionWarning, stacklevel=3)
    else:
        raise DcSearchError(msg)


def binary() -> Path:
    """The dc-search binary: ``$DC_SEARCH_BIN`` if set, else the one this package's wheel
    installed (its scripts folder), else one on PATH."""
    env = os.environ.get("DC_SEARCH_BIN")
    if env:
        p = Path(env)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise DcSearchError(f"DC_SEARCH_BIN={env} is not an executable file")
        return p
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        files = distribution("dc-search").files or []
        for f in files:
            if f.name == "dc-search" and f.parent.name in ("bin", "scripts"):
                p = Path(f.locate()).resolve()
                if p.is_file():
                    return p
    except PackageNotFoundError:
        pass
    found = shutil.which("dc-search")
    if found:
        return Path(found)
    raise DcSearchError(
        "the dc-search binary was not found: install the dc-search wheel (pip install "
        "dc_search-*.whl) or set DC_SEARCH_BIN to a built binary"
    )


def environment() -> dict:
    """The binary's environment: the installed torch's lib folder first on the library path."""
    env = dict(os.environ)
    lib = str(torch_lib())
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [lib] + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    )
    return env


_PLAN = re.compile(r"up to (\d+) ratio probes and (\d+) bits probes")
_PROBE = re.compile(r"\bprobe\s+(\d+):")


class _Progress:
    """A progress bar over the search's probes (tqdm.auto: a widget in notebooks, a bar in
    terminals), its text the last line the binary printed; plain lines on stderr without
    tqdm or when asked to print every line."""

    def __init__(self, enabled: bool, verbose: bool, desc: str):
        self.bar = None
        self.verbose = verbose
        if enabled and not verbose:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=None, desc=desc, unit="probe", dynamic_ncols=True)
            except ImportError:
                self.verbose = True
        self.enabled = enabled or verbose

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            print(text, file=sys.stderr, flush=True)
            return
        m = _PLAN.search(text)
        if m:
            self.bar.total = int(m.group(1)) + int(m.group(2))
            self.bar.refresh()
        m = _PROBE.search(text)
        if m:
            n = int(m.group(1))
            if n > self.bar.n:
                # Calibration probes, second looks and each candidate's bits probes come
                # beside the plan's counts: the total grows rather than overflow.
                if self.bar.total is not None and n >= self.bar.total:
                    self.bar.total = n + 1
                self.bar.update(n - self.bar.n)
        short = re.sub(r"^\[\s*\d+:\d+\]\s*", "", text).strip()
        self.bar.set_postfix_str(short[:100], refresh=True)

    def close(self, done: bool = False) -> None:
        if self.bar is not None:
            if done and self.bar.total is not None:
                self.bar.total = self.bar.n
                self.bar.refresh()
            self.bar.close()


def run(
    args: Sequence[str],
    progress: bool = True,
    verbose: bool = False,
    desc: str = "dc-search",
    on_line: Optional[Callable[[str], None]] = None,
) -> List[str]:
    """Runs the binary with ``args`` against the installed torch; returns its stdout lines.

    Progress (stderr) goes to a bar or, with ``verbose``, line by line. A non-zero exit
    raises :class:`DcSearchError` with the binary's error line. Ctrl-C (KeyboardInterrupt,
    also a notebook's interrupt) is passed on as SIGINT: the binary stops within a second,
    keeping its journal, so the same call with the same ``out`` resumes.
    """
    check_torch()
    cmd = [str(binary()), *map(str, args)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    )
    out: List[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    bar = _Progress(progress, verbose, desc)
    last = ""
    try:
        for raw in proc.stderr:
            text = raw.rstrip("\n")
            if not text:
                continue
            last = text
            bar.line(text)
            if on_line is not None:
                on_line(text)
        code = proc.wait()
        bar.close(done=code == 0)
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise
    finally:
        bar.close()
        reader.join(timeout=10)
    if code != 0:
        reason = last or f"exit status {code}"
        if code < 0:
            reason = f"killed by signal {-code}" + (f" after: {last}" if last else "")
        raise DcSearchError(reason.removeprefix("error: "))
    return [line.rstrip("\n") for line in out]


def summary(lines: Sequence[str]) -> dict:
    """The JSON object on the last non-empty stdout line."""
    for line in reversed(lines):
        if line.strip():
            try:
                return json.loads(line)
            except json.JSONDecodeError as e:
                raise DcSearchError(f"dc-search ended without its JSON summary line: {line[:200]}") from e
    raise DcSearchError("dc-search printed no summary line")
