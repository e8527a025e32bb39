"""`vllm-secure-launch [launcher options] advisories [vllm serve arguments...]`.

Lists the known advisories that affect this environment's installed versions, and for each
whether its condition holds for this plan (then it refuses or warns at `serve`). Exit 0 when
nothing blocks, 78 when a blocking one applies.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from vllm_secure_launch import __version__
from vllm_secure_launch.cli.passthrough import PassThrough
from vllm_secure_launch.exitcodes import ExitCode
from vllm_secure_launch.findings import envelope
from vllm_secure_launch.host.facts import HostFacts


@click.command("advisories", cls=PassThrough)
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def command(opts: object, vllm_args: tuple[str, ...]) -> int:
    """Known vulnerabilities of the installed vLLM, Ray, torch and serving stack for
    `vllm serve VLLM_ARGS...`: exit 0, or 78 when one would refuse the start."""
    from vllm_secure_launch import pipeline
    from vllm_secure_launch.rules.advisory_rules import RULES, atom
    from vllm_secure_launch.rules.context import build_context
    from vllm_secure_launch.surface.advisories import matches

    cli = getattr(opts, "cli", {})
    plan = pipeline.prepare(cli, vllm_args or ("model",), dict(os.environ))
    ids = {r.id for r in RULES}
    found = [f for f in plan.plan.findings if f.rule_id in ids]
    facts = plan.plan.facts.get("vllm", {})
    every = matches(facts.get("packages", {}), lambda kind, arg: True)
    ctx = build_context(plan.args, dict(os.environ), plan.policy, _host(plan), plan.plan.accelerator)
    applies = {(m.advisory["id"], m.distribution) for m in matches(facts.get("packages", {}),
                                                                   atom(ctx))}
    rows = [{"id": m.advisory["id"], "distribution": m.distribution, "version": m.version,
             "severity": m.advisory["severity"], "network": bool(m.advisory.get("network")),
             "fixed": m.advisory.get("fixed") or None, "condition": m.advisory["condition"],
             "applies": (m.advisory["id"], m.distribution) in applies,
             "blocks": m.blocks and (m.advisory["id"], m.distribution) in applies,
             "cause": m.advisory["cause"], "source": m.advisory["source"]} for m in every]
    blocked = any(f.blocking for f in found)
    fmt = plan.policy.format
    if fmt == "json":
        doc = envelope("advisories", "refuse" if blocked else "start", found,
                       {"vllm": facts, "advisories": rows}, __version__)
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(f"vLLM: {facts.get('distribution')} {facts.get('version')} "
                   f"(read from {facts.get('read_from')}); surface {facts.get('surface')}")
        if not rows:
            click.echo("no known advisory affects the installed versions")
        for r in rows:
            state = "BLOCKS" if r["blocks"] else "applies" if r["applies"] else "not applicable"
            click.echo(f"{r['id']}  {r['distribution']} {r['version']}  {r['severity']}  "
                       f"{state}  fixed: {r['fixed'] or '-'}\n    {r['cause']}\n"
                       f"    when: {r['condition']}  {r['source']}")
    return int(ExitCode.REFUSED if blocked else ExitCode.OK)


def _host(prepared: Any) -> HostFacts:
    from vllm_secure_launch.host.facts import HostFacts

    facts = prepared.plan.facts.get("vllm", {})
    return HostFacts(packages=facts.get("packages", {}), packages_source=facts.get("read_from", ""))
