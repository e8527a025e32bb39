"""Launcher side of the endpoint gate: the policy's [gate] section → child environment,
`--middleware` value and findings. Pure: no OS access (the environment is passed in).

Policy schema (TOML; every key optional):

    [gate]
    enabled = true                 # false: no gate (VSL251 warns; vLLM's --api-key alone)
    defaults = true                # keep the built-in allowlist (OpenAI/Anthropic under /v1)
    public = ["/health"]           # no key needed (replaces the default list)
    deny = ["/v1/responses"]       # take routes out of the built-in allowlist

    [[gate.allow]]                 # add a route (repeatable)
    path = "/metrics"              # exact path; "{name}" for one path segment
    methods = ["GET"]              # default: the route's methods in the inventory, else GET
    auth = "key"                   # "key" (default) or "none"
    keys = ["VSL_GATE_KEY_METRICS"]  # variables whose values are accepted; default VLLM_API_KEY
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from vllm_secure_launch.errors import PolicyFileError
from vllm_secure_launch.findings import Finding
from vllm_secure_launch.records import record
from vllm_secure_launch.rules import gate_rules
from vllm_secure_launch.surface import routes
from vllm_secure_launch.surface.gate_table import (
    CONFIG_ENV,
    CONFIG_VERSION,
    DEFAULT_KEY_ENV,
    GateConfigError,
    GateTable,
    parse_config,
)

MIDDLEWARE = "vllm_secure_launch.gate.middleware.EndpointGate"
MIDDLEWARE_ARGS = ("--middleware", MIDDLEWARE)

_KEYS = {"enabled", "defaults", "public", "deny", "allow"}
_VLLM_GUARDED = ("/v1", "/v2", "/inference", "/cohere")


@record
class GateSettings:
    enabled: bool
    config: Mapping[str, Any]  # the JSON object the gate reads from VSL_GATE_CONFIG
    table: GateTable

    @property
    def key_envs(self) -> frozenset[str]:
        return self.table.key_envs()


def parse_policy(section: Mapping[str, Any] | None,
                 surface: str = routes.DEFAULT_SURFACE) -> GateSettings:
    """Validate the [gate] section for the route inventory of vLLM `surface` (the version that
    will run); raise PolicyFileError naming the bad key."""
    section = {} if section is None else section
    if not isinstance(section, Mapping):
        raise PolicyFileError("policy key 'gate' must be a table",
                              fix="write it as [gate] with the keys described in docs/gate.md")
    unknown = sorted(set(section) - _KEYS)
    if unknown:
        raise PolicyFileError(
            f"unknown policy key(s) gate.{', gate.'.join(unknown)}",
            why="a misspelt gate key would silently leave the default in place",
            fix=f"use only gate.{', gate.'.join(sorted(_KEYS))}")
    enabled = section.get("enabled", True)
    if not isinstance(enabled, bool):
        raise PolicyFileError("policy key gate.enabled must be true or false")
    config: dict[str, Any] = {"version": CONFIG_VERSION, "surface": surface}
    for key in ("defaults", "public", "deny", "allow"):
        if key in section:
            config[key] = _plain(section[key])
    try:
        table = parse_config(config)
    except GateConfigError as exc:
        raise PolicyFileError(
            f"invalid policy key {exc}",
            why="the endpoint gate would not know which routes to let through",
            fix="see docs/gate.md for the [gate] schema") from None
    for rule in table.rules:
        # vLLM's own --api-key check also runs under these prefixes and accepts only
        # VLLM_API_KEY: another key would pass the gate and then get vLLM's 401.
        if (not rule.public and rule.path.startswith(_VLLM_GUARDED)
                and DEFAULT_KEY_ENV not in rule.key_envs):
            raise PolicyFileError(
                f"invalid policy key gate.allow: {rule.path} lists keys without VLLM_API_KEY",
                why=("vLLM checks VLLM_API_KEY itself on /v1, /v2, /inference and /cohere, so "
                     "other keys would always get 401 there"),
                fix="add \"VLLM_API_KEY\" to the route's keys, or drop keys")
    return GateSettings(enabled, config, table)


def settings_of(gate: GateSettings | Mapping[str, Any] | None,
                surface: str = routes.DEFAULT_SURFACE) -> GateSettings:
    """The settings as given (the planner parses the [gate] section once per plan), or the
    [gate] section parsed now."""
    return gate if isinstance(gate, GateSettings) else parse_policy(gate, surface)


def _plain(value: Any) -> Any:
    """TOML tables/arrays as plain JSON-able dicts/lists (tomllib returns plain types, but a
    Mapping from elsewhere might not be a dict)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def child_env(gate_policy: GateSettings | Mapping[str, Any] | None,
              surface: str = routes.DEFAULT_SURFACE) -> dict[str, str]:
    """Variables the planner sets in vLLM's environment for the gate (none secret); the config
    names the vLLM surface whose route inventory gives the gate its defaults.

    The keys themselves are not here: VLLM_API_KEY (and any VSL_GATE_KEY_* the policy names)
    stay where the planner already puts secrets, and must be listed in Plan.secret_env."""
    settings = settings_of(gate_policy, surface)
    if not settings.enabled:
        return {}
    return {CONFIG_ENV: json.dumps(settings.config, separators=(",", ":"), sort_keys=True)}


