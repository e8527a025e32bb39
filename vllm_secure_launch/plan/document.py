"""The plan as report documents in the one envelope (findings.envelope). Pure.

kind "plan": the dry run's document and `--report`: the exact argv and environment that
`serve` hands to vLLM. kind "check": the decision and findings alone.
"""

from __future__ import annotations

from typing import Any

from vllm_secure_launch import __version__
from vllm_secure_launch.findings import envelope
from vllm_secure_launch.plan.model import Plan

# Values that exist only at run time: the dry run shows what they would be in its own process
# (the run directory's name holds the launcher's pid), serve makes them anew.
RUNTIME_VALUES = ("VLLM_RPC_BASE_PATH", "TMPDIR", "SAGEMAKER_MODEL_PATH")


def plan_body(plan: Plan) -> dict[str, Any]:
    return {
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
        "vllm": plan.facts.get("vllm"),
        "preflight": plan.facts.get("preflight"),
        "firewall": plan.facts.get("firewall"),
        "ray": plan.facts.get("ray"),
    }


def plan_document(plan: Plan) -> dict[str, Any]:
    return envelope("plan", plan.decision, plan.findings, plan_body(plan), __version__)


def check_document(plan: Plan) -> dict[str, Any]:
    # Which vLLM was detected and which surface judged it: a finding may only make sense with it.
    return envelope("check", plan.decision, plan.findings, {"vllm": plan.facts.get("vllm")},
                    __version__)
