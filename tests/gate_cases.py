"""Request variants built from path tricks, shared by the gate's unit and real-vLLM tests.

Each variant is one raw HTTP request (method, request-target exactly as sent on the wire,
which credential). None may reach a vLLM handler: the expected statuses are the gate's refusals
(400 ambiguous path, 401 no/wrong key, 404 not allowlisted) or uvicorn's own 400 for requests it
cannot parse; 403 is the handshake refusal of a WebSocket closed before accept.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

KEY = "vsl-test-key-0123456789"
WRONG = "vsl-wrong-key-0123456789"

REFUSED = frozenset({400, 401, 403, 404})


@dataclass(frozen=True)
class Variant:
    name: str
    method: str
    target: str  # request-target as sent (may be absolute-form, may hold raw odd bytes)
    auth: str = "key"  # key | none | wrong | custom header value (raw)
    extra_headers: tuple[tuple[str, str], ...] = ()
    websocket: bool = False
    expect: frozenset[int] = REFUSED

    def auth_headers(self) -> list[tuple[str, str]]:
        if self.auth == "none":
            return []
        if self.auth == "key":
            return [("Authorization", f"Bearer {KEY}")]
        if self.auth == "wrong":
            return [("Authorization", f"Bearer {WRONG}")]
        if self.auth == "double":
            return [("Authorization", f"Bearer {KEY}"), ("Authorization", f"Bearer {WRONG}")]
        return [("Authorization", self.auth)]


def _v(name: str, method: str, target: str, auth: str = "key", **kw: object) -> Variant:
    return Variant(name, method, target, auth, **kw)  # type: ignore[arg-type]


_DENIED = ("/invocations", "/tokenize", "/metrics", "/version", "/docs", "/openapi.json",
           "/kv_event_sources", "/load", "/ping", "/scale_elastic_ep", "/redoc",
           "/is_scaling_elastic_ep", "/generative_scoring", "/detokenize")

VARIANTS: tuple[Variant, ...] = (
    # Denied routes, straight, with the right key: denied whatever the key.
    *(_v(f"denied {p}", "POST" if p in ("/invocations", "/tokenize", "/scale_elastic_ep",
                                          "/is_scaling_elastic_ep", "/generative_scoring",
                                          "/detokenize") else "GET", p)
      for p in _DENIED),
    # Case, slashes, dots.
    _v("upper case", "POST", "/INVOCATIONS"),
    _v("mixed case", "POST", "/Invocations"),
    _v("trailing slash", "POST", "/invocations/"),
    _v("double leading slash", "POST", "//invocations"),
    _v("triple slash", "POST", "///invocations"),
    _v("dot segment", "POST", "/./invocations"),
    _v("dot-dot from /v1", "POST", "/v1/../invocations"),
    _v("dot-dot from allowed route", "POST", "/v1/models/../../invocations"),
    _v("dot-dot deep", "POST", "/v1/chat/completions/../../../invocations"),
    _v("trailing dot", "POST", "/invocations/."),
    _v("trailing dot-dot", "POST", "/invocations/.."),
    _v("dot-dot after template", "POST", "/v1/responses/x/../../../invocations"),
    # Percent-encoding.
    _v("escaped letter", "POST", "/%69nvocations"),
    _v("escaped last letter", "POST", "/invocation%73"),
    _v("escaped slash lower", "POST", "/%2finvocations"),
    _v("escaped slash upper", "POST", "/%2Finvocations"),
    _v("escaped slash traversal", "POST", "/v1%2F..%2Finvocations"),
    _v("escaped slashes from allowed", "POST", "/v1/models%2F..%2F..%2Finvocations"),
    _v("escaped dots", "POST", "/v1/models/%2e%2e/%2e%2e/invocations"),
    _v("escaped dot segment", "POST", "/%2e/invocations"),
    _v("double encoding", "POST", "/%252finvocations"),
    _v("escaped NUL", "POST", "/invocations%00"),
    _v("escaped space", "POST", "/invocations%20"),
    _v("escaped slash suffix", "POST", "/invocations%2f"),
    _v("escaped hash", "POST", "/invocations%23"),
    _v("escape in template segment", "GET", "/v1/responses/..%2f..%2finvocations"),
    _v("escaped v1 prefix to denied", "GET", "/%76%31/../metrics"),
    _v("escaped allowed path", "GET", "/v1/%6dodels", auth="none"),
    # Parameters, backslashes, odd bytes.
    _v("semicolon param", "POST", "/invocations;x=1"),
    _v("empty semicolon", "POST", "/invocations;"),
    _v("semicolon traversal", "POST", "/v1/responses/..;/../invocations"),
    _v("semicolon on allowed", "GET", "/v1/models;x", auth="none"),
    _v("backslash prefix", "POST", "/\\invocations"),
    _v("backslash traversal", "POST", "/v1\\..\\invocations"),
    _v("backslash only", "POST", "\\invocations"),
    _v("tab in path", "POST", "/invocations\t"),
    _v("utf-8 in path", "POST", "/invocati\u00f3ns"),
    _v("overlong path", "GET", "/v1/models" + "/a" * 3000, auth="none"),
    _v("overlong denied", "POST", "/invocations" + "x" * 5000),
    # Absolute-form targets (uvicorn keeps only the path).
    _v("absolute-form denied", "POST", "http://127.0.0.1/invocations"),
    _v("absolute-form double slash", "POST", "http://127.0.0.1//invocations"),
    _v("absolute-form traversal", "POST", "http://evil.example/v1/../invocations"),
    _v("absolute-form allowed no key", "GET", "http://127.0.0.1/v1/models", auth="none"),
    _v("asterisk form", "OPTIONS", "*"),
    # Query strings and fragments must not change the route.
    _v("query on denied", "POST", "/invocations?next=/v1/models"),
    _v("fragment on denied", "POST", "/invocations#/v1/models"),
    _v("query on allowed no key", "GET", "/v1/models?api_key=x", auth="none"),
    # Root path without --root-path configured.
    _v("fake root path", "POST", "/api/invocations"),
    _v("fake root path to allowed", "GET", "/api/v1/models", auth="none"),
    # Methods.
    _v("HEAD denied", "HEAD", "/metrics"),
    _v("OPTIONS denied", "OPTIONS", "/invocations"),
    _v("CORS preflight denied", "OPTIONS", "/invocations",
       extra_headers=(("Origin", "http://x.example"), ("Access-Control-Request-Method", "POST"))),
    _v("lower-case method", "post", "/invocations"),
    _v("unknown method", "FOO", "/invocations"),
    _v("GET on POST-only denied", "GET", "/invocations"),
    # Keys on allowed routes.
    _v("allowed no key", "GET", "/v1/models", auth="none"),
    _v("allowed wrong key", "GET", "/v1/models", auth="wrong"),
    _v("allowed lower-case scheme wrong key", "GET", "/v1/models", auth=f"bearer x{KEY}"),
    _v("allowed basic auth", "GET", "/v1/models", auth="Basic dnNsOnZzbA=="),
    _v("allowed empty bearer", "GET", "/v1/models", auth="Bearer "),
    _v("allowed key with extra space", "GET", "/v1/models", auth=f"Bearer  {KEY}"),
    _v("allowed key without scheme", "GET", "/v1/models", auth=KEY),
    _v("allowed two Authorization headers", "GET", "/v1/models", auth="double"),
    _v("allowed trailing slash no key", "GET", "/v1/models/", auth="none"),
    _v("allowed upper case no key", "GET", "/V1/models", auth="none"),
    _v("allowed double slash no key", "GET", "/v1//models", auth="none"),
    _v("completions no key", "POST", "/v1/completions", auth="none"),
    _v("completions wrong key", "POST", "/v1/completions", auth="wrong"),
    _v("chat no key", "POST", "/v1/chat/completions", auth="none"),
    _v("health slash", "GET", "/health/"),
    _v("health traversal", "POST", "/health/../invocations"),
    # WebSocket upgrades.
    _v("websocket to denied", "GET", "/invocations", websocket=True),
    _v("websocket to allowed http route", "GET", "/v1/models", websocket=True),
    _v("websocket realtime no key", "GET", "/v1/realtime", auth="none", websocket=True),
)


def scope_path(target: str) -> tuple[str, bytes, bytes] | None:
    """(path, raw_path, query) as uvicorn 0.54 (httptools) puts them in the ASGI scope, or None
    where uvicorn itself answers 400 (unparsable target)."""
    raw = target.encode("utf-8")
    if raw.startswith((b"http://", b"https://")):
        rest = raw.split(b"://", 1)[1]
        slash = rest.find(b"/")
        raw = rest[slash:] if slash >= 0 else b"/"
    if not raw.startswith(b"/") or any(b < 0x21 or b > 0x7E for b in raw):
        return None
    raw = raw.split(b"#", 1)[0]
    path_b, _, query = raw.partition(b"?")
    path = path_b.decode("ascii")
    if "%" in path:
        path = urllib.parse.unquote(path)
    return path, path_b, query


BODY = b'{"model": "MODEL", "prompt": "hi", "max_tokens": 4}'
