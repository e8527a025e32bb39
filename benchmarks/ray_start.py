"""Issue 14: `ray start --head` through the launcher vs bare, and the launcher's idle CPU.

* time to a ready head, medians of 3, alternated (target ≤ 1.05): bare = `ray start --head
  --block` with the same pinned ports, token and environment, until it prints "Ray runtime
  started."; launcher = `vllm-secure-launch ray start --head` (kernel firewall, guard self-test
  cache warm after a first, uncounted start) until it reports the node ready (GCS and raylet
  listening, first socket audit clean);
* the launcher's own CPU (utime+stime from /proc) over 30 s while it supervises the idle head
  (audit every second): target ≤ 0.5 % of one core.
Both run in a private network namespace (vsl-rs-bench, loopback only) so no other Ray on the
host is touched. Needs root and ray; otherwise the rows say why and are not counted as misses.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

from .common import PYTHON

NS = "vsl-rs-bench"
RUNS = 3
IDLE_S = 30.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(PYTHON), "ray")
PORTS = ["--port=6379", "--node-manager-port=6380", "--object-manager-port=6381",
         "--runtime-env-agent-port=6382", "--dashboard-agent-grpc-port=6383",
         "--dashboard-agent-listen-port=6384", "--metrics-export-port=6385",
         "--ray-client-server-port=10001", "--min-worker-port=10002", "--max-worker-port=10999"]
COMMON = ["--num-cpus=1", "--object-store-memory=80000000"]


def _ns(*cmd: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{NS}", *cmd]


def _wait_line(proc: subprocess.Popen, needle: str, timeout: float = 180) -> float:
    """Seconds until `needle` appears in the process's merged output (None-safe)."""
    t0 = time.perf_counter()
    assert proc.stdout is not None
    for line in proc.stdout:
        if needle in line:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            break
    raise RuntimeError(f"{needle!r} did not appear (exit {proc.poll()})")


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Anything left in the namespace (bare Ray's daemons outlive `ray start` when killed).
    pids = subprocess.run(["ip", "netns", "pids", NS], capture_output=True, text=True).stdout
    for pid in pids.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(1)


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(_ns(*argv), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _cpu_percent(pid: int, seconds: float) -> float:
    def ticks() -> int:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])  # utime, stime

    t0, c0 = time.monotonic(), ticks()
    time.sleep(seconds)
    t1, c1 = time.monotonic(), ticks()
    return (c1 - c0) / os.sysconf("SC_CLK_TCK") / (t1 - t0) * 100


def run() -> list[dict]:
    try:
        import ray  # noqa: F401
    except ImportError:
        why = "ray is not installed (pip install ray==2.60.0)"
    else:
        why = "" if os.geteuid() == 0 and shutil.which("nsenter") else "needs root and nsenter"
    if why:
        return [{"name": "ray_start: launcher / bare to a ready head", "ratio": None,
                 "target": "≤ 1.05", "ok": True, "detail": f"skipped: {why}"}]
    tmp = tempfile.mkdtemp(prefix="vsl-rs-b-", dir="/tmp")
    token = os.path.join(tmp, "token")
    with open(os.open(token, os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
    env = {**os.environ, "PYTHONPATH": REPO, "VSL_RUNTIME_DIR": tmp}
    env.pop("RAY_ADDRESS", None)
    bare_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token,
                "RAY_USAGE_STATS_ENABLED": "0", "RAY_enable_metrics_collection": "0",
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "DASHBOARD_METRIC_PORT": "6386",
                "AUTOSCALER_METRIC_PORT": "6387"}
    bare = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", *PORTS,
            "--include-dashboard=false", "--disable-usage-stats", *COMMON, "--block"]
    launcher = [PYTHON, "-m", "vllm_secure_launch.cli.main", "--internal-ip", "127.0.0.1",
                "--ray-token-file", token, "ray", "start", "--head", *COMMON]
    try:
        times: dict[str, list[float]] = {"bare": [], "launcher": []}
        for i in range(RUNS + 1):
            order = ("bare", "launcher") if i % 2 == 0 else ("launcher", "bare")
            for kind in order:
                argv, e = (bare, bare_env) if kind == "bare" else (launcher, env)
                base_dir = os.path.join(tmp, f"b{i}")
                if kind == "bare":
                    os.makedirs(base_dir, mode=0o700)
                    argv = [*argv, f"--temp-dir={base_dir}/ray"]
                proc = _start(argv, e)
                try:
                    t = _wait_line(proc, "Ray runtime started" if kind == "bare"
                                   else "running headless")
                    if i > 0:  # the first round warms caches (guard self-test, bytecode)
                        times[kind].append(t)
                    if kind == "launcher" and i == RUNS:
                        cpu = _cpu_percent(proc.pid, IDLE_S)
                finally:
                    _stop(proc)
        b, w = statistics.median(times["bare"]), statistics.median(times["launcher"])
        ratio = w / b
        return [
            {"name": "ray_start: launcher / bare to a ready head (medians of 3)",
             "ratio": round(ratio, 3), "target": "≤ 1.05", "ok": ratio <= 1.05,
             "detail": f"launcher {w:.2f} s {times['launcher']}, bare {b:.2f} s "
                       f"{times['bare']}"},
            {"name": "ray_start: launcher CPU supervising an idle head (% of one core)",
             "ratio": round(cpu, 3), "target": "≤ 0.5", "ok": cpu <= 0.5,
             "detail": f"over {IDLE_S:g} s, audit every 1 s"},
        ]
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
