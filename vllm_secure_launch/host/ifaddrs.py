"""This host's interface addresses from one rtnetlink dump (Linux; standard library only).

What getifaddrs(3) (and so psutil.net_if_addrs) reports, read the way glibc reads it: every
link by name (if_nameindex(3): glibc's own RTM_GETLINK dump), then every IPv4/IPv6 address
(RTM_GETADDR) with its prefix length; an IPv4 address is named by its label (`eth0:1`) when it
has one, and is IFA_LOCAL when the kernel gives both (IFA_ADDRESS is then the peer of a
point-to-point link). Why not psutil here: importing it costs more than the whole dry run may
add over the click+psutil floor (issue 9); psutil remains the fallback where netlink is
unavailable. Returns None then.
"""

from __future__ import annotations

# `_socket` is the C module behind `socket`: importing `socket` itself builds its IntEnum
# classes, ~5 ms of every start (issue 9); the raw calls and constants are all that is needed.
import _socket as socket
import os
import struct

RTM_GETADDR, RTM_NEWADDR = 22, 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTATTR = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(buf, off)
        if length < RTATTR.size:
            break
        out.setdefault(kind, buf[off + RTATTR.size:off + length])
        off += _align(length)
    return out


def _dump(sock: socket.socket, kind: int, body: bytes, seq: int) -> list[tuple[int, bytes]]:
    """(message type, payload) of every message of one dump."""
    sock.send(NLMSG_HDR.pack(NLMSG_HDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP,
                             seq, 0) + body)
    msgs: list[tuple[int, bytes]] = []
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + NLMSG_HDR.size <= len(data):
            length, mtype, _flags, mseq, _pid = NLMSG_HDR.unpack_from(data, off)
            if length < NLMSG_HDR.size:
                raise OSError("malformed netlink message")
            if mseq == seq:
                if mtype == NLMSG_DONE:
                    return msgs
                if mtype == NLMSG_ERROR:
                    raise OSError("netlink dump refused")
                msgs.append((mtype, data[off + NLMSG_HDR.size:off + length]))
            off += _align(length)


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def read() -> dict[str, list[tuple[int, str, int]]] | None:
    """{interface name: [(family, address, prefix length), ...]} in the kernel's order, every
    link present (possibly with no address); None when rtnetlink cannot be read."""
    if not hasattr(socket, "AF_NETLINK"):
        return None
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
        try:
            sock.settimeout(2.0)
            sock.bind((0, 0))
            seq = os.getpid() & 0xFFFF
            addrs = _dump(sock, RTM_GETADDR, IFADDRMSG.pack(0, 0, 0, 0, 0), seq + 1)
        finally:
            sock.close()
        # Every link by index: if_nameindex(3), glibc's own RTM_GETLINK dump, read in C (a
        # link message carries ~50 attributes; parsing them here cost ~3 M instructions).
        names = dict(socket.if_nameindex())
    except OSError:
        return None
    out: dict[str, list[tuple[int, str, int]]] = {name: [] for name in names.values()}
    for mtype, msg in addrs:
        if mtype != RTM_NEWADDR or len(msg) < IFADDRMSG.size:
            continue
        family, prefixlen, _flags, _scope, index = IFADDRMSG.unpack(msg[:IFADDRMSG.size])
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        at = _attrs(msg, _align(IFADDRMSG.size), len(msg))
        raw = at.get(IFA_LOCAL) or at.get(IFA_ADDRESS)
        if raw is None or index not in names:
            continue
        label = at.get(IFA_LABEL) if family == socket.AF_INET else None
        name = _name(label) if label else names[index]
        out.setdefault(name, []).append((family, socket.inet_ntop(family, raw), prefixlen))
    return out
