"""The endpoint gate: a pure ASGI middleware that runs inside vLLM's API server process.

vLLM 0.32 loads it with `--middleware vllm_secure_launch.gate.middleware.EndpointGate` and adds it with
`app.add_middleware(EndpointGate)`; the last `--middleware` becomes the outermost layer, in front
of vLLM's own CORS, scaling and `--api-key` middleware. It is default-deny: only allowlisted
routes reach vLLM, everything else answers 404 whatever the key.

Standard library only (it must import in vLLM's interpreter without the launcher's
dependencies). Configuration comes only from the process environment, read once at
construction:

* `VLLM_API_KEY`: the key (the same variable vLLM reads; the launcher never puts it in argv).
* `VSL_GATE_CONFIG`: non-secret JSON written by the launcher (gate_config.child_env); absent =
  the built-in defaults. Other key variables (`VSL_GATE_KEY_*`) are named in it.

Fail closed: a malformed config keeps only the default public routes (/health); a missing key
makes every keyed route answer 401. Neither opens anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping, MutableMapping

from vllm_secure_launch.surface import routes as _routes
from vllm_secure_launch.surface.gate_table import (  # noqa: F401 (the gate's public names)
    _TEMPLATE_PARAM,
    ALL_METHODS,
    CONFIG_ENV,
    CONFIG_VERSION,
    DEFAULT_KEY_ENV,
    HTTP_METHODS,
    KEY_ENV_RE,
    MAX_PATH,
    GateConfigError,
    GateTable,
    RouteRule,
    default_table,
    fallback_table,
    load_table,
    parse_config,
    path_problem,
    template_problem,
)

_MEMO_MAX = 4096

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_LOG = "vllm_secure_launch.gate.middleware"


def route_path(scope: Mapping[str, Any]) -> str:
    """The path Starlette's router matches: `starlette._utils.get_route_path`, line for line,
    so the gate decides on exactly what vLLM will route (including --root-path)."""
    path: str = scope["path"]
    root_path = scope.get("root_path", "")
    if not root_path:
        return path
    if not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    if path[len(root_path)] == "/":
        return path[len(root_path):]
    return path


# ---------------------------------------------------------------------------------------------
# The middleware


@dataclass(frozen=True)
class _Compiled:
    methods: frozenset[str]
    public: bool
    digests: tuple[bytes, ...]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def _json_body(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


# Bodies match what clients already see from FastAPI / vLLM, so a gate 404 does not reveal that
# a route exists behind it.
_NOT_FOUND = (404, _json_body({"detail": "Not Found"}), ())
_BAD_REQUEST = (400, _json_body({"detail": "Bad Request"}), ())
_UNAUTHORIZED = (401, _json_body({"error": "Unauthorized"}), ((b"www-authenticate", b"Bearer"),))


class EndpointGate:
    """Default-deny allowlist + bearer-key check in front of vLLM (see module docstring)."""

    def __init__(self, app: ASGIApp, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        log = logging.getLogger(_LOG)
        self.app = app
        try:
            table = load_table(env.get(CONFIG_ENV))
        except GateConfigError as exc:
            # Fail closed: never fall back to "everything"; keep only the default public routes.
            log.error("endpoint gate: %s; serving only %s until fixed", exc,
                      ", ".join(r.path for r in fallback_table().rules) or "nothing")
            table = fallback_table()
        digests = {name: _digest(env[name]) for name in table.key_envs() if env.get(name)}
        missing = sorted(table.key_envs() - set(digests))
        if missing:
            log.warning("endpoint gate: key variable(s) %s empty or unset; routes that need them "
                        "answer 401", ", ".join(missing))
        self._paths: dict[tuple[Any, Any, Any], _Compiled | None | bool] = {}
        self._exact: dict[str, _Compiled] = {}
        self._templates: list[tuple[re.Pattern[str], _Compiled]] = []
        # Known fixed routes of vLLM that are not allowlisted never match a template rule
        # (`/v1/responses/render` must not pass as `/v1/responses/{response_id}`).
        # Every known vLLM's routes, whichever surface the config names: a fixed route of any
        # version is never a template's match.
        self._shadowed = frozenset(r.path for r in _routes.every_route() if "{" not in r.path)
        for rule in table.rules:
            compiled = _Compiled(rule.methods, rule.public,
                                 tuple(digests[k] for k in rule.key_envs if k in digests))
            if "{" in rule.path:
                # Same shape as Starlette's "{name}" convertor: one non-empty segment.
                pattern = "^" + re.sub(_TEMPLATE_PARAM, "[^/]+", re.escape(rule.path).replace(
                    r"\{", "{").replace(r"\}", "}")) + r"\Z"
                self._templates.append((re.compile(pattern), compiled))
            else:
                self._exact[rule.path] = compiled

    def _lookup(self, path: str) -> _Compiled | None:
        hit = self._exact.get(path)
        if hit is not None:
            return hit
        if path in self._shadowed:
            return None
        for pattern, compiled in self._templates:
            if pattern.match(path):
                return compiled
        return None

    @staticmethod
    def _authorized(headers: Iterable[tuple[bytes, bytes]], digests: tuple[bytes, ...]) -> bool:
        # ASGI servers give header names in lower case (ASGI spec), as vLLM's own check assumes.
        values = [v for k, v in headers if k == b"authorization"]
        if len(values) != 1 or not digests:
            return False  # none, or several Authorization headers (layers disagree on which)
        scheme, _, token = values[0].partition(b" ")  # same split as vLLM's check
        if scheme.lower() != b"bearer" or not token:
            return False
        given = hashlib.sha256(token).digest()
        ok = False
        for d in digests:  # every key, no early exit: the time does not say which key matched
            ok |= hmac.compare_digest(given, d)
        return ok

    def _resolve(self, raw: Any, path: Any, scope: Mapping[str, Any]) -> _Compiled | None | bool:
        """The route rule for a path; None = not allowlisted (404); False = ambiguous (400)."""
        if not isinstance(path, str):
            return False
        if raw is None:
            try:
                raw = path.encode("ascii")
            except UnicodeEncodeError:
                return False
        if not isinstance(raw, bytes) or path_problem(raw):
            return False
        # No escapes are allowed, so the decoded path must be the raw path byte for byte; if a
        # server ever disagreed, refuse rather than pick one.
        if raw.decode("ascii") != path:
            return False
        return self._lookup(route_path(scope))

    def decide(self, scope: Mapping[str, Any]) -> tuple[int, bytes, tuple] | None:
        """None = pass to vLLM; else (status, body, extra headers) to answer instead."""
        raw = scope.get("raw_path")
        path = scope.get("path")
        key = (raw, path, scope.get("root_path", ""))
        try:
            rule = self._paths[key]
        except (KeyError, TypeError):  # TypeError: an unhashable raw_path (not bytes)
            rule = self._resolve(raw, path, scope)
            # Bounded memo of path verdicts (pure function of the key): clients use few paths;
            # a flood of distinct junk paths only stops the memo from growing.
            if (len(self._paths) < _MEMO_MAX and isinstance(raw, (bytes, type(None)))
                    and isinstance(path, str) and isinstance(key[2], str)):
                self._paths[key] = rule
        if not isinstance(rule, _Compiled):
            return _BAD_REQUEST if rule is False else _NOT_FOUND
        is_ws = scope["type"] == "websocket"
        method = _routes.WS if is_ws else scope.get("method", "")
        headers = scope.get("headers") or ()
        if (not is_ws and method == "OPTIONS" and _routes.WS not in rule.methods
                and any(k.lower() == b"access-control-request-method" for k, _ in headers)):
            # A CORS preflight: vLLM's CORSMiddleware answers it itself and never calls a
            # handler (vLLM's own auth lets OPTIONS through for the same reason).
            return None
        if not rule.public and not self._authorized(headers, rule.digests):
            return _UNAUTHORIZED
        if method not in rule.methods:
            if is_ws or rule.methods == {_routes.WS}:
                return _NOT_FOUND  # Starlette's router gives 404 across the http/ws divide
            allow = ", ".join(sorted(rule.methods)).encode("ascii")
            return (405, _json_body({"detail": "Method Not Allowed"}), ((b"allow", allow),))
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan and anything else: not a request
            return
        try:
            verdict = self.decide(scope)
        except Exception:  # noqa: BLE001 - a gate that crashes must refuse, never pass
            logging.getLogger(_LOG).exception("endpoint gate: internal error; request refused")
            verdict = _BAD_REQUEST
        if verdict is None:
            await self.app(scope, receive, send)
            return
        status, body, extra = verdict
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode("ascii")), *extra]
        if kind == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            # Closing before accept makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
