"""probe without a server: classification table, findings, exit codes, URL and key-file errors.

A fake vLLM router (an ASGI app that answers like Starlette for every inventory route: 405 for
a wrong method, 400 for an unparsable body, 404 for unknown paths) stands in for vLLM, with and
without the real EndpointGate in front; the transport calls it in-process."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any

import pytest
from click.testing import CliRunner

from vllm_secure_launch.cli import probe_cmd
from vllm_secure_launch.errors import UsageError
from vllm_secure_launch.gate import probe
from vllm_secure_launch.gate.middleware import EndpointGate
from vllm_secure_launch.gate.probe import ABSENT, KEY, OPEN, UNCLEAR, Response
from vllm_secure_launch.surface import routes

K = "probe-key"
GUARDED = ("/v1", "/v2", "/inference", "/cohere")
SERVED = [r for r in routes.ROUTES if r.when in ("always", "task generate")]


def fake_vllm(api_key: str | None) -> Any:
    """Starlette-like router of the generate-task routes, with vLLM's prefix-only auth."""
    import re

    table = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", r.path) + "$"), r) for r in SERVED]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"]
        hdrs = dict(scope["headers"])
        status, body = 404, b'{"detail":"Not Found"}'
        if api_key and path.startswith(GUARDED) and \
                hdrs.get(b"authorization") != f"Bearer {api_key}".encode():
            status, body = 401, b'{"error":"Unauthorized"}'
        else:
            hits = [r for rx, r in table if rx.match(path)]
            for r in hits:
                if scope["method"] in r.methods:
                    status, body = (400, b'{"error":"bad json"}') if scope["method"] == "POST" \
                        else (200, b"{}")
                    break
            else:
                if hits:
                    status, body = 405, b'{"detail":"Method Not Allowed"}'
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


def asgi_transport(app: Any) -> probe.Transport:
    def send(method: str, path: str, headers: dict[str, str], body: bytes,
             ws: bool) -> Response:
        raw = path.encode()
        decoded = urllib.parse.unquote(path.split("?")[0])
        scope = {"type": "http", "method": method, "path": decoded,
                 "raw_path": raw.split(b"?")[0], "root_path": "", "query_string": b"",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
        if ws:
            scope = {**scope, "type": "websocket", "extensions": {"websocket.http.response": {}}}
        out: dict[str, Any] = {"status": None, "body": b""}

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def snd(msg: dict) -> None:
            if msg["type"].endswith("response.start"):
                out["status"] = msg["status"]
            elif msg["type"].endswith("response.body"):
                out["body"] += msg.get("body", b"")
            elif msg["type"] == "websocket.close":
                out["status"] = 403

        asyncio.run(app(scope, receive, snd))
        return Response(out["status"], out["body"])

    return send


TARGET = probe.Target("http", "127.0.0.1", 19999, "")


def run(app: Any, key: str | None = None, allow: tuple[str, ...] = ()) -> probe.ProbeReport:
    return probe.run_probe(TARGET, asgi_transport(app), key, allow)


def by_path(report: probe.ProbeReport) -> dict[str, probe.RouteResult]:
    return {r.path: r for r in report.results}


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,status,body,want", [
    (routes.PROBE_GET, 200, b"{}", OPEN),
    (routes.PROBE_GET, 401, b"", KEY),
    (routes.PROBE_GET, 403, b"", KEY),
    (routes.PROBE_GET, 404, b'{"detail":"Not Found"}', ABSENT),
    (routes.PROBE_GET, 404, b'{"error":{"message":"no such response"}}', OPEN),
    (routes.PROBE_GET, 500, b"", UNCLEAR),
    (routes.PROBE_GET, 503, b"", UNCLEAR),
    (routes.PROBE_GET, None, b"", UNCLEAR),
    (routes.PROBE_BAD_JSON, 400, b"{}", OPEN),
    (routes.PROBE_BAD_JSON, 422, b"{}", OPEN),
    (routes.PROBE_BAD_JSON, 401, b"{}", KEY),
    (routes.PROBE_GET_405, 405, b"{}", OPEN),
    (routes.PROBE_GET_405, 404, b'{"detail":"Not Found"}', ABSENT),
    (routes.PROBE_GET_405, 307, b"", UNCLEAR),
    (routes.PROBE_WS, 101, b"", OPEN),
    (routes.PROBE_WS, 403, b"", KEY),
    (routes.PROBE_WS, 200, b"", UNCLEAR),
])
def test_classify(kind: str, status: int | None, body: bytes, want: str) -> None:
    assert probe.classify(kind, Response(status, body)) == want


def test_state_changing_routes_are_only_ever_sent_get() -> None:
    """probe never POSTs (or DELETEs) to a route that acts: only GET, or POST with a body that
    cannot parse to routes whose handlers validate JSON first."""
    sent: list[tuple[str, str, bytes]] = []

    def record(method: str, path: str, headers: dict, body: bytes, ws: bool) -> Response:
        sent.append((method, path, body))
        return Response(404, b'{"detail":"Not Found"}')

    probe.run_probe(TARGET, record, api_key=K)
    # probe checks every route of every known vLLM (0.32 and 0.33's /v1/decisions)
    assert {p for _, p, _ in sent} >= {r.probe_path for r in routes.every_route()}
    bad_json = {r.probe_path for r in routes.every_route() if r.probe == routes.PROBE_BAD_JSON}
    for method, path, body in sent:
        assert method in ("GET", "POST"), (method, path)
        if method == "POST":
            assert path in bad_json and body == b"{", path
    for r in routes.every_route():
        if r.area in ("dev", "rl", "profiler", "lora", "elastic_ep", "fault_tolerance",
                      "scale_out"):
            assert r.probe in (routes.PROBE_GET, routes.PROBE_GET_405), r.path


