"""ServeArgs: vLLM's serve arguments after every spelling, --config YAML and dotted key is
resolved exactly as the FlexibleArgumentParser of the vLLM that will run would. Produced by
surface.flags.parse() with that version's flag table."""

from __future__ import annotations

from dataclasses import field
from typing import Any, Mapping

from vllm_secure_launch.records import record


@record
class ServeArgs:
    # The model as vLLM will see it: positional model_tag (wins), else --model, else YAML `model:`.
    model: str | None
    # dest -> value, only for options the user set (argv or --config). Value shapes:
    #   single-value option: str (as written; no type conversion)
    #   nargs option ('+', '*'): list[str]
    #   boolean (BooleanOptionalAction / store_true): bool
    #   append option (--middleware): list[str]
    #   JSON-valued option (*-config, --hf-overrides, ...): dict/list when the value parses as
    #   JSON or dotted keys were used, else the raw str
    values: Mapping[str, Any]
    # dest -> where the final value came from: "argv", "config:<path>" or "dotted"
    origins: Mapping[str, str] = field(default_factory=dict)
    # dest -> option string the user wrote last (e.g. "--hos"), for messages
    spellings: Mapping[str, str] = field(default_factory=dict)
    # unknown option tokens (and their values when attached with '='), passed through to vLLM
    unknown: tuple[str, ...] = ()
    # the --config file, if one was given (its keys are already merged into `values`)
    config_file: str | None = None
    # parser remarks that become info findings (e.g. "duplicate --port: last one wins")
    notes: tuple[str, ...] = ()
    # the vLLM surface (minor version, "0.33") whose flag table parsed these arguments: the
    # planner's to_argv/number/default lookups use the same table (surface/flags.py of())
    surface: str = "0.32"
    # (option, value) of every raw token that looks secret-bearing (surface/secrets.py
    # secret_values): never shown; the planner refuses when such a value reaches argv
    secret_values: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def has(self, dest: str) -> bool:
        return dest in self.values

    def get(self, dest: str, default: Any = None) -> Any:
        return self.values.get(dest, default)
