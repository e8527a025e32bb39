"""VSL9xx — the launcher's own conditions (fail closed)."""

from __future__ import annotations

from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.rules.context import Context
from vllm_secure_launch.rules.registry import Rule

RULE_CRASHED = Rule(
    "VSL901", "a rule crashed", Severity.ERROR,
    "report this as a bug of vllm-secure-launch with the message; the start is refused because "
    "an unchecked configuration is not a checked one",
)
UNKNOWN_FLAG = Rule(
    "VSL902", "an option unknown to vLLM 0.32 is passed through", Severity.INFO,
    "check the spelling: vLLM itself will reject an option it does not know",
)
PARSER_NOTE = Rule(
    "VSL903", "a vLLM argument is spelled in a way that hides what it does", Severity.INFO,
    "write each option once, in full",
)

RULES = (RULE_CRASHED, UNKNOWN_FLAG, PARSER_NOTE)


def check_parser(ctx: Context) -> list[Finding]:
    # Only the option's name: a mistyped secret option (--api-keyy=KEY) must not reach a report.
    names = [tok.split("=", 1)[0] for tok in ctx.args.unknown if tok.startswith("-")]
    out = [UNKNOWN_FLAG.finding(name, f"{name} is not a vLLM 0.32 serve option; passed through")
           for name in names]
    out.extend(PARSER_NOTE.finding("argv", note) for note in ctx.args.notes)
    return out


CHECKS = (check_parser,)
