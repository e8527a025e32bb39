"""Special files and encodings as inputs end in a clear error and a documented exit code,
within a bounded time (issue 10): a FIFO (would block), a directory, /dev/zero (endless), non-UTF-8
content, a NUL byte in a path, deeply nested JSON/YAML/TOML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_secure_launch.files import FileProblem, read_text, write_atomic

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("VSL_", "VLLM_"))}
    full.update(VLLM_API_KEY="k" * 32, VLLM_CPU_KVCACHE_SPACE="1", PYTHONPATH=str(ROOT))
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "vllm_secure_launch.cli.main", *args],
                          capture_output=True, text=True, env=full, timeout=30)


@pytest.fixture
def specials(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"model: caf\xe9\n")
    return {"fifo": str(fifo), "dir": str(tmp_path), "zero": "/dev/zero", "latin1": str(bad)}


@pytest.mark.parametrize("kind,words", [("fifo", "FIFO"), ("dir", "directory"),
                                        ("zero", "device"), ("latin1", "not UTF-8")])
def test_read_bounded_refuses_before_blocking(specials, kind, words):
    with pytest.raises(FileProblem) as exc:
        read_text(specials[kind])
    assert words in exc.value.what


def test_read_bounded_caps_size(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(FileProblem, match="more than the 1024"):
        read_text(str(big), limit=1024)


def test_nul_in_path():
    with pytest.raises(FileProblem, match="NUL"):
        read_text("a\0b")


@pytest.mark.integration  # the launcher CLI as a child
@pytest.mark.parametrize("kind", ["fifo", "dir", "zero", "latin1"])
def test_policy_special_file_is_a_usage_error(specials, kind):
    r = cli("--policy", specials[kind], "check", "m")
    assert r.returncode == 2 and "policy file" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.integration  # the launcher CLI as a child
@pytest.mark.parametrize("kind", ["fifo", "dir", "zero", "latin1"])
def test_config_special_file_is_a_usage_error(specials, kind):
    r = cli("check", "--config", specials[kind])
    assert r.returncode == 2 and "--config" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.integration  # the launcher CLI as a child
@pytest.mark.parametrize("kind", ["fifo", "dir", "zero"])
def test_key_file_special_file_refuses(specials, kind):
    r = cli("--api-key-file", specials[kind], "check", "m")
    assert r.returncode == 78 and "VSL202" in r.stdout


@pytest.mark.integration  # the launcher CLI as a child
def test_deep_nesting_is_a_usage_error(tmp_path):
    deep = "[" * 50000 + "]" * 50000
    (tmp_path / "deep.yaml").write_text("model: m\nx: " + deep + "\n")
    (tmp_path / "deep.toml").write_text("a = " + deep + "\n")
    r = cli("check", "--config", str(tmp_path / "deep.yaml"))
    assert r.returncode == 2 and "nests too deeply" in r.stderr
    r = cli("--policy", str(tmp_path / "deep.toml"), "check", "m")
    assert r.returncode == 2 and "nests too deeply" in r.stderr
    r = cli("check", "m", "--speculative-config", '{"a": ' + deep + "}")
    assert r.returncode in (0, 2, 78) and "internal error" not in r.stderr, r.stderr


def test_write_atomic_never_follows_a_planted_symlink(tmp_path):
    """The report used to go through `<path>.tmp-<pid>`: a symlink planted there was followed
    and its target overwritten. Now a fresh mkstemp name is used and the rename replaces a link
    at the report path itself."""
    victim = tmp_path / "victim"
    victim.write_text("keep")
    report = tmp_path / "report.json"
    for pid in range(os.getpid() - 5, os.getpid() + 50):
        os.symlink(victim, f"{report}.tmp-{pid}")
    os.symlink(victim, report)
    write_atomic(str(report), "{}")
    assert victim.read_text() == "keep"
    assert not report.is_symlink() and report.read_text() == "{}"
    assert oct(report.stat().st_mode & 0o777) == "0o600"
