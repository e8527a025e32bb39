"""The endpoint gate against a tiny stdlib ASGI app (no vLLM): allowlist, keys, path tricks,
WebSocket, lifespan, fail-closed configuration."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from vllm_secure_launch.gate import middleware as gate
from vllm_secure_launch.gate.middleware import EndpointGate
from vllm_secure_launch.surface import routes

from .gate_cases import KEY, VARIANTS, WRONG, Variant, scope_path


class Recorder:
    """The inner app: records every scope it is called with and answers 200."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append(dict(scope))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"inner"})


def run(gate_obj: EndpointGate, scope: dict[str, Any]) -> tuple[int | None, dict, bytes, list]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    asyncio.run(gate_obj(scope, receive, send))
    status = None
    headers: dict[bytes, bytes] = {}
    body = b""
    for m in sent:
        if m["type"].endswith("response.start"):
            status = m["status"]
            headers = dict(m.get("headers", []))
        elif m["type"].endswith("response.body"):
            body += m.get("body", b"")
        elif m["type"] == "websocket.close":
            status = 403
    return status, headers, body, sent


def make_gate(env: dict[str, str] | None = None) -> tuple[EndpointGate, Recorder]:
    inner = Recorder()
    return EndpointGate(inner, environ={"VLLM_API_KEY": KEY} if env is None else env), inner


def http_scope(method: str, path: str, *, auth: str | None = KEY, headers=(), root_path="",
               raw_path: bytes | None = None, kind: str = "http", ws_ext: bool = True) -> dict:
    hdrs = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers]
    if auth is not None:
        hdrs.append((b"authorization", f"Bearer {auth}".encode()))
    scope: dict[str, Any] = {"type": kind, "path": path, "root_path": root_path,
                             "raw_path": path.encode() if raw_path is None else raw_path,
                             "query_string": b"", "headers": hdrs}
    if kind == "http":
        scope["method"] = method
    elif ws_ext:
        scope["extensions"] = {"websocket.http.response": {}}
    return scope


def variant_scope(v: Variant) -> dict[str, Any] | None:
    parsed = scope_path(v.target)
    if parsed is None:
        return None
    path, raw, query = parsed
    hdrs = [(k.lower().encode(), val.encode("latin-1"))
            for k, val in [*v.auth_headers(), *v.extra_headers]]
    scope: dict[str, Any] = {"type": "websocket" if v.websocket else "http", "path": path,
                             "raw_path": raw, "query_string": query, "root_path": "",
                             "headers": hdrs}
    if v.websocket:
        scope["extensions"] = {"websocket.http.response": {}}
    else:
        scope["method"] = v.method
    return scope


# ---------------------------------------------------------------------------------------------


