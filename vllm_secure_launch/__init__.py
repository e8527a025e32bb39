"""vllm-secure-launch: a hardened drop-in replacement for `vllm serve`.

The launcher process never imports torch or vllm; see tests/test_no_heavy_imports.py.
"""

__version__ = "0.1.0"
