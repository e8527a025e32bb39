"""`vllm-secure-launch [launcher options] render KIND [vllm serve arguments...]`.

Writes one generated file to standard output, made from the same final plan as `serve`
(pipeline.prepare): a systemd unit, a host firewall ruleset, an nginx front, a Slurm batch
script. Each KIND is a subcommand registered by its own module (cli/main.py adds them).
Generated files are deterministic and never contain a secret.
"""

from __future__ import annotations

import click


@click.group("render")
def render() -> None:
    """Write a generated file for `vllm serve VLLM_ARGS...` to standard output."""
