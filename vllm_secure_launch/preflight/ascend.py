"""Ascend NPU preflight: device nodes, ASCEND_RT_VISIBLE_DEVICES, `npu-smi info`, driver, CANN;
on a multi-node layout also the NPU network (preflight/npu_network.py).

Never imports torch_npu or mindspore (they initialise ACL and hold the device). `npu-smi` runs
as a subprocess found on PATH, with a timeout; its failure blocks (a broken driver stack answers
e.g. "dcmi module initialize failed. ret is -8005").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.host.view import HostView
from vllm_secure_launch.preflight import npu_network
from vllm_secure_launch.preflight.report import GIB, DeviceFacts, PlatformResult
from vllm_secure_launch.preflight.request import PreflightRequest
from vllm_secure_launch.rules.preflight_rules import rule

CONTROL_NODES = ("davinci_manager", "devmm_svm", "hisi_hdc")
_CHIP_NODE = re.compile(r"davinci(\d+)")
_VISIBLE = re.compile(r"\d+(?:,\d+)*")
_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")
_PAIR = re.compile(r"(\d+)\s*/\s*(\d+)")
MIB = 1024**2
HEALTH_OK = "OK"
HEALTH_WARN = ("WARNING",)


@dataclass
class Chip:
    npu: int
    chip: int
    name: str
    health: str
    bus_id: str = ""
    mem_used_mb: int | None = None
    mem_total_mb: int | None = None
    logic_id: int | None = None
    processes: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class NpuSmiTable:
    chips: tuple[Chip, ...]
    version: str | None


# ---------------------------------------------------------------------------------------------
# Pure parsers (recorded real outputs in tests/fakes/npu_smi/)


def parse_npu_smi_info(text: str) -> NpuSmiTable:
    """Parse `npu-smi info`: two rows per chip, then a process table."""
    chips: list[Chip] = []
    current: tuple[int, str, str] | None = None
    in_processes = False
    version = None
    m = re.search(r"npu-smi\s+(\S+)", text)
    if m:
        version = m.group(1)
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "Process id" in line:
            in_processes = True
            continue
        if in_processes:
            _process_row(cells, chips)
            continue
        if len(cells) < 3:
            continue
        head = re.fullmatch(r"(\d+)\s+(\S.*)", cells[0])
        if head and re.fullmatch(r"[A-Za-z]+", cells[1]):
            current = (int(head.group(1)), head.group(2).strip(), cells[1])
            continue
        chip_m = re.fullmatch(r"(\d+)(?:\s+\d+)?", cells[0])
        if chip_m and current is not None and _BUS_ID.match(cells[1]):
            pairs = [(int(a), int(b)) for a, b in _PAIR.findall(cells[2])]
            pairs = [p for p in pairs if p[1] > 0]
            used, total = pairs[-1] if pairs else (None, None)
            chips.append(Chip(current[0], int(chip_m.group(1)), current[1], current[2],
                              cells[1], used, total))
    return NpuSmiTable(tuple(chips), version)


def _process_row(cells: list[str], chips: list[Chip]) -> None:
    if len(cells) < 4:
        return
    ids = re.fullmatch(r"(\d+)\s+(\d+)", cells[0])
    if not ids or not cells[1].isdigit():
        return
    npu, chip = int(ids.group(1)), int(ids.group(2))
    mem = re.match(r"\d+", cells[3])
    for c in chips:
        if c.npu == npu and c.chip == chip:
            c.processes.append({"pid": int(cells[1]), "name": cells[2],
                                "used_bytes": int(mem.group(0)) * MIB if mem else None})


def parse_npu_smi_mapping(text: str) -> dict[tuple[int, int], int]:
    """Parse `npu-smi info -m`: NPU ID, Chip ID, Chip Logic ID ("-" for MCU chips), Name."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit() and parts[1].isdigit() and parts[2].isdigit():
            out[(int(parts[0]), int(parts[1]))] = int(parts[2])
    return out


def parse_visible(value: str) -> tuple[list[int] | None, str]:
    """ASCEND_RT_VISIBLE_DEVICES, strictly: ascending integers, commas, no spaces."""
    if value == "":
        return None, "is empty (no NPU would be visible)"
    if not _VISIBLE.fullmatch(value):
        bad = " " in value and "contains spaces" or "is not a comma-separated list of integers"
        return None, bad
    ids = [int(x) for x in value.split(",")]
    if any(b <= a for a, b in zip(ids, ids[1:])):
        return None, "is not strictly ascending (the runtime expects ascending, unique IDs)"
    return ids, ""


