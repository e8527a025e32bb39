"""VSL730–VSL739 — the live check of the Ray cluster vLLM is about to join (issue 14).

Judged here, purely, from what preflight/ray_cluster.py observed just before vLLM starts: a
client without the token must be turned away, the dashboard and Jobs API must not answer on
any of the head's non-loopback addresses, every node must sit in the internal network, and
this host must run a Ray node whose worker ports the audit can expect (vLLM's engine core is a
Ray driver: its core-worker port is one of the raylet's worker ports, bound to the wildcard by
Ray 2.60 whatever the node address; only the kernel firewall keeps it internal). A check that
cannot decide refuses (fail closed); every rule is waivable like any other.
"""

from __future__ import annotations

import ipaddress
from dataclasses import field
from typing import Any, Sequence

from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.records import record
from vllm_secure_launch.rules.registry import Rule

PASSED = Rule(
    "VSL730", "the Ray cluster passed the live check", Severity.INFO,
    "nothing to do; the finding lists the nodes and what was checked",
)
UNAUTHENTICATED = Rule(
    "VSL731", "the Ray cluster accepts clients without a token", Severity.ERROR,
    "restart every Ray node with token authentication (`vllm-secure-launch ray start`, or "
    "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH on every `ray start`); anyone who reaches the "
    "GCS can otherwise run code on every node",
)
DASHBOARD = Rule(
    "VSL732", "the Ray dashboard / Jobs API is reachable on a non-loopback address",
    Severity.ERROR,
    "start the head with --include-dashboard=false (or --dashboard-host=127.0.0.1): the "
    "dashboard's Jobs API runs arbitrary commands on the cluster (ShadowRay, CVE-2023-48022)",
)
NODE_OUTSIDE = Rule(
    "VSL733", "a node of the Ray cluster is outside the internal network", Severity.ERROR,
    "start every Ray node with --node-ip-address=<its internal IP> (`vllm-secure-launch ray "
    "start` does), and remove nodes that are not yours: vLLM's workers would run there",
)
UNDECIDED = Rule(
    "VSL734", "the Ray cluster could not be checked", Severity.ERROR,
    "make the head reachable at RAY_ADDRESS with the token in the token file (`ray status` with "
    "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH set); the launcher does not join a cluster it "
    "could not check",
)
NO_LOCAL_NODE = Rule(
    "VSL735", "no Ray node of this cluster runs on this host's internal address",
    Severity.ERROR,
    "start this host's Ray node first (`vllm-secure-launch ray start --address HEAD:PORT`, or "
    "the head) with --node-ip-address=<internal IP> and pinned --min-worker-port/"
    "--max-worker-port: vLLM's driver needs the local raylet, and the audit expects its ports",
)
DRIVER_UNFIREWALLED = Rule(
    "VSL736", "vLLM's Ray driver port would be open to every network", Severity.ERROR,
    "let the launcher enforce the kernel firewall (--firewall auto with root or CAP_NET_ADMIN "
    "and a writable cgroup, or --firewall enforce): Ray binds the driver's core-worker port to "
    "the wildcard; waive VSL736 only with a host firewall that drops it from outside",
)

RULES = (PASSED, UNAUTHENTICATED, DASHBOARD, NODE_OUTSIDE, UNDECIDED, NO_LOCAL_NODE,
         DRIVER_UNFIREWALLED)


@record
class Probe:
    """One client run against the GCS (a child interpreter of vLLM's environment)."""

    ok: bool  # the GCS answered
    auth_rejected: bool = False  # it answered "unauthenticated"
    error: str = ""  # what went wrong, one line
    nodes: tuple[tuple[str, bool, bool], ...] = ()  # (address, alive, head)
    dashboard: str = ""  # the dashboard's "host:port" as the head recorded it ("" none)


@record
class Observation:
    """What preflight/ray_cluster.py saw; the judgement below adds nothing of its own."""

    address: str  # RAY_ADDRESS as vLLM gets it
    without_token: Probe
    with_token: Probe
    # "host:port" -> True when a TCP connect from here succeeded (dashboard candidates)
    dashboard_connects: tuple[tuple[str, bool], ...] = ()
    # this host's raylet of the cluster: (node address, worker port ranges) or None
    local_node: tuple[str, tuple[tuple[int, int], ...]] | None = None
    local_node_why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address,
                "without_token": _probe_dict(self.without_token),
                "with_token": _probe_dict(self.with_token),
                "dashboard_connects": dict(self.dashboard_connects),
                "local_node": None if self.local_node is None else {
                    "address": self.local_node[0],
                    "worker_ports": [list(r) for r in self.local_node[1]]},
                "local_node_why": self.local_node_why}


