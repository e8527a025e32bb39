"""Across network namespaces: torch's listeners stay on the private address with the guard and
the environment the plan sets, and cannot be reached from the "public" side.

Layout (all names start with `vslts`, all addresses exist only in these namespaces):

    ns "node" (vslts<tag>a)                         ns "outside" (vslts<tag>o)
      vsltsv<tag>  10.77.<n>.1/24  private
      vsltsq<tag>  198.18.<n>.1/24 "public"  <--veth-->  vsltsr<tag> 198.18.<n>.2/24
      hostname -> 198.18.<n>.1 (/etc/netns/<ns>/hosts), so gloo picks the public address

Two ranks (spawn) run the scenario file in the node namespace with the master address set to
the private IP: a master store + client, a port-0 store, rendezvous(), an explicit-fd store and
gloo process groups of 1 and 2 ranks. While everything is open, the outside namespace probes
every listener through the public address.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests._guard_venv import SCENARIOS, clean_env, make_venv

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed"),
]

PROBE = r"""
import json, socket, sys
targets = json.loads(sys.argv[1])
out = []
for ip, port in targets:
    s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
    s.settimeout(3)
    out.append([ip, port, s.connect_ex((ip, port))])
    s.close()
print(json.dumps(out))
"""


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, text=True)


class Topology:
    def __init__(self) -> None:
        n = os.getpid() % 200 + 20
        tag = f"{os.getpid() % 10000:04d}"
        self.node, self.outside = f"vslts{tag}a", f"vslts{tag}o"
        self.priv_if, self.pub_if, self.peer_if = f"vsltsv{tag}", f"vsltsq{tag}", f"vsltsr{tag}"
        self.private, self.public, self.outside_ip = f"10.77.{n}.1", f"198.18.{n}.1", f"198.18.{n}.2"
        self.etc = Path("/etc/netns") / self.node

    def up(self) -> None:
        node, out = self.node, self.outside
        sh("ip", "netns", "add", node)
        sh("ip", "netns", "add", out)
        sh("ip", "-n", node, "link", "set", "lo", "up")
        sh("ip", "-n", out, "link", "set", "lo", "up")
        sh("ip", "-n", node, "link", "add", self.priv_if, "type", "veth", "peer", "name",
           self.priv_if + "x")
        sh("ip", "-n", node, "link", "add", self.pub_if, "type", "veth", "peer", "name",
           self.peer_if, "netns", out)
        sh("ip", "-n", node, "addr", "add", self.private + "/24", "dev", self.priv_if)
        sh("ip", "-n", node, "addr", "add", self.public + "/24", "dev", self.pub_if)
        sh("ip", "-n", out, "addr", "add", self.outside_ip + "/24", "dev", self.peer_if)
        for dev in (self.priv_if, self.priv_if + "x", self.pub_if):
            sh("ip", "-n", node, "link", "set", dev, "up")
        sh("ip", "-n", out, "link", "set", self.peer_if, "up")
        # `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts for the command.
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "hosts").write_text(
            f"127.0.0.1 localhost\n::1 localhost\n{self.public} {socket.gethostname()}\n")

    def down(self) -> None:
        for ns in (self.node, self.outside):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.etc, ignore_errors=True)

    def plan_env(self) -> dict[str, str]:
        """What the launcher's plan sets for this node (lead's planner + the guard)."""
        return {
            "VSL_TCPSTORE_ALLOWED": f"{self.private},127.0.0.1,::1",
            "VLLM_HOST_IP": self.private,
            "GLOO_SOCKET_IFNAME": self.priv_if,
            "NCCL_SOCKET_IFNAME": self.priv_if,
            "TP_SOCKET_IFNAME": self.priv_if,
        }


@pytest.fixture(scope="module")
def topo():
    t = Topology()
    t.down()
    try:
        t.up()
    except subprocess.CalledProcessError as exc:
        t.down()
        pytest.fail(f"cannot build the namespaces: {exc.stderr}")
    yield t
    t.down()


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> str:
    return make_venv(tmp_path_factory.mktemp("vslts-nsvenv") / "venv")


def run_held(topo: Topology, python: str, env: dict, base: int, hold: Path, *extra: str):
    """Run both ranks in the node namespace; probe all their listeners from the outside
    namespace (public address) while they are held open. Returns (result, listeners, probes)."""
    hold.mkdir()
    proc = subprocess.Popen(
        ["ip", "netns", "exec", topo.node, python, SCENARIOS, "spawn", "libuv", topo.private,
         str(base), *extra],
        env={**env, "VSLTS_HOLD_DIR": str(hold)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd="/",
    )
    try:
        deadline = time.monotonic() + 240
        files = [hold / "rank0.json", hold / "rank1.json"]
        while not all(f.exists() for f in files):
            if proc.poll() is not None or time.monotonic() > deadline:
                out, err = proc.communicate(timeout=30)
                pytest.fail(f"ranks did not publish their listeners: {out[-2000:]} {err[-3000:]}")
            time.sleep(0.2)
        listeners = [tuple(x) for f in files for x in json.loads(f.read_text())]
        ports = sorted({p for _ip, p in listeners})
        targets = [[topo.public, p] for p in ports] + [[topo.private, p] for p in ports]
        probe = subprocess.run(["ip", "netns", "exec", topo.outside, "python3", "-c", PROBE,
                                json.dumps(targets)], capture_output=True, text=True, timeout=300)
        assert probe.returncode == 0, probe.stderr
        probes = json.loads(probe.stdout)
    finally:
        (hold / "release").touch()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), listeners, probes


def test_unguarded_baseline_reaches_public_and_wildcard(topo, venv_python, tmp_path):
    """Baseline: without the guard and the plan's env, rank 0's stores listen on [::] and gloo
    on the public address (the hostname's), and the outside namespace can connect to them."""
    res, listeners, probes = run_held(topo, venv_python, clean_env(), 20300, tmp_path / "h",
                                      "--no-refusals")
    assert all("error" not in r for r in res["ranks"]), res
    ips = {ip for ip, _p in listeners}
    assert "::" in ips or "0.0.0.0" in ips, listeners
    assert topo.public in ips, listeners  # gloo followed the hostname
    reachable = [(ip, p) for ip, p, rc in probes if ip == topo.public and rc == 0]
    assert reachable, probes


def test_guarded_every_listener_of_every_rank_is_private_and_unreachable_from_public(
        topo, venv_python, tmp_path):
    env = clean_env(topo.plan_env())
    res, listeners, probes = run_held(topo, venv_python, env, 20320, tmp_path / "h")
    r0, r1 = res["ranks"]
    assert "error" not in r0 and "error" not in r1, (r0.get("error"), r1.get("error"))
    assert r0["guarded"] and r1["guarded"]
    assert r0["pg2"] == r1["pg2"] == [3.0, 3.0] and r0["rendezvous"] == "ok"
    assert r0["refuse_wildcard4"].startswith("TCPStoreGuardError")
    assert listeners and {ip for ip, _p in listeners} == {topo.private}, listeners
    assert {20320, 20321, 20324} <= {p for _ip, p in listeners}
    for ip, port, rc in probes:
        # public address: nothing listens there (connection refused); private: no route from
        # the public segment at all.
        assert rc != 0, f"{ip}:{port} reachable from the public side"
        if ip == topo.public:
            assert rc == 111, (ip, port, rc)  # ECONNREFUSED
