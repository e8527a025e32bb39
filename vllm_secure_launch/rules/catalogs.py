"""The rule catalogs of the parts that judge outside the planner (gate and probe, TCPStore guard,
preflight, socket audit). Listed explicitly: a missing catalog is an error, not a silent gap."""

from __future__ import annotations

from types import ModuleType


def modules() -> tuple[ModuleType, ...]:
    from vllm_secure_launch.rules import (
        audit_rules,
        derivation_rules,
        firewall_rules,
        gate_rules,
        guard_rules,
        preflight_rules,
        ray_live_rules,
        ray_start_rules,
    )

    return (gate_rules, guard_rules, preflight_rules, audit_rules, firewall_rules,
            derivation_rules, ray_start_rules, ray_live_rules)
