"""The preflight rule catalog: VSL500-VSL599, unique, each with a title, remedy and a test."""

from __future__ import annotations

import pathlib
import re

from vllm_secure_launch.preflight import RULES
from vllm_secure_launch.rules.preflight_rules import rule

TESTS = pathlib.Path(__file__).parent


def test_ids_are_unique_and_in_the_preflight_family():
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"VSL5\d\d", i) for i in ids)
    assert all(r.title.strip() and r.remedy.strip() and r.doc.strip() for r in RULES)


def test_every_preflight_rule_is_exercised_by_a_preflight_test():
    text = "\n".join(p.read_text() for p in TESTS.glob("test_preflight_*.py")
                     if p.name != pathlib.Path(__file__).name)
    assert [r.id for r in RULES if r.id not in text] == []


def test_lookup_of_an_unknown_id_is_a_programming_error():
    assert rule("VSL510").title.startswith("NVML")
    try:
        rule("VSL599")
    except KeyError:
        pass
    else:
        raise AssertionError("VSL599 is not declared")
