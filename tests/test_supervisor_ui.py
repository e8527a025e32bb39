"""cli/ui.py: the launcher's own stderr lines are prefixed (text) or JSON objects, the live
status line appears only on a terminal and is cleared before any other output."""

from __future__ import annotations

import io
import json
import os

from vllm_secure_launch.rules.audit_rules import WILDCARD_LISTENER
from vllm_secure_launch.supervise.ui import PREFIX, UI


def test_text_lines_are_prefixed_and_findings_carry_id_and_fix():
    buf = io.StringIO()
    ui = UI(stream=buf, tty=False)
    ui.info("hello")
    ui.warn("careful")
    ui.finding(WILDCARD_LISTENER.finding("0.0.0.0:1/tcp", "pid 1 (x) listens on 0.0.0.0:1/tcp."))
    ui.status("loading", 12.0)  # not a terminal: no status line
    lines = buf.getvalue().splitlines()
    assert lines[0] == f"{PREFIX} hello"
    assert lines[1] == f"{PREFIX} warning: careful"
    assert lines[2].startswith(f"{PREFIX} error: VSL600 [0.0.0.0:1/tcp]") and "Fix:" in lines[2]
    assert len(lines) == 3


def test_json_lines():
    buf = io.StringIO()
    ui = UI(stream=buf, log_format="json", tty=True)
    ui.info("ready", event="ready", url="http://127.0.0.1:1")
    ui.finding(WILDCARD_LISTENER.finding("s", "m"))
    docs = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert docs[0]["msg"] == "ready" and docs[0]["event"] == "ready" and docs[0]["level"] == "info"
    assert docs[1]["finding"]["id"] == "VSL600" and docs[1]["level"] == "error"
    assert "ts" in docs[0]


def test_status_line_on_a_terminal_is_cleared_before_other_output():
    buf = io.StringIO()
    t = [0.0]
    ui = UI(stream=buf, tty=True, clock=lambda: t[0])
    ui.status("loading", 65.0, "waiting for /health", force=True)
    assert buf.getvalue().endswith(f"{PREFIX} [1:05] loading – waiting for /health")
    ui.info("healthy")
    out = buf.getvalue()
    assert f"\r\033[K{PREFIX} healthy\n" in out  # status erased, our line, status redrawn
    assert out.endswith("loading – waiting for /health")
    r, w = os.pipe()
    ui.passthrough(w, b"vllm line\n")
    assert os.read(r, 100) == b"vllm line\n"  # vLLM's bytes unchanged
    os.close(r)
    os.close(w)
