"""Issue 10: latency percentiles (p50, p99) of the load test's mix through the endpoint gate /
through vLLM's own `--api-key` check alone: target ≤ 1.02 for both.

One tiny-model vLLM (loopback, port 19511) serves both sides: benchmarks/_gate_ab.py puts the
gate in front of vLLM's stack and lets requests marked `X-VSL-Bench: direct` skip it; vLLM's
own key check (VLLM_API_KEY) runs on both. Two vLLM processes differ by far more than 2%
on a shared host (benchmarks/gate.py), one process does not. The load is tests/test_load_gate.py's
mix (streamed and non-streamed /v1/completions and /v1/chat/completions, 25% unauthorised,
CONCURRENCY clients over keep-alive), and consecutive requests of the list alternate between
the two sides with the same kind, credential and prompt: both sides share every moment of
the run, so drift and other processes' load fall on both alike.
"""

from __future__ import annotations

import os
from typing import Any

from . import _load
from ._load import CONCURRENCY, KEY, MAX_TOKENS

PORT = 19511
AB_MIDDLEWARE = "benchmarks._gate_ab.ABGate"
WARMUP = 240
COUNT = 8000  # 4000 per side, ~3000 of them authorised: p99 rests on ~30 samples above it
DURATION = 300.0
NAME = "gate_load: load mix, gate / vLLM --api-key alone"


def run() -> list[dict[str, Any]]:
    load = _load.support()
    from tests.support.vllm_server import start_bare_vllm, tiny_model_path

    pypath = os.pathsep.join(p for p in (_load.ROOT, os.environ.get("PYTHONPATH")) if p)
    try:
        server = start_bare_vllm(PORT, ["--middleware", AB_MIDDLEWARE],
                                 {"VLLM_API_KEY": KEY, "PYTHONPATH": pypath})
    except Exception as exc:  # noqa: BLE001 - reported as a failed row
        return _load.failed_row(NAME, f"vLLM did not start: {exc}")
    try:
        def side(req: Any) -> dict[str, str]:
            return {"X-VSL-Bench": "direct"} if req.arm == "api-key" else {}

        def drive(n: int, seed: int) -> list[Any]:
            reqs = load.plan_requests(n, seed=seed, unauthorised=0.25,
                                      arms=("gate", "api-key"))
            return load.run_load(server.url(), reqs, key=KEY, model=tiny_model_path(),
                                 concurrency=CONCURRENCY, duration=DURATION,
                                 max_tokens=MAX_TOKENS, headers=side)

        drive(WARMUP, seed=1)
        outcomes = drive(COUNT, seed=11)
    finally:
        server.stop()
    bad = _load.failures(outcomes)
    if bad or len(outcomes) < COUNT:
        return _load.failed_row(NAME, f"{len(outcomes)} of {COUNT} done; {len(bad)} wrong "
                                f"answers: {bad[:3]}")
    gate, direct = _load.samples(outcomes, "gate"), _load.samples(outcomes, "api-key")
    # A/A: the gate's own samples split by request index (alternate pairs of the list).
    halves = ([o.seconds for o in outcomes if o.req.arm == "gate" and o.req.expect == 200
               and o.req.index % 4 == 0],
              [o.seconds for o in outcomes if o.req.arm == "gate" and o.req.expect == 200
               and o.req.index % 4 == 2])
    detail = (f"{len(gate)}+{len(direct)} authorised samples of {COUNT} requests, "
              f"{CONCURRENCY} clients, max_tokens {MAX_TOKENS}, one vLLM, loopback")
    return _load.ratio_rows(NAME, gate, direct, 1.02, detail, halves)
