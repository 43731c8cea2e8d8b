"""Optional sampling profiles of the app's worker (py-spy) while a measurement runs.

`run.py --profile DIR` writes DIR/<group>.folded (collapsed stacks, for flame graph tools
such as speedscope or flamegraph.pl) and DIR/<group>.txt, the functions with most samples.
"""
from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import subprocess
import sys
from pathlib import Path

PY_SPY = Path(sys.executable).parent / "py-spy"


def available() -> bool:
    """True when py-spy is installed (pip install py-spy)."""
    return PY_SPY.exists() or shutil.which("py-spy") is not None


@contextlib.contextmanager
def record(directory: Path | None, name: str, pid: int | None, rate: int = 200):
    """Profile `pid` for the duration of the block (no-op without a directory or a pid)."""
    if directory is None or pid is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    folded = directory / f"{name}.folded"
    proc = subprocess.Popen(
        [str(PY_SPY if PY_SPY.exists() else "py-spy"), "record", "--pid", str(pid), "--rate", str(rate),
         "--format", "raw", "--output", str(folded), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if folded.exists():
            (directory / f"{name}.txt").write_text(summarise(folded))


def _frame_name(frame: str) -> str:
    """'render (chatapp/render.py:123)' -> 'render (chatapp/render.py)': lines merged."""
    head, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{head} ({path})"


def summarise(folded: Path, top: int = 30) -> str:
    """The functions with the most own (self) and inclusive samples, in percent of busy samples."""
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "no samples\n"
    lines = [f"{total} busy samples", "", "self %  function"]
    lines += [f"{100 * n / total:6.1f}  {name}" for name, n in own.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:6.1f}  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines) + "\n"
