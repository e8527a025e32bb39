"""Planning finds libnftables without loading it (issue 9: ctypes + dlopen cost every dry run
~1 MiB and a few ms); the keeper still loads it before vLLM starts and refuses when it cannot.
A library the loader finds some other way is still found by the dlopen fallback."""

from __future__ import annotations

from pathlib import Path

from vllm_secure_launch.firewall import enforce


def _lib(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / enforce.NFT_SONAME).write_bytes(b"\x7fELF")


def test_found_through_ld_so_conf_d(tmp_path: Path) -> None:
    (tmp_path / "etc/ld.so.conf.d").mkdir(parents=True)
    (tmp_path / "etc/ld.so.conf.d/x.conf").write_text("# comment\n/opt/nft/lib\n")
    assert not enforce.library_on_disk({}, str(tmp_path))
    _lib(tmp_path / "opt/nft/lib")
    assert enforce.library_on_disk({}, str(tmp_path))


def test_found_through_ld_library_path_and_system_dirs(tmp_path: Path) -> None:
    _lib(tmp_path / "custom")
    assert enforce.library_on_disk({"LD_LIBRARY_PATH": "/custom:relative"}, str(tmp_path))
    other = tmp_path / "other"
    _lib(other / "usr/lib")
    assert enforce.library_on_disk({}, str(other))


def test_not_on_disk_falls_back_to_loading_it(monkeypatch) -> None:
    from vllm_secure_launch.firewall import holder

    calls = []
    monkeypatch.setattr(enforce, "has_net_admin", lambda: True)
    monkeypatch.setattr(enforce, "library_on_disk", lambda: False)

    def missing():
        calls.append(1)
        raise holder.NftError("libnftables is not installed")

    monkeypatch.setattr(holder, "library", missing)
    why = enforce.unusable()
    if why is not None and "cgroup" not in why:  # a host without a writable cgroup stops earlier
        assert calls and "libnftables" in why
