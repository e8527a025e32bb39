"""Network namespaces for the firewall tests (see tests/test_firewall_netns.py for the map):
svc (the service host) with a public segment (pub), an internal one (priv) and a
"metadata service" (meta, 169.254.169.254). Names carry the test's pid; down() removes all."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.supervised import wait_for

OUTSIDE = 9100  # a listener in priv and in pub, for egress probes

def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def in_ns(ns: str, *cmd: str, **kw):
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", *cmd], capture_output=True,
                          text=True, **kw)


PROBE = ("import socket,sys\n"
         "src = (sys.argv[3], 0) if len(sys.argv) > 3 else None\n"
         "try:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1,\n"
         "                          source_address=src).close()\n"
         "except OSError: sys.exit(1)\n")
PUB_OTHER = "198.51.100.3"  # a second public host (an address of pub) for source allow-lists


def connects(ns: str, host: str, port: int, source: str | None = None) -> bool:
    extra = (source,) if source else ()
    return in_ns(ns, sys.executable, "-c", PROBE, host, str(port), *extra).returncode == 0


class Net:
    def __init__(self) -> None:
        tag = f"vf{os.getpid() % 100000}"
        self.svc, self.pub, self.priv, self.meta = (f"{tag}{n}" for n in ("s", "p", "i", "m"))
        self.listeners: list[subprocess.Popen] = []

    def up(self) -> None:
        for ns in (self.svc, self.pub, self.priv, self.meta):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for peer, mine, theirs in ((self.pub, "198.51.100.1/24", "198.51.100.2/24"),
                                   (self.priv, "10.77.0.1/24", "10.77.0.2/24"),
                                   (self.meta, "169.254.169.1/16", "169.254.169.254/16")):
            a, b = f"{peer}a", f"{peer}b"
            sh("ip", "link", "add", a, "netns", self.svc, "type", "veth", "peer", b,
               "netns", peer)
            sh("ip", "-n", self.svc, "addr", "add", mine, "dev", a)
            sh("ip", "-n", peer, "addr", "add", theirs, "dev", b)
            sh("ip", "-n", self.svc, "link", "set", a, "up")
            sh("ip", "-n", peer, "link", "set", b, "up")
        sh("ip", "-n", self.pub, "addr", "add", f"{PUB_OTHER}/24", "dev", f"{self.pub}b")
        # pub may also try svc's internal address (a host on the public side that knows it)
        sh("ip", "-n", self.pub, "route", "add", "default", "via", "198.51.100.1")
        for ns, ip, port in ((self.priv, "10.77.0.2", OUTSIDE), (self.pub, "198.51.100.2",
                                                                   OUTSIDE),
                             (self.meta, "169.254.169.254", 80)):
            code = (f"import socket\ns=socket.create_server(('{ip}',{port}))\n"
                    "while True: s.accept()[0].close()\n")
            self.listeners.append(subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", code]))
        wait_for(lambda: connects(self.svc, "169.254.169.254", 80), 10, what="test listeners")

    def down(self) -> None:
        for p in self.listeners:
            p.kill()
            p.wait()
        for ns in (self.svc, self.pub, self.priv, self.meta):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
