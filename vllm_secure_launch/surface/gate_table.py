"""The endpoint gate's route table: its JSON config (VSL_GATE_CONFIG), validated into a
GateTable, and the request-path checks. Standard library only and no work at import: the gate
middleware imports it inside vLLM's API server, and the launcher's planner imports it to
validate the policy's [gate] section without loading the middleware (hashlib, hmac, logging).

Patterns are plain strings: `re` compiles each once, on first use, and caches it.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from vllm_secure_launch.surface import routes as _routes

CONFIG_ENV = "VSL_GATE_CONFIG"
DEFAULT_KEY_ENV = "VLLM_API_KEY"
KEY_ENV_RE = r"^(VLLM_API_KEY|VSL_GATE_KEY_[A-Z0-9_]{1,64})$"
CONFIG_VERSION = 1
# Longer paths are refused: no route of vLLM comes near this, and a bound keeps the check cheap.
MAX_PATH = 2048
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
ALL_METHODS = HTTP_METHODS | {_routes.WS}

_TEMPLATE_PARAM = r"\{[A-Za-z_][A-Za-z0-9_]*\}"
# Characters allowed in a request path: RFC 3986 unreserved + sub-delims + ":" "@" "/", minus
# the ones that different layers read differently (";" parameters, "%" escapes); "\\" is not in
# the set, nor is anything outside printable ASCII (NUL, controls, spaces, UTF-8).
_SAFE_PATH = rb"/[A-Za-z0-9\-._~!$&'()*+,=:@/]*\Z"
# "/" or "/segment"... with non-empty segments that are not "." or "..", and at most one
# trailing slash (not a route of vLLM's, so a plain 404, as Starlette's router would not match).
_PLAIN_PATH = (
    rb"(?:(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~!$&'()*+,=:@]+)+/?|/)\Z")
_SAFE_TEMPLATE = r"/[A-Za-z0-9\-._~!$&'()*+,=:@/{}]*\Z"


class GateConfigError(ValueError):
    """VSL_GATE_CONFIG (or the policy it came from) does not validate; the message names the
    key and never holds a secret."""


# NamedTuples, not frozen dataclasses: built on every start, and a dataclass compiles its
# methods at import (issue 9).
class RouteRule(NamedTuple):
    path: str  # exact path or template with {param} segments
    methods: frozenset[str]
    public: bool
    key_envs: tuple[str, ...] = (DEFAULT_KEY_ENV,)


class GateTable(NamedTuple):
    rules: tuple[RouteRule, ...]
    surface: str = _routes.DEFAULT_SURFACE  # the vLLM whose route inventory the defaults are

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
    if len(raw) <= MAX_PATH and re.match(_PLAIN_PATH, raw):
        return None  # the fast path: one regex for the common case
    if not raw.startswith(b"/"):
        return "not an absolute path"
    if len(raw) > MAX_PATH:
        return "path too long"
    if not re.match(_SAFE_PATH, raw):
        return "character outside the plain path set"
    if b"//" in raw:
        return "empty path segment"
    return "dot segment"


def template_problem(path: str) -> str | None:
    """Why an allowlist path (policy input) is unusable, or None."""
    if not isinstance(path, str) or not re.match(_SAFE_TEMPLATE, path):
        return "must start with '/' and use only plain path characters (no %, ;, \\, spaces)"
    plain = re.sub(_TEMPLATE_PARAM, "x", path)
    if "{" in plain or "}" in plain:
        return "braces only as whole-segment parameters like {name}"
    problem = path_problem(plain.encode("ascii"))
    if problem:
        return problem
    if path != "/" and path.endswith("/"):
        return "no trailing slash (vLLM's routes have none; Starlette would redirect)"
    for seg in path.split("/")[1:]:
        if "{" in seg and not re.fullmatch(_TEMPLATE_PARAM, seg):
            return "a parameter must be a whole segment"
    return None


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
    return str(path)


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
        if not re.match(KEY_ENV_RE, n):
            raise GateConfigError(
                f"{where}: key variable {n!r} must be VLLM_API_KEY or VSL_GATE_KEY_<NAME>")
    if not names:
        raise GateConfigError(f"{where} must name at least one key variable")
    return tuple(dict.fromkeys(names))


def _inventory_methods(path: str, surface: str) -> frozenset[str]:
    info = _routes.by_path(surface).get(path)
    return frozenset(info.methods) if info else frozenset({"GET"})


def default_table(surface: str = _routes.DEFAULT_SURFACE) -> GateTable:
    rules = [RouteRule(r.path, frozenset(r.methods), True)
             for r in _routes.default_public(surface)]
    rules += [RouteRule(r.path, frozenset(r.methods), False)
              for r in _routes.default_keyed(surface)]
    return GateTable(tuple(rules), surface)


def fallback_table() -> GateTable:
    """What a gate with an unreadable config serves: the default public routes only."""
    return GateTable(tuple(r for r in default_table().rules if r.public))


def _surface(data: dict[str, Any]) -> str:
    surface = data.get("surface", _routes.DEFAULT_SURFACE)
    if surface not in _routes.SURFACES:
        raise GateConfigError(f"gate config surface must be one of "
                              f"{', '.join(_routes.SURFACES)} (the vLLM route inventories this "
                              "gate knows)")
    return str(surface)


def parse_config(data: Any) -> GateTable:
    """Build the table from the decoded VSL_GATE_CONFIG object (see docs/gate.md).

    {"version": 1, "surface": "0.33", "defaults": true, "public": ["/health"],
     "deny": ["/v1/responses"], "allow": [{"path": "/metrics", "methods": ["GET"],
     "auth": "key", "keys": ["VSL_GATE_KEY_METRICS"]}]}

    `surface` names the vLLM version whose route inventory gives the defaults (the planner
    writes the surface of the vLLM it starts); without it, 0.32's.
    """
    if not isinstance(data, dict):
        raise GateConfigError("the gate config must be a JSON object")
    unknown = sorted(set(data) - {"version", "surface", "defaults", "public", "deny", "allow"})
    if unknown:
        raise GateConfigError(f"unknown gate config key(s): {', '.join(unknown)}")
    if data.get("version", CONFIG_VERSION) != CONFIG_VERSION:
        raise GateConfigError(f"gate config version must be {CONFIG_VERSION}")
    use_defaults = data.get("defaults", True)
    if not isinstance(use_defaults, bool):
        raise GateConfigError("gate.defaults must be true or false")
    surface = _surface(data)
    public = [_check_path(p, "gate.public") for p in _str_list(
        data.get("public", [r.path for r in _routes.default_public(surface)]), "gate.public")]
    deny = {_check_path(p, "gate.deny") for p in _str_list(data.get("deny", []), "gate.deny")}
    table: dict[str, RouteRule] = {}
    if use_defaults:
        for r in _routes.default_keyed(surface):
            table[r.path] = RouteRule(r.path, frozenset(r.methods), False)
    for p in public:
        table[p] = RouteRule(p, _inventory_methods(p, surface), True)
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
                   else _inventory_methods(path, surface))
        auth = item.get("auth", "key")
        if auth not in ("key", "none"):
            raise GateConfigError(f"{where}.auth must be \"key\" or \"none\"")
        keys = _key_envs(item.get("keys", [DEFAULT_KEY_ENV]), f"{where}.keys")
        if auth == "none" and "keys" in item:
            raise GateConfigError(f"{where}: keys make no sense with auth = \"none\"")
        table[path] = RouteRule(path, methods, auth == "none", keys)
    for p in deny:
        table.pop(p, None)
    return GateTable(tuple(table.values()), surface)


def load_table(text: str | None) -> GateTable:
    if text is None or not text.strip():
        return default_table()
    try:
        data = json.loads(text)
    except ValueError:
        raise GateConfigError(f"{CONFIG_ENV} is not valid JSON") from None
    return parse_config(data)
