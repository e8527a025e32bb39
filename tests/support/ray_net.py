"""Namespaces for the Ray e2e test (tests/test_ray_start_netns.py): a switch namespace with an
internal and a public bridge, a head (h), a worker (w) and an attacker (a) on the public
segment only; the attacker also routes the internal subnet via the head's and the worker's
public addresses (Linux's weak host model would let that through). Names carry `vsl-rs-`
and the test's pid; down() kills what is left inside and removes them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

INT, PUB = "10.93.0", "10.94.0"
HEAD_INT, WORKER_INT = f"{INT}.1", f"{INT}.2"
HEAD_PUB, WORKER_PUB, ATTACKER = f"{PUB}.1", f"{PUB}.2", f"{PUB}.66"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def in_ns(ns: str, *cmd: str, **kw):
    kw.setdefault("capture_output", True)
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", *cmd], text=True, **kw)


PROBE = ("import socket,sys\nhost=sys.argv[1]\nbad=[]\n"
         "for p in sys.argv[2:]:\n"
         " try:\n  socket.create_connection((host,int(p)),timeout=1.5).close(); bad.append(p)\n"
         " except OSError: pass\n"
         "print(','.join(bad))\n")


def open_ports(ns: str, host: str, ports: list[int]) -> list[int]:
    """Which of `ports` on `host` accept a TCP connection from namespace `ns`."""
    out = in_ns(ns, sys.executable, "-c", PROBE, host, *map(str, ports)).stdout.strip()
    return [int(p) for p in out.split(",") if p]


class RayNet:
    def __init__(self) -> None:
        tag = f"vsl-rs-{os.getpid() % 10000}"
        self.sw, self.head, self.worker, self.attacker = (f"{tag}{n}" for n in "swha")

    @property
    def all(self) -> tuple[str, ...]:
        return (self.head, self.worker, self.attacker, self.sw)

    def _attach(self, ns: str, ifname: str, bridge: str, port: str, cidr: str) -> None:
        sh("ip", "-n", self.sw, "link", "add", port, "type", "veth", "peer", "name", ifname,
           "netns", ns)
        sh("ip", "-n", self.sw, "link", "set", port, "master", bridge, "up")
        sh("ip", "-n", ns, "addr", "add", cidr, "dev", ifname)
        sh("ip", "-n", ns, "link", "set", ifname, "up")

    def up(self) -> None:
        for ns in self.all:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for br in ("brint", "brpub"):
            sh("ip", "-n", self.sw, "link", "add", br, "type", "bridge")
            sh("ip", "-n", self.sw, "link", "set", br, "up")
        self._attach(self.head, "int0", "brint", "h-int", f"{HEAD_INT}/24")
        self._attach(self.head, "pub0", "brpub", "h-pub", f"{HEAD_PUB}/24")
        self._attach(self.worker, "int0", "brint", "w-int", f"{WORKER_INT}/24")
        self._attach(self.worker, "pub0", "brpub", "w-pub", f"{WORKER_PUB}/24")
        self._attach(self.attacker, "pub0", "brpub", "a-pub", f"{ATTACKER}/24")
        # The attacker knows the internal addresses and routes them via the public ones.
        sh("ip", "-n", self.attacker, "route", "add", f"{HEAD_INT}/32", "via", HEAD_PUB)
        sh("ip", "-n", self.attacker, "route", "add", f"{WORKER_INT}/32", "via", WORKER_PUB)

    def pids(self) -> list[int]:
        out: list[int] = []
        for ns in self.all:
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            out += [int(p) for p in r.stdout.split()]
        return out

    def down(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.5 if sig == signal.SIGTERM and self.pids() else 0)
        for ns in self.all:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def exists(self) -> list[str]:
        return [ns for ns in self.all if os.path.exists(f"/run/netns/{ns}")]
