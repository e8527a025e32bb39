"""(ray start argv, environ, Policy, RayHost) -> Plan for one hardened Ray node. Pure.

The Plan is the serve Plan (plan/model.py), so the supervisor, the socket audit, the kernel
firewall and the dry-run views run a Ray node exactly as they run vLLM:

* argv: `ray start` with --head or --address HEAD:GCS, --node-ip-address = this node's
  internal address, every port pinned (surface/ray_start.py, docs/ray.md), the dashboard off
  (or on 127.0.0.1), usage stats off, --temp-dir in the launcher's 0700 run directory, and
  --block (the launcher stays the node's supervisor);
* env: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH, usage stats and metrics collection off,
  the head's two Prometheus ports pinned, and for Ray's workers (they inherit the node's
  environment) the TCPStore guard's allowed set, VLLM_HOST_IP and the gloo/NCCL/TensorPipe
  interface; RAY_AUTH_TOKEN and RAY_ADDRESS removed;
* expected listeners: anything on the internal address or loopback; the wildcard only on the
  pinned ports of the listeners that bind it regardless, and only while the kernel firewall
  confines them (otherwise VSL715 refuses the start).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from vllm_secure_launch.addresses import ApiEndpoint, InternalNet, ResolveError, resolve_internal
from vllm_secure_launch.cluster import derive
from vllm_secure_launch.config.policy import Policy
from vllm_secure_launch.findings import Finding, apply_waivers, blocking
from vllm_secure_launch.host.facts import HostFacts
from vllm_secure_launch.plan.build import guard_allowed, network_env
from vllm_secure_launch.plan.model import ExpectedListeners, Plan, Supervision
from vllm_secure_launch.rules import cluster_rules
from vllm_secure_launch.rules import ray_start_rules as R
from vllm_secure_launch.surface import ray_start as S

ENV_GUARD = "VSL_TCPSTORE_ALLOWED"  # guard/install.py ENV_ALLOWED
# Set for every Ray process of the node (docs/ray.md, "Environment").
# RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0: a stop signal reaches the whole tree at once (the
# process group), so the GCS is gone before `ray start`'s SIGTERM handler could drain the node
# through it; with the default the handler waits out the drain timeout (_private/node.py:643).
FIXED_ENV = {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
             "RAY_enable_metrics_collection": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
REMOVED = ("RAY_AUTH_TOKEN", "RAY_ADDRESS")
# The options the launcher writes itself (the user's value is judged, then rewritten).
OWN = ("--head", "--address", "--node-ip-address", "--block", "--disable-usage-stats",
       "--include-dashboard", "--dashboard-host", "--temp-dir", "--min-worker-port",
       "--max-worker-port")


@dataclass(frozen=True)
class RayHost:
    """What the Ray planner knows about this machine (raycluster/host.py reads it)."""

    host: HostFacts
    ray_command: str = "ray"
    ray_version: str | None = None
    ray_client: bool = False  # grpcio importable: Ray starts its Client server on the head
    token: R.TokenFacts | None = None
    temp_parent_private: bool | None = None
    firewall_unusable: str | None = None
    head_addrs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def run_dir(host: HostFacts) -> str:
    """The launcher's private directory for this node (0700, made before Ray starts)."""
    return os.path.join(host.runtime_dir, f"vsl-ray-{host.uid}-{host.pid}")


def token_path(environ: Mapping[str, str], policy: Policy) -> str:
    """--ray-token-file (VSL_RAY_TOKEN_FILE, [ray]) wins over Ray's RAY_AUTH_TOKEN_PATH."""
    return policy.ray_token_file or environ.get("RAY_AUTH_TOKEN_PATH", "")


def _internal(policy: Policy, host: HostFacts) -> tuple[InternalNet | None, ResolveError | None]:
    try:
        return resolve_internal(policy.internal_iface, policy.internal_cidr, policy.internal_ip,
                                host.interfaces), None
    except ResolveError as exc:
        return None, exc


def _slurm(environ: Mapping[str, str], policy: Policy, facts: RayHost,
           internal: InternalNet | None) -> tuple[bool | None, str | None, list[Finding]]:
    """(head?, head IP, findings) from the allocation, as for the mp backend; (None, None,
    findings) outside one."""
    alloc, found = derive.read_allocation(environ, policy, "cpu")
    if alloc is None or blocking(found) or len(alloc.nodes) < 2:
        return None, None, list(found)
    if any(t > 1 for t in alloc.tasks) or alloc.local_id > 0:
        return None, None, [*found, cluster_rules.TASKS_PER_NODE.finding(
            "SLURM_STEP_TASKS_PER_NODE", f"the step runs {max(alloc.tasks, default=1)} tasks "
            "on a node; Ray needs one node per task")]
    if internal is None or internal.how == "loopback-default":
        return None, None, [*found, cluster_rules.NEEDS_INTERNAL.finding(
            "internal network", f"{len(alloc.nodes)} nodes, no internal network setting")]
    ip, why = derive._head_address(alloc, internal, facts.head_addrs)  # noqa: SLF001 - shared
    if ip is None:
        return None, None, [*found, cluster_rules.HEAD_UNRESOLVED.finding(alloc.head, why)]
    role = "head" if alloc.rank == 0 else f"worker (rank {alloc.rank})"
    return alloc.rank == 0, ip, [*found, cluster_rules.DERIVED.finding(
        "ray start", f"{alloc.source}: {len(alloc.nodes)} nodes, this node is the {role}; "
        f"head {alloc.head} = {ip}")]


