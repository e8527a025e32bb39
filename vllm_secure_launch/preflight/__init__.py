"""Accelerator preflight (issue 6): CUDA via NVML, Ascend via device nodes and npu-smi, CPU.

    report = preflight.run(PreflightRequest.from_serve_args(args, environ, accelerator),
                           HostView())
    report.blocked -> refuse with exit 69; report.env_updates / report.vllm_command /
    report.unsupported_flags -> the plan.

This package facade loads its parts on first use (PEP 562), so `preflight.detect` — all a
dry run needs to resolve `--accelerator auto` — does not pay for the checks' modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "run": "runner", "run_for_serve": "runner",
    "PreflightRequest": "request", "DEFAULT_MEMORY_FRACTION": "request",
    "PreflightReport": "report", "DeviceFacts": "report",
    "HostView": "vllm_secure_launch.host.view",
    "RULES": "vllm_secure_launch.rules.preflight_rules",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module if "." in module else f".{module}", __name__), name)
