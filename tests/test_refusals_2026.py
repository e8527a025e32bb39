"""Refusals the 2026 advisories call for (issue 13), each refused and its safe spelling accepted.
Sources are cited in each rule's remedy/doc (`vllm-secure-launch rules`)."""

from __future__ import annotations

import pytest

from tests.test_planner import KEY, plan_for

KEYED = {"VLLM_API_KEY": KEY}


def blocking(plan):
    return {f.rule_id for f in plan.findings if f.blocking}


@pytest.mark.parametrize("argv,env,rule", [
    (["m", "--enable-prompt-embeds"], {}, "VSL226"),
    (["m", "--trust-request-mm-kwargs"], {}, "VSL226"),
    (["m", "--trust-request-chat-template"], {}, "VSL215"),
    (["m", "--load-format", "netloader"], {}, "VSL227"),
    (["m", "--load-format", "RFork"], {}, "VSL227"),
    (["m"], {"PYTHONOPTIMIZE": "1"}, "VSL418"),
    (["m"], {"PYTHONOPTIMIZE": ""}, "VSL418"),
])
def test_refused(argv, env, rule):
    plan = plan_for(argv, {**KEYED, **env})
    assert rule in blocking(plan) and plan.decision == "refuse"


@pytest.mark.parametrize("argv", [
    ["m", "--no-enable-prompt-embeds"], ["m", "--no-trust-request-mm-kwargs"],
    ["m", "--no-trust-request-chat-template"], ["m", "--load-format", "safetensors"],
])
def test_safe_spelling_accepted(argv):
    assert plan_for(argv, KEYED).decision == "start"


def test_dp_master_variables_never_reach_vllm():
    """VLLM_DP_MASTER_IP/PORT (and VLLM_DP_SIZE/RANK) are read by vllm/config/parallel.py when no
    DP size is on the command line: they could turn a launch into DP with an env-chosen master."""
    env = {**KEYED, "VLLM_DP_MASTER_IP": "203.0.113.9", "VLLM_DP_MASTER_PORT": "1234",
           "VLLM_DP_SIZE": "2"}
    plan = plan_for(["m", "--data-parallel-address", "127.0.0.1"], env)
    assert not {"VLLM_DP_MASTER_IP", "VLLM_DP_MASTER_PORT", "VLLM_DP_SIZE"} & set(plan.env)


def test_outlines_cache_gets_the_service_directory():
    plan = plan_for(["m"], {**KEYED, "HOME": "/home/svc"})
    assert plan.env["OUTLINES_CACHE_DIR"] == "/home/svc/.cache/vllm-secure-launch/outlines"
    plan = plan_for(["m"], {**KEYED, "OUTLINES_CACHE_DIR": "/tmp/o"})
    assert "VSL416" in blocking(plan)
