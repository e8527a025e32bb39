"""VSL904–VSL906 — weakenings of the launcher's own defaults, so every one shows in every report.

A switch that turns a safeguard off is allowed (operators have reasons), but never silent: the
report names the setting and where it came from (command line, VSL_* variable, policy file).
"""

from __future__ import annotations

from typing import Callable

from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.rules.context import Context
from vllm_secure_launch.rules.registry import Rule

SAFEGUARD_OFF = Rule(
    "VSL904", "a safeguard of the launcher is switched off or weakened", Severity.WARNING,
    "leave the setting at its default unless you have a reason; the report keeps showing it",
    doc="tcpstore_guard = false (torch's TCPStore may bind the wildcard), audit = warn/off "
    "(a forbidden listener keeps running), allow_wildcard = true (an API on every interface).",
)
CRASH_WAIVED = Rule(
    "VSL905", "the internal-error rule VSL901 is waived", Severity.ERROR,
    "remove VSL901 from [waivers]: a rule that crashed checked nothing, so the start would be "
    "unchecked; report the crash instead. This finding cannot be waived",
)
UNKNOWN_WAIVER = Rule(
    "VSL906", "a waiver names a rule that does not exist", Severity.WARNING,
    "fix the rule ID in [waivers] (`vllm-secure-launch rules` lists them); a misspelt waiver "
    "waives nothing",
)
RULES = (SAFEGUARD_OFF, CRASH_WAIVED, UNKNOWN_WAIVER)

# setting -> (weakened when, what it means)
_SWITCHES: dict[str, tuple[Callable[[object], bool], str]] = {
    "tcpstore_guard": (lambda v: v is False, "torch's TCPStore is no longer pinned to the "
                       "internal address"),
    "audit": (lambda v: v != "enforce", "a forbidden listener no longer stops vLLM"),
    "allow_wildcard": (lambda v: v is True, "the API may listen on every interface"),
}
_WHERE = {"cli": "command line", "env": "VSL_* environment", "file": "policy file"}


def check_switches(ctx: Context) -> list[Finding]:
    out = []
    for key, (weak, meaning) in _SWITCHES.items():
        value = getattr(ctx.policy, key)
        if weak(value):
            origin = _WHERE.get(ctx.policy.origins.get(key, ""), "settings")
            shown = str(value).lower() if isinstance(value, bool) else value
            out.append(SAFEGUARD_OFF.finding(key, f"{key} = {shown} ({origin}): {meaning}"))
    return out


def check_waivers(ctx: Context) -> list[Finding]:
    if not ctx.policy.waivers:
        return []  # nothing to look up: the catalogs of every family stay unloaded
    from vllm_secure_launch.rules import all_rules

    known = {r.id for r in all_rules()}
    out = []
    for rule_id in sorted(ctx.policy.waivers):
        if rule_id == "VSL901":
            out.append(CRASH_WAIVED.finding("[waivers] VSL901", "VSL901 is waived: a crashing "
                                            "rule would no longer refuse the start"))
        elif rule_id not in known:
            out.append(UNKNOWN_WAIVER.finding(f"[waivers] {rule_id}",
                                              f"{rule_id} is not a rule ID; the waiver does nothing"))
    return out


CHECKS = (check_switches, check_waivers)
