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
holder (libnftables, `flags owner`) by this process and closed again, block by block (ABBA:
on, off, off, on, ...). One process serves both states, so the only difference is the table
in the kernel's input and output hooks; the cgroup itself (no controllers enabled) stays.
Needs root, nftables and cgroup v2; otherwise the rows say why and are not counted as misses.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import replace
from typing import Any

from . import _load
from ._load import CONCURRENCY, KEY, MAX_TOKENS
from .common import PYTHON

RUNS = 15
LAT_PORT = 19521
BLOCKS = 12  # ABBA blocks of the load, half with the table loaded
BLOCK = 500  # requests per block (about 5-20 s on the tiny model, 2 shared cores)
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


def _latency_blocks(server: Any, text: str, load: Any, model: str) -> dict[str, list[Any]]:
    from vllm_secure_launch.firewall import holder

    out: dict[str, list[Any]] = {"on": [], "off": []}
    for b in range(BLOCKS):
        state = "on" if b % 4 in (0, 3) else "off"
        table = holder.Table(text) if state == "on" else None
        try:
            reqs = load.plan_requests(BLOCK, seed=100 + b // 2, unauthorised=0.25, arms=(state,))
            out[state] += load.run_load(server.url(), reqs, key=KEY, model=model,
                                        concurrency=CONCURRENCY, duration=120,
                                        max_tokens=MAX_TOKENS)
        finally:
            if table is not None:
                table.close()
    return out


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
        blocks = _latency_blocks(server, text, load, model)
    finally:
        if server is not None:
            server.stop()
        cg.remove(where.path, wait=10)
    bad = _load.failures(blocks["on"] + blocks["off"])
    if bad or len(blocks["on"]) + len(blocks["off"]) < BLOCKS * BLOCK:
        return _load.failed_row(LAT_NAME, f"{len(bad)} wrong answers: {bad[:3]}")
    on, off = _load.samples(blocks["on"], "on"), _load.samples(blocks["off"], "off")
    first = [o.seconds for o in blocks["off"][: len(blocks["off"]) // 2]
             if o.req.expect == 200]
    second = [o.seconds for o in blocks["off"][len(blocks["off"]) // 2:]
              if o.req.expect == 200]
    detail = (f"{len(on)}+{len(off)} authorised samples, {BLOCKS} ABBA blocks of {BLOCK} "
              f"requests, {CONCURRENCY} clients, max_tokens {MAX_TOKENS}, one vLLM, loopback")
    return _load.ratio_rows(LAT_NAME, on, off, 1.01, detail, (first, second))


def run() -> list[dict]:
    from vllm_secure_launch.firewall import enforce

    why = enforce.unusable()
    if why:
        return [{"name": "firewall: added start time", "ratio": None, "target": "≤ 50 ms",
                 "ok": True, "detail": f"skipped: {why}"},
                {"name": LAT_NAME, "ratio": None, "target": "≤ 1.01", "ok": True,
                 "detail": f"skipped: {why}"}]
    return start_rows() + latency_rows()


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
