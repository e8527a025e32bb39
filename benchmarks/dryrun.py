"""Issue 9: a dry run as a user starts it, against the floor of any click+psutil program.

rows (one run, the two commands alternated, medians of RUNS each, from bytecode):
  dryrun.wall    `vllm-secure-launch --dry-run serve MODEL` / `python -c "import click, psutil"`
                 wall time                                                        target <= 1.3
  dryrun.maxrss  the same two commands' peak resident memory (ru_maxrss)          target <= 1.2

The dry run goes the whole planning path, the accelerator preflight included (CPU here).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .common import PYTHON, paired, row

RUNS = 21


def launcher_command() -> list[str]:
    """The console script next to this interpreter (what a user runs), else `python -m`."""
    script = Path(sys.executable).with_name("vllm-secure-launch")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [PYTHON, "-m", "vllm_secure_launch.cli.console"]


def run() -> list[dict]:
    floor = [PYTHON, "-c", "import click, psutil"]
    dry = [*launcher_command(), "--dry-run", "serve", "my-model", "--max-model-len", "256",
           "-tp", "1"]
    env = {"VLLM_API_KEY": "bench-key", "VLLM_CPU_KVCACHE_SPACE": "1"}
    d, f = paired(dry, floor, runs=RUNS, env_a=env)
    return [
        row("dryrun.wall: dry-run / import click,psutil", d.wall, f.wall, 1.3,
            detail=f"median of {RUNS}: dry-run {d.wall * 1000:.0f} ms, "
                   f"floor {f.wall * 1000:.0f} ms"),
        row("dryrun.maxrss: dry-run / import click,psutil", d.maxrss_kib, f.maxrss_kib, 1.2,
            detail=f"median of {RUNS}: dry-run {d.maxrss_kib / 1024:.1f} MiB, floor "
                   f"{f.maxrss_kib / 1024:.1f} MiB"),
    ]