def _context(args: S.RayArgs, argv_error: str | None, environ: Mapping[str, str],
             policy: Policy, facts: RayHost) -> tuple[R.RayContext, str | None]:
    internal, err = _internal(policy, facts.host)
    head_flag = args.has("--head")
    derived_head, head_ip, slurm = _slurm(environ, policy, facts, internal)
    extra = list(slurm)
    if derived_head is not None and args.has("--head") != derived_head and (
            args.has("--head") or args.has("--address")):
        extra.append(cluster_rules.CONTRADICTS.finding(
            "--head" if args.has("--head") else "--address",
            "the allocation makes this node the " + ("head" if derived_head else "a worker")))
    head = head_flag if derived_head is None else derived_head
    local = frozenset(a.ip for addrs in facts.host.interfaces.values() for a in addrs)
    ctx = R.RayContext(
        args=args, environ=environ, policy=policy, internal=internal, internal_error=err,
        local_ips=local, head=head, token=facts.token, ray_version=facts.ray_version,
        firewall_unusable=facts.firewall_unusable,
        temp_parent_private=facts.temp_parent_private, argv_error=argv_error,
        derived_head=head_ip if derived_head is False else None, ray_client=facts.ray_client,
        planned_temp_dir=os.path.join(run_dir(facts.host), "ray"),
        extra=tuple(extra))
    return ctx, head_ip


def _ray_argv(ctx: R.RayContext, facts: RayHost, head_ip: str | None,
              temp_dir: str) -> list[str]:
    a = ctx.args
    assert ctx.internal is not None  # noqa: S101 - only called for a start
    ports = R.final_ports(ctx)
    out = a.without(*OWN, *(p.option for p in S.PORTS if not p.env))
    pins: list[tuple[str, str | None]] = []
    if ctx.head:
        pins.append(("--head", None))
    else:
        # Under Slurm every node gets the same argv: the GCS port the workers join is the one
        # of a written --address, else a --port given for the head (Ray refuses --port itself
        # on a worker, so it is dropped), else the pinned default.
        from vllm_secure_launch.rules.ray_live_rules import split_hostport

        given = a.get("--port") or ""
        gcs = (split_hostport(a.get("--address") or "")[1]
               or (given if given.isascii() and given.isdigit() else S.PORTS[0].default))
        address = a.get("--address") if head_ip is None else f"{head_ip}:{gcs}"
        pins.append(("--address", address))
    pins.append(("--node-ip-address", ctx.internal.ip))
    pins += [(opt, str(port)) for opt, port in ports.items() if opt.startswith("--")]
    if not a.has("--worker-port-list"):
        (lo, hi), = R.worker_ports(ctx)
        pins += [("--min-worker-port", str(lo)), ("--max-worker-port", str(hi))]
    if ctx.head:
        dashboard = bool(S.truthy(a.get("--include-dashboard")))
        pins.append(("--include-dashboard", "true" if dashboard else "false"))
        if dashboard:
            pins.append(("--dashboard-host", "127.0.0.1"))
    pins += [("--disable-usage-stats", None), ("--temp-dir", temp_dir), ("--block", None)]
    return [facts.ray_command, "start", *S.RayArgs((*out.options, *pins)).argv()]


def _env(ctx: R.RayContext, token: str, policy: Policy) -> dict[str, str]:
    env = {**FIXED_ENV, "RAY_AUTH_TOKEN_PATH": token}
    if ctx.internal is not None:
        # Ray's workers inherit the node's environment: vLLM, gloo, NCCL and TensorPipe in them
        # pick the internal interface exactly as under `serve` (plan/build.py).
        env.update(network_env(ctx.internal, policy.accelerator))
    for opt, port in R.final_ports(ctx).items():
        if not opt.startswith("--"):
            env[opt] = str(port)
    if policy.tcpstore_guard and ctx.internal is not None:
        env[ENV_GUARD] = ",".join(guard_allowed(ctx.internal, policy))
    return env


def _confined(ctx: R.RayContext) -> tuple[tuple[int, int], ...]:
    """The ports whose listeners bind the wildcard regardless (docs/ray.md table)."""
    ports = R.final_ports(ctx)
    wild = [(ports[p.option], ports[p.option]) for p in R.port_options(ctx.head, ctx.ray_client)
            if p.binds == S.WILDCARD]
    return tuple(sorted(wild + list(R.worker_ports(ctx))))


