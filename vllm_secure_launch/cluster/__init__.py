"""Multi-node derivation: from a Slurm step's variables (or an explicit node list and rank)
to each node's vLLM options (ranks, head address, job-unique ports). Pure, except
`lookup.addresses`, which pipeline calls to resolve the head's name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from vllm_secure_launch.config.policy import Policy


def in_slurm(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("SLURM_JOB_ID"))


def applies(environ: Mapping[str, str], policy: Policy) -> bool:
    """Whether there is anything to derive (or to refuse): a Slurm job the policy does not
    switch off, `--slurm on`, or an explicit node list/rank. When not, a one-node start
    never loads the derivation (it costs a dry run ~1 ms of imports)."""
    return ((policy.slurm != "off" and in_slurm(environ)) or policy.slurm == "on"
            or bool(policy.node_list or policy.node_rank))
