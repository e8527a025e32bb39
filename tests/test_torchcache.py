"""supervise/torchcache.py: torch's default cache name inside the fresh private TMPDIR leads to
the persistent private inductor cache, so its precompiled headers are not rebuilt per start."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vllm_secure_launch.supervise import torchcache


def _env(tmp: Path, cache: Path, **extra: str) -> dict[str, str]:
    return {"TMPDIR": str(tmp), "TORCHINDUCTOR_CACHE_DIR": str(cache), "USER": "svc", **extra}


def test_links_torch_default_dir_to_the_persistent_cache(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    cache = tmp_path / "home" / "cache" / "torchinductor"
    env = _env(run, cache)
    assert torchcache.link_default_cache(env) == str(cache)
    link = run / "torchinductor_svc"
    assert link.is_symlink() and os.readlink(link) == str(cache)
    assert (cache.stat().st_mode & 0o777) == 0o700
    # What torch computes in vLLM's process lands in the persistent directory.
    old = tempfile.tempdir
    try:
        tempfile.tempdir = None
        os.environ["TMPDIR"], saved = str(run), os.environ.get("TMPDIR")
        assert os.path.realpath(os.path.join(tempfile.gettempdir(), "torchinductor_svc")) \
            == os.path.realpath(cache)
    finally:
        tempfile.tempdir = old
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved


def test_no_link_to_a_directory_others_can_write(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(0o777)
    assert torchcache.link_default_cache(_env(run, cache)) is None
    assert not (run / "torchinductor_svc").exists()


def test_no_link_when_the_cache_already_lives_in_the_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    assert torchcache.link_target(_env(run, run / "torchinductor")) is None
    assert torchcache.link_target({"TMPDIR": str(run)}) is None
    assert torchcache.link_target({"TMPDIR": "rel", "TORCHINDUCTOR_CACHE_DIR": "/x"}) is None


def test_an_existing_entry_is_left_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "torchinductor_svc").mkdir(parents=True)
    assert torchcache.link_default_cache(_env(run, tmp_path / "cache")) is None
    assert not (run / "torchinductor_svc").is_symlink()


def test_user_name_as_getpass_finds_it_and_sanitised_as_torch_does() -> None:
    assert torchcache.torch_user({"USER": "b", "LOGNAME": "a"}, os.getuid()) == "a"
    assert torchcache.torch_user({"USERNAME": "d:o/m"}, os.getuid()) == "d_o_m"
    import pwd

    assert torchcache.torch_user({}, os.getuid()) == pwd.getpwuid(os.getuid()).pw_name
