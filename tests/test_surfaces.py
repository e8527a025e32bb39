"""Per-version surfaces: which one a version gets, and the per-version data the rules use held
to what the generator read from each real vLLM (surface-data/<version>/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_secure_launch.rules import env_rules
from vllm_secure_launch.surface import flags, routes, versions

DATA = Path(__file__).resolve().parents[1] / "surface-data"


def envs(surface: str) -> dict[str, dict]:
    name = f"vllm_{surface.replace('.', '_')}_envs.json"
    doc = json.loads((DATA / surface / name).read_text(encoding="utf-8"))
    return {v["name"]: v for v in doc["variables"]}


def test_every_known_surface_has_its_flags_routes_and_env_guards():
    assert versions.KNOWN == ("0.32", "0.33")
    for surface in versions.KNOWN:
        assert flags.table_for(surface).surface == surface
        assert routes.inventory(surface)
        assert surface in env_rules.DOS_GUARDS_BY_SURFACE


@pytest.mark.parametrize("surface", versions.KNOWN)
def test_dos_guards_are_that_versions_variables_and_defaults(surface):
    catalog = envs(surface)
    for name, default in env_rules.DOS_GUARDS_BY_SURFACE[surface].items():
        assert name in catalog, (surface, name)
        assert catalog[name]["default"] == default, (surface, name, catalog[name]["default"])


def test_every_0_33_dos_limit_variable_is_guarded():
    """The catalog marks bounds (security category dos_limit); each new one in 0.33 is a guard."""
    old, new = envs("0.32"), envs("0.33")
    added = {n for n, v in new.items() if n not in old
             and any(s["category"] == "dos_limit" for s in v.get("security", []))}
    assert added and added <= set(env_rules.DOS_GUARDS_0_33), sorted(added)


@pytest.mark.parametrize("version,surface,exact", [
    ("0.32.0", "0.32", True), ("0.32.3", "0.32", True), ("0.33.0", "0.33", True),
    ("0.33.1+cu130", "0.33", True), ("0.34.0", "0.33", False), ("1.0.0", "0.33", False),
    ("0.11.0", "0.32", False),
])
def test_surface_choice(version, surface, exact):
    choice = versions.choose("vllm", version)
    assert (choice.surface, choice.exact) == (surface, exact), choice.why
    if not exact and version > "0.33":
        assert "nearest older one (0.33)" in choice.why


def test_no_vllm_gets_the_newest_surface():
    assert versions.choose(None, None).surface == versions.KNOWN[-1]
