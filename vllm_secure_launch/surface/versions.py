"""Which vLLM surface (flags, environment catalog, routes) describes the vLLM that will run.

Surfaces are data per vLLM minor version: the serve flag table
(surface/data/vllm_<major>_<minor>_serve_flags.py, generated from the real packages by
scripts/gen-flag-table), the route inventory (surface/routes.py inventory()) and the env catalog
the rules read. A version with its own surface gets it; a
newer one gets the nearest older surface, an older one the oldest, each with a finding that
says so (docs/versions.md: what is still enforced then).
"""

from __future__ import annotations

from vllm_secure_launch.records import record

KNOWN = ("0.32", "0.33")  # surfaces shipped, oldest first (docs/versions.md: adding one)


@record
class Choice:
    surface: str  # "0.32"
    exact: bool
    why: str


def _minor(version: str) -> tuple[int, int] | None:
    parts = version.split("+", 1)[0].split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if "0" <= ch <= "9") or 0)
    except (IndexError, ValueError):
        return None


def choose(distribution: str | None, version: str | None, known: tuple[str, ...] = KNOWN
           ) -> Choice:
    newest = known[-1]
    if version is None:
        return Choice(newest, False, "no vLLM distribution found in the vLLM command's "
                      f"environment: the newest known surface ({newest}) is used")
    want = _minor(version)
    table = [(_minor(k), k) for k in known]
    if want is None:
        return Choice(newest, False, f"{distribution} {version} is not a version the launcher "
                      f"can read: the newest known surface ({newest}) is used")
    for minor, name in table:
        if minor == want:
            return Choice(name, True, f"{distribution} {version} has its own surface ({name})")
    older = [name for minor, name in table if minor is not None and minor < want]
    if older:
        return Choice(older[-1], False, f"{distribution} {version} is newer than every known "
                      f"surface: the nearest older one ({older[-1]}) is used")
    return Choice(known[0], False, f"{distribution} {version} is older than every known "
                  f"surface: the oldest ({known[0]}) is used")
