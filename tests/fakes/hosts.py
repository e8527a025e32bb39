"""Builders for fake machine trees (device nodes, Ascend install, package metadata, npu-smi).

Narrow fakes at the boundary, because no GPU/NPU exists on the test machine: preflight reads
these through HostView's roots and PATH exactly as it reads the real /dev, /usr/local/Ascend
and site-packages.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

FAKES = Path(__file__).resolve().parent


def make_dist(site: Path, name: str, version: str) -> None:
    """A minimal installed distribution (what importlib.metadata reads)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def make_dev(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n in names:
        (root / n).touch()
    return root


def ascend_dev(root: Path, chips: int = 4, control: bool = True) -> Path:
    names = [f"davinci{i}" for i in range(chips)]
    if control:
        names += ["davinci_manager", "devmm_svm", "hisi_hdc"]
    return make_dev(root, names)


VERSION_INFO = """Version=24.1.rc2.2
ascendhal_version=7.35.23
aicpu_version=1.0
tdt_version=1.0
log_version=1.0
prof_version=2.0
dvppkernels_version=1.1
tsfw_version=1.0
Innerversion=V100R001C18SPC001B233
compatible_version=[V100R001C30],[V100R001C13],[V100R001C15],[V100R001C17],[V100R001C18]
compatible_version_fw=[7.0.0,7.2.99]
package_version=24.1.rc2.2
"""


def ascend_root(root: Path, version_info: bool = True, toolkit: bool = True) -> Path:
    (root / "driver" / "lib64").mkdir(parents=True, exist_ok=True)
    if version_info:
        (root / "driver" / "version.info").write_text(VERSION_INFO)
    if toolkit:
        (root / "ascend-toolkit" / "latest" / "lib64").mkdir(parents=True, exist_ok=True)
    return root


def npu_smi_bin(bin_dir: Path, scenario: str) -> Path:
    """Put an `npu-smi` on a PATH directory that runs the recorded-output stand-in."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state = bin_dir / "npu-smi"
    wrapper = bin_dir / "npu-smi"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"NPU_SMI_STATE='{state}' exec '{sys.executable}' -S '{FAKES / 'npu-smi'}' \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    Path(f"{state}.scenario").write_text(scenario)
    return bin_dir


def npu_smi_calls(bin_dir: Path) -> list[str]:
    path = bin_dir / "npu-smi.calls"
    return path.read_text().splitlines() if path.exists() else []


def cpu_sys(root: Path, total_kb: int, free_kb: int, cgroup_max: str | None = None,
            cgroup_current: int | None = None) -> Path:
    """A /sys with NUMA node 0 meminfo (vLLM's format) and CPUs linked to node 0."""
    node = root / "devices/system/node/node0"
    node.mkdir(parents=True, exist_ok=True)
    (node / "meminfo").write_text(
        f"Node 0 MemTotal:       {total_kb} kB\n"
        f"Node 0 MemFree:        {free_kb} kB\n"
        "Node 0 Active(file):          0 kB\n"
        "Node 0 Inactive(file):        0 kB\n"
        "Node 0 SReclaimable:          0 kB\n")
    for cpu in sorted(os.sched_getaffinity(0)):
        d = root / f"devices/system/cpu/cpu{cpu}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "node0").mkdir(exist_ok=True)
    if cgroup_max is not None:
        cg = root / "fs/cgroup"
        cg.mkdir(parents=True, exist_ok=True)
        (cg / "memory.max").write_text(cgroup_max + "\n")
        if cgroup_current is not None:
            (cg / "memory.current").write_text(f"{cgroup_current}\n")
    return root
