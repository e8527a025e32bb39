"""The rule registry: stable IDs, a remedy and a title for each, and a test that names it."""

from __future__ import annotations

import pathlib
import re

from vllm_secure_launch.findings import Severity
from vllm_secure_launch.rules import all_rules

TESTS = pathlib.Path(__file__).parent


def test_every_rule_has_id_title_remedy():
    rules = all_rules()
    assert len(rules) >= 40
    for r in rules:
        assert re.fullmatch(r"VSL\d{3}", r.id), r
        assert r.title.strip() and r.remedy.strip(), r
        assert isinstance(r.severity, Severity)


def test_ids_are_unique_and_in_their_family_ranges():
    ids = [r.id for r in all_rules()]
    assert len(ids) == len(set(ids))
    assert {i[3] for i in ids} <= set("1234569")


def test_every_rule_has_a_test_case():
    """Each rule ID appears in at least one test other than this file (its test case)."""
    text = "\n".join(p.read_text(errors="replace") for p in TESTS.rglob("*.py")
                     if p.name != pathlib.Path(__file__).name)
    missing = [r.id for r in all_rules() if r.id not in text]
    assert not missing, f"rules without a test case: {missing}"


def test_published_ids_never_change():
    """IDs published in a release keep their meaning: the first ones are pinned here."""
    titles = {r.id: r.title for r in all_rules()}
    assert titles["VSL101"].startswith("the API would listen on every interface")
    assert titles["VSL401"] == "vLLM dev mode is enabled"
    assert titles["VSL901"] == "a rule crashed"
