"""The serve pipeline: plan -> preflight -> amend (the final plan) -> refuse | guard -> supervise.

`--dry-run`, `check` and `serve` share `prepare`, so the plan a dry run prints is the plan
`serve` executes. `serve` then starts nothing unless every earlier step passed: a refused
start never leaves a half-started vLLM behind. Nothing here prints; the CLI hands in `say`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from vllm_secure_launch.config.policy import Policy, load
from vllm_secure_launch.exitcodes import ExitCode
from vllm_secure_launch.findings import Finding, apply_waivers, blocking
from vllm_secure_launch.plan.model import Plan
from vllm_secure_launch.records import record
from vllm_secure_launch.surface.args import ServeArgs

Say = Callable[[str], None]
Show = Callable[[Sequence[Finding]], None]


@record
class Prepared:
    """The final plan and what it was made from."""

    plan: Plan
    policy: Policy
    args: ServeArgs


def prepare(cli: Mapping[str, Any], vllm_args: Sequence[str],
            environ: Mapping[str, str]) -> Prepared:
    """Read the policy and the host, plan, run the accelerator preflight, amend. The only
    effects are reads (files, interfaces, NVML/npu-smi); the decisions are pure."""
    from vllm_secure_launch.host import facts as host_facts
    from vllm_secure_launch.host import packages as host_packages
    from vllm_secure_launch.plan.amend import with_preflight
    from vllm_secure_launch.plan.build import build_plan
    from vllm_secure_launch.surface import flags, versions

    policy = load(cli, environ)
    packages = host_packages.installed(policy.vllm_command)
    choice = versions.choose(*host_packages.engine(packages[0]))
    # The flag table of the vLLM that will run; the parsed args carry it (ServeArgs.surface),
    # so the pure planner renders and judges them with the same table.
    args = flags.parse(list(vllm_args), table=flags.table_for(choice.surface))
    # Paths vLLM will open, resolved here (cwd, symlinks) so the pure rules judge the real one.
    media = args.get("allowed_local_media_path")
    facts = host_facts.collect(environ, policy.api_key_file, policy.runtime_dir,
                               policy.allowed_media_dirs,
                               paths=(media,) if isinstance(media, str) else (),
                               vllm_command=policy.vllm_command, packages=packages,
                               surface=(choice.surface, choice.exact, choice.why),
                               ray_token_file=policy.ray_token_file
                               or environ.get("RAY_AUTH_TOKEN_PATH", ""))
    from vllm_secure_launch.firewall.enforce import plan_firewall

    platform = accelerator(policy, environ)
    # Multi-node: ranks, head address and ports derived from the Slurm step (or --node-list/
    # --node-rank) before planning, so the plan and --dry-run show them (cluster/derive.py).
    args, derived, derived_env = cluster_amend(args, environ, policy, facts, platform)
    plan = build_plan(args, environ, policy, facts, accelerator=platform,
                       extra_findings=derived, extra_env=derived_env)
    plan = with_preflight(plan, preflight(plan, args, policy.npu_peers), policy)
    plan = plan_firewall(plan, policy, args)
    return Prepared(ray_cluster(plan, args, policy, facts.packages_source), policy, args)


def ray_cluster(plan: Plan, args: ServeArgs, policy: Policy, python: str) -> Plan:
    """On a Ray backend, the live check of the cluster vLLM will join (preflight/ray_cluster.py
    observes in a child of vLLM's interpreter, rules/ray_live_rules.py judges): last, so it
    knows whether the kernel firewall will hold vLLM's driver port."""
    from vllm_secure_launch.plan.amend import with_ray_cluster

    if "ray" not in (args.get("distributed_executor_backend"), args.get("data_parallel_backend")):
        return plan
    if plan.decision != "start":
        return with_ray_cluster(plan, {"checked": False, "why": "the plan is refused before the "
                                       "cluster check"}, (), (), policy)
    from vllm_secure_launch.preflight import ray_cluster as observe
    from vllm_secure_launch.rules.ray_live_rules import judge

    local = [ip for ip in (plan.internal_ip, "127.0.0.1") if ip]
    obs = observe.observe(python, plan.env, local)
    verdict = judge(obs, plan.facts.get("internal_network"))
    return with_ray_cluster(plan, {"checked": True, **obs.to_dict()}, verdict.findings,
                            verdict.worker_ports, policy)


def cluster_amend(args: ServeArgs, environ: Mapping[str, str], policy: Policy, facts: Any,
                  platform: str
                  ) -> tuple[ServeArgs, tuple[Finding, ...], Mapping[str, str]]:
    from vllm_secure_launch import cluster

    if not cluster.applies(environ, policy):
        return args, (), {}
    from vllm_secure_launch.cluster import derive, lookup

    head = derive.head_to_resolve(environ, policy, platform)
    addrs = {head: lookup.addresses(head)} if head else {}  # the one effect: resolve the head
    d = derive.amend(args, environ, policy, facts.interfaces, platform, addrs)
    return d.args, d.findings, d.env


def accelerator(policy: Policy, environ: Mapping[str, str]) -> str:
    if policy.accelerator != "auto":
        return policy.accelerator
    from vllm_secure_launch.preflight import detect

    return detect.platform(environ)


def preflight(plan: Plan, args: ServeArgs, npu_peers: str = "") -> Any:
    from vllm_secure_launch.preflight import runner

    # Judge the environment vLLM will actually get, not the launcher's own.
    return runner.run_for_serve(args, plan.env, plan.accelerator, npu_peers=npu_peers)


def decision_code(plan: Plan) -> ExitCode:
    """What a dry run or `check` exits with: the code `serve` would stop with before spawning."""
    return {"start": ExitCode.OK, "preflight-failed": ExitCode.PREFLIGHT_FAILED}.get(
        plan.decision, ExitCode.REFUSED)


def serve(prepared: Prepared, say: Say, show: Show,
          write_report: Callable[[Plan], None]) -> int:
    """Start the final plan under supervision, or refuse; returns the exit code."""
    from vllm_secure_launch.supervise import loop

    plan, policy = prepared.plan, prepared.policy
    if plan.refused:
        show([f for f in plan.findings if f.blocking])
        code = decision_code(plan)
        what = ("accelerator preflight failed" if code == ExitCode.PREFLIGHT_FAILED
                else "refused by policy")
        say(f"{what}; nothing was started (exit {int(code)}). "
            "`vllm-secure-launch --dry-run serve ...` shows the whole plan")
        if policy.report:
            write_report(plan)
        return int(code)
    # The multi-node derivation (VSL320) is info, but each node's job log should say what it
    # derived: that is the operator's only view of the per-node options.
    show([f for f in plan.findings if f.severity.label != "info" or f.waived
          or f.rule_id == "VSL320"])
    # A missing or non-executable vLLM command: 127 / 126 before any other work.
    loop.resolve_command(plan.argv, plan.env)
    guard_findings = guard(plan, policy)
    if blocking(guard_findings):
        show(blocking(guard_findings))
        say("the TCPStore guard self-test failed; nothing was started (exit 78)")
        return int(ExitCode.REFUSED)
    show([f for f in guard_findings if f.severity.label != "info"])
    from vllm_secure_launch.firewall import enforce
    from vllm_secure_launch.supervise.ui import make_ui

    # The keeper loads the table and puts vLLM in its cgroup; the launcher only prepares both.
    return enforce.supervised(plan, lambda p: loop.run(p, make_ui(p.supervision.log_format)))


def guard(plan: Plan, policy: Policy) -> list[Finding]:
    if not policy.tcpstore_guard:
        return []
    from vllm_secure_launch.guard import install

    return apply_waivers(install.prepare(plan), policy.waivers)
