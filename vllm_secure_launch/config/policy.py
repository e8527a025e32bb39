"""The policy: TOML file → validated sections; CLI > env (VSL_*) > file > defaults → frozen Policy.

Secure defaults need no file. Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from vllm_secure_launch.config import settings
from vllm_secure_launch.config.settings import DEFAULT_POLICY_PATH, Setting
from vllm_secure_launch.errors import PolicyFileError
from vllm_secure_launch.records import record

# The table of settings (keys, sections, kinds, defaults, env names, choices, bounds) is
# config/settings.py; this module reads the file and merges the sources.
_STR, _FLOAT, _BOOL, _LIST = settings.STR, settings.NUMBER, settings.BOOL, settings.LIST
SECTIONS = settings.SECTIONS
POLICY_LIMIT = 1024 * 1024


@record
class Policy:
    """The merged settings. One field per file setting of config/settings.py, with the same
    default (tests/test_settings.py checks it), then what the file's other sections give."""

    vllm_command: tuple[str, ...] = ()
    accelerator: str = "auto"
    ready_timeout: float = 1800.0
    audit: str = "enforce"
    audit_interval: float = 1.0
    stop_grace: float = 30.0
    hang_timeout: float = 120.0  # 0: off
    log_format: str = "text"
    format: str = "text"
    report: str = ""
    dry_run: bool = False
    runtime_dir: str = ""
    firewall: str = "auto"  # auto | enforce | strict | off (docs/firewall.md)
    api_host: str = "127.0.0.1"
    allow_wildcard: bool = False
    api_key_file: str = ""
    api_allowed_sources: tuple[str, ...] = ()  # CIDRs; empty: anywhere (docs/firewall.md)
    internal_iface: str = ""
    internal_cidr: str = ""
    internal_ip: str = ""
    allow_loopback: bool = True
    plugins: tuple[str, ...] = ()
    allowed_media_dirs: tuple[str, ...] = ()
    tcpstore_guard: bool = True
    slurm: str = "auto"
    node_list: str = ""
    node_rank: str = ""
    npu_peers: str = ""
    ray_token_file: str = ""
    waivers: Mapping[str, str] = field(default_factory=dict)
    gate_policy: Mapping[str, Any] = field(default_factory=dict)
    source: str = "defaults"  # the policy file used, for reports
    origins: Mapping[str, str] = field(default_factory=dict)  # key -> cli|env|file|default


