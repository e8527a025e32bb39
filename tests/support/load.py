"""A bounded HTTP load against one vLLM server, shared by tests/test_load_gate.py and the
benchmarks (benchmarks/gate_load.py, benchmarks/firewall.py).

A fixed list of requests (`plan_requests`, seeded: the same list every run) is worked off by
N concurrent clients over keep-alive connections (httpx); the run ends when the list is done
or its deadline passes, whichever comes first, so it always stops by itself. Every answer is
checked for what the request must get: an authorised completion complete (JSON with a
finish reason; a stream whose events all parse and whose last event is `data: [DONE]`), an
unauthorised one refused with 401, a request to a path nobody serves 404.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx
import psutil

KEY_FINISH = ("length", "stop")
COMPLETION, COMPLETION_STREAM = "completion", "completion-stream"
CHAT, CHAT_STREAM = "chat", "chat-stream"
DENIED = "denied"  # a junk path under /v1, distinct per request: the gate's memo under churn
KINDS = (COMPLETION, COMPLETION_STREAM, CHAT, CHAT_STREAM)
PROMPTS = ("hello", "The capital of France is", "Write a haiku about load tests.",
           "1, 2, 3, 4,", "Once upon a time")


@dataclass(frozen=True)
class Req:
    index: int
    kind: str
    auth: str  # key | none | wrong
    arm: str = ""  # which side of an A/B comparison (benchmarks); "" in the test
    prompt: str = "hello"

    @property
    def expect(self) -> int:
        if self.auth != "key":
            return 401
        return 404 if self.kind == DENIED else 200


@dataclass(frozen=True)
class Outcome:
    req: Req
    status: int | None  # None: no HTTP answer (connection error, timeout)
    seconds: float  # from sending the request to the last byte of the body
    ok: bool  # got what it must get (see the module docstring)
    why: str = ""  # what was wrong, when not ok
    started: float = 0.0  # time.perf_counter() when the request was sent

    @property
    def ended(self) -> float:
        return self.started + self.seconds


def plan_requests(count: int, *, seed: int = 0, unauthorised: float = 0.25,
                  denied: float = 0.0, kinds: Sequence[str] = KINDS,
                  arms: Sequence[str] = ("",)) -> list[Req]:
    """`count` requests; with several arms, consecutive requests cycle through the arms with
    the same kind, credential and prompt, so every arm gets the same work interleaved in time."""
    rng = random.Random(seed)
    out: list[Req] = []
    while len(out) < count:
        roll = rng.random()
        auth = ("none" if rng.random() < 0.5 else "wrong") if roll < unauthorised else "key"
        kind = DENIED if unauthorised <= roll < unauthorised + denied else rng.choice(kinds)
        prompt = rng.choice(PROMPTS)
        for arm in arms:
            out.append(Req(len(out), kind, auth, arm, prompt))
    return out[:count]


def _body(req: Req, model: str, max_tokens: int) -> dict:
    stream = req.kind.endswith("-stream")
    # ignore_eos: every authorised request generates exactly max_tokens, so latencies compare.
    body: dict = {"model": model, "max_tokens": max_tokens, "temperature": 0,
                  "ignore_eos": True, "stream": stream}
    if req.kind.startswith("chat"):
        body["messages"] = [{"role": "user", "content": req.prompt}]
    else:
        body["prompt"] = req.prompt
    return body


def _path(req: Req) -> str:
    if req.kind == DENIED:
        return f"/v1/no-such-route-{req.index}"
    return "/v1/chat/completions" if req.kind.startswith("chat") else "/v1/completions"


def check_json(req: Req, data: bytes) -> str:
    """'' when a non-streamed completion is complete, else what is wrong."""
    try:
        choice = json.loads(data)["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return f"not a completion: {data[:120]!r}"
    text = choice["message"]["content"] if req.kind == CHAT else choice.get("text")
    if not isinstance(text, str):
        return f"no text in {data[:120]!r}"
    if choice.get("finish_reason") not in KEY_FINISH:
        return f"finish_reason {choice.get('finish_reason')!r}"
    return ""


def check_stream(body: str) -> str:
    """'' when a server-sent-event stream is complete: every event a `data:` line, each
    JSON but the last, which is `data: [DONE]`, and one choice carried a finish reason."""
    events = [e.strip() for e in body.split("\n\n") if e.strip()]
    if not events or events[-1] != "data: [DONE]":
        return f"stream does not end with data: [DONE] (last: {events[-1:]!r})"
    finished = False
    for e in events[:-1]:
        if not e.startswith("data: "):
            return f"not a data event: {e[:80]!r}"
        try:
            doc = json.loads(e[len("data: "):])
        except ValueError:
            return f"event is not JSON: {e[:80]!r}"
        if "error" in doc:
            return f"error event: {e[:120]!r}"
        finished |= any(c.get("finish_reason") in KEY_FINISH for c in doc.get("choices", ()))
    return "" if finished else "no choice carried a finish reason"


def _verdict(req: Req, status: int, ctype: str, data: bytes) -> str:
    if status != req.expect:
        return f"status {status}, expected {req.expect}: {data[:120]!r}"
    if status != 200:
        return "" if b"choices" not in data else "a refusal carried choices"
    if req.kind.endswith("-stream"):
        if not ctype.startswith("text/event-stream"):
            return f"content-type {ctype!r}"
        return check_stream(data.decode("utf-8", "replace"))
    return check_json(req, data)


@dataclass(frozen=True)
class _Setup:
    key: str
    model: str
    max_tokens: int
    headers: Callable[[Req], Mapping[str, str]]


async def _one(client: httpx.AsyncClient, req: Req, setup: _Setup) -> Outcome:
    headers = dict(setup.headers(req))
    if req.auth == "key":
        headers["Authorization"] = f"Bearer {setup.key}"
    elif req.auth == "wrong":
        headers["Authorization"] = "Bearer vsl-load-wrong-key-000000"
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", _path(req), json=_body(req, setup.model, setup.max_tokens),
                                 headers=headers) as resp:
            data = await resp.aread()
            seconds = time.perf_counter() - t0
            ctype = resp.headers.get("content-type", "")
            status = resp.status_code
    except httpx.HTTPError as exc:
        return Outcome(req, None, time.perf_counter() - t0, False,
                       f"{type(exc).__name__}: {exc}", t0)
    why = _verdict(req, status, ctype, data)
    return Outcome(req, status, seconds, not why, why, t0)


async def _run(base_url: str, reqs: Sequence[Req], concurrency: int, duration: float,
               setup: _Setup) -> list[Outcome]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    out: list[Outcome] = []
    deadline = time.monotonic() + duration
    todo = iter(reqs)  # shared: each request is taken by exactly one client

    async def client_loop(client: httpx.AsyncClient) -> None:
        for req in todo:
            if time.monotonic() >= deadline:
                return
            out.append(await _one(client, req, setup))

    async with httpx.AsyncClient(base_url=base_url, limits=limits,
                                 timeout=httpx.Timeout(60.0)) as client:
        try:
            # A hard bound on top of the per-request check: a hung server ends the run too.
            async with asyncio.timeout(duration + 60.0):
                await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        except TimeoutError:
            pass
    return out


def run_load(base_url: str, reqs: Sequence[Req], *, key: str, model: str,
             concurrency: int = 8, duration: float = 120.0, max_tokens: int = 8,
             headers: Callable[[Req], Mapping[str, str]] | None = None) -> list[Outcome]:
    """Work off `reqs` with `concurrency` clients for at most `duration` seconds; the outcomes
    in completion order (fewer than `reqs` when the deadline cut the run)."""
    setup = _Setup(key, model, max_tokens, headers or (lambda _req: {}))
    return asyncio.run(_run(base_url, reqs, concurrency, duration, setup))


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default)."""
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def listener_pid(port: int) -> int:
    """The pid of the process listening on TCP `port` (vLLM's API server)."""
    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return c.pid
    raise LookupError(f"no process listens on port {port}")


class RssSampler:
    """Samples one process's resident set size (bytes) every `interval` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self.rss())
            except psutil.Error:
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
