"""The gate's request-target decision against a reference: Starlette's own router on vLLM's real
route table (surface/routes.py, every path with its methods).

Property: for generated raw request targets (percent escapes, double slashes, dot segments,
trailing slashes, case, `;` parameters, query strings, unicode, overlong paths, root paths), a
request the gate (gate/middleware.py EndpointGate.decide) lets through without a key routes, in
Starlette, to a public endpoint or to none; with a valid key, to an allowlisted endpoint or none.
Never to an endpoint outside the allowlist. The ASGI scope is built as uvicorn does it
(tests/gate_cases.scope_path). Fixed seed (derandomize).
"""

from __future__ import annotations

import os
import urllib.parse

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.responses import PlainTextResponse
from starlette.routing import Match, Route, Router, WebSocketRoute

from vllm_secure_launch.gate.middleware import EndpointGate
from vllm_secure_launch.surface import routes

from .gate_cases import KEY, scope_path

_SCALE = float(os.environ.get("VSL_FUZZ_SCALE", "1"))
FUZZ = settings(derandomize=True, deadline=None, database=None,
                max_examples=max(1, int(4000 * _SCALE)),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


async def _endpoint(request):  # never called: only the router's matching is used
    return PlainTextResponse("x")


def reference_router() -> Router:
    out = []
    for r in routes.ROUTES:
        if r.methods == (routes.WS,):
            out.append(WebSocketRoute(r.path, _endpoint, name=r.path))
        else:
            out.append(Route(r.path, _endpoint, methods=list(r.methods), name=r.path))
    return Router(out)


ROUTER = reference_router()
PUBLIC = frozenset(r.path for r in routes.default_public())
ALLOWED = PUBLIC | frozenset(r.path for r in routes.default_keyed())
GATE = EndpointGate(lambda *a: None, environ={"VLLM_API_KEY": KEY})


def starlette_route(scope: dict) -> str | None:
    """The template Starlette's router dispatches this scope to (FULL or PARTIAL = method
    mismatch, which still names the endpoint), or None (404)."""
    partial = None
    for route in ROUTER.routes:
        match, _child = route.matches(scope)
        if match == Match.FULL:
            return route.path
        if match == Match.PARTIAL and partial is None:
            partial = route.path
    return partial


# ---------------------------------------------------------------------------------------------
# Targets

PATHS = [r.probe_path for r in routes.ROUTES] + ["/", "/v1", "/v1/", "/docs", "/x/../health"]


def _encode_some(draw, path: str) -> str:
    out = []
    for ch in path:
        if ch != "/" and draw(st.integers(0, 9)) == 0:
            out.append("%" + ("%02x" if draw(st.booleans()) else "%02X") % ord(ch))
        elif ch == "/" and draw(st.integers(0, 19)) == 0:
            out.append(draw(st.sampled_from(["%2F", "%2f", "%252F", "\\"])))
        else:
            out.append(ch)
    return "".join(out)


MUTATIONS = ["encode", "double-slash", "dot", "dotdot", "trailing", "case", "param", "query",
             "unicode", "overlong", "fragment", "prefix-junk", "absolute", "nothing"]


@st.composite
def targets(draw) -> str:
    path = draw(st.sampled_from(PATHS))
    for how in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        segs = path.split("/")
        i = draw(st.integers(1, max(1, len(segs) - 1))) if len(segs) > 1 else 0
        if how == "encode":
            path = _encode_some(draw, path)
        elif how == "double-slash":
            path = "/".join(segs[:i]) + "//" + "/".join(segs[i:])
        elif how == "dot":
            path = "/".join([*segs[:i], draw(st.sampled_from([".", "%2e", "%2E"])), *segs[i:]])
        elif how == "dotdot":
            path = "/".join([*segs[:i], "x", draw(st.sampled_from(["..", "%2e%2e", ".%2e"])),
                             *segs[i:]])
        elif how == "trailing":
            path = path + draw(st.sampled_from(["/", "//", "/.", "%2F"]))
        elif how == "case":
            path = path.upper() if draw(st.booleans()) else path.title()
        elif how == "param":
            path = path + draw(st.sampled_from([";", ";a=b", ";/x", "%3B"]))
        elif how == "query":
            path = path + draw(st.sampled_from(["?", "?a=1", "?/../x", "?%2F", "?#"]))
        elif how == "unicode":
            ch = draw(st.sampled_from(["é", "\u0130", "\u212a", "\uff0f", "\u2024", "\x00"]))
            enc = urllib.parse.quote(ch, safe="")
            path = path + (enc if draw(st.booleans()) else ch)
        elif how == "overlong":
            path = path + "/" + "a" * draw(st.integers(2000, 2100))
        elif how == "fragment":
            path = path + "#frag"
        elif how == "prefix-junk":
            path = draw(st.sampled_from(["", "x", "*", "./", "/.", "%2F"])) + path
        elif how == "absolute":
            path = "http://h" + path
    return path


@FUZZ
@given(target=targets(), method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "WS"]),
       root=st.sampled_from(["", "", "", "/api"]), keyed=st.booleans())
def test_gate_passes_only_what_routes_to_the_allowlist(target, method, root, keyed):
    parsed = scope_path(target)
    if parsed is None:
        return  # uvicorn answers 400 itself; nothing reaches the gate
    path, raw, query = parsed
    if root:
        path, raw = root + path, root.encode() + raw
    scope = {"type": "websocket" if method == "WS" else "http", "path": path, "raw_path": raw,
             "query_string": query, "root_path": root,
             "headers": [(b"authorization", f"Bearer {KEY}".encode())] if keyed else []}
    if method != "WS":
        scope["method"] = method
    verdict = GATE.decide(scope)
    if verdict is not None:
        return  # refused: nothing reaches a vLLM handler
    routed = starlette_route(scope)
    allowed = ALLOWED if keyed else PUBLIC
    assert routed is None or routed in allowed, (target, root, method, keyed, routed)
