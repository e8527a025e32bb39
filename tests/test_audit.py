"""audit.py (pure): verdict per listener against ExpectedListeners, one finding per offending
socket, and the VSL6xx rules that the audit produces."""

from __future__ import annotations

import pytest

from vllm_secure_launch.findings import Severity
from vllm_secure_launch.plan.model import ApiEndpoint, ExpectedListeners
from vllm_secure_launch.rules.audit_rules import RULES
from vllm_secure_launch.supervise.audit import Listener, compare, judge, unavailable

API = ApiEndpoint("10.0.0.5", 8000)
EXP = ExpectedListeners(API, ("10.0.0.5",), allow_loopback=True)
EXP_LO = ExpectedListeners(ApiEndpoint("127.0.0.1", 18000), ("127.0.0.1", "::1"), True)


def L(addr, port=1234, proto="tcp", pid=42, family=None):
    return Listener(proto, addr, port, 1, pid, "python", (pid,), family or (6 if ":" in addr else 4))


@pytest.mark.parametrize("addr,port,proto,allowed,reason", [
    ("10.0.0.5", 8000, "tcp", True, "api"),
    ("10.0.0.5", 41234, "tcp", True, "internal"),  # kernel-assigned internal port
    ("10.0.0.5", 5000, "udp", True, "internal"),
    ("127.0.0.1", 39999, "tcp", True, "loopback"),
    ("127.0.0.7", 39999, "tcp", True, "loopback"),
    ("::1", 39999, "tcp", True, "loopback"),
    ("0.0.0.0", 29500, "tcp", False, "wildcard"),
    ("::", 41000, "tcp", False, "wildcard"),  # dual-stack TCPStore
    ("::ffff:0.0.0.0", 41000, "tcp", False, "wildcard"),
    ("0.0.0.0", 5353, "udp", False, "wildcard"),
    ("192.168.1.9", 8000, "tcp", False, "unplanned"),
    ("10.0.0.6", 8000, "tcp", False, "unplanned"),
    ("fe80::1", 8000, "tcp", False, "unplanned"),
])
def test_judge_table(addr, port, proto, allowed, reason):
    v = judge(EXP, L(addr, port, proto))
    assert (v.allowed, v.reason) == (allowed, reason)


def test_loopback_not_allowed_when_plan_says_so():
    exp = ExpectedListeners(API, ("10.0.0.5",), allow_loopback=False)
    assert judge(exp, L("127.0.0.1")).reason == "unplanned"


def test_api_must_match_exact_port_when_host_is_not_internal():
    exp = ExpectedListeners(ApiEndpoint("192.168.7.7", 8000), ("10.0.0.5",), False)
    assert judge(exp, L("192.168.7.7", 8000)).allowed
    assert not judge(exp, L("192.168.7.7", 8001)).allowed
    assert not judge(exp, L("192.168.7.7", 8000, "udp")).allowed


def test_wildcard_finding_vsl600_names_pid_process_address_port_proto_and_fix():
    res = compare(EXP_LO, [L("127.0.0.1", 18000), L("0.0.0.0", 29501, pid=77), L("::", 5557, "udp")])
    assert not res.clean
    assert [f.rule_id for f in res.findings] == ["VSL600", "VSL600"]
    f = res.findings[0]
    assert "pid 77 (python)" in f.message and "0.0.0.0:29501/tcp" in f.message
    assert "TCPStore" in f.message and f.remedy and f.severity is Severity.ERROR
    assert "[::]:5557/udp" in res.findings[1].message
    assert len(res.violations) == 2 and len(res.verdicts) == 3


def test_unplanned_address_vsl601():
    res = compare(EXP_LO, [L("192.168.1.9", 80)])
    assert [f.rule_id for f in res.findings] == ["VSL601"]


def test_api_held_by_foreign_process_vsl602():
    res = compare(EXP_LO, [], api_seen_elsewhere=[L("127.0.0.1", 18000, pid=None)])
    assert [f.rule_id for f in res.findings] == ["VSL602"]
    assert compare(EXP_LO, [L("127.0.0.1", 18000)]).clean


def test_clean_audit_and_report_dict():
    res = compare(EXP_LO, [L("127.0.0.1", 18000), L("::1", 40000)])
    assert res.clean and not res.findings
    d = res.to_dict()
    assert d["clean"] and {x["verdict"] for x in d["listeners"]} == {"allowed"}


def test_unavailable_fails_closed_vsl603():
    res = unavailable("cannot read /proc")
    assert not res.clean and res.findings[0].rule_id == "VSL603"


def test_rule_catalog_ids_in_range_unique_with_remedy():
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    for r in RULES:
        assert r.id.startswith("VSL6") and 600 <= int(r.id[3:]) <= 649
        assert r.title and r.remedy


def test_listeners_in_a_pinned_hccl_range_are_named_and_still_only_allowed_internally():
    """Ascend: the plan pins HCCL's host ports (plan/hccl.py); the audit names the range on
    each listener in it, allows it on the internal address and still refuses it elsewhere."""
    from vllm_secure_launch.plan.model import PortRange

    exp = ExpectedListeners(API, ("10.0.0.5",), True,
                            port_ranges=(PortRange("HCCL_IF_BASE_PORT", 63016, 63047),))
    inside = judge(exp, L("10.0.0.5", 63020))
    assert inside.allowed and inside.reason == "internal" and inside.pinned == "HCCL_IF_BASE_PORT"
    assert inside.to_dict()["pinned"] == "HCCL_IF_BASE_PORT"
    assert judge(exp, L("10.0.0.5", 63048)).pinned is None
    res = compare(exp, [L("0.0.0.0", 63016)])
    assert not res.clean and "HCCL host port (HCCL_IF_BASE_PORT" in res.findings[0].message
    assert exp.to_dict()["port_ranges"] == [
        {"name": "HCCL_IF_BASE_PORT", "first": 63016, "last": 63047}]
