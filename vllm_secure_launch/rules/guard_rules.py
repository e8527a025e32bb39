"""VSL350–VSL369 — the TCPStore guard (issue 4, docs/tcpstore.md).

torch's master TCPStore listens on every interface unless it is handed a pre-bound socket; the
guard hook inside vLLM's interpreters does that. These rules check that the hook will be there
and switched on with an allowed set that matches the plan, and turn the launch-time self-test
into findings. The checks on the planned child are pure; the self-test result comes from
guard_install.self_test (a child interpreter of the target environment).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.rules.registry import Rule

SELF_TEST_FAILED = Rule(
    "VSL350", "the TCPStore guard self-test failed in the vLLM environment", Severity.ERROR,
    "make sure torch imports in the vLLM environment and that the launcher could install "
    "vllm_secure_launch_guard.pth into its site-packages; the message says what the test "
    "interpreter saw. Waive VSL350 only if every node sits on an isolated network",
    doc="Before vLLM starts, a child interpreter of the same environment with the planned "
    "environment imports torch.distributed and checks that TCPStore is the guarded class and "
    "that it refuses a wildcard host. Without it, torch's stores listen on [::].",
)
INSTALL_FAILED = Rule(
    "VSL351", "the TCPStore guard hook cannot be installed in the vLLM environment",
    Severity.ERROR,
    "run the launcher once as the owner of the vLLM environment (it writes "
    "vllm_secure_launch_guard.pth and _vllm_secure_launch_tcpstore_guard.py into "
    "site-packages), or make site-packages writable",
    doc="The hook is a .pth file plus a stdlib-only module in the target site-packages: a "
    ".pth runs under python -I/-E, a PYTHONPATH sitecustomize does not.",
)
NOT_SWITCHED_ON = Rule(
    "VSL352", "the child environment does not switch the TCPStore guard on", Severity.ERROR,
    "let the planner set VSL_TCPSTORE_ALLOWED to the internal address (plus 127.0.0.1 and ::1 "
    "unless loopback is forbidden); this is a launcher bug if it happens",
)
BAD_ALLOWED = Rule(
    "VSL353", "the TCPStore guard's allowed set is malformed or wider than the plan",
    Severity.ERROR,
    "VSL_TCPSTORE_ALLOWED must list only literal addresses from the plan's internal addresses "
    "(and loopback when allowed); never a wildcard",
)
NO_SITE = Rule(
    "VSL354", "the vLLM interpreter runs with -S, so no site-packages hook can run",
    Severity.ERROR,
    "start vLLM's Python without -S (-I and -E are fine): with -S the TCPStore guard cannot "
    "load and torch's stores listen on every interface",
)
INHERITED_SETTING = Rule(
    "VSL355", "the inherited environment already sets a TCPStore guard variable",
    Severity.WARNING,
    "unset VSL_TCPSTORE_ALLOWED / VSL_TCPSTORE_ALLOWED_FILE in the launcher's environment; the "
    "launcher sets the guard's allowed set itself from --internal-ip",
)

RULES: tuple[Rule, ...] = (
    SELF_TEST_FAILED,
    INSTALL_FAILED,
    NOT_SWITCHED_ON,
    BAD_ALLOWED,
    NO_SITE,
    INHERITED_SETTING,
)

ENV_ALLOWED = "VSL_TCPSTORE_ALLOWED"
ENV_ALLOWED_FILE = "VSL_TCPSTORE_ALLOWED_FILE"
_LOOPBACK = ("127.0.0.1", "::1")


def _canonical(text: str) -> str | None:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


def check_inherited(environ: Mapping[str, str]) -> list[Finding]:
    """VSL355: the operator's environment carries the guard's variables (they are replaced)."""
    names = [n for n in (ENV_ALLOWED, ENV_ALLOWED_FILE) if n in environ]
    if not names:
        return []
    return [
        INHERITED_SETTING.finding(
            "environment", f"{' and '.join(names)} set in the launcher's environment is ignored; "
            "the plan sets the guard from the internal address",
        )
    ]


def check_child(
    child_env: Mapping[str, str],
    interpreter_args: Sequence[str],
    internal_ips: Iterable[str],
    allow_loopback: bool,
) -> list[Finding]:
    """VSL352/353/354 on the planned child: the guard is switched on, its allowed set is a
    subset of the plan's internal addresses (+ loopback when allowed), and the interpreter does
    not run with -S. `interpreter_args` are the options before the script/-m (e.g. ["-I"])."""
    out: list[Finding] = []
    for arg in interpreter_args:
        if arg == "-S" or (arg.startswith("-") and not arg.startswith("--") and "S" in arg[1:]
                           and arg[1:].isalpha()):
            out.append(NO_SITE.finding("interpreter", f"vLLM's Python is started with {arg!r}"))
            break
    text = child_env.get(ENV_ALLOWED)
    if text is None:
        out.append(NOT_SWITCHED_ON.finding("environment", f"{ENV_ALLOWED} is not set"))
        return out
    permitted = {c for c in (_canonical(ip) for ip in internal_ips) if c}
    if allow_loopback:
        permitted.update(_LOOPBACK)
    entries = [e for e in text.replace(",", " ").split() if e]
    if not entries:
        out.append(BAD_ALLOWED.finding("environment", f"{ENV_ALLOWED} is empty"))
    for entry in entries:
        ip = _canonical(entry)
        if ip is None:
            out.append(BAD_ALLOWED.finding("environment", f"{entry!r} is not a literal address"))
        elif ip in ("0.0.0.0", "::"):
            out.append(BAD_ALLOWED.finding("environment", f"{entry!r} is a wildcard"))
        elif ip not in permitted:
            out.append(BAD_ALLOWED.finding(
                "environment", f"{entry!r} is not one of the plan's internal addresses "
                f"{sorted(permitted)}",
            ))
    return out


def install_finding(error: Exception) -> Finding:
    """VSL351 from guard_install.GuardInstallError (its paragraph is the message)."""
    paragraph = getattr(error, "paragraph", None)
    message = paragraph() if callable(paragraph) else str(error)
    return INSTALL_FAILED.finding("site-packages", message)


def self_test_findings(result: object) -> list[Finding]:
    """VSL350 from guard_install.SelfTestResult (duck-typed: ok, reason, python)."""
    if getattr(result, "ok", False):
        return []
    python = getattr(result, "python", "python")
    reason = getattr(result, "reason", "") or "unknown failure"
    return [SELF_TEST_FAILED.finding(str(python), f"TCPStore guard self-test: {reason}")]
