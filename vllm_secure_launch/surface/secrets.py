"""Which option names look like they carry a secret: one notion for the whole launcher.

vLLM's own secret options (--api-key, --hf-token) are moved into the environment by the
planner. Anything else whose name looks like a key, token, password or credential — typically a
mistyped --api-key (`--api-keyy`, `--apikey`, `--api_key2`) that vLLM does not know — is treated
as secret everywhere: its value is never shown in argv, reports or findings, and the plan is
refused before it can reach a process list (VSL223).
"""

from __future__ import annotations

import re

# Applied to options vLLM does not know (vLLM would refuse them anyway, so a generous match
# costs nothing): any of these fragments, in any spelling, marks the option as secret-bearing.
_SECRET = re.compile(r"ke[ey]|tok|secret|pass|pwd|cred|auth|cookie|bearer|sess")
# vLLM's own secret options, as the test above normalises them: a cut-short spelling such as
# `--api-ke` or `--hf-tok` is an abbreviation argparse would expand to one of them, so it is
# secret-bearing too, even where it ends up as another option's value (`--x. --api-ke K`).
_SECRET_OPTIONS = ("apikey", "hftoken")
_MIN_ABBREV = 4  # "apik", "hfto": shorter prefixes are ambiguous between many options


def looks_secret(option: str) -> bool:
    """True for option names such as --api-keyy, --apikey, --api-ke, --auth-token, --db_password."""
    name = option.split("=", 1)[0].lstrip("-").lower()
    flat = name.replace("_", "").replace("-", "").replace(".", "")
    if len(flat) >= _MIN_ABBREV and any(full.startswith(flat) for full in _SECRET_OPTIONS):
        return True
    return bool(_SECRET.search(flat))


def redact_argv(argv: tuple[str, ...] | list[str], secret_options: set[str]) -> tuple[str, ...]:
    """argv with the values of the named options replaced by <redacted>."""
    out: list[str] = []
    hide_next = False
    for token in argv:
        if hide_next and not token.startswith("-"):
            out.append("<redacted>")
            hide_next = False
            continue
        hide_next = False
        name, eq, _ = token.partition("=")
        if name in secret_options:
            out.append(f"{name}=<redacted>" if eq else token)
            hide_next = not eq
        else:
            out.append(token)
    return tuple(out)


# dests of vLLM's own secret options: the planner moves their values out of argv.
SECRET_DESTS = frozenset({"api_key", "hf_token"})


def secret_values(argv: list[str] | tuple[str, ...],
                  plain_options: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """(option, value) for every raw token that looks secret-bearing, with the value written
    after it or attached with '='.

    Read from the raw command line, before any parsing, because vLLM's parser can make such a
    token something else — a dotted key swallows the next token as its JSON value
    (`--x. --api-keyy K`), so K lands as a stray value — and the value must still never reach
    a process list or a report. `plain_options` are the option strings vLLM knows that carry no
    secret (`--tokenizer` looks like "tok" but is not secret): a token that is one of them, or
    a prefix of one, is not secret-bearing.
    """
    out: list[tuple[str, str]] = []
    for i, token in enumerate(argv):
        if not token.startswith("-") or token == "-":
            continue
        name, eq, attached = token.partition("=")
        canon = "--" + name.lstrip("-").replace("_", "-")
        if not looks_secret(name) or any(o.startswith(canon) for o in plain_options):
            continue
        value = attached if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if value:
            out.append((name, value))
    return tuple(out)


def leaked(pairs: tuple[tuple[str, str], ...], argv: tuple[str, ...]) -> tuple[str, ...]:
    """Option names whose secret value would still appear in `argv` (as a token or, for values
    of 4+ characters, inside one such as a JSON value)."""
    return tuple(dict.fromkeys(
        name for name, value in pairs
        if any(tok == value or (len(value) >= 4 and value in tok) for tok in argv)))
