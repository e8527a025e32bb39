"""Ascend preflight against a fake machine tree and an `npu-smi` stand-in.

Narrow fakes at the boundary, because no NPU exists here: /dev and /usr/local/Ascend are temp
directories, package metadata is a temp site dir, and `npu-smi` on PATH is
tests/fakes/npu-smi, which prints recorded real outputs (healthy and failing, see
tests/fakes/npu_smi/README.md) or hangs. The subprocess call, its timeout, the table parser
and every judgement are the real code.
"""

from __future__ import annotations

import sys
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
from vllm_secure_launch.preflight import npu_network as NN
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
# The stand-in is a narrow fake at the boundary (no NPU here): it answers -link/-net_health/
# -ip/-ping in the real tool's output format; the subprocess calls, the parsers, the pairing
# of NPUs with peers and every judgement are the real code.

MULTI = {"tensor_parallel_size": "4", "nnodes": "2", "node_rank": "1",
         "master_addr": "10.0.0.1", "headless": True}
# This node: NPU 0 and 1 on two RoCE planes (one subnet per NPU index, as on Atlas A2).
CONF = ("address_0=192.168.100.101\nnetmask_0=255.255.255.0\n"
        "address_1=192.168.101.101\nnetmask_1=255.255.255.0\n"
        "address_2=192.168.102.101\nnetmask_2=255.255.255.0\n"
        "netdetect_0=192.168.100.1\ngateway_0=192.168.100.1\n")
PEERS = "192.168.100.201,192.168.101.201"


def hccn(tmp_path: Path, scenario: str | None, unreachable=(), lossy=()):
    import shutil

    bin_dir = npu_smi_bin(tmp_path / "bin", "healthy")
    if scenario:
        tool = bin_dir / "hccn_tool"
        shutil.copy(Path(__file__).resolve().parent / "fakes" / "hccn_tool", tool)
        # Run by this interpreter, not `env python3` (a version manager's shim there costs
        # ~0.25 s a call, most of these tests' time); -S: it needs only the standard library.
        lines = tool.read_text().split("\n", 1)
        tool.write_text(f"#!{sys.executable} -S\n{lines[1]}")
        (bin_dir / "hccn_tool.scenario").write_text(scenario)
        (bin_dir / "hccn_tool.unreachable").write_text("\n".join(unreachable))
        (bin_dir / "hccn_tool.lossy").write_text("\n".join(lossy))
    return bin_dir


def ascend_multi(tmp_path: Path, scenario: str | None, conf: str | None = CONF, values=None,
                 peers: str = PEERS, unreachable=(), lossy=()):
    bin_dir = hccn(tmp_path, scenario, unreachable, lossy)
    conf_path = tmp_path / "hccn.conf"
    if conf is not None:
        conf_path.write_text(conf)
    dev = ascend_dev(tmp_path / "dev", 4, True)
    root = ascend_root(tmp_path / "Ascend", True, True)
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    for name, version in ASCEND:
        make_dist(site, name, version)
    home = root / "ascend-toolkit" / "latest"
    env = {"PATH": str(bin_dir), "ASCEND_HOME_PATH": str(home),
           "LD_LIBRARY_PATH": str(home / "lib64")}
    host = HostView(dev_root=str(dev), ascend_root=str(root), dist_paths=[str(site)],
                    hccn_conf=str(conf_path))
    args = ServeArgs(model="m", values=values if values is not None else MULTI)
    req = PreflightRequest.from_serve_args(args, env, "ascend", npu_peers=peers)
    return run(req, host), bin_dir


def hccn_calls(bin_dir: Path) -> list[str]:
    path = bin_dir / "hccn_tool.calls"
    return path.read_text().splitlines() if path.exists() else []


NET = {"VSL552", "VSL553", "VSL554", "VSL580", "VSL581", "VSL582", "VSL583", "VSL584"}


def test_default_hccn_conf_is_the_install_guides_path():
    assert HostView().hccn_conf == "/etc/hccn.conf"


def test_multinode_npu_network_healthy_checks_ports_and_pings_each_peer_from_its_plane(tmp_path):
    report, bin_dir = ascend_multi(tmp_path, "healthy", peers=PEERS + ",10.9.9.9")
    assert not NET & ids(report) and not report.blocked, report.findings
    calls = hccn_calls(bin_dir)
    # tp 4 over 2 nodes: this node checks its 2 NPUs, not the others
    assert {"-i 0 -link -g", "-i 1 -link -g", "-i 0 -net_health -g",
            "-i 1 -net_health -g"} <= set(calls)
    assert "-i 2 -link -g" not in calls
    # each peer from the NPU whose subnet holds it; one in no subnet from the first NPU
    assert "-i 0 -ping -g address 192.168.100.201" in calls
    assert "-i 1 -ping -g address 192.168.101.201" in calls
    assert "-i 0 -ping -g address 10.9.9.9" in calls
    assert "3 peer NPU address(es) answered" in all_of(report, "VSL585")[0].message


