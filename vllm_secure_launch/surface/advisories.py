"""The advisory data (surface/data/advisories.toml) and its matcher. Pure, standard library.

The TOML is the source an operator edits. So that a dry run does not pay for parsing it
(~30 ms), scripts/gen-advisories compiles it into surface/data/advisories_index.py, which
records the TOML's fingerprint (size and CRC-32): the index is used only while it still matches, else the TOML
itself is parsed (slower, never stale).

Versions are compared by `version_key`, the PEP 440 ordering of packaging's Version, and
specifiers with PEP 440's exclusive-bound rules (`<V` excludes V's pre-releases, `>V` its
post-releases); pre-releases count as affected. tests/test_advisories.py checks both against
`packaging` itself on every specifier of the data and generated versions.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Callable, Mapping, Sequence

from vllm_secure_launch.records import record

DATA = os.path.join(os.path.dirname(__file__), "data", "advisories.toml")
SEVERITIES = ("low", "medium", "high", "critical")

# PEP 440's full grammar; compiled on first use (a plain release needs no regex, see below).
_VERSION = (
    r"^v?(?:(?P<epoch>\d+)!)?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre_l>a|alpha|b|beta|rc|c|pre|preview)[-_.]?(?P<pre_n>\d*))?"
    r"(?:(?:-(?P<post_n1>\d+))|(?:[-_.]?(?:post|rev|r)[-_.]?(?P<post_n2>\d*)))?"
    r"(?:[-_.]?dev[-_.]?(?P<dev_n>\d*))?(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?$")
_PRE = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "rc": 2, "c": 2, "pre": 2, "preview": 2}
INF = float("inf")


@record
class Parsed:
    epoch: int
    release: tuple[int, ...]
    pre: tuple[int, int] | None
    post: int | None
    dev: int | None

    @property
    def key(self) -> tuple[Any, ...]:
        release = list(self.release)
        while len(release) > 1 and release[-1] == 0:
            release.pop()
        if self.pre is None and self.post is None and self.dev is not None:
            pre: tuple[float, float] = (-INF, 0)
        else:
            pre = (INF, 0) if self.pre is None else (float(self.pre[0]), float(self.pre[1]))
        post = -INF if self.post is None else float(self.post)
        dev = INF if self.dev is None else float(self.dev)
        return (self.epoch, tuple(release), pre, post, dev)

    @property
    def is_pre(self) -> bool:  # dev releases count as pre-releases (PEP 440)
        return self.pre is not None or self.dev is not None

    @property
    def base(self) -> tuple[Any, ...]:
        return Parsed(self.epoch, self.release, None, None, None).key


@functools.lru_cache(maxsize=1024)  # a start parses the installed version once per advisory
def parse_version(text: str) -> Parsed:
    plain = text.strip()
    # Versions in PEP 440's normal form ("0.32.0", "0.5.0.post1", "0.11.0rc1"): nearly every
    # bound and installed version, read without compiling the grammar below (the largest
    # regex of a start, ~2 ms; issue 9). Anything else takes the full grammar.
    return _normal_form(plain) or _full_grammar(plain, text)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _normal_form(text: str) -> Parsed | None:
    rest, dev, post, pre = text, None, None, None
    head, sep, tail = rest.rpartition(".dev")
    if sep and _digits(tail):
        rest, dev = head, int(tail)
    head, sep, tail = rest.rpartition(".post")
    if sep and _digits(tail):
        rest, post = head, int(tail)
    for label in ("rc", "a", "b"):
        head, sep, tail = rest.rpartition(label)
        if sep and _digits(tail):
            rest, pre = head, (_PRE[label], int(tail))
            break
    parts = rest.split(".")
    if not all(_digits(p) for p in parts):
        return None
    return Parsed(0, tuple(int(p) for p in parts), pre, post, dev)


def _full_grammar(plain: str, text: str) -> Parsed:
    m = re.match(_VERSION, plain, re.IGNORECASE)
    if m is None:
        raise ValueError(f"not a PEP 440 version: {text!r}")
    pre = (_PRE[m["pre_l"].lower()], int(m["pre_n"] or 0)) if m["pre_l"] else None
    if m["post_n1"] is not None:
        post: int | None = int(m["post_n1"])
    else:
        post = int(m["post_n2"] or 0) if m["post_n2"] is not None else None
    dev = int(m["dev_n"] or 0) if m["dev_n"] is not None else None
    return Parsed(int(m["epoch"] or 0), tuple(int(p) for p in m["release"].split(".")),
                  pre, post, dev)


def version_key(text: str) -> tuple[Any, ...]:
    return parse_version(text).key


def _one(op: str, bound: str, v: Parsed) -> bool:
    b = parse_version(bound)
    vk, bk = v.key, b.key
    same = vk[:2] == bk[:2]  # same epoch and (trimmed) release: V's own family
    if op == "<":
        # <V excludes V's pre-, dev- and post-family unless V is itself a pre-release.
        if not same or b.is_pre:
            return vk < bk
        if b.post is None:
            return False
        return vk < bk and not (v.dev is not None and v.post == b.post and v.pre == b.pre)
    if op == "<=":
        return vk <= bk
    if op == ">":
        # >V excludes the post-releases of a final or pre-release V (they share V's pre).
        if not same or b.dev is not None or b.post is not None:
            return vk > bk
        return vk > bk and v.pre != b.pre
    if op == ">=":
        return vk >= bk
    if op == "==":
        return vk == bk
    if op == "!=":
        return vk != bk
    raise ValueError(f"unsupported specifier operator {op!r}")


_SPEC = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*([^\s,]+)\s*$")


def specifier_contains(spec: str, version: str) -> bool:
    """`version` is inside every clause of the comma-separated specifier (local labels ignored,
    pre-releases included)."""
    v = parse_version(version.split("+", 1)[0])
    for clause in spec.split(","):
        m = _SPEC.match(clause)
        if m is None:
            raise ValueError(f"unsupported specifier clause {clause!r} in {spec!r}")
        if not _one(m.group(1), m.group(2), v):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Data

def fingerprint(data: bytes) -> str:
    """Change detection of the TOML against its compiled index (not a security boundary:
    whoever can write the package's files needs no forged index). zlib, not hashlib: hashlib
    loads OpenSSL, a few MiB on every start."""
    import zlib

    return f"{len(data)}:{zlib.crc32(data):08x}"


def load(path: str = DATA) -> tuple[dict[str, Any], ...]:
    """Every [[advisory]] table, from the compiled index when it is current."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if path == DATA:
        try:
            from vllm_secure_launch.surface.data import advisories_index as index
        except ImportError:
            index = None  # type: ignore[assignment]
        if index is not None and fingerprint(raw) == index.FINGERPRINT:
            return index.ADVISORIES
    import tomllib

    doc = tomllib.loads(raw.decode("utf-8"))
    return tuple(doc.get("advisory", ()))


# ---------------------------------------------------------------------------------------------
# Conditions: expr := term {"|" term}; term := factor {"&" factor}; factor := "!" factor |
# "(" expr ")" | atom. An atom the evaluator cannot decide counts as true (fail closed).

_TOKEN = re.compile(r"\s*(\(|\)|!|&|\||[^\s()!&|]+)")


def evaluate(condition: str, atom: Callable[[str, str], bool | None]) -> bool:
    tokens = _TOKEN.findall(condition)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return str(tokens[pos - 1])

    def expr() -> bool:
        value = term()
        while peek() == "|":
            take()
            value = term() or value
        return value

    def term() -> bool:
        value = factor()
        while peek() == "&":
            take()
            value = factor() and value
        return value

    def factor() -> bool:
        tok = take()
        if tok == "!":
            return not factor()
        if tok == "(":
            value = expr()
            if take() != ")":
                raise ValueError(f"unbalanced parentheses in {condition!r}")
            return value
        kind, _, arg = tok.partition(":")
        answer = atom(kind, arg)
        return True if answer is None else answer

    result = expr()
    if pos != len(tokens):
        raise ValueError(f"trailing tokens in condition {condition!r}")
    return result


@record
class Match:
    advisory: Mapping[str, Any]
    distribution: str
    version: str

    @property
    def blocks(self) -> bool:
        a = self.advisory
        return a.get("severity") == "critical" or bool(a.get("network"))


def matches(packages: Mapping[str, str], atom: Callable[[str, str], bool | None],
            data: Sequence[Mapping[str, Any]] | None = None) -> list[Match]:
    """Advisories whose distribution is installed in an affected version and whose condition
    holds for this plan."""
    out = []
    for adv in load() if data is None else data:
        for dist in adv.get("distributions") or [adv["package"]]:
            version = packages.get(dist)
            if version is None:
                continue
            try:
                hit = specifier_contains(adv["affected"], version)
            except ValueError:
                hit = True  # an installed version we cannot read is not a checked one
            if hit and evaluate(adv.get("condition", "always"), atom):
                out.append(Match(adv, dist, version))
    return out
