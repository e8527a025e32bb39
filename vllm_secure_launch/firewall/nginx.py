"""`render nginx`: an nginx front (one server block) that proxies only the endpoint gate's
allowlist to vLLM's API address. Pure: the same plan and gate table give the same bytes, and
no secret appears (the API key stays with the client and vLLM; nginx passes it through).

Why a front repeats the gate: the gate runs inside vLLM and stays the authority (it also checks
the key); the front refuses everything else one hop earlier, at the machine that faces the
network, and adds what a proxy is for (TLS, client allow-lists, request size limits).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

UPSTREAM = "vllm_secure_launch"
# Characters a route may use to be written into a location without quoting surprises
# (vLLM's routes use far fewer); "{name}" parameters become one path segment.
_PLAIN = re.compile(r"/[A-Za-z0-9\-._~:@/]*\Z")
_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
# The gate refuses these raw paths with 400 (surface/gate_table.path_problem): percent escapes,
# ";" parameters, backslashes, empty and dot segments. nginx would decode and merge them before
# matching a location and then pass the raw form on, so the front refuses them the same way.
AMBIGUOUS = r'"^[^?]*(%|;|\\\\|//|/\.\.?(/|\?|$))"'
# Long generations stream for minutes; SSE needs every chunk forwarded as it comes.
STREAMING = ("proxy_buffering off;", "proxy_cache off;", "proxy_request_buffering off;",
             "proxy_read_timeout 3600s;", "proxy_send_timeout 3600s;", "gzip off;")


class FrontError(ValueError):
    """Why the plan or the table cannot be written as an nginx front (a sentence)."""


@dataclass(frozen=True)
class Front:
    listen: str = "8080"  # nginx `listen` value: PORT, ADDR:PORT or [ADDR6]:PORT
    server_name: str = "_"
    tls_cert: str = ""  # paths only: the key file itself never enters the output
    tls_key: str = ""
    max_body: str = "64m"  # audio and image uploads


def upstream_server(api: Any) -> str:
    """vLLM's API address as an nginx `server` (a wildcard bind is reached on loopback)."""
    if api.headless:
        raise FrontError("vLLM runs headless (no API server): there is nothing to front")
    if api.uds:
        return f"unix:{api.uds}"
    host = api.host or "127.0.0.1"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]:{api.port}" if ":" in host else f"{host}:{api.port}"


def location(path: str) -> str:
    """`= /exact` for a plain path, an anchored regex for a template."""
    if not _PLAIN.match(_PARAM.sub("x", path)) or "{" in _PARAM.sub("", path):
        raise FrontError(f"the route {path!r} cannot be written as an nginx location (only "
                         "letters, digits, -._~:@/ and whole-segment {name} parameters)")
    if not _PARAM.search(path):
        return f"= {path}"
    parts = _PARAM.split(path)
    return '~ "^' + "[^/]+".join(re.escape(p) for p in parts) + '$"'


def _headers(ws: bool) -> list[str]:
    out = ["proxy_http_version 1.1;", "proxy_set_header Host $host;",
           # The API key: passed through unchanged (nginx never sees its value here).
           "proxy_set_header Authorization $http_authorization;",
           "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
           "proxy_set_header X-Forwarded-Proto $scheme;"]
    if ws:
        return out + ["proxy_set_header Upgrade $http_upgrade;",
                      'proxy_set_header Connection "upgrade";']
    return out + ['proxy_set_header Connection "";']  # upstream keepalive


def _route(rule: Any, scheme: str) -> list[str]:
    ws = "WS" in rule.methods
    methods = " ".join(sorted({"GET"} if ws else set(rule.methods)))
    what = "public" if rule.public else "key required (checked by vLLM and the gate)"
    # proxy_set_header in a location replaces the server's whole list: a WebSocket route
    # repeats it with the upgrade headers; the others inherit the server's.
    return [f"\t# {' '.join(sorted(rule.methods))} {rule.path}: {what}",
            f"\tlocation {location(rule.path)} {{",
            f"\t\tlimit_except {methods} {{ deny all; }}",  # other methods: 403
            *(f"\t\t{h}" for h in (_headers(True) if ws else [])),
            f"\t\tproxy_pass {scheme}://{UPSTREAM};", "\t}"]


def _listen(front: Front) -> list[str]:
    if bool(front.tls_cert) != bool(front.tls_key):
        raise FrontError("give both --tls-cert and --tls-key, or neither")
    if not front.tls_cert:
        return ["\t# Plain HTTP: the API key crosses the network in clear. Give --tls-cert and",
                "\t# --tls-key, or put this behind a TLS terminator.",
                f"\tlisten {front.listen};"]
    return [f"\tlisten {front.listen} ssl;", f"\tssl_certificate {front.tls_cert};",
            f"\tssl_certificate_key {front.tls_key};", "\tssl_protocols TLSv1.2 TLSv1.3;"]


def render(plan: Any, table: Any, front: Front, api_sources: Sequence[str] = ()) -> str:
    """The server block (and its upstream) for nginx's `http { }` context."""
    scheme = "https" if plan.api.tls else "http"
    rules = sorted(table.rules, key=lambda r: r.path)
    lines = [
        "# nginx front for vLLM generated by `vllm-secure-launch render nginx`.",
        "# Only the endpoint gate's allowlist is proxied: other paths 404, other methods 403,",
        "# ambiguous paths 400. Include it in nginx's http block (e.g. conf.d/vllm.conf).",
        f"upstream {UPSTREAM} {{", f"\tserver {upstream_server(plan.api)};", "\tkeepalive 16;",
        "}", "server {", *_listen(front), f"\tserver_name {front.server_name};",
        "\tserver_tokens off;", "\tmerge_slashes off;",
        f"\tclient_max_body_size {front.max_body};",
        *(f"\t{s}" for s in STREAMING), *(f"\t{h}" for h in _headers(False)),
    ]
    if scheme == "https":
        lines += ["\t# vLLM serves TLS itself: trust its CA with proxy_ssl_trusted_certificate",
                  "\t# and turn on proxy_ssl_verify.", "\tproxy_ssl_server_name on;"]
    if api_sources:  # [api] allowed_sources: the clients, as nginx sees them
        lines += [*(f"\tallow {c};" for c in api_sources), "\tdeny all;"]
    lines += [f"\tif ($request_uri ~ {AMBIGUOUS}) {{ return 400; }}"]
    for rule in rules:
        lines += _route(rule, scheme)
    lines += ["\t# Everything the allowlist does not name.",
              "\tlocation / { return 404; }", "}"]
    return "\n".join(lines) + "\n"
