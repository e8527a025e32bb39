"""Endpoint gate latency (issue 5): median of an authorised `GET /v1/models`

* through the gate / through vLLM's own `--api-key` check alone: target <= 1.02;
* through an nginx allowlisting reverse proxy in front of vLLM (the seed's pattern; Debian
  nginx, config generated here, checked with `nginx -t`, loopback only) / through the gate:
  the gate must be faster (ratio > 1).

One tiny-model vLLM (same build, one run) serves all three paths: benchmarks/_gate_ab.py puts
the gate in front of vLLM's stack but lets requests marked `X-VSL-Bench: direct` skip it (nginx
sets that header), so all paths meet the same process. Two separate vLLM processes differ by
up to 30% in median latency on a shared 2-core host, which would drown a 2% target. vLLM's own
key check runs on every path (VLLM_API_KEY is set). Requests alternate between the paths over
keep-alive connections so drift hits all alike. Ports 127.0.0.1:19201 (vLLM), 19203 (nginx).
"""

from __future__ import annotations

import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

VLLM_PORT, NGINX_PORT = 19201, 19203
AB_MIDDLEWARE = "benchmarks._gate_ab.ABGate"
KEY = "vsl-bench-key-0123456789"
ROUNDS = 3000
WARMUP = 100

NGINX_CONF = """\
worker_processes 1;
daemon off;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  upstream vllm {{ server 127.0.0.1:{upstream}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_set_header X-VSL-Bench direct;
    location = /health {{ limit_except GET {{ deny all; }} proxy_pass http://vllm; }}
    location = /v1/models {{ limit_except GET {{ deny all; }} proxy_pass http://vllm; }}
    location = /v1/completions {{ limit_except POST {{ deny all; }} proxy_pass http://vllm; }}
    location = /v1/chat/completions {{ limit_except POST {{ deny all; }} proxy_pass http://vllm; }}
    location / {{ return 404; }}
  }}
}}
"""


def _start_nginx(tmp: str) -> subprocess.Popen | str:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if nginx is None:
        return "nginx is not installed (apt-get install -y nginx)"
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as fh:
        fh.write(NGINX_CONF.format(tmp=tmp, upstream=VLLM_PORT, port=NGINX_PORT))
    check = subprocess.run([nginx, "-t", "-p", tmp, "-c", conf], capture_output=True, text=True)
    if check.returncode != 0:
        return f"nginx -t failed: {check.stderr.strip()[-300:]}"
    proc = subprocess.Popen([nginx, "-p", tmp, "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", NGINX_PORT, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    return "nginx did not answer on its port"


def _measure(targets: dict[str, tuple[int, dict[str, str]]],
             rounds: int) -> dict[str, list[float]]:
    """Latency samples per target; sample i of every target comes from the same round."""
    conns = {n: http.client.HTTPConnection("127.0.0.1", p, timeout=30)
             for n, (p, _) in targets.items()}
    samples: dict[str, list[float]] = {n: [] for n in targets}
    names = list(targets)
    for i in range(WARMUP + rounds):
        # ABBA order: each target goes first, and follows the other, half of the time.
        order = names if i % 2 else names[::-1]
        for n in order:
            c = conns[n]
            t0 = time.perf_counter()
            c.request("GET", "/v1/models",
                      headers={"Authorization": f"Bearer {KEY}", **targets[n][1]})
            r = c.getresponse()
            r.read()
            t1 = time.perf_counter()
            if r.status != 200:
                raise RuntimeError(f"{n}: GET /v1/models answered {r.status}")
            if i >= WARMUP:
                samples[n].append(t1 - t0)
    for c in conns.values():
        c.close()
    return samples


def run() -> list[dict[str, Any]]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.support.vllm_server import start_bare_vllm

    server = None
    nginx: subprocess.Popen | str | None = None
    tmp = tempfile.mkdtemp(prefix="vsl-bench-nginx-")
    try:
        pypath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        try:
            server = start_bare_vllm(VLLM_PORT, ["--middleware", AB_MIDDLEWARE],
                                     {"VLLM_API_KEY": KEY, "PYTHONPATH": pypath})
        except Exception as exc:  # noqa: BLE001 - reported as a failed row
            return [{"name": "gate benchmark", "ratio": None, "target": "-", "ok": False,
                     "detail": f"vLLM did not start: {exc}"[:500]}]
        nginx = _start_nginx(tmp)
        targets = {"gate": (VLLM_PORT, {}),
                   "api-key": (VLLM_PORT, {"X-VSL-Bench": "direct"})}
        if not isinstance(nginx, str):
            targets["nginx"] = (NGINX_PORT, {})
        # Two pairs measured separately: a request right after one through nginx (or the other
        # way round) meets a vLLM still finishing the previous one, which biases a 3-way rotation.
        samples = _measure({n: targets[n] for n in ("gate", "api-key")}, ROUNDS)
        if "nginx" in targets:
            pair = _measure({n: targets[n] for n in ("nginx", "gate")}, ROUNDS)
            samples["nginx"], samples["gate2"] = pair["nginx"], pair["gate"]
        med = {n: statistics.median(s) for n, s in samples.items()}

        def paired(a: str, b: str) -> float:
            # Median of per-round ratios: both requests of a round ran back to back, so load
            # from other processes on the host hits both; drift between rounds cancels.
            return statistics.median(x / y for x, y in zip(samples[a], samples[b]))

        us = {n: f"{v * 1e6:.0f} us" for n, v in med.items()}
        rows = [{
            "name": "gate: GET /v1/models, gate / vLLM --api-key alone",
            "ratio": round(paired("gate", "api-key"), 4),
            "target": "≤ 1.02",
            "ok": paired("gate", "api-key") <= 1.02,
            "detail": f"median of {ROUNDS} paired rounds; medians gate {us['gate']}, api-key "
                      f"only {us['api-key']} (ratio {med['gate'] / med['api-key']:.4f}); same "
                      "vLLM process, keep-alive, loopback",
        }]
        if "nginx" in med:
            rows.append({
                "name": "gate: GET /v1/models, nginx allowlist proxy / gate",
                "ratio": round(paired("nginx", "gate2"), 4),
                "target": "> 1",
                "ok": paired("nginx", "gate2") > 1,
                "detail": f"median of {ROUNDS} paired rounds; medians nginx {us['nginx']}, "
                          f"gate {us['gate2']} (ratio {med['nginx'] / med['gate2']:.4f})",
            })
        else:
            rows.append({"name": "gate: nginx allowlist proxy / gate", "ratio": None,
                         "target": "> 1", "ok": False, "detail": str(nginx)})
        return rows
    finally:
        if nginx is not None and not isinstance(nginx, str):
            nginx.terminate()
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    for row in run():
        print(row)
