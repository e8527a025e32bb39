"""The `ray` command group: `vllm-secure-launch [launcher options] ray start [ray start args]`,
a hardened drop-in for `ray start` (raycluster/, docs/ray.md)."""

from __future__ import annotations

import json
import os
import shlex

import click

from vllm_secure_launch import __version__
from vllm_secure_launch.cli.launch_cmds import (
    LauncherOptions,
    firewall_and_findings,
    say,
    show_findings,
)
from vllm_secure_launch.cli.passthrough import PassThrough
from vllm_secure_launch.exitcodes import ExitCode
from vllm_secure_launch.findings import envelope
from vllm_secure_launch.plan.document import plan_body
from vllm_secure_launch.plan.model import Plan


@click.group("ray")
def ray() -> None:
    """Start a Ray node the hardened way (token auth, internal address, pinned ports,
    kernel firewall, supervised)."""


def plan_text(plan: Plan) -> str:
    """The dry run's view: the exact `ray start` command line and environment (no token)."""
    ray_facts = plan.facts.get("ray") or {}
    lines = [f"decision: {plan.decision}" + ("" if not plan.refused else
                                              " (refused by policy; nothing was started)")]
    lines.append(f"role: {ray_facts.get('role', '?')}")
    if plan.argv:
        lines.append("command: " + shlex.join(plan.argv))
    lines.append("environment set:")
    lines += [f"  {k}={v}" for k, v in plan.redacted_env().items()]
    lines.append("environment removed: " + (", ".join(plan.env_removed) or "none"))
    if ray_facts.get("token_create"):
        lines.append(f"token: {ray_facts['token_file']} is created (0600) before Ray starts")
    exp = plan.expected
    confined = ", ".join(exp.to_dict().get("confined_wildcard_ports", [])) or "none"
    ips = ", ".join(exp.internal_ips) or "none"
    lines.append(f"expected listeners: internal (any port): {ips}; loopback; wildcard only on "
                 f"kernel-confined ports: {confined}")
    lines += firewall_and_findings(plan, "Ray")
    return "\n".join(lines)


@ray.command("start", cls=PassThrough)
@click.argument("ray_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def start(opts: LauncherOptions, ray_args: tuple[str, ...]) -> int:
    """Check, plan and run `ray start RAY_ARGS...` (--head, or --address HEAD:PORT to join)
    in the foreground under the launcher's supervision. Launcher options go before `ray`."""
    from vllm_secure_launch.cli.launch_cmds import write_report
    from vllm_secure_launch.raycluster import start as ray_start

    prepared = ray_start.prepare(opts.cli, ray_args, dict(os.environ))
    plan, policy = prepared.plan, prepared.policy
    if policy.dry_run:
        doc = envelope("plan", plan.decision, plan.findings,
                       {**plan_body(plan), "ray": plan.facts.get("ray")}, __version__)
        if policy.report:
            write_report(policy.report, doc)
        click.echo(json.dumps(doc, indent=2) if policy.format == "json" else plan_text(plan))
        return int(ExitCode.OK if not plan.refused else ExitCode.REFUSED)
    return ray_start.run(prepared, say, show_findings)
