"""Run supervisor.run() on a Plan given as JSON (tests and benchmarks; the CLI does the same
after planning). Usage: python run_plan.py PLAN.json  -> exits with run()'s code."""

from __future__ import annotations

import json
import os
import sys

from vllm_secure_launch.errors import LauncherError
from vllm_secure_launch.plan.model import ApiEndpoint, ExpectedListeners, Plan, Supervision
from vllm_secure_launch.supervise import loop as supervisor
from vllm_secure_launch.supervise.ui import make_ui


def plan_from_json(doc: dict) -> Plan:
    api = ApiEndpoint(doc.get("host"), doc.get("port"), doc.get("uds"),
                      headless=doc.get("headless", False))
    expected = ExpectedListeners(api, tuple(doc.get("internal_ips", ())),
                                 doc.get("allow_loopback", True))
    env = dict(os.environ) if doc.get("inherit_env", True) else {}
    env.update(doc.get("env", {}))
    return Plan(
        decision="start", argv=tuple(doc["argv"]), env=env, env_set=doc.get("env", {}),
        env_removed=(), secret_env=frozenset(doc.get("secret_env", ())), api=api,
        expected=expected, findings=(), supervision=Supervision(**doc.get("supervision", {})),
        rpc_dir=doc.get("rpc_dir"), internal_ip=doc.get("internal_ip"),
    )


def main() -> int:
    with open(sys.argv[1]) as fh:
        plan = plan_from_json(json.load(fh))
    ui = make_ui(plan.supervision.log_format)
    try:
        return supervisor.run(plan, ui)
    except LauncherError as exc:
        ui.error(exc.paragraph())
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
