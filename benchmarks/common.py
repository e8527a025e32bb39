"""Shared helpers for the benchmarks: median wall time and peak memory of a command, ratio rows."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    full = dict(os.environ)
    # An installed launcher runs from compiled bytecode (pip compiles at install); a
    # PYTHONDONTWRITEBYTECODE environment would make every run recompile from source.
    full.pop("PYTHONDONTWRITEBYTECODE", None)
    if env:
        full.update(env)
    return full


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds, from fork to reaped
    maxrss_kib: int  # the child's peak resident set (getrusage ru_maxrss of that child alone)


def sample(cmd: Sequence[str], env: Mapping[str, str]) -> Sample:
    """One run of `cmd`, stdout/stderr discarded; os.wait4 gives this child's own rusage."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=dict(env))
    _, _, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = 0  # reaped by wait4; keep Popen from waiting again
    return Sample(wall, usage.ru_maxrss)


def median_wall(cmd: Sequence[str], runs: int = 15, env: Mapping[str, str] | None = None,
                warmup: int = 2) -> float:
    """Median wall seconds of running `cmd` (stdout/stderr discarded), after warm-up runs."""
    full = _env(env)
    times = []
    for i in range(warmup + runs):
        s = sample(cmd, full)
        if i >= warmup:
            times.append(s.wall)
    return statistics.median(times)


def paired(a: Sequence[str], b: Sequence[str], runs: int = 21,
           env_a: Mapping[str, str] | None = None, env_b: Mapping[str, str] | None = None,
           warmup: int = 3) -> tuple[Sample, Sample]:
    """Medians (wall, max RSS) of `a` and `b`, run alternately (ABBA) so that load on a shared
    machine falls on both sides alike."""
    ea, eb = _env(env_a), _env(env_b)
    sa: list[Sample] = []
    sb: list[Sample] = []
    for i in range(warmup + runs):
        order = ((a, ea, sa), (b, eb, sb)) if i % 2 == 0 else ((b, eb, sb), (a, ea, sa))
        for cmd, env, out in order:
            s = sample(cmd, env)
            if i >= warmup:
                out.append(s)

    def med(xs: list[Sample]) -> Sample:
        return Sample(statistics.median(x.wall for x in xs),
                      int(statistics.median(x.maxrss_kib for x in xs)))

    return med(sa), med(sb)


def row(name: str, value: float, baseline: float, target: float, lower_is_better: bool = True,
        detail: str = "") -> dict:
    ratio = value / baseline if baseline else float("inf")
    ok = ratio <= target if lower_is_better else ratio > target
    return {"name": name, "ratio": round(ratio, 3), "target": (("≤ " if lower_is_better else "> ")
            + str(target)), "ok": ok, "detail": detail}


PYTHON = sys.executable
