"""Rule registry and evaluation. `all_rules()` lists every rule of every family (the launcher's
planning rules, and the catalogs of the gate, guard, preflight and audit); `evaluate()` runs the
planning checks, turning a crashing check into a blocking VSL901 finding (fail closed)."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Callable, Iterable

from vllm_secure_launch.findings import Finding
from vllm_secure_launch.rules.registry import Rule

if TYPE_CHECKING:
    from vllm_secure_launch.rules.context import Context

Check = Callable[["Context"], list[Finding]]


def _families() -> tuple[ModuleType, ...]:
    from vllm_secure_launch.rules import (
        advisory_rules,
        cluster_rules,
        env_rules,
        flag_rules,
        internal_rules,
        launcher_rules,
        network_rules,
        ray_serve_rules,
    )

    return (network_rules, flag_rules, cluster_rules, env_rules, internal_rules, launcher_rules,
            advisory_rules, ray_serve_rules)


def _catalogs() -> tuple[ModuleType, ...]:
    # Rules judged outside the planner (gate/probe, TCPStore guard, preflight, audit).
    from vllm_secure_launch.rules import catalogs

    return catalogs.modules()


def all_rules() -> list[Rule]:
    seen: dict[str, Rule] = {}
    for mod in _families() + _catalogs():
        for rule in mod.RULES:
            if rule.id in seen and seen[rule.id] is not rule:
                raise RuntimeError(f"rule ID {rule.id} declared twice")
            seen[rule.id] = rule
    return sorted(seen.values(), key=lambda r: r.id)


def checks() -> list[Check]:
    return [c for mod in _families() for c in mod.CHECKS]


def evaluate(ctx: Context, extra: Iterable[Check] = ()) -> list[Finding]:
    from vllm_secure_launch.rules.internal_rules import RULE_CRASHED

    out: list[Finding] = []
    for check in [*checks(), *extra]:
        try:
            out.extend(check(ctx))
        except Exception as exc:  # fail closed: an unchecked configuration is refused
            out.append(RULE_CRASHED.finding(check.__name__, f"{check.__module__}.{check.__name__} "
                                            f"raised {exc.__class__.__name__}: {exc}"))
    return out