def build(ray_argv: Sequence[str], environ: Mapping[str, str], policy: Policy,
          facts: RayHost) -> Plan:
    """The plan for `ray start RAY_ARGV` on this node (decision, exact argv and env)."""
    try:
        args, argv_error = S.parse(list(ray_argv)), None
    except S.RayArgvError as exc:
        args, argv_error = S.RayArgs(), str(exc)
    ctx, head_ip = _context(args, argv_error, environ, policy, facts)
    findings = R.evaluate(ctx)
    private = run_dir(facts.host)
    temp_dir = args.get("--temp-dir") or os.path.join(private, "ray")
    token = token_path(environ, policy)
    start = not blocking(apply_waivers(findings, policy.waivers)) and ctx.internal is not None
    argv: tuple[str, ...] = ()
    env_set: dict[str, str] = {}
    confined: tuple[tuple[int, int], ...] = ()
    if start:
        argv = tuple(_ray_argv(ctx, facts, head_ip, temp_dir))
        env_set = _env(ctx, token, policy)
        confined = _confined(ctx) if ctx.firewall_unusable is None and policy.firewall != "off" \
            else ()
        findings += [R.PINNED.finding("ports", _pins_text(ctx)),
                     R.HARDENED.finding("ray start", _summary(ctx, argv))]
    findings = apply_waivers(findings, policy.waivers)
    decision = "refuse" if blocking(findings) or not start else "start"
    env = {k: v for k, v in environ.items() if k not in REMOVED}
    env.update(env_set)
    ip = ctx.internal.ip if ctx.internal else None
    expected = ExpectedListeners(ApiEndpoint(None, None, headless=True),
                                 (ip,) if ip else (), policy.allow_loopback,
                                 confined_ports=confined)
    return Plan(
        decision=decision, argv=argv, env=env, env_set=env_set,
        env_removed=tuple(k for k in REMOVED if k in environ), secret_env=frozenset(),
        api=expected.api, expected=expected, findings=tuple(findings),
        supervision=Supervision(
            ready_timeout=min(policy.ready_timeout, 600.0), audit=policy.audit,
            audit_interval=policy.audit_interval, stop_grace=policy.stop_grace,
            hang_timeout=0.0, log_format=policy.log_format, report_path=policy.report or None),
        rpc_dir=private if not args.has("--temp-dir") else None,
        internal_ip=ip, internal_iface=ctx.internal.iface if ctx.internal else None,
        accelerator="cpu", facts=_facts(ctx, token, temp_dir, confined, start))


def _ready_ports(ctx: R.RayContext) -> list[int]:
    """Listening in the node's tree = the node is up: the GCS (head) and the raylet."""
    ports = R.final_ports(ctx)
    return [ports[o] for o in ("--port", "--node-manager-port") if o in ports]


def _facts(ctx: R.RayContext, token: str, temp_dir: str,
           confined: tuple[tuple[int, int], ...], start: bool) -> dict[str, Any]:
    t = ctx.token
    ray: dict[str, Any] = {"role": "head" if ctx.head else "worker", "version": ctx.ray_version,
           "token_file": token, "token_create": bool(ctx.head and t is not None and not t.exists
                                                     and t.error is None),
           "temp_dir": temp_dir}
    if start:
        ray.update({"ports": R.final_ports(ctx), "worker_ports": [
            f"{lo}-{hi}" for lo, hi in R.worker_ports(ctx)], "ready_ports": _ready_ports(ctx),
            "kernel_confined": bool(confined)})
    # `ray start` writes TEMP/ray_current_cluster once the node has started
    # (scripts/scripts.py:1258, after "Ray runtime started."): the launcher's ready point.
    ready_paths = [os.path.join(temp_dir, "ray_current_cluster")] if start else []
    return {"ray": ray, "ready_ports": ray.get("ready_ports", []), "ready_paths": ready_paths,
            "internal_network": ctx.internal.network if ctx.internal else None,
            "waivers": dict(ctx.policy.waivers),
            "policy": ctx.policy.source}


def _pins_text(ctx: R.RayContext) -> str:
    ports = ", ".join(f"{o.lstrip('-')}={p}" for o, p in R.final_ports(ctx).items())
    workers = ", ".join(f"{lo}-{hi}" for lo, hi in R.worker_ports(ctx))
    return f"{ports}; worker ports {workers}"


def _summary(ctx: R.RayContext, argv: tuple[str, ...]) -> str:
    role = "head" if ctx.head else "worker"
    ip = ctx.internal.ip if ctx.internal else "?"
    return (f"{role} on {ip}; RAY_AUTH_MODE=token; dashboard "
            f"{'127.0.0.1 only' if '--dashboard-host=127.0.0.1' in argv else 'off'}")
