"""The load-test mix as a latency harness for the benchmarks (benchmarks/gate_load.py,
benchmarks/firewall.py): tests/support/load.py drives it, this turns its outcomes into
p50/p99 rows. Only authorised requests that got a complete answer count as latency samples;
any other outcome that is not what its request must get makes the row fail, never a sample.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "vsl-bench-key-0123456789"
CONCURRENCY = 12
MAX_TOKENS = 8


def support() -> Any:
    """tests/support/load.py (the benchmarks run from the repository root)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from tests.support import load

    return load


def failures(outcomes: Iterable[Any]) -> list[str]:
    return [f"#{o.req.index} {o.req.kind}/{o.req.auth} {o.req.arm}: {o.status} {o.why}"
            for o in outcomes if not o.ok]


def samples(outcomes: Iterable[Any], arm: str) -> list[float]:
    return [o.seconds for o in outcomes if o.req.arm == arm and o.req.expect == 200 and o.ok]


def ratio_rows(name: str, a: Sequence[float], b: Sequence[float], target: float,
               detail: str, aa: tuple[Sequence[float], Sequence[float]] | None = None
               ) -> list[dict[str, Any]]:
    """One row per percentile: p(a) / p(b). `aa`, two halves of one arm, gives the ratio the
    same measurement shows between identical conditions (the noise floor), for the reader."""
    pct = support().percentile
    rows = []
    for q in (50, 99):
        pa, pb = pct(a, q), pct(b, q)
        ratio = pa / pb
        floor = f"; A/A {pct(aa[0], q) / pct(aa[1], q):.3f}" if aa else ""
        rows.append({"name": f"{name} p{q}", "ratio": round(ratio, 4),
                     "target": f"≤ {target}", "ok": ratio <= target,
                     "detail": f"{pa * 1000:.1f} vs {pb * 1000:.1f} ms{floor}; {detail}"})
    return rows


def failed_row(name: str, why: str) -> list[dict[str, Any]]:
    return [{"name": name, "ratio": None, "target": "-", "ok": False, "detail": why[:500]}]