def test_a_rank_table_serves_every_node_and_this_nodes_own_addresses_are_left_out(tmp_path):
    import json

    table = {"version": "1.0", "server_count": "2", "status": "completed", "server_list": [
        {"server_id": "10.0.0.1", "device": [
            {"device_id": "0", "device_ip": "192.168.100.201", "rank_id": "0"},
            {"device_id": "1", "device_ip": "192.168.101.201", "rank_id": "1"}]},
        {"server_id": "10.0.0.2", "device": [
            {"device_id": "0", "device_ip": "192.168.100.101", "rank_id": "2"},
            {"device_id": "1", "device_ip": "192.168.101.101", "rank_id": "3"}]}]}
    path = tmp_path / "rank_table.json"
    path.write_text(json.dumps(table))
    report, bin_dir = ascend_multi(tmp_path, "healthy", peers=str(path))
    assert not report.blocked, report.findings
    pings = [c for c in hccn_calls(bin_dir) if "-ping" in c]
    assert pings == ["-i 0 -ping -g address 192.168.100.201",
                     "-i 1 -ping -g address 192.168.101.201"]


def test_a_plain_peer_file_with_comments(tmp_path):
    path = tmp_path / "peers.txt"
    path.write_text("# node2\n192.168.100.201\n192.168.101.201  # NPU 1\n\n")
    report, bin_dir = ascend_multi(tmp_path, "healthy", peers=str(path))
    assert not report.blocked and len([c for c in hccn_calls(bin_dir) if "-ping" in c]) == 2


def test_without_npu_peers_the_start_is_blocked_and_the_ports_are_still_checked(tmp_path):
    """Fail closed: no peers means the ping cannot be done (VSL580); the other checks run,
    so every problem is reported at once."""
    report, bin_dir = ascend_multi(tmp_path, "linkdown", peers="")
    assert report.blocked and {"VSL580", "VSL552"} <= ids(report)
    assert "no --npu-peers" in all_of(report, "VSL580")[0].message
    assert not [c for c in hccn_calls(bin_dir) if "-ping" in c]


@pytest.mark.parametrize("peers,words", [
    ("192.168.100.201,192.168.100.300", "'192.168.100.300' is not an IP address"),
    ("{MISSING}", "missing, unreadable or empty"),
    ("{BADJSON}", "not valid JSON"),
    ("{NOTABLE}", "server_list"),
    ("192.168.100.101,192.168.101.101", "only this node's own NPU addresses"),
    (" , ", "names no address"),
])
def test_unusable_peer_lists_are_vsl581(tmp_path, peers, words):
    (tmp_path / "bad.json").write_text('{"server_list": [')
    (tmp_path / "notable.json").write_text('{"servers": []}')
    peers = peers.format(MISSING=tmp_path / "nope.txt", BADJSON=tmp_path / "bad.json",
                         NOTABLE=tmp_path / "notable.json")
    report, _ = ascend_multi(tmp_path, "healthy", peers=peers)
    assert report.blocked and words in all_of(report, "VSL581")[0].message


@pytest.mark.parametrize("unreachable,lossy,words", [
    (["192.168.101.201"], [], "NPU 1 -> 192.168.101.201: 0/3 received, 100.00% packet loss"),
    ([], ["192.168.100.201"], "NPU 0 -> 192.168.100.201: 2/3 received, 33.33% packet loss"),
])
def test_a_peer_that_does_not_answer_is_vsl583(tmp_path, unreachable, lossy, words):
    report, _ = ascend_multi(tmp_path, "healthy", unreachable=unreachable, lossy=lossy)
    assert report.blocked and all_of(report, "VSL583")[0].message == words
    assert "VSL585" not in ids(report)


def test_every_npu_network_problem_is_reported_at_once(tmp_path):
    conf = "address_0=192.168.100.101\nnetmask_0=255.255.255.0\n"  # no address_1
    report, _ = ascend_multi(tmp_path, "linkdown", conf=conf,
                             unreachable=["192.168.100.201", "192.168.101.201"])
    assert {"VSL552", "VSL582", "VSL583"} <= ids(report) and report.blocked
    assert "NPU 1: link DOWN" in all_of(report, "VSL552")[0].message
    assert "NPU 1: no address_1=" in all_of(report, "VSL582")[0].message
    assert all_of(report, "VSL583")[0].message.count("packet loss") == 2


@pytest.mark.parametrize("scenario,words", [("linkdown", "NPU 1: link DOWN"),
                                            ("unhealthy", "NPU 0: net health Fault")])
def test_multinode_npu_port_faults_are_vsl552(tmp_path, scenario, words):
    report, _ = ascend_multi(tmp_path, scenario)
    assert report.blocked and words in all_of(report, "VSL552")[0].message


@pytest.mark.parametrize("scenario,words", [("broken", "-8005"),
                                            ("garbage", "format changed")])
def test_answers_that_cannot_be_read_block_as_vsl584(tmp_path, scenario, words):
    """Fail closed: a driver error or an unknown output format decides nothing."""
    report, _ = ascend_multi(tmp_path, scenario)
    msg = all_of(report, "VSL584")[0].message
    assert report.blocked and words in msg and "-ping -g address" in msg
    assert "VSL552" not in ids(report) and "VSL583" not in ids(report)


