"""procnet.py: /proc/net parsing (IPv4, IPv6, dual-stack, UDP), inode -> pid mapping of a real
process tree, and the cache (fds are mapped again only when a new listening inode appears)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from vllm_secure_launch.supervise import listeners as procnet

TCP4 = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4650 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1 0 100 0 0 10 0
   2: 0100007F:4650 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0 100 0 0 10 0
"""
TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:7531 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:7532 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:7533 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6666 1 0 100 0 0 10 0
"""
UDP4 = """   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 7777 2 0 0
  2: 0100007F:D431 08080808:0035 01 00000000:00000000 00:00000000 00000000     0        0 8888 2 0 0
  3: 00000000:0000 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 9999 2 0 0
"""


def test_parse_tcp4_listen_only():
    got = procnet.parse_table(TCP4, "tcp", 4)
    assert [(s.address, s.port, s.inode) for s in got] == [("127.0.0.1", 18000, 1111), ("0.0.0.0", 8080, 2222)]


def test_parse_tcp6_wildcard_loopback_and_v4_mapped():
    got = procnet.parse_table(TCP6, "tcp", 6)
    assert [(s.address, s.port) for s in got] == [("::", 30001), ("::1", 30002), ("127.0.0.1", 30003)]


def test_parse_udp_unconnected_bound_only():
    got = procnet.parse_table(UDP4, "udp", 4)
    assert [(s.address, s.port) for s in got] == [("0.0.0.0", 5353)]


@pytest.mark.integration  # a real two-level child tree, watched for a second
def test_scanner_maps_a_real_tree_and_caches(tmp_path):
    code = ("import socket,time,os\n"
            "a=socket.socket(); a.bind(('127.0.0.1',18300)); a.listen()\n"
            "u=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(('::',18301))\n"
            "open({!r},'w').write('x')\n"
            "time.sleep(float(os.environ.get('LATE','0')))\n"
            "b=socket.socket(); b.bind(('0.0.0.0',18302)); b.listen()\n"
            "time.sleep(60)\n").format(str(tmp_path / "up"))
    outer = subprocess.Popen([sys.executable, "-c",
                              "import subprocess,sys; subprocess.run([sys.executable,'-c',sys.argv[1]])", code],
                             env={**os.environ, "LATE": "0.5"})
    try:
        while not (tmp_path / "up").exists():
            # the child stops at once if a fixed port is taken (another run): say so, never hang
            assert outer.poll() is None, "the listening child exited early (ports 18300-18302 busy?)"
            time.sleep(0.02)
        sc = procnet.TreeScanner(outer.pid)
        obs = sc.scan(time.monotonic())
        got = {(l.proto, l.address, l.port) for l in obs.listeners}
        assert ("tcp", "127.0.0.1", 18300) in got and ("udp", "::", 18301) in got
        grandchild = procnet.descendants(outer.pid)[0]
        assert {(l.pid, l.process) for l in obs.listeners} == {(grandchild, procnet.process_name(grandchild))}
        assert obs.rescanned
        again = sc.scan(time.monotonic())  # nothing new: no fd walk
        assert not again.rescanned
        time.sleep(0.8)
        late = sc.scan(time.monotonic())
        assert late.rescanned and ("tcp", "0.0.0.0", 18302) in {(l.proto, l.address, l.port) for l in late.listeners}
        # sockets of other processes are not the tree's
        with socket.socket() as foreign:
            foreign.bind(("127.0.0.1", 18303))
            foreign.listen()
            obs = sc.scan(time.monotonic())
            assert 18303 not in {l.port for l in obs.listeners}
            assert 18303 in {l.port for l in obs.foreign}
    finally:
        outer.kill()
        for pid in procnet.descendants(outer.pid):
            os.kill(pid, 9)
        outer.wait()


def test_sock_diag_matches_the_proc_tables():
    socks = []
    for fam, typ, addr in ((socket.AF_INET6, socket.SOCK_STREAM, ("::", 18401)),
                           (socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 18402)),
                           (socket.AF_INET6, socket.SOCK_DGRAM, ("::1", 18403)),
                           (socket.AF_INET, socket.SOCK_DGRAM, ("0.0.0.0", 18404))):
        s = socket.socket(fam, typ)
        s.bind(addr)
        if typ == socket.SOCK_STREAM:
            s.listen()
        socks.append(s)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4) as nl:
            diag = {(r.proto, r.family, r.address, r.port, r.inode) for r in procnet.diag_tables(nl)}
        text = {(r.proto, r.family, r.address, r.port, r.inode) for r in procnet.read_tables()}
        mine = {(p, f, a, port) for p, f, a, port, _ in diag if 18401 <= port <= 18404}
        assert mine == {("tcp", 6, "::", 18401), ("tcp", 4, "127.0.0.1", 18402),
                        ("udp", 6, "::1", 18403), ("udp", 4, "0.0.0.0", 18404)}
        assert {x for x in diag if 18401 <= x[3] <= 18404} == {x for x in text if 18401 <= x[3] <= 18404}
    finally:
        for s in socks:
            s.close()
