"""vllm_flags: the vLLM 0.32 serve flag table and an argv parser that reads arguments as vLLM does.

Pure table-driven tests (no processes), round trips parse(to_argv(parse(x))) == parse(x), and one
differential test that runs vLLM's real parser (in a subprocess of the vLLM venv, so this test
process never imports vllm) on a table of argv cases and compares dest by dest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.parser_compare import same_value
from vllm_secure_launch.errors import UsageError
from vllm_secure_launch.surface import flags as vf
from vllm_secure_launch.surface.args import ServeArgs

# shared/ lies beside the checkout (CI clones main with shared/ next to it).
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "vllm-serve-flags.txt"


def P(*argv: str, files: dict[str, str] | None = None) -> ServeArgs:
    files = files or {}

    def read_text(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return files[path]

    return vf.parse(list(argv), read_text=read_text)


def refused(*argv: str, files: dict[str, str] | None = None) -> UsageError:
    with pytest.raises(UsageError) as info:
        P(*argv, files=files)
    err = info.value
    # Every refusal is a full paragraph: what, why, fix.
    assert err.what and err.why and err.fix, err.paragraph()
    return err


# --------------------------------------------------------------------------------------------
# The table


def test_table_has_every_serve_option_with_aliases_and_kinds():
    t = vf.load_table()
    assert t.vllm_version == "0.32.0"
    assert len(t.flags) == 317  # + the positional model_tag = the reference's 318 actions
    assert t.flag("tensor_parallel_size").strings == ("--tensor-parallel-size", "-tp")
    assert t.flag("data_parallel_address").strings == ("--data-parallel-address", "-dpa")
    assert t.flag("trust_remote_code").strings == ("--trust-remote-code", "--no-trust-remote-code")
    assert t.flag("trust_remote_code").kind == "boolean_optional"
    assert t.flag("headless").kind == "store_true"
    assert t.flag("middleware").kind == "append"
    assert t.flag("api_key").nargs == "+"
    assert t.flag("hf_token").nargs == "?" and t.flag("hf_token").const is True
    assert t.flag("help").kind == "help"
    assert t.flag("port").type == "int" and t.flag("port").default == 8000
    assert t.flag("uvicorn_log_level").choices == (
        "critical", "debug", "error", "info", "trace", "warning")
    assert t.top_level_strings == frozenset({"-h", "--help", "-v", "--version"})


@pytest.mark.parametrize("surface", ["0.32", "0.33"])
def test_generated_table_module_equals_the_json_source_of_truth(surface):
    """The launcher loads each surface's table from its generated Python module; the JSON is
    the source. Both must give the same table, and the module must be what the generator writes
    today."""
    from vllm_secure_launch.surface import versions

    assert surface in versions.KNOWN
    from_module = vf.table_for(surface)
    from_json = vf.load_table(str(vf.table_path(surface)))
    assert from_module == from_json and from_module.surface == surface
    assert [dataclasses.astuple(f) for f in from_module.flags] == [
        dataclasses.astuple(f) for f in from_json.flags]
    doc = json.loads(vf.table_path(surface).read_text(encoding="utf-8"))
    module_file = vf.table_path(surface).with_suffix(".py")
    assert module_file.read_text(encoding="utf-8") == vf.render_table_module(
        doc, source=module_file.with_suffix(".json").name), (
        f"{module_file.name} is stale: run scripts/gen-flag-table (--from-extended)")


def test_loading_the_shipped_table_parses_no_json(monkeypatch):
    """Start-up cost: the shipped table never goes through json.loads."""
    vf.load_table.cache_clear()

    def boom(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("json.loads called while loading the shipped table")

    monkeypatch.setattr(vf.json, "loads", boom)
    try:
        assert len(vf.load_table().flags) == 317
    finally:
        vf.load_table.cache_clear()


def test_table_marks_json_typed_options():
    t = vf.load_table()
    json_kinds = {f.dest: f.json for f in t.flags if f.json}
    for dest in ("kv_transfer_config", "compilation_config", "profiler_config",
                 "kv_events_config", "ec_transfer_config", "speculative_config",
                 "default_chat_template_kwargs", "allowed_origins", "allowed_methods",
                 "allowed_headers", "hf_overrides", "model_loader_extra_config",
                 "limit_mm_per_prompt", "override_generation_config", "additional_config"):
        assert dest in json_kinds, dest
    assert json_kinds["kv_transfer_config"] == "dataclass"
    assert json_kinds["allowed_origins"] == "json"
    assert json_kinds["hf_overrides"] == "dict_or_str"
    assert "host" not in json_kinds and "api_key" not in json_kinds


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared reference listing not present")
def test_table_matches_reference_listing():
    t = vf.load_table()
    ref: dict[str, tuple[str, ...]] = {}
    for line in REFERENCE.read_text().splitlines():
        parts = [p.strip() for p in line.split("|")]
        ref[parts[2]] = tuple(parts[1].split())
    assert len(ref) == 318
    ours = {f.dest: f.strings for f in t.flags}
    ours["model_tag"] = ()
    assert ours == ref


def test_default_of():
    assert vf.default_of("port") == 8000
    assert vf.default_of("host") is None
    assert vf.default_of("allowed_methods") == ["*"]
    with pytest.raises(KeyError):
        vf.default_of("no_such_option")


# --------------------------------------------------------------------------------------------
# Accepted spellings: argv -> (model, values subset, unknown)

ACCEPTED = [
    # id, argv, model, values (subset that must match), unknown
    ("positional-model", ["m"], "m", {}, ()),
    ("no-model", ["--port", "1"], None, {"port": "1"}, ()),
    ("model-option-moved", ["--port", "1", "--model", "x"], "x", {"port": "1"}, ()),
    ("model-option-equals", ["--model=x", "-tp", "2"], "x", {"tensor_parallel_size": "2"}, ()),
    ("positional-wins-over-second-model", ["--model", "a", "--model", "b"], "a", {}, ()),
    ("underscore", ["m", "--trust_remote_code", "--data_parallel_address", "10.0.0.1"], "m",
     {"trust_remote_code": True, "data_parallel_address": "10.0.0.1"}, ()),
    ("underscore-equals", ["m", "--api_key=s3cret"], "m", {"api_key": ["s3cret"]}, ()),
    ("equals", ["m", "--host=127.0.0.1", "--port=8001"], "m",
     {"host": "127.0.0.1", "port": "8001"}, ()),
    ("equals-empty-optional", ["m", "--chat-template="], "m", {"chat_template": None}, ()),
    ("equals-empty", ["m", "--tool-parser-plugin="], "m", {"tool_parser_plugin": ""}, ()),
    ("abbrev-host", ["m", "--hos", "0.0.0.0"], "m", {"host": "0.0.0.0"}, ()),
    ("abbrev-equals", ["m", "--ho=0.0.0.0"], "m", {"host": "0.0.0.0"}, ()),
    ("abbrev-api-key", ["m", "--api-k", "k"], "m", {"api_key": ["k"]}, ()),
    ("abbrev-trust", ["m", "--trust-remote"], "m", {"trust_remote_code": True}, ()),
    ("abbrev-dpa", ["m", "--data-parallel-addr", "10.0.0.2"], "m",
     {"data_parallel_address": "10.0.0.2"}, ()),
    ("abbrev-no-form", ["m", "--no-trust-remote"], "m", {"trust_remote_code": False}, ()),
    ("exact-wins-over-prefix", ["m", "--tokenizer", "t"], "m", {"tokenizer": "t"}, ()),
    ("duplicate-last-wins", ["m", "--port", "1", "--port", "2"], "m", {"port": "2"}, ()),
    ("no-form", ["m", "--trust-remote-code", "--no-trust-remote-code"], "m",
     {"trust_remote_code": False}, ()),
    ("short-tp", ["m", "-tp", "2", "-dp", "4"], "m",
     {"tensor_parallel_size": "2", "data_parallel_size": "4"}, ()),
    ("short-dpa-equals", ["m", "-dpa=1.2.3.4"], "m", {"data_parallel_address": "1.2.3.4"}, ()),
    ("short-attached", ["m", "-qfp8"], "m", {"quantization": "fp8"}, ()),
    ("short-q", ["m", "-q", "fp8"], "m", {"quantization": "fp8"}, ()),
    ("O3", ["m", "-O3"], "m", {"optimization_level": "3"}, ()),
    ("O-space-3", ["m", "-O", "3"], "m", {"optimization_level": "3"}, ()),
    ("O-equals", ["m", "-O=1"], "m", {"optimization_level": "1"}, ()),
    ("dotted", ["m", "--kv-transfer-config.kv_connector", "NixlConnector",
                "--kv-transfer-config.kv_role", "kv_both"], "m",
     {"kv_transfer_config": {"kv_connector": "NixlConnector", "kv_role": "kv_both"}}, ()),
    ("dotted-underscore-option", ["m", "--kv_transfer_config.kv_role=kv_both"], "m",
     {"kv_transfer_config": {"kv_role": "kv_both"}}, ()),
    ("dotted-nested", ["m", "--compilation-config.pass_config.fuse_norm_quant", "true"], "m",
     {"compilation_config": {"pass_config": {"fuse_norm_quant": True}}}, ()),
    ("dotted-plus-list", ["m", "--compilation-config.cudagraph_capture_sizes+", "1,2",
                          "--compilation-config.cudagraph_capture_sizes+", "4"], "m",
     {"compilation_config": {"cudagraph_capture_sizes": ["1", "2", "4"]}}, ()),
    ("dotted-human-int", ["m", "--kv-transfer-config.kv_port", "1k"], "m",
     {"kv_transfer_config": {"kv_port": 1000}}, ()),
    ("dotted-short-alias", ["m", "-cc.mode=3", "-ac.backend", "X"], "m",
     {"compilation_config": {"mode": 3}, "attention_config": {"backend": "X"}}, ()),
    ("dotted-short-and-long-are-separate-keys",
     ["m", "--compilation-config.mode", "3", "-cc.cudagraph_capture_sizes+", "1"], "m",
     {"compilation_config": {"cudagraph_capture_sizes": ["1"]}}, ()),
    ("dotted-replaces-full-json",
     ["m", "--kv-transfer-config", '{"kv_connector":"NixlConnector","kv_role":"kv_both"}',
      "--kv-transfer-config.kv_role", "kv_producer"], "m",
     {"kv_transfer_config": {"kv_role": "kv_producer"}}, ()),
    ("dotted-before-full-json-still-wins",
     ["m", "--kv-transfer-config.kv_role", "kv_producer", "--kv-transfer-config",
      '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'], "m",
     {"kv_transfer_config": {"kv_role": "kv_producer"}}, ()),
    ("json-object", ["m", "--kv-transfer-config",
                     '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'], "m",
     {"kv_transfer_config": {"kv_connector": "NixlConnector", "kv_role": "kv_both"}}, ()),
    ("json-human-numbers", ["m", "--kv-transfer-config",
                            '{"kv_role":"kv_both","kv_port": 2k, "kv_connector":"5k"}'],
     "m", {"kv_transfer_config": {"kv_role": "kv_both", "kv_port": 2000,
                                  "kv_connector": "5k"}}, ()),
    ("json-list", ["m", "--allowed-origins", '["https://a"]'], "m",
     {"allowed_origins": ["https://a"]}, ()),
    ("json-string", ["m", "--allowed-origins", '"*"'], "m", {"allowed_origins": "*"}, ()),
    ("dict-or-str-dict", ["m", "--hf-overrides", '{"a": 1}'], "m", {"hf_overrides": {"a": 1}}, ()),
    ("dict-or-str-str", ["m", "--hf-overrides", "plain"], "m", {"hf_overrides": "plain"}, ()),
    ("json-optional-none", ["m", "--speculative-config", "None"], "m",
     {"speculative_config": None}, ()),
    ("default-chat-template-kwargs", ["m", "--default-chat-template-kwargs",
                                      '{"enable_thinking": false}'], "m",
     {"default_chat_template_kwargs": {"enable_thinking": False}}, ()),
    ("optional-none-host", ["m", "--host", "None"], "m", {"host": None}, ()),
    ("optional-empty-host", ["m", "--host="], "m", {"host": None}, ()),
    ("nargs-plus", ["m", "--api-key", "a", "b", "--port", "1"], "m",
     {"api_key": ["a", "b"], "port": "1"}, ()),
    ("nargs-plus-media", ["m", "--allowed-media-domains", "a.example", "b.example"], "m",
     {"allowed_media_domains": ["a.example", "b.example"]}, ()),
    ("nargs-plus-served-names", ["m", "--served-model-name", "x", "y"], "m",
     {"served_model_name": ["x", "y"]}, ()),
    ("nargs-plus-negative-number", ["m", "--cudagraph-capture-sizes", "1", "-2"], "m",
     {"cudagraph_capture_sizes": ["1", "-2"]}, ()),
    ("append", ["m", "--middleware", "a.B", "--middleware", "c.D"], "m",
     {"middleware": ["a.B", "c.D"]}, ()),
    ("store-true", ["m", "--headless", "--grpc"], "m", {"headless": True, "grpc": True}, ()),
    ("hf-token-bare", ["m", "--hf-token"], "m", {"hf_token": True}, ()),
    ("hf-token-value", ["m", "--hf-token", "tok"], "m", {"hf_token": "tok"}, ()),
    ("value-with-dot-equals", ["m", "--gpu-memory-utilization=-0.5"], "m",
     {"gpu_memory_utilization": "-0.5"}, ()),
    ("negative-int-value", ["m", "--seed", "-1"], "m", {"seed": "-1"}, ()),
    ("human-int", ["m", "--max-model-len", "1k"], "m", {"max_model_len": "1k"}, ()),
    ("choices-int", ["m", "--max-lora-rank", "8"], "m", {"max_lora_rank": "8"}, ()),
    ("choices-normalised", ["m", "--moe-backend", "Deep-GEMM"], "m",
     {"moe_backend": "Deep-GEMM"}, ()),
    ("help", ["m", "-h"], "m", {"help": True}, ()),
    ("unknown-with-value", ["m", "--frobnicate", "x", "y", "--port", "1"], "m", {"port": "1"},
     ("--frobnicate", "x", "y")),
    ("unknown-equals", ["m", "--frobnicate=x"], "m", {}, ("--frobnicate=x",)),
    ("unknown-short", ["m", "-Z"], "m", {}, ("-Z",)),
    ("unknown-no-headless", ["m", "--no-headless"], "m", {}, ("--no-headless",)),
    ("stray-positional", ["m", "extra", "--port", "1"], "m", {"port": "1"}, ("extra",)),
    ("unknown-before-model-keeps-value", ["--frobnicate", "m"], None, {},
     ("--frobnicate", "m")),
    ("positional-after-options", ["--port", "1", "m"], "m", {"port": "1"}, ()),
]


@pytest.mark.parametrize("argv,model,values,unknown",
                         [pytest.param(*c[1:], id=c[0]) for c in ACCEPTED])
def test_parse_accepts(argv, model, values, unknown):
    got = P(*argv)
    assert got.model == model
    for dest, value in values.items():
        assert dest in got.values, (dest, got.values)
        assert got.values[dest] == value, dest
    assert got.unknown == unknown
    assert "model" not in got.values and "model_tag" not in got.values


def test_parse_records_origins_spellings_and_notes():
    got = P("m", "--hos", "h", "--port", "1", "--port", "2", "--kv-transfer-config.kv_role",
            "kv_both")
    assert got.origins["host"] == "argv"
    assert got.origins["kv_transfer_config"] == "dotted"
    assert got.origins["model"] == "argv"
    assert got.spellings["host"] == "--hos"
    assert any("--port is given more than once" in n for n in got.notes)
    assert any("'--hos' is read by vLLM as --host" in n for n in got.notes)


def test_dotted_keys_replacing_full_json_are_noted():
    got = P("m", "--kv-transfer-config", '{"kv_connector":"X","kv_role":"kv_both"}',
            "--kv-transfer-config.kv_role", "kv_producer")
    assert "kv_connector" not in got.values["kv_transfer_config"]
    assert any("REPLACE" in n for n in got.notes)


def test_unknown_options_are_noted():
    got = P("m", "--frobnicate", "1")
    assert any("--frobnicate" in n and "passed through" in n for n in got.notes)


# --------------------------------------------------------------------------------------------
# Refused shapes

REFUSED = [
    ("ambiguous-prefix", ["m", "--enable-log", "x"], "ambiguous"),
    ("ambiguous-conf", ["m", "--conf", "x.yaml"], "--config-format"),
    ("ambiguous-short", ["m", "-d", "1"], "ambiguous"),
    ("config-equals", ["m", "--config=x.yaml"], "--config x.yaml"),
    ("two-configs", ["m", "--config", "a.yaml", "--config", "b.yaml"], "More than one"),
    ("omni", ["m", "--omni"], "--omni"),
    ("omni-as-value", ["m", "--served-model-name", "--omni"], "--omni"),
    ("bare-double-dash", ["m", "--", "x"], "'--'"),
    ("short-dotted", ["m", "-dpa1.2.3.4"], "-dpa=1.2.3.4"),
    ("short-dotted-last", ["m", "-dpa1.2.3.4", "--port", "1"], "single '-'"),
    ("short-dotted-abbrev", ["m", "-c.mode", "3"], "single '-'"),
    ("negative-decimal-value", ["m", "--gpu-memory-utilization", "-0.5"], "single '-'"),
    ("dotted-without-value", ["m", "--kv-transfer-config.kv_role"], "no value"),
    ("missing-value-end", ["m", "--host"], "needs a value"),
    ("missing-value-option-follows", ["m", "--host", "--port", "1"], "needs a value"),
    ("missing-nargs-plus", ["m", "--api-key", "--port", "1"], "at least one"),
    ("model-option-last", ["--model"], "no value"),
    ("served-name-without-model-first", ["--served-model-name", "x", "--port", "1"],
     "first argument"),
    ("store-true-with-value", ["m", "--headless=yes"], "takes no value"),
    ("boolean-with-value", ["m", "--trust-remote-code=false"], "takes no value"),
    ("bad-json", ["m", "--allowed-origins", "*"], "valid JSON"),
    ("bad-json-dataclass", ["m", "--kv-transfer-config", "{kv_role: x}"], "valid JSON"),
    ("bad-int", ["m", "--port", "http"], "valid int"),
    ("bad-float", ["m", "--gpu-memory-utilization", "lots"], "valid float"),
    ("bad-choice", ["m", "--uvicorn-log-level", "loud"], "allowed choices"),
    ("bad-int-choice", ["m", "--max-lora-rank", "7"], "allowed choices"),
    ("config-as-dotted", ["m", "--config.x", "1"], "ignores"),
]


@pytest.mark.parametrize("argv,needle", [pytest.param(*c[1:], id=c[0]) for c in REFUSED])
def test_parse_refuses(argv, needle):
    err = refused(*argv)
    assert needle in err.paragraph()


def test_ambiguous_prefix_names_candidates():
    err = refused("m", "--enable-log", "x")
    assert "--enable-log-outputs" in err.what and "--enable-log-deltas" in err.what


# --------------------------------------------------------------------------------------------
# --config FILE

YAML = """\
host: 0.0.0.0
port: 9000
trust_remote_code: true
api-key: from-yaml
middleware: [evil.mw]
served-model-name: [a, b]
kv-transfer-config:
  kv_connector: NixlConnector
  kv_role: kv_both
