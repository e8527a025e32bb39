"""The socket audit: observed listeners of vLLM's process tree vs the Plan's expectations.

PURE: no processes, no sockets, no clocks. procnet.py observes, this module judges.

Allowed (ExpectedListeners): the API socket on exactly api.host:api.port; any port on an
address of `internal_ips` (vLLM's internal ports are kernel-assigned, so a port allowlist
cannot work: shared/reference/vllm-0.32-surface.md §1.5); loopback when `allow_loopback`.
Wildcards (0.0.0.0, ::, ::ffff:0.0.0.0) are never allowed: a dual-stack [::] listener accepts
IPv4 as well, so IPv6 tables are read too. The one exception is a Ray driver's core-worker
port (ExpectedListeners.confined_ports: the local raylet's worker ports, set only behind the
kernel firewall; rules/ray_live_rules.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

from vllm_secure_launch.findings import Finding
from vllm_secure_launch.plan.model import ExpectedListeners
from vllm_secure_launch.rules import audit_rules as R

# Fixed ports of known vLLM / dependency listeners, to tell the operator what it probably is
# (shared/reference/vllm-0.32-surface.md §1.5).
_KNOWN_PORTS = {
    5557: "vLLM KV-events publisher (--kv-events-config endpoint; use ipc:// or tcp://*:0 "
    "with VLLM_HOST_IP)",
    8998: "Mooncake bootstrap server (hard-coded 0.0.0.0; do not use the Mooncake connector)",
    9256: "vLLM DP supervisor (--data-parallel-supervisor-port; set --host)",
    29500: "torch.distributed TCPStore (MASTER_PORT; binds all interfaces)",
    29501: "torch.distributed TCPStore on --master-port (binds all interfaces)",
    29550: "vLLM DP handshake (data_parallel_rpc_port; set --data-parallel-address)",
}


@dataclass(frozen=True)
class Listener:
    """One listening socket: TCP in LISTEN, or a bound unconnected UDP socket."""

    proto: str  # "tcp" | "udp"
    address: str  # canonical IP text, IPv4-mapped IPv6 shown as IPv4 ("0.0.0.0", "::", "10.0.0.5")
    port: int
    inode: int = 0
    pid: int | None = None  # a process of the tree that holds it (None: not in the tree)
    process: str | None = None  # its name
    pids: tuple[int, ...] = ()  # every process of the tree that holds it (inherited fds)
    family: int = 4  # 4 | 6: which /proc/net table it came from

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}/{self.proto}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "family": f"ipv{self.family}",
            "address": self.address,
            "port": self.port,
            "pid": self.pid,
            "process": self.process,
            "pids": list(self.pids),
            "inode": self.inode,
        }


@dataclass(frozen=True)
class Verdict:
    listener: Listener
    allowed: bool
    reason: str  # "api" | "internal" | "loopback" | "confined" | "wildcard" | "unplanned"
    rule_id: str | None = None
    pinned: str | None = None  # the plan's port range it lies in (e.g. HCCL_IF_BASE_PORT)

    def to_dict(self) -> dict[str, Any]:
        d = self.listener.to_dict()
        d["verdict"] = "allowed" if self.allowed else "violation"
        d["reason"] = self.reason
        if self.rule_id:
            d["rule"] = self.rule_id
        if self.pinned:
            d["pinned"] = self.pinned
        return d


@dataclass(frozen=True)
class AuditResult:
    verdicts: tuple[Verdict, ...]
    findings: tuple[Finding, ...]

    @property
    def clean(self) -> bool:
        return not any(f.blocking for f in self.findings)

    @property
    def violations(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.allowed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "listeners": [v.to_dict() for v in self.verdicts],
            "findings": [f.to_dict() for f in self.findings],
        }


def canonical_ip(text: str) -> str:
    """Canonical text of an IP; IPv4-mapped IPv6 becomes the IPv4 form. Non-IPs unchanged."""
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(canonical_ip(text))
    except ValueError:
        return None


def is_wildcard(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and ip.is_unspecified


def is_loopback(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def judge(expected: ExpectedListeners, listener: Listener) -> Verdict:
    """The verdict for one listener, with the plan's port range it lies in, if any."""
    verdict = _judge(expected, listener)
    pinned = expected.range_of(listener.port) if listener.proto == "tcp" else None
    return replace(verdict, pinned=pinned.name) if pinned else verdict


