"""Issue 12: the time the kernel firewall adds before vLLM starts (target ≤ 50 ms), and the
latency of the load test's mix with the firewall's table loaded / not loaded (target ≤ 1.01).

Measured on the real path: the launcher's arm() (cgroup mkdir + the kernel's check of the
ruleset through libnftables), plus the keeper's extra work before exec (load the owner table,
enter the cgroup), seen as the delay until the child command runs: a keeper whose child is
`date +%s.%N`, with and without the firewall, started the same way. Teardown after vLLM has
exited (table and cgroup removal) is not start time and not counted.

Latency: one tiny-model vLLM behind the endpoint gate (`--middleware EndpointGate`, key in
VLLM_API_KEY, loopback port 19521), started inside the cgroup the launcher would make for it
(a shell wrapper writes its pid to cgroup.procs and execs vLLM, as the keeper does), so every
socket of its tree carries that cgroup. The ruleset is the launcher's own (plan_firewall ->
spec.ruleset, `--firewall enforce` for an API on 127.0.0.1), loaded through the keeper's
holder (libnftables, `flags owner`) by this process and closed again every PERIOD seconds
while one continuous load runs; each request counts for the state it ran in from its first
to its last byte (one that spans a flip counts for neither). One process serves both states,
so the only difference is the table in the kernel's input and output hooks; the cgroup
itself (no controllers enabled) stays. Blocks of separate loads (tried first) let drift
between blocks dominate: 10% between two halves of the same state.
Needs root, nftables and cgroup v2; otherwise the rows say why and are not counted as misses.
"""

from __future__ import annotations

import bisect
import os
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import replace
from typing import Any

from . import _load
from ._load import CONCURRENCY, KEY, MAX_TOKENS
from .common import PYTHON

RUNS = 15
LAT_PORT = 19521
COUNT = 6000  # requests of one continuous load (2-4 minutes on 2 shared cores)
PERIOD = 2.0  # seconds between flips of the table: drift slower than this cancels
LAT_NAME = "firewall: load mix through the gate, table loaded / not loaded"


def _plan():  # type: ignore[no-untyped-def]
    from vllm_secure_launch.config.policy import Policy
    from vllm_secure_launch.firewall import enforce
    from vllm_secure_launch.plan.model import ApiEndpoint, ExpectedListeners, Plan

    api = ApiEndpoint("127.0.0.1", 8000)
    plan = Plan("start", ("true",), {}, {}, (), frozenset(), api,
                ExpectedListeners(api, ("127.0.0.1",)), (), facts={})
    return enforce.plan_firewall(plan, Policy(firewall="enforce"), {})


def _arm_ms(plan) -> float:  # type: ignore[no-untyped-def]
    from vllm_secure_launch.firewall import enforce

    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        _, armed = enforce.arm(plan)
        times.append(time.perf_counter() - t0)
        enforce.disarm(armed)
    return statistics.median(times) * 1000


def _until_exec_ms(env: dict[str, str] | None, cgroup_dir: str | None) -> float:
    from vllm_secure_launch.supervise import keeper

    cmd = [PYTHON, "-I", "-S", keeper.__file__, "--parent", str(os.getpid()), "--grace", "0",
           "--", "date", "+%s.%N"]
    full = {**os.environ, **(env or {})}
    times = []
    for i in range(RUNS + 2):
        if cgroup_dir and not os.path.isdir(cgroup_dir):
            os.mkdir(cgroup_dir)  # the launcher's part (arm); the keeper removes it on exit
        t0 = time.time()
        out = subprocess.run(cmd, env=full, capture_output=True, text=True).stdout
        if i >= 2:
            times.append(float(out.strip()) - t0)
    return statistics.median(times) * 1000


