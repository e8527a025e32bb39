"""The Plan: everything the launcher will do, decided before anything runs.

Built purely from (ServeArgs, environ, Policy, HostFacts) by planner.build_plan(). The supervisor
(issue 3), the socket audit and the dry-run views consume it; nothing here touches the OS.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Mapping

from vllm_secure_launch.addresses import ApiEndpoint
from vllm_secure_launch.findings import Finding
from vllm_secure_launch.records import record

__all__ = ["ApiEndpoint", "ExpectedListeners", "Plan", "PortRange", "Supervision"]


@record
class PortRange:
    """Ports [first, last] an accelerator library listens on, named for the report."""

    name: str
    first: int
    last: int

    def holds(self, port: int) -> bool:
        return self.first <= port <= self.last

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "first": self.first, "last": self.last}


@record
class ExpectedListeners:
    """What may listen. The API socket on exactly api.host:api.port; anything else only on an
    address of `internal_ips` (any port: vLLM's internal ports are kernel-assigned), plus
    loopback when `allow_loopback`. Wildcards are allowed only on `confined_ports`: ranges
    of ports whose wildcard listeners the kernel firewall confines to the internal network
    (Ray's C++ servers, which bind the wildcard whatever they are told; raycluster/plan.py)."""

    api: ApiEndpoint
    internal_ips: tuple[str, ...]
    allow_loopback: bool = True
    # Ports the plan pins for a library (Ascend: HCCL's host ports, plan/hccl.py): still only
    # allowed on an internal address; the audit names the range on each listener in it.
    port_ranges: tuple[PortRange, ...] = ()
    # Ports where a wildcard listener is accepted because the kernel firewall confines it to
    # loopback and the internal network (a Ray node's pinned ports, raycluster/plan.py).
    confined_ports: tuple[tuple[int, int], ...] = ()  # inclusive (low, high) ranges

    def range_of(self, port: int) -> PortRange | None:
        return next((r for r in self.port_ranges if r.holds(port)), None)

    def confined(self, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.confined_ports)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "api": {"host": self.api.host, "port": self.api.port, "uds": self.api.uds},
            "internal_ips": list(self.internal_ips),
            "allow_loopback": self.allow_loopback,
            "port_ranges": [r.to_dict() for r in self.port_ranges],
        }
        if self.confined_ports:
            out["confined_wildcard_ports"] = [f"{lo}" if lo == hi else f"{lo}-{hi}"
                                              for lo, hi in self.confined_ports]
        return out


@record
class Supervision:
    """Settings of the supervised run (issue 3); all from CLI > env > policy > defaults."""

    ready_timeout: float = 1800.0
    audit: str = "enforce"  # enforce | warn | off
    audit_interval: float = 1.0
    stop_grace: float = 30.0
    hang_timeout: float = 120.0  # GET /health failing this long while serving: SIGKILL, 79; 0 off
    log_format: str = "text"  # text | json  (the launcher's own stderr lines)
    report_path: str | None = None


@record
class Plan:
    decision: str  # "start" | "refuse"
    argv: tuple[str, ...]  # the exact child command line (no secrets)
    env: Mapping[str, str]  # the complete child environment (may hold secrets: never print it)
    env_set: Mapping[str, str]  # variables the launcher sets or changes (values may be secret)
    env_removed: tuple[str, ...]  # names taken out of the inherited environment
    secret_env: frozenset[str]  # names whose values are shown as <redacted>
    api: ApiEndpoint
    expected: ExpectedListeners
    findings: tuple[Finding, ...]
    supervision: Supervision = field(default_factory=Supervision)
    rpc_dir: str | None = None  # private 0700 directory to create before spawn (VLLM_RPC_BASE_PATH)
    internal_ip: str | None = None
    internal_iface: str | None = None
    accelerator: str = "auto"
    facts: Mapping[str, Any] = field(default_factory=dict)  # extra context for reports

    @property
    def refused(self) -> bool:
        return self.decision != "start"

    def redacted_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        src = self.env_set if env is None else env
        return {k: ("<redacted>" if k in self.secret_env else v) for k, v in sorted(src.items())}
