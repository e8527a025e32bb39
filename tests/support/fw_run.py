"""Serve a hand-built plan the way pipeline.serve does, with the firewall steps in between:
plan_firewall -> arm -> supervise -> disarm. Usage: python fw_run.py PLAN.json

The plan JSON is run_plan.py's, plus "firewall" (auto|enforce|strict|off), "internal_cidr" and
optional "allowed_media_domains" and "api_allowed_sources". Exits like serve: 78 when refused, else run()'s code.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from run_plan import plan_from_json  # type: ignore[import-not-found]

from vllm_secure_launch.config.policy import Policy
from vllm_secure_launch.errors import LauncherError
from vllm_secure_launch.firewall import enforce
from vllm_secure_launch.supervise import loop
from vllm_secure_launch.supervise.ui import make_ui


class Args(dict):
    """The one ServeArgs lookup the firewall makes."""


def main() -> int:
    with open(sys.argv[1]) as fh:
        doc = json.load(fh)
    plan = plan_from_json(doc)
    plan = replace(plan, facts={"internal_network": doc.get("internal_cidr")})
    policy = Policy(firewall=doc.get("firewall", "enforce"),
                    api_allowed_sources=tuple(doc.get("api_allowed_sources", ())))
    args = Args(allowed_media_domains=doc.get("allowed_media_domains", []))
    plan = enforce.plan_firewall(plan, policy, args)
    ui = make_ui("text")
    for f in plan.findings:
        print(f"{f.rule_id} {f.severity.label} {f.message}", file=sys.stderr, flush=True)
    if plan.refused:
        return 78
    try:
        return enforce.supervised(plan, lambda p: loop.run(p, ui))  # as pipeline.serve
    except LauncherError as exc:
        ui.error(exc.paragraph())
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
