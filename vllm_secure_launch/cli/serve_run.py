"""`serve` without --dry-run: refuse (78), preflight (69), hook self-test (78), then supervise.

Order matters: nothing is started unless every earlier step passed, so a refused start never
leaves a half-started vLLM behind.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Sequence

import click

from ..exitcodes import ExitCode
from ..findings import Finding, apply_waivers, blocking, format_finding_text
from ..plan import Plan
from ..planner import default_command
from ..policy import Policy
from ..serve_args import ServeArgs
from .launch_cmds import Planned


def _say(plan: Plan, text: str) -> None:
    click.echo(f"vllm-secure-launch: {text}", err=True)


def _show(findings: Sequence[Finding]) -> None:
    for f in findings:
        for i, line in enumerate(format_finding_text(f).splitlines()):
            click.echo(("vllm-secure-launch: " if i == 0 else "    ") + line.strip(), err=True)


def run_serve(planned: Planned) -> int:
    from .. import supervisor
    from .launch_cmds import plan_document, write_report

    plan, policy = planned.plan, planned.policy
    if plan.refused:
        _show([f for f in plan.findings if f.blocking])
        _say(plan, "refused by policy; nothing was started (exit 78). "
                   "`vllm-secure-launch --dry-run serve ...` shows the whole plan")
        if policy.report:
            write_report(policy.report, plan_document(plan))
        return ExitCode.REFUSED
    _show([f for f in plan.findings if f.severity.label != "info" or f.waived])
    # A missing or non-executable vLLM command: 127 / 126 before any other work.
    supervisor.resolve_command(plan.argv, plan.env)

    plan, pre_findings = _preflight(plan, policy, planned.args)
    if blocking(pre_findings):
        _show(blocking(pre_findings))
        _say(plan, "accelerator preflight failed; nothing was started (exit 69)")
        return ExitCode.PREFLIGHT_FAILED

    guard_findings = _guard(plan, policy)
    if blocking(guard_findings):
        _show(blocking(guard_findings))
        _say(plan, "the TCPStore guard self-test failed; nothing was started (exit 78)")
        return ExitCode.REFUSED
    _show([f for f in guard_findings if f.severity.label != "info"])

    from .ui import make_ui

    ui = make_ui(plan.supervision.log_format)
    return supervisor.run(plan, ui)


def _preflight(plan: Plan, policy: Policy, args: ServeArgs) -> tuple[Plan, list[Finding]]:
    from .. import preflight

    # Judge the environment vLLM will actually get, not the launcher's own.
    report = preflight.run_for_serve(args, plan.env, plan.accelerator)
    findings = apply_waivers(report.findings, policy.waivers)
    env = dict(plan.env)
    env_set = dict(plan.env_set)
    for k, v in report.env_updates.items():
        # Never override a device selection the operator (or Slurm) made; search paths are
        # extended by preflight itself (old entries kept), so they always apply.
        if k not in plan.env or k in _SEARCH_PATHS:
            env[k] = v
            env_set[k] = v
    argv = plan.argv
    if report.vllm_command and not policy.vllm_command and plan.argv[:4] == default_command(
            plan.argv[0]):
        argv = (*report.vllm_command, *plan.argv[4:])
        findings += _unsupported(report.unsupported_flags, plan.argv[4:])
    return replace(plan, env=env, env_set=env_set, argv=argv), findings


_SEARCH_PATHS = ("LD_LIBRARY_PATH", "PATH", "PYTHONPATH")


def _unsupported(flags: Sequence[str], child_argv: Sequence[str]) -> list[Finding]:
    """Options the launcher itself added that the engine's older vLLM base lacks."""
    from ..preflight.catalog import rule

    used = {a.split("=", 1)[0] for a in child_argv if a.startswith("--")}
    return [rule("VSL549").finding(f, f"{f} is in the plan but the engine's vLLM base lacks it")
            for f in flags if f in used]


def _guard(plan: Plan, policy: Policy) -> list[Finding]:
    if not policy.tcpstore_guard:
        return []
    from .. import guard_install

    return apply_waivers(guard_install.prepare(plan), policy.waivers)
