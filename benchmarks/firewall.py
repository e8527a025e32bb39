"""Issue 12: the time the kernel firewall adds before vLLM starts (target ≤ 50 ms).

Measured on the real path: the launcher's arm() (cgroup mkdir + the kernel's check of the
ruleset through libnftables), plus the keeper's extra work before exec (load the owner table,
enter the cgroup), seen as the delay until the child command runs: a keeper whose child is
`date +%s.%N`, with and without the firewall, started the same way. Teardown after vLLM has
exited (table and cgroup removal) is not start time and not counted.
Needs root, nftables and cgroup v2; otherwise the row says why and is not counted as a miss.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time

from .common import PYTHON

RUNS = 15


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


def run() -> list[dict]:
    from vllm_secure_launch.firewall import enforce

    why = enforce.unusable()
    if why:
        return [{"name": "firewall: added start time", "ratio": None, "target": "≤ 50 ms",
                 "ok": True, "detail": f"skipped: {why}"}]
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
