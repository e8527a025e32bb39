"""A private cache of passed guard self-tests, so `serve` pays the ~2 s child interpreter that
imports torch once per environment, not at every start.

An entry is the sha256 of everything the self-test's outcome depends on:

* the interpreter: its path, and the real file's path, inode, size and mtime;
* torch, where the target interpreter finds it with the child's environment (found without
  importing it): path, inode, size, mtime of `torch/__init__.py`, the content of
  `torch/version.py`, and the `torch-*.dist-info` names beside the package;
* the installed hook: the content of the hook module and the `.pth` as they are on disk now;
* the child environment that matters: the allowed set (VSL_TCPSTORE_ALLOWED and the
  content of the VSL_TCPSTORE_ALLOWED_FILE), PYTHON*, LD_*, TORCH_* variables, and the
  interpreter options vLLM's children get;
* this launcher: its version and the self-test program.

Only passes are stored: a failure always runs the test again, so a fix is seen at once. When
torch cannot be found nothing is cached (the key could not see a change there). The file
holds key hashes and the pass's torch version and allowed addresses, never environment
values.

The cache is trusted only when the file and its directory belong to this user (or root), are
not writable by group or others, and the file is a regular file reached without a symlink;
anything else is a miss and the file is left alone (never overwritten). A corrupt file is a
miss and is replaced. Writes go through files.write_atomic (mode 0600).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping, Sequence

from vllm_secure_launch import __version__
from vllm_secure_launch.files import write_atomic

CACHE_FILE = "guard-selftest.json"
FORMAT = 1
MAX_ENTRIES = 32
_ENV_PREFIXES = ("PYTHON", "LD_", "TORCH_")


def default_dir(environ: Mapping[str, str], euid: int | None = None) -> str:
    """root: /var/cache/vllm-secure-launch; others: $XDG_CACHE_HOME or ~/.cache, then
    vllm-secure-launch. VSL_CACHE_DIR overrides both."""
    if environ.get("VSL_CACHE_DIR"):
        return environ["VSL_CACHE_DIR"]
    if (os.geteuid() if euid is None else euid) == 0:
        return "/var/cache/vllm-secure-launch"
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vllm-secure-launch")


def _stat_id(path: str) -> list[object] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [path, st.st_ino, st.st_size, st.st_mtime_ns]


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def _torch_id(torch_init: str) -> list[object] | None:
    """torch/__init__.py, torch/version.py and the torch-*.dist-info beside the package."""
    pkg = os.path.dirname(torch_init)
    init, version = _stat_id(torch_init), _read(os.path.join(pkg, "version.py"))
    if not torch_init or init is None or version is None:
        return None
    parent = os.path.dirname(pkg)
    try:
        dists = sorted(n for n in os.listdir(parent)
                       if n.startswith("torch-") and n.endswith(".dist-info"))
    except OSError:
        return None
    return [init, version, dists]


def key(python: str, extra_args: Sequence[str], env: Mapping[str, str], torch_init: str,
        hook_paths: Sequence[str], selftest_code: str, allowed_file_env: str) -> str | None:
    """The cache key, or None when something it needs cannot be read (then: no caching).
    `torch_init`: where the target interpreter finds torch/__init__.py ("" = not found)."""
    torch = _torch_id(torch_init) if torch_init else None
    interp = _stat_id(os.path.realpath(python))
    hooks = [_read(p) for p in hook_paths]
    if torch is None or interp is None or None in hooks:
        return None
    relevant = {k: v for k, v in env.items() if k.startswith(_ENV_PREFIXES)
                or k.startswith("VSL_TCPSTORE_")}
    allowed_file = env.get(allowed_file_env)
    parts = {
        "launcher": __version__, "code": hashlib.sha256(selftest_code.encode()).hexdigest(),
        "python": [python, interp, list(extra_args)], "torch": torch, "hooks": hooks,
        "env": sorted(relevant.items()),
        "allowed_file": _read(allowed_file) if allowed_file else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _trusted(st: os.stat_result, euid: int) -> bool:
    return st.st_uid in (euid, 0) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _load(path: str, euid: int) -> tuple[dict[str, object] | None, bool]:
    """(entries or None, may_write). A missing or corrupt file: ({}, True); an unsafe one
    (wrong owner, group/world-writable, a symlink, not a regular file): (None, False)."""
    try:
        if not _trusted(os.stat(os.path.dirname(path)), euid):
            return None, False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}, True
    except OSError:  # ELOOP: a symlink; EACCES: not ours
        return None, False
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or not _trusted(st, euid):
            return None, False
        raw = fh.read(1 << 20)
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}, True
    entries = doc.get("entries") if isinstance(doc, dict) and doc.get("format") == FORMAT else None
    return (dict(entries) if isinstance(entries, dict) else {}), True


def lookup(cache_dir: str, entry_key: str, euid: int | None = None) -> Mapping[str, object] | None:
    """The stored pass for this key, or None (miss, corrupt or untrusted file)."""
    entries, _ = _load(os.path.join(cache_dir, CACHE_FILE),
                       os.geteuid() if euid is None else euid)
    hit = (entries or {}).get(entry_key)
    return hit if isinstance(hit, dict) else None


def store(cache_dir: str, entry_key: str, value: Mapping[str, object], now: float,
          euid: int | None = None) -> bool:
    """Record a pass; False when the cache cannot or must not be written (never an error: the
    self-test simply runs again next time)."""
    uid = os.geteuid() if euid is None else euid
    path = os.path.join(cache_dir, CACHE_FILE)
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    except OSError:
        return False
    entries, may_write = _load(path, uid)
    if not may_write or entries is None:
        return False
    entries[entry_key] = {**value, "at": now}
    newest = sorted(entries.items(), key=lambda kv: _at(kv[1]), reverse=True)[:MAX_ENTRIES]
    try:
        write_atomic(path, json.dumps({"format": FORMAT, "entries": dict(newest)},
                                      sort_keys=True) + "\n", mode=0o600)
    except OSError:
        return False
    return True


def _at(value: object) -> float:
    at = value.get("at") if isinstance(value, dict) else None
    return float(at) if isinstance(at, (int, float)) else 0.0
