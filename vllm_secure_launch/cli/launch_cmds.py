"""The launcher's options and the `serve`, `check` and `rules` commands."""

from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Any, Mapping, Sequence

import click

from vllm_secure_launch import __version__
from vllm_secure_launch.cli.options import launcher_options
from vllm_secure_launch.cli.passthrough import PassThrough
from vllm_secure_launch.config.policy import Policy, load
from vllm_secure_launch.errors import LauncherError
from vllm_secure_launch.exitcodes import ExitCode
from vllm_secure_launch.files import write_atomic
from vllm_secure_launch.findings import (
    Finding,
    envelope,
    format_finding_text,
    render_sarif,
    render_text,
)
from vllm_secure_launch.plan.document import check_document, plan_document
from vllm_secure_launch.plan.model import Plan
from vllm_secure_launch.records import record


@record
class LauncherOptions:
    cli: Mapping[str, Any]  # only what the command line gave

    @classmethod
    def from_click(cls, opts: Mapping[str, Any]) -> LauncherOptions:
        return cls({k: v for k, v in opts.items() if v is not None})

    def policy(self, environ: Mapping[str, str]) -> Policy:
        return load(self.cli, environ)


# ---------------------------------------------------------------------------------------------
# Views of a plan


def plan_text(plan: Plan) -> str:
    lines = [f"decision: {plan.decision}" + ("" if not plan.refused else
                                              " (refused by policy; nothing was started)")]
    lines.append("command: " + shlex.join(plan.argv))
    v = plan.facts.get("vllm") or {}
    if v:
        lines.append(f"vllm: {v.get('distribution') or 'none found'} {v.get('version') or ''} "
                     f"(read from {v.get('read_from') or '?'}); surface {v.get('surface')}: "
                     f"{v.get('why')}")
    lines.append("environment set:")
    lines += [f"  {k}={v}" for k, v in plan.redacted_env().items()]
    lines.append("environment removed: " + (", ".join(plan.env_removed) or "none"))
    ips = ", ".join(plan.expected.internal_ips) or "none"
    lines.append(f"expected listeners: API {plan.api.url()}; internal (any port): {ips}")
    if plan.expected.confined_ports:
        ranges = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in plan.expected.confined_ports)
        lines.append(f"  and the Ray driver's core-worker port on the wildcard in: {ranges}")
    lines += ray_text(plan.facts.get("ray"))
    lines += firewall_and_findings(plan, "vLLM")
    return "\n".join(lines)


def firewall_and_findings(plan: Plan, what: str) -> list[str]:
    """The text plan's tail: the firewall mode with the exact ruleset, then the findings."""
    fw = plan.facts.get("firewall") or {}
    lines = [f"firewall: {fw.get('mode', 'off')}" + ("" if "ruleset" not in fw else
             f" (nftables table loaded before {what} starts):")]
    lines += ["  " + ln for ln in fw.get("ruleset", "").splitlines()]
    lines.append("findings:")
    lines += ["  " + ln for ln in render_text(plan.findings).splitlines()]
    return lines


def ray_text(ray: Mapping[str, Any] | None) -> list[str]:
    """The Ray cluster vLLM joins and what its live check saw (no secret: the token stays in
    its file; only the file's path is shown)."""
    if not ray:
        return []
    if not ray.get("checked"):
        return [f"ray cluster: not checked ({ray.get('why', '')})"]
    wt = ray.get("with_token") or {}
    nodes = ", ".join(n["address"] for n in wt.get("nodes", [])) or "none"
    nt = ray.get("without_token") or {}
    refused = ("refused" if nt.get("auth_rejected") else "ACCEPTED" if nt.get("ok")
               else "undecided")
    return [f"ray cluster: RAY_ADDRESS={ray.get('address')}; nodes {nodes}; a client without "
            f"the token: {refused}; dashboard recorded at {wt.get('dashboard') or 'none'}"]


def rule_docs() -> dict[str, tuple[str, str]]:
    from vllm_secure_launch.rules import all_rules

    return {r.id: (r.title, r.remedy) for r in all_rules()}


def emit_plan(plan: Plan, fmt: str, report: str | None, findings_only: bool = False) -> None:
    doc = plan_document(plan)
    if report:
        write_report(report, doc)  # the whole plan, also for `check`
    if fmt == "json":
        click.echo(json.dumps(doc if not findings_only else check_document(plan), indent=2))
    elif fmt == "sarif":
        click.echo(json.dumps(render_sarif(plan.findings, rule_docs(), __version__), indent=2))
    elif findings_only:
        click.echo(f"decision: {plan.decision}\n" + render_text(plan.findings))
    else:
        click.echo(plan_text(plan))