def _load_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - py3.10
        import tomli as tomllib
    from vllm_secure_launch.files import FileProblem, read_text

    try:
        return tomllib.loads(read_text(path, limit=POLICY_LIMIT))
    except FileProblem as exc:
        if not os.path.lexists(path):
            raise PolicyFileError(
                f"policy file {path} does not exist",
                "a policy path was given explicitly (--policy or VSL_POLICY)",
                "fix the path, or leave --policy/VSL_POLICY unset to use the secure defaults",
            ) from None
        raise PolicyFileError(f"policy file {path} cannot be used: {exc.what}",
                              "the policy is read once, whole, before anything starts",
                              exc.fix) from None
    except RecursionError:
        raise PolicyFileError(f"policy file {path} nests too deeply", "",
                              "a policy is a few flat tables; see examples/policy.toml") from None
    except FileNotFoundError:
        raise PolicyFileError(
            f"policy file {path} does not exist",
            "a policy path was given explicitly (--policy or VSL_POLICY)",
            "fix the path, or leave --policy/VSL_POLICY unset to use the secure defaults",
        ) from None
    except PermissionError:
        raise PolicyFileError(
            f"policy file {path} is not readable", "permission denied",
            "make it readable by the user that runs the launcher",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyFileError(
            f"policy file {path} is not valid TOML ({exc})", "",
            "correct the syntax; the shipped examples/policy.toml shows every key",
        ) from None


def _where(path: str, section: str, key: str) -> str:
    return f"{path}: [{section}] {key}"


def _check_type(value: Any, kind: str, where: str) -> Any:
    ok = {
        _STR: isinstance(value, str),
        _FLOAT: isinstance(value, (int, float)) and not isinstance(value, bool),
        _BOOL: isinstance(value, bool),
        _LIST: isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[kind]
    if not ok:
        raise PolicyFileError(
            f"{where} must be a {kind}, not {type(value).__name__} {value!r}", "",
            f"write it as a TOML {kind}",
        )
    if kind == _FLOAT:
        return float(value)
    if kind == _LIST:
        return tuple(value)
    return value


def read_policy_file(path: str) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Parse and validate a policy file → (settings, waivers, gate section)."""
    raw = _load_toml(path)
    values: dict[str, Any] = {}
    waivers: dict[str, str] = {}
    gate: dict[str, Any] = {}
    by_section: dict[str, dict[str, tuple[str, Any]]] = {}
    for s in settings.file_settings():
        by_section.setdefault(str(s.section), {})[s.in_file] = (s.key, s.kind)
    for section, body in raw.items():
        if section == "waivers":
            waivers = _read_waivers(path, body)
            continue
        if section == "gate":
            if not isinstance(body, dict):
                raise PolicyFileError(f"{path}: [gate] must be a table", "",
                                      "see examples/policy.toml")
            gate = body
            continue
        if section not in by_section or not isinstance(body, dict):
            raise PolicyFileError(
                f"{path}: unknown section [{section}]" if section not in by_section
                else f"{path}: [{section}] must be a table",
                f"known sections: {', '.join(SECTIONS + settings.OTHER_SECTIONS)}",
                "remove it or fix its name",
            )
        for fkey, value in body.items():
            if fkey not in by_section[section]:
                raise PolicyFileError(
                    f"{_where(path, section, fkey)}: unknown key",
                    f"keys of [{section}]: {', '.join(sorted(by_section[section]))}",
                    "remove it or fix its spelling",
                )
            key, kind = by_section[section][fkey]
            values[key] = _check_type(value, kind, _where(path, section, fkey))
    return values, waivers, gate


def _read_waivers(path: str, body: Any) -> dict[str, str]:
    import re

    if not isinstance(body, dict):
        raise PolicyFileError(f"{path}: [waivers] must be a table of RULE_ID = \"reason\"", "",
                              'write e.g. VSL203 = "model repo audited, ticket OPS-12"')
    out: dict[str, str] = {}
    for rid, reason in body.items():
        if not re.fullmatch(r"VSL\d{3}", rid):
            raise PolicyFileError(f"{path}: [waivers] {rid}: not a rule ID",
                                  "waivers name a rule ID such as VSL203",
                                  "list the IDs with `vllm-secure-launch rules`")
        if not isinstance(reason, str) or not reason.strip():
            raise PolicyFileError(f"{path}: [waivers] {rid}: the reason must be a non-empty string",
                                  "every waiver appears with its reason in every report",
                                  f'write {rid} = "why this is acceptable here"')
        out[rid] = reason.strip()
    return out


def _from_env(s: Setting, env_name: str, raw: str) -> Any:
    """A value given as text (VSL_* or a list option on the command line) → its kind."""
    kind = s.kind
    if kind == _LIST and s.list_syntax == settings.SHELL:
        return split_command(env_name, raw)
    if kind == _LIST:
        return tuple(p for p in (part.strip() for part in raw.split(",")) if p)
    if kind == _BOOL:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise PolicyFileError(f"{env_name}={raw!r} is not a boolean", "", f"set {env_name}=1 or 0")
    if kind == _FLOAT:
        try:
            return float(raw)
        except ValueError:
            raise PolicyFileError(f"{env_name}={raw!r} is not a number", "",
                                  f"set {env_name} to a number of seconds") from None
    return raw


def _check_choice(s: Setting, value: Any, origin: str) -> None:
    choices = s.choices
    if choices and value not in choices:
        raise PolicyFileError(f"{s.key} = {value!r} ({origin}) is not one of {', '.join(choices)}",
                              "", f"use one of {', '.join(choices)}")


def _check_bound(s: Setting, value: float, origin: str) -> None:
    if not math.isfinite(value):
        # TOML, float() and click all accept nan and inf: a nan audit interval would silently
        # stop the continuous audit (every comparison with nan is false), inf never times out.
        raise PolicyFileError(f"{s.key} = {value} ({origin}) is not a finite number",
                              f"{s.key} is a duration in seconds; nan and inf are not durations",
                              "use a finite number of seconds")
    positive = s.bound == settings.POSITIVE
    if value < 0 or (value == 0 and positive):
        raise PolicyFileError(f"{s.key} = {value:g} ({origin}) must be {s.bound}", s.bound_why,
                              "use a positive number of seconds")


def _check_cidrs(s: Setting, value: tuple[str, ...], origin: str) -> tuple[str, ...]:
    """Each item an IP network, returned in canonical form (host bits cleared) so that the
    rendered rulesets and units are the same bytes however the network was spelled."""
    import ipaddress

    out = []
    for item in value:
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise PolicyFileError(
                f"{s.key}: {item!r} ({origin}) is not an IP network",
                f"{s.key} lists the networks the API port accepts connections from",
                "write each as a CIDR or an address, e.g. 192.0.2.0/24, 10.1.2.3 or "
                "2001:db8::/32") from None
    return tuple(out)


def load(cli: Mapping[str, Any], environ: Mapping[str, str]) -> Policy:
    """The policy from the command line's values (only what was given), VSL_* and the file."""
    given = {k: v for k, v in cli.items() if k != "policy" and v is not None}
    return resolve(given, environ, policy_path(cli.get("policy"), environ))


def split_command(where: str, text: str) -> tuple[str, ...]:
    import shlex

    from vllm_secure_launch.errors import UsageError

    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise UsageError(f"{where} {text!r} is not a valid command line ({exc})",
                         "it is split like a shell would split it",
                         "balance the quotes, e.g. --vllm-command 'vllm-mindspore serve'") from None


def policy_path(cli_path: str | None, environ: Mapping[str, str]) -> str | None:
    """--policy > VSL_POLICY > /etc/vllm-secure-launch/policy.toml if present > none."""
    if cli_path:
        return cli_path
    env_name = settings.BY_KEY["policy"].env
    if environ.get(env_name):
        return environ[env_name]
    return DEFAULT_POLICY_PATH if os.path.exists(DEFAULT_POLICY_PATH) else None


def resolve(
    cli: Mapping[str, Any], environ: Mapping[str, str], path: str | None
) -> Policy:
    """Merge CLI > env > file > defaults. `cli` holds only options given on the command line."""
    file_settings: dict[str, Any] = {}
    waivers: dict[str, str] = {}
    gate: dict[str, Any] = {}
    if path:
        file_settings, waivers, gate = read_policy_file(path)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for s in settings.file_settings():
        key, kind = s.key, s.kind
        if cli.get(key) is not None:
            value, origin = cli[key], "cli"
            if kind == _LIST and isinstance(value, str):
                value = _from_env(s, s.flag, value)
        elif s.env in environ:
            value, origin = _from_env(s, s.env, environ[s.env]), "env"
        elif key in file_settings:
            value, origin = file_settings[key], "file"
        else:
            value, origin = s.default, "default"
        _check_choice(s, value, origin)
        if s.items == settings.CIDR:
            value = _check_cidrs(s, value, origin)
        if kind == _FLOAT:
            value = float(value)  # a click/CLI int is still a number of seconds
            _check_bound(s, value, origin)
        values[key] = value
        origins[key] = origin
    return Policy(**values, waivers=waivers, gate_policy=gate, source=path or "defaults",
                  origins=origins)
