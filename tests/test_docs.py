"""The docs site is current and every reference resolves:

* the generated pages (rules, settings, exit codes) match the code (`scripts/gen-docs --check`),
  and the check really fails on a stale page;
* every `docs/…` reference the program prints (error messages, the installed guard's comment)
  names an existing file, and its anchor, if any, exists on that page;
* links between the pages resolve (file and anchor), every page is in mkdocs.yml's nav, every
  rule ID named in the docs exists, and no other page restates the rule table;
* every launcher option and VSL_* variable is on the settings page;
* `mkdocs build --strict` passes (skipped only when mkdocs is not installed; CI installs it).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GEN = ROOT / "scripts" / "gen-docs"
PACKAGE = ROOT / "vllm_secure_launch"
DOC_REF = re.compile(r"(?<![\w/])docs/([\w.-]+\.(?:md|json))(#[\w-]+)?")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _gen(*args: str, script: Path = GEN) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          env=_env(), timeout=120)


def _slug(text: str) -> str:
    """Python-Markdown's toc slugify (the one mkdocs uses), after dropping inline markup."""
    text = re.sub(r"[`*]", "", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    out: set[str] = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        m = re.match(r"#{1,6} (.*)$", line)
        if in_code or not m:
            continue
        heading = m.group(1)
        explicit = re.search(r"\{\s*#([\w-]+)\s*\}\s*$", heading)
        out.add(explicit.group(1) if explicit else _slug(heading))
    return out


def _pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def _code_doc_refs() -> set[tuple[str, str]]:
    refs = set()
    for path in PACKAGE.rglob("*.py"):
        for m in DOC_REF.finditer(path.read_text(encoding="utf-8")):
            refs.add((m.group(1), (m.group(2) or "")[1:]))
    return refs


def test_generated_pages_are_current():
    r = _gen("--check")
    assert r.returncode == 0, r.stderr + "\nrun scripts/gen-docs"


def test_gen_docs_check_fails_on_a_stale_page_and_a_run_repairs_it(tmp_path):
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "gen-docs"
    shutil.copy(GEN, script)
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    page = tmp_path / "docs" / "rules.md"
    stale = page.read_text().replace("[VSL101](#vsl101) | error", "[VSL101](#vsl101) | info")
    page.write_text(stale)
    r = _gen("--check", script=script)
    assert r.returncode == 1 and "docs/rules.md" in r.stderr, r.stderr
    assert _gen(script=script).returncode == 0
    assert _gen("--check", script=script).returncode == 0
    assert page.read_text() == (DOCS / "rules.md").read_text()


def test_every_doc_reference_of_the_program_resolves():
    refs = _code_doc_refs()
    names = {name for name, _a in refs}
    # The three pages error messages and the installed guard point to (issue 9).
    assert {"gate.md", "tcpstore.md", "preflight.md"} <= names, names
    for name, anchor in sorted(refs):
        if name == "report.schema.json":  # written with the report envelope; must exist too
            assert (DOCS / name).is_file(), f"docs/{name} is referenced by the code but missing"
            continue
        assert (DOCS / name).is_file(), f"the program points to docs/{name}, which is missing"
        if anchor:
            assert anchor in _anchors(DOCS / name), f"docs/{name} has no anchor #{anchor}"


def test_links_between_pages_resolve_with_their_anchors():
    for page in _pages():
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            file, _, anchor = target.partition("#")
            dest = page if not file else (page.parent / file)
            assert dest.exists(), f"{page.name} links {target}: no such file"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest), f"{page.name} links {target}: no such anchor"


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = {next(iter(item.values())) for item in config["nav"]}
    assert nav == {p.name for p in _pages()}


def test_rule_ids_in_the_docs_exist_and_titles_live_only_on_the_rules_page():
    from vllm_secure_launch.rules import all_rules

    rules = {r.id: r for r in all_rules()}
    rules_page = (DOCS / "rules.md").read_text(encoding="utf-8")
    for rule in rules.values():
        assert f"### {rule.id}: " in rules_page and f"{{#{rule.id.lower()}}}" in rules_page
    for page in [*_pages(), ROOT / "README.md"]:
        text = page.read_text(encoding="utf-8")
        for rid in set(re.findall(r"VSL\d{3}", text)):
            assert rid in rules, f"{page.name} names {rid}, which is not a registered rule"
        if page.name == "rules.md":
            continue
        # Hand-written copies of the rule table are how one ID came to have two titles: a row
        # about a rule elsewhere links to the generated page and never restates its severity.
        for rule in rules.values():
            assert f"| {rule.id} | {rule.severity.label} |" not in text, (page.name, rule.id)
        for row in re.findall(r"^\| *(VSL\d{3})\b", text, flags=re.M):
            pytest.fail(f"{page.name}: table row for {row} must link to rules.md#{row.lower()}")


def test_settings_page_names_every_launcher_option_and_variable():
    from vllm_secure_launch.cli.main import cli
    from vllm_secure_launch.config.settings import SETTINGS

    text = (DOCS / "settings.md").read_text(encoding="utf-8")
    for param in cli.params:
        if param.name in ("version", "help"):
            continue
        assert f"`{param.opts[0]}" in text, param.opts[0]
    for setting in SETTINGS:
        assert f"`{setting.env}`" in text, setting.env
    assert "`VSL_POLICY`" in text


def test_exit_code_page_lists_every_exit_code():
    from vllm_secure_launch.exitcodes import ExitCode

    text = (DOCS / "exit-codes.md").read_text(encoding="utf-8")
    for code in ExitCode:
        assert f"| {int(code)} | `{code.name}` |" in text


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None
                    or importlib.util.find_spec("material") is None,
                    reason="mkdocs-material is not installed (pip install '.[docs]'); CI runs it")
@pytest.mark.integration  # a real `mkdocs build` of the whole site
def test_mkdocs_build_strict_passes(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                        "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                       capture_output=True, text=True, timeout=300,
                       env={**_env(), "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "rules" / "index.html").is_file()
