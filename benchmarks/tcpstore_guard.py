"""Cost of the TCPStore guard (issue 4).

1. Interpreter start (`python -c pass`) with the hook installed but inactive (no
   VSL_TCPSTORE_ALLOWED) / without the hook: target <= 1.10.
2. `import torch` (which imports torch.distributed) with the hook active / with it inactive:
   target <= 1.02.

Two throwaway venvs of the same base interpreter (one with the hook installed exactly as the
launcher installs it, one without) see the current environment's packages through a path
`.pth`, so nothing is added to or removed from the shared venv. Runs alternate between the two
sides and the ratio is of medians.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from vllm_secure_launch.guard import install as gi

from .common import row

START_RUNS = 40
TORCH_RUNS = 11


def _venv(dest: Path, with_guard: bool) -> str:
    # The same throwaway venv (sharing the project venv's packages) the guard's tests use.
    from tests._guard_venv import make_venv

    return make_venv(dest, install_guard=with_guard)


def _time(python: str, code: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([python, "-c", code], env=env, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, cwd="/")
    return time.perf_counter() - t0


def _alternate(a: tuple[str, str, dict], b: tuple[str, str, dict], runs: int):
    ta, tb = [], []
    _time(*a)  # warm the page cache for both sides
    _time(*b)
    for i in range(runs):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        t1, t2 = _time(*first), _time(*second)
        if first is a:
            ta.append(t1)
            tb.append(t2)
        else:
            ta.append(t2)
            tb.append(t1)
    return statistics.median(ta), statistics.median(tb)


def run() -> list[dict]:
    env = {k: v for k, v in os.environ.items()
           if k not in (gi.ENV_ALLOWED, gi.ENV_ALLOWED_FILE, "PYTHONPATH")}
    active = dict(env, **{gi.ENV_ALLOWED: "127.0.0.1,::1"})
    rows = []
    with tempfile.TemporaryDirectory(prefix="vslts-bench-") as tmp:
        guarded = _venv(Path(tmp) / "guarded", True)
        plain = _venv(Path(tmp) / "plain", False)
        with_hook, without = _alternate((guarded, "pass", env), (plain, "pass", env), START_RUNS)
        rows.append(row(
            "tcpstore_guard: interpreter start, hook installed+inactive / none",
            with_hook, without, 1.10,
            detail=f"median of {START_RUNS}: {with_hook * 1e3:.1f} ms vs {without * 1e3:.1f} ms",
        ))
        code = "import torch"
        on, off = _alternate((guarded, code, active), (guarded, code, env), TORCH_RUNS)
        rows.append(row(
            "tcpstore_guard: import torch, hook active / inactive", on, off, 1.02,
            detail=f"median of {TORCH_RUNS}: {on:.3f} s vs {off:.3f} s",
        ))
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
