"""CUDA preflight through NVML (nvidia-ml-py), without creating a CUDA context.

NVML is reached only through HostView.nvml_loader, an object with nvidia-ml-py's function
names; tests pass a fake because no GPU exists on the test machine. Every NVML call that can
answer NVML_ERROR_NOT_SUPPORTED is wrapped so an unsupported query skips one check (VSL524)
instead of failing the device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.host.view import HostView
from vllm_secure_launch.preflight.report import GIB, DeviceFacts, PlatformResult
from vllm_secure_launch.preflight.request import PreflightRequest
from vllm_secure_launch.rules.preflight_rules import rule

NVML_ERROR_NOT_SUPPORTED = 3  # nvml.h; used when the binding lacks the constant
NVML_ERROR_NOT_FOUND = 6
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_COMPUTEMODE_PROHIBITED = 2

# dtypes vLLM 0.32 accepts for --dtype that mean bfloat16.
_BF16 = ("bfloat16", "bf16")


@dataclass(frozen=True)
class Gpu:
    """A physical GPU as NVML enumerates it."""

    nvml_index: int
    handle: Any
    uuid: str
    name: str
    bus_id: str
    minor: int | None
    mig_enabled: bool | None


@dataclass(frozen=True)
class Target:
    """One CUDA device vLLM will see: a whole GPU or a MIG instance of one."""

    token: str  # how it was selected (CUDA_VISIBLE_DEVICES entry, or the enumeration index)
    gpu: Gpu
    mig_handle: Any = None
    mig_uuid: str | None = None

    @property
    def uuid(self) -> str:
        return self.mig_uuid or self.gpu.uuid


@dataclass(frozen=True)
class VisibleParse:
    """CUDA_VISIBLE_DEVICES resolved as the CUDA runtime resolves it."""

    targets: tuple[Target, ...]
    findings: tuple[Finding, ...]
    set_: bool  # the variable was present (even empty)


# ---------------------------------------------------------------------------------------------
# NVML access


class _Nvml:
    """Thin wrapper: error classification and string decoding for old bindings (bytes)."""

    def __init__(self, mod: Any):
        self.mod = mod
        self.error_cls: type[BaseException] = getattr(mod, "NVMLError", Exception)
        self.not_supported = getattr(mod, "NVML_ERROR_NOT_SUPPORTED", NVML_ERROR_NOT_SUPPORTED)

    def call(self, name: str, *args: Any) -> Any:
        result = getattr(self.mod, name)(*args)
        return result.decode("utf-8", "replace") if isinstance(result, bytes) else result

    def is_not_supported(self, exc: BaseException) -> bool:
        return getattr(exc, "value", None) == self.not_supported

    def const(self, name: str, default: int) -> int:
        return int(getattr(self.mod, name, default))


def _err_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.replace("\n", " ").strip()


# ---------------------------------------------------------------------------------------------
# Entry point


def check(req: PreflightRequest, host: HostView) -> PlatformResult:
    nvml, failure = _load(host)
    if nvml is None:
        return PlatformResult(findings=(failure,) if failure else ())
    try:
        return _check_loaded(req, host, nvml)
    finally:
        try:
            nvml.call("nvmlShutdown")
        except Exception:  # noqa: BLE001 - shutdown failure changes no verdict
            pass


def _load(host: HostView) -> tuple[_Nvml | None, Finding | None]:
    r = rule("VSL510")
    nodes = _missing_control_nodes(host)
    hint = f" Missing device nodes: {', '.join(nodes)}." if nodes else ""
    try:
        mod = host.nvml_loader()
    except ImportError as exc:
        return None, r.finding(
            "nvml", f"NVML not found: the nvidia-ml-py module (pynvml) cannot be imported "
            f"({_err_text(exc)}).{hint}")
    nvml = _Nvml(mod)
    try:
        nvml.call("nvmlInit")
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, r.finding(
            "nvml", f"NVML not found or not usable: nvmlInit failed ({_err_text(exc)}); "
            f"no NVIDIA driver is loaded for this process.{hint}")
    return nvml, None


def _missing_control_nodes(host: HostView) -> list[str]:
    return [host.dev(n) for n in ("nvidiactl", "nvidia-uvm")
            if not os.path.exists(host.dev(n))]


def _check_loaded(req: PreflightRequest, host: HostView, nvml: _Nvml) -> PlatformResult:
    findings: list[Finding] = []
    driver = _try(nvml, "nvmlSystemGetDriverVersion")
    cuda_ver = _try(nvml, "nvmlSystemGetCudaDriverVersion")
    try:
        gpus = _enumerate(nvml)
    except Exception as exc:  # noqa: BLE001 - enumeration failure = no usable GPU
        return PlatformResult(findings=(rule("VSL526").finding(
            "nvml", f"enumerating GPUs failed: {_err_text(exc)}"),))
    environ = req.environ
    parsed = parse_visible_devices(environ.get("CUDA_VISIBLE_DEVICES"), gpus, nvml)
    findings.extend(parsed.findings)
    targets = list(parsed.targets)
    if req.device_ids is not None:
        targets, id_findings = apply_device_ids(req.device_ids, targets, gpus, parsed.set_)
        findings.extend(id_findings)
    needed = min(req.local_devices, 1) if req.placed_by_ray else req.local_devices
    if req.placed_by_ray:
        findings.append(rule("VSL504").finding(
            "devices", f"Ray places the workers; this node is checked for at least one device "
            f"(the layout needs {req.local_devices} in total: {req.devices_basis})"))
    if needed and parsed.set_ and environ.get("CUDA_VISIBLE_DEVICES", "").strip() == "":
        findings.append(rule("VSL513").finding(
            "CUDA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES is set but empty: no GPU is visible"))
    elif len(targets) < needed:
        findings.append(rule("VSL515").finding(
            "devices", f"{needed} CUDA device(s) needed ({req.devices_basis}), "
            f"{len(targets)} usable: " + (", ".join(t.uuid for t in targets) or "none")))
    used = targets[:needed]
    devices: list[DeviceFacts] = []
    for ordinal, target in enumerate(used):
        facts, dev_findings = _check_device(req, host, nvml, ordinal, target)
        devices.append(DeviceFacts(f"cuda:{ordinal}", target.gpu.name, facts))
        findings.extend(dev_findings)
    findings.extend(_order_findings(environ, gpus))
    env_updates = _env_updates(environ, parsed)
    findings.append(rule("VSL527").finding(
        "cuda", f"driver {driver or 'unknown'}"
        + (f", CUDA {cuda_ver // 1000}.{(cuda_ver % 1000) // 10}" if isinstance(cuda_ver, int)
           else "")
        + f"; {len(gpus)} GPU(s) on the host, {len(targets)} visible, {len(used)} checked "
        f"for {req.devices_basis}"))
    return PlatformResult(tuple(findings), tuple(devices), env_updates)


def _try(nvml: _Nvml, name: str, *args: Any) -> Any:
    try:
        return nvml.call(name, *args)
    except Exception:  # noqa: BLE001 - informational value only
        return None


def _enumerate(nvml: _Nvml) -> list[Gpu]:
    gpus = []
    for i in range(int(nvml.call("nvmlDeviceGetCount"))):
        h = nvml.call("nvmlDeviceGetHandleByIndex", i)
        pci = _try(nvml, "nvmlDeviceGetPciInfo", h)
        bus = getattr(pci, "busId", b"") if pci is not None else b""
        bus = bus.decode() if isinstance(bus, bytes) else str(bus)
        mig = _try(nvml, "nvmlDeviceGetMigMode", h)
        gpus.append(Gpu(
            nvml_index=i, handle=h, uuid=str(nvml.call("nvmlDeviceGetUUID", h)),
            name=str(_try(nvml, "nvmlDeviceGetName", h) or "NVIDIA GPU"), bus_id=bus,
            minor=_try(nvml, "nvmlDeviceGetMinorNumber", h),
            mig_enabled=None if mig is None else
            mig[0] == nvml.const("NVML_DEVICE_MIG_ENABLE", NVML_DEVICE_MIG_ENABLE),
        ))
    # CUDA ordinals follow PCI bus order under CUDA_DEVICE_ORDER=PCI_BUS_ID, which the plan
    # sets (env_updates); NVML's own index order is not guaranteed stable across reboots.
    return sorted(gpus, key=lambda g: (g.bus_id.lower() or "~", g.nvml_index))


# ---------------------------------------------------------------------------------------------
# CUDA_VISIBLE_DEVICES and --device-ids


def parse_visible_devices(value: str | None, gpus: Sequence[Gpu], nvml: _Nvml | None
                          ) -> VisibleParse:
    """Resolve CUDA_VISIBLE_DEVICES like the CUDA runtime: unset = all, empty = none, entries
    are indices, GPU-<uuid> (unique prefix allowed) or MIG-<uuid>; the first entry that does not
    resolve ends the list (CUDA ignores it and everything after it)."""
    if value is None:
        return VisibleParse(tuple(Target(str(i), g) for i, g in enumerate(gpus)), (), False)
    findings: list[Finding] = []
    targets: list[Target] = []
    tokens = value.split(",")
    if value.strip() == "":
        return VisibleParse((), (), True)
    r_bad, r_dup = rule("VSL511"), rule("VSL512")
    seen: dict[str, str] = {}
    for pos, raw in enumerate(tokens):
        if raw != raw.strip():
            # CUDA documents no whitespace handling; refuse rather than guess.
            target, why = None, "contains spaces"
        else:
            target, why = _resolve_token(raw, gpus, nvml)
        if target is None:
            dropped = tokens[pos:]
            findings.append(r_bad.finding(
                "CUDA_VISIBLE_DEVICES",
                f"entry {pos + 1} {raw!r} {why}; CUDA stops at the first bad entry, so "
                f"{', '.join(repr(t) for t in dropped)} would be ignored and only "
                f"{len(targets)} device(s) would be visible"))
            break
        if target.uuid in seen:
            findings.append(r_dup.finding(
                "CUDA_VISIBLE_DEVICES",
                f"entry {raw!r} names the same device as {seen[target.uuid]!r} ({target.uuid})"))
            continue
        seen[target.uuid] = raw
        targets.append(target)
    return VisibleParse(tuple(targets), tuple(findings), True)


def _resolve_token(token: str, gpus: Sequence[Gpu], nvml: _Nvml | None
                   ) -> tuple[Target | None, str]:
    if token == "":
        return None, "is empty"
    if token.isascii() and token.isdigit():
        idx = int(token)
        if idx < len(gpus):
            return Target(token, gpus[idx]), ""
        return None, f"is out of range (the host has {len(gpus)} GPU(s))"
    if token.startswith("GPU-"):
        matches = [g for g in gpus if g.uuid.lower().startswith(token.lower())]
        if len(matches) == 1:
            return Target(token, matches[0]), ""
        return None, ("matches no GPU UUID" if not matches
                      else f"is an ambiguous UUID prefix ({len(matches)} GPUs match)")
    if token.startswith("MIG-"):
        for gpu in gpus:
            for mig_handle, mig_uuid in _mig_instances(nvml, gpu):
                if mig_uuid.lower() == token.lower():
                    return Target(token, gpu, mig_handle, mig_uuid), ""
        return None, "matches no MIG instance UUID"
    return None, "is not an index, GPU-<uuid> or MIG-<uuid>"


def _mig_instances(nvml: _Nvml | None, gpu: Gpu) -> list[tuple[Any, str]]:
    if nvml is None or not gpu.mig_enabled:
        return []
    out = []
    count = _try(nvml, "nvmlDeviceGetMaxMigDeviceCount", gpu.handle) or 0
    for i in range(int(count)):
        h = _try(nvml, "nvmlDeviceGetMigDeviceHandleByIndex", gpu.handle, i)
        if h is None:  # NVML_ERROR_NOT_FOUND: an empty slot
            continue
        uuid = _try(nvml, "nvmlDeviceGetUUID", h)
        if uuid:
            out.append((h, str(uuid)))
    return out


def apply_device_ids(ids: Sequence[str], visible: Sequence[Target], gpus: Sequence[Gpu],
                     cvd_set: bool) -> tuple[list[Target], list[Finding]]:
    """vLLM 0.32 --device-ids: all integers (indices into the CUDA_VISIBLE_DEVICES list when it
    is set, else physical indices) or all UUIDs; no duplicates (EngineArgs._resolve_device_ids)."""
    r = rule("VSL514")
    if len(set(ids)) != len(ids):
        return [], [r.finding("--device-ids", f"--device-ids {','.join(ids)} has duplicates")]
    ints = [i for i in ids if i.isascii() and i.isdigit()]
    if ints and len(ints) != len(ids):
        return [], [r.finding("--device-ids", "--device-ids mixes indices and UUIDs")]
    out: list[Target] = []
    if ints:
        pool = list(visible) if cvd_set else [Target(str(i), g) for i, g in enumerate(gpus)]
        for i in ints:
            if int(i) >= len(pool):
                return [], [r.finding("--device-ids", f"--device-ids index {i} is out of range "
                                      f"({len(pool)} device(s) visible)")]
            out.append(Target(i, pool[int(i)].gpu, pool[int(i)].mig_handle,
                              pool[int(i)].mig_uuid))
        return out, []
    for token in ids:
        match = [g for g in gpus if g.uuid.lower() == token.lower()]
        if not match:
            return [], [r.finding("--device-ids", f"--device-ids {token!r} matches no GPU UUID")]
        out.append(Target(token, match[0]))
    return out, []


# ---------------------------------------------------------------------------------------------
# Per-device checks


def _check_device(req: PreflightRequest, host: HostView, nvml: _Nvml, ordinal: int,
                  target: Target) -> tuple[dict[str, Any], list[Finding]]:
    gpu = target.gpu
    subject = f"cuda:{ordinal} {target.uuid}"
    findings: list[Finding] = []
    facts: dict[str, Any] = {"uuid": target.uuid, "pci_bus_id": gpu.bus_id,
                             "nvml_index": gpu.nvml_index, "selected_by": target.token}
    if target.mig_uuid:
        facts["mig_parent_uuid"] = gpu.uuid
    mem_handle = target.mig_handle if target.mig_handle is not None else gpu.handle

    def query(name: str, *args: Any, check_name: str) -> Any:
        try:
            return nvml.call(name, *args)
        except nvml.error_cls as exc:
            if nvml.is_not_supported(exc):
                findings.append(rule("VSL524").finding(
                    subject, f"{check_name} not checked: NVML {name} is not supported"))
            else:
                findings.append(rule("VSL526").finding(
                    subject, f"{check_name}: NVML {name} failed ({_err_text(exc)})"))
            return None

    _memory(req, nvml, subject, mem_handle, facts, findings, query)
    _health(nvml, subject, gpu.handle, facts, findings, query)
    _capability(req, subject, gpu.handle, facts, findings, query)
    if gpu.mig_enabled and target.mig_uuid is None:
        findings.append(rule("VSL519").finding(
            subject, "MIG mode is enabled on this GPU but it is selected as a whole GPU; CUDA "
            "cannot run on it (select one of its MIG-<uuid> instances)"))
    facts["mig_mode"] = None if gpu.mig_enabled is None else bool(gpu.mig_enabled)
    mode = query("nvmlDeviceGetComputeMode", gpu.handle, check_name="compute mode")
    if mode is not None:
        facts["compute_mode"] = int(mode)
        if int(mode) == nvml.const("NVML_COMPUTEMODE_PROHIBITED", NVML_COMPUTEMODE_PROHIBITED):
            findings.append(rule("VSL525").finding(subject, "compute mode is PROHIBITED"))
    _nodes(host, subject, gpu, facts, findings, mig=target.mig_uuid is not None)
    return facts, findings


QueryFn = Callable[..., Any]


def _memory(req: PreflightRequest, nvml: _Nvml, subject: str, handle: Any,
            facts: dict[str, Any], findings: list[Finding], query: QueryFn) -> None:
    info = query("nvmlDeviceGetMemoryInfo", handle, check_name="free memory")
    if info is None:
        return
    total, free = int(info.total), int(info.free)
    need = int(-(-total * req.memory_fraction // 1))  # ceil, as vLLM's request_memory does
    facts.update(memory_total_bytes=total, memory_free_bytes=free, memory_needed_bytes=need)
    if free >= need:
        return
    holders = _holders(nvml, handle)
    facts["processes"] = holders
    named = ", ".join(
        f"pid {p['pid']} {p['name']}" + (f" ({p['used_bytes'] / GIB:.1f} GiB)"
                                         if p["used_bytes"] is not None else "")
        for p in holders) or "no compute process visible to NVML (other container or MPS?)"
    findings.append(rule("VSL516").finding(
        subject, f"free {free / GIB:.1f} GiB of {total / GIB:.1f} GiB is less than "
        f"{req.memory_fraction:g} × total = {need / GIB:.1f} GiB "
        f"({req.memory_fraction_source}); memory held by: {named}"))


def _holders(nvml: _Nvml, handle: Any) -> list[dict[str, Any]]:
    procs = _try(nvml, "nvmlDeviceGetComputeRunningProcesses", handle) or []
    out = []
    for p in procs:
        pid = int(getattr(p, "pid", -1))
        used = getattr(p, "usedGpuMemory", None)
        out.append({"pid": pid, "name": _process_name(nvml, pid),
                    "used_bytes": int(used) if isinstance(used, int) else None})
    return out


def _process_name(nvml: _Nvml, pid: int) -> str:
    try:
        import psutil  # a launcher dependency; imported where needed to keep import cheap

        return str(psutil.Process(pid).name())
    except Exception:  # noqa: BLE001 - the pid may live in another PID namespace
        name = _try(nvml, "nvmlSystemGetProcessName", pid)
        return os.path.basename(str(name)) if name else "?"


def _health(nvml: _Nvml, subject: str, handle: Any, facts: dict[str, Any],
            findings: list[Finding], query: QueryFn) -> None:
    ecc = query("nvmlDeviceGetTotalEccErrors", handle,
                nvml.const("NVML_MEMORY_ERROR_TYPE_UNCORRECTED",
                           NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
                nvml.const("NVML_VOLATILE_ECC", NVML_VOLATILE_ECC),
                check_name="uncorrectable ECC errors")
    if ecc is not None:
        facts["ecc_uncorrected_volatile"] = int(ecc)
        if int(ecc) > 0:
            findings.append(rule("VSL517").finding(
                subject, f"{int(ecc)} uncorrectable ECC error(s) since the driver loaded"))
    pending = query("nvmlDeviceGetRetiredPagesPendingStatus", handle,
                    check_name="pending page retirement")
    if pending is not None:
        facts["retired_pages_pending"] = bool(pending)
        if pending:
            findings.append(rule("VSL518").finding(
                subject, "page retirement is pending: the GPU must be reset"))
    remap = query("nvmlDeviceGetRemappedRows", handle, check_name="row remapping")
    if remap is not None:
        corr, unc, is_pending, failed = (int(x) for x in tuple(remap)[:4])
        facts.update(remapped_rows_correctable=corr, remapped_rows_uncorrectable=unc,
                     remap_pending=bool(is_pending), remap_failure=bool(failed))
        if failed:
            findings.append(rule("VSL518").finding(
                subject, "row remapping failed: the GPU's memory needs service"))
        elif is_pending:
            findings.append(rule("VSL518").finding(
                subject, "row remapping is pending: the GPU must be reset"))


def _capability(req: PreflightRequest, subject: str, handle: Any, facts: dict[str, Any],
                findings: list[Finding], query: QueryFn) -> None:
    cc = query("nvmlDeviceGetCudaComputeCapability", handle, check_name="compute capability")
    if cc is None:
        return
    major, minor = int(cc[0]), int(cc[1])
    facts["compute_capability"] = f"{major}.{minor}"
    if (major, minor) < (7, 0):
        findings.append(rule("VSL521").finding(
            subject, f"compute capability {major}.{minor} is below 7.0"))
    elif req.dtype in _BF16 and (major, minor) < (8, 0):
        findings.append(rule("VSL520").finding(
            subject, f"--dtype {req.dtype} needs compute capability 8.0+, this GPU has "
            f"{major}.{minor}"))


def _nodes(host: HostView, subject: str, gpu: Gpu, facts: dict[str, Any],
           findings: list[Finding], mig: bool) -> None:
    wanted = ["nvidiactl", "nvidia-uvm"]
    if gpu.minor is not None:
        wanted.append(f"nvidia{int(gpu.minor)}")  # /dev/nvidiaN, N = NVML minor number
    if mig:
        wanted.append("nvidia-caps")  # MIG instances are opened through capability nodes
    missing = [host.dev(n) for n in wanted if not os.path.exists(host.dev(n))]
    facts["device_nodes"] = [host.dev(n) for n in wanted]
    if missing:
        findings.append(rule("VSL522").finding(subject, "missing: " + ", ".join(missing)))


# ---------------------------------------------------------------------------------------------
# Environment for vLLM


def _order_findings(environ: Any, gpus: Sequence[Gpu]) -> list[Finding]:
    if environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID":
        return []
    mixed = len({g.name for g in gpus}) > 1
    return [rule("VSL523").finding(
        "CUDA_DEVICE_ORDER",
        f"CUDA_DEVICE_ORDER is {environ.get('CUDA_DEVICE_ORDER', 'unset')!r}"
        + ("; the GPUs are of mixed models, so CUDA's fastest-first order differs from NVML's"
           if mixed else "") + "; the launcher sets PCI_BUS_ID",
        severity=Severity.WARNING if mixed else Severity.INFO)]


def _env_updates(environ: Any, parsed: VisibleParse) -> dict[str, str]:
    updates = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    # Normalise a valid index list to UUIDs: the same devices in the same order, immune to
    # enumeration-order changes (reboots, MPS). Invalid lists are blocked, never rewritten.
    if parsed.set_ and parsed.targets and not parsed.findings:
        raw = environ.get("CUDA_VISIBLE_DEVICES", "")
        if any(tok.strip().isdigit() for tok in raw.split(",")):
            updates["CUDA_VISIBLE_DEVICES"] = ",".join(t.uuid for t in parsed.targets)
    return updates
