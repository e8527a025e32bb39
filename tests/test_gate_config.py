"""Launcher side of the gate: policy [gate] validation, child environment, findings."""

from __future__ import annotations

import json

import pytest

from vllm_secure_launch.errors import PolicyFileError
from vllm_secure_launch.gate import middleware as gate
from vllm_secure_launch.plan import gate as gate_config
from vllm_secure_launch.rules import gate_rules

KEYENV = {"VLLM_API_KEY": "k"}


def ids(findings) -> set[str]:
    return {f.rule_id for f in findings}


def test_defaults_give_config_env_and_middleware_last() -> None:
    env = gate_config.child_env(None)
    assert set(env) == {"VSL_GATE_CONFIG"}
    assert json.loads(env["VSL_GATE_CONFIG"]) == {"version": 1, "surface": "0.32"}
    assert gate_config.middleware_args(None) == ("--middleware",
                                                  "vllm_secure_launch.gate.middleware.EndpointGate")
    assert gate_config.MIDDLEWARE == "vllm_secure_launch.gate.middleware.EndpointGate"
    assert gate_config.findings(None, KEYENV) == []


def test_child_env_round_trips_through_the_gate() -> None:
    policy = {"public": ["/health", "/ping"],
              "allow": [{"path": "/metrics", "keys": ["VSL_GATE_KEY_SCRAPE"]}],
              "deny": ["/v1/responses"]}
    env = gate_config.child_env(policy)
    table = gate.load_table(env["VSL_GATE_CONFIG"])
    paths = {r.path: r for r in table.rules}
    assert paths["/ping"].public and not paths["/metrics"].public
    assert paths["/metrics"].key_envs == ("VSL_GATE_KEY_SCRAPE",)
    assert "/v1/responses" not in paths and "/v1/completions" in paths
    assert gate_config.secret_env_names(policy) == {"VLLM_API_KEY", "VSL_GATE_KEY_SCRAPE"}


def test_no_secret_in_child_env() -> None:
    env = gate_config.child_env({"allow": [{"path": "/metrics", "keys": ["VSL_GATE_KEY_X"]}]})
    assert "VLLM_API_KEY" not in env and "VSL_GATE_KEY_X" not in env


def test_disabled_gate() -> None:
    assert gate_config.child_env({"enabled": False}) == {}
    assert gate_config.middleware_args({"enabled": False}) == ()
    assert ids(gate_config.findings({"enabled": False}, KEYENV)) == {"VSL251"}


@pytest.mark.parametrize("policy,named", [
    ({"enabeld": True}, "gate.enabeld"),
    ({"enabled": "yes"}, "gate.enabled"),
    ({"public": "/health"}, "gate.public"),
    ({"public": ["/a%2fb"]}, "gate.public"),
    ({"deny": ["v1/models"]}, "gate.deny"),
    ({"allow": {"path": "/x"}}, "gate.allow"),
    ({"allow": [{"path": "/x/"}]}, "gate.allow[0].path"),
    ({"allow": [{"path": "/x", "methods": ["GET", "TRACE"]}]}, "gate.allow[0].methods"),
    ({"allow": [{"path": "/x", "methods": []}]}, "gate.allow[0].methods"),
    ({"allow": [{"path": "/x", "methods": ["WS", "GET"]}]}, "gate.allow[0].methods"),
    ({"allow": [{"path": "/x", "auth": "basic"}]}, "gate.allow[0].auth"),
    ({"allow": [{"path": "/x", "keys": ["HOME"]}]}, "gate.allow[0].keys"),
    ({"allow": [{"path": "/x", "keys": []}]}, "gate.allow[0].keys"),
    ({"allow": [{"path": "/x", "auth": "none", "keys": ["VLLM_API_KEY"]}]}, "gate.allow[0]"),
    ({"allow": [{"path": "/x", "mehtods": ["GET"]}]}, "gate.allow[0]"),
    ({"defaults": "no"}, "gate.defaults"),
    ("gate", "gate"),
    ({"allow": [{"path": "/v1/systemone", "keys": ["VSL_GATE_KEY_X"]}]}, "gate.allow"),
])
def test_bad_policy_names_the_key(policy, named: str) -> None:
    with pytest.raises(PolicyFileError) as err:
        gate_config.child_env(policy)
    assert named in err.value.paragraph()


def test_no_key_is_vsl250() -> None:
    assert ids(gate_config.findings(None, {})) == {"VSL250"}
    assert ids(gate_config.findings(None, {"VLLM_API_KEY": ""})) == {"VSL250"}
    # Nothing needs a key: no finding.
    assert gate_config.findings({"defaults": False}, {}) == []


def test_missing_named_key_is_vsl252() -> None:
    policy = {"allow": [{"path": "/metrics", "keys": ["VSL_GATE_KEY_SCRAPE"]}]}
    assert ids(gate_config.findings(policy, KEYENV)) == {"VSL252"}
    assert gate_config.findings(policy, {**KEYENV, "VSL_GATE_KEY_SCRAPE": "s"}) == []


def test_sensitive_public_is_vsl253() -> None:
    policy = {"allow": [{"path": "/invocations", "auth": "none"}]}
    assert ids(gate_config.findings(policy, KEYENV)) == {"VSL253"}
    assert ids(gate_config.findings({"public": ["/health", "/tokenize"]}, KEYENV)) == {"VSL253"}


def test_operational_route_is_vsl254() -> None:
    policy = {"allow": [{"path": "/pause"}, {"path": "/metrics"}]}
    found = gate_config.findings(policy, KEYENV)
    assert ids(found) == {"VSL254"} and found[0].subject == "/pause"


def test_every_gate_rule_has_id_title_remedy() -> None:
    seen = set()
    for rule in gate_rules.RULES:
        assert rule.id.startswith("VSL2") and 250 <= int(rule.id[3:]) <= 299
        assert rule.title and rule.remedy and rule.id not in seen
        seen.add(rule.id)


def test_key_env_copies_only_named_extra_keys() -> None:
    policy = {"allow": [{"path": "/metrics", "keys": ["VSL_GATE_KEY_SCRAPE"]}]}
    environ = {"VSL_GATE_KEY_SCRAPE": "s", "VSL_GATE_KEY_OTHER": "o", "VLLM_API_KEY": "k"}
    assert gate_config.key_env(policy, environ) == {"VSL_GATE_KEY_SCRAPE": "s"}
    assert gate_config.key_env(None, environ) == {}
    assert gate_config.key_env({**policy, "enabled": False}, environ) == {}
