"""Benchmarks: each module has run() -> list of rows {name, ratio, target, ok, detail}.
Ratios against a baseline measured in the same run; never timed assertions in tests."""
