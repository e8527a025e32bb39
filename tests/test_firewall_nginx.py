"""`render nginx`: the front with the gate's allowlist, checked by the real nginx — `nginx -t`
on the rendered server block inside a minimal nginx.conf, and a real nginx in front of a
stand-in upstream (stdlib HTTP server): allowlisted routes are proxied with the Authorization
header, other paths 404, other methods 403, ambiguous paths 400, SSE chunks arrive unbuffered,
and the source allow-list answers 403. Deterministic, and never a secret."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.supervised import wait_for
from vllm_secure_launch.addresses import ApiEndpoint
from vllm_secure_launch.firewall import nginx as N
from vllm_secure_launch.surface.gate_table import parse_config

# Not in the fast lane: a real nginx (and `nginx -t`) in front of a stand-in upstream.
pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "abcdefabcdefabcdefabcdef12345678"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                  else None)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx missing (scripts/test installs it)")


def render(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO, VLLM_API_KEY=KEY, VLLM_CPU_KVCACHE_SPACE="1",
               VSL_ACCELERATOR="cpu")
    return subprocess.run([sys.executable, "-m", "vllm_secure_launch.cli.main", *launcher,
                           "render", "nginx", *args], capture_output=True, text=True, env=env,
                          timeout=120)


# What a site's nginx.conf often has at http level; compressing SSE holds events back.
GZIP_EVERYTHING = "gzip on; gzip_min_length 1; gzip_types text/event-stream; "


def nginx_conf(tmp, front: str, extra: str = "", http: str = "") -> str:
    """A minimal nginx.conf that includes the rendered front; every path inside `tmp`."""
    (tmp / "front.conf").write_text(front)
    temp = " ".join(f"{k}_temp_path {tmp}/{k};" for k in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp / "nginx.conf"
    conf.write_text(f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\n{extra}"
                    "events { worker_connections 64; }\n"
                    f"http {{ access_log off; {http}{temp} include {tmp}/front.conf; }}\n")
    return str(conf)


def nginx_t(tmp, front: str) -> subprocess.CompletedProcess:
    conf = nginx_conf(tmp, front)
    return subprocess.run([str(NGINX), "-t", "-e", f"{tmp}/error.log", "-p", str(tmp), "-c",
                           conf], capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_front_is_deterministic_holds_no_secret_and_only_the_allowlist(tmp_path):
    a, b = render(str(tmp_path), "--port", "8123"), render(str(tmp_path), "--port", "8123")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and KEY not in a.stdout
    assert "server 127.0.0.1:8123;" in a.stdout and "proxy_buffering off;" in a.stdout
    assert "location = /v1/chat/completions {\n\t\tlimit_except POST { deny all; }" in a.stdout
    assert '\tlocation ~ "^/v1/responses/[^/]+$" {' in a.stdout
    assert "location = /tokenize" not in a.stdout and "location = /metrics" not in a.stdout
    assert a.stdout.rstrip().endswith("location / { return 404; }\n}")


def test_refused_plan_and_bad_options_render_nothing(tmp_path):
    r = render(str(tmp_path), "--host", "0.0.0.0")
    assert r.returncode == 78 and r.stdout == ""
    r = render("--listen", "80; include /etc/passwd", str(tmp_path))
    assert r.returncode == 2 and "would break the nginx configuration" in r.stderr
    r = render("--tls-cert", "/x.pem", str(tmp_path))
    assert r.returncode == 2 and "both --tls-cert and --tls-key" in r.stderr
    assert "Traceback" not in r.stderr
    for option in ("--listen", "--server-name", "--max-body"):  # `listen ;` is no front
        r = render(option, "", str(tmp_path))
        assert r.returncode == 2 and f"{option} is empty" in r.stderr and r.stdout == ""


@pytest.mark.parametrize("api,server", [
    (ApiEndpoint("127.0.0.1", 8000), "127.0.0.1:8000"),
    (ApiEndpoint("0.0.0.0", 8000), "127.0.0.1:8000"),  # a wildcard bind: reached on loopback
    (ApiEndpoint("::", 8000), "[::1]:8000"),
    (ApiEndpoint("fd00::5", 9), "[fd00::5]:9"),
    (ApiEndpoint(None, None, uds="/run/v/api.sock"), "unix:/run/v/api.sock"),
])
def test_upstream_is_vllms_api_address(api, server):
    assert N.upstream_server(api) == server


def test_headless_and_unwritable_routes_are_refused():
    with pytest.raises(N.FrontError, match="headless"):
        N.upstream_server(ApiEndpoint(None, None, headless=True))
    assert N.location("/v1/files/{file_id}/content") == '~ "^/v1/files/[^/]+/content$"'
    with pytest.raises(N.FrontError, match="cannot be written"):
        N.location("/v1/x$y")


def test_policy_routes_follow_the_gate_table():
    """[gate] additions and removals reach the front exactly as they reach the gate."""
    table = parse_config({"version": 1, "deny": ["/v1/responses"],
                          "allow": [{"path": "/metrics", "auth": "none"}]})
    plan = type("P", (), {"api": ApiEndpoint("127.0.0.1", 8000)})()
    text = N.render(plan, table, N.Front())
    assert "\tlocation = /metrics {\n\t\tlimit_except GET { deny all; }" in text
    assert "# GET /metrics: public" in text
    assert "location = /v1/responses " not in text and "location = /v1/models " in text


@needs_nginx
def test_rendered_front_passes_nginx_t(tmp_path):
    r = render(str(tmp_path), "--port", "8123", launcher=("--api-allowed-sources",
                                                          "192.0.2.0/24,2001:db8::/32"))
    assert r.returncode == 0, r.stderr
    assert "\tallow 192.0.2.0/24;\n\tallow 2001:db8::/32;\n\tdeny all;\n" in r.stdout
    t = nginx_t(tmp_path, r.stdout)
    assert t.returncode == 0, t.stderr


@needs_nginx
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")
def test_tls_front_passes_nginx_t(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=vllm.test", "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    r = render("--listen", "8443", "--tls-cert", str(cert), "--tls-key", str(key),
               str(tmp_path), "--port", "8123")
    assert r.returncode == 0, r.stderr
    assert "listen 8443 ssl;" in r.stdout and key.read_text() not in r.stdout
    t = nginx_t(tmp_path, r.stdout)
    assert t.returncode == 0, t.stderr


class Upstream(BaseHTTPRequestHandler):
    """Records what reached "vLLM"; /v1/chat/completions streams two SSE events and waits
    between them until the test has read the first one through nginx."""

    seen: list[tuple[str, str, str | None]] = []
    release = threading.Event()

    def log_message(self, *a) -> None:
        pass

    def _answer(self) -> None:
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/v1/chat/completions":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(b"data: first\n\n")
            self.release.wait(10)
            self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def front(tmp_path):
    """A real nginx (single process, foreground) rendered for a stand-in vLLM."""
    Upstream.seen, Upstream.release = [], threading.Event()
    up = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    up.protocol_version = "HTTP/1.1"
    Upstream.protocol_version = "HTTP/1.1"
    threading.Thread(target=up.serve_forever, daemon=True).start()
    listen = free_port()

    def start(sources: str = "", edit=lambda text: text) -> int:
        launcher = ("--api-allowed-sources", sources) if sources else ()
        r = render("--listen", f"127.0.0.1:{listen}", str(tmp_path), "--port",
                   str(up.server_address[1]), launcher=launcher)
        assert r.returncode == 0, r.stderr
        conf = nginx_conf(tmp_path, edit(r.stdout), extra="daemon off;\nmaster_process off;\n",
                          http=GZIP_EVERYTHING)
        procs.append(subprocess.Popen([str(NGINX), "-e", f"{tmp_path}/error.log", "-p",
                                       str(tmp_path), "-c", conf]))
        wait_for(lambda: _status("GET", "/health", listen) is not None, 10, what="nginx")
        return listen

    procs: list[subprocess.Popen] = []
    yield start
    Upstream.release.set()
    for p in procs:
        p.kill()
        p.wait()
    up.shutdown()
    up.server_close()


def _status(method: str, path: str, port: int, headers: dict | None = None) -> int | None:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request(method, path, body=b"{}" if method == "POST" else None,
                  headers=headers or {})
        status = c.getresponse().status
        c.close()
        return status
    except OSError:
        return None


@needs_nginx
def test_real_nginx_proxies_only_the_allowlist(front):
    port = front()
    auth = {"Authorization": f"Bearer {KEY}"}
    assert _status("GET", "/v1/models", port, auth) == 200
    assert ("GET", "/v1/models", f"Bearer {KEY}") in Upstream.seen  # key passed through
    assert _status("GET", "/v1/responses/resp_1", port) == 200  # a {param} route
    before = len(Upstream.seen)
    assert _status("GET", "/tokenize", port) == 404  # not in the allowlist
    assert _status("POST", "/v1/models", port) == 403  # a method the route does not take
    assert _status("DELETE", "/health", port) == 403
    assert _status("GET", "/v1/responses/a/b", port) == 404
    for bad in ("/v1/%6dodels", "//v1/models", "/v1/./models", "/v1/models;x", "/v1/x/../models"):
        assert _status("GET", bad, port) == 400, bad
    assert len(Upstream.seen) == before  # none of those reached vLLM


def _first_event(port: int) -> bytes | None:
    """The first SSE line, read while the upstream still holds the second event back (None:
    nothing arrived within 2 s: the front held it)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    c.request("POST", "/v1/chat/completions", body=b"{}",
              headers={"Authorization": "Bearer x", "Accept-Encoding": "gzip"})
    resp = c.getresponse()
    assert resp.status == 200
    try:
        line = resp.readline()
    except TimeoutError:
        line = None
    Upstream.release.set()
    c.close()
    return line


@needs_nginx
@pytest.mark.parametrize("as_rendered", [True, False])
def test_real_nginx_streams_sse_unbuffered(front, as_rendered):
    """Under an http-level `gzip on` for event streams (common in site configs) the rendered
    front still forwards each event as it comes; the same front without its `gzip off;` holds
    the first event back (the baseline: the check can fail)."""
    edit = (lambda t: t) if as_rendered else (lambda t: t.replace("\tgzip off;\n", ""))
    line = _first_event(front(edit=edit))
    assert (line == b"data: first\n") is as_rendered, line


@needs_nginx
def test_real_nginx_refuses_clients_outside_the_api_sources(front):
    port = front("192.0.2.0/24")  # the test's client is 127.0.0.1: outside the list
    assert _status("GET", "/v1/models", port) == 403
    assert not Upstream.seen
