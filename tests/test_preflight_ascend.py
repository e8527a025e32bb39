"""Ascend preflight against a fake machine tree and an `npu-smi` stand-in.

Narrow fakes at the boundary, because no NPU exists here: /dev and /usr/local/Ascend are temp
directories, package metadata is a temp site dir, and `npu-smi` on PATH is
tests/fakes/npu-smi, which prints recorded real outputs (healthy and failing, see
tests/fakes/npu_smi/README.md) or hangs. The subprocess call, its timeout, the table parser
and every judgement are the real code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.hosts import (
    ascend_dev,
    ascend_root,
    make_dev,
    make_dist,
    npu_smi_bin,
    npu_smi_calls,
)
from vllm_secure_launch.findings import Severity
from vllm_secure_launch.preflight import HostView, PreflightRequest, run
from vllm_secure_launch.preflight.ascend import (
    parse_npu_smi_info,
    parse_npu_smi_mapping,
    parse_visible,
)
from vllm_secure_launch.surface.args import ServeArgs

FAKES = Path(__file__).resolve().parent / "fakes" / "npu_smi"
ASCEND = (("vllm", "0.11.0"), ("vllm-ascend", "0.11.0rc1"))
MINDSPORE = (("vllm", "0.11.0"), ("vllm-mindspore", "0.4.0"))


def ascend(tmp_path: Path, scenario: str | None = "healthy", *, chips: int = 4,
           control: bool = True, values: dict | None = None, environ: dict | None = None,
           engines=ASCEND, version_info: bool = True, toolkit: bool = True,
           cann_env: bool = True, timeout: float = 10.0, accelerator: str = "ascend"):
    dev = ascend_dev(tmp_path / "dev", chips, control)
    root = ascend_root(tmp_path / "Ascend", version_info, toolkit)
    bin_dir = npu_smi_bin(tmp_path / "bin", scenario) if scenario else tmp_path / "nobin"
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    for name, version in engines:
        make_dist(site, name, version)
    env = {"PATH": str(bin_dir)}
    if cann_env and toolkit:
        home = root / "ascend-toolkit" / "latest"
        env.update(ASCEND_HOME_PATH=str(home), LD_LIBRARY_PATH=str(home / "lib64"))
    env.update(environ or {})
    host = HostView(dev_root=str(dev), ascend_root=str(root), dist_paths=[str(site)],
                    npu_smi_timeout=timeout)
    args = ServeArgs(model="m", values=values or {})
    report = run(PreflightRequest.from_serve_args(args, env, accelerator), host)
    return report, bin_dir


def ids(report) -> set[str]:
    return {f.rule_id for f in report.findings}


def all_of(report, rule_id: str):
    found = [f for f in report.findings if f.rule_id == rule_id]
    assert found, f"{rule_id} not in {[f.rule_id for f in report.findings]}"
    return found


# -- parsers over the recorded outputs ---------------------------------------------------------


def test_parse_recorded_910b_table():
    table = parse_npu_smi_info((FAKES / "unhealthy_info.txt").read_text())
    assert table.version == "23.0.rc3.3"
    assert [(c.npu, c.chip, c.name, c.health) for c in table.chips] == [
        (0, 0, "910B1", "OK"), (1, 0, "910B1", "Alarm"), (2, 0, "910B1", "Warning"),
        (3, 0, "910B1", "OK")]
    c0 = table.chips[0]
    assert (c0.bus_id, c0.mem_used_mb, c0.mem_total_mb) == ("0000:C1:00.0", 65099, 65536)
    assert c0.processes == [{"pid": 576489, "name": "python", "used_bytes": 60703 * 1024**2}]


def test_parse_recorded_310p_and_910a_layouts():
    p310 = parse_npu_smi_info((FAKES / "310p_info.txt").read_text())
    assert [(c.npu, c.chip, c.name, c.mem_used_mb, c.mem_total_mb) for c in p310.chips] == [
        (6, 0, "310P3", 1839, 21525)]
    a910 = parse_npu_smi_info((FAKES / "910a_info.txt").read_text())
    # HBM (the last pair) is the memory vLLM allocates from, not the DDR Memory-Usage pair
    assert [(c.mem_used_mb, c.mem_total_mb) for c in a910.chips] == [(1365, 32768), (4, 32768)]


def test_parse_recorded_logic_id_mapping_skips_mcu_chips():
    mapping = parse_npu_smi_mapping((FAKES / "healthy_map.txt").read_text())
    assert mapping == {(0, 0): 0, (1, 0): 1, (2, 0): 2, (3, 0): 3}


@pytest.mark.parametrize("value, ok", [
    ("0", [0]), ("0,1,2,3", [0, 1, 2, 3]), ("1,3", [1, 3]),
    ("", None), ("1,0", None), ("0,1,1", None), ("0, 1", None), ("0,,1", None), ("a", None),
    ("0,1,", None), (" 0", None),
])
def test_ascend_rt_visible_devices_is_strict(value, ok):
    assert parse_visible(value)[0] == ok


# -- whole runs --------------------------------------------------------------------------------


def test_healthy_four_npus_pass(tmp_path):
    report, bin_dir = ascend(tmp_path, values={"tensor_parallel_size": "4"})
    assert not report.blocked, report.findings
    assert report.platform == "ascend" and report.engine == "vllm-ascend"
    assert report.vllm_command is None and report.unsupported_flags == ()
    assert [d.id for d in report.devices] == ["npu:0", "npu:1", "npu:2", "npu:3"]
    assert report.devices[1].facts["health"] == "OK"
    assert "driver 24.1.rc2.2" in all_of(report, "VSL551")[0].message
    assert npu_smi_calls(bin_dir) == ["info", "info -m"]


def test_auto_picks_ascend_when_vllm_ascend_is_installed(tmp_path):
    report, _ = ascend(tmp_path, accelerator="auto")
    assert report.platform == "ascend" and "vllm-ascend is installed" in report.selection


def test_missing_device_nodes_are_listed_as_vsl540(tmp_path):
    report, _ = ascend(tmp_path, chips=0, control=False)
    msg = all_of(report, "VSL540")[0].message
    for name in ("davinci<N>", "davinci_manager", "devmm_svm", "hisi_hdc"):
        assert name in msg
    assert report.blocked


def test_one_missing_control_node_is_vsl540(tmp_path):
    make_dev(tmp_path / "dev", [])
    report, _ = ascend(tmp_path, control=False)
    assert "davinci<N>" not in all_of(report, "VSL540")[0].message


@pytest.mark.parametrize("value, words", [
    ("1,0", "not strictly ascending"),
    ("0, 1", "contains spaces"),
    ("", "is empty"),
    ("0,7", "logical ID 7 but only 4"),
])
def test_bad_ascend_rt_visible_devices_is_vsl541(tmp_path, value, words):
    report, _ = ascend(tmp_path, environ={"ASCEND_RT_VISIBLE_DEVICES": value})
    assert words in all_of(report, "VSL541")[0].message and report.blocked


def test_visible_devices_select_logical_ids(tmp_path):
    report, _ = ascend(tmp_path, values={"tensor_parallel_size": "2"},
                       environ={"ASCEND_RT_VISIBLE_DEVICES": "1,3"})
    assert not report.blocked
    assert [d.facts["logical_id"] for d in report.devices] == [1, 3]


def test_too_few_npus_is_vsl515(tmp_path):
    report, _ = ascend(tmp_path, values={"tensor_parallel_size": "8"})
    assert "8 NPU(s) needed" in all_of(report, "VSL515")[0].message


def test_npu_smi_missing_is_vsl542(tmp_path):
    report, _ = ascend(tmp_path, scenario=None)
    assert "VSL542" in ids(report) and report.blocked


def test_broken_driver_stack_is_vsl543_quoting_npu_smi(tmp_path):
    report, _ = ascend(tmp_path, "broken")
    msg = all_of(report, "VSL543")[0].message
    assert "exit status 255" in msg and "dcmi module initialize failed. ret is -8005" in msg
    assert report.blocked


def test_hanging_npu_smi_times_out_as_vsl543(tmp_path):
    report, _ = ascend(tmp_path, "hang", timeout=0.5)
    assert "timed out after 0.5 s" in all_of(report, "VSL543")[0].message


def test_unreadable_table_is_vsl543(tmp_path):
    report, _ = ascend(tmp_path, "garbage")
    assert "no NPU table" in all_of(report, "VSL543")[0].message


def test_without_the_mapping_logical_ids_follow_listing_order(tmp_path):
    report, _ = ascend(tmp_path, "nomap", values={"tensor_parallel_size": "4"})
    assert not report.blocked
    assert [d.facts["logical_id"] for d in report.devices] == [0, 1, 2, 3]


def test_unhealthy_and_busy_npus(tmp_path):
    report, _ = ascend(tmp_path, "unhealthy", values={"tensor_parallel_size": "4"})
    health = {f.subject.split()[0]: f.severity for f in all_of(report, "VSL544")}
    assert health == {"npu:1": Severity.ERROR, "npu:2": Severity.WARNING}
    busy = all_of(report, "VSL550")[0]
    assert busy.subject.startswith("npu:0") and "pid 576489 python (59.3 GiB)" in busy.message
    assert report.blocked


def test_missing_version_info_is_vsl545_warning(tmp_path):
    report, _ = ascend(tmp_path, version_info=False)
    assert all_of(report, "VSL545")[0].severity is Severity.WARNING
    assert not report.blocked


def test_cann_env_missing_is_vsl546_with_env_updates(tmp_path):
    report, _ = ascend(tmp_path, cann_env=False, environ={"LD_LIBRARY_PATH": "/opt/x"})
    assert "VSL546" in ids(report) and not report.blocked
    home = str(tmp_path / "Ascend" / "ascend-toolkit" / "latest")
    env = report.env_updates
    assert env["ASCEND_HOME_PATH"] == home and env["ASCEND_OPP_PATH"] == home + "/opp"
    libs = env["LD_LIBRARY_PATH"].split(":")
    assert libs[0] == home + "/lib64" and libs[-1] == "/opt/x"
    assert str(tmp_path / "Ascend" / "driver" / "lib64") in libs


def test_no_toolkit_is_vsl547(tmp_path):
    report, _ = ascend(tmp_path, toolkit=False)
    assert "VSL547" in ids(report) and report.blocked


def test_no_plugin_is_vsl548(tmp_path):
    report, _ = ascend(tmp_path, engines=(("vllm", "0.32.0"),))
    assert "VSL548" in ids(report) and report.blocked


def test_vllm_mindspore_command_and_flags_it_lacks(tmp_path):
    report, _ = ascend(tmp_path, engines=MINDSPORE)
    assert report.engine == "vllm-mindspore" and not report.blocked
    assert report.vllm_command == ("vllm-mindspore", "serve")
    assert {"--shutdown-timeout", "--device-ids", "--nnodes"} <= set(report.unsupported_flags)
    flagged, _ = ascend(tmp_path, engines=MINDSPORE,
                        values={"shutdown_timeout": "30", "nnodes": "1"})
    msg = all_of(flagged, "VSL549")[0].message
    assert "--shutdown-timeout" in msg and "--nnodes" in msg and flagged.blocked


# -- multi-node NPU network (hccn_tool stand-in: tests/fakes/hccn_tool) ------------------------

MULTI = {"tensor_parallel_size": "4", "nnodes": "2", "node_rank": "1",
         "master_addr": "10.0.0.1", "headless": True}


def hccn(tmp_path: Path, scenario: str | None):
    import shutil

    bin_dir = npu_smi_bin(tmp_path / "bin", "healthy")
    if scenario:
        tool = bin_dir / "hccn_tool"
        shutil.copy(Path(__file__).resolve().parent / "fakes" / "hccn_tool", tool)
        (bin_dir / "hccn_tool.scenario").write_text(scenario)
    return bin_dir


def ascend_multi(tmp_path: Path, scenario: str | None, conf: bool = True, values=None):
    from dataclasses import dataclass

    from vllm_secure_launch.preflight import ascend as A

    bin_dir = hccn(tmp_path, scenario)
    conf_path = tmp_path / "hccn.conf"
    if conf:
        conf_path.write_text("address_0=192.168.100.101\nnetmask_0=255.255.255.0\n")

    @dataclass(frozen=True)
    class View(HostView):
        hccn_conf: str = str(conf_path)

    dev = ascend_dev(tmp_path / "dev", 4, True)
    root = ascend_root(tmp_path / "Ascend", True, True)
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    for name, version in ASCEND:
        make_dist(site, name, version)
    home = root / "ascend-toolkit" / "latest"
    env = {"PATH": str(bin_dir), "ASCEND_HOME_PATH": str(home),
           "LD_LIBRARY_PATH": str(home / "lib64")}
    host = View(dev_root=str(dev), ascend_root=str(root), dist_paths=[str(site)])
    args = ServeArgs(model="m", values=values if values is not None else MULTI)
    assert A.HCCN_CONF == "/etc/hccn.conf"
    return run(PreflightRequest.from_serve_args(args, env, "ascend"), host), bin_dir


def test_multinode_npu_network_healthy_checks_link_and_health_per_npu(tmp_path):
    report, bin_dir = ascend_multi(tmp_path, "healthy")
    assert not {"VSL552", "VSL553", "VSL554"} & ids(report), report.findings
    calls = (bin_dir / "hccn_tool.calls").read_text().split("\n")
    # tp 4 over 2 nodes: this node checks its 2 NPUs
    assert "-i 1 -link -g" in calls and "-i 0 -net_health -g" in calls
    assert "-i 2 -link -g" not in calls


@pytest.mark.parametrize("scenario,words", [("linkdown", "NPU 1: link not UP"),
                                            ("unhealthy", "NPU 0: net health not Success"),
                                            ("broken", "-8005")])
def test_multinode_npu_network_faults_are_vsl552(tmp_path, scenario, words):
    report, _ = ascend_multi(tmp_path, scenario)
    assert report.blocked and words in all_of(report, "VSL552")[0].message


def test_multinode_without_hccn_tool_is_vsl553_and_missing_conf_vsl554(tmp_path):
    report, _ = ascend_multi(tmp_path, None, conf=False)
    assert {"VSL553", "VSL554"} <= ids(report) and report.blocked


def test_one_node_ascend_skips_the_npu_network_check(tmp_path):
    report, _ = ascend_multi(tmp_path, "broken", values={"tensor_parallel_size": "4"})
    assert not {"VSL552", "VSL553", "VSL554"} & ids(report)