def write_report(path: str, doc: Mapping[str, Any]) -> None:
    try:
        write_atomic(path, json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise LauncherError(f"cannot write the report to {path} ({exc.strerror})", "",
                            "give --report a writable path", ExitCode.USAGE) from None


# ---------------------------------------------------------------------------------------------
# Commands

# Everything after the subcommand belongs to vLLM; `serve --help` (first) is the launcher's help.


@click.command("serve", cls=PassThrough)
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def serve(opts: LauncherOptions, vllm_args: tuple[str, ...]) -> int:
    """Check, plan and start `vllm serve VLLM_ARGS...`: the same arguments you would give
    `vllm serve`. Launcher options go before `serve`."""
    from vllm_secure_launch import pipeline

    prepared = pipeline.prepare(opts.cli, vllm_args, dict(os.environ))
    plan, policy = prepared.plan, prepared.policy
    if policy.dry_run:
        emit_plan(plan, policy.format, policy.report or None)
        return pipeline.decision_code(plan)
    return pipeline.serve(prepared, say, show_findings,
                          lambda p: write_report(policy.report, plan_document(p)))


def say(text: str) -> None:
    click.echo(f"vllm-secure-launch: {text}", err=True)


def show_findings(findings: Sequence[Finding]) -> None:
    for f in findings:
        for i, line in enumerate(format_finding_text(f).splitlines()):
            click.echo(("vllm-secure-launch: " if i == 0 else "    ") + line.strip(), err=True)


@click.command("check", cls=PassThrough)
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def check(opts: LauncherOptions, vllm_args: tuple[str, ...]) -> int:
    """Findings only for `vllm serve VLLM_ARGS...`: exit 0 (would start) or 78 (refused)."""
    from vllm_secure_launch import pipeline

    prepared = pipeline.prepare(opts.cli, vllm_args, dict(os.environ))
    plan, policy = prepared.plan, prepared.policy
    emit_plan(plan, policy.format, policy.report or None, findings_only=True)
    return pipeline.decision_code(plan)


@click.command("rules")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def rules_cmd(fmt: str) -> int:
    """Every rule ID with its severity, title and remedy."""
    from vllm_secure_launch.rules import all_rules

    rules = all_rules()
    if fmt == "json":
        body = {"rules": [{"id": r.id, "severity": r.severity.label, "title": r.title,
                           "remedy": r.remedy} for r in rules]}
        click.echo(json.dumps(envelope("rules", "none", (), body, __version__), indent=2))
    else:
        for r in rules:
            click.echo(f"{r.id}  {r.severity.label:<7}  {r.title}\n         fix: {r.remedy}")
    return ExitCode.OK


# ---------------------------------------------------------------------------------------------
# Entry: the only place that turns errors into exit codes and one-paragraph messages.


def error_line(text: str) -> None:
    click.echo(f"vllm-secure-launch: error: {text}", err=True)


def run_cli(group: click.Group, argv: Sequence[str] | None = None) -> None:
    try:
        rc = group.main(args=list(sys.argv[1:] if argv is None else argv),
                        prog_name="vllm-secure-launch", standalone_mode=False)
    except click.exceptions.Exit as exc:
        rc = exc.exit_code
    except click.exceptions.Abort:
        error_line("aborted")
        rc = 130
    except click.ClickException as exc:
        error_line(exc.format_message() + " (see --help)")
        rc = ExitCode.USAGE
    except LauncherError as exc:
        error_line(exc.paragraph())
        rc = exc.code
    except KeyboardInterrupt:
        rc = 130
    except Exception as exc:  # never a traceback for the user; VSL_DEBUG=1 shows it
        if os.environ.get("VSL_DEBUG") == "1":
            raise
        error_line(f"internal error ({exc.__class__.__name__}: {exc}). This is a bug of "
                   "vllm-secure-launch; nothing was started unless said above. Fix: rerun with "
                   "VSL_DEBUG=1 for the traceback and report it")
        rc = ExitCode.INTERNAL
    sys.exit(int(rc or 0))


__all__ = ["serve", "check", "rules_cmd", "launcher_options", "LauncherOptions", "run_cli",
           "Finding"]
