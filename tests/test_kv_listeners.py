"""KV events and KV connectors judged in the forms vLLM reads them (issue 10): the publisher's
bind-vs-connect choice by the endpoint string (vllm/distributed/kv_events.py
_is_bind_endpoint), the always-bound replay socket, connectors nested in MultiConnector, and a
Mooncake bootstrap server whose host defaults to the wildcard when its key is absent."""

from __future__ import annotations

import json

import pytest

from tests.test_planner import KEY, plan_for
from vllm_secure_launch.config.policy import Policy

KEYED = {"VLLM_API_KEY": KEY}


def blocking(argv, policy=None):
    return {f.rule_id for f in plan_for(argv, KEYED, policy).findings if f.blocking}


def events(**cfg):
    return ["m", "--kv-events-config", json.dumps({"enable_kv_cache_events": True, **cfg})]


@pytest.mark.parametrize("cfg,fires", [
    ({}, True),                                             # default tcp://*:5557 binds all
    ({"endpoint": "tcp://*:0"}, False),                     # binds VLLM_HOST_IP (pinned)
    ({"endpoint": "ipc:///run/vllm/ev"}, False),
    ({"endpoint": "tcp://10.0.0.9:5557"}, False),           # connects: no listener
    ({"endpoint": "tcp://0.0.0.0:5557"}, False),            # no '*' nor '::': connects
    ({"endpoint": "tcp://[::]:5557"}, True),
    ({"endpoint": "tcp://[fd00::2]:5557"}, True),           # '::' in it: binds a public-side v6
    ({"endpoint": "tcp://[::1]:5557"}, False),              # binds loopback
    ({"endpoint": "tcp://*:0", "replay_endpoint": "tcp://*:5558"}, True),    # replay always binds
    ({"endpoint": "tcp://*:0", "replay_endpoint": "tcp://127.0.0.1:5558"}, False),
    ({"endpoint": "tcp://*:0", "replay_endpoint": "tcp://192.0.2.2:5558"}, True),
])
def test_kv_events(cfg, fires):
    assert ("VSL114" in blocking(events(**cfg))) is fires


def test_replay_on_the_internal_address_passes():
    cfg = {"endpoint": "tcp://*:0", "replay_endpoint": "tcp://10.0.0.5:5558"}
    assert "VSL114" not in blocking(events(**cfg), Policy(internal_iface="eth1"))


def transfer(cfg):
    return ["m", "--kv-transfer-config", json.dumps(cfg)]


@pytest.mark.parametrize("cfg,fires", [
    ({"kv_connector": "MooncakeConnector", "kv_role": "kv_both"}, True),
    ({"kv_connector": "MooncakeConnector", "kv_role": "kv_both",
      "kv_connector_extra_config": {"bootstrap_server_address": "10.0.0.5:8998"}}, False),
    ({"kv_connector": "MooncakeConnector", "kv_role": "kv_both",
      "kv_connector_extra_config": {"bootstrap_server_address": "0.0.0.0:8998"}}, True),
    ({"kv_connector": "MultiConnector", "kv_role": "kv_both", "kv_connector_extra_config": {
        "connectors": [{"kv_connector": "NixlConnector", "kv_role": "kv_both"},
                       {"kv_connector": "MooncakeConnector", "kv_role": "kv_both"}]}}, True),
    ({"kv_connector": "MultiConnector", "kv_role": "kv_both", "kv_connector_extra_config": {
        "connectors": [{"kv_connector": "MoRIIOConnector", "kv_role": "kv_both"}]}}, True),
    ({"kv_connector": "MultiConnector", "kv_role": "kv_both", "kv_connector_extra_config": {
        "connectors": [{"kv_connector": "NixlConnector", "kv_role": "kv_both"}]}}, False),
])
def test_connectors_nested_and_defaults(cfg, fires):
    assert ("VSL115" in blocking(transfer(cfg))) is fires


@pytest.mark.parametrize("argv,fires", [
    (["m", "--speculative-config", '{"method": "custom_class", "model": "evil.Proposer"}'], True),
    (["m", "--speculative-config", '{"model": "evil.Proposer", "num_speculative_tokens": 2}'], True),
    (["m", "--speculative-config", '{"model": "org/draft", "num_speculative_tokens": 2}'], False),
    (["m", "--speculative-config", '{"method": "ngram", "num_speculative_tokens": 2}'], False),
    (["m", "--compilation-config", '{"backend": "evil.compile"}'], True),
    (["m", "--compilation-config", '{"backend": "inductor"}'], False),
    (["m", "--compilation-config",
      '{"inductor_compile_config": {"post_grad_custom_post_pass": "evil.mod.fn"}}'], True),
    (["m", "--kv-transfer-config", '{"kv_connector": "OffloadingConnector", "kv_role": "kv_both",'
      ' "kv_connector_extra_config": {"spec_name": "X", "spec_module_path": "evil.spec"}}'], True),
    (["m", "--kv-transfer-config", '{"kv_connector": "MultiConnector", "kv_role": "kv_both",'
      ' "kv_connector_extra_config": {"connectors": [{"kv_connector": "C",'
      ' "kv_connector_module_path": "evil.conn", "kv_role": "kv_both"}]}}'], True),
    (["m", "--kv-transfer-config", '{"kv_connector": "NixlConnector", "kv_role": "kv_both"}'], False),
])
def test_code_loading_inside_json_sub_configs(argv, fires):
    """vLLM imports names from nested JSON values (issue 10): each is VSL221."""
    assert ("VSL221" in blocking(argv)) is fires
