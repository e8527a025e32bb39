"""Click options made from the settings table (config/settings.py); none is written by hand.

Every option defaults to None ("not given"), so that policy.resolve can apply the precedence
CLI > VSL_* > policy file > defaults; the defaults shown in --help come from the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import click

from vllm_secure_launch.config import settings
from vllm_secure_launch.config.settings import Setting

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class Seconds(click.FloatRange):
    """A duration in seconds: a finite number within the range. click's FloatRange lets nan
    through (every comparison with nan is false), and a nan socket timeout is a crash."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return super().convert(number, param, ctx)


def _type(s: Setting) -> Any:
    if s.choices:
        return click.Choice(list(s.choices))
    # nan and inf pass click's float; policy.resolve refuses them with a usage error (exit 2)
    # that names the option, like every other out-of-range duration.
    return float if s.kind == settings.NUMBER else str


def click_option(key: str, *, dest: str | None = None, help: str | None = None) -> Decorator:
    """The click option of one setting; `dest` renames the parameter, `help` rewords it."""
    s = settings.BY_KEY[key]
    name = dest or s.key
    text = settings.option_help(s, help)
    if s.kind == settings.BOOL:
        return click.option(f"{s.flag}/--no-{s.flag[2:]}", name, default=None, help=text)
    return click.option(s.flag, name, type=_type(s), default=None, metavar=s.metavar, help=text)


def launcher_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """All launcher options (before the subcommand), in the table's order."""
    for s in reversed(settings.options()):
        fn = click_option(s.key)(fn)
    return fn


def spelled_again(cli: Mapping[str, Any], skip: Collection[str] = ()) -> list[str]:
    """The launcher options given on a command line, written back as tokens (for generated
    scripts and units): `--x`/`--no-x` for switches, lists joined as a shell command line."""
    import shlex

    out: list[str] = []
    for s in settings.options():
        value = cli.get(s.key)
        if value is None or s.key in skip:
            continue
        if s.kind == settings.BOOL:
            out.append(s.flag if value else f"--no-{s.flag[2:]}")
        else:
            out += [s.flag, shlex.join(value) if isinstance(value, (tuple, list)) else str(value)]
    return out
