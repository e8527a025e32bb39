"""The rule registry: stable IDs, a remedy and a title for each, and a test that names it."""

from __future__ import annotations

import ast
import functools
import pathlib
import re

from vllm_secure_launch.findings import Severity
from vllm_secure_launch.rules import all_rules

TESTS = pathlib.Path(__file__).parent
PACKAGE = TESTS.parent / "vllm_secure_launch"


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
    assert {i[3] for i in ids} <= set("12345679")  # 7xx: Ray (issue 14)


def test_every_planning_rule_fires_in_the_corpus():
    """The real test case of a planning rule: a corpus case that makes the production planner
    emit it (tests/corpus/, run by tests/test_corpus.py; checked again here, from the runs)."""
    import pytest

    from tests import test_corpus as corpus

    fired: set[str] = set()
    mp = pytest.MonkeyPatch()
    try:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for case in corpus.CASES:
                plan = corpus.run_case(case, pathlib.Path(tmp), mp)
                mp.undo()
                fired |= {f.rule_id for f in plan.findings}
    finally:
        mp.undo()
    missing = sorted(corpus.planning_rule_ids() - fired)
    assert not missing, f"planning rules no corpus case makes fire: {missing}"


def _production_modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE.parent)): ast.parse(p.read_text(encoding="utf-8"))
            for p in PACKAGE.rglob("*.py")}


@functools.cache  # per node: the check asks about every rule, and walking is what costs
def _names(node: ast.AST) -> frozenset[str]:
    """Every Name id and Attribute attr at or below `node`."""
    return frozenset(n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
                     if isinstance(n, (ast.Name, ast.Attribute)))


def _emitters(trees: dict[str, ast.Module], rule_var: str) -> tuple[set[str], bool]:
    """(names of production functions that use `rule_var`, used at module level outside the
    RULES tuple) over all production modules."""
    funcs: set[str] = set()
    module_level = False
    for tree in trees.values():
        for node in tree.body:
            if rule_var not in _names(node):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.add(node.name)
            elif isinstance(node, ast.ClassDef):
                funcs.update(m.name for m in node.body
                             if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)))
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = [t.id for t in getattr(node, "targets", [getattr(node, "target", None)])
                           if isinstance(t, ast.Name)]
                if targets and targets[0] not in ("RULES", rule_var):
                    module_level = True  # a table of rules (e.g. env_rules.PRESENCE)
    return funcs, module_level


def _called_in_production(trees: dict[str, ast.Module], func: str) -> bool:
    """`func` is referenced (called, or listed as a check) somewhere other than its own def
    (a def's name is not a Name node, so its own def never counts)."""
    return any(func in _names(tree) for tree in trees.values())


def test_every_rule_fires_somewhere_in_production_code():
    """A registered rule is emitted by production code, or it is retired (never a documented
    rule that nothing emits): the Rule object must be used by a production function that
    production code calls (or by a rule table), not only by the tests."""
    trees = _production_modules()
    rule_vars: dict[str, str] = {}
    for tree in trees.values():
        for node in tree.body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and getattr(node.value.func, "id", None) == "Rule" and node.value.args
                    and isinstance(node.value.args[0], ast.Constant)):
                rule_vars[node.value.args[0].value] = node.targets[0].id  # type: ignore[attr-defined]
    dead = []
    for r in all_rules():
        var = rule_vars.get(r.id)
        if var is None:
            continue  # built by a helper; its module's own test covers it
        funcs, tabled = _emitters(trees, var)
        if tabled:
            continue
        if not any(_called_in_production(trees, f) for f in funcs):
            dead.append(f"{r.id} ({var}; used in {sorted(funcs) or 'nothing'})")
    assert not dead, f"rules that no production code emits (emit or retire them): {dead}"


def test_the_dead_rule_check_sees_an_unused_rule(tmp_path):
    """The check above is not vacuous: a rule used only by an uncalled function is found."""
    tree = ast.parse("R = Rule('VSL999', 't', S, 'r')\nRULES = (R,)\n"
                     "def emit():\n    return R.finding('x', 'y')\n")
    trees = {"m.py": tree}
    funcs, tabled = _emitters(trees, "R")
    assert funcs == {"emit"} and not tabled
    assert not _called_in_production(trees, "emit")
    trees["n.py"] = ast.parse("from m import emit\nemit()\n")
    assert _called_in_production(trees, "emit")


def test_published_ids_never_change():
    """IDs published in a release keep their meaning: the first ones are pinned here."""
    titles = {r.id: r.title for r in all_rules()}
    assert titles["VSL101"].startswith("the API would listen on every interface")
    assert titles["VSL401"] == "vLLM dev mode is enabled"
    assert titles["VSL901"] == "a rule crashed"
