"""The policy: TOML file → validated sections; CLI > env (VSL_*) > file > defaults → frozen Policy.

Secure defaults need no file. Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from vllm_secure_launch.errors import PolicyFileError

DEFAULT_POLICY_PATH = "/etc/vllm-secure-launch/policy.toml"
POLICY_LIMIT = 1024 * 1024

# key -> (section, type, default, env var). The single table behind the file schema, the env
# variables and the CLI options: every launcher option reads all three.
_STR, _FLOAT, _BOOL, _LIST = "string", "number", "boolean", "list of strings"

SETTINGS: dict[str, tuple[str, str, Any, str]] = {
    # [launcher]
    "vllm_command": ("launcher", _LIST, (), "VSL_VLLM_COMMAND"),
    "accelerator": ("launcher", _STR, "auto", "VSL_ACCELERATOR"),
    "ready_timeout": ("launcher", _FLOAT, 1800.0, "VSL_READY_TIMEOUT"),
    "audit": ("launcher", _STR, "enforce", "VSL_AUDIT"),
    "audit_interval": ("launcher", _FLOAT, 1.0, "VSL_AUDIT_INTERVAL"),
    "stop_grace": ("launcher", _FLOAT, 30.0, "VSL_STOP_GRACE"),
    "log_format": ("launcher", _STR, "text", "VSL_LOG_FORMAT"),
    "format": ("launcher", _STR, "text", "VSL_FORMAT"),
    "report": ("launcher", _STR, "", "VSL_REPORT"),
    "dry_run": ("launcher", _BOOL, False, "VSL_DRY_RUN"),
    "runtime_dir": ("launcher", _STR, "", "VSL_RUNTIME_DIR"),
    # [api]
    "api_host": ("api", _STR, "127.0.0.1", "VSL_API_HOST"),
    "allow_wildcard": ("api", _BOOL, False, "VSL_ALLOW_WILDCARD"),
    "api_key_file": ("api", _STR, "", "VSL_API_KEY_FILE"),
    # [network]
    "internal_iface": ("network", _STR, "", "VSL_INTERNAL_IFACE"),
    "internal_cidr": ("network", _STR, "", "VSL_INTERNAL_CIDR"),
    "internal_ip": ("network", _STR, "", "VSL_INTERNAL_IP"),
    "allow_loopback": ("network", _BOOL, True, "VSL_ALLOW_LOOPBACK"),
    # [vllm]
    "plugins": ("vllm", _LIST, (), "VSL_PLUGINS"),
    "allowed_media_dirs": ("vllm", _LIST, (), "VSL_ALLOWED_MEDIA_DIRS"),
    "tcpstore_guard": ("vllm", _BOOL, True, "VSL_TCPSTORE_GUARD"),
    # [cluster]
    "slurm": ("cluster", _STR, "auto", "VSL_SLURM"),
    "node_list": ("cluster", _STR, "", "VSL_NODE_LIST"),
    "node_rank": ("cluster", _STR, "", "VSL_NODE_RANK"),
}

# Policy file: the file's section names; [waivers] and [gate] have their own shapes.
SECTIONS = ("launcher", "api", "network", "vllm", "cluster")
_POSITIVE = ("ready_timeout", "audit_interval")
CHOICES = {
    "accelerator": ("auto", "cuda", "ascend", "cpu"),
    "audit": ("enforce", "warn", "off"),
    "log_format": ("text", "json"),
    "format": ("text", "json", "sarif"),
    "slurm": ("auto", "on", "off"),
}


@dataclass(frozen=True)
class Policy:
    vllm_command: tuple[str, ...] = ()
    accelerator: str = "auto"
    ready_timeout: float = 1800.0
    audit: str = "enforce"
    audit_interval: float = 1.0
    stop_grace: float = 30.0
    log_format: str = "text"
    format: str = "text"
    report: str = ""
    dry_run: bool = False
    runtime_dir: str = ""
    api_host: str = "127.0.0.1"
    allow_wildcard: bool = False
    api_key_file: str = ""
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
    settings: dict[str, Any] = {}
    waivers: dict[str, str] = {}
    gate: dict[str, Any] = {}
    by_section: dict[str, dict[str, tuple[str, Any]]] = {}
    for key, (section, kind, _d, _e) in SETTINGS.items():
        by_section.setdefault(section, {})[_file_key(key, section)] = (key, kind)
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
                f"known sections: {', '.join(SECTIONS + ('gate', 'waivers'))}",
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
            settings[key] = _check_type(value, kind, _where(path, section, fkey))
    return settings, waivers, gate


def _file_key(key: str, section: str) -> str:
    # In the file, [api] host = ... reads better than api_host.
    return "host" if key == "api_host" else key


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


def _from_env(key: str, kind: str, env_name: str, raw: str) -> Any:
    if kind == _LIST:
        return tuple(p for p in (s.strip() for s in raw.split(",")) if p)
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


def _check_choice(key: str, value: Any, origin: str) -> None:
    choices = CHOICES.get(key)
    if choices and value not in choices:
        raise PolicyFileError(f"{key} = {value!r} ({origin}) is not one of {', '.join(choices)}",
                              "", f"use one of {', '.join(choices)}")


def load(cli: Mapping[str, Any], environ: Mapping[str, str]) -> Policy:
    """The policy from the command line's values (only what was given), VSL_* and the file."""
    given = {k: v for k, v in cli.items() if k != "policy" and v is not None}
    if isinstance(given.get("vllm_command"), str):
        given["vllm_command"] = split_command("--vllm-command", given["vllm_command"])
    env = dict(environ)
    if "VSL_VLLM_COMMAND" in env:
        # VSL_VLLM_COMMAND is a shell-like command line, not a comma list.
        env["VSL_VLLM_COMMAND"] = ",".join(split_command("VSL_VLLM_COMMAND",
                                                         env["VSL_VLLM_COMMAND"]))
    return resolve(given, env, policy_path(cli.get("policy"), environ))


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
    if environ.get("VSL_POLICY"):
        return environ["VSL_POLICY"]
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
    for key, (_section, kind, default, env_name) in SETTINGS.items():
        if cli.get(key) is not None:
            value, origin = cli[key], "cli"
            if kind == _LIST and isinstance(value, str):
                value = _from_env(key, kind, "--" + key.replace("_", "-"), value)
        elif env_name in environ:
            value, origin = _from_env(key, kind, env_name, environ[env_name]), "env"
        elif key in file_settings:
            value, origin = file_settings[key], "file"
        else:
            value, origin = default, "default"
        _check_choice(key, value, origin)
        if kind == _FLOAT and (value < 0 or (value == 0 and key in _POSITIVE)):
            bound = "positive" if key in _POSITIVE else "zero or more"
            raise PolicyFileError(
                f"{key} = {value:g} ({origin}) must be {bound}",
                "an audit every 0 s would spin, and a 0 s readiness wait can never succeed"
                if key in _POSITIVE else "", "use a positive number of seconds")
        values[key] = value
        origins[key] = origin
    known = {f.name for f in fields(Policy)}
    return Policy(**{k: v for k, v in values.items() if k in known}, waivers=waivers,
                  gate_policy=gate, source=path or "defaults", origins=origins)
