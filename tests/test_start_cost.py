"""What a dry run loads (issue 9): the start-up cost stays near the click+psutil floor because
the planning path does not import the gate middleware, OpenSSL (hashlib), tempfile, logging,
getpass or the idna codec, and does not parse the flag table's JSON. The ratios themselves are
measured by `scripts/bench dryrun`, never timed here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NOT_ON_THE_DRY_RUN_PATH = ("vllm_secure_launch.gate.middleware", "_hashlib", "hashlib", "hmac",
                           "tempfile", "logging", "getpass", "encodings.idna", "pathlib")

CODE = """
import json, sys
from vllm_secure_launch.surface import flags
calls = []
real = json.loads
def counting(*a, **k):
    calls.append(len(a[0]) if a else 0)
    return real(*a, **k)
json.loads = counting
from vllm_secure_launch.cli import main
sys.argv = ['vllm-secure-launch', '--dry-run', '--format', 'json', 'serve', 'm', '-tp', '1']
try:
    main.main()
except SystemExit:
    pass
sys.stderr.write('\\nMODS=' + json.dumps(sorted(sys.modules)) + '\\nBIGGEST_JSON=' +
                 str(max(calls, default=0)) + '\\n')
"""


@pytest.mark.integration  # a child interpreter
def test_dry_run_loads_nothing_it_does_not_need():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "VLLM_API_KEY": "k",
                            "VLLM_CPU_KVCACHE_SPACE": "1",
                            **{k: v for k, v in __import__("os").environ.items()
                               if k in ("PYTHONPATH", "HOME")}})
    mods = set(json.loads(r.stderr.split("MODS=", 1)[1].splitlines()[0]))
    assert "vllm_secure_launch.pipeline" in mods, r.stderr[-2000:]  # it did plan
    loaded = sorted(m for m in NOT_ON_THE_DRY_RUN_PATH if m in mods)
    assert not loaded, f"the dry run imported {loaded}"
    # The flag table (73 KB of JSON) is never parsed at start; small documents may be.
    assert int(r.stderr.split("BIGGEST_JSON=", 1)[1].split()[0]) < 10_000
