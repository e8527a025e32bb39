"""Kernel enforcement, end to end: real kernel, real nftables, real network namespaces.

Topology (all namespaces private to this test, removed afterwards):

    pub  198.51.100.2 ──── 198.51.100.1  svc  10.77.0.1 ──── 10.77.0.2  priv
                                          │ 169.254.169.1
                                          └──── 169.254.169.254  meta (a "metadata service")

The launcher (tests/support/fw_run.py: the same plan_firewall -> arm -> supervise -> disarm
steps as pipeline.serve) runs in `svc` through `nsenter --net` (not `ip netns exec`, which
remounts /sys and hides the cgroup file systems). The child is a stand-in tree
(tests/support/fw_tree.py) that binds the wildcard on three ports, one opened late.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.support.fw_net import OUTSIDE, PUB_OTHER, Net, connects, in_ns
from tests.support.supervised import REPO, wait_for, write_plan

pytestmark = pytest.mark.netns
HERE = os.path.dirname(os.path.abspath(__file__))
TREE = os.path.join(HERE, "support", "fw_tree.py")
RUNNER = os.path.join(HERE, "support", "fw_run.py")
API = 18000  # the stand-in's ports: API, API+1 (internal), API+2 (opened late)

if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("nsenter"):
    pytest.skip("needs root, nft and nsenter (scripts/test installs nftables)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def net():
    n = Net()
    try:
        n.up()
        yield n
    finally:
        n.down()


class Service:
    """One launcher in the service namespace."""

    def __init__(self, net: Net, tmp: str, mode: str, api: int = API,
                 argv: list[str] | None = None, **extra) -> None:
        self.net, self.api = net, api
        argv = argv or [sys.executable, TREE, str(api), str(api + 1), str(api + 2)]
        doc = {"argv": argv,
               "host": "0.0.0.0", "port": api, "internal_ips": ["10.77.0.1"],
               "internal_cidr": "10.77.0.0/24", "firewall": mode,
               "supervision": {"audit": "warn", "ready_timeout": 20, "stop_grace": 2}, **extra}
        plan = write_plan(os.path.join(tmp, f"plan{api}.json"), doc)
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.path.join(HERE, "support"))
        self.proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{net.svc}", sys.executable,
                                      RUNNER, plan], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def wait_ready(self, timeout: float = 20) -> None:
        wait_for(lambda: self.proc.poll() is not None or self.get("/health") == "ok", timeout,
                 what="the stand-in's /health")
        assert self.proc.poll() is None, self.output()
        time.sleep(1.3)  # the late listener

    def get(self, path: str) -> str | None:
        code = ("import urllib.request,sys\ntry: print(urllib.request.urlopen("
                f"'http://127.0.0.1:{self.api}'+sys.argv[1], timeout=5).read().decode())\n"
                "except OSError: pass\n")
        out = in_ns(self.net.svc, sys.executable, "-c", code, path).stdout.strip()
        return out or None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stdout.read() if self.proc.stdout else ""


def tables(net: Net) -> list[str]:
    out = in_ns(net.svc, "nft", "list", "tables").stdout
    return [ln.split()[-1] for ln in out.splitlines() if "vsl_" in ln]


def vsl_cgroups() -> list[str]:
    from vllm_secure_launch.firewall import cgroup as cg

    root = cg.cgroup2_mount()  # only ours: vsl-<launcher pid> (other tools use other names)
    return [] if root is None else [n for n in os.listdir(root)
                                    if re.fullmatch(re.escape(cg.PREFIX) + r"\d+", n)]


def gone(net: Net) -> bool:
    return not tables(net) and not vsl_cgroups()


@pytest.fixture
def service(net, tmp_path):
    started: list[Service] = []

    def start(mode: str, **kw) -> Service:
        s = Service(net, str(tmp_path), mode, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop(signal.SIGKILL)
    wait_for(lambda: gone(net), 10, what="tables and cgroups removed")


def test_baseline_without_enforcement_every_port_connects(net, service):
    """The probes can fail: with --firewall off every wildcard port answers the public side."""
    s = service("off")
    s.wait_ready()
    for port in (API, API + 1, API + 2):
        assert connects(net.pub, "198.51.100.1", port), port
    assert not tables(net)


def test_enforced_only_api_from_public_internal_ports_from_internal(net, service):
    """Under enforcement the public side reaches only the API; the internal side reaches the
    internal ports (the one opened late included); a listener outside the tree is untouched."""
    s = service("enforce")
    s.wait_ready()
    assert tables(net) == [f"vsl_{s.proc.pid}"] or len(tables(net)) == 1
    assert connects(net.pub, "198.51.100.1", API)
    assert not connects(net.pub, "198.51.100.1", API + 1)
    assert not connects(net.pub, "198.51.100.1", API + 2)  # opened late, still refused
    assert connects(net.priv, "10.77.0.1", API + 1)
    assert connects(net.priv, "10.77.0.1", API + 2)
    outside = subprocess.Popen(["nsenter", f"--net=/run/netns/{net.svc}", sys.executable, "-c",
                                "import socket\ns=socket.create_server(('0.0.0.0',18050))\n"
                                "while True: s.accept()[0].close()\n"])
    try:
        wait_for(lambda: connects(net.pub, "198.51.100.1", 18050), 5, what="outside listener")
    finally:
        outside.kill()
        outside.wait()


def test_api_allowed_sources_narrow_the_api_port(net, service):
    """[api] allowed_sources = ["198.51.100.2/32"]: that public host reaches the API, another
    public host (198.51.100.3) and the internal host do not (the internal network is not
    implied for the API port), the internal ports still answer the internal host, and loopback
    (the launcher's own /health) still works."""
    s = service("enforce", api_allowed_sources=["198.51.100.2/32"])
    s.wait_ready()
    assert connects(net.pub, "198.51.100.1", API, source="198.51.100.2")
    assert not connects(net.pub, "198.51.100.1", API, source=PUB_OTHER)
    assert not connects(net.pub, "198.51.100.1", API + 1, source="198.51.100.2")
    assert not connects(net.priv, "10.77.0.1", API)
    assert connects(net.priv, "10.77.0.1", API + 1)
    assert s.get("/health") == "ok"


def test_egress_metadata_refused_internal_allowed(net, service):
    """From inside the tree: 169.254.169.254 refused, an internal host reached, and (not
    strict) a public host reached."""
    s = service("enforce")
    s.wait_ready()
    assert s.get("/connect?host=169.254.169.254&port=80").startswith("error")
    assert s.get(f"/connect?host=10.77.0.2&port={OUTSIDE}") == "ok"
    assert s.get(f"/connect?host=198.51.100.2&port={OUTSIDE}") == "ok"
    # The same connection from outside the tree is not the table's business.
    assert connects(net.svc, "169.254.169.254", 80)


def test_strict_egress_refuses_unlisted_host(net, service):
    """Strict mode: only internal, loopback and the allowed media hosts; the hub is off here
    (HF_HUB_OFFLINE=1), so a public host is refused."""
    s = service("strict", env={"HF_HUB_OFFLINE": "1"}, allowed_media_domains=["198.51.100.9"])
    s.wait_ready()
    assert s.get(f"/connect?host=198.51.100.2&port={OUTSIDE}").startswith("error")
    assert s.get(f"/connect?host=10.77.0.2&port={OUTSIDE}") == "ok"
    assert s.get("/connect?host=169.254.169.254&port=80").startswith("error")


@pytest.mark.parametrize("how", ["stop", "sigkill-launcher", "child-crash"])
def test_table_and_cgroup_gone_after_every_exit(net, service, how):
    s = service("enforce")
    s.wait_ready()
    assert len(tables(net)) == 1 and len(vsl_cgroups()) == 1
    if how == "stop":
        assert s.stop(signal.SIGTERM) in (0, 143, 128 + 15)
    elif how == "sigkill-launcher":
        s.stop(signal.SIGKILL)
    else:
        s.get("/crash")
        assert s.proc.wait(timeout=30) == 3, s.output()
    wait_for(lambda: gone(net), 10, what="table and cgroup removed")
    assert not connects(net.pub, "198.51.100.1", API)  # and the tree is gone with them


def test_two_services_keep_separate_tables(net, service):
    a = service("enforce")
    b = service("enforce", api=API + 10)
    a.wait_ready()
    b.wait_ready()
    assert len(tables(net)) == 2
    a.stop(signal.SIGKILL)
    wait_for(lambda: len(tables(net)) == 1, 10, what="a's table removed")
    assert connects(net.pub, "198.51.100.1", API + 10)
    assert not connects(net.pub, "198.51.100.1", API + 11)
    assert connects(net.priv, "10.77.0.1", API + 11)


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["off", "enforce"])
def test_unguarded_tcpstore_on_the_wildcard_is_unreachable_from_public_only_by_enforcement(
        net, service, mode):
    """The TCPStore guard deliberately absent (a real torch TCPStore master listens on [::]):
    without enforcement the public side reaches it (baseline), with enforcement alone it does
    not, while the internal side still does."""
    store = 18070
    s = service(mode, api=18060, argv=[sys.executable, os.path.join(HERE, "support",
                                                                    "fw_tcpstore.py"),
                                       "18060", str(store)])
    s.wait_ready(timeout=120)
    assert connects(net.priv, "10.77.0.1", store)
    assert connects(net.pub, "198.51.100.1", store) is (mode == "off")


def _netfilter_sockets(net: Net) -> set[str]:
    """Inodes of NETLINK_NETFILTER (protocol 12) sockets in the service namespace."""
    rows = in_ns(net.svc, "cat", "/proc/net/netlink").stdout.splitlines()[1:]
    return {r.split()[-1] for r in rows if r.split()[1] == "12"}


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(link[8:-1])
    except OSError:
        pass
    return out


def test_only_the_keeper_holds_the_tables_netlink_socket(net, service):
    """Whoever holds the owner socket may delete the table: vLLM's tree must not have it."""
    from tests.support.supervised import descendants

    s = service("enforce")
    s.wait_ready()
    nf = _netfilter_sockets(net)
    tree = descendants(s.proc.pid)
    launcher = s.proc.pid  # nsenter (--net only) execs the launcher in place
    keeper_pid = [p for p in tree if "keeper.py" in open(f"/proc/{p}/cmdline").read()][0]
    assert _socket_inodes(keeper_pid) & nf  # the check can see it
    for pid in descendants(keeper_pid):
        assert not _socket_inodes(pid) & nf, pid
    assert not _socket_inodes(launcher) & nf