enable-log-deltas: false
enforce_eager: false
max-model-len: 256
"""


def test_config_keys_count_like_flags():
    got = P("m", "--config", "c.yaml", files={"c.yaml": YAML})
    assert got.config_file == "c.yaml"
    v = got.values
    assert v["host"] == "0.0.0.0" and v["port"] == "9000"
    assert v["trust_remote_code"] is True
    assert v["api_key"] == ["from-yaml"]
    assert v["middleware"] == ["evil.mw"]
    assert v["served_model_name"] == ["a", "b"]
    assert v["kv_transfer_config"] == {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    assert v["max_model_len"] == "256"
    assert got.origins["host"] == "config:c.yaml"
    assert "config" not in v


def test_config_false_is_dropped_as_vllm_serve_does():
    got = P("m", "--config", "c.yaml", files={"c.yaml": YAML})
    # `vllm serve` looks --no-<key> up in the top-level parser, which has none: both dropped.
    assert "enable_log_deltas" not in got.values
    assert "enforce_eager" not in got.values
    assert sum("is ignored by vLLM" in n for n in got.notes) == 2


def test_command_line_beats_config():
    got = P("m", "--port", "1", "--config", "c.yaml", "--host", "127.0.0.1",
            files={"c.yaml": YAML})
    assert got.values["port"] == "1" and got.origins["port"] == "argv"
    assert got.values["host"] == "127.0.0.1"
    assert got.values["trust_remote_code"] is True


def test_config_model_key_and_positional_precedence():
    files = {"c.yaml": "model: from-yaml\nport: 5\n"}
    assert P("--config", "c.yaml", files=files).model == "from-yaml"
    assert P("--config", "c.yaml", files=files).origins["model"] == "config:c.yaml"
    assert P("cli-model", "--config", "c.yaml", files=files).model == "cli-model"
    # With --config, vLLM skips its "model must come first" check for --served-model-name.
    got = P("--served-model-name", "x", "--config", "c.yaml", files=files)
    assert got.model == "from-yaml" and got.values["served_model_name"] == ["x"]


def test_config_spelling_tricks_apply_to_keys():
    files = {"c.yaml": "hos: 10.0.0.1\ndata_parallel_size: 2\nkv-transfer-config.kv_role: kv_both\n"}
    got = P("m", "--config", "c.yaml", files=files)
    assert got.values["host"] == "10.0.0.1"
    assert got.values["data_parallel_size"] == "2"
    assert got.values["kv_transfer_config"] == {"kv_role": "kv_both"}
    assert got.origins["kv_transfer_config"] == "dotted"


def test_config_list_for_json_option_is_refused_like_vllm():
    # A YAML list becomes `--allowed-origins https://a`, which is not JSON: vLLM refuses it.
    files = {"c.yaml": "allowed-origins: ['https://a']\n"}
    refused("m", "--config", "c.yaml", files=files)


def test_config_list_for_single_value_option_leaves_strays():
    # middleware is an append option with one value: `--middleware a b` -> b is a stray.
    got = P("m", "--config", "c.yaml", files={"c.yaml": "middleware: [a, b]\n"})
    assert got.values["middleware"] == ["a"]
    assert got.unknown == ("b",)


@pytest.mark.parametrize("argv,files,needle", [
    pytest.param(["m", "--config", "c.json"], {"c.json": "{}"}, ".yaml", id="extension"),
    pytest.param(["m", "--config", "missing.yaml"], {}, "Cannot read", id="unreadable"),
    pytest.param(["m", "--config", "c.yaml"], {"c.yaml": "port: [1\napi-key: SECRETVALUE\n"},
                 "not valid YAML", id="bad-yaml"),
    pytest.param(["m", "--config", "c.yaml"], {"c.yaml": ""}, "mapping", id="empty"),
    pytest.param(["m", "--config", "c.yaml"], {"c.yaml": "- a\n- b\n"}, "mapping", id="list"),
    pytest.param(["m", "--config", "c.yaml"], {"c.yaml": "1: x\n"}, "not a string", id="int-key"),
    pytest.param(["m", "--config", "c.yaml"], {"c.yaml": "hf-overrides: {d: 2024-01-01}\n"},
                 "JSON", id="date-in-dict"),
    pytest.param(["--config", "c.yaml"], {"c.yaml": "port: 1\n"}, "No model", id="no-model"),
    pytest.param(["m", "--config"], {}, "no file", id="no-file"),
    pytest.param(["m", "--config", "c.yaml"], {"c.yaml": "config: other.yaml\n"}, "ignores",
                 id="nested-config-key"),
    pytest.param(["m", "--config", "c.yaml"], {"c.yaml": "port: -0.5\n"}, "single '-'",
                 id="yaml-value-dotted"),
])
def test_config_errors(argv, files, needle):
    err = refused(*argv, files=files)
    assert needle in err.paragraph()
    assert "SECRETVALUE" not in err.paragraph()


def test_config_reads_real_file(tmp_path):
    f = tmp_path / "c.yml"
    f.write_text("port: 7\n")
    assert vf.parse(["m", "--config", str(f)]).values["port"] == "7"


# --------------------------------------------------------------------------------------------
# to_argv and helpers


def test_to_argv_canonical_form():
    got = P("--hos", "h", "--model", "m", "--no-trust-remote", "--api-key", "a", "b",
            "--middleware", "x", "--middleware", "y", "-tp", "2", "--kv-transfer-config.kv_role",
            "kv_both", "--headless", "--hf-token", "--frob", "1")
    assert vf.to_argv(got) == [
        "m", "--headless", "--host=h", "--api-key", "a", "b", "--middleware", "x",
        "--middleware", "y", "--no-trust-remote-code", "--hf-token",
        "--tensor-parallel-size=2", "--kv-transfer-config", '{"kv_role":"kv_both"}',
        "--frob", "1",
    ]


def test_to_argv_expands_config_and_never_emits_it():
    got = P("m", "--config", "c.yaml", files={"c.yaml": YAML})
    argv = vf.to_argv(got)
    assert "--config" not in argv and not any(a.startswith("--config=") for a in argv)
    assert "--host=0.0.0.0" in argv and "--trust-remote-code" in argv


def test_to_argv_values_starting_with_dash():
    got = P("m", "--served-model-name=-x", "--chat-template=-t.jinja")
    argv = vf.to_argv(got)
    assert "--served-model-name=-x" in argv and "--chat-template=-t.jinja" in argv
    bad = vf.with_values(got, served_model_name=["-a", "-b"])
    with pytest.raises(UsageError):
        vf.to_argv(bad)


def test_planner_helpers():
    got = P("m", "--api-key", "k", "--host", "0.0.0.0")
    changed = vf.with_values(vf.without(got, "api_key"), host="127.0.0.1",
                             middleware=["vllm_secure_launch.gate.middleware.Gate"], port=8001)
    assert "api_key" not in changed.values
    assert changed.origins["host"] == "launcher"
    argv = vf.to_argv(changed)
    assert argv == ["m", "--host=127.0.0.1", "--port=8001", "--middleware",
                    "vllm_secure_launch.gate.middleware.Gate"]
    assert P(*argv).values == {"host": "127.0.0.1", "port": "8001",
                               "middleware": ["vllm_secure_launch.gate.middleware.Gate"]}
    with pytest.raises(KeyError):
        vf.with_values(got, not_an_option=1)
    with pytest.raises(ValueError):
        vf.with_values(got, model="x")
    # dataclasses.replace works as the contract promises
    assert vf.to_argv(dataclasses.replace(got, model="other"))[0] == "other"


def test_number_applies_vllm_conversion():
    got = P("m", "--max-model-len", "2k", "--port", "9", "--gpu-memory-utilization", "0.5")
    assert vf.number(got, "max_model_len") == 2000
    assert vf.number(got, "port") == 9
    assert vf.number(got, "gpu_memory_utilization") == 0.5
    assert vf.number(P("m"), "port") == 8000
    assert vf.number(P("m", "--max-model-len", "auto"), "max_model_len") == -1


def test_to_argv_refuses_omni_in_unknown():
    got = P("m", "--config", "c.yaml", files={"c.yaml": "omni: true\n"})
    assert got.unknown == ("--omni",)
    with pytest.raises(UsageError):
        vf.to_argv(got)


# --------------------------------------------------------------------------------------------
# Round trips: parse(to_argv(parse(x))) == parse(x)

ROUND_TRIP = [c[1] for c in ACCEPTED] + [
    ["m", "--config", "c.yaml"],
    ["--config", "m.yaml", "--port", "3"],
    ["m", "--allowed-origins", '["https://a", "https://b"]', "--allow-credentials"],
    ["m", "--served-model-name=-x"],
    ["m", "--chat-template", "{% x %}"],
    ["m", "--kv-events-config", '{"enable_kv_cache_events": true, "endpoint": "tcp://*:5557"}'],
    ["m", "--enable-log-deltas", "--no-enable-log-deltas", "--enable-log-deltas"],
    ["m", "--speculative-config", "null"],
    ["m", "--api-key", "None"],
    ["m", "-O", "2", "--frob", "--frob2", "x", "y"],
    ["m", "stray1", "stray2", "--api-key", "k"],
]


def _projection(a: ServeArgs) -> tuple:
    return a.model, a.values, a.unknown


@pytest.mark.parametrize("argv", ROUND_TRIP, ids=[" ".join(a)[:60] for a in ROUND_TRIP])
def test_round_trip(argv):
    files = {"c.yaml": YAML, "m.yaml": "model: ym\nport: 4\n"}
    first = P(*argv, files=files)
    again = P(*vf.to_argv(first))
    assert _projection(again) == _projection(first)
    assert vf.to_argv(again) == vf.to_argv(first)


# --------------------------------------------------------------------------------------------
# Differential test against vLLM's real parser

def _vllm_python() -> str:
    """The interpreter that runs vLLM's parser: $VSL_VLLM_PYTHON, else this interpreter when
    vLLM is installed beside it (find_spec does not import it), else the project venv."""
    if os.environ.get("VSL_VLLM_PYTHON"):
        return os.environ["VSL_VLLM_PYTHON"]
    return sys.executable


VENV_PYTHON = _vllm_python()

HARNESS = r'''
import contextlib, dataclasses, enum, io, json, os, sys
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.utils.argparse_utils import FlexibleArgumentParser

def jsonable(v):
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {"__dataclass__": {f.name: jsonable(getattr(v, f.name))
                                  for f in dataclasses.fields(v)}}
    if isinstance(v, enum.Enum):
        return jsonable(v.value)
    if isinstance(v, (set, frozenset)):
        return sorted((jsonable(x) for x in v), key=repr)
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return {"__repr__": repr(v)}

results = []
for argv in json.load(sys.stdin):
    # Built as vllm.entrypoints.cli.main.main() does (-v/--version at the top level).
    top = FlexibleArgumentParser(description="vLLM CLI")
    top.add_argument("-v", "--version", action="version", version="vllm")
    sub = top.add_subparsers(required=False, dest="subparser")
    serve = ServeSubcommand().subparser_init(sub)
    defaults = {a.dest: a.default for a in serve._actions}
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            ns = top.parse_args(["serve", *argv])
    except SystemExit as e:
        results.append({"error": "exit %s: %s" % (e.code, err.getvalue().strip()[-200:])})
        continue
    except Exception as e:
        results.append({"error": "%s: %s" % (type(e).__name__, e)})
        continue
    model = ns.model_tag if getattr(ns, "model_tag", None) is not None else ns.model
    changed = {}
    for dest, value in vars(ns).items():
        if dest in ("subparser", "dispatch_function", "model_tag", "model"):
            continue
        d = defaults.get(dest)
        try:
            same = value is d or (type(value) is type(d) and value == d)
        except Exception:
            same = False
        if not same:
            changed[dest] = jsonable(value)
    results.append({"model": model, "changed": changed})
json.dump(results, sys.stdout)
'''

# argv cases; the YAML file (DIFF_YAML) is written as diff.yaml in the working directory.
DIFF_YAML = """\
port: 9000
hos: 10.0.0.9
data_parallel_size: 1
kv-transfer-config.kv_role: kv_both
trust_remote_code: true
api-key: from-yaml
middleware: [evil.mw]
served-model-name: [a, b]
enable-log-deltas: false
max-model-len: 1k
compilation-config:
  cudagraph_capture_sizes: [1, 2]
