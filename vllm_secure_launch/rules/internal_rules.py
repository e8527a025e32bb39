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

SECRET_LIKE_UNKNOWN = Rule(
    "VSL223", "an option vLLM does not know looks like it carries a secret", Severity.ERROR,
    "check the spelling (a mistyped --api-key?); give the API key through --api-key-file, a "
    "systemd credential or VLLM_API_KEY, never on the command line; its value is redacted in "
    "every report, and the start is refused so it never reaches a process list",
    doc="A secret on the command line is readable by every local user in /proc/PID/cmdline. "
    "vLLM's own --api-key and --hf-token are moved into the environment by the planner; an "
    "unknown option cannot be moved, because nothing knows what it is (surface/secrets.py).",
)

RULES = (RULE_CRASHED, UNKNOWN_FLAG, PARSER_NOTE, SECRET_LIKE_UNKNOWN)


def secret_like_unknown(unknown: tuple[str, ...]) -> set[str]:
    """Names of unknown options that look secret-bearing (their values are redacted)."""
    from vllm_secure_launch.surface.secrets import looks_secret

    names = {tok.split("=", 1)[0] for tok in unknown
             if tok.startswith("-") and looks_secret(tok)}
    # A dotted key (`--x.token V`) reaches argv as `--x '{"token": "V"}'`: the option's own name
    # no longer looks secret, the JSON key inside its value does. vLLM also takes the token
    # after a dotted key as its value even when it is an option (`--x. --api-key=K`).
    for opt, value in zip(unknown, (*unknown[1:], "")):
        name, eq, attached = opt.partition("=")
        if opt.startswith("-") and _json_has_secret_key(attached if eq else value):
            names.add(name)
    return names


def _json_has_secret_key(text: str) -> bool:
    import json

    from vllm_secure_launch.surface.secrets import looks_secret

    if not text.lstrip().startswith("{"):
        return False
    try:
        stack = [json.loads(text)]
    except (ValueError, RecursionError):
        return False
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any(looks_secret(str(k)) for k in node):
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and node.startswith("-") and looks_secret(node):
            return True  # `--x. --api-key=K`: the dotted key swallowed the next option
    return False


def check_parser(ctx: Context) -> list[Finding]:
    # Only the option's name: a mistyped secret option (--api-keyy=KEY) must not reach a report.
    names = [tok.split("=", 1)[0] for tok in ctx.args.unknown if tok.startswith("-")]
    out = [UNKNOWN_FLAG.finding(name, f"{name} is not a vLLM 0.32 serve option; passed through")
           for name in names]
    out += [SECRET_LIKE_UNKNOWN.finding(name, f"{name} is not a vLLM option and its name looks "
                                        "like a key or token: its value is not shown")
            for name in sorted(secret_like_unknown(ctx.args.unknown))]
    out.extend(PARSER_NOTE.finding("argv", note) for note in ctx.args.notes)
    return out


CHECKS = (check_parser,)