def test_without_hccn_conf_the_npus_own_addresses_come_from_the_device(tmp_path):
    """/etc/hccn.conf missing is VSL554 (a warning, as before); the NPUs' own addresses are
    then read with `hccn_tool -i N -ip -g`, so a shared peer list still leaves them out."""
    report, bin_dir = ascend_multi(tmp_path, "healthy", conf=None,
                                   peers="192.168.100.101,192.168.100.201")
    calls = hccn_calls(bin_dir)
    assert "-i 0 -ip -g" in calls and "-i 1 -ip -g" in calls
    assert [c for c in calls if "-ping" in c] == ["-i 0 -ping -g address 192.168.100.201"]
    assert "VSL554" in ids(report) and not report.blocked


def test_multinode_without_hccn_tool_is_vsl553_and_missing_conf_vsl554(tmp_path):
    report, _ = ascend_multi(tmp_path, None, conf=None)
    assert {"VSL553", "VSL554"} <= ids(report) and report.blocked


def test_one_node_ascend_skips_the_npu_network_check(tmp_path):
    report, _ = ascend_multi(tmp_path, "broken", values={"tensor_parallel_size": "4"},
                             peers="")
    assert not NET & ids(report) and "VSL585" not in ids(report)


# -- the pure parts (no stand-in) ---------------------------------------------------------------


@pytest.mark.parametrize("code,text,verdict", [
    (0, "device 0 PING 10.10.100.10\nrecv seq=0,time=0.067000ms\nrecv seq=1,time-0.049000ms\n"
        "recv seq=2,time=0.047000ms\n3 packets transmitted, 3 received, 0.00% packet loss",
     (True, "3/3 received, 0.00% packet loss")),
    (1, "recv time out seq=0\nrecv seq=1,time=0.097000ms\nrecv seq=2,time=0.066000ms\n"
        "3 packets transmitted, 2 received, 33.33% packet loss",
     (False, "2/3 received, 33.33% packet loss")),
    (1, "device 0 PING 10.0.0.9\nrecv time out seq=0", (False, "recv time out seq")),
    (1, "From 10.0.0.9 Destination Host Unreachable", (False, "Destination Host Unreachable")),
    (255, "dsmi_get_device_info failed, ret = -8005", (None, "")),
    (0, "", (None, "")),
])
def test_parse_ping_output_as_the_ascend_docs_show_it(code, text, verdict):
    assert NN.parse_ping(code, text) == verdict


def test_parse_hccn_conf_takes_address_and_netmask_per_npu():
    got = NN.parse_hccn_conf(CONF + "address_7 = 192.168.107.101\n# address_9=1.2.3.4\n")
    assert got[0] == NN.NpuAddress("192.168.100.101", "255.255.255.0")
    assert got[7] == NN.NpuAddress("192.168.107.101", None) and 9 not in got and 3 not in got


def test_pairing_uses_the_npu_whose_subnet_holds_the_peer():
    own = NN.parse_hccn_conf(CONF)
    assert NN.pair(["192.168.101.9", "192.168.100.9", "172.16.0.1"], own, [0, 1]) == [
        (1, "192.168.101.9"), (0, "192.168.100.9"), (0, "172.16.0.1")]
    assert NN.pair(["192.168.101.9"], {}, [2, 3]) == [(2, "192.168.101.9")]


def test_parse_peers_dedupes_and_canonicalises():
    assert NN.parse_peers("10.0.0.1, 10.0.0.1,fe80::0001") == ["10.0.0.1", "fe80::1"]
    with pytest.raises(NN.PeerError):
        NN.parse_peers("\n".join(f"10.0.{i // 250}.{i % 250}" for i in range(1100)))


def test_plan_level_a_failed_peer_ping_refuses_the_plan_with_69(tmp_path):
    """Through the one pure amendment both dry-run and serve use: the NPU network findings
    make the plan's decision preflight-failed (exit 69)."""
    from vllm_secure_launch.config.policy import Policy
    from vllm_secure_launch.exitcodes import ExitCode
    from vllm_secure_launch.host.facts import HostFacts
    from vllm_secure_launch.pipeline import decision_code
    from vllm_secure_launch.plan.amend import with_preflight
    from vllm_secure_launch.plan.build import build_plan
    from vllm_secure_launch.surface import flags

    report, _ = ascend_multi(tmp_path, "healthy", unreachable=["192.168.100.201"])
    args = flags.parse(["m", "-tp", "4", "--nnodes", "2", "--node-rank", "1", "--headless",
                        "--master-addr", "10.0.0.1"])
    policy = Policy(internal_ip="10.0.0.2")
    from vllm_secure_launch.addresses import IfAddr

    facts = HostFacts(interfaces={"eth0": (IfAddr("10.0.0.2", 24),)})
    planned = build_plan(args, {"VLLM_API_KEY": "k" * 32}, policy, facts, accelerator="ascend")
    assert planned.decision == "start", [f for f in planned.findings if f.blocking]
    plan = with_preflight(planned, report, policy)
    assert plan.decision == "preflight-failed" and decision_code(plan) == ExitCode.PREFLIGHT_FAILED
    assert "VSL583" in {f.rule_id for f in plan.findings}
