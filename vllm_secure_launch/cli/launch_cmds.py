"""The launcher's options and the `serve`, `check` and `rules` commands."""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import click

from .. import __version__
from ..errors import LauncherError, UsageError
from ..exitcodes import ExitCode
from ..findings import Finding, findings_json, render_sarif, render_text
from ..plan import Plan
from ..policy import Policy, policy_path, resolve
from ..serve_args import ServeArgs

SCHEMA_VERSION = 1

# click option name -> policy key. Every launcher option also reads VSL_* and the policy file:
# policy.SETTINGS holds the env names; precedence CLI > env > file > defaults is policy.resolve's.
_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--policy", "policy"), dict(metavar="PATH", help="Policy TOML file [env VSL_POLICY; default "
                                  "/etc/vllm-secure-launch/policy.toml if present].")),
    (("--internal-iface", "internal_iface"), dict(metavar="NAME", help="Private interface for all "
                                                  "internal traffic [VSL_INTERNAL_IFACE].")),
    (("--internal-cidr", "internal_cidr"), dict(metavar="CIDR", help="Pick the internal address "
                                                "by subnet [VSL_INTERNAL_CIDR].")),
    (("--internal-ip", "internal_ip"), dict(metavar="IP", help="The internal address itself "
                                            "[VSL_INTERNAL_IP].")),
    (("--api-host", "api_host"), dict(metavar="IP", help="API address used when vLLM's --host is "
                                      "absent [VSL_API_HOST; default 127.0.0.1].")),
    (("--allow-wildcard/--no-allow-wildcard", "allow_wildcard"),
     dict(default=None, help="Allow an API on 0.0.0.0/:: [VSL_ALLOW_WILDCARD].")),
    (("--api-key-file", "api_key_file"), dict(metavar="PATH", help="File holding the API key, mode "
                                              "0600 [VSL_API_KEY_FILE].")),
    (("--dry-run/--no-dry-run", "dry_run"), dict(default=None, help="Print the plan and exit 0 "
                                                 "(would start) or 78 (refused) [VSL_DRY_RUN].")),
    (("--format", "format"), dict(type=click.Choice(["text", "json", "sarif"]), help="Report "
                                  "format of dry-run/check [VSL_FORMAT].")),
    (("--report", "report"), dict(metavar="PATH", help="Also write the JSON report here "
                                  "[VSL_REPORT].")),
    (("--vllm-command", "vllm_command"),
     dict(metavar="CMD", help="Command that starts vLLM's serve, e.g. 'vllm-mindspore serve' "
          "[VSL_VLLM_COMMAND]; default: vLLM of this Python environment.")),
    (("--accelerator", "accelerator"), dict(type=click.Choice(["auto", "cuda", "ascend", "cpu"]),
                                            help="Accelerator platform [VSL_ACCELERATOR; auto].")),
    (("--ready-timeout", "ready_timeout"), dict(type=float, metavar="SECONDS", help="Wait this "
                                                "long for /health [VSL_READY_TIMEOUT; 1800].")),
    (("--audit", "audit"), dict(type=click.Choice(["enforce", "warn", "off"]), help="Socket audit "
                                "mode [VSL_AUDIT; enforce].")),
    (("--audit-interval", "audit_interval"), dict(type=float, metavar="SECONDS", help="Audit "
                                                  "period [VSL_AUDIT_INTERVAL; 1].")),
    (("--stop-grace", "stop_grace"), dict(type=float, metavar="SECONDS", help="Grace before the "
                                          "tree is killed on stop [VSL_STOP_GRACE; 30].")),
    (("--log-format", "log_format"), dict(type=click.Choice(["text", "json"]), help="The "
                                          "launcher's own stderr lines [VSL_LOG_FORMAT; text].")),
]


def launcher_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for decls, kw in reversed(_OPTIONS):
        fn = click.option(*decls, **kw)(fn)
    return fn


@dataclass(frozen=True)
class LauncherOptions:
    cli: Mapping[str, Any]  # only what the command line gave

    @classmethod
    def from_click(cls, opts: Mapping[str, Any]) -> "LauncherOptions":
        return cls({k: v for k, v in opts.items() if v is not None})

    def policy(self, environ: Mapping[str, str]) -> Policy:
        given = {k: v for k, v in self.cli.items() if k != "policy"}
        if isinstance(given.get("vllm_command"), str):
            given["vllm_command"] = _split_command("--vllm-command", given["vllm_command"])
        env = dict(environ)
        if "VSL_VLLM_COMMAND" in env:
            # VSL_VLLM_COMMAND is a shell-like command line, not a comma list.
            env["VSL_VLLM_COMMAND"] = ",".join(_split_command("VSL_VLLM_COMMAND",
                                                              env["VSL_VLLM_COMMAND"]))
        return resolve(given, env, policy_path(self.cli.get("policy"), environ))


