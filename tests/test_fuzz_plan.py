"""Property-based tests (hypothesis) of the parse -> plan path: generated argv, environment and
policy against four oracles.

1. Only the documented errors (errors.LauncherError: UsageError, PolicyFileError) escape from
   config.policy.resolve, surface.flags.parse and plan.build.build_plan.
2. The plan document always serialises with json.dumps and parses back to the same value.
3. A secret marker put into --api-key, --hf-token, secret-like unknown options, VLLM_API_KEY,
   HF_TOKEN or a --config file never appears in the JSON document, the text view, a finding or
   the child argv.
4. Equivalent spellings (underscores, unique prefixes, `--config` YAML, `--flag=value`) give the
   same decision and the same blocking rule IDs (or the same usage error).

Fixed seed (derandomize) so CI is reproducible; the budget (>= 10,000 examples in all) fits a
2-core machine in well under a minute. Real parser, real planner, real rules; only the host
facts are fixed (tests/test_planner.py's host()), because the planner takes them as input.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vllm_secure_launch.cli.launch_cmds import plan_text
from vllm_secure_launch.config import policy as policy_mod
from vllm_secure_launch.config import settings as _settings_mod
from vllm_secure_launch.errors import LauncherError, UsageError
from vllm_secure_launch.plan.build import build_plan
from vllm_secure_launch.plan.document import plan_document
from vllm_secure_launch.rules import env_rules
from vllm_secure_launch.surface import flags as vllm_flags

from .test_planner import host

TABLE = vllm_flags.load_table()
FLAGS = [f for f in TABLE.flags if f.kind != "help" and f.dest not in ("config",)]
LONG_STRINGS = sorted(s for s in TABLE.by_string if s.startswith("--"))
MARKER = "MARKERzq7x9Secret"
_BASE = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
# VSL_FUZZ_SCALE=10 runs ten times the CI budget (same seed, longer sequence).
_SCALE = float(os.environ.get("VSL_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    return settings(_BASE, max_examples=max(1, int(examples * _SCALE)))

# Every variable the environment rules name, read from the module (stays current by itself).
_ENV_SRC = Path(env_rules.__file__).read_text(encoding="utf-8")
ENV_NAMES = sorted(set(re.findall(r'"((?:VLLM|HF|TORCH|TRITON|RAY|XDG|PYTHON|SAGEMAKER|HOST|'
                                  r'OUTLINES|TORCHINDUCTOR)[A-Z0-9_]*)"', _ENV_SRC))
                   | {"VLLM_API_KEY", "HF_TOKEN", "VLLM_HOST_IP", "LD_PRELOAD", "PYTHONPATH",
                      "NOTIFY_SOCKET", "VSL_GATE_KEY_X", "HOME"})

_TMP = Path(tempfile.mkdtemp(prefix="vsl-fuzz-"))
_counter = iter(range(10**9))


def write_yaml(mapping: Any) -> str:
    path = _TMP / f"c{next(_counter)}.yaml"
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------------------------
# Strategies

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
WORDS = st.sampled_from(["", "0", "1", "-1", "8000", "65536", "nan", "inf", "1e309", "0x10",
                         "true", "False", "None", "auto", "0.0.0.0", "::", "127.0.0.1", "::1",
                         "10.0.0.5", "fd00::2", "*", '["*"]', '"*"', '{"a": 1}', "{}", "[]",
                         "/", "//", "/etc", "./x", "..", "1k", "2M", "1.5G", "a,b", "\x00",
                         '{"kv_connector": "X", "kv_role": "kv_both"}', "[[[[[[[[[[",
                         '{"a":' * 50 + "1" + "}" * 50, "é", "—"])


# Strategies over the flag table are built once, not per draw: hypothesis caches sampled_from by
# its arguments, but the cache key hashes every element (hundreds of Flag records) on each call,
# which was most of these tests' time. Same strategies, so the same examples.
ANY_FLAG = st.sampled_from(FLAGS)
JSON_FLAG = st.sampled_from([f for f in FLAGS if f.json] or FLAGS)
SHORT_STRINGS = st.sampled_from([s for s in TABLE.by_string
                                 if s.startswith("-") and not s.startswith("--")])
WORD_OR_TEXT = st.one_of(WORDS, TEXT)


def _valid_values(flag: vllm_flags.Flag) -> st.SearchStrategy[str]:
    if flag.choices:
        return st.sampled_from([str(c) for c in flag.choices])
    if flag.type == "int":
        return st.integers(-2, 70000).map(str)
    if flag.type == "float":
        return st.floats(-1, 1e6, allow_nan=False).map(repr)
    if flag.type.startswith("human_readable_int"):
        return st.sampled_from(["1k", "4K", "2m", "1024", "1.5k"])
    if flag.json:
        return st.sampled_from(['{"a": 1}', '{}', '{"level": 3}', '{"host": "0.0.0.0"}'])
    return st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/._:-", min_size=1, max_size=10)


@st.composite
def flag_value(draw: st.DrawFn) -> tuple[vllm_flags.Flag, str | None]:
    flag = draw(ANY_FLAG)
    count = vllm_flags._flag_arg_count(flag)
    if count == 0:
        return flag, None
    return flag, draw(_value_strategy(flag))


_VALUES: dict[int, st.SearchStrategy[str]] = {}


def _value_strategy(flag: vllm_flags.Flag) -> st.SearchStrategy[str]:
    """one_of(valid values, WORDS, TEXT) for a flag, built once (keyed by identity: FLAGS
    holds each record once, and hashing a record is what was slow)."""
    if id(flag) not in _VALUES:
        _VALUES[id(flag)] = st.one_of(_valid_values(flag), WORDS, TEXT)
    return _VALUES[id(flag)]


def _spell(draw: st.DrawFn, s: str) -> str:
    """One of the spellings argparse/vLLM accept (or a near miss)."""
    how = draw(st.sampled_from(["exact", "exact", "underscore", "prefix", "upper"]))
    if how == "underscore" and s.startswith("--"):
        return "--" + s[2:].replace("-", "_")
    if how == "prefix" and s.startswith("--") and len(s) > 4:
        return s[:draw(st.integers(3, len(s) - 1))]
    if how == "upper":
        return s.upper()
    return s


@st.composite
def option_tokens(draw: st.DrawFn) -> list[str]:
    kind = draw(st.sampled_from(["known"] * 6 + ["unknown", "secret", "dotted", "short"]))
    if kind == "unknown":
        name = "--" + draw(st.text(alphabet="abcdefghijklmnop-_.", min_size=1, max_size=14))
        return [name, *draw(st.lists(WORD_OR_TEXT, max_size=2))]
    if kind == "secret":
        name = draw(st.sampled_from(["--api-keyy", "--apikey", "--api_key2", "--auth-token",
                                     "--db_password", "--hf-tokn", "--x.secret"]))
        return [name + "=" + MARKER] if draw(st.booleans()) else [name, MARKER]
    if kind == "dotted":
        flag = draw(JSON_FLAG)
        key = draw(st.text(alphabet="abcdefghijk_+.", min_size=1, max_size=8))
        return [f"{flag.long}.{key}", draw(WORD_OR_TEXT)]
    if kind == "short":
        s = draw(SHORT_STRINGS)
        return [s + draw(st.sampled_from(["", "1", "fp8", "3"]))]
    flag, value = draw(flag_value())
    s = _spell(draw, draw(st.sampled_from(flag.strings)))
    if value is None:
        return [s]
    if draw(st.booleans()):
        return [f"{s}={value}"]
    return [s, value]


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    argv: list[str] = []
    if draw(st.integers(0, 9)):
        argv.append(draw(st.sampled_from(["m", "org/model", "/models/m", "-m", "--model"])))
        if argv[-1] in ("-m", "--model"):
            argv[-1:] = ["--model", "m"]
    for chunk in draw(st.lists(option_tokens(), max_size=6)):
        argv += chunk
    if draw(st.integers(0, 5)) == 0:
        argv += ["--api-key", MARKER] if draw(st.booleans()) else ["--api-key=" + MARKER]
    if draw(st.integers(0, 7)) == 0:
        argv += ["--hf-token", MARKER]
    if draw(st.integers(0, 6)) == 0:
        cfg: dict[str, Any] = {}
        for flag, value in draw(st.lists(flag_value(), max_size=3)):
            name = draw(st.sampled_from([flag.dest, flag.long[2:]]))
            cfg[name] = True if value is None else value
        if draw(st.booleans()):
            cfg["api-key"] = MARKER
        argv += ["--config", write_yaml(cfg)]
    return argv


@st.composite
def environs(draw: st.DrawFn) -> dict[str, str]:
    env = {name: draw(st.one_of(WORDS, TEXT))
           for name in draw(st.lists(st.sampled_from(ENV_NAMES), max_size=5, unique=True))}
    for name in ("VLLM_API_KEY", "HF_TOKEN"):
        if name in env or draw(st.integers(0, 3)) == 0:
            env[name] = MARKER
    return {k: v.replace("\x00", "") for k, v in env.items()}


# key -> (section, kind, default, env name), from the one settings table (config/settings.py).
_SETTINGS = {s.key: (s.section, s.kind, s.default, s.env) for s in _settings_mod.SETTINGS
             if s.section}
_CHOICES = {s.key: s.choices for s in _settings_mod.SETTINGS if s.choices}


def _setting_value(draw: st.DrawFn, key: str, kind: str) -> Any:
    choices = _CHOICES.get(key)
    if choices and draw(st.integers(0, 4)):
        return draw(st.sampled_from(choices))
    if kind == "number":
        return draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                              st.integers(-5, 10**6).map(float)))
    if kind == "boolean":
        return draw(st.booleans())
    if kind == "list of strings":
        return tuple(draw(st.lists(st.one_of(WORDS, TEXT), max_size=3)))
    return draw(st.one_of(WORDS, TEXT))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(v, ensure_ascii=True)


GATE_PATHS = st.sampled_from(["/health", "/metrics", "/v1/models", "/v1/{x}", "/", "/%2e",
                              "/v1/completions/", "/tokenize", "x", "/a//b", "/v1/responses"])


@st.composite
def policies(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """(cli values, VSL_* environment, policy file path or None) for config.policy.resolve."""
    cli: dict[str, Any] = {}
    venv: dict[str, str] = {}
    for key in draw(st.lists(st.sampled_from(sorted(_SETTINGS)), max_size=3,
                             unique=True)):
        _section, kind, _default, env_name = _SETTINGS[key]
        if draw(st.booleans()):
            cli[key] = _setting_value(draw, key, kind)
        else:
            venv[env_name] = draw(st.one_of(WORDS, TEXT)).replace("\x00", "")
    path = None
    if draw(st.integers(0, 2)) == 0:
        lines: list[str] = []
        if draw(st.booleans()):
            gate: dict[str, Any] = {}
            if draw(st.booleans()):
                gate["enabled"] = draw(st.booleans())
            if draw(st.booleans()):
                gate["public"] = draw(st.lists(GATE_PATHS, max_size=3))
            if draw(st.booleans()):
                gate["deny"] = draw(st.lists(GATE_PATHS, max_size=2))
            lines.append("[gate]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in gate.items()]
            for _ in range(draw(st.integers(0, 2))):
                lines += ["[[gate.allow]]", f"path = {_toml_value(draw(GATE_PATHS))}",
                          f"auth = {_toml_value(draw(st.sampled_from(['key', 'none', 'x'])))}"]
        if draw(st.booleans()):
            rid = draw(st.sampled_from(["VSL101", "VSL103", "VSL223", "VSL250", "VSL999", "X1"]))
            lines += ["[waivers]", f"{rid} = {_toml_value(draw(st.sampled_from(['ok', ''])))}"]
        if draw(st.booleans()):
            key = draw(st.sampled_from(["audit_interval", "ready_timeout", "audit", "plugins"]))
            section, kind, _d, _e = _SETTINGS[key]
            lines += [f"[{section}]", f"{key} = {_toml_value(_setting_value(draw, key, kind))}"]
        p = _TMP / f"p{next(_counter)}.toml"
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
        path = str(p)
    return cli, venv, path


# ---------------------------------------------------------------------------------------------
# The path under test


def plan_of(argv: list[str], env: dict[str, str], pol: tuple[dict, dict, str | None]):
    """resolve -> parse -> build_plan; LauncherError (documented) propagates."""
    cli, venv, path = pol
    policy = policy_mod.resolve(cli, venv, path)
    return build_plan(vllm_flags.parse(argv), env, policy, host())


def outputs(plan) -> dict[str, str]:
    return {"json": json.dumps(plan_document(plan)), "text": plan_text(plan),
            "findings": "\n".join(f"{f.subject} {f.message} {f.remedy}" for f in plan.findings),
            "argv": "\0".join(plan.argv)}


def _expected_error(exc: BaseException) -> bool:
    return isinstance(exc, LauncherError) and type(exc).__module__.startswith("vllm_secure_launch")


@fuzz(4000)
@given(argv=argvs(), env=environs(), pol=policies())
def test_only_documented_errors_and_json_round_trips(argv, env, pol):
    """Oracles 1 and 2, and 3 on every plan that comes out."""
    try:
        plan = plan_of(argv, env, pol)
    except LauncherError as exc:
        assert _expected_error(exc)
        assert MARKER not in exc.paragraph(), "an error message echoes a secret"
        return
    doc = plan_document(plan)
    text = json.dumps(doc)  # raises on a value JSON cannot hold
    assert json.loads(text) == json.loads(json.dumps(json.loads(text)))
    assert plan.decision in ("start", "refuse")
    for where, out in outputs(plan).items():
        assert MARKER not in out, f"secret marker in the plan's {where}"


@fuzz(4800)
@given(argv=argvs(), secret=st.sampled_from(
    [["--api-key", MARKER], ["--api-key=" + MARKER], ["--api_key", MARKER], ["--api-ke", MARKER],
     ["--hf-token", MARKER], ["--hf_token=" + MARKER], ["--api-keyy", MARKER],
     ["--apikey=" + MARKER], ["--api-keyy", "x", MARKER], ["--auth-token", MARKER]]),
       where=st.integers(0, 6))
def test_secret_marker_never_in_output(argv, secret, where):
    """Oracle 3 with the marker always present, at any position of the command line."""
    pos = min(where, len(argv))
    if pos < len(argv) and not argv[pos].startswith("-") and pos > 0:
        pos = len(argv)  # do not split an option from its value
    argv = [*argv[:pos], *secret, *argv[pos:]]
    env = {"VLLM_API_KEY": MARKER, "HF_TOKEN": MARKER}
    try:
        plan = plan_of(argv, env, ({}, {}, None))
    except LauncherError as exc:
        assert MARKER not in exc.paragraph()
        return
    for out_where, out in outputs(plan).items():
        assert MARKER not in out, f"secret marker in the plan's {out_where}: {argv}"


# ---------------------------------------------------------------------------------------------
# Oracle 4: equivalent spellings

# Options whose value is one token that does not start with '-' (so `=` and space are the same
# to argparse) and that YAML can carry as a string.
_SCALAR = [f for f in FLAGS if vllm_flags._flag_arg_count(f) == 1 and f.kind == "store"
           and f.dest not in ("model", "config")]
_BOOLS = [f for f in FLAGS if f.kind in ("store_true", "boolean_optional")]
SCALAR_FLAG = st.sampled_from(_SCALAR)  # built once, as ANY_FLAG
BOOL_FLAG = st.sampled_from(_BOOLS)


@functools.cache  # a pure function of s, asked for the same flags many times
def unique_prefixes(s: str) -> list[str]:
    """The abbreviations of s that argparse resolves to s alone (3.11: any other option string
    starting with the prefix makes it ambiguous)."""
    out = []
    for n in range(3, len(s)):
        p = s[:n]
        if p in TABLE.by_string or p.startswith("--no-") and n < 6:
            continue
        hits = [o for o in LONG_STRINGS if o.startswith(p)]
        if hits == [s] and p not in TABLE.top_level_strings:
            out.append(p)
    return out


@st.composite
def settings_lists(draw: st.DrawFn) -> list[tuple[vllm_flags.Flag, str | bool]]:
    chosen: dict[str, tuple[vllm_flags.Flag, str | bool]] = {}
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 3)):
            flag = draw(SCALAR_FLAG)
            value = draw(st.one_of(_valid_values(flag), st.sampled_from(
                ["0.0.0.0", "127.0.0.1", "10.0.0.5", "0", "8001", "auto", '{"a": 1}', "x"])))
            assume(not value.startswith("-"))
            chosen[flag.dest] = (flag, value)
        else:
            flag = draw(BOOL_FLAG)
            chosen[flag.dest] = (flag, True if flag.kind == "store_true" else draw(st.booleans()))
    return list(chosen.values())


def _tokens(flag: vllm_flags.Flag, value: str | bool, style: str, pick) -> list[str]:
    name = flag.long if value is not False else flag.negative or flag.long
    if style == "underscore":
        name = "--" + name[2:].replace("-", "_")
    elif style == "prefix":
        pre = unique_prefixes(name)
        name = pick(pre) if pre else name
    if isinstance(value, bool):
        return [name]
    return [f"{name}={value}"] if style == "equals" else [name, value]


def _outcome(argv: list[str], env: dict[str, str]) -> tuple[str, frozenset[str]] | str:
    try:
        plan = build_plan(vllm_flags.parse(argv), env, policy_mod.Policy(), host())
    except UsageError:
        return "usage-error"
    return plan.decision, frozenset(f.rule_id for f in plan.findings if f.blocking)


@fuzz(1200)
@given(items=settings_lists(), keyed=st.booleans(), data=st.data())
def test_decision_stable_under_equivalent_spellings(items, keyed, data):
    env = {"VLLM_API_KEY": "k" * 20} if keyed else {}
    canonical = ["m", *[t for f, v in items for t in _tokens(f, v, "space", None)]]
    want = _outcome(canonical, env)
    pick = lambda xs: data.draw(st.sampled_from(xs))  # noqa: E731
    for style in ("equals", "underscore", "prefix"):
        argv = ["m", *[t for f, v in items for t in _tokens(f, v, style, pick)]]
        assert _outcome(argv, env) == want, (style, canonical, argv)
    mixed = ["m"]
    for f, v in items:
        mixed += _tokens(f, v, data.draw(st.sampled_from(["space", "equals", "underscore",
                                                          "prefix"])), pick)
    assert _outcome(mixed, env) == want, ("mixed", canonical, mixed)
    if want == "usage-error":
        return  # which error a YAML file gives may differ in wording, not worth pinning
    cfg = {(f.long if v is not False else f.negative or f.long)[2:]:
           (True if isinstance(v, bool) else v) for f, v in items}
    assert _outcome(["m", "--config", write_yaml(cfg)], env) == want, ("config", cfg)


# ---------------------------------------------------------------------------------------------
# The CLI end to end (a sample): documented exit codes, no traceback

DOCUMENTED = {0, 2, 69, 78}


def _cli_samples() -> list[tuple[list[str], dict[str, str]]]:
    out: list[tuple[list[str], dict[str, str]]] = []

    @settings(derandomize=True, deadline=None, database=None, max_examples=40,
              suppress_health_check=list(HealthCheck))
    @given(argv=argvs(), env=environs())
    def collect(argv, env):
        out.append((argv, env))

    collect()
    return out[:40]


@pytest.mark.integration  # forty launcher CLI child processes
def test_cli_end_to_end_sample():
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "VSL_", "HF_"))}
    base["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    seen = 0
    for argv, env in _cli_samples():
        fmt = ["--format", "json"] if seen % 2 else []
        r = subprocess.run([sys.executable, "-m", "vllm_secure_launch.cli.main", "--dry-run",
                            *fmt, "serve", *argv], capture_output=True, text=True, timeout=60,
                           env={**base, **env}, cwd=str(_TMP))
        assert "Traceback" not in r.stderr + r.stdout, (argv, r.stderr[-2000:])
        assert r.returncode in DOCUMENTED, (argv, r.returncode, r.stderr[-2000:])
        assert MARKER not in r.stdout + r.stderr, argv
        if fmt and r.returncode in (0, 78):
            json.loads(r.stdout)
        seen += 1
    assert seen >= 30


# ---------------------------------------------------------------------------------------------
# Regressions: the crash sites and leaks the fuzzers found, pinned as plain cases


def test_regression_bad_human_number_in_dataclass_json_is_a_usage_error():
    """'1.5G' (binary suffixes take whole numbers) raised ValueError from
    flags._expand_human_numbers_in_json; vLLM stops with a usage error."""
    with pytest.raises(UsageError):
        vllm_flags.parse(["m", "--compilation-config", '{"max_capture_size": 1.5G}'])


@pytest.mark.parametrize("argv", [
    ["m", "--x.secret", MARKER],                 # dotted key on an unknown option
    ["m", "--x.auth_token=" + MARKER],
    ["m", "--zz.", "--api-key=" + MARKER],        # a dotted key swallows the next option
    ["m", "--_.", "--api-key", MARKER],           # ... and leaves the key as a stray value
])
def test_regression_secret_through_dotted_keys_never_shown(argv):
    plan = plan_of(argv, {}, ({}, {}, None))
    assert plan.decision == "refuse"
    assert "VSL223" in {f.rule_id for f in plan.findings if f.blocking}
    for where, out in outputs(plan).items():
        assert MARKER not in out, where


def test_regression_bad_value_error_does_not_echo_json():
    """`--b.` is a prefix of --block-size: the JSON value (holding a swallowed key) was echoed
    in the usage error."""
    with pytest.raises(UsageError) as exc:
        vllm_flags.parse(["m", "--block-size.x", "--api-key=" + MARKER])
    assert MARKER not in exc.value.paragraph()
