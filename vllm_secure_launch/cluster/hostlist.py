"""Slurm's hostlist syntax (`gpu[01-04,07]`, `n[1-2],m3`, `r[1-2]-n[01-02]`) -> host names.

Written here rather than calling `scontrol show hostnames`: the derivation must stay pure (the
planner and `--dry-run` never start processes), must work outside Slurm (a container
orchestrator has no scontrol), and must refuse malformed input with a clear message instead of
whatever scontrol prints. The grammar is small: comma-separated items at the top level, each a
text with zero or more bracket groups of comma-separated numbers or ranges LO-HI, zero-padded to
the width of LO (Slurm's rule). Order and duplicates are kept, as Slurm keeps them.
"""

from __future__ import annotations

import re

MAX_HOSTS = 65536  # a bound against `n[0-999999999]`: no real allocation is larger

_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


class HostlistError(ValueError):
    """The text is not a Slurm hostlist."""


def _split_top(text: str) -> list[str]:
    items: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
            if depth > 1:
                raise HostlistError(f"nested '[' in {text!r}")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise HostlistError(f"unbalanced ']' in {text!r}")
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise HostlistError(f"unbalanced '[' in {text!r}")
    items.append("".join(cur))
    return items


def _numbers(group: str, where: str) -> list[str]:
    out: list[str] = []
    for part in group.split(","):
        m = _RANGE.fullmatch(part.strip())
        if m is None:
            raise HostlistError(f"{part!r} in {where!r} is not a number or a range LO-HI")
        lo_text, hi_text = m.group(1), m.group(2) or m.group(1)
        lo, hi = int(lo_text), int(hi_text)
        if hi < lo:
            raise HostlistError(f"range {part!r} in {where!r} runs backwards")
        if hi - lo >= MAX_HOSTS:
            raise HostlistError(f"range {part!r} in {where!r} is larger than {MAX_HOSTS} hosts")
        width = len(lo_text)  # zero padding follows the low bound: 01-10 -> 01 ... 10
        out += [str(n).zfill(width) for n in range(lo, hi + 1)]
    return out


def _expand_item(item: str) -> list[str]:
    if not item:
        raise HostlistError("an empty host name (two commas, or a comma at an end)")
    names = [""]
    for piece in re.split(r"(\[[^\]]*\])", item):
        if piece.startswith("["):
            nums = _numbers(piece[1:-1], item)
            names = [n + x for n in names for x in nums]
        elif piece:
            if any(c.isspace() for c in piece) or "]" in piece:
                raise HostlistError(f"{item!r} is not a host name")
            names = [n + piece for n in names]
        if len(names) > MAX_HOSTS:
            raise HostlistError(f"{item!r} names more than {MAX_HOSTS} hosts")
    return names


def expand(text: str) -> tuple[str, ...]:
    """Every host of a hostlist, in order. Raises HostlistError."""
    text = text.strip()
    if not text:
        raise HostlistError("the node list is empty")
    hosts: list[str] = []
    for item in _split_top(text):
        hosts += _expand_item(item.strip())
        if len(hosts) > MAX_HOSTS:
            raise HostlistError(f"the node list names more than {MAX_HOSTS} hosts")
    return tuple(hosts)


def tasks_per_node(text: str) -> tuple[int, ...]:
    """SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE (`2(x3),1`) -> one count per node."""
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if m is None:
            raise HostlistError(f"{text!r} is not a tasks-per-node list like 1(x2)")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return tuple(out)
