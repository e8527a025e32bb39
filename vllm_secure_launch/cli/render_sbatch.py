"""`vllm-secure-launch [launcher options] render sbatch [--nodes N ...] [vllm serve args...]`:
a Slurm batch script (cluster/sbatch.py) on standard output."""

from __future__ import annotations

import os
import shlex
import stat
from typing import Any, Mapping

import click

from vllm_secure_launch import __version__
from vllm_secure_launch.cli.launch_cmds import LauncherOptions
from vllm_secure_launch.cli.passthrough import PassThrough
from vllm_secure_launch.errors import LauncherError
from vllm_secure_launch.exitcodes import ExitCode

# Launcher options that belong to one run, not to the job: never copied into the script.
_NOT_COPIED = ("dry_run", "format", "report", "node_list", "node_rank", "slurm")
# Paths are made absolute: each node's launcher starts in the job's working directory.
_PATHS = ("policy", "api_key_file")


def launcher_flags(cli: Mapping[str, Any]) -> list[str]:
    """The launcher options given on this command line, spelled back for the script."""
    from vllm_secure_launch.cli.options import spelled_again

    given = {k: (os.path.abspath(os.path.expanduser(v)) if _is_path(k, v) else v)
             for k, v in cli.items()}
    return spelled_again(given, _NOT_COPIED)


def _is_path(key: str, value: Any) -> bool:
    # --npu-peers is a path only when it holds a '/' (else a list of IPs).
    return isinstance(value, str) and (key in _PATHS or (key == "npu_peers" and "/" in value))


def _refuse(what: str, fix: str) -> LauncherError:
    return LauncherError(what, "the rendered script would not start on every node", fix,
                         ExitCode.REFUSED)


def _check_key_file(path: str) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        raise _refuse(f"the API key file {path} does not exist or cannot be read",
                      "create it (one line, mode 0600) before rendering") from None
    if mode & 0o077:
        raise _refuse(f"the API key file {path} is readable by others (mode {mode:04o})",
                      f"chmod 600 {shlex.quote(path)}")


@click.command("sbatch", cls=PassThrough)
@click.option("--nodes", type=int, metavar="N", help="Nodes of the job [default: --nnodes].")
@click.option("--job-name", default="vllm-secure-launch", show_default=True)
@click.option("--output", default="vllm-secure-launch-%j.out", show_default=True,
              help="Slurm output path (stdout and stderr).")
@click.option("--partition", default="", help="#SBATCH --partition.")
@click.option("--time", "time_", default="", help="#SBATCH --time.")
@click.option("--devices-per-node", type=int, metavar="N",
              help="Devices of one node, to check the layout [cpu: 1; else unchecked].")
@click.option("--launcher", "launcher_cmd", default="vllm-secure-launch", show_default=True,
              help="The launcher command on the nodes.")
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def sbatch(opts: LauncherOptions, nodes: int | None, job_name: str, output: str,
           partition: str, time_: str, devices_per_node: int | None, launcher_cmd: str,
           vllm_args: tuple[str, ...]) -> int:
    """A Slurm batch script that runs `vllm serve VLLM_ARGS...` under the launcher on every
    node of the job, one task per node, with nothing per node written by hand."""
    from vllm_secure_launch.cluster import sbatch as S
    from vllm_secure_launch.surface import flags

    policy = opts.policy(dict(os.environ))
    args = flags.parse(list(vllm_args))
    if not policy.api_key_file:
        raise _refuse("no --api-key-file", "give --api-key-file PATH (mode 0600, readable by the "
                                           "job's user) before `render`")
    _check_key_file(policy.api_key_file)
    if not (policy.internal_cidr or policy.internal_iface):
        raise _refuse("no internal network setting", "give --internal-cidr (or "
                      "--internal-iface) before `render`: every node pins its own address in it")
    if policy.internal_ip:
        raise _refuse("--internal-ip names one node's address", "use --internal-cidr, which "
                      "every node resolves to its own address")
    n = nodes if nodes is not None else int(args.get("nnodes") or 1)
    if devices_per_node is None and policy.accelerator == "cpu":
        devices_per_node = 1
    vargs = tuple(t for t in vllm_args)
    spec = S.BatchSpec(n, (*shlex.split(launcher_cmd), "--slurm", "on",
                           *launcher_flags(opts.cli)), vargs, job_name, output, partition,
                       time_, devices_per_node, __version__)
    bad = S.problems(spec, args)
    if bad:
        raise _refuse("; ".join(bad), "fix the layout or --nodes; see docs/multinode.md")
    click.echo(S.render(spec), nl=False)
    return ExitCode.OK
