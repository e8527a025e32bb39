"""README.md describes what exists: its rule table is current (scripts/gen-rules-doc), it names
every launcher option and the test command that .ci/run calls."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _gen():
    spec = importlib.util.spec_from_file_location("gen_rules_doc", ROOT / "scripts" / "gen-rules-doc")
    loader = importlib.machinery.SourceFileLoader("gen_rules_doc", str(ROOT / "scripts" / "gen-rules-doc"))
    spec = importlib.util.spec_from_loader("gen_rules_doc", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_rule_table_is_current():
    text = (ROOT / "README.md").read_text()
    assert _gen().render(text) == text, "README rule table is stale: run scripts/gen-rules-doc"


def test_readme_names_every_launcher_option_and_the_test_command():
    from vllm_secure_launch.config import settings

    text = (ROOT / "README.md").read_text()
    for s in settings.options():
        assert f"`{s.flag}" in text, s.flag
    assert "scripts/test" in text and "scripts/test" in (ROOT / ".ci" / "run").read_text()
