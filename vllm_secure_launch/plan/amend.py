"""The one amendment of a plan: (plan, preflight report, policy) -> the final plan. Pure.

`--dry-run`, `check` and `serve` all call this (through pipeline.prepare), so the document a
dry run prints is the argv and environment `serve` hands to vLLM. Preflight only *reports*
facts (devices by UUID, CUDA_DEVICE_ORDER, CANN variables, the engine's own command); this
function alone decides what of that reaches the child.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from vllm_secure_launch.config.policy import Policy
from vllm_secure_launch.findings import Finding, apply_waivers, blocking
from vllm_secure_launch.plan.build import default_command
from vllm_secure_launch.plan.model import Plan
from vllm_secure_launch.rules.preflight_rules import rule

# Search paths are extended by preflight itself (old entries kept), so they always apply.
SEARCH_PATHS = ("LD_LIBRARY_PATH", "PATH", "PYTHONPATH")
# Preflight rewrites these only into an equivalent spelling of the operator's own choice (an
# index list becomes the same GPUs' UUIDs, in the same order), so they apply too.
NORMALISED = ("CUDA_VISIBLE_DEVICES",)


if TYPE_CHECKING:  # a typing.Protocol class costs ~1 ms to build at import (issue 9)
    from typing import Protocol

    class PreflightFacts(Protocol):
        """What amend reads of a preflight report (preflight.report.PreflightReport)."""

        findings: tuple[Finding, ...]
        env_updates: Mapping[str, str]
        vllm_command: tuple[str, ...] | None
        unsupported_flags: tuple[str, ...]

        def to_dict(self) -> dict[str, Any]: ...


def with_preflight(plan: Plan, report: PreflightFacts, policy: Policy) -> Plan:
    """The final plan: preflight's environment and engine command applied, its findings
    (waived as every finding is) added, and the decision taken over all findings."""
    env = dict(plan.env)
    env_set = dict(plan.env_set)
    for key, value in report.env_updates.items():
        # Never override a device selection the operator (or Slurm) made.
        if key not in plan.env or key in SEARCH_PATHS or key in NORMALISED:
            env[key] = value
            env_set[key] = value
    argv = plan.argv
    extra: list[Finding] = list(report.findings)
    prefix = default_command(plan.argv[0]) if plan.argv else ()
    if (report.vllm_command and not policy.vllm_command and prefix
            and plan.argv[: len(prefix)] == prefix):
        argv = (*report.vllm_command, *plan.argv[len(prefix):])
        extra += unsupported(report.unsupported_flags, plan.argv[len(prefix):])
    pre = tuple(apply_waivers(extra, policy.waivers))
    findings = (*plan.findings, *pre)
    facts = {**plan.facts, "preflight": report.to_dict()}
    return replace(plan, env=env, env_set=env_set, argv=argv, findings=findings,
                   decision=decide(plan.findings, pre), facts=facts)


def decide(planning: Sequence[Finding], preflight: Sequence[Finding]) -> str:
    """A policy refusal (78) wins over a failed preflight (69)."""
    if blocking(planning):
        return "refuse"
    if blocking(preflight):
        return "preflight-failed"
    return "start"


def unsupported(flags: Sequence[str], child_argv: Sequence[str]) -> list[Finding]:
    """Options the launcher itself added that the engine's older vLLM base lacks."""
    used = {a.split("=", 1)[0] for a in child_argv if a.startswith("--")}
    return [rule("VSL549").finding(f, f"{f} is in the plan but the engine's vLLM base lacks it")
            for f in flags if f in used]


def with_ray_cluster(plan: Plan, facts: Mapping[str, Any], findings: Sequence[Finding],
                     worker_ports: Sequence[tuple[int, int]], policy: Policy) -> Plan:
    """The plan after the live check of its Ray cluster (rules/ray_live_rules.py): the check's
    findings (waived as every finding is) and, when the driver's port may be open (behind the
    kernel firewall, or VSL736 waived), the local raylet's worker ports as the only wildcard
    listeners the audit accepts. Pure."""
    from vllm_secure_launch.rules.ray_live_rules import driver_findings

    fw = plan.facts.get("firewall") or {}
    found = apply_waivers([*findings, *driver_findings(str(fw.get("mode", "off")),
                                                       worker_ports)], policy.waivers)
    allowed = tuple(worker_ports) if worker_ports and not blocking(found) else ()
    expected = replace(plan.expected, confined_ports=allowed)
    decision = "refuse" if blocking(found) else plan.decision
    return replace(plan, findings=(*plan.findings, *found), expected=expected,
                   decision=decision, facts={**plan.facts, "ray": dict(facts)})
