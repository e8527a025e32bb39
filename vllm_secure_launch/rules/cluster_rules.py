"""VSL3xx — multi-node shapes: the addresses vLLM, torch, gloo, NCCL/HCCL and KV connectors use
between nodes must all lie in the one internal network."""

from __future__ import annotations

from typing import Any, Iterator

from vllm_secure_launch.addresses import LOOPBACK, PRIVATE, WILDCARD, classify
from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.rules.context import Context
from vllm_secure_launch.rules.network_rules import ADDRESS_ELSEWHERE
from vllm_secure_launch.rules.registry import Rule

MULTINODE_PINNED = Rule(
    "VSL301", "multi-node shape: internal addresses are pinned", Severity.INFO,
    "nothing to do; run the launcher with the same internal-network setting on every node",
)
RAY_DAEMONS = Rule(
    "VSL302", "Ray's own daemons are started outside the launcher", Severity.WARNING,
    "start every Ray node with `vllm-secure-launch ray start` (token auth, internal address, "
    "pinned ports, dashboard off, its own audit and kernel firewall); this launcher checks the "
    "cluster before vLLM joins it (VSL730-VSL736), but its socket audit covers only vLLM's "
    "process tree",
)
FOLLOWER_NO_HEAD = Rule(
    "VSL303", "a follower node does not name the head's address", Severity.ERROR,
    "give --master-addr (with --nnodes) or --data-parallel-address (with --headless) the head "
    "node's internal IP",
)

# The Slurm / node-list derivation (cluster/derive.py) reports with these; they are findings of
# the plan (extra_findings), so a refusal shows in --dry-run and nothing starts on any node.
DERIVED = Rule(
    "VSL320", "multi-node options derived from the allocation", Severity.INFO,
    "nothing to do; `--dry-run` shows the derived options; write one yourself to override it",
)
TASKS_PER_NODE = Rule(
    "VSL321", "more than one launcher task on a node", Severity.ERROR,
    "start exactly one task per node: `srun --ntasks-per-node=1` (or `#SBATCH "
    "--ntasks-per-node=1`); vLLM starts its own workers for the node's devices",
)
CONTRADICTS = Rule(
    "VSL322", "an explicit option contradicts the allocation", Severity.ERROR,
    "remove the option and let the launcher derive it, or fix it to match this node's place "
    "in the allocation",
)
HEAD_UNRESOLVED = Rule(
    "VSL323", "the head node's name does not resolve into the internal network", Severity.ERROR,
    "make the first node's name resolve to its internal address on every node (/etc/hosts or "
    "DNS), or give --master-addr/--data-parallel-address the head's internal IP",
)
LAYOUT = Rule(
    "VSL324", "the parallel layout does not split over the allocated nodes", Severity.ERROR,
    "make tensor x pipeline parallel a multiple of the node count that fits each node's "
    "devices, use --data-parallel-size a multiple of the node count, or allocate fewer nodes",
)
ALLOCATION = Rule(
    "VSL325", "the allocation cannot be read", Severity.ERROR,
    "run the launcher inside an srun step (Slurm), or give --node-list and --node-rank "
    "(VSL_NODE_LIST, VSL_NODE_RANK); see docs/multinode.md",
)
NEEDS_INTERNAL = Rule(
    "VSL326", "a multi-node allocation without an internal network setting", Severity.ERROR,
    "give --internal-cidr (the same on every node) so each node pins its own internal address",
)

RULES = (MULTINODE_PINNED, RAY_DAEMONS, FOLLOWER_NO_HEAD)
# Judged by the multi-node derivation (cluster/derive.py) before planning, not by the planner's
# checks: listed as a catalog (rules/catalogs.py) and tested in tests/test_cluster*.py.
DERIVATION_RULES = (DERIVED, TASKS_PER_NODE, CONTRADICTS, HEAD_UNRESOLVED, LAYOUT, ALLOCATION,
                    NEEDS_INTERNAL)

# Environment variables that name an address or interface for internal traffic.
ENV_ADDRS = ("VLLM_HOST_IP", "HCCL_IF_IP", "VLLM_NIXL_SIDE_CHANNEL_HOST",
             "VLLM_P2P_SIDE_CHANNEL_HOST", "VLLM_EC_SIDE_CHANNEL_HOST", "MC_TCP_BIND_ADDRESS",
             "RAY_NODE_IP_ADDRESS", "RAY_OVERRIDE_NODE_IP_ADDRESS", "MASTER_ADDR")
