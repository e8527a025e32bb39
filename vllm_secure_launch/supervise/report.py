"""The run report: build the document that says what the supervised run saw (the one report
envelope, kind "run") and write it atomically to --report PATH.

decision: "dirty" when the socket audit found a forbidden listener (at warning or above) during
the run, else "stopped" once vLLM is stopping or has exited, else "clean" (serving, or on the
way there, with nothing forbidden seen). The body keeps the keys the report always had.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vllm_secure_launch import __version__
from vllm_secure_launch.files import write_atomic
from vllm_secure_launch.findings import Finding, envelope

TAIL_LINES = 30
ENDED = ("exited", "stopping")


class KeptFindings:
    """Findings kept once each, by rule and subject (the watch repeats every second)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Finding] = {}

    def add(self, f: Finding) -> bool:
        """Keep `f`; True when it is new (and so should be shown)."""
        key = (f.rule_id, f.subject)
        if key in self._by_key:
            return False
        self._by_key[key] = f
        return True

    def all(self) -> tuple[Finding, ...]:
        return tuple(self._by_key.values())


@dataclass(frozen=True)
class RunState:
    """What the report shows, as plain values taken from the run at one moment."""

    phase: str
    audit: str  # enforce | warn | off
    audits: int
    clean: bool
    api: str
    expected: dict[str, Any]
    argv: tuple[str, ...]
    pid: int
    keeper_pid: int | None
    listeners: list[dict[str, Any]]
    findings: tuple[Finding, ...]
    exit_code: int | None
    vllm_code: int | None  # the keeper's (vLLM's) code, None while it runs
    tail: tuple[str, ...] = ()


def decision(state: RunState) -> str:
    if not state.clean:
        return "dirty"
    return "stopped" if state.phase in ENDED else "clean"


def body(state: RunState) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "phase": state.phase,
        "audit": state.audit,
        "audits": state.audits,
        "clean": state.clean,
        "api": state.api,
        "expected": state.expected,
        "argv": list(state.argv),
        "pid": state.pid,
        "keeper_pid": state.keeper_pid,
        "listeners": state.listeners,
        "exit_code": state.exit_code,
    }
    if state.phase in ENDED and state.vllm_code not in (None, 0):
        doc["vllm_tail"] = list(state.tail)[-TAIL_LINES:]  # why it failed, in its own words
    return doc


def build(state: RunState, version: str = __version__) -> dict[str, Any]:
    return envelope("run", decision(state), state.findings, body(state), version)


def write(path: str, doc: dict[str, Any]) -> str | None:
    """Replace the report at `path` atomically; the OS's reason when it could not."""
    try:
        write_atomic(path, json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
