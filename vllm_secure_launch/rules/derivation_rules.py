"""VSL320–VSL326 — the multi-node derivation's rules (cluster/derive.py judges them before
planning), as a catalog of their own: defined in cluster_rules, tested in tests/test_cluster*.py."""

from __future__ import annotations

from vllm_secure_launch.rules.cluster_rules import DERIVATION_RULES

RULES = DERIVATION_RULES