ENV_IFACES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "TP_SOCKET_IFNAME",
              "HCCL_SOCKET_IFNAME")
HOST_KEYS = ("host", "host_ip", "proxy_ip", "control_host", "kv_ip", "ec_ip",
             "bootstrap_server_address")


def is_follower(ctx: Context) -> bool:
    return ctx.int_arg("node_rank", 0) > 0 or ctx.bool_arg("headless") or (
        ctx.int_arg("data_parallel_start_rank", 0) > 0)


def _addr_ok(ctx: Context, text: str) -> tuple[bool, str]:
    """Is `text` (an address a user wrote) inside the internal network? -> (ok, class)."""
    cls = classify(text)
    if cls == WILDCARD:
        return False, "a wildcard"
    if cls == LOOPBACK:
        return (not ctx.multinode and ctx.policy.allow_loopback), "loopback"
    internal = ctx.internal
    if internal is None:
        return cls == PRIVATE, cls
    if internal.contains(text.strip("[]")):
        return True, cls
    return False, f"{cls}, outside {internal.network}"


def _host_of(value: str) -> str:
    """The host of "HOST", "HOST:PORT", "[V6]:PORT" or "scheme://HOST:PORT"."""
    rest = value.split("://", 1)[-1]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    if rest.count(":") == 1:  # HOST:PORT (a bare IPv6 address has several colons)
        return rest.rsplit(":", 1)[0]
    return rest


def _hosts_in(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in HOST_KEYS and isinstance(v, str) and v:
                yield f"{where}.{k}", _host_of(v)
            else:
                yield from _hosts_in(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _hosts_in(v, f"{where}[{i}]")


def check_addresses(ctx: Context) -> list[Finding]:
    out = []
    items = []
    for dest, flag in (("data_parallel_address", "--data-parallel-address"),
                       ("master_addr", "--master-addr")):
        if ctx.args.has(dest):
            items.append((flag, str(ctx.args.get(dest))))
    for name in ENV_ADDRS:
        if ctx.environ.get(name):
            items.append((name, ctx.environ[name]))
    for dest in ("kv_transfer_config", "ec_transfer_config"):
        items.extend(_hosts_in(ctx.args.get(dest), "--" + dest.replace("_", "-")))
    for subject, value in items:
        if classify(value) == "hostname":
            out.append(ADDRESS_ELSEWHERE.finding(subject, f"{subject}={value} is a name; the "
                                                          "launcher needs a literal internal IP"))
            continue
        ok, why = _addr_ok(ctx, value)
        if not ok:
            out.append(ADDRESS_ELSEWHERE.finding(subject, f"{subject}={value} is {why}"))
    if ctx.internal is not None:
        for name in ENV_IFACES:
            raw = ctx.environ.get(name)
            if raw and raw.lstrip("=") != ctx.internal.iface:
                out.append(ADDRESS_ELSEWHERE.finding(
                    name, f"{name}={raw} differs from the internal interface {ctx.internal.iface}"))
    return out


def check_shape(ctx: Context) -> list[Finding]:
    if not ctx.multinode:
        return []
    out = []
    if ctx.internal is not None and ctx.explicit_internal:
        out.append(MULTINODE_PINNED.finding(
            "internal network", f"internal traffic pinned to {ctx.internal.ip} "
            f"({ctx.internal.iface}, {ctx.internal.network}) because: " + "; ".join(ctx.multinode)))
    backends = (ctx.args.get("distributed_executor_backend"), ctx.args.get("data_parallel_backend"))
    if "ray" in backends:
        out.append(RAY_DAEMONS.finding("ray", "Ray's GCS, raylets and workers run outside this "
                                              "launcher's process tree and audit"))
    names_head = ctx.args.has("master_addr") or ctx.args.has("data_parallel_address")
    if is_follower(ctx) and not names_head:
        out.append(FOLLOWER_NO_HEAD.finding("--master-addr", "this node is a follower but names "
                                                             "no head address"))
    return out


CHECKS = (check_addresses, check_shape)
