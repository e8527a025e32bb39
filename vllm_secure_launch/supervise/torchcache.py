"""Keep torch's *default* cache directory persistent while vLLM's TMPDIR is the fresh run dir.

torch writes its precompiled C++ headers (~150 MB, several seconds of g++ on every start that
does not find them) to `default_cache_dir()` = `$TMPDIR/torchinductor_$USER`, ignoring
TORCHINDUCTOR_CACHE_DIR (torch/_inductor/codecache.py `_HEADER_DIR`: "these headers need to be
global"). The launcher points TMPDIR at the private per-run directory, so without this every
start rebuilt them (and left 150 MB behind in the run directory), which is most of what `serve`
cost over bare vLLM. The link makes that one name inside the private run directory lead to the
persistent, private TORCHINDUCTOR_CACHE_DIR of the plan; nothing else of TMPDIR persists.

Only a directory that is this user's alone is linked: owned by the effective uid, no group or
other write bit, and not inside the run directory itself. Otherwise nothing is linked and torch
rebuilds its headers in the run directory, as before (slower, never less private).
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from collections.abc import Mapping

# getpass.getuser()'s order: torch calls it in vLLM's processes, with vLLM's environment.
USER_VARS = ("LOGNAME", "USER", "LNAME", "USERNAME")


def torch_user(env: Mapping[str, str], uid: int) -> str:
    """The user name torch puts in `torchinductor_<name>`, sanitised as torch does."""
    name = next((env[v] for v in USER_VARS if env.get(v)), "")
    if not name:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = f"uid_{uid}"
    return re.sub(r'[\\/:*?"<>|]', "_", name)


def link_target(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(link path, target) when the plan gives vLLM a private TMPDIR and a persistent inductor
    cache outside it; None otherwise (pure)."""
    tmp, cache = env.get("TMPDIR", ""), env.get("TORCHINDUCTOR_CACHE_DIR", "")
    if not (tmp.startswith("/") and cache.startswith("/")):
        return None
    tmp, cache = os.path.normpath(tmp), os.path.normpath(cache)
    if cache == tmp or cache.startswith(tmp + "/"):
        return None  # the cache already lives (and dies) in the run directory
    return os.path.join(tmp, "torchinductor_" + torch_user(env, os.getuid())), cache


def _private_dir(path: str) -> bool:
    """Create `path` 0700 if missing; True only if it is a directory this user alone can write."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def link_default_cache(env: Mapping[str, str]) -> str | None:
    """After the private run directory exists, before vLLM starts: make torch's default cache
    name in it a link to the persistent inductor cache. Returns the target linked, else None."""
    found = link_target(env)
    if found is None:
        return None
    link, target = found
    if not _private_dir(target):
        return None
    try:
        os.symlink(target, link)
    except OSError:  # already there (a reused run directory) or not creatable: torch copes
        return None
    return target