def test_variant_table_has_at_least_60_entries() -> None:
    assert len(VARIANTS) >= 60
    assert len({v.name for v in VARIANTS}) == len(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_path_trick_never_reaches_app(variant: Variant) -> None:
    """Every variant is refused by the gate itself (or uvicorn would refuse it first)."""
    scope = variant_scope(variant)
    if scope is None:
        return  # uvicorn answers 400 before any app runs (checked for real in test_gate_e2e)
    g, inner = make_gate()
    status, _, _, _ = run(g, scope)
    assert inner.calls == []
    assert status in variant.expect


def test_allowed_route_with_key_passes() -> None:
    g, inner = make_gate()
    status, _, body, _ = run(g, http_scope("GET", "/v1/models"))
    assert (status, body, len(inner.calls)) == (200, b"inner", 1)


@pytest.mark.parametrize("route", routes.default_keyed(), ids=lambda r: r.path)
def test_every_default_keyed_route_needs_the_key(route: routes.RouteInfo) -> None:
    method = route.methods[0]
    kind = "websocket" if method == routes.WS else "http"
    for auth, want in ((None, 401), (WRONG, 401), (KEY, None)):
        g, inner = make_gate()
        status, headers, _, _ = run(g, http_scope(method, route.probe_path, auth=auth, kind=kind))
        if want is None:
            assert len(inner.calls) == 1, route.path
        else:
            assert status == want and inner.calls == [], route.path
            assert headers.get(b"www-authenticate") == b"Bearer"


@pytest.mark.parametrize("surface,route", [
    (s, r) for s in routes.SURFACES for r in routes.inventory(s) if r.default == routes.DENY],
    ids=lambda x: x if isinstance(x, str) else x.path)
def test_every_denied_route_is_404_whatever_the_key(surface: str, route: routes.RouteInfo
                                                    ) -> None:
    """Each surface's inventory, through the config the planner writes for that vLLM."""
    env = {"VLLM_API_KEY": KEY, gate.CONFIG_ENV: json.dumps({"version": 1, "surface": surface})}
    for auth in (None, WRONG, KEY):
        for method in route.methods:
            g, inner = make_gate(env)
            status, _, body, _ = run(g, http_scope(method, route.probe_path, auth=auth))
            assert status == 404 and inner.calls == [], (route.path, auth)
            assert json.loads(body) == {"detail": "Not Found"}  # same as FastAPI's own 404


def _generated_routes(surface: str) -> set[tuple[str, str]]:
    """(path, method) pairs of vLLM's build_app() over the recipe's 26 builds
    (surface-data/<surface>/vllm_<surface>_routes.json); HEAD and Mounts left out."""
    from pathlib import Path

    name = f"vllm_{surface.replace('.', '_')}_routes.json"
    doc = json.loads((Path(__file__).resolve().parents[1] / "surface-data" / surface / name)
                     .read_text(encoding="utf-8"))
    return {(r["path"], m) for r in doc["routes"] if r["class"] != "Mount"
            for m in r["methods"] if m != "HEAD"}


@pytest.mark.parametrize("surface", routes.SURFACES)
def test_each_inventory_lists_every_route_that_vllm_builds(surface: str) -> None:
    """The gate and probe know every route of that vLLM by name (a missing one is still denied
    by default-deny, but probe would not check it and the docs would not list it)."""
    ours = {(r.path, m) for r in routes.inventory(surface) for m in r.methods if m != "HEAD"}
    missing = _generated_routes(surface) - ours
    assert not missing, sorted(missing)
    # Listed but never built: only the Cohere chat route, which needs the cohere SDK.
    extra = {p for p, _ in ours - _generated_routes(surface)}
    assert extra <= {"/cohere/v2/chat"}, sorted(extra)


def test_0_33_decisions_route_is_closed_by_default_and_can_be_allowed() -> None:
    """vLLM 0.33's new POST /v1/decisions runs the model: 404 by default, with or without the
    key; a policy can allow it (keyed)."""
    assert routes.by_path("0.33")["/v1/decisions"].default == routes.DENY
    assert "/v1/decisions" not in routes.by_path("0.32")
    closed = {"VLLM_API_KEY": KEY, gate.CONFIG_ENV: json.dumps({"version": 1, "surface": "0.33"})}
    g, inner = make_gate(closed)
    assert run(g, http_scope("POST", "/v1/decisions", auth=KEY))[0] == 404 and not inner.calls
    allowed = {**closed, gate.CONFIG_ENV: json.dumps(
        {"version": 1, "surface": "0.33", "allow": [{"path": "/v1/decisions"}]})}
    g, inner = make_gate(allowed)
    assert run(g, http_scope("POST", "/v1/decisions", auth=None))[0] == 401
    run(g, http_scope("POST", "/v1/decisions", auth=KEY))
    assert len(inner.calls) == 1


def test_unknown_surface_in_the_config_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    env = {"VLLM_API_KEY": KEY, gate.CONFIG_ENV: json.dumps({"version": 1, "surface": "0.99"})}
    with caplog.at_level(logging.ERROR):
        g, inner = make_gate(env)
    assert "surface" in caplog.text
    assert run(g, http_scope("GET", "/v1/models"))[0] == 404 and not inner.calls


def test_health_is_public_and_get_only() -> None:
    g, inner = make_gate()
    assert run(g, http_scope("GET", "/health", auth=None))[0] == 200
    status, headers, _, _ = run(g, http_scope("POST", "/health", auth=None))
    assert status == 405 and headers[b"allow"] == b"GET"
    assert len(inner.calls) == 1


def test_wrong_method_on_allowed_route_is_405_after_auth() -> None:
    g, inner = make_gate()
    assert run(g, http_scope("DELETE", "/v1/models", auth=None))[0] == 401
    status, headers, _, _ = run(g, http_scope("HEAD", "/v1/models"))
    assert status == 405 and headers[b"allow"] == b"GET"
    assert inner.calls == []


def test_cors_preflight_on_allowed_route_passes_without_key() -> None:
    """vLLM's CORSMiddleware answers preflights itself; handlers never run."""
    g, inner = make_gate()
    hdrs = (("Origin", "http://a.example"), ("Access-Control-Request-Method", "POST"))
    assert run(g, http_scope("OPTIONS", "/v1/completions", auth=None, headers=hdrs))[0] == 200
    assert run(g, http_scope("OPTIONS", "/v1/completions", auth=None))[0] == 401
    assert len(inner.calls) == 1


def test_root_path_is_stripped_like_starlette() -> None:
    g, inner = make_gate()
    assert run(g, http_scope("GET", "/api/v1/models", root_path="/api"))[0] == 200
    assert run(g, http_scope("GET", "/v1/models", root_path="/api"))[0] == 200
    assert run(g, http_scope("POST", "/api/invocations", root_path="/api"))[0] == 404
    assert run(g, http_scope("GET", "/apiv1/models", root_path="/api"))[0] == 404
    assert run(g, http_scope("GET", "/api", root_path="/api"))[0] == 404
    assert len(inner.calls) == 2


def test_template_route_matches_one_segment() -> None:
    g, inner = make_gate()
    assert run(g, http_scope("GET", "/v1/responses/resp_1"))[0] == 200
    assert run(g, http_scope("GET", "/v1/responses/a/b"))[0] == 404
    assert run(g, http_scope("GET", "/v1/responses/"))[0] == 404
    assert run(g, http_scope("POST", "/v1/responses/resp_1/cancel"))[0] == 200
    assert len(inner.calls) == 2


def test_raw_path_and_path_disagree_is_400() -> None:
    g, inner = make_gate()
    scope = http_scope("GET", "/v1/models", raw_path=b"/v1/mod%65ls")
    assert run(g, scope)[0] == 400
    scope = http_scope("GET", "/v1/models", raw_path=b"/v1/other")
    assert run(g, scope)[0] == 400
    assert inner.calls == []


def test_missing_raw_path_uses_path() -> None:
    g, inner = make_gate()
    scope = http_scope("GET", "/v1/models")
    del scope["raw_path"]
    assert run(g, scope)[0] == 200
    scope = http_scope("GET", "/v1/../invocations")
    del scope["raw_path"]
    assert run(g, scope)[0] == 400


def test_lifespan_passes_through() -> None:
    g, inner = make_gate()
    run(g, {"type": "lifespan"})
    assert inner.calls[0]["type"] == "lifespan"


def test_websocket_refusal_uses_http_response_extension() -> None:
    g, inner = make_gate()
    status, headers, _, sent = run(g, http_scope("", "/v1/realtime", auth=None, kind="websocket"))
    assert status == 401 and sent[0]["type"] == "websocket.http.response.start"
    status, _, _, sent = run(g, http_scope("", "/invocations", kind="websocket", ws_ext=False))
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert inner.calls == []


def test_websocket_with_key_passes_and_http_get_on_ws_route_is_404() -> None:
    g, inner = make_gate()
    run(g, http_scope("", "/v1/realtime", kind="websocket"))
    assert len(inner.calls) == 1
    assert run(g, http_scope("GET", "/v1/realtime"))[0] == 404


def test_no_key_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="vllm_secure_launch.gate.middleware")
    for env in ({}, {"VLLM_API_KEY": ""}):
        g, inner = make_gate(env)
        assert run(g, http_scope("GET", "/v1/models", auth=""))[0] == 401
        assert run(g, http_scope("GET", "/v1/models", auth=None))[0] == 401
        assert run(g, http_scope("GET", "/health", auth=None))[0] == 200
    assert "VLLM_API_KEY" in caplog.text


