"""Address classes (loopback, private, public, wildcard, ...) and internal-interface resolution.

Pure: works on HostFacts' interface table, never on the live machine.
"""

from __future__ import annotations

import ipaddress
from typing import Mapping

from vllm_secure_launch.records import record

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PRIVATE_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",  # RFC 1918
        "172.16.0.0/12",  # RFC 1918
        "192.168.0.0/16",  # RFC 1918
        "100.64.0.0/10",  # RFC 6598 shared address space (carrier-grade NAT)
        "fc00::/7",  # RFC 4193 unique local addresses
    )
)

WILDCARD_TEXT = frozenset({"", "0.0.0.0", "::", "[::]", "*", "0", "::0", "0:0:0:0:0:0:0:0"})

LOOPBACK = "loopback"
PRIVATE = "private"
PUBLIC = "public"
WILDCARD = "wildcard"
LINK_LOCAL = "link-local"
MULTICAST = "multicast"
HOSTNAME = "hostname"


def parse_ip(text: str) -> IPAddress | None:
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    if "%" in t:  # scoped IPv6 (fe80::1%eth0): the scope does not change the class
        t = t.split("%", 1)[0]
    try:
        return ipaddress.ip_address(t)
    except ValueError:
        return None


def classify(text: str) -> str:
    """Class of an address as written: wildcard, loopback, private, link-local, multicast,
    public, or hostname (not a literal IP)."""
    if text.strip() in WILDCARD_TEXT:
        return WILDCARD
    ip = parse_ip(text)
    if ip is None:
        return HOSTNAME
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return WILDCARD
    if ip.is_loopback:
        return LOOPBACK
    if ip.is_link_local:
        return LINK_LOCAL
    if ip.is_multicast:
        return MULTICAST
    if any(ip in net for net in _PRIVATE_NETS if net.version == ip.version):
        return PRIVATE
    return PUBLIC


def is_allowed_internal_class(cls: str) -> bool:
    return cls in (LOOPBACK, PRIVATE)


@record
class IfAddr:
    ip: str
    prefixlen: int

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(f"{self.ip}/{self.prefixlen}", strict=False)


@record
class InternalNet:
    """The one private address every internal listener is pinned to."""

    ip: str
    iface: str
    network: str  # CIDR of the interface address (peers must be inside it)
    how: str  # "iface", "cidr", "ip" or "loopback-default"

    def contains(self, text: str) -> bool:
        ip = parse_ip(text)
        if ip is None:
            return False
        net = ipaddress.ip_network(self.network)
        return ip.version == net.version and ip in net


class ResolveError(Exception):
    """The internal-network setting does not name exactly one local address."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what = what
        self.fix = fix


def _iface_of(ip: str, interfaces: Mapping[str, tuple[IfAddr, ...]]) -> tuple[str, IfAddr] | None:
    want = parse_ip(ip)
    for name, addrs in interfaces.items():
        for a in addrs:
            if parse_ip(a.ip) == want:
                return name, a
    return None


def _pick(addrs: tuple[IfAddr, ...]) -> IfAddr | None:
    v4 = [a for a in addrs if ":" not in a.ip]
    v6 = [a for a in addrs if ":" in a.ip and classify(a.ip) != LINK_LOCAL]
    picked = v4 or v6
    return picked[0] if picked else None


def resolve_internal(
    iface: str, cidr: str, ip: str, interfaces: Mapping[str, tuple[IfAddr, ...]]
) -> InternalNet:
    """Resolve the one internal setting (interface name, CIDR or IP) to one local address.

    Exactly one of the three may be set; with none, loopback (127.0.0.1 on the loopback
    interface) is used, which is right for a single node.
    """
    given = [(k, v) for k, v in (("iface", iface), ("cidr", cidr), ("ip", ip)) if v]
    if len(given) > 1:
        names = " and ".join(f"--internal-{k}" for k, _ in given)
        raise ResolveError(f"{names} are both set", "set exactly one internal-network setting")
    if not given:
        lo = next((n for n, addrs in interfaces.items()
                   if any(a.ip == "127.0.0.1" for a in addrs)), "lo")
        return InternalNet("127.0.0.1", lo, "127.0.0.0/8", "loopback-default")
    kind, value = given[0]
    if kind == "iface":
        if value not in interfaces:
            known = ", ".join(sorted(interfaces)) or "none"
            raise ResolveError(
                f"interface {value!r} does not exist on this host (interfaces: {known})",
                "name an existing interface with --internal-iface/VSL_INTERNAL_IFACE")
        a = _pick(interfaces[value])
        if a is None:
            raise ResolveError(f"interface {value!r} has no usable IP address",
                               "configure an address on it, or pick another interface")
        return InternalNet(a.ip, value, str(a.network), "iface")
    if kind == "cidr":
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ResolveError(f"--internal-cidr {value!r} is not a CIDR",
                               "write it like 10.0.0.0/16") from None
        hits = [(n, a) for n, addrs in interfaces.items() for a in addrs
                if (p := parse_ip(a.ip)) is not None and p.version == net.version and p in net]
        if not hits:
            raise ResolveError(f"no local address lies inside {value}",
                               "check the CIDR against `ip -br addr` on this node")
        if len(hits) > 1:
            found = ", ".join(f"{a.ip} ({n})" for n, a in hits)
            raise ResolveError(f"several local addresses lie inside {value}: {found}",
                               "use a narrower CIDR, or name the interface or IP instead")
        name, hit = hits[0]
        return InternalNet(hit.ip, name, str(hit.network), "cidr")
    if parse_ip(value) is None:
        raise ResolveError(f"--internal-ip {value!r} is not an IP address",
                           "give a literal IPv4 or IPv6 address of this host")
    owner = _iface_of(value, interfaces)
    if owner is None:
        raise ResolveError(f"{value} is not an address of this host",
                           "give an address that `ip -br addr` shows on this node")
    return InternalNet(str(parse_ip(value)), owner[0], str(owner[1].network), "ip")


def host_in(text: str, allowed: tuple[str, ...]) -> bool:
    ip = parse_ip(text)
    return ip is not None and any(parse_ip(a) == ip for a in allowed)


@record
class ApiEndpoint:
    """Where vLLM's HTTP API will listen: TCP host:port, or a unix socket path."""

    host: str | None  # literal IP the API binds (None with uds or headless)
    port: int | None
    uds: str | None = None
    tls: bool = False
    headless: bool = False  # --headless / --api-server-count 0: no API server at all

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def url(self, path: str = "") -> str:
        if self.headless:
            return "(headless: no API server)"
        if self.uds:
            return f"unix:{self.uds}{path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{path}"
