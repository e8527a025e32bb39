"""startup.py: the console script pauses the cyclic garbage collector while the launcher starts
and freezes what is left at exit (issue 9: ~20 % of a dry run's instructions); the supervisor
resumes collection for its long run; nothing else that imports the package is affected."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_secure_launch import startup

# child interpreters (the console entry, a dry run): the full suite, not the fast lane
pytestmark = pytest.mark.integration


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def test_console_script_pauses_collection_and_other_importers_do_not():
    assert _python("import vllm_secure_launch.cli.console, gc; print(gc.isenabled())") == "False"
    # tests, `python -m vllm_secure_launch.cli.main`, and vLLM's processes loading the gate
    assert _python("import vllm_secure_launch.cli.main, vllm_secure_launch.gate.middleware, "
                   "gc; print(gc.isenabled())") == "True"


def test_resume_freezes_what_starting_made_and_collects_again():
    assert _python("from vllm_secure_launch import startup; import gc\n"
                   "startup.pause(); junk = [[] for _ in range(1000)]\n"
                   "startup.resume(); startup.resume()\n"
                   "print(gc.isenabled(), gc.get_freeze_count() > 1000)") == "True True"
    was = gc.isenabled()
    startup.resume()  # a no-op where nothing paused collection (this test process)
    assert gc.isenabled() is was and gc.get_freeze_count() == 0


def test_the_installed_console_script_is_this_entry_point():
    script = Path(sys.executable).with_name("vllm-secure-launch")
    if not script.is_file():  # not installed into this interpreter's environment
        return
    assert "vllm_secure_launch.cli.console import main" in script.read_text()


def test_a_dry_run_through_the_console_entry_exits_cleanly(tmp_path):
    env = {**os.environ, "VLLM_API_KEY": "k" * 32, "VLLM_CPU_KVCACHE_SPACE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from vllm_secure_launch.cli.console import main; "
         "sys.argv = ['vllm-secure-launch', '--dry-run', 'serve', 'm', '--max-model-len', "
         "'256']; main()"], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("decision: start") and out.stderr == ""
