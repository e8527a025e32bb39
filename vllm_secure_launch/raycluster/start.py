"""`ray start` through the launcher: prepare (policy, host, plan, firewall) -> refuse | token ->
guard -> kernel firewall -> supervise. Nothing here prints; the CLI hands in `say` and `show`.

The supervisor is the one vLLM runs under (supervise/loop.py): the keeper puts `ray start
--block` (and so the GCS, raylet, agents and every worker it forks) in the firewall's cgroup
before exec; signals go to the whole tree; when the launcher stops, the keeper SIGTERMs and
then SIGKILLs every descendant, and the nftables table and the cgroup go with it: `ray stop`
for exactly the processes this launcher started.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from vllm_secure_launch.config.policy import Policy, load
from vllm_secure_launch.errors import LauncherError
from vllm_secure_launch.exitcodes import ExitCode
from vllm_secure_launch.files import write_atomic
from vllm_secure_launch.findings import Finding, apply_waivers, blocking
from vllm_secure_launch.plan.model import Plan

Say = Callable[[str], None]
Show = Callable[[Sequence[Finding]], None]


@dataclass(frozen=True)
class Prepared:
    plan: Plan
    policy: Policy


def prepare(cli: Mapping[str, Any], ray_argv: Sequence[str],
            environ: Mapping[str, str]) -> Prepared:
    """Read the policy and the host, plan, add the firewall's table. Reads only."""
    from vllm_secure_launch.firewall.enforce import plan_firewall
    from vllm_secure_launch.raycluster import host
    from vllm_secure_launch.raycluster.plan import build

    policy = load(cli, environ)
    facts = host.collect(list(ray_argv), environ, policy)
    plan = build(ray_argv, environ, policy, facts)
    # Also for a refused plan: the dry run shows the table the start would load.
    return Prepared(plan_firewall(plan, policy, {}), policy)


def write_token(path: str) -> None:
    """A new token for the cluster: 64 hex digits (Ray's own generator: token_hex(32)), 0600,
    written through a fresh temporary file and renamed (never through a planted symlink)."""
    try:
        write_atomic(path, secrets.token_hex(32) + "\n", mode=0o600)
    except OSError as exc:
        raise LauncherError(f"cannot write Ray's token file {path}: {exc.strerror}",
                            "the head creates the cluster's token when the file is absent",
                            "create the directory, or point --ray-token-file at a writable "
                            "place", ExitCode.REFUSED) from None


def run(prepared: Prepared, say: Say, show: Show) -> int:
    """Start the node under supervision, or refuse; returns the exit code."""
    from vllm_secure_launch.firewall import enforce
    from vllm_secure_launch.supervise import loop
    from vllm_secure_launch.supervise.ui import make_ui

    plan, policy = prepared.plan, prepared.policy
    if plan.refused:
        show(blocking(plan.findings))
        say("refused by policy; nothing was started (exit 78). "
            "`vllm-secure-launch --dry-run ray start ...` shows the whole plan")
        return int(ExitCode.REFUSED)
    show([f for f in plan.findings if f.severity.label != "info" or f.waived])
    loop.resolve_command(plan.argv, plan.env)
    ray = plan.facts.get("ray") or {}
    if ray.get("token_create") and not os.path.exists(ray["token_file"]):
        write_token(ray["token_file"])
        say(f"wrote a new Ray token to {ray['token_file']} (0600); copy it to every worker")
    if policy.tcpstore_guard:
        from vllm_secure_launch.guard import install

        found = apply_waivers(install.prepare(plan), policy.waivers)
        if blocking(found):
            show(blocking(found))
            say("the TCPStore guard self-test failed; nothing was started (exit 78)")
            return int(ExitCode.REFUSED)
    return enforce.supervised(plan, lambda p: loop.run(p, make_ui(p.supervision.log_format)))
