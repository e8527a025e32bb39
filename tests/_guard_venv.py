"""Throwaway virtual environments for the TCPStore guard tests and benchmark.

The guard is installed the way the launcher installs it (guard_install.ensure_installed) into a
fresh venv of the same base interpreter; a plain path line in a second `.pth` makes the shared
venv's packages (torch, psutil) importable there. So the tests never add or remove files in
the shared venv, and each venv can be broken on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Mapping, Sequence

from vllm_secure_launch.guard import install as gi

SCENARIOS = str(Path(__file__).with_name("_tcpstore_scenarios.py"))


def base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def make_venv(dest: Path, *, install_guard: bool = True) -> str:
    """Create a venv at `dest` that sees the shared venv's packages; return its python."""
    subprocess.run([base_python(), "-m", "venv", "--without-pip", str(dest)], check=True,
                   capture_output=True)
    python = str(dest / "bin" / "python")
    sp = Path(gi.site_packages_of(python))
    # 'zz' sorts after the guard's .pth; a bare path line only extends sys.path.
    (sp / "zz_vslts_shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    if install_guard:
        gi.ensure_installed(python)
    return python


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without any guard variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k not in (gi.ENV_ALLOWED, gi.ENV_ALLOWED_FILE, "PYTHONPATH", "USE_LIBUV")}
    env.update(extra or {})
    return env


def run_py(python: str, code: str, env: Mapping[str, str], args: Sequence[str] = (),
           timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([python, *args, "-c", code], env=dict(env), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd="/")
