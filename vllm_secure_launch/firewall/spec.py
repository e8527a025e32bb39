"""The firewall policy as plain data and its nftables ruleset. Pure: no OS access.

Why match on the socket's cgroup and not on ports: vLLM's internal ports (ZMQ, gloo, NCCL,
a plugin's server) are mostly kernel-assigned and unknown in advance. `socket cgroupv2`
looks up the local socket a packet belongs to and tests the cgroup that socket was created in,
so a wildcard listener opened by any process of vLLM's tree, at any time, is covered from its
first instant. The table carries `flags owner`: the kernel deletes it when the netlink socket
that created it closes, i.e. when its holder (the keeper) exits for any reason, SIGKILL too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import field
from typing import Any

from vllm_secure_launch.records import record

# Refused for vLLM's tree in every mode: link-local (cloud metadata lives there) and the
# metadata addresses that are not link-local (AWS IPv6, Alibaba).
METADATA_V4 = ("169.254.0.0/16", "100.100.100.200/32")
METADATA_V6 = ("fe80::/10", "fd00:ec2::254/128")
REJECT = "reject with icmpx admin-prohibited"  # fast failure for the caller, not a hang


@record
class Spec:
    """What the table enforces for one service."""

    table: str  # unique per launcher: two services never touch each other's table
    cgroup: str  # path of vLLM's cgroup as nft resolves it, relative to /sys/fs/cgroup
    level: int  # depth of that cgroup below the cgroup v2 root
    api_port: int | None  # None: API on a unix socket or headless
    api_sources: tuple[str, ...] = ()  # CIDRs; empty: from anywhere the API is reachable
    internal: tuple[str, ...] = ()  # CIDRs of the internal network (and other nodes)
    strict: bool = False  # egress only to internal, loopback and `egress_allow`
    egress_allow: tuple[str, ...] = field(default=())  # CIDRs allowed in strict mode

    def to_dict(self) -> dict[str, Any]:
        return {"table": f"inet {self.table}", "cgroup": self.cgroup, "level": self.level,
                "api_port": self.api_port, "api_sources": list(self.api_sources) or ["any"],
                "internal": list(self.internal), "egress": "strict" if self.strict else
                "metadata refused", "egress_allow": list(self.egress_allow)}


def split_families(cidrs: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
    """Canonical, sorted IPv4 and IPv6 networks, overlaps merged: nft refuses overlapping
    intervals in a set, and a sorted list keeps the generated text deterministic."""
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    v4 = ipaddress.collapse_addresses(n for n in nets if n.version == 4)
    v6 = ipaddress.collapse_addresses(n for n in nets if n.version == 6)
    return [str(n) for n in v4], [str(n) for n in v6]


def _set(name: str, kind: str, elements: list[str]) -> list[str]:
    # An interval set so that CIDRs and single addresses mix; empty sets are legal.
    body = [f"\tset {name} {{", f"\t\ttype {kind}", "\t\tflags interval"]
    if elements:
        body.append(f"\t\telements = {{ {', '.join(elements)} }}")
    return body + ["\t}"]


def _sets(spec: Spec) -> list[str]:
    in4, in6 = split_families(spec.internal)
    api4, api6 = split_families(spec.api_sources)
    md4, md6 = split_families(METADATA_V4), split_families(METADATA_V6)[1]
    out = _set("internal4", "ipv4_addr", in4) + _set("internal6", "ipv6_addr", in6)
    out += _set("metadata4", "ipv4_addr", md4[0]) + _set("metadata6", "ipv6_addr", md6)
    if spec.api_sources:
        out += _set("api4", "ipv4_addr", api4) + _set("api6", "ipv6_addr", api6)
    if spec.strict:
        e4, e6 = split_families(spec.egress_allow)
        out += _set("egress4", "ipv4_addr", e4) + _set("egress6", "ipv6_addr", e6)
    return out


def _api_rules(spec: Spec) -> list[str]:
    if spec.api_port is None:
        return []
    port = f"meta l4proto tcp th dport {spec.api_port}"
    if not spec.api_sources:
        return [f"\t\t{port} accept"]
    # The list is the whole answer for the API port: the internal network is not implied
    # (the internal accept below must not reopen it); loopback was accepted above.
    return [f"\t\t{port} ip saddr @api4 accept", f"\t\t{port} ip6 saddr @api6 accept",
            f"\t\t{port} drop"]


def ruleset(spec: Spec) -> str:
    """The complete table, as loaded by the keeper and printed by the dry run."""
    match = f'socket cgroupv2 level {spec.level} "{spec.cgroup}"'
    lines = [f"table inet {spec.table} {{", "\tflags owner", *_sets(spec)]
    lines += ["\tchain input {", "\t\ttype filter hook input priority filter - 10; policy accept;",
              f"\t\t{match} jump tree_in", "\t}"]
    lines += ["\tchain tree_in {", '\t\tiif "lo" accept',
              "\t\tct state established,related accept", *_api_rules(spec),
              "\t\tip saddr @internal4 accept", "\t\tip6 saddr @internal6 accept",
              "\t\tdrop", "\t}"]
    lines += ["\tchain output {",
              "\t\ttype filter hook output priority filter - 10; policy accept;",
              f"\t\t{match} jump tree_out", "\t}"]
    lines += ["\tchain tree_out {",
              # Before any accept: metadata is refused even on an established flow.
              f"\t\tip daddr @metadata4 {REJECT}", f"\t\tip6 daddr @metadata6 {REJECT}",
              '\t\toif "lo" accept', "\t\tct state established,related accept"]
    if spec.strict:
        lines += ["\t\tip daddr @internal4 accept", "\t\tip6 daddr @internal6 accept",
                  "\t\tip daddr @egress4 accept", "\t\tip6 daddr @egress6 accept",
                  f"\t\t{REJECT}"]
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"
