"""Helpers to run the supervisor as a real launcher process on a hand-built plan (tests and
benchmarks): tests/support/run_plan.py is the launcher, fake_vllm.py or real vLLM the child."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Iterable

HERE = os.path.dirname(os.path.abspath(__file__))
RUN_PLAN = os.path.join(HERE, "run_plan.py")
FAKE = os.path.join(HERE, "fake_vllm.py")
REPO = os.path.dirname(os.path.dirname(HERE))


def fake_argv(*args: str) -> list[str]:
    return [sys.executable, FAKE, *args]


def write_plan(path: str, doc: dict[str, Any]) -> str:
    with open(path, "w") as fh:
        json.dump(doc, fh)
    return path


def start_launcher(plan_path: str, *, env: dict[str, str] | None = None,
                   prefix: Iterable[str] = (), **kw: Any) -> subprocess.Popen:
    full = dict(os.environ)
    full["PYTHONPATH"] = REPO + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env or {})
    return subprocess.Popen([*prefix, sys.executable, RUN_PLAN, plan_path], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(pred, timeout: float, step: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        val = pred()
        if val:
            return val
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def read_json(path: str) -> Any:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2: data.rfind(b")") + 3] != b"Z"


def descendants(root: int) -> list[int]:
    from vllm_secure_launch.supervise import listeners as procnet

    return procnet.descendants(root)


def status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(name + ":"):
                return line.split(None, 1)[1].strip()
    return ""


class NotifySocket:
    """A real unix datagram socket to give the launcher as NOTIFY_SOCKET; a thread reads it
    continuously, as systemd does."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                msg = self.sock.recv(4096).decode()
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(msg)

    def drain(self) -> list[str]:
        with self._lock:
            return list(self.messages)

    def has(self, line: str) -> bool:
        return any(line in m.split("\n") for m in self.drain())

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        self.sock.close()
