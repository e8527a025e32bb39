"""README.md is the front door: short, no paths of one machine, the install and set-up commands
(the test command is the one .ci/run calls), the deployment examples, and links that resolve to
the docs pages. The reference content it used to hold (rule tables, option table) lives in
docs/ and is checked in tests/test_docs.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project's own fallback for 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_BYTES = 15 * 1024


def _text() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_is_at_most_15_kb():
    size = len(README.read_bytes())
    assert size <= MAX_BYTES, f"README.md is {size} bytes; move detail to docs/ (limit {MAX_BYTES})"


def test_readme_and_docs_hold_no_paths_of_one_machine():
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for bad in ("/root/", "/work/", "/home/", "/tmp/"):
            assert bad not in page.read_text(encoding="utf-8"), f"{page.name} names {bad}"


def test_readme_names_the_set_up_commands_and_the_fast_lane():
    text = _text()
    assert "scripts/demo" in text
    assert "scripts/test" in text and "scripts/test" in (ROOT / ".ci" / "run").read_text()
    assert "scripts/test --fast" in text
    # what --fast runs, and the markers it leaves out, named in the README
    lane = '-m "not e2e and not netns and not integration"'
    assert lane in text and lane in (ROOT / "scripts" / "test").read_text()
    for marker in ("`e2e`", "`netns`", "`integration`"):
        assert marker in text


def test_readme_install_section_names_pip_and_every_extra():
    text = _text()
    install = text.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "pip install" in install and "vLLM" in install
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra in extras:
        assert f"`{extra}`" in install, f"extra {extra!r} is not described in README's Install"


def test_readme_shows_systemd_slurm_and_container_examples():
    text = _text()
    assert "Type=notify" in text and "RestartPreventExitStatus=69 77 78 126 127" in text
    assert "#SBATCH" in text and "srun" in text
    assert 'ENTRYPOINT ["vllm-secure-launch", "serve"]' in text
    for code in ("69", "75", "77", "78", "126", "127"):
        assert f"| {code} |" in text, f"exit code {code} missing from README's table"


def test_readme_links_every_docs_page_and_each_link_resolves():
    text = _text()
    links = set(re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text))
    local = {link for link in links if not re.match(r"[a-z]+://", link)}
    for link in local:
        assert (ROOT / link).exists(), f"README links {link}, which does not exist"
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "index.md":
            assert f"docs/{page.name}" in local, f"README does not link docs/{page.name}"
