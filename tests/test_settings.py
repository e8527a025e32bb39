"""The one settings table (config/settings.py): the Policy dataclass, the click options, the
VSL_* names and the settings reference all come from it and agree; durations refuse nan/inf."""

from __future__ import annotations

import dataclasses
import typing

import click
import pytest
from click.testing import CliRunner

from vllm_secure_launch.cli.main import cli
from vllm_secure_launch.cli.options import Seconds
from vllm_secure_launch.config import settings
from vllm_secure_launch.config.policy import Policy, resolve
from vllm_secure_launch.errors import PolicyFileError
from vllm_secure_launch.exitcodes import ExitCode

_PY_TYPE = {settings.STR: str, settings.NUMBER: float, settings.BOOL: bool,
            settings.LIST: tuple[str, ...]}
DURATIONS = [s for s in settings.SETTINGS if s.kind == settings.NUMBER]


def test_policy_fields_are_the_table_with_the_same_defaults_and_types():
    hints = typing.get_type_hints(Policy)
    table = settings.file_settings()
    fields = [f for f in dataclasses.fields(Policy)][: len(table)]
    assert [f.name for f in fields] == [s.key for s in table]
    for f, s in zip(fields, table, strict=True):
        assert f.default == s.default, s.key
        assert hints[f.name] == _PY_TYPE[s.kind], s.key
    # The rest are what the file's own-shaped sections and the resolver add.
    rest = {f.name for f in dataclasses.fields(Policy)} - {s.key for s in table}
    assert rest == {"waivers", "gate_policy", "source", "origins"}


def test_env_names_flags_and_file_keys_are_unique():
    for attr in ("env", "flag", "key"):
        values = [getattr(s, attr) for s in settings.SETTINGS]
        assert len(values) == len(set(values)), attr
    for section in settings.SECTIONS:
        keys = [s.in_file for s in settings.file_settings() if s.section == section]
        assert len(keys) == len(set(keys)), section
    assert all(s.env.startswith("VSL_") for s in settings.SETTINGS)


def test_launcher_options_are_generated_from_the_table():
    params = {p.name: p for p in cli.params if isinstance(p, click.Option)}
    for s in settings.options():
        p = params[s.key]
        assert s.flag in p.opts and p.default is None  # None = not given: env/file/default apply
        assert s.env in (p.help or ""), s.key
        if s.choices:
            assert isinstance(p.type, click.Choice) and tuple(p.type.choices) == s.choices
        if s.kind == settings.BOOL:
            assert p.secondary_opts == [f"--no-{s.flag[2:]}"]
    not_options = {s.key for s in settings.SETTINGS if not s.option}
    assert not (not_options & set(params))


def test_preflight_options_come_from_the_same_settings():
    from vllm_secure_launch.cli.preflight_cmd import command

    params = {p.name: p for p in command.params if isinstance(p, click.Option)}
    assert tuple(params["accelerator"].type.choices) == settings.BY_KEY["accelerator"].choices
    assert tuple(params["fmt"].type.choices) == settings.BY_KEY["format"].choices
    assert "VSL_ACCELERATOR" in params["accelerator"].help


def test_settings_markdown_has_one_row_per_setting():
    md = settings.settings_markdown()
    lines = md.splitlines()
    assert lines[0] == "| option | env | policy key | default | choices | meaning |"
    rows = lines[2:]
    assert len(rows) == len(settings.SETTINGS)
    for s, row in zip(settings.SETTINGS, rows, strict=True):
        assert f"`{s.env}`" in row and s.help.rstrip(".")[:30] in row
        if s.section:
            assert f"`[{s.section}] {s.in_file}`" in row
        if s.option:
            assert f"`{s.flag}" in row
        for c in s.choices:
            assert f"`{c}`" in row
        assert row.count(" | ") == 5  # no stray pipe in a cell
    assert "`[api] host`" in md


@pytest.mark.parametrize("s", DURATIONS, ids=lambda s: s.key)
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN"])
def test_durations_refuse_nan_and_inf_from_env_and_cli(s, bad):
    """A nan audit interval would silently stop the continuous audit: refused (exit 2)."""
    with pytest.raises(PolicyFileError) as env_err:
        resolve({}, {s.env: bad}, None)
    with pytest.raises(PolicyFileError) as cli_err:
        resolve({s.key: float(bad)}, {}, None)
    for e, origin in ((env_err.value, "env"), (cli_err.value, "cli")):
        assert e.code == ExitCode.USAGE
        assert s.key in e.what and f"({origin})" in e.what
        assert "finite" in e.paragraph()


@pytest.mark.parametrize("s", DURATIONS, ids=lambda s: s.key)
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_durations_refuse_nan_and_inf_in_the_policy_file(tmp_path, s, bad):
    path = tmp_path / "policy.toml"
    path.write_text(f"[{s.section}]\n{s.in_file} = {bad}\n")  # TOML has nan and inf literals
    with pytest.raises(PolicyFileError, match=rf"{s.key} = .*\(file\) is not a finite number"):
        resolve({}, {}, str(path))


def test_finite_durations_still_pass_and_bounds_keep_their_messages():
    p = resolve({"audit_interval": 0.5}, {"VSL_STOP_GRACE": "0"}, None)
    assert (p.audit_interval, p.stop_grace) == (0.5, 0.0)
    with pytest.raises(PolicyFileError, match="audit_interval = 0 .* must be positive"):
        resolve({}, {"VSL_AUDIT_INTERVAL": "0"}, None)
    with pytest.raises(PolicyFileError, match="stop_grace = -1 .* must be zero or more"):
        resolve({}, {"VSL_STOP_GRACE": "-1"}, None)


@pytest.mark.parametrize("args", [
    ["--audit-interval", "nan", "--dry-run", "serve", "m"],
    ["--ready-timeout", "inf", "check", "m"],
    ["probe", "--timeout", "nan", "http://127.0.0.1:9"],
])
def test_cli_nan_durations_are_usage_errors(args):
    from vllm_secure_launch.cli.launch_cmds import run_cli

    with pytest.raises(SystemExit) as exc:
        run_cli(cli, args)
    assert exc.value.code == ExitCode.USAGE


def test_seconds_type_converts_finite_numbers():
    t = Seconds(min=0.1, max=300)
    assert t.convert("2.5", None, None) == 2.5
    with pytest.raises(click.BadParameter, match="finite"):
        t.convert("nan", None, None)


def test_env_and_cli_precedence_for_the_shell_split_command():
    p = resolve({}, {"VSL_VLLM_COMMAND": "vllm-mindspore  'serve'"}, None)
    assert p.vllm_command == ("vllm-mindspore", "serve") and p.origins["vllm_command"] == "env"
    p = resolve({"vllm_command": "a b"}, {"VSL_VLLM_COMMAND": "c"}, None)
    assert p.vllm_command == ("a", "b") and p.origins["vllm_command"] == "cli"


def test_dry_run_text_runs_with_env_alone():
    r = CliRunner().invoke(cli, ["serve", "m"], env={"VSL_DRY_RUN": "1", "VLLM_API_KEY": "k",
                                                     "VLLM_CPU_KVCACHE_SPACE": "1"})
    assert "decision:" in r.output
