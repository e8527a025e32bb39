"""The `vllm-secure-launch` command group. Only the cli package prints and picks exit codes."""

from __future__ import annotations

import click

from vllm_secure_launch import __version__
from vllm_secure_launch.cli import (
    advisories_cmd,
    launch_cmds,
    preflight_cmd,
    probe_cmd,
    ray_cmd,
    render_cmd,
    render_firewall,
    render_nginx,
    render_sbatch,
)
from vllm_secure_launch.cli.options import launcher_options


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vllm-secure-launch")
@launcher_options
@click.pass_context
def cli(ctx: click.Context, **launcher_opts: object) -> None:
    """Hardened drop-in replacement for `vllm serve`.

    Launcher options go before the subcommand; everything after `serve` belongs to vLLM,
    exactly as you would write it for `vllm serve`. Every launcher option also reads a VSL_*
    environment variable and the policy file (precedence: CLI > env > file > defaults).
    """
    ctx.obj = launch_cmds.LauncherOptions.from_click(launcher_opts)


cli.add_command(launch_cmds.serve)
cli.add_command(launch_cmds.check)
cli.add_command(launch_cmds.rules_cmd)
cli.add_command(preflight_cmd.command)
cli.add_command(probe_cmd.command)
cli.add_command(render_cmd.render)
cli.add_command(advisories_cmd.command)
cli.add_command(ray_cmd.ray)
render_firewall.register(render_cmd.render)
render_cmd.render.add_command(render_sbatch.sbatch)
render_cmd.render.add_command(render_nginx.nginx)


def main() -> None:
    launch_cmds.run_cli(cli)


if __name__ == "__main__":
    main()
