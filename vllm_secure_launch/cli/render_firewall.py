"""`render systemd` and `render nftables`: the firewall policy written out from the same final
plan as `serve` (pipeline.prepare). A refused plan renders nothing and exits 78."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Mapping, Sequence

import click

from vllm_secure_launch.errors import UsageError
from vllm_secure_launch.exitcodes import ExitCode

PASS = {"ignore_unknown_options": True, "allow_interspersed_args": False}
# Launcher options that make no sense inside a unit (they change what the command prints).
_NOT_IN_UNIT = {"dry_run", "format", "report", "policy"}
_SECRET_FLAGS = ("--api-key",)


def prepare(opts: Any, vllm_args: Sequence[str]) -> Any:
    from vllm_secure_launch import pipeline
    from vllm_secure_launch.cli.launch_cmds import show_findings

    prepared = pipeline.prepare(opts.cli, vllm_args, dict(os.environ))
    if prepared.plan.refused:
        show_findings([f for f in prepared.plan.findings if f.blocking])
        click.echo("vllm-secure-launch: the plan is refused; nothing was rendered (exit 78)",
                   err=True)
        raise click.exceptions.Exit(int(ExitCode.REFUSED))
    return prepared


def launcher_path() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "vllm-secure-launch")
    return here if os.path.exists(here) else shutil.which("vllm-secure-launch") or here


def option_args(cli: Mapping[str, Any]) -> list[str]:
    """The launcher options given on this command line, as they would be written again."""
    from vllm_secure_launch.cli.options import spelled_again

    return spelled_again(cli, _NOT_IN_UNIT)


def exec_start(cli: Mapping[str, Any], vllm_args: Sequence[str], policy_path: str) -> list[str]:
    for arg in vllm_args:
        if arg.split("=", 1)[0] in _SECRET_FLAGS:
            raise UsageError(f"{arg.split('=', 1)[0]} would put the API key into the unit file",
                             "generated files never contain a secret",
                             "drop it: the unit passes the key as the credential vllm-api-key")
    return [launcher_path(), "--policy", policy_path, *option_args(cli), "serve", *vllm_args]


@click.command("systemd", context_settings=PASS)
@click.option("--user", "user", default="vllm", show_default=True, help="User= and Group=.")
@click.option("--policy-path", default="/etc/vllm-secure-launch/policy.toml", show_default=True,
              help="Policy file the unit's launcher reads.")
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def systemd(opts: Any, user: str, policy_path: str, vllm_args: tuple[str, ...]) -> int:
    """A systemd unit (Type=notify, credentials, cgroup IP filters, sandboxing) for
    `vllm serve VLLM_ARGS...`."""
    from vllm_secure_launch.firewall import render

    prepared = prepare(opts, vllm_args)
    cmd = exec_start(opts.cli, vllm_args, policy_path)
    click.echo(render.systemd(prepared.plan, cmd, user=user,
                              api_sources=prepared.policy.api_allowed_sources), nl=False)
    return int(ExitCode.OK)


@click.command("nftables", context_settings=PASS)
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def nftables(opts: Any, vllm_args: tuple[str, ...]) -> int:
    """A node's host firewall ruleset (nft -f) for `vllm serve VLLM_ARGS...`."""
    from vllm_secure_launch.firewall import render

    prepared = prepare(opts, vllm_args)
    click.echo(render.nftables(prepared.plan, prepared.policy.api_allowed_sources), nl=False)
    return int(ExitCode.OK)


def register(group: click.Group) -> None:
    group.add_command(systemd)
    group.add_command(nftables)