"""

DIFFERENTIAL = [
    ["m"],
    ["--port", "1", "--model", "x"],
    ["--model=x", "-tp", "2"],
    ["--model", "a", "--model", "b"],
    ["a", "--model", "b"],
    ["m", "--trust_remote_code", "--data_parallel_address", "10.0.0.1", "--api_key=s"],
    ["m", "--hos", "0.0.0.0", "--ho=1.1.1.1"],
    ["m", "--api-k", "k1", "k2", "--trust-remote", "--data-parallel-addr", "10.0.0.2"],
    ["m", "--no-trust-remote", "--tokenizer", "t", "--port", "1", "--port", "2"],
    ["m", "-tp", "2", "-dp", "4", "-dpa=1.2.3.4", "-qfp8", "-asc", "3"],
    ["m", "-O3"], ["m", "-O", "1"], ["m", "-O=0"],
    ["m", "--kv-transfer-config.kv_connector", "NixlConnector", "--kv-transfer-config.kv_role",
     "kv_both", "--kv-transfer-config.kv_port", "2k"],
    ["m", "--kv-transfer-config", '{"kv_connector":"NixlConnector","kv_role":"kv_both"}',
     "--kv-transfer-config.kv_role", "kv_producer"],
    ["m", "--kv-transfer-config",
     '{"kv_connector":"NixlConnector","kv_role":"kv_both","kv_port": 3k}'],
    ["m", "-cc.mode=3", "-ac.use_non_causal", "true"],
    ["m", "--compilation-config", '{"mode": 3}', "-cc.cudagraph_capture_sizes+", "1"],
    ["m", "--compilation-config.cudagraph_capture_sizes+", "1,2",
     "--compilation-config.cudagraph_capture_sizes+", "4", "-cc.mode=3"],
    ["m", "--compilation-config.mode", "3", "--compilation_config.cudagraph_capture_sizes",
     "[1, 2]"],
    ["m", "--allowed-origins", '["https://a"]', "--allow-credentials"],
    ["m", "--allowed-origins", "*"],
    ["m", "--hf-overrides", '{"a": 1}', "--model-loader-extra-config", "plain"],
    ["m", "--speculative-config", "None", "--default-chat-template-kwargs", '{"x": true}'],
    ["m", "--host", "None"],
    ["m", "--api-key", "a", "b", "--allowed-media-domains", "a.example", "b.example"],
    ["m", "--served-model-name", "x", "y", "--cudagraph-capture-sizes", "1", "-2"],
    ["m", "--middleware", "a.B", "--middleware", "c.D", "--headless", "--grpc"],
    ["m", "--hf-token"], ["m", "--hf-token", "tok"],
    ["m", "--gpu-memory-utilization=-0.5", "--seed", "-1", "--max-model-len", "1k"],
    ["m", "--max-lora-rank", "8", "--moe-backend", "Deep-GEMM"],
    ["m", "--frobnicate", "x"],
    ["m", "extra"],
    ["m", "--enable-log", "x"],
    ["m", "-d", "1"],
    ["m", "--host"],
    ["m", "--api-key", "--port", "1"],
    ["--served-model-name", "x", "--port", "1"],
    ["m", "--headless=yes"],
    ["m", "--port", "http"],
    ["m", "--uvicorn-log-level", "loud"],
    ["m", "--max-lora-rank", "7"],
    ["m", "--config", "diff.yaml"],
    ["m", "--port", "1", "--config", "diff.yaml", "--api-key", "cli"],
    ["--config", "diff.yaml"],
    ["m", "--chat-template="],
    ["m", "--enable-log-deltas", "--no-enable-log-deltas"],
    ["--hf-token", "m"],
    ["m", "--no-headless"],
    ["m", "-Odecode"],
    ["m", "-dpm", "-asc=2"],
    ["m", "--api-key=a", "b"],
    ["m", "--port", "1", "m2"],
    ["--model", "x", "--config", "diff.yaml"],
    ["m", "--tool-parser-plugin=", "--kv-events-config", '{"enable_kv_cache_events": true}'],
]

# Shapes vLLM accepts (silently or by crashing later) that the launcher refuses on purpose.
REFUSED_ON_PURPOSE = [
    ["m", "--config=diff.yaml"],
    ["m", "-dpa1.2.3.4", "--port", "1"],
]


def _convert_ours(flag: vf.Flag, value: Any) -> Any:
    """Our stored value -> what vLLM's type function makes of it (for comparison)."""
    if value is None or flag.json or isinstance(value, bool):
        return value
    if isinstance(value, list):
        return [_convert_ours(dataclasses.replace(flag, nargs=None), v) for v in value]
    if flag.type in ("int", "float", "human_readable_int", "human_readable_int_or_auto"):
        return vf.number(ServeArgs(model=None, values={flag.dest: value}), flag.dest)
    if flag.type == "lower_underscore":
        return value.lower().replace("-", "_")
    return value