def key_env(gate_policy: GateSettings | Mapping[str, Any] | None,
            environ: Mapping[str, str]) -> dict[str, str]:
    """The extra key variables (VSL_GATE_KEY_*) the policy names, copied from the launcher's
    environment for the child (secret values: list them in Plan.secret_env). VLLM_API_KEY is
    not here; the planner sets it from its chosen key source."""
    settings = settings_of(gate_policy)
    if not settings.enabled:
        return {}
    return {n: environ[n] for n in sorted(settings.key_envs - {DEFAULT_KEY_ENV})
            if environ.get(n)}


def middleware_args(gate_policy: GateSettings | Mapping[str, Any] | None) -> tuple[str, ...]:
    """What to append to vLLM's argv: LAST, so the gate is the outermost middleware (Starlette
    puts the last add_middleware outermost)."""
    return MIDDLEWARE_ARGS if settings_of(gate_policy).enabled else ()


def secret_env_names(gate_policy: GateSettings | Mapping[str, Any] | None) -> frozenset[str]:
    settings = settings_of(gate_policy)
    return settings.key_envs | {DEFAULT_KEY_ENV} if settings.enabled else frozenset()


def findings(gate_policy: GateSettings | Mapping[str, Any] | None, environ: Mapping[str, str],
             surface: str = routes.DEFAULT_SURFACE) -> list[Finding]:
    """Gate findings for the plan: missing keys, disabled gate, risky additions."""
    settings = settings_of(gate_policy, surface)
    out: list[Finding] = []
    if not settings.enabled:
        out.append(gate_rules.GATE_DISABLED.finding(
            "gate.enabled", "the endpoint gate is disabled: /invocations, /tokenize, /metrics, "
            "/docs and other routes outside /v1 answer without a key"))
        return out
    needs_key = any(not r.public for r in settings.table.rules)
    if needs_key and not environ.get(DEFAULT_KEY_ENV):
        out.append(gate_rules.NO_API_KEY.finding(
            DEFAULT_KEY_ENV, "no API key in VLLM_API_KEY: the gate answers 401 to every route "
            "that needs a key (all inference)"))
    for name in sorted(settings.key_envs - {DEFAULT_KEY_ENV}):
        if not environ.get(name):
            out.append(gate_rules.KEY_VAR_MISSING.finding(
                name, f"the policy names key variable {name} but it is empty or unset"))
    inventory = routes.by_path(surface)
    for rule in settings.table.rules:
        info = inventory.get(rule.path)
        if rule.public and info is not None and info.sensitivity == routes.HIGH:
            out.append(gate_rules.SENSITIVE_PUBLIC.finding(
                rule.path, f"{rule.path} ({info.what}) is reachable without a key"))
        elif (info is not None and info.default == routes.DENY and not rule.public
              and info.area not in ("metrics", "info", "docs", "sagemaker", "tokenizer",
                                    "inference", "cohere")):
            out.append(gate_rules.OPERATIONAL_ALLOWED.finding(
                rule.path, f"{rule.path} ({info.what}) is allowlisted; any holder of its key "
                "can use it"))
    return out
