"""How the parser tests compare a value of the launcher's parser with one of vLLM's own parser
(live, tests/test_vllm_flags.py, or recorded, tests/test_vllm_flags_recorded.py)."""

from __future__ import annotations

import math
from typing import Any


def same_value(ours: Any, theirs: Any) -> bool:
    """`ours` (as written, strings) reads as `theirs` (vLLM's converted value; a dataclass
    config serialised as {"__dataclass__": fields} or {"__dataclass__": name, "fields": ...})."""
    if isinstance(theirs, dict) and "__dataclass__" in theirs:
        fields = theirs.get("fields", theirs["__dataclass__"])
        return isinstance(ours, dict) and all(
            k in fields and same_value(v, fields[k]) for k, v in ours.items())
    if isinstance(ours, float) and isinstance(theirs, float):
        return math.isclose(ours, theirs)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(same_value(a, b) for a, b in zip(ours, theirs))
    if isinstance(ours, str) and isinstance(theirs, (int, float)) and not isinstance(theirs, bool):
        try:
            return float(ours) == theirs
        except ValueError:
            return False
    return ours == theirs
