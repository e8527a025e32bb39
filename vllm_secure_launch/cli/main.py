"""The `vllm-secure-launch` command group. Only the cli package prints and picks exit codes."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import click

from vllm_secure_launch import __version__
from vllm_secure_launch.cli import launch_cmds
from vllm_secure_launch.cli.options import launcher_options


def _render() -> click.Command:
    from vllm_secure_launch.cli import render_cmd, render_firewall, render_nginx, render_sbatch

    if "sbatch" not in render_cmd.render.commands:
        render_firewall.register(render_cmd.render)
        render_cmd.render.add_command(render_sbatch.sbatch)
        render_cmd.render.add_command(render_nginx.nginx)
    return render_cmd.render


def _ray() -> click.Command:
    from vllm_secure_launch.cli import ray_cmd

    return ray_cmd.ray


def _module_command(module: str) -> Callable[[], click.Command]:
    return lambda: importlib.import_module(f"vllm_secure_launch.cli.{module}").command


# Commands whose modules load only when named (or listed by --help): a `serve` start does not
# pay for importing the preflight, probe, render, advisories and ray commands (issue 9).
LAZY: dict[str, Callable[[], click.Command]] = {
    "advisories": _module_command("advisories_cmd"),
    "preflight": _module_command("preflight_cmd"),
    "probe": _module_command("probe_cmd"),
    "ray": _ray,
    "render": _render,
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY:
            self.add_command(LAZY[cmd_name](), cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def main() -> None:
    launch_cmds.run_cli(cli)


if __name__ == "__main__":
    main()
