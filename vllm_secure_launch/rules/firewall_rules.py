"""VSL130–VSL139 — kernel-enforced network policy for vLLM's process tree (issue 12,
docs/firewall.md). Judged by firewall/enforce.py; listed here so `rules` documents them."""

from __future__ import annotations

from vllm_secure_launch.findings import Severity
from vllm_secure_launch.rules.registry import Rule

ENFORCED = Rule(
    "VSL130", "the kernel firewall is enforced for vLLM's process tree", Severity.INFO,
    "nothing to do; `--dry-run` prints the exact nftables table",
    "vLLM's tree runs in a cgroup of its own; an nftables table admits only the API port from "
    "outside and every other port only from the internal network and loopback, and refuses "
    "egress to link-local and metadata addresses.")
NOT_ENFORCED = Rule(
    "VSL131", "the kernel firewall is not enforced (firewall = auto)", Severity.WARNING,
    "run the launcher as root or with CAP_NET_ADMIN and a delegated cgroup v2 subtree "
    "(systemd: AmbientCapabilities=CAP_NET_ADMIN, Delegate=yes), or use `render nftables` "
    "for the host firewall; set --firewall enforce to refuse instead of warning",
    "With `auto` the launcher enforces when it can and otherwise starts with this warning: "
    "the socket audit still detects a forbidden listener, but only after it appears.")
REQUIRED = Rule(
    "VSL132", "the kernel firewall is required but cannot be enforced", Severity.ERROR,
    "grant root or CAP_NET_ADMIN with a delegated cgroup v2 subtree, install nftables, or "
    "set --firewall auto to start without enforcement",
    "--firewall enforce|strict fails closed: nothing starts without the table.")
OFF = Rule(
    "VSL133", "the kernel firewall is switched off", Severity.INFO,
    "set --firewall auto or enforce (VSL_FIREWALL, [launcher] firewall)",
    "--firewall off: only the socket audit guards the listeners.")

SOURCES_NOT_ENFORCED = Rule(
    "VSL134", "the API source allow-list is not enforced", Severity.WARNING,
    "enable the kernel firewall (root, or CAP_NET_ADMIN with a delegated cgroup v2 subtree; "
    "--firewall enforce to refuse instead of warning), or load `render nftables` into the "
    "host firewall, which carries the same list",
    "[api] allowed_sources (--api-allowed-sources) narrows the API port's ingress only where "
    "the launcher's nftables table is loaded; without it any host that reaches the API "
    "address can connect (the API key still applies).")

RULES = (ENFORCED, NOT_ENFORCED, REQUIRED, OFF, SOURCES_NOT_ENFORCED)
