"""A click command whose arguments after its own options belong to vLLM, verbatim.

click parses option-looking tokens anywhere before the first positional one, and splits a
single-dash token into letters: `check -qh MODEL` was read as `-q -h`, printed help and exited
0, so `check` and `--dry-run` "approved" any command line carrying such a token (issue 10).
Here the command's own options are taken only from the front, spelled as declared; the first
other token starts vLLM's arguments, which reach click behind `--` and are never parsed by it.
Help is only `--help` or `-h` as the very first token.
"""

from __future__ import annotations

import click


class PassThrough(click.Command):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("context_settings", {"ignore_unknown_options": True,
                                               "allow_interspersed_args": False})
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args[:1] in (["--help"], ["-h"]):
            return super().parse_args(ctx, args[:1])
        own = self._own_options()
        i = 0
        front: list[str] = []
        while i < len(args) and args[i].split("=", 1)[0] in own:
            token = args[i]
            front.append(token)
            takes_value = not own[token.split("=", 1)[0]]
            i += 1
            if takes_value and "=" not in token and i < len(args):
                front.append(args[i])
                i += 1
        return super().parse_args(ctx, [*front, "--", *args[i:]])

    def _own_options(self) -> dict[str, bool]:
        """Long option spelling -> is a flag (takes no value)."""
        out: dict[str, bool] = {}
        for param in self.params:
            if isinstance(param, click.Option):
                for name in (*param.opts, *param.secondary_opts):
                    if name.startswith("--"):
                        out[name] = bool(param.is_flag or param.count)
        return out
