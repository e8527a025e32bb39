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

CONFIG_ENV = "VSL_GATE_CONFIG"
DEFAULT_KEY_ENV = "VLLM_API_KEY"
KEY_ENV_RE = re.compile(r"^(VLLM_API_KEY|VSL_GATE_KEY_[A-Z0-9_]{1,64})$")
CONFIG_VERSION = 1
# Longer paths are refused: no route of vLLM comes near this, and a bound keeps the check cheap.
MAX_PATH = 2048
_MEMO_MAX = 4096
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
ALL_METHODS = HTTP_METHODS | {_routes.WS}

_TEMPLATE_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
# Characters allowed in a request path: RFC 3986 unreserved + sub-delims + ":" "@" "/", minus
# the ones that different layers read differently (";" parameters, "%" escapes); "\\" is not in
# the set, nor is anything outside printable ASCII (NUL, controls, spaces, UTF-8).
_SAFE_PATH = re.compile(rb"/[A-Za-z0-9\-._~!$&'()*+,=:@/]*\Z")
# "/" or "/segment"... with non-empty segments that are not "." or "..", and at most one
# trailing slash (not a route of vLLM's, so a plain 404, as Starlette's router would not match).
_PLAIN_PATH = re.compile(
    rb"(?:(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~!$&'()*+,=:@]+)+/?|/)\Z")
_SAFE_TEMPLATE = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,=:@/{}]*\Z")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_LOG = "vllm_secure_launch.gate.middleware"


class GateConfigError(ValueError):
    """VSL_GATE_CONFIG (or the policy it came from) does not validate; the message names the
    key and never holds a secret."""


@dataclass(frozen=True)
class RouteRule:
    path: str  # exact path or template with {param} segments
    methods: frozenset[str]
    public: bool
    key_envs: tuple[str, ...] = (DEFAULT_KEY_ENV,)


@dataclass(frozen=True)
class GateTable:
    rules: tuple[RouteRule, ...]

    def key_envs(self) -> frozenset[str]:
        return frozenset(k for r in self.rules if not r.public for k in r.key_envs)


# ---------------------------------------------------------------------------------------------
# Path checks (shared with the launcher side and probe)


def path_problem(raw: bytes) -> str | None:
    """Why a raw request path is ambiguous, or None when it is plain.

    Refused rather than normalised, because every layer (proxy, uvicorn, Starlette, a future
    vLLM) may normalise differently: percent escapes (%2F, %2e, double encoding), backslashes,
    `;` parameters, NUL and other bytes outside printable ASCII, empty (`//`) and dot (`.`,
    `..`) segments, relative targets, and overlong paths.
    """
    if len(raw) <= MAX_PATH and _PLAIN_PATH.match(raw):
        return None  # the fast path: one regex for the common case
    if not raw.startswith(b"/"):
        return "not an absolute path"
    if len(raw) > MAX_PATH:
        return "path too long"
    if not _SAFE_PATH.match(raw):
        return "character outside the plain path set"
    if b"//" in raw:
        return "empty path segment"
    return "dot segment"


def template_problem(path: str) -> str | None:
    """Why an allowlist path (policy input) is unusable, or None."""
    if not isinstance(path, str) or not _SAFE_TEMPLATE.match(path):
        return "must start with '/' and use only plain path characters (no %, ;, \\, spaces)"
    plain = _TEMPLATE_PARAM.sub("x", path)
    if "{" in plain or "}" in plain:
        return "braces only as whole-segment parameters like {name}"
    problem = path_problem(plain.encode("ascii"))
    if problem:
        return problem
    if path != "/" and path.endswith("/"):
        return "no trailing slash (vLLM's routes have none; Starlette would redirect)"
    for seg in path.split("/")[1:]:
        if "{" in seg and not _TEMPLATE_PARAM.fullmatch(seg):
            return "a parameter must be a whole segment"
    return None


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
# Configuration


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GateConfigError(f"{where} must be a list of strings")
    return list(value)


def _check_path(path: Any, where: str) -> str:
    problem = template_problem(path)
    if problem:
        raise GateConfigError(f"{where}: path {path!r} is not usable: {problem}")
    return path


def _methods(value: Any, where: str) -> frozenset[str]:
    methods = [m.upper() for m in _str_list(value, where)]
    bad = sorted(set(methods) - ALL_METHODS)
    if bad or not methods:
        raise GateConfigError(
            f"{where} must be a non-empty list of {', '.join(sorted(ALL_METHODS))}; got {bad}")
    if _routes.WS in methods and len(set(methods)) > 1:
        raise GateConfigError(f"{where}: WS cannot be combined with HTTP methods")
    return frozenset(methods)