def _judge(expected: ExpectedListeners, listener: Listener) -> Verdict:
    """Wildcards first: they are never allowed."""
    addr = canonical_ip(listener.address)
    api = expected.api
    if is_wildcard(addr):
        if listener.proto == "tcp" and expected.confined(listener.port):
            # A pinned Ray port that binds the wildcard regardless: the plan only lists it
            # while the kernel firewall confines it (raycluster/plan.py).
            return Verdict(listener, True, "confined")
        return Verdict(listener, False, "wildcard", R.WILDCARD_LISTENER.id)
    if (
        api.host is not None
        and listener.proto == "tcp"
        and addr == canonical_ip(api.host)
        and listener.port == api.port
    ):
        return Verdict(listener, True, "api")
    if addr in {canonical_ip(i) for i in expected.internal_ips}:
        return Verdict(listener, True, "internal")
    if expected.allow_loopback and is_loopback(addr):
        return Verdict(listener, True, "loopback")
    return Verdict(listener, False, "unplanned", R.UNPLANNED_ADDRESS.id)


def _who(listener: Listener) -> str:
    if listener.pid is None:
        return "a process outside the tree"
    name = listener.process or "?"
    return f"pid {listener.pid} ({name})"


def _finding(verdict: Verdict) -> Finding:
    lst = verdict.listener
    hint = (f"HCCL host port ({verdict.pinned}, pinned by the launcher; HCCL should bind it "
            "on HCCL_IF_IP)" if verdict.pinned else _KNOWN_PORTS.get(lst.port))
    what = f"{_who(lst)} listens on {lst.endpoint}"
    if verdict.reason == "wildcard":
        scope = "every IPv4 interface" if lst.family == 4 else "every interface (IPv6 and, dual-stack, IPv4)"
        msg = f"{what}: {scope}."
        rule = R.WILDCARD_LISTENER
    else:
        msg = f"{what}: an address outside the plan."
        rule = R.UNPLANNED_ADDRESS
    if hint:
        msg += f" Port {lst.port} is usually the {hint}."
    return rule.finding(lst.endpoint, msg)


def compare(
    expected: ExpectedListeners,
    observed: Iterable[Listener],
    *,
    api_seen_elsewhere: Sequence[Listener] = (),
) -> AuditResult:
    """Judge every observed listener of the tree; one finding per offending socket.

    `api_seen_elsewhere`: listeners of the planned API address:port held by processes outside
    the tree. When the plan has a TCP API and the tree does not hold it, but another process
    does, that is VSL602 (someone else answers /health in vLLM's name).
    """
    verdicts = tuple(sorted((judge(expected, lst) for lst in observed), key=_order))
    findings = [_finding(v) for v in verdicts if not v.allowed]
    api = expected.api
    if api.host is not None and api.port is not None:
        owned = any(v.reason == "api" for v in verdicts)
        if not owned and api_seen_elsewhere:
            findings.append(
                R.API_NOT_OWNED.finding(
                    f"{api.host}:{api.port}/tcp",
                    f"the API address {api.url()} is held by a process outside vLLM's tree.",
                )
            )
    return AuditResult(verdicts, tuple(findings))


def unavailable(reason: str) -> AuditResult:
    """The audit could not look: fail closed with VSL603."""
    return AuditResult((), (R.AUDIT_UNAVAILABLE.finding("/proc", reason),))


def _order(v: Verdict) -> tuple[int, str, str, int]:
    return (0 if not v.allowed else 1, v.listener.proto, v.listener.address, v.listener.port)
