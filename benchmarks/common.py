"""Shared helpers for the benchmarks: median wall time of a command, ratio rows."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Mapping, Sequence


def median_wall(cmd: Sequence[str], runs: int = 15, env: Mapping[str, str] | None = None,
                warmup: int = 2) -> float:
    """Median wall seconds of running `cmd` (stdout/stderr discarded), after warm-up runs."""
    full = dict(os.environ)
    # An installed launcher runs from compiled bytecode (pip compiles at install); a
    # PYTHONDONTWRITEBYTECODE environment would make every run recompile from source.
    full.pop("PYTHONDONTWRITEBYTECODE", None)
    if env:
        full.update(env)
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=full,
                       check=False)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(name: str, value: float, baseline: float, target: float, lower_is_better: bool = True,
        detail: str = "") -> dict:
    ratio = value / baseline if baseline else float("inf")
    ok = ratio <= target if lower_is_better else ratio > target
    return {"name": name, "ratio": round(ratio, 3), "target": (("≤ " if lower_is_better else "> ")
            + str(target)), "ok": ok, "detail": detail}


PYTHON = sys.executable
