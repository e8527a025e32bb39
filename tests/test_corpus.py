"""The rule corpus (tests/corpus/*.yaml, format in tests/corpus/README.md): every case runs
through the pure planner (flags.parse -> fake HostFacts -> build_plan, no processes) and must
produce its rule IDs and decision; every planning rule must have a case.

The host is a fake HostFacts (interfaces, hostname, key files) because the planner is pure:
these cases judge inputs, not this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from vllm_secure_launch import rules
from vllm_secure_launch.addresses import IfAddr
from vllm_secure_launch.config import policy as policy_mod
from vllm_secure_launch.host.facts import HostFacts, SecretFile, TokenFile
from vllm_secure_launch.plan.build import build_plan
from vllm_secure_launch.rules import catalogs
from vllm_secure_launch.surface import flags

CORPUS = Path(__file__).parent / "corpus"
DEFAULT_ENV = {"VLLM_API_KEY": "corpus-key"}
IFACES = {
    "lo": (IfAddr("127.0.0.1", 8), IfAddr("::1", 128)),
    "eth0": (IfAddr("192.0.2.2", 24), IfAddr("fd00::2", 64)),
    "eth1": (IfAddr("10.0.0.5", 24),),
    "ib0": (IfAddr("10.10.0.7", 16),),
    "cgn0": (IfAddr("100.64.1.1", 10),),
    "ula0": (IfAddr("fd12:3456::7", 64),),
}
CASE_KEYS = {"name", "argv", "env", "policy", "host", "accelerator", "fires", "decision",
             "crash_check", "vllm"}


def load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(CORPUS.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            cases.append({**case, "_file": path.name})
    return cases


CASES = load_cases()


def planning_rule_ids() -> set[str]:
    """Rules the planner evaluates: the registry minus the catalogs judged elsewhere."""
    elsewhere = {r.id for mod in catalogs.modules() for r in mod.RULES}
    return {r.id for r in rules.all_rules()} - elsewhere


def _secret(spec: dict[str, Any]) -> SecretFile:
    mode = spec.get("mode")
    return SecretFile(spec["path"], spec.get("value"),
                      int(mode, 8) if isinstance(mode, str) else mode, spec.get("error"))


def _host(overrides: dict[str, Any]) -> HostFacts:
    base: dict[str, Any] = dict(interfaces=IFACES, hostname="node1", hostname_addrs=("10.0.0.5",),
                                uid=0, pid=4242, python="/venv/bin/python", runtime_dir="/run/t")
    for key, value in overrides.items():
        if key in ("api_key_file", "credential_key"):
            base[key] = _secret(value)
        elif key == "ray_token":
            base[key] = TokenFile(**{**value, "mode": int(value["mode"], 8)
                                     if isinstance(value.get("mode"), str) else value.get("mode")})
        elif key == "hostname_addrs":
            base[key] = tuple(value)
        else:
            base[key] = value
    return HostFacts(**base)


def run_case(case: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    env = {k: v for k, v in {**DEFAULT_ENV, **(case.get("env") or {})}.items() if v != ""}
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(case.get("policy") or "", encoding="utf-8")
    pol = policy_mod.load({"policy": str(policy_file)}, env)
    if case.get("crash_check"):
        from vllm_secure_launch.rules import internal_rules

        def crashing_check(ctx: Any) -> list:
            raise ValueError("corpus: a check that crashes")

        monkeypatch.setattr(internal_rules, "CHECKS", (*internal_rules.CHECKS, crashing_check))
    # `vllm: "0.33"`: the argv is parsed and judged with that vLLM's surface (default 0.32).
    surface = str(case.get("vllm", flags.DEFAULT_SURFACE))
    host = {"surface": (surface, True, "corpus"), **(case.get("host") or {})}
    return build_plan(flags.parse(list(case["argv"]), table=flags.table_for(surface)), env, pol,
                      _host(host), accelerator=case.get("accelerator", "cpu"))


def test_corpus_cases_are_well_formed():
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    known = {r.id for r in rules.all_rules()}
    for c in CASES:
        assert set(c) - {"_file"} <= CASE_KEYS, (c["_file"], c["name"], set(c) - CASE_KEYS)
        assert isinstance(c["argv"], list) and c["decision"] in ("start", "refuse"), c["name"]
        assert set(c["fires"]) <= known, (c["name"], "unknown rule ID")


@pytest.mark.parametrize("case", CASES, ids=[f"{c['_file']}:{c['name']}" for c in CASES])
def test_case_fires_its_rules_and_decides(case, tmp_path, monkeypatch):
    plan = run_case(case, tmp_path, monkeypatch)
    fired = {f.rule_id for f in plan.findings}
    missing = set(case["fires"]) - fired
    assert not missing, f"{case['name']}: {sorted(missing)} did not fire (got {sorted(fired)})"
    assert plan.decision == case["decision"], (
        f"{case['name']}: decision {plan.decision}, blocking "
        f"{sorted(f.rule_id for f in plan.findings if f.blocking)}")


def test_every_planning_rule_has_a_corpus_case():
    covered = {rid for c in CASES for rid in c["fires"]}
    missing = sorted(planning_rule_ids() - covered)
    assert not missing, f"planning rules without a case in tests/corpus/: {missing}"


def test_the_planning_set_is_what_the_planner_evaluates():
    """The corpus covers the planner's families; the catalogs are judged by their own code."""
    planning = planning_rule_ids()
    family_ids = {r.id for mod in rules._families() for r in mod.RULES}
    assert planning == family_ids
    assert len(planning) >= 40