def _latency_spec(port: int) -> tuple[Any, str]:
    """The cgroup (named for this branch of the benchmarks, so the launcher's sweep of stale
    vsl-PID cgroups never takes it) and the launcher's ruleset for an API on 127.0.0.1:port."""
    from vllm_secure_launch.config.policy import Policy
    from vllm_secure_launch.firewall import cgroup as cg
    from vllm_secure_launch.firewall import enforce
    from vllm_secure_launch.firewall.spec import ruleset
    from vllm_secure_launch.plan.model import ApiEndpoint, ExpectedListeners, Plan

    api = ApiEndpoint("127.0.0.1", port)
    plan = Plan("start", ("true",), {}, {}, (), frozenset(), api,
                ExpectedListeners(api, ("127.0.0.1",)), (), facts={})
    where = cg.locate(f"{cg.PREFIX}bench-{os.getpid()}")
    spec = enforce.build_spec(plan, Policy(firewall="enforce"), {}, where)
    return where, ruleset(replace(spec, table=f"vsl_bench_{os.getpid()}"))


def _in_cgroup(pid: int, where: Any) -> bool:
    with open(f"/proc/{pid}/cgroup") as fh:
        return any(line.startswith("0::") and line.strip().endswith(os.path.basename(where.path))
                   for line in fh)


class Toggler:
    """Loads the table and closes it again every PERIOD seconds in a thread, while the load
    runs without a pause; `state_of` says which state an outcome ran in from its first to its
    last byte (None when a flip fell inside it: not counted on either side)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.flips: list[tuple[float, str]] = []  # (perf_counter, state from then on)
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._flip()
        except Exception as exc:  # noqa: BLE001 - reported by latency_rows
            self.error = f"{type(exc).__name__}: {exc}"

    def _flip(self) -> None:
        from vllm_secure_launch.firewall import holder

        table = None
        while not self._stop.is_set():
            if table is None:
                table = holder.Table(self.text)
                self.flips.append((time.perf_counter(), "on"))
            else:
                table.close()
                table = None
                self.flips.append((time.perf_counter(), "off"))
            self._stop.wait(PERIOD)
        if table is not None:
            table.close()
        self.flips.append((time.perf_counter(), "stopped"))

    def state_of(self, o: Any) -> str | None:
        i = bisect.bisect_right(self.flips, (o.started, "~")) - 1
        if i < 0 or (i + 1 < len(self.flips) and self.flips[i + 1][0] <= o.ended):
            return None
        state = self.flips[i][1]
        return state if state in ("on", "off") else None

    def __enter__(self) -> Toggler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def latency_rows() -> list[dict[str, Any]]:
    load = _load.support()
    from tests.support.vllm_server import start_bare_vllm, tiny_model_path
    from vllm_secure_launch.firewall import cgroup as cg
    from vllm_secure_launch.plan.gate import MIDDLEWARE

    where, text = _latency_spec(LAT_PORT)
    cg.create(where)
    server = None
    try:
        # $0 is the cgroup.procs file, "$@" the vLLM command: enter the cgroup, then exec.
        enter = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', where.procs]
        try:
            server = start_bare_vllm(LAT_PORT, ["--middleware", MIDDLEWARE],
                                     {"VLLM_API_KEY": KEY}, prefix=enter)
        except Exception as exc:  # noqa: BLE001 - reported as a failed row
            return _load.failed_row(LAT_NAME, f"vLLM did not start: {exc}")
        if not _in_cgroup(load.listener_pid(LAT_PORT), where):
            return _load.failed_row(LAT_NAME, "vLLM's API server is not in the cgroup")
        model = tiny_model_path()
        load.run_load(server.url(), load.plan_requests(240, seed=1), key=KEY, model=model,
                      concurrency=CONCURRENCY, max_tokens=MAX_TOKENS)
        with Toggler(text) as flips:
            outcomes = load.run_load(server.url(), load.plan_requests(COUNT, seed=21),
                                     key=KEY, model=model, concurrency=CONCURRENCY,
                                     duration=300, max_tokens=MAX_TOKENS)
    finally:
        if server is not None:
            server.stop()
        cg.remove(where.path, wait=10)
    if flips.error:
        return _load.failed_row(LAT_NAME, f"the table could not be flipped: {flips.error}")
    bad = _load.failures(outcomes)
    if bad or len(outcomes) < COUNT:
        return _load.failed_row(LAT_NAME, f"{len(outcomes)} of {COUNT} done; {len(bad)} "
                                f"wrong answers: {bad[:3]}")
    ok = [o for o in outcomes if o.req.expect == 200]
    by = {s: [o.seconds for o in ok if flips.state_of(o) == s] for s in ("on", "off")}
    # A/A: the "off" periods split into alternate ones (odd and even flips).
    period = {o: bisect.bisect_right(flips.flips, (o.started, "~")) for o in ok}
    aa = ([o.seconds for o in ok if flips.state_of(o) == "off" and period[o] % 4 == 2],
          [o.seconds for o in ok if flips.state_of(o) == "off" and period[o] % 4 == 0])
    detail = (f"{len(by['on'])}+{len(by['off'])} authorised samples of {COUNT} requests "
              f"({len(ok) - len(by['on']) - len(by['off'])} spanning a flip left out), table "
              f"flipped every {PERIOD:g} s ({len(flips.flips) - 1} flips), {CONCURRENCY} "
              f"clients, max_tokens {MAX_TOKENS}, one vLLM, loopback")
    return _load.ratio_rows(LAT_NAME, by["on"], by["off"], 1.01, detail, aa)


ECHO = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1)
c, _ = s.accept()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while c.recv(4096):
    c.sendall(b"x" * 512)
"""
RTT_PORT = 19529


