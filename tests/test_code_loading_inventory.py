"""The code-loading inventory (rules/code_loading.py) against vLLM's source of every known version.

surface-data/code-loading.json lists every place a user-supplied string reaches an import, an
exec or an unpickling in vLLM, resolved to file:line in 0.32.0 and 0.33.0 by the recipe
(scripts/surface/gen-vllm-surface code-loading, from the curated list and the grep of every
import/pickle site). The launcher's table must know exactly those entries, every entry must
still have a site in each vLLM version the launcher knows, and every entry a flag or variable
can reach must be refused through the real planner (flags.parse -> build_plan, as the corpus),
for each known surface.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vllm_secure_launch import rules
from vllm_secure_launch.rules import code_loading
from vllm_secure_launch.surface import versions

from .test_corpus import run_case

DATA = Path(__file__).resolve().parents[1] / "surface-data"
INVENTORY = json.loads((DATA / "code-loading.json").read_text(encoding="utf-8"))
ENTRIES = {e["id"]: e for e in INVENTORY["entries"]}

KV = '{"kv_connector": "OffloadingConnector", "kv_role": "kv_both", "kv_connector_extra_config": '
# entry -> (argv after `serve`, environment) that reaches it, and the rule that must fire.
REACH: dict[str, list[tuple[list[str], dict[str, str], str]]] = {
    "middleware": [(["m", "--middleware", "evil.MW"], {}, "VSL206")],
    "tool-parser-plugin": [(["m", "--tool-parser-plugin", "/srv/x.py"], {}, "VSL221")],
    "reasoning-parser-plugin": [
        (["m", "--reasoning-parser-plugin", "/srv/x.py"], {}, "VSL221"),
        (["m", "--structured-outputs-config.reasoning_parser_plugin", "/srv/x.py"], {},
         "VSL221")],
    "worker-cls": [(["m", "--worker-cls", "evil.W"], {}, "VSL221")],
    "worker-extension-cls": [(["m", "--worker-extension-cls", "evil.E"], {}, "VSL221")],
    "distributed-executor-backend": [
        (["m", "--distributed-executor-backend", "evil.Exec"], {}, "VSL221")],
    "scheduler-cls": [(["m", "--scheduler-cls", "evil.S"], {}, "VSL221")],
    "logits-processors": [(["m", "--logits-processors", "evil.LP"], {}, "VSL221")],
    "kv-connector-module-path": [
        (["m", "--kv-transfer-config.kv_connector", "C", "--kv-transfer-config.kv_role",
          "kv_both", "--kv-transfer-config.kv_connector_module_path", "evil.conn"], {},
         "VSL221")],
    "ec-connector-module-path": [
        (["m", "--ec-transfer-config",
          '{"ec_connector": "C", "ec_role": "ec_both", "ec_connector_module_path": "evil.m"}'],
         {}, "VSL221")],
    "kv-offload-spec-module-path": [
        (["m", "--kv-transfer-config", KV + '{"spec_name": "X", "spec_module_path": "evil.s"}}'],
         {}, "VSL221")],
    "kv-offload-cache-policy-module-path": [
        (["m", "--kv-transfer-config", KV + '{"eviction_policy": "X", '
          '"cache_policy_module_path": "evil.p"}}'], {}, "VSL221")],
    "kv-offload-tier-module-path": [
        (["m", "--kv-transfer-config", KV + '{"secondary_tiers": [{"type": "X", '
          '"module_path": "evil.tier"}]}}'], {}, "VSL221")],
    "kv-offload-backpressure-cls": [
        (["m", "--kv-transfer-config", KV + '{"secondary_tiers": [{"type": "cpu", '
          '"backpressure": {"backpressure_cls": "evil.bp"}}]}}'], {}, "VSL221")],
    "ec-manager-cls": [
        (["m", "--ec-manager-config", '{"encoder_cache_manager_cls": "evil.M"}'], {},
         "VSL221")],
    "speculative-custom-class": [
        (["m", "--speculative-config", '{"method": "custom_class", "model": "evil.P"}'], {},
         "VSL221")],
    "compilation-backend": [(["m", "-cc", '{"backend": "evil.compile"}'], {}, "VSL221")],
    "inductor-passes": [
        (["m", "--compilation-config",
          '{"inductor_compile_config": {"post_grad_custom_post_pass": "evil.mod.fn"}}'], {},
         "VSL221")],
    "model-class-overrides": [
        (["m", "--model-class-overrides", '{"LlamaForCausalLM": "evil.M"}'], {}, "VSL221")],
    "logging-dictconfig": [(["m", "--log-config-file", "/srv/log.json"], {}, "VSL218"),
                           (["m"], {"VLLM_LOGGING_CONFIG_PATH": "/srv/log.json"}, "VSL410")],
    "entry-point-plugins": [(["m"], {"VLLM_PLUGINS": "evil"}, "VSL407")],
    "rust-frontend-binary": [(["m"], {"VLLM_USE_RUST_FRONTEND": "1"}, "VSL406"),
                             (["m"], {"VLLM_RUST_FRONTEND_PATH": "/srv/bin"}, "VSL406")],
    "io-processor-plugin": [(["m", "--io-processor-plugin", "evil"], {}, "VSL221")],
    "trust-remote-code": [(["m", "--trust-remote-code"], {}, "VSL220")],
    "insecure-serialization": [(["m"], {"VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}, "VSL403")],
    "update-weights-ipc-handles-pickled": [(["m"], {"VLLM_SERVER_DEV_MODE": "1"}, "VSL401")],
    "collective-rpc-cloudpickle": [(["m"], {"VLLM_SERVER_DEV_MODE": "1"}, "VSL401")],
    "message-queue-pickle": [(["m", "--nnodes", "2", "--node-rank", "0"], {}, "VSL112")],
    "group-coordinator-recv-object": [(["m", "--nnodes", "2", "--node-rank", "0"], {},
                                       "VSL112")],
    "tcpstore-pickle": [(["m"], {"VLLM_DP_MASTER_IP": "192.0.2.9"}, "VSL414")],
    "compile-cache-pickle": [(["m"], {"TORCHINDUCTOR_CACHE_DIR": "/tmp/ind"}, "VSL416")],
    "torch-load-lora": [(["m"], {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1"}, "VSL404")],
    "torch-load-request-embeds": [(["m", "--enable-prompt-embeds"], {}, "VSL226"),
                                  (["m", "--enable-mm-embeds"], {}, "VSL226")],
}


def test_the_table_knows_exactly_the_inventory_entries():
    assert set(code_loading.JUDGED) == set(ENTRIES)


def test_every_entry_has_a_site_in_every_known_vllm_version():
    """A known surface whose vLLM lost or moved a site needs the recipe re-run (and this
    table re-read); a version with no data here is not a known surface."""
    recorded = set(INVENTORY["versions"])
    for surface in versions.KNOWN:
        version = next((v for v in recorded if v.startswith(surface + ".")), None)
        assert version, f"surface-data/code-loading.json has no vLLM {surface}"
        for entry in ENTRIES.values():
            assert any(site.get(version) for site in entry["sites"]), (entry["id"], version)


def test_judged_by_rules_that_exist_or_says_why_not():
    known = {r.id for r in rules.all_rules()}
    assert code_loading.rule_ids() <= known, sorted(code_loading.rule_ids() - known)
    for name, how in code_loading.JUDGED.items():
        assert how and (not isinstance(how, str) or len(how) > 20), name


def test_every_entry_with_rules_is_reached_in_the_reach_table():
    ruled = {n for n, how in code_loading.JUDGED.items() if not isinstance(how, str)}
    # kvcr-policy is reached only through a tier the offload connector builds itself (a
    # registered policy name); its import path is judged by the tier's module_path keys.
    assert ruled - set(REACH) <= {"kvcr-policy"}


CASES = [(s, entry, argv, env, rule) for s in versions.KNOWN for entry, reach in REACH.items()
         for argv, env, rule in reach]


@pytest.mark.parametrize("surface,entry,argv,env,rule", CASES,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_each_reachable_entry_is_refused(surface: str, entry: str, argv: list[str],
                                         env: dict[str, str], rule: str, tmp_path: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    how = code_loading.JUDGED[entry]
    assert not isinstance(how, str) and rule in how, (entry, rule)
    plan = run_case({"argv": argv, "env": env, "vllm": surface}, tmp_path, monkeypatch)
    fired = {f.rule_id for f in plan.findings}
    assert rule in fired, (entry, sorted(fired))