def _probe_dict(p: Probe) -> dict[str, Any]:
    return {"ok": p.ok, "auth_rejected": p.auth_rejected, "error": p.error,
            "nodes": [{"address": a, "alive": al, "head": h} for a, al, h in p.nodes],
            "dashboard": p.dashboard}


@record
class Verdict:
    findings: tuple[Finding, ...]
    worker_ports: tuple[tuple[int, int], ...] = field(default=())  # for the audit


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _inside(host: str, network: str | None) -> bool:
    if _is_loopback(host):
        return True
    try:
        return network is not None and ipaddress.ip_address(host) in ipaddress.ip_network(network)
    except ValueError:
        return False


def split_hostport(text: str) -> tuple[str, int | None]:
    rest = text.split("://", 1)[-1]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail.lstrip(":")
    else:
        host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    return host, int(port) if port.isascii() and port.isdigit() else None


def judge(obs: Observation, network: str | None) -> Verdict:
    """The live check's findings and the driver's worker ports (empty unless it passed)."""
    out: list[Finding] = []
    nt, wt = obs.without_token, obs.with_token
    if nt.ok:
        out.append(UNAUTHENTICATED.finding(obs.address, f"a client without any token read the "
                                           f"node list of {obs.address}"))
    elif not nt.auth_rejected:
        out.append(UNDECIDED.finding(obs.address, f"the token-less probe of {obs.address} "
                                     f"neither succeeded nor was refused: {nt.error}"))
    if not wt.ok:
        why = ("the cluster rejected the token in the token file" if wt.auth_rejected
               else wt.error)
        out.append(UNDECIDED.finding(obs.address, f"{obs.address} with the token: {why}"))
        return Verdict(tuple(out))
    out += _dashboard(obs)
    outside = [a for a, _, _ in wt.nodes if not _inside(a, network)]
    if outside:
        out.append(NODE_OUTSIDE.finding(", ".join(outside), f"node address(es) {', '.join(outside)} "
                                        f"are outside the internal network ({network or 'none'})"))
    if not wt.nodes:
        out.append(UNDECIDED.finding(obs.address, "the cluster reported no nodes"))
    if obs.local_node is None:
        out.append(NO_LOCAL_NODE.finding("raylet", obs.local_node_why or "no local raylet"))
    if any(f.blocking for f in out):
        return Verdict(tuple(out))
    ports = obs.local_node[1] if obs.local_node else ()
    alive = sum(1 for _, al, _ in wt.nodes if al)
    out.append(PASSED.finding(obs.address, f"{len(wt.nodes)} node(s) ({alive} alive) at "
                              f"{', '.join(a for a, _, _ in wt.nodes)}, all internal; a client "
                              "without the token is refused; no dashboard answers off loopback; "
                              f"this host's worker ports {_ranges(ports)}"))
    return Verdict(tuple(out), ports)


def _dashboard(obs: Observation) -> list[Finding]:
    out = []
    host, _ = split_hostport(obs.with_token.dashboard) if obs.with_token.dashboard else ("", None)
    if host and not _is_loopback(host):
        out.append(DASHBOARD.finding(obs.with_token.dashboard, f"the head records its dashboard "
                                     f"at {obs.with_token.dashboard}"))
    reached = [hp for hp, ok in obs.dashboard_connects if ok]
    if reached:
        out.append(DASHBOARD.finding(", ".join(reached), f"a TCP connection to "
                                     f"{', '.join(reached)} (the dashboard / Jobs API port) "
                                     "succeeded"))
    return out


def _ranges(ports: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in ports) or "none"


def driver_findings(firewall_mode: str, worker_ports: Sequence[tuple[int, int]]) -> list[Finding]:
    """VSL736: the driver's wildcard core-worker port is safe only behind the kernel firewall."""
    if firewall_mode in ("enforce", "strict") or not worker_ports:
        return []
    return [DRIVER_UNFIREWALLED.finding("firewall", f"the kernel firewall is not enforced (mode "
                                        f"{firewall_mode}); Ray binds vLLM's driver port in "
                                        f"{_ranges(worker_ports)} to every interface")]
