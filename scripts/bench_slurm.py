#!/usr/bin/env python3
"""Two-node time-to-ready on the test Slurm cluster: the rendered launcher script vs bare
`vllm serve` with hand-written flags (tests/test_cluster_slurm.py's jobs), TP 2 across two
namespace nodes, medians of N (default 3). Root only; run under `flock /tmp/vsl-heavy.lock`.
Time-to-ready = sbatch submit -> the head's /health answers 200 (launcher: and both nodes'
first socket audit printed)."""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import test_cluster_slurm as T  # noqa: E402
from tests.support import slurm_cluster as sc  # noqa: E402
from tests.test_tcpstore_guard_two_node import SHIM  # noqa: E402


def timed(cluster, script: str, name: str, audit: bool) -> float:
    t0 = time.monotonic()
    job = T.Job(cluster, script, name)
    try:
        job.wait_ready(need_audit=audit)
        return time.monotonic() - t0
    finally:
        left = job.cancel()
        assert left == [], left


def main(n: int = 3) -> None:
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
        launcher, bare = [], []
        for i in range(n):
            r = T.render(key, *T.VLLM_ARGS, "-tp", "2", output=str(base / f"l{i}.out"))
            launcher.append(timed(cluster, r.stdout, f"l{i}", True))
            script = T.BARE.format(out=base / f"b{i}.out", python=sys.executable, shim=shim,
                                   args=" ".join(T.VLLM_ARGS), head=cluster.internal(1),
                                   port=20777, api=T.API_PORT)
            bare.append(timed(cluster, script, f"b{i}", False))
            print(f"run {i}: launcher {launcher[-1]:.1f} s, bare {bare[-1]:.1f} s", flush=True)
        ml, mb = statistics.median(launcher), statistics.median(bare)
        print(f"median launcher {ml:.1f} s / bare {mb:.1f} s = {ml / mb:.3f} (target <= 1.03)")
    finally:
        cluster.down()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
