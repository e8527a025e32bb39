"""`vllm-secure-launch --dry-run ray start ...` as a user runs it (a real subprocess, no Ray
started): the exact command line and environment, exit 0 or 78, never the token's value, and
neither Ray, torch nor vLLM imported by the launcher. The confined-port verdict of the audit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vllm_secure_launch.addresses import ApiEndpoint
from vllm_secure_launch.plan.model import ExpectedListeners
from vllm_secure_launch.supervise.audit import Listener, judge

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "f" * 64


def dry(tmp_path, *ray_args: str, extra: tuple[str, ...] = (), env: dict | None = None):
    token = tmp_path / "token"
    if not token.exists():
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
    code = ("import runpy,sys,json\nsys.argv=['vllm-secure-launch',*sys.argv[1:]]\n"
            "try:\n runpy.run_module('vllm_secure_launch.cli.main', run_name='__main__')\n"
            "finally:\n print('MODULES '+json.dumps(sorted(m for m in ('ray','torch','vllm') "
            "if m in sys.modules)))\n")
    full = {**os.environ, "PYTHONPATH": REPO, "VSL_FIREWALL": "auto", **(env or {})}
    full.pop("RAY_AUTH_TOKEN", None)
    return subprocess.run([sys.executable, "-c", code, "--dry-run", "--internal-ip",
                           "127.0.0.1", "--ray-token-file", str(token), *extra, "ray", "start",
                           *ray_args], capture_output=True, text=True, env=full, timeout=60)


@pytest.mark.integration  # the launcher CLI as a child
def test_dry_run_prints_the_exact_command_and_no_token(tmp_path):
    r = dry(tmp_path, "--head")
    out = r.stdout + r.stderr
    assert TOKEN not in out
    assert "MODULES []" in r.stdout
    assert "ray start --head --node-ip-address=127.0.0.1 --port=6379" in r.stdout
    assert "RAY_AUTH_MODE=token" in r.stdout and f"RAY_AUTH_TOKEN_PATH={tmp_path}/token" in out
    assert r.returncode in (0, 78), out  # 78 only where this host cannot enforce the firewall
    if r.returncode == 78:
        assert "VSL715" in r.stdout


@pytest.mark.integration  # the launcher CLI as a child
def test_dry_run_refuses_a_public_dashboard_with_78(tmp_path):
    r = dry(tmp_path, "--head", "--include-dashboard", "true", "--dashboard-host", "0.0.0.0")
    assert r.returncode == 78 and "VSL705" in r.stdout


@pytest.mark.integration  # the launcher CLI as a child
def test_dry_run_json_has_the_ray_section(tmp_path):
    r = dry(tmp_path, "--address", "127.0.0.1:6379", extra=("--format", "json"))
    doc = json.loads(r.stdout.rsplit("MODULES", 1)[0])
    assert doc["kind"] == "plan" and doc["ray"]["role"] == "worker"
    assert doc["env"]["RAY_AUTH_MODE"] == "token"


def test_audit_allows_the_wildcard_only_on_confined_ports():
    exp = ExpectedListeners(ApiEndpoint(None, None, headless=True), ("10.0.0.5",),
                            confined_ports=((6379, 6379), (10002, 10999)))
    assert judge(exp, Listener("tcp", "::", 6379)).reason == "confined"
    assert judge(exp, Listener("tcp", "0.0.0.0", 10500)).allowed
    assert not judge(exp, Listener("tcp", "::", 6390)).allowed
    assert not judge(exp, Listener("udp", "::", 6379)).allowed
    none = ExpectedListeners(ApiEndpoint(None, None, headless=True), ("10.0.0.5",))
    assert not judge(none, Listener("tcp", "::", 6379)).allowed
