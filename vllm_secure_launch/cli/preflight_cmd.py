"""`vllm-secure-launch preflight [vllm args...]`: the accelerator report alone (issue 6).

Exit 0 when nothing blocks, 69 on a blocking finding, 2 on a usage error. --accelerator and
--format may be given here (before the vLLM arguments) or as launcher options before
`preflight`; both also read VSL_ACCELERATOR / VSL_FORMAT and the policy file.
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Any, Mapping, Sequence

import click

from vllm_secure_launch import __version__
from vllm_secure_launch.cli.options import click_option
from vllm_secure_launch.cli.passthrough import PassThrough
from vllm_secure_launch.config.settings import BY_KEY
from vllm_secure_launch.exitcodes import ExitCode
from vllm_secure_launch.findings import render_sarif, render_text
from vllm_secure_launch.surface.args import ServeArgs

GIB = 1024**3
FORMAT = BY_KEY["format"]


@click.command("preflight", cls=PassThrough)
@click_option("accelerator", help="Platform to check")
@click_option("format", dest="fmt", help="Report format")
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def command(ctx: click.Context, accelerator: str | None, fmt: str | None,
            vllm_args: tuple[str, ...]) -> int:
    """Check the accelerator for `vllm serve VLLM_ARGS...` and print the report: devices,
    memory, health, driver and engine. Exit 0 (would start), 69 (blocking finding)."""
    from vllm_secure_launch import preflight

    environ = dict(os.environ)
    chosen_acc, chosen_fmt = _settings(ctx.obj, environ, accelerator, fmt)
    args = _parse(vllm_args)
    policy = ctx.obj.policy(environ) if hasattr(ctx.obj, "policy") else None
    report = preflight.run_for_serve(args, environ, chosen_acc,
                                     npu_peers=getattr(policy, "npu_peers", "") or "")
    if chosen_fmt == "json":
        click.echo(json.dumps(report.to_document(__version__), indent=2))
    elif chosen_fmt == "sarif":
        docs = {r.id: (r.title, r.remedy) for r in preflight.RULES}
        click.echo(json.dumps(render_sarif(report.findings, docs, __version__), indent=2))
    else:
        click.echo(render_report_text(report))
    return ExitCode.PREFLIGHT_FAILED if report.blocked else ExitCode.OK


def _settings(obj: Any, environ: Mapping[str, str], accelerator: str | None,
              fmt: str | None) -> tuple[str | None, str]:
    """Subcommand option > launcher option / VSL_* / policy file (the lead's resolver)."""
    policy = obj.policy(environ) if hasattr(obj, "policy") else None
    if accelerator is None and policy is not None:
        accelerator = getattr(policy, "accelerator", None)
    if fmt is None:
        fmt = getattr(policy, "format", None) if policy is not None else None
        fmt = fmt or environ.get(FORMAT.env) or FORMAT.default
        if fmt not in FORMAT.choices:
            fmt = FORMAT.default
    # accelerator None: PreflightRequest reads VSL_ACCELERATOR, then `auto`.
    return accelerator, fmt


def _parse(vllm_args: Sequence[str]) -> ServeArgs:
    from vllm_secure_launch.surface import flags as vllm_flags  # raises UsageError on bad argv

    return vllm_flags.parse(list(vllm_args))


# ---------------------------------------------------------------------------------------------
# Text view


def render_report_text(report: Any) -> str:
    req = report.request
    lines = [f"platform: {report.platform} ({report.selection})"]
    engine = f"{report.engine} {report.engine_version}" if report.engine else "none"
    lines.append(f"engine: {engine}")
    if report.vllm_command:
        lines.append("engine command: " + shlex.join(report.vllm_command))
    if report.unsupported_flags:
        lines.append("flags the engine lacks: " + " ".join(report.unsupported_flags))
    if req is not None:
        lines.append(f"needs: {req.local_devices} device(s) ({req.devices_basis}); memory "
                     f"fraction {req.memory_fraction:g} ({req.memory_fraction_source}); "
                     f"dtype {req.dtype}")
    lines.append("devices:" if report.devices else "devices: none checked")
    for dev in report.devices:
        lines.append(f"  {dev.id}  {dev.name}")
        lines += [f"      {k}: {_show(k, v)}" for k, v in dev.facts.items() if v is not None]
    if report.env_updates:
        lines.append("environment for vLLM:")
        lines += [f"  {k}={v}" for k, v in sorted(report.env_updates.items())]
    lines.append("findings:")
    lines += ["  " + ln for ln in render_text(report.findings).splitlines()]
    lines.append("result: " + ("BLOCKED (exit 69)" if report.blocked else "ok"))
    return "\n".join(lines)


def _show(key: str, value: Any) -> str:
    if key.endswith("_bytes") and isinstance(value, int):
        return f"{value / GIB:.2f} GiB"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def main(argv: Sequence[str] | None = None) -> None:
    """Run `preflight` on its own (python -m vllm_secure_launch.cli.preflight_cmd)."""
    from vllm_secure_launch.cli.launch_cmds import run_cli

    run_cli(command, argv)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
