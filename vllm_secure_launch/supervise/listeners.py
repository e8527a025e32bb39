"""Observe the listening sockets of a process tree from /proc (Linux).

Why not `ss -p` or psutil.net_connections(): both map every socket of the host to a process by
scanning every /proc/*/fd on every call. Here the listening sockets come from a NETLINK_SOCK_DIAG
dump filtered to LISTEN / unconnected UDP (as `ss -l` does; falling back to the text tables
/proc/PID/net/{tcp,tcp6,udp,udp6}, which are also used for other network namespaces), and
socket inodes are mapped to the tree's processes only when a listening inode appears that was
not seen before. An idle service therefore costs four small netlink dumps per audit.

"Listening" means: TCP sockets in LISTEN, and bound, unconnected UDP sockets (what `ss -lu`
shows). Sockets of processes in another network namespace are read from that namespace's
tables (one reader per distinct netns of the tree).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Iterable

from vllm_secure_launch.supervise.audit import Listener, canonical_ip
from vllm_secure_launch.supervise.keeper import ppid_map

_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"  # TCP_CLOSE in the UDP table: bound, not connected
_TABLES = (("tcp", 4), ("tcp6", 6), ("udp", 4), ("udp6", 6))


@dataclass(frozen=True)
class RawSocket:
    proto: str
    family: int
    address: str
    port: int
    inode: int


def decode_address(hexaddr: str, family: int) -> str:
    """/proc/net address: 32-bit words in host byte order (little-endian on x86 and arm64)."""
    raw = bytes.fromhex(hexaddr)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    return canonical_ip(socket.inet_ntop(af, raw))


def parse_table(text: str, proto: str, family: int) -> list[RawSocket]:
    """Listening sockets of one /proc/net/{tcp,tcp6,udp,udp6} table."""
    want = _TCP_LISTEN if proto == "tcp" else _UDP_UNCONNECTED
    out: list[RawSocket] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10 or parts[3] != want:
            continue
        host, _, port_hex = parts[1].rpartition(":")
        port = int(port_hex, 16)
        if port == 0:  # an unbound UDP socket receives nothing
            continue
        out.append(RawSocket(proto, family, decode_address(host, family), port, int(parts[9])))
    return out


def read_tables(pid: int | str = "self") -> list[RawSocket]:
    """Every listening socket in the network namespace of `pid`."""
    out: list[RawSocket] = []
    for name, family in _TABLES:
        try:
            with open(f"/proc/{pid}/net/{name}") as fh:
                text = fh.read()
        except FileNotFoundError:  # IPv6 disabled: no tcp6/udp6 table
            continue
        out.extend(parse_table(text, name[:3], family))
    return out


# -- NETLINK_SOCK_DIAG: what `ss` uses. Reading /proc/net/tcp makes the kernel walk the whole
# established-connections hash table (milliseconds even when it is empty: it is sized by RAM);
# a sock_diag dump filtered to LISTEN only walks the listening sockets.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_ST_LISTEN = 10
_ST_CLOSE = 7  # for UDP: bound and not connected
_HDR = struct.Struct("=LHHLL")
_DIAG_MSG_MIN = 72  # struct inet_diag_msg


def _diag_request(family: int, protocol: int, states: int, seq: int) -> bytes:
    body = struct.pack("=BBBxI", family, protocol, 0, states) + bytes(48)  # inet_diag_req_v2
    return _HDR.pack(_HDR.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0) + body


def _diag_dump(sock: socket.socket, proto: str, family: int, seq: int) -> list[RawSocket]:
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    ipproto, state = (socket.IPPROTO_TCP, _ST_LISTEN) if proto == "tcp" else (socket.IPPROTO_UDP, _ST_CLOSE)
    sock.send(_diag_request(af, ipproto, 1 << state, seq))
    out: list[RawSocket] = []
    alen = 4 if family == 4 else 16
    while True:
        data = sock.recv(65536)
        off = 0
        while off + _HDR.size <= len(data):
            length, mtype, _flags, mseq, _pid = _HDR.unpack_from(data, off)
            if length < _HDR.size:
                return out
            if mseq == seq:
                if mtype == _NLMSG_DONE:
                    return out
                if mtype == _NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + _HDR.size)[0]
                    raise OSError(err, f"sock_diag: {os.strerror(err)}")
                if mtype == _SOCK_DIAG_BY_FAMILY and length - _HDR.size >= _DIAG_MSG_MIN:
                    m = off + _HDR.size
                    port = struct.unpack_from("!H", data, m + 4)[0]
                    addr = socket.inet_ntop(af, data[m + 8 : m + 8 + alen])
                    inode = struct.unpack_from("=I", data, m + 68)[0]
                    if port:
                        out.append(RawSocket(proto, family, canonical_ip(addr), port, inode))
            off += (length + 3) & ~3


def diag_tables(sock: socket.socket) -> list[RawSocket]:
    """Every listening socket of the caller's network namespace, via sock_diag."""
    out: list[RawSocket] = []
    for seq, (name, family) in enumerate(_TABLES, 1):
        try:
            out.extend(_diag_dump(sock, name[:3], family, seq))
        except OSError as exc:
            if exc.errno in (errno.EAFNOSUPPORT, errno.ENOENT, errno.EINVAL) and family == 6:
                continue  # IPv6 disabled
            raise
    return out