def test_bare_vllm_reports_open_routes() -> None:
    report = run(fake_vllm(K))
    res = by_path(report)
    assert res["/invocations"].verdict == OPEN and res["/v1/models"].verdict == KEY
    assert res["/scale_elastic_ep"].verdict == OPEN and res["/pause"].verdict == ABSENT
    assert res["/health"].verdict == OPEN
    found = {f.rule_id for f in report.findings}
    assert {"VSL260", "VSL261"} <= found and report.open_sensitive


def test_bare_vllm_with_key_reports_denied_routes_reachable() -> None:
    report = run(fake_vllm(K), key=K)
    res = by_path(report)
    assert res["/v1/chat/completions/render"].with_key == probe.REACHABLE
    assert "VSL262" in {f.rule_id for f in report.findings}


def test_gated_reports_nothing_open() -> None:
    gated = EndpointGate(fake_vllm(K), environ={"VLLM_API_KEY": K})
    for key in (None, K):
        report = run(gated, key=key)
        assert [r.path for r in report.results if r.verdict == OPEN] == ["/health"]
        assert report.findings == () and not report.open_sensitive
        assert not any(t.reached for t in report.tricks)
    res = by_path(run(gated, key=K))
    assert res["/v1/completions"].with_key == probe.REACHABLE
    assert res["/inference/v1/generate"].verdict == ABSENT


def test_allow_open_suppresses_finding() -> None:
    gated = EndpointGate(fake_vllm(K), environ={
        "VLLM_API_KEY": K,
        "VSL_GATE_CONFIG": json.dumps({"allow": [{"path": "/metrics", "auth": "none"}]})})
    assert {f.subject for f in run(gated).findings} == {"/metrics"}
    assert run(gated, allow=("/metrics",)).findings == ()


def test_path_trick_reaching_router_is_vsl264() -> None:
    """A filter that closes /invocations but lets //invocations through to a normalising
    router is caught."""
    inner = fake_vllm(K)

    async def naive_filter(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/invocations":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b'{"detail":"Not Found"}'})
            return
        scope = {**scope, "path": "/" + scope["path"].lstrip("/").rstrip("/")}
        await inner(scope, receive, send)

    report = run(naive_filter)
    assert "VSL264" in {f.rule_id for f in report.findings}


def test_unclear_is_a_warning() -> None:
    def broken(method: str, path: str, headers: dict, body: bytes, ws: bool) -> Response:
        return Response(503 if path == "/version" else 404, b'{"detail":"Not Found"}')

    report = probe.run_probe(TARGET, broken)
    assert [f.rule_id for f in report.findings] == ["VSL263"] and not report.open_sensitive


def test_views() -> None:
    report = run(fake_vllm(K))
    text = probe.render_text(report)
    assert "open    POST   /invocations" in text and "VSL260" in text
    doc = json.loads(probe.render_json(report))
    assert doc["open_sensitive"] is True and doc["routes"][0]["path"] == "/v1/models"


@pytest.mark.parametrize("url", ["ftp://h", "http://", "http://h:99999", "http://u:p@h:1",
                                 "http://h:1/?x=1"])
def test_bad_url_is_usage_error(url: str) -> None:
    with pytest.raises(UsageError):
        probe.parse_target(url)


def test_parse_target() -> None:
    t = probe.parse_target("https://[::1]:8443/api/")
    assert (t.scheme, t.host, t.port, t.base_path) == ("https", "::1", 8443, "/api")
    assert probe.parse_target("10.0.0.5:8000").display == "http://10.0.0.5:8000"


def test_key_file(tmp_path) -> None:
    f = tmp_path / "k"
    f.write_text("abc\n")
    assert probe.read_key_file(str(f)) == "abc"
    f.write_text("")
    with pytest.raises(UsageError):
        probe.read_key_file(str(f))
    with pytest.raises(UsageError):
        probe.read_key_file(str(tmp_path / "missing"))


def test_unreachable_is_usage_error() -> None:
    with pytest.raises(UsageError) as err:
        probe.probe("http://127.0.0.1:19997", timeout=2)
    assert "cannot connect" in err.value.paragraph()


def test_cli_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    gated = EndpointGate(fake_vllm(K), environ={"VLLM_API_KEY": K})
    for app, want in ((gated, 0), (fake_vllm(K), 77)):
        monkeypatch.setattr(probe, "probe", lambda url, app=app, **kw: run(app))
        result = CliRunner().invoke(probe_cmd.command, ["http://127.0.0.1:19999"],
                                    standalone_mode=False)
        assert result.return_value == want, result.output
    result = CliRunner().invoke(probe_cmd.command, ["http://x", "--format", "json"],
                                standalone_mode=False)
    assert json.loads(result.output)["open_sensitive"] is True