_same = same_value


def _vllm_available() -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return Path(VENV_PYTHON).exists() and subprocess.run(
        [VENV_PYTHON, "-c", probe], check=False, capture_output=True).returncode == 0


@pytest.mark.integration  # a child interpreter importing vLLM's own parser
@pytest.mark.skipif(not _vllm_available(), reason=f"no vLLM at {VENV_PYTHON} (VSL_VLLM_PYTHON)")
def test_parse_matches_vllm_real_parser(tmp_path):
    (tmp_path / "diff.yaml").write_text(DIFF_YAML)
    cases = DIFFERENTIAL + REFUSED_ON_PURPOSE
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"}
    proc = subprocess.run([VENV_PYTHON, "-c", HARNESS], input=json.dumps(cases), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    table = vf.load_table()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        failures = []
        for argv, res in zip(cases, results):
            try:
                ours: ServeArgs | None = vf.parse(argv)
            except UsageError:
                ours = None
            if argv in REFUSED_ON_PURPOSE:
                if ours is not None:
                    failures.append((argv, "launcher should refuse", res))
                continue
            vllm_error = "error" in res
            ours_error = ours is None or bool(ours.unknown)
            if vllm_error != ours_error:
                failures.append((argv, res, None if ours is None else ours.unknown))
                continue
            if vllm_error:
                continue
            assert ours is not None
            if (ours.model or None) != (res["model"] if res["model"] != "Qwen/Qwen3-0.6B"
                                         else ours.model):
                failures.append((argv, "model", ours.model, res["model"]))
            for dest, theirs in res["changed"].items():
                if dest not in ours.values:
                    failures.append((argv, dest, "missing", theirs))
                elif not _same(_convert_ours(table.flag(dest), ours.values[dest]), theirs):
                    failures.append((argv, dest, ours.values[dest], theirs))
            for dest, value in ours.values.items():
                if dest not in res["changed"]:
                    default = table.flag(dest).default
                    # vLLM compares dataclass defaults by identity; skip those.
                    if (table.flag(dest).json != "dataclass"
                            and not _same(_convert_ours(table.flag(dest), value), default)):
                        failures.append((argv, dest, "vLLM kept the default", value))
        assert not failures, "\n".join(map(repr, failures))
    finally:
        os.chdir(cwd)