def socket_inodes(pid: int) -> set[int]:
    """Inodes of every socket fd of `pid` (empty when it is gone)."""
    base = f"/proc/{pid}/fd"
    inodes: set[int] = set()
    try:
        fds = os.listdir(base)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"{base}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def descendants(root: int) -> list[int]:
    """Every descendant of `root`, parents before children (root excluded)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in ppid_map().items():
        children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def _netns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


@dataclass
class Observation:
    listeners: list[Listener]  # sockets held by the tree
    foreign: list[Listener]  # listening sockets of the same namespaces not held by the tree
    tree: list[int]
    rescanned: bool  # whether fds were mapped this time (the expensive part)


@dataclass
class TreeScanner:
    """Listening sockets of every descendant of `root` (the launcher itself, normally).

    Keeps a cache inode -> holders; the tree's fds are mapped again only when a listening inode
    appears that is not in the cache, or every `tree_refresh` seconds (to find new network
    namespaces), or when `force` is passed.
    """

    root: int
    tree_refresh: float = 10.0
    _owners: dict[int, tuple[int, ...]] = field(default_factory=dict)
    _foreign: set[int] = field(default_factory=set)
    _tree: list[int] = field(default_factory=list)
    _ns_pids: list[int | str] = field(default_factory=lambda: ["self"])
    _names: dict[int, str] = field(default_factory=dict)
    _last_tree: float = float("-inf")
    use_netlink: bool = True
    _nl: socket.socket | None = None

    def scan(self, now: float, force: bool = False) -> Observation:
        if force or now - self._last_tree >= self.tree_refresh:
            self._refresh_tree(now)
        raw = self._read()
        live = {r.inode for r in raw}
        unknown = live - self._owners.keys() - self._foreign
        rescanned = False
        if unknown or force:
            self._refresh_tree(now)
            raw = self._read()
            live = {r.inode for r in raw}
            self._map(live)
            rescanned = True
        # Forget sockets that closed, so a reused inode number is looked at again.
        self._owners = {i: p for i, p in self._owners.items() if i in live}
        self._foreign &= live
        mine, foreign = self._split(raw)
        return Observation(mine, foreign, list(self._tree), rescanned)

    def _refresh_tree(self, now: float) -> None:
        self._tree = descendants(self.root)
        self._last_tree = now
        seen: dict[str, int | str] = {}
        own = _netns(os.getpid())
        if own is not None:
            seen[own] = "self"
        for pid in self._tree:
            ns = _netns(pid)
            if ns is not None and ns not in seen:
                seen[ns] = pid
        self._ns_pids = list(seen.values()) or ["self"]

    def _read(self) -> list[RawSocket]:
        raw: list[RawSocket] = []
        for pid in self._ns_pids:
            try:
                raw.extend(self._read_own() if pid == "self" else read_tables(pid))
            except (ProcessLookupError, PermissionError, OSError):
                if pid == "self":
                    raise
        return raw

    def _read_own(self) -> list[RawSocket]:
        """Our namespace: sock_diag when the kernel has it, else the /proc/net text tables."""
        if self.use_netlink:
            try:
                if self._nl is None:
                    self._nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                             _NETLINK_SOCK_DIAG)
                    self._nl.settimeout(2.0)
                return diag_tables(self._nl)
            except OSError:
                self.use_netlink = False
                self.close()
        return read_tables("self")

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None

    def _map(self, live: set[int]) -> None:
        holders: dict[int, list[int]] = {}
        for pid in self._tree:
            for inode in socket_inodes(pid) & live:
                holders.setdefault(inode, []).append(pid)
                if pid not in self._names:
                    self._names[pid] = process_name(pid)
        for inode in live:
            if inode in holders:
                self._owners[inode] = tuple(holders[inode])
                self._foreign.discard(inode)
            elif inode not in self._owners:
                self._foreign.add(inode)
        alive = set(self._tree)
        self._names = {p: n for p, n in self._names.items() if p in alive}

    def _split(self, raw: Iterable[RawSocket]) -> tuple[list[Listener], list[Listener]]:
        mine: list[Listener] = []
        foreign: list[Listener] = []
        seen: set[tuple[int, str, int]] = set()
        for r in raw:
            key = (r.inode, r.proto, r.family)
            if key in seen:  # the same namespace read twice
                continue
            seen.add(key)
            pids = self._owners.get(r.inode)
            if pids:
                pid = pids[0]
                mine.append(
                    Listener(r.proto, r.address, r.port, r.inode, pid, self._names.get(pid), pids, r.family)
                )
            else:
                foreign.append(Listener(r.proto, r.address, r.port, r.inode, None, None, (), r.family))
        return mine, foreign
