"""Weakenings that used to start without a trace (issue 10): each is now a finding in every
report — a switched-off safeguard, a waiver of the crash rule or of an unknown ID, DoS guards
disabled by size, a widened loopback variable, caches in world-writable places, RAY_ADDRESS
anywhere. Planner tables, no processes."""

from __future__ import annotations

import dataclasses

import pytest

from tests.test_planner import KEY, host, plan_for
from vllm_secure_launch.config.policy import Policy

KEYED = {"VLLM_API_KEY": KEY}


def ids(plan, blocking=False):
    return {f.rule_id for f in plan.findings if f.blocking or not blocking}


@pytest.mark.parametrize("policy,weak", [
    (dict(tcpstore_guard=False), "tcpstore_guard"), (dict(audit="warn"), "audit"),
    (dict(audit="off"), "audit"), (dict(allow_wildcard=True), "allow_wildcard"),
])
def test_switched_off_safeguards_warn(policy, weak):
    plan = plan_for(["m"], KEYED, Policy(**policy, origins={weak: "env"}))
    found = [f for f in plan.findings if f.rule_id == "VSL904"]
    assert [f.subject for f in found] == [weak] and "VSL_* environment" in found[0].message
    assert plan.decision == "start"


def test_defaults_raise_no_weakening():
    assert not {"VSL904", "VSL905", "VSL906"} & ids(plan_for(["m"], KEYED))


def test_waiving_the_crash_rule_refuses_and_cannot_be_waived():
    plan = plan_for(["m"], KEYED, Policy(waivers={"VSL901": "x", "VSL905": "y"}))
    assert "VSL905" in ids(plan, blocking=True) and plan.decision == "refuse"


def test_unknown_waiver_warns():
    plan = plan_for(["m"], KEYED, Policy(waivers={"VSL998": "typo"}))
    assert "VSL906" in ids(plan) and plan.decision == "start"


@pytest.mark.parametrize("name,value,fires", [
    ("VLLM_MAX_N_SEQUENCES", "16384", False), ("VLLM_MAX_N_SEQUENCES", "262144", False),
    ("VLLM_MAX_N_SEQUENCES", "262145", True), ("VLLM_MAX_N_SEQUENCES", "1e30", True),
    ("VLLM_MAX_N_SEQUENCES", "inf", True), ("VLLM_MAX_N_SEQUENCES", "nan", True),
    ("VLLM_MAX_N_SEQUENCES", "0", True), ("VLLM_REGEX_COMPILATION_TIMEOUT_S", "3600", True),
    ("VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB", "100000", True), ("VLLM_IMAGE_FETCH_TIMEOUT", "10", False),
])
def test_dos_guards_disabled_by_size(name, value, fires):
    plan = plan_for(["m"], {**KEYED, name: value})
    assert ("VSL412" in ids(plan, blocking=True)) is fires


@pytest.mark.parametrize("value,fires", [("127.0.0.1", False), ("::1", False), ("127.0.0.2", False),
                                         ("0.0.0.0", True), ("::", True), ("10.0.0.5", True),
                                         ("localhost", True)])
def test_loopback_variable(value, fires):
    plan = plan_for(["m"], {**KEYED, "VLLM_LOOPBACK_IP": value})
    assert ("VSL415" in ids(plan, blocking=True)) is fires


@pytest.mark.parametrize("name,value,fires", [
    ("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_root", True),
    ("TRITON_CACHE_DIR", "/dev/shm/triton", True), ("VLLM_CACHE_ROOT", "/var/tmp/v", True),
    ("HF_HOME", "/tmp", True), ("VLLM_CACHE_ROOT", "/var/cache/vllm", False),
    ("XDG_CACHE_HOME", "/home/svc/.cache", False), ("TRITON_CACHE_DIR", "/tmpfoo/x", False),
])
def test_caches_in_world_writable_places(name, value, fires):
    plan = plan_for(["m"], {**KEYED, name: value})
    assert ("VSL416" in ids(plan, blocking=True)) is fires


def test_planner_keeps_the_inductor_cache_out_of_tmp():
    plan = plan_for(["m"], {**KEYED, "HOME": "/home/svc"})
    assert plan.env["TORCHINDUCTOR_CACHE_DIR"] == "/home/svc/.cache/vllm-secure-launch/torchinductor"
    plan = plan_for(["m"], {**KEYED, "HOME": "/tmp"})
    assert plan.env["TORCHINDUCTOR_CACHE_DIR"].startswith(plan.rpc_dir)


@pytest.mark.parametrize("value,internal,fires", [
    ("127.0.0.1:6379", False, False), ("local", False, False), ("ray://10.0.0.9:10001", True, False),
    ("10.0.0.9:6379", False, True), ("203.0.113.5:6379", True, True), ("head.example:6379", True, True),
])
def test_ray_address(value, internal, fires):
    policy = Policy(internal_iface="eth1") if internal else Policy()
    plan = plan_for(["m"], {**KEYED, "RAY_ADDRESS": value}, policy)
    assert ("VSL417" in ids(plan, blocking=True)) is fires


def test_weakenings_show_in_the_dry_run_document():
    from vllm_secure_launch.plan.document import plan_document

    plan = plan_for(["m"], KEYED, dataclasses.replace(Policy(), tcpstore_guard=False))
    doc = plan_document(plan)
    assert any(f["id"] == "VSL904" for f in doc["findings"])
    assert host().uid == 0