@pytest.mark.parametrize("bad", ["{", "[]", '{"allow": 3}', '{"version": 2}',
                                 '{"public": ["/a%2f"]}', '{"surprise": 1}',
                                 '{"allow": [{"path": "/metrics", "keys": ["PATH"]}]}'])
def test_malformed_config_fails_closed(bad: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="vllm_secure_launch.gate.middleware")
    g, inner = make_gate({"VLLM_API_KEY": KEY, "VSL_GATE_CONFIG": bad})
    assert run(g, http_scope("GET", "/v1/models"))[0] == 404
    assert run(g, http_scope("GET", "/health", auth=None))[0] == 200
    assert "endpoint gate" in caplog.text and KEY not in caplog.text


def test_config_adds_route_with_its_own_key() -> None:
    cfg = {"allow": [{"path": "/metrics", "methods": ["GET"], "keys": ["VSL_GATE_KEY_SCRAPE"]}]}
    env = {"VLLM_API_KEY": KEY, "VSL_GATE_KEY_SCRAPE": "scrape-key",
           "VSL_GATE_CONFIG": json.dumps(cfg)}
    g, inner = make_gate(env)
    assert run(g, http_scope("GET", "/metrics", auth="scrape-key"))[0] == 200
    assert run(g, http_scope("GET", "/metrics", auth=KEY))[0] == 401  # only the named key
    assert run(g, http_scope("GET", "/v1/models", auth="scrape-key"))[0] == 401
    assert run(g, http_scope("GET", "/metrics/", auth="scrape-key"))[0] == 404


