"""The shipped examples are valid for the real tools: the systemd unit passes
`systemd-analyze verify`, the policy parses (tests/test_policy.py)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_unit_verifies(tmp_path):
    unit = (ROOT / "examples" / "vllm-secure-launch.service").read_text()
    launcher = pathlib.Path(sys.executable).with_name("vllm-secure-launch")
    assert launcher.exists()
    # verify checks that ExecStart's binary exists and that the user is known here
    unit = (unit.replace("/opt/vllm/bin/vllm-secure-launch", str(launcher))
            .replace("User=vllm", "User=root").replace("Group=vllm", "Group=root"))
    path = tmp_path / "vllm-secure-launch.service"
    path.write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "RestartPreventExitStatus=69 77 78 126 127" in unit
    assert "NotifyAccess=main" in unit and "Type=notify" in unit