def _key_envs(value: Any, where: str) -> tuple[str, ...]:
    names = _str_list(value, where)
    for n in names:
        if not KEY_ENV_RE.match(n):
            raise GateConfigError(
                f"{where}: key variable {n!r} must be VLLM_API_KEY or VSL_GATE_KEY_<NAME>")
    if not names:
        raise GateConfigError(f"{where} must name at least one key variable")
    return tuple(dict.fromkeys(names))


def _inventory_methods(path: str) -> frozenset[str]:
    info = _routes.by_path().get(path)
    return frozenset(info.methods) if info else frozenset({"GET"})


def default_table() -> GateTable:
    rules = [RouteRule(r.path, frozenset(r.methods), True) for r in _routes.default_public()]
    rules += [RouteRule(r.path, frozenset(r.methods), False) for r in _routes.default_keyed()]
    return GateTable(tuple(rules))


def fallback_table() -> GateTable:
    """What a gate with an unreadable config serves: the default public routes only."""
    return GateTable(tuple(r for r in default_table().rules if r.public))


def parse_config(data: Any) -> GateTable:
    """Build the table from the decoded VSL_GATE_CONFIG object (see docs/gate.md).

    {"version": 1, "defaults": true, "public": ["/health"], "deny": ["/v1/responses"],
     "allow": [{"path": "/metrics", "methods": ["GET"], "auth": "key",
                "keys": ["VSL_GATE_KEY_METRICS"]}]}
    """
    if not isinstance(data, dict):
        raise GateConfigError("the gate config must be a JSON object")
    unknown = sorted(set(data) - {"version", "defaults", "public", "deny", "allow"})
    if unknown:
        raise GateConfigError(f"unknown gate config key(s): {', '.join(unknown)}")
    if data.get("version", CONFIG_VERSION) != CONFIG_VERSION:
        raise GateConfigError(f"gate config version must be {CONFIG_VERSION}")
    use_defaults = data.get("defaults", True)
    if not isinstance(use_defaults, bool):
        raise GateConfigError("gate.defaults must be true or false")
    public = [_check_path(p, "gate.public") for p in _str_list(
        data.get("public", [r.path for r in _routes.default_public()]), "gate.public")]
    deny = {_check_path(p, "gate.deny") for p in _str_list(data.get("deny", []), "gate.deny")}
    table: dict[str, RouteRule] = {}
    if use_defaults:
        for r in _routes.default_keyed():
            table[r.path] = RouteRule(r.path, frozenset(r.methods), False)
    for p in public:
        table[p] = RouteRule(p, _inventory_methods(p), True)
    allow = data.get("allow", [])
    if not isinstance(allow, list):
        raise GateConfigError("gate.allow must be a list of tables")
    for i, item in enumerate(allow):
        where = f"gate.allow[{i}]"
        if not isinstance(item, dict):
            raise GateConfigError(f"{where} must be a table")
        extra = sorted(set(item) - {"path", "methods", "auth", "keys"})
        if extra:
            raise GateConfigError(f"{where}: unknown key(s) {', '.join(extra)}")
        path = _check_path(item.get("path"), f"{where}.path")
        methods = (_methods(item["methods"], f"{where}.methods") if "methods" in item
                   else _inventory_methods(path))
        auth = item.get("auth", "key")
        if auth not in ("key", "none"):
            raise GateConfigError(f"{where}.auth must be \"key\" or \"none\"")
        keys = _key_envs(item.get("keys", [DEFAULT_KEY_ENV]), f"{where}.keys")
        if auth == "none" and "keys" in item:
            raise GateConfigError(f"{where}: keys make no sense with auth = \"none\"")
        table[path] = RouteRule(path, methods, auth == "none", keys)
    for p in deny:
        table.pop(p, None)
    return GateTable(tuple(table.values()))


def load_table(text: str | None) -> GateTable:
    if text is None or not text.strip():
        return default_table()
    try:
        data = json.loads(text)
    except ValueError:
        raise GateConfigError(f"{CONFIG_ENV} is not valid JSON") from None
    return parse_config(data)


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
        self._shadowed = frozenset(r.path for r in _routes.ROUTES if "{" not in r.path)
        for rule in table.rules:
            compiled = _Compiled(rule.methods, rule.public,
                                 tuple(digests[k] for k in rule.key_envs if k in digests))
            if "{" in rule.path:
                # Same shape as Starlette's "{name}" convertor: one non-empty segment.
                pattern = "^" + _TEMPLATE_PARAM.sub("[^/]+", re.escape(rule.path).replace(
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