def test_config_public_deny_and_no_defaults() -> None:
    cfg = {"public": ["/health", "/ping"], "deny": ["/v1/responses"],
           "allow": [{"path": "/invocations", "auth": "none"}]}
    g, inner = make_gate({"VLLM_API_KEY": KEY, "VSL_GATE_CONFIG": json.dumps(cfg)})
    assert run(g, http_scope("POST", "/ping", auth=None))[0] == 200
    assert run(g, http_scope("POST", "/invocations", auth=None))[0] == 200
    assert run(g, http_scope("POST", "/v1/responses"))[0] == 404
    assert run(g, http_scope("POST", "/v1/completions"))[0] == 200
    g, inner = make_gate({"VLLM_API_KEY": KEY, "VSL_GATE_CONFIG": '{"defaults": false}'})
    assert run(g, http_scope("POST", "/v1/completions"))[0] == 404
    assert run(g, http_scope("GET", "/health", auth=None))[0] == 200


def test_every_key_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant-time over the key list: compare_digest runs once per configured key."""
    calls: list[int] = []
    real = gate.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    cfg = {"allow": [{"path": "/metrics", "keys": ["VLLM_API_KEY", "VSL_GATE_KEY_A",
                                                   "VSL_GATE_KEY_B"]}]}
    g, _ = make_gate({"VLLM_API_KEY": KEY, "VSL_GATE_KEY_A": "a", "VSL_GATE_KEY_B": "b",
                      "VSL_GATE_CONFIG": json.dumps(cfg)})
    monkeypatch.setattr(gate.hmac, "compare_digest", counting)
    assert run(g, http_scope("GET", "/metrics", auth=KEY))[0] == 200
    assert len(calls) == 3


def test_gate_crash_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    g, inner = make_gate()
    monkeypatch.setattr(g, "decide", lambda scope: 1 / 0)
    assert run(g, http_scope("GET", "/v1/models"))[0] == 400
    assert inner.calls == []


@pytest.mark.parametrize("path,ok", [
    ("/metrics", True), ("/v1/x/{id}", True), ("/v1/x/{id}/y", True), ("metrics", False),
    ("/a/", False), ("/a//b", False), ("/a/../b", False), ("/a%2f", False), ("/a;b", False),
    ("/a\\b", False), ("/a b", False), ("/x{id}", False), ("/{a", False), ("/\u00e9", False),
])
def test_template_problem(path: str, ok: bool) -> None:
    assert (gate.template_problem(path) is None) is ok


def test_gate_module_is_stdlib_only() -> None:
    import ast
    import pathlib
    import sys

    from vllm_secure_launch.surface import gate_table

    for mod in (gate, routes, gate_table):
        tree = ast.parse(pathlib.Path(mod.__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.module in (None, "routes"), node.module
                    continue
                names = [node.module or ""]
            else:
                continue
            for n in names:
                # The route inventory and the table format are the gate's only imports of the
                # launcher: both checked here as stdlib-only too.
                assert n.split(".")[0] in sys.stdlib_module_names or (
                    n in ("vllm_secure_launch.surface", "vllm_secure_launch.surface.routes",
                          "vllm_secure_launch.surface.gate_table")), n


@pytest.mark.parametrize("raw", [b"/v1/models", b"/a", b"/a/b.c", b"/...", b"/a/..b", b"/",
                                 b"//", b"/a/", b"/a/.", b"/./a", b"/a/../b", b"a", b"",
                                 b"/a\n", b"/a%2f", b"/a;b", b"/a\\b", b"/a b", b"/\xc3\xa9",
                                 b"/" + b"a" * 2048, b"/" + b"a" * 2047])
def test_fast_path_check_agrees_with_the_rules(raw: bytes) -> None:
    segs = raw.split(b"/")[1:]
    if len(segs) > 1 and segs[-1] == b"":
        segs = segs[:-1]  # one trailing slash is plain (a 404, not ambiguous)
    plain = raw == b"/" or (raw.startswith(b"/") and len(raw) <= gate.MAX_PATH
             and all(s and s not in (b".", b"..") for s in segs)
             and all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@/"
                     for c in raw))
    assert (gate.path_problem(raw) is None) is plain


def test_path_memo_is_bounded_and_consistent() -> None:
    g, inner = make_gate()
    for i in range(gate._MEMO_MAX + 10):
        run(g, http_scope("GET", f"/junk{i}"))
    assert len(g._paths) == gate._MEMO_MAX
    assert run(g, http_scope("GET", "/v1/models"))[0] == 200  # not memoised, still decided
    assert run(g, http_scope("GET", "/v1/models", auth=None))[0] == 401


def test_unhashable_scope_values_are_refused() -> None:
    g, inner = make_gate()
    scope = http_scope("GET", "/v1/models")
    scope["raw_path"] = bytearray(b"/v1/models")
    assert run(g, scope)[0] == 400
    scope = http_scope("GET", "/v1/models")
    scope["path"] = ["/v1/models"]
    assert run(g, scope)[0] == 400
    assert inner.calls == []
