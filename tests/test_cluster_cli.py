"""`render sbatch` and `--dry-run` inside a Slurm step, through the real CLI (no Slurm needed:
the step is its environment variables; the rendered script is checked by `sbatch --test-only`
on a real cluster in tests/test_cluster_slurm.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Not in the fast lane: the launcher CLI as a child process.
pytestmark = pytest.mark.integration

ROOT = str(Path(__file__).resolve().parents[1])


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "VSL_"))}
    return subprocess.run([sys.executable, "-m", "vllm_secure_launch.cli.main", *args],
                          capture_output=True, text=True, cwd="/",
                          env={**base, "PYTHONPATH": ROOT, **(env or {})})


@pytest.fixture
def key(tmp_path) -> Path:
    path = tmp_path / "api.key"
    path.write_text("k" * 32 + "\n")
    path.chmod(0o600)
    return path


def test_render_sbatch_writes_one_task_per_node_and_no_secret(key):
    r = cli("--internal-cidr", "10.0.0.0/8", "--api-key-file", str(key), "--accelerator", "cpu",
            "render", "sbatch", "--nodes", "2", "--partition", "gpu", "--time", "1:00:00",
            "m", "-tp", "2")
    assert r.returncode == 0, r.stderr
    s = r.stdout
    assert s.startswith("#!/bin/bash\n")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --partition=gpu",
                 "#SBATCH --time=1:00:00", "srun --kill-on-bad-exit=1"):
        assert line in s
    # Launcher options are written back in the settings table's order.
    assert "--slurm on " in s and "--internal-cidr 10.0.0.0/8 serve m -tp 2" in s
    assert f"--api-key-file {key}" in s
    assert "k" * 32 not in s and "--node-rank" not in s


@pytest.mark.parametrize("extra,args,words", [
    ((), ("m", "-tp", "3"), "not a multiple of 2 nodes"),
    ((), ("m",), "fits on one node"),
    ((), ("m", "-tp", "2", "--headless"), "is per node"),
    (("--internal-ip", "10.0.0.1"), ("m", "-tp", "2"), "one node's address"),
])
def test_render_sbatch_refusals(key, extra, args, words):
    r = cli("--internal-cidr", "10.0.0.0/8", "--api-key-file", str(key), "--accelerator", "cpu",
            *extra, "render", "sbatch", "--nodes", "2", *args)
    assert r.returncode in (2, 78) and words in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_render_sbatch_needs_a_key_file_and_an_internal_network(key):
    r = cli("--internal-cidr", "10.0.0.0/8", "render", "sbatch", "--nodes", "2", "m", "-tp", "2")
    assert r.returncode == 78 and "--api-key-file" in r.stderr
    r = cli("--api-key-file", str(key), "render", "sbatch", "--nodes", "2", "m", "-tp", "2")
    assert r.returncode == 78 and "internal network" in r.stderr


def test_dry_run_in_a_slurm_step_shows_the_derived_options():
    env = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "h[1-2]",
           "SLURMD_NODENAME": "h1", "SLURM_NODEID": "0", "SLURM_STEP_TASKS_PER_NODE": "1(x2)",
           "VLLM_API_KEY": "k" * 32}
    r = cli("--dry-run", "--internal-cidr", "127.0.0.0/8", "--accelerator", "cpu", "serve", "m",
            "-tp", "2", env=env)
    # (loopback as the "internal" network is refused for multi-node, VSL113: that is right)
    assert r.returncode in (0, 78) and "Traceback" not in r.stderr, r.stderr
    assert "--nnodes=2" in r.stdout and "--node-rank=0" in r.stdout
    assert "--master-addr=127.0.0.1" in r.stdout and "--master-port=20014" in r.stdout
    assert "VSL320" in r.stdout
    r = cli("--dry-run", "--internal-cidr", "127.0.0.0/8", "--accelerator", "cpu", "serve", "m",
            "-tp", "3", env=env)
    assert r.returncode == 78 and "VSL324" in r.stdout


def test_render_sbatch_copies_the_policy_and_makes_paths_absolute(key, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text("[launcher]\naudit = \"enforce\"\n")
    r = subprocess.run([sys.executable, "-m", "vllm_secure_launch.cli.main", "--policy",
                        "policy.toml", "--internal-cidr", "10.0.0.0/8", "--api-key-file",
                        "api.key", "--accelerator", "cpu", "render", "sbatch", "--nodes", "2",
                        "m", "-tp", "2"], capture_output=True, text=True, cwd=str(tmp_path),
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr
    assert f"--policy {policy}" in r.stdout and f"--api-key-file {key}" in r.stdout


@pytest.mark.parametrize("value,spelled", [("./peers/rank_table.json", "{tmp}/peers/rank_table.json"),
                                           ("192.168.100.201,192.168.101.201",
                                            "192.168.100.201,192.168.101.201")])
def test_render_sbatch_copies_npu_peers_and_makes_a_peer_file_absolute(key, tmp_path, value,
                                                                         spelled):
    """--npu-peers is one value for the whole job: copied into the script; a file path is
    made absolute (each node starts in the job's working directory), a list stays."""
    r = subprocess.run([sys.executable, "-m", "vllm_secure_launch.cli.main", "--internal-cidr",
                        "10.0.0.0/8", "--api-key-file", "api.key", "--accelerator", "cpu",
                        "--npu-peers", value, "render", "sbatch", "--nodes", "2", "m", "-tp",
                        "2"], capture_output=True, text=True, cwd=str(tmp_path),
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr
    assert f"--npu-peers {spelled.format(tmp=tmp_path)}" in r.stdout