def _split_command(where: str, text: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise UsageError(f"{where} {text!r} is not a valid command line ({exc})",
                         "it is split like a shell would split it",
                         "balance the quotes, e.g. --vllm-command 'vllm-mindspore serve'") from None


# ---------------------------------------------------------------------------------------------
# Plan building (edge: reads the host, then calls the pure planner)


@dataclass(frozen=True)
class Planned:
    """What the edge read and the planner decided, handed on to the serve path."""

    plan: Plan
    policy: Policy
    args: ServeArgs


def make_plan(opts: LauncherOptions, vllm_args: Sequence[str],
              environ: Mapping[str, str]) -> Planned:
    from .. import host as host_mod
    from .. import vllm_flags
    from ..planner import build_plan

    policy = opts.policy(environ)
    args = vllm_flags.parse(list(vllm_args))
    facts = host_mod.collect(environ, policy.api_key_file, policy.runtime_dir,
                             policy.allowed_media_dirs)
    accelerator = _accelerator(policy, environ)
    plan = build_plan(args, environ, policy, facts, accelerator=accelerator)
    return Planned(plan, policy, args)


def _accelerator(policy: Policy, environ: Mapping[str, str]) -> str:
    if policy.accelerator != "auto":
        return policy.accelerator
    from ..preflight import detect

    return detect.platform(environ)


# ---------------------------------------------------------------------------------------------
# Views of a plan


def plan_document(plan: Plan) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "vllm-secure-launch", "version": __version__},
        "decision": plan.decision,
        "argv": list(plan.argv),
        "env": plan.redacted_env(),
        "env_removed": list(plan.env_removed),
        "api": {"url": plan.api.url(), "host": plan.api.host, "port": plan.api.port,
                "uds": plan.api.uds},
        "expected_listeners": plan.expected.to_dict(),
        "internal": {"ip": plan.internal_ip, "iface": plan.internal_iface,
                     "network": plan.facts.get("internal_network")},
        "accelerator": plan.accelerator,
        "rpc_dir": plan.rpc_dir,
        "policy": plan.facts.get("policy"),
        "waivers": plan.facts.get("waivers", {}),
        "findings": findings_json(plan.findings),
    }


def plan_text(plan: Plan) -> str:
    lines = [f"decision: {plan.decision}" + ("" if not plan.refused else
                                              " (refused by policy; nothing was started)")]
    lines.append("command: " + shlex.join(plan.argv))
    lines.append("environment set:")
    lines += [f"  {k}={v}" for k, v in plan.redacted_env().items()]
    lines.append("environment removed: " + (", ".join(plan.env_removed) or "none"))
    ips = ", ".join(plan.expected.internal_ips) or "none"
    lines.append(f"expected listeners: API {plan.api.url()}; internal (any port): {ips}")
    lines.append("findings:")
    lines += ["  " + ln for ln in render_text(plan.findings).splitlines()]
    return "\n".join(lines)


def rule_docs() -> dict[str, tuple[str, str]]:
    from ..rules import all_rules

    return {r.id: (r.title, r.remedy) for r in all_rules()}


def emit_plan(plan: Plan, fmt: str, report: str | None, findings_only: bool = False) -> None:
    doc = plan_document(plan)
    if report:
        write_report(report, doc)
    if fmt == "json":
        click.echo(json.dumps(doc if not findings_only else
                              {k: doc[k] for k in ("schema_version", "decision", "findings")},
                              indent=2))
    elif fmt == "sarif":
        click.echo(json.dumps(render_sarif(plan.findings, rule_docs(), __version__), indent=2))
    elif findings_only:
        click.echo(f"decision: {plan.decision}\n" + render_text(plan.findings))
    else:
        click.echo(plan_text(plan))


def write_report(path: str, doc: Mapping[str, Any]) -> None:
    try:
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        raise LauncherError(f"cannot write the report to {path} ({exc.strerror})", "",
                            "give --report a writable path", ExitCode.USAGE) from None


# ---------------------------------------------------------------------------------------------
# Commands

# Everything after the subcommand belongs to vLLM; `serve --help` (first) is the launcher's help.
_PASS = {"ignore_unknown_options": True, "allow_interspersed_args": False}


@click.command("serve", context_settings=_PASS, add_help_option=True)
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def serve(opts: LauncherOptions, vllm_args: tuple[str, ...]) -> int:
    """Check, plan and start `vllm serve VLLM_ARGS...`: the same arguments you would give
    `vllm serve`. Launcher options go before `serve`."""
    planned = make_plan(opts, vllm_args, dict(os.environ))
    plan, policy = planned.plan, planned.policy
    if policy.dry_run:
        emit_plan(plan, policy.format, policy.report or None)
        return ExitCode.REFUSED if plan.refused else ExitCode.OK
    from .serve_run import run_serve

    return run_serve(planned)


@click.command("check", context_settings=_PASS)
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def check(opts: LauncherOptions, vllm_args: tuple[str, ...]) -> int:
    """Findings only for `vllm serve VLLM_ARGS...`: exit 0 (would start) or 78 (refused)."""
    planned = make_plan(opts, vllm_args, dict(os.environ))
    plan, policy = planned.plan, planned.policy
    emit_plan(plan, policy.format, policy.report or None, findings_only=True)
    return ExitCode.REFUSED if plan.refused else ExitCode.OK


@click.command("rules")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def rules_cmd(fmt: str) -> int:
    """Every rule ID with its severity, title and remedy."""
    from ..rules import all_rules

    rules = all_rules()
    if fmt == "json":
        click.echo(json.dumps([{"id": r.id, "severity": r.severity.label, "title": r.title,
                                "remedy": r.remedy} for r in rules], indent=2))
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