def parse_version_info(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


# ---------------------------------------------------------------------------------------------
# Checks


def check(req: PreflightRequest, host: HostView) -> PlatformResult:
    findings: list[Finding] = []
    env_updates: dict[str, str] = {}
    needed = min(req.local_devices, 1) if req.placed_by_ray else req.local_devices
    chip_nodes = sorted(int(m.group(1)) for n in host.list_dev()
                        if (m := _CHIP_NODE.fullmatch(n)))
    findings.extend(_node_findings(host, chip_nodes))
    visible_ids = _visible(req.environ, chip_nodes, findings)
    table = _npu_smi(req, host, findings)
    chips = _select(table, visible_ids, chip_nodes)
    if table is not None or chip_nodes:
        available = len(chips) if table is not None else len(visible_ids or chip_nodes)
        if available < needed:
            findings.append(rule("VSL515").finding(
                "devices", f"{needed} NPU(s) needed ({req.devices_basis}), {available} "
                f"available"))
    devices = []
    for ordinal, chip in enumerate(chips[:needed]):
        facts = _chip_facts(req, chip, findings, ordinal)
        devices.append(DeviceFacts(f"npu:{ordinal}", chip.name, facts))
    if npu_network.is_multinode(req):
        findings.extend(npu_network.check(req, host, [
            c.logic_id if c.logic_id is not None else i for i, c in enumerate(chips[:needed])]))
    driver = _driver(host, findings)
    env_updates.update(_cann(req.environ, host, findings))
    findings.append(rule("VSL551").finding(
        "ascend", f"driver {driver or 'unknown'}; {len(chip_nodes)} /dev/davinciN node(s), "
        f"{len(chips)} NPU chip(s) usable, {len(devices)} checked for {req.devices_basis}"))
    return PlatformResult(tuple(findings), tuple(devices), env_updates)


def _node_findings(host: HostView, chip_nodes: list[int]) -> list[Finding]:
    missing = [host.dev(n) for n in CONTROL_NODES if not os.path.exists(host.dev(n))]
    if not chip_nodes:
        missing.insert(0, host.dev("davinci<N>") + " (no NPU chip node at all)")
    if not missing:
        return []
    return [rule("VSL540").finding("device nodes", "missing: " + ", ".join(missing))]


def _visible(environ: Mapping[str, str], chip_nodes: list[int], findings: list[Finding]
             ) -> list[int] | None:
    raw = environ.get("ASCEND_RT_VISIBLE_DEVICES")
    if raw is None:
        return None
    ids, why = parse_visible(raw)
    if ids is None:
        findings.append(rule("VSL541").finding(
            "ASCEND_RT_VISIBLE_DEVICES", f"ASCEND_RT_VISIBLE_DEVICES={raw!r} {why}"))
        return []
    if chip_nodes and ids[-1] >= len(chip_nodes):
        findings.append(rule("VSL541").finding(
            "ASCEND_RT_VISIBLE_DEVICES",
            f"ASCEND_RT_VISIBLE_DEVICES={raw!r} names logical ID {ids[-1]} but only "
            f"{len(chip_nodes)} NPU chip(s) are present (logical IDs 0..{len(chip_nodes) - 1})"))
        return [i for i in ids if i < len(chip_nodes)]
    return ids


def _npu_smi(req: PreflightRequest, host: HostView, findings: list[Finding]
             ) -> NpuSmiTable | None:
    exe = host.which("npu-smi", req.environ.get("PATH"))
    if exe is None:
        findings.append(rule("VSL542").finding(
            "npu-smi", "npu-smi was not found on PATH; NPU health cannot be verified"))
        return None
    res = host.run([exe, "info"], host.npu_smi_timeout)
    if res.returncode != 0:
        detail = res.error or f"exit status {res.returncode}"
        said = (res.stderr.strip() or res.stdout.strip()).splitlines()
        findings.append(rule("VSL543").finding(
            "npu-smi", f"`npu-smi info` failed: {detail}"
            + (f": {said[-1][:200]}" if said else "")))
        return None
    table = parse_npu_smi_info(res.stdout)
    if not table.chips:
        findings.append(rule("VSL543").finding(
            "npu-smi", "`npu-smi info` printed no NPU table that preflight can read"))
        return None
    mapping_res = host.run([exe, "info", "-m"], host.npu_smi_timeout)
    mapping = parse_npu_smi_mapping(mapping_res.stdout) if mapping_res.returncode == 0 else {}
    for pos, chip in enumerate(table.chips):
        # Without the -m table, logical IDs follow the listing order (one chip per NPU on
        # 910B); with it, the Chip Logic ID is authoritative.
        chip.logic_id = mapping.get((chip.npu, chip.chip), pos if not mapping else None)
    return table


def _select(table: NpuSmiTable | None, visible: list[int] | None, chip_nodes: list[int]
            ) -> list[Chip]:
    if table is None:
        return []
    chips = sorted((c for c in table.chips if c.logic_id is not None),
                   key=lambda c: c.logic_id or 0)
    if visible is None:
        return chips
    by_id = {c.logic_id: c for c in chips}
    return [by_id[i] for i in visible if i in by_id]


def _chip_facts(req: PreflightRequest, chip: Chip, findings: list[Finding], ordinal: int
                ) -> dict[str, Any]:
    subject = f"npu:{ordinal} (NPU {chip.npu} chip {chip.chip}, logical {chip.logic_id})"
    facts: dict[str, Any] = {"npu_id": chip.npu, "chip_id": chip.chip,
                             "logical_id": chip.logic_id, "health": chip.health,
                             "pci_bus_id": chip.bus_id}
    health = chip.health.upper()
    if health != HEALTH_OK:
        sev = Severity.WARNING if health in HEALTH_WARN else Severity.ERROR
        findings.append(rule("VSL544").finding(subject, f"health is {chip.health}",
                                               severity=sev))
    if chip.mem_total_mb:
        total = chip.mem_total_mb * MIB
        free = (chip.mem_total_mb - (chip.mem_used_mb or 0)) * MIB
        need = int(-(-total * req.memory_fraction // 1))
        facts.update(memory_total_bytes=total, memory_free_bytes=free,
                     memory_needed_bytes=need)
        if free < need:
            holders = ", ".join(
                f"pid {p['pid']} {p['name']}" + (f" ({p['used_bytes'] / GIB:.1f} GiB)"
                                                 if p["used_bytes"] else "")
                for p in chip.processes) or "no process listed by npu-smi"
            facts["processes"] = chip.processes
            findings.append(rule("VSL550").finding(
                subject, f"free {free / GIB:.1f} GiB of {total / GIB:.1f} GiB is less than "
                f"{req.memory_fraction:g} × total = {need / GIB:.1f} GiB "
                f"({req.memory_fraction_source}); memory held by: {holders}"))
    return facts


def _driver(host: HostView, findings: list[Finding]) -> str | None:
    path = host.ascend("driver", "version.info")
    text = host.read_text(path)
    if text is None:
        findings.append(rule("VSL545").finding("driver", f"{path} is missing or unreadable"))
        return None
    info = parse_version_info(text)
    version = info.get("package_version") or info.get("Version")
    if not version:
        findings.append(rule("VSL545").finding("driver", f"{path} names no version"))
    return version


def _cann(environ: Mapping[str, str], host: HostView, findings: list[Finding]
          ) -> dict[str, str]:
    home = environ.get("ASCEND_HOME_PATH")
    if home and os.path.isdir(home) and _toolkit_on_ld_path(environ, home):
        return {}
    candidates = ([home] if home else []) + [
        host.ascend("ascend-toolkit", "latest"), host.ascend("cann")]
    toolkit = next((c for c in candidates if c and os.path.isdir(c)), None)
    if toolkit is None:
        findings.append(rule("VSL547").finding(
            "CANN", "no CANN toolkit found (ASCEND_HOME_PATH unset or missing; looked in "
            + ", ".join(c for c in candidates if c) + ")"))
        return {}
    updates = cann_env(environ, toolkit, host.ascend("driver"))
    findings.append(rule("VSL546").finding(
        "CANN", f"ASCEND_HOME_PATH/LD_LIBRARY_PATH do not point at the CANN toolkit "
        f"{toolkit}; the launcher sets " + ", ".join(sorted(updates))))
    return updates


def _toolkit_on_ld_path(environ: Mapping[str, str], home: str) -> bool:
    want = os.path.join(home, "lib64")
    return any(os.path.normpath(p) == os.path.normpath(want)
               for p in environ.get("LD_LIBRARY_PATH", "").split(":") if p)


def cann_env(environ: Mapping[str, str], toolkit: str, driver: str) -> dict[str, str]:
    """The subset of CANN's set_env.sh (and the driver's library dirs) a non-interactive
    entrypoint lacks; existing values are kept after the CANN entries."""
    libs = [os.path.join(toolkit, "lib64"),
            os.path.join(toolkit, "lib64", "plugin", "opskernel"),
            os.path.join(toolkit, "lib64", "plugin", "nnengine"),
            os.path.join(driver, "lib64"),
            os.path.join(driver, "lib64", "common"),
            os.path.join(driver, "lib64", "driver")]
    pythonpath = [os.path.join(toolkit, "python", "site-packages"),
                  os.path.join(toolkit, "opp", "built-in", "op_impl", "ai_core", "tbe")]
    paths = [os.path.join(toolkit, "bin"),
             os.path.join(toolkit, "compiler", "ccec_compiler", "bin")]
    return {
        "ASCEND_HOME_PATH": toolkit,
        "ASCEND_TOOLKIT_HOME": toolkit,
        "ASCEND_OPP_PATH": os.path.join(toolkit, "opp"),
        "ASCEND_AICPU_PATH": toolkit,
        "LD_LIBRARY_PATH": _prepend(libs, environ.get("LD_LIBRARY_PATH")),
        "PYTHONPATH": _prepend(pythonpath, environ.get("PYTHONPATH")),
        "PATH": _prepend(paths, environ.get("PATH")),
    }


def _prepend(entries: list[str], existing: str | None) -> str:
    old = [p for p in (existing or "").split(":") if p]
    return ":".join(entries + [p for p in old if p not in entries])
