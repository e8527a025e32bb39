"""The plan as a JSON document (the body of the dry-run report). Pure."""

from __future__ import annotations

from typing import Any

from vllm_secure_launch import __version__
from vllm_secure_launch.findings import findings_json
from vllm_secure_launch.plan.model import Plan

SCHEMA_VERSION = 1

# Values that exist only at run time: the dry run shows what they would be in its own process
# (the run directory's name holds the launcher's pid), serve makes them anew.
RUNTIME_VALUES = ("VLLM_RPC_BASE_PATH", "TMPDIR", "SAGEMAKER_MODEL_PATH")


def plan_document(plan: Plan) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "vllm-secure-launch", "version": __version__},
        "decision": plan.decision,
        "argv": list(plan.argv),
        "env": plan.redacted_env(),
        "env_removed": list(plan.env_removed),
        "runtime_values": {"rpc_dir": plan.rpc_dir,
                           "env": [k for k in RUNTIME_VALUES if k in plan.env_set]},
        "api": {"url": plan.api.url(), "host": plan.api.host, "port": plan.api.port,
                "uds": plan.api.uds},
        "expected_listeners": plan.expected.to_dict(),
        "internal": {"ip": plan.internal_ip, "iface": plan.internal_iface,
                     "network": plan.facts.get("internal_network")},
        "accelerator": plan.accelerator,
        "rpc_dir": plan.rpc_dir,
        "policy": plan.facts.get("policy"),
        "waivers": plan.facts.get("waivers", {}),
        "preflight": plan.facts.get("preflight"),
        "firewall": plan.facts.get("firewall"),
        "findings": findings_json(plan.findings),
    }
