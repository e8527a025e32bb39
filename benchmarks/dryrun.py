"""Issue 2: the dry run's median wall time / `python3 -c "import click, psutil"` (≤ 2.0)."""

from __future__ import annotations

from .common import PYTHON, median_wall, row


def run() -> list[dict]:
    base = median_wall([PYTHON, "-c", "import click, psutil"])
    dry = median_wall([PYTHON, "-m", "vllm_secure_launch.cli.main", "--dry-run", "--format",
                       "json", "serve", "my-model", "--max-model-len", "256", "-tp", "1"],
                      env={"VLLM_API_KEY": "bench-key"})
    return [row("dry-run / import click,psutil", dry, base, 2.0,
                detail=f"dry-run {dry * 1000:.0f} ms, floor {base * 1000:.0f} ms")]
