"""The audit watcher: scan the sockets of vLLM's process tree, judge them against the plan,
remember every listener seen (when first, whether still open) and every audit finding.

One `check` is one audit. What to do with its outcome (show it, stop vLLM under enforce,
rewrite the report) is the loop's decision; this module only observes and remembers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.plan.model import ApiEndpoint, ExpectedListeners
from vllm_secure_launch.supervise import audit
from vllm_secure_launch.supervise import listeners as procnet
from vllm_secure_launch.supervise.report import KeptFindings

ListenerKey = tuple[int, str, str, int]  # inode, proto, address, port


@dataclass
class Seen:
    """One listener the audit has seen: its verdict, when it was first and last seen."""

    verdict: audit.Verdict
    first_seen: float
    last_seen: float
    open: bool = True


@dataclass(frozen=True)
class Pass:
    """The outcome of one audit: the result, whether the set of listeners changed, and the
    findings it raised for the first time."""

    result: audit.AuditResult
    changed: bool
    new: tuple[Finding, ...]


def downgrade(result: audit.AuditResult) -> audit.AuditResult:
    """Under --audit warn findings are reported, not blocking: at most warnings."""
    return audit.AuditResult(
        result.verdicts,
        tuple(replace(f, severity=min(f.severity, Severity.WARNING)) for f in result.findings),
    )


def api_elsewhere(api: ApiEndpoint, foreign: list[audit.Listener]) -> list[audit.Listener]:
    """Listeners outside vLLM's tree on the planned API port and address (or a wildcard)."""
    if api.host is None or api.port is None:
        return []
    host = audit.canonical_ip(api.host)
    return [
        lst for lst in foreign
        if lst.proto == "tcp" and lst.port == api.port
        and (audit.canonical_ip(lst.address) == host or audit.is_wildcard(lst.address))
    ]


class Memory:
    """Every listener seen during the run, keyed by its socket; closed ones stay, marked."""

    def __init__(self) -> None:
        self.seen: dict[ListenerKey, Seen] = {}

    def update(self, verdicts: tuple[audit.Verdict, ...], now: float) -> bool:
        """Note this audit's listeners; True when one appeared or one closed."""
        current = {self._key(v) for v in verdicts}
        changed = False
        for v in verdicts:
            s = self.seen.get(self._key(v))
            if s is None:
                self.seen[self._key(v)] = Seen(v, now, now)
                changed = True
            else:
                s.last_seen, s.open = now, True
        for key, s in self.seen.items():
            if key not in current and s.open:
                s.open = False
                changed = True
        return changed

    def rows(self, t0: float) -> list[dict[str, Any]]:
        """The report's listeners: verdict, whether still open, seconds after `t0` first seen."""
        out = []
        for s in self.seen.values():
            d = s.verdict.to_dict()
            d["open"] = s.open
            d["first_seen_s"] = round(s.first_seen - t0, 3)
            out.append(d)
        return out

    @staticmethod
    def _key(v: audit.Verdict) -> ListenerKey:
        lst = v.listener
        return (lst.inode, lst.proto, lst.address, lst.port)


class AuditWatch:
    """The socket audit of one run: scanner, listener memory, audit findings, count."""

    def __init__(self, expected: ExpectedListeners, api: ApiEndpoint, enforce: bool) -> None:
        self.expected, self.api, self.enforce = expected, api, enforce
        self.scanner = procnet.TreeScanner(os.getpid())
        self.memory = Memory()
        self.findings = KeptFindings()
        self.audits = 0
        self.clean = True  # the last audit's; under warn its findings do not block
        self.last: audit.AuditResult | None = None  # the last audit's result

    def check(self, now: float, force: bool = False) -> Pass:
        """One audit of the tree's sockets now (`force`: re-read the process tree)."""
        self.audits += 1
        result = self._observe(now, force)
        if not self.enforce:
            result = downgrade(result)
        changed = self.memory.update(result.verdicts, now)
        new = tuple(f for f in result.findings if self.findings.add(f))
        self.clean, self.last = result.clean, result
        return Pass(result, changed, new)

    def _observe(self, now: float, force: bool) -> audit.AuditResult:
        try:
            obs = self.scanner.scan(now, force=force)
            return audit.compare(self.expected, obs.listeners,
                                 api_seen_elsewhere=api_elsewhere(self.api, obs.foreign))
        except OSError as exc:
            return audit.unavailable(f"cannot read /proc: {exc}")

    @property
    def passed(self) -> bool:
        """No audit finding at warning or above in the whole run (the report's "clean")."""
        return not any(f.severity >= Severity.WARNING for f in self.findings.all())

    def close(self) -> None:
        self.scanner.close()
