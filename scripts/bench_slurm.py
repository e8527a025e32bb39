#!/usr/bin/env python3
"""Two-node time-to-ready on the test Slurm cluster: the rendered launcher script vs bare
`vllm serve` with hand-written flags (tests/test_cluster_slurm.py's jobs), TP 2 across two
namespace nodes, medians of N (default 3), alternated L B L B L B. Root only; run under
`flock /tmp/vsl-heavy.lock`.

Time-to-ready = sbatch submit -> the head's /health answers 200 (launcher: and both nodes'
first socket audit printed). Both are watched at 0.1 s resolution: one poller process inside
the head's network namespace asks /health every 0.1 s, and the job's output file is read every
0.05 s, each line stamped when it appears (a 3 s poll, as the e2e test uses, quantises each
start to ~3 s steps, the size of the whole 3 % target). `-v` prints the stamped lines that
mark the phases of each start (evidence for docs/benchmarks.md); `--keep DIR` keeps the logs.

A first, uncounted launcher job runs until both nodes have started vLLM, so the guard's
self-test cache (guard/cache.py) holds both nodes' entries, as any second start of the same
job finds it (benchmarks/serve_command.py does the same); then it is cancelled.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import test_cluster_slurm as T  # noqa: E402
from tests.support import slurm_cluster as sc  # noqa: E402
from tests.test_tcpstore_guard_two_node import SHIM  # noqa: E402

POLL = ("import sys, time, urllib.request as u\n"
        "while True:\n"
        "    try:\n"
        f"        if u.urlopen('http://127.0.0.1:{T.API_PORT}/health', timeout=1).status == 200:\n"
        "            print(time.monotonic(), flush=True); break\n"
        "    except Exception:\n"
        "        pass\n"
        "    time.sleep(0.1)\n")
PHASES = re.compile(r"vllm-secure-launch: (started|vLLM is healthy|headless|socket audit|"
                    r"serving|running headless)|VSL320|non-default args|Initializing a V1|"
                    r"Starting to load|Loading weights took|init engine|Starting vLLM server|"
                    r"Application startup complete|world_size=2|rank 1 in world")


class Watch:
    """The job's output file, each line stamped (seconds after t0) when it first appears."""

    def __init__(self, path: Path, t0: float) -> None:
        self.path, self.t0, self.pos, self.partial = path, t0, 0, b""
        self.lines: list[tuple[float, str]] = []

    def read(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.pos)
                data = fh.read()
        except FileNotFoundError:
            return
        self.pos += len(data)
        now = time.monotonic() - self.t0
        *done, self.partial = (self.partial + data).split(b"\n")
        self.lines += [(now, ln.decode(errors="replace")) for ln in done]

    def first(self, text: str, n: int = 1) -> float | None:
        hits = [t for t, ln in self.lines if text in ln]
        return hits[n - 1] if len(hits) >= n else None


def idle(cluster, timeout: float = 60) -> None:
    """Wait until every node is idle again (the last job's epilog done), so that each job,
    of either side, starts from the same state; sbatch -> step start otherwise varied 0.6-3 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = sc.sh("sinfo", "-h", "-N", "-o", "%T", check=False, env=cluster.env())
        states = r.stdout.split()
        if states and all(st == "idle" for st in states):
            return
        time.sleep(0.2)


def timed(cluster, script: str, name: str, audit: bool, verbose: bool) -> float:
    idle(cluster)
    t0 = time.monotonic()
    job = T.Job(cluster, script, name)
    poller = subprocess.Popen(["nsenter", f"--net=/run/netns/{cluster.netns(1)}",
                               sys.executable, "-c", POLL], stdout=subprocess.PIPE, text=True)
    watch = Watch(job.out, t0)
    try:
        ready = wait(cluster, job, poller, watch, t0, audit)
        if verbose:
            for t, ln in watch.lines:
                if PHASES.search(ln):
                    print(f"  {name} {t:7.2f} {ln[:150]}")
            print(f"  {name} {ready:7.2f} ready ({'health + 2 audits' if audit else 'health'})")
            print(f"  {name} CPU seconds at ready: {cpu_by_kind(job.id)}")
        return ready
    finally:
        if poller.poll() is None:
            os.kill(poller.pid, signal.SIGKILL)
        poller.wait()
        left = job.cancel()
        assert left == [], left


def cpu_by_kind(job: str) -> dict[str, float]:
    """CPU seconds so far (reaped children included) of the job's processes, by kind: the
    launchers, the keepers, vLLM's tree (what the launcher's own processes cost the start)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in T.job_processes(job):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = ("launcher" if b"vllm_secure_launch.cli.main" in cmd else
                "keeper" if b"keeper.py" in cmd else
                "slurm/shell" if cmd.startswith((b"srun", b"bash", b"/bin/bash")) else "vllm")
        used = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
        out[kind] = round(out.get(kind, 0.0) + used / tick, 2)
    return out


