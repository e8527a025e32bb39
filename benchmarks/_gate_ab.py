"""Benchmark-only ASGI middleware: one vLLM process serves the same request with and without
the endpoint gate, so the comparison is not drowned by the difference between two processes
(two identical bare vLLM servers differ by up to 30% in median latency on a shared 2-core host).

Requests carrying `X-VSL-Bench: direct` skip the gate and meet vLLM's own stack (its --api-key
check included); all others go through EndpointGate. Never use this outside benchmarks/gate.py.
"""

from __future__ import annotations

from typing import Any

from vllm_secure_launch.gate.middleware import EndpointGate


class ABGate:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.gated = EndpointGate(app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and (b"x-vsl-bench", b"direct") in scope.get("headers", ()):
            await self.app(scope, receive, send)
        else:
            await self.gated(scope, receive, send)
