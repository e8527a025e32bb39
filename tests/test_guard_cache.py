"""The guard self-test cache (guard/cache.py, install.cached_self_test): a pass is reused while
nothing it depends on changed, any change is a miss, and a corrupt or unsafe cache file is never
trusted.

The self-test itself (a child importing torch, ~2 s) is replaced by a recording stand-in here:
these tests pin the cache's decisions, and tests/test_tcpstore_guard_torch.py runs the real
self-test through the cache. torch is a small fake package in a temporary directory that the
real interpreter finds through PYTHONPATH (found with importlib's find_spec, never imported).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from vllm_secure_launch.guard import cache
from vllm_secure_launch.guard import install as gi

ALLOWED = {"VSL_TCPSTORE_ALLOWED": "127.0.0.1,::1"}


@pytest.fixture()
def world(tmp_path, monkeypatch):
    """A fake torch on PYTHONPATH, installed hook files, a private cache dir, and a recording
    stand-in for the self-test child."""
    lib = tmp_path / "lib"
    (lib / "torch").mkdir(parents=True)
    (lib / "torch" / "__init__.py").write_text("raise ImportError('never imported')\n")
    (lib / "torch" / "version.py").write_text("__version__ = '2.13.0+cpu'\n")
    (lib / "torch-2.13.0+cpu.dist-info").mkdir()
    sp = tmp_path / "sp"
    sp.mkdir()
    (sp / f"{gi.MODULE_NAME}.py").write_text(gi.module_source())
    (sp / gi.PTH_NAME).write_text(gi.pth_line())
    installed = gi.InstallResult(str(sp), str(sp / gi.PTH_NAME), str(sp / f"{gi.MODULE_NAME}.py"),
                                 False, "d")
    cache_dir = tmp_path / "cache"
    runs: list[dict] = []

    def fake_self_test(python, env, *, timeout=180.0, extra_args=()):
        runs.append(dict(env))
        ok = "BREAK" not in env
        return gi.SelfTestResult(ok, "" if ok else "broken", python, torch_version="2.13.0+cpu",
                                 guarded=ok, hook_loaded=True, refuses_wildcard=ok,
                                 allowed=("127.0.0.1", "::1"))

    monkeypatch.setattr(gi, "self_test", fake_self_test)
    env = {**ALLOWED, "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(lib)}

    class World:
        pass

    w = World()
    w.lib, w.sp, w.installed, w.cache_dir, w.runs, w.env = lib, sp, installed, cache_dir, runs, env

    def test(env=None, **kw):
        return gi.cached_self_test(sys.executable, env if env is not None else w.env,
                                   w.installed, cache_dir=str(w.cache_dir), **kw)

    w.test = test
    return w


def test_a_pass_is_reused_on_the_second_start(world):
    first = world.test()
    second = world.test()
    assert first.ok and second.ok
    assert len(world.runs) == 1, "the second start must not run the self-test child"
    assert second.detail == {"cached": True} and second.torch_version == "2.13.0+cpu"
    assert second.allowed == ("127.0.0.1", "::1")
    path = world.cache_dir / cache.CACHE_FILE
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (world.cache_dir.stat().st_mode & 0o077) == 0
    # The key is a hash: environment values (here PYTHONPATH) are not in the file.
    assert str(world.lib) not in path.read_text()


@pytest.mark.parametrize("change", ["hook", "pth", "torch_version", "torch_dist", "allowed",
                                    "pythonpath_var", "ld_preload", "extra_args"])
def test_any_change_it_depends_on_is_a_miss(world, change):
    world.test()
    env = dict(world.env)
    kw = {}
    if change == "hook":
        Path(world.installed.module_path).write_text(gi.module_source() + "# changed\n")
    elif change == "pth":
        Path(world.installed.pth_path).write_text(gi.pth_line() + "\n")
    elif change == "torch_version":
        (world.lib / "torch" / "version.py").write_text("__version__ = '2.14.0+cpu'\n")
    elif change == "torch_dist":
        (world.lib / "torch-2.13.0+cpu.dist-info").rename(world.lib / "torch-2.14.0.dist-info")
    elif change == "allowed":
        env["VSL_TCPSTORE_ALLOWED"] = "10.0.0.5,127.0.0.1,::1"
    elif change == "pythonpath_var":
        env["PYTHONNOUSERSITE"] = "1"
    elif change == "ld_preload":
        env["LD_PRELOAD"] = "/lib/libfoo.so"
    elif change == "extra_args":
        kw["extra_args"] = ("-I",)
    world.test(env, **kw)
    assert len(world.runs) == 2, f"a changed {change} must run the self-test again"


def test_a_different_interpreter_is_a_miss(world, tmp_path):
    world.test()
    link = tmp_path / "python-other"
    link.symlink_to(sys.executable)
    gi.cached_self_test(str(link), world.env, world.installed, cache_dir=str(world.cache_dir))
    assert len(world.runs) == 2


def test_an_unrelated_variable_does_not_invalidate(world):
    world.test()
    world.test({**world.env, "HF_HOME": "/somewhere"})
    assert len(world.runs) == 1


def test_failures_are_never_cached(world):
    env = {**world.env, "BREAK": "1"}
    assert not world.test(env).ok
    assert not world.test(env).ok
    assert len(world.runs) == 2


def test_no_torch_found_means_no_cache(world):
    # -S: not even this venv's site-packages, and no torch on PYTHONPATH.
    env = {**world.env, "PYTHONPATH": str(world.sp)}
    if gi.torch_origin(sys.executable, env, ("-S",)):
        pytest.skip("this interpreter finds a torch even without site")
    world.test(env, extra_args=("-S",))
    world.test(env, extra_args=("-S",))
    assert len(world.runs) == 2 and not (world.cache_dir / cache.CACHE_FILE).exists()


def test_cache_dir_none_always_runs(world):
    for _ in range(2):
        gi.cached_self_test(sys.executable, world.env, world.installed, cache_dir=None)
    assert len(world.runs) == 2


@pytest.mark.parametrize("content", ["{not json", "[]", '{"format": 99, "entries": {}}',
                                     '{"format": 1, "entries": []}', "\x00\xff"])
def test_a_corrupt_cache_file_is_a_miss_and_is_replaced(world, content):
    world.cache_dir.mkdir(mode=0o700)
    path = world.cache_dir / cache.CACHE_FILE
    path.write_text(content)
    path.chmod(0o600)
    assert world.test().ok
    assert len(world.runs) == 1
    assert json.loads(path.read_text())["format"] == cache.FORMAT
    world.test()
    assert len(world.runs) == 1  # the replaced file now serves the hit


def _prime_then(world, damage):
    world.test()
    assert len(world.runs) == 1
    damage(world.cache_dir / cache.CACHE_FILE)
    world.test()
    return len(world.runs)


def test_a_world_or_group_writable_cache_file_is_not_trusted(world):
    def damage(path):
        path.chmod(0o666)

    assert _prime_then(world, damage) == 2
    assert (world.cache_dir / cache.CACHE_FILE).stat().st_mode & 0o777 == 0o666, \
        "an unsafe file is left alone, not rewritten"


def test_a_writable_cache_directory_is_not_trusted(world):
    def damage(path):
        path.parent.chmod(0o777)

    assert _prime_then(world, damage) == 2


def test_a_symlinked_cache_file_is_not_trusted(world, tmp_path):
    def damage(path):
        target = tmp_path / "elsewhere.json"
        target.write_text(path.read_text())
        target.chmod(0o600)
        path.unlink()
        path.symlink_to(target)

    assert _prime_then(world, damage) == 2


def test_a_cache_file_of_another_owner_is_not_trusted(world):
    """Ownership is judged against the effective uid: seen as another (non-root) user, the
    file written by this one is a miss."""
    world.test()
    key_hit = cache.lookup(str(world.cache_dir), _only_key(world))
    assert key_hit is not None
    other = os.geteuid() + 4242
    if os.geteuid() == 0:
        # Root-owned files are trusted by everyone; chown to another user to test the rule.
        os.chown(world.cache_dir / cache.CACHE_FILE, other, -1)
        assert cache.lookup(str(world.cache_dir), _only_key(world)) is None
    else:
        assert cache.lookup(str(world.cache_dir), _only_key(world), euid=other) is None


def _only_key(world) -> str:
    doc = json.loads((world.cache_dir / cache.CACHE_FILE).read_text())
    (k,) = doc["entries"]
    return k


def test_default_dir_is_per_user_or_system(monkeypatch):
    assert cache.default_dir({"VSL_CACHE_DIR": "/x"}) == "/x"
    assert cache.default_dir({}, euid=0) == "/var/cache/vllm-secure-launch"
    assert cache.default_dir({"XDG_CACHE_HOME": "/home/u/.c"}, euid=1000) == \
        "/home/u/.c/vllm-secure-launch"