def _rtts(sock: socket.socket, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        sock.sendall(b"y" * 200)
        sock.recv(4096)
        out.append(time.perf_counter() - t0)
    return out


def roundtrip_row() -> list[dict[str, Any]]:
    """What the table costs the kernel, without vLLM's noise: the median TCP round trip over
    loopback to a socket created in the cgroup, table loaded / not, ABBA blocks of 1000."""
    from vllm_secure_launch.firewall import cgroup as cg
    from vllm_secure_launch.firewall import holder

    where, text = _latency_spec(RTT_PORT)
    cg.create(where)
    enter = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', where.procs]
    proc = subprocess.Popen([*enter, PYTHON, "-I", "-c", ECHO, str(RTT_PORT)])
    res: dict[str, list[float]] = {"on": [], "off": []}
    try:
        sock = _connect(RTT_PORT)
        with sock:
            for b in range(40):
                state = "on" if b % 4 in (0, 3) else "off"
                table = holder.Table(text) if state == "on" else None
                _rtts(sock, 50)  # the first packets after a flip are not the steady state
                res[state] += _rtts(sock, 1000)
                if table is not None:
                    table.close()
    finally:
        proc.kill()
        proc.wait()
        cg.remove(where.path, wait=5)
    on, off = statistics.median(res["on"]) * 1e6, statistics.median(res["off"]) * 1e6
    return [{"name": "firewall: loopback TCP round trip to a socket of the cgroup, table "
             "loaded / not", "ratio": round(on / off, 3), "target": "-", "ok": True,
             "detail": f"{on:.1f} vs {off:.1f} us: +{on - off:.1f} us per request/response "
                       "pair (informational: the kernel's share of the latency row)"}]


def _connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run() -> list[dict]:
    from vllm_secure_launch.firewall import enforce

    why = enforce.unusable()
    if why:
        return [{"name": "firewall: added start time", "ratio": None, "target": "≤ 50 ms",
                 "ok": True, "detail": f"skipped: {why}"},
                {"name": LAT_NAME, "ratio": None, "target": "≤ 1.01", "ok": True,
                 "detail": f"skipped: {why}"}]
    return start_rows() + roundtrip_row() + latency_rows()


def start_rows() -> list[dict]:
    from vllm_secure_launch.firewall import enforce

    plan = _plan()
    doc = plan.facts["firewall"]
    arm_ms = _arm_ms(plan)
    base = _until_exec_ms(None, None)
    fw = _until_exec_ms({enforce.ENV_RULESET: doc["ruleset"],
                         enforce.ENV_CGROUP: doc["cgroup_dir"]}, doc["cgroup_dir"])
    if os.path.isdir(doc["cgroup_dir"]):
        os.rmdir(doc["cgroup_dir"])
    added = arm_ms + fw - base
    return [{"name": "firewall: added start time (arm + keeper)", "ratio": round(added, 1),
             "target": "≤ 50 ms", "ok": added <= 50,
             "detail": f"arm {arm_ms:.1f} ms + keeper {fw - base:.1f} ms (child runs after "
                       f"{fw:.0f} vs {base:.0f} ms)"}]