def warm_up(cluster, script: str) -> float:
    """Run a launcher job until both nodes printed "started vLLM" (their guard self-tests are
    cached by then), cancel it; returns the seconds it took."""
    t0 = time.monotonic()
    job = T.Job(cluster, script, "warm")
    try:
        while job.log().count("started vLLM") < 2:
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"warm-up job {job.id} did not start vLLM:\n{job.tail()}")
            if cluster.job_state(job.id) not in ("PENDING", "RUNNING", "CONFIGURING"):
                raise RuntimeError(f"warm-up job {job.id} ended:\n{job.tail()}")
            time.sleep(0.2)
        return time.monotonic() - t0
    finally:
        left = job.cancel()
        assert left == [], left


def wait(cluster, job, poller, watch: Watch, t0: float, audit: bool,
         timeout: float = 900) -> float:
    healthy: float | None = None
    next_state = 0.0
    while time.monotonic() - t0 < timeout:
        watch.read()
        if healthy is None and poller.poll() is not None:
            out = (poller.stdout.read() if poller.stdout else "").strip()
            if not out:
                raise RuntimeError(f"the health poller exited {poller.returncode}")
            healthy = float(out) - t0
        audited = watch.first("socket audit:", 2) if audit else 0.0
        if healthy is not None and audited is not None:
            return max(healthy, audited)
        if time.monotonic() >= next_state:
            next_state = time.monotonic() + 1.0
            state = cluster.job_state(job.id)
            if state not in ("PENDING", "RUNNING", "CONFIGURING"):
                raise RuntimeError(f"job {job.id} is {state}:\n{job.tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"job {job.id} not ready in {timeout:.0f} s:\n{job.tail()}")


def main(n: int, verbose: bool, keep: str | None) -> None:
    base = Path("/tmp/vsls-bench")
    shutil.rmtree(base, ignore_errors=True)
    sc.remove_network()
    cluster = sc.Cluster(base)
    cluster.up()
    try:
        key = base / "api.key"
        key.write_text(T.KEY + "\n")
        key.chmod(0o600)
        shim = base / "vllm_serve_shim.py"
        shim.write_text(SHIM)
        r = T.render(key, *T.VLLM_ARGS, "-tp", "2", output=str(base / "warm.out"))
        took = warm_up(cluster, r.stdout)
        print(f"warm-up (uncounted): both nodes started vLLM after {took:.1f} s", flush=True)
        launcher, bare = [], []
        for i in range(n):
            r = T.render(key, *T.VLLM_ARGS, "-tp", "2", output=str(base / f"l{i}.out"))
            launcher.append(timed(cluster, r.stdout, f"l{i}", True, verbose))
            script = T.BARE.format(out=base / f"b{i}.out", python=sys.executable, shim=shim,
                                   args=" ".join(T.VLLM_ARGS), head=cluster.internal(1),
                                   port=20777, api=T.API_PORT)
            bare.append(timed(cluster, script, f"b{i}", False, verbose))
            print(f"run {i}: launcher {launcher[-1]:.2f} s, bare {bare[-1]:.2f} s", flush=True)
        ml, mb = statistics.median(launcher), statistics.median(bare)
        print(f"median launcher {ml:.2f} s / bare {mb:.2f} s = {ml / mb:.3f} (target <= 1.03)")
    finally:
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for f in base.glob("*.out"):
                shutil.copy(f, keep)
        cluster.down()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=3)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--keep", metavar="DIR")
    a = ap.parse_args()
    main(a.n, a.verbose, a.keep)
