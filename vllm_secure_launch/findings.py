"""One Finding type for every check; text, JSON and SARIF are views of the same list."""

from __future__ import annotations

import enum
import json
from dataclasses import replace
from typing import Any, Iterable, Mapping, Sequence

from vllm_secure_launch.records import record


class Severity(enum.IntEnum):
    """Ordered: a finding at ERROR (or above) that is not waived blocks the start."""

    INFO = 10
    WARNING = 20
    ERROR = 30

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (use info, warning or error)") from None


@record
class Finding:
    rule_id: str
    severity: Severity
    subject: str
    message: str
    remedy: str
    waived: str | None = None  # the policy's reason, when a waiver covers this finding

    @property
    def blocking(self) -> bool:
        return self.severity >= Severity.ERROR and self.waived is None

    def with_waiver(self, reason: str) -> Finding:
        return replace(self, waived=reason)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.rule_id,
            "severity": self.severity.label,
            "subject": self.subject,
            "message": self.message,
            "remedy": self.remedy,
        }
        if self.waived is not None:
            d["waived"] = self.waived
        return d


# Findings no waiver can lift: waiving them would make the launcher unchecked by construction.
UNWAIVABLE = frozenset({"VSL905"})


def apply_waivers(findings: Iterable[Finding], waivers: Mapping[str, str]) -> list[Finding]:
    """Mark findings whose rule ID the policy waives; they stay in every report."""
    out = []
    for f in findings:
        reason = None if f.rule_id in UNWAIVABLE else waivers.get(f.rule_id)
        out.append(f.with_waiver(reason) if reason is not None and f.waived is None else f)
    return out


def blocking(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.blocking]


def sort_key(f: Finding) -> tuple[int, str, str]:
    return (-int(f.severity), f.rule_id, f.subject)


# One envelope for every JSON document the launcher emits (plan, check, preflight, probe, run,
# advisories, ...): these keys first, then the kind's own body. docs/report.schema.json
# describes it; the tests validate every emitted document against that schema.
SCHEMA_VERSION = 2
KINDS = ("plan", "check", "preflight", "probe", "run", "advisories", "rules", "render")


def envelope(kind: str, decision: str, findings: Sequence[Finding],
             body: Mapping[str, Any], version: str) -> dict[str, Any]:
    """{schema_version, tool, kind, decision, findings, **body} (body keys may not clash)."""
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "vllm-secure-launch", "version": version},
        "kind": kind,
        "decision": decision,
        "findings": findings_json(findings),
    }
    clash = set(doc) & set(body)
    if clash:
        raise ValueError(f"body keys clash with the envelope: {sorted(clash)}")
    doc.update(body)
    return doc


# ---------------------------------------------------------------------------------------------
# Views


def format_finding_text(f: Finding) -> str:
    tag = f.severity.label.upper()
    if f.waived is not None:
        tag += f" (waived: {f.waived})"
    return f"{tag} {f.rule_id} [{f.subject}] {f.message}\n    fix: {f.remedy}"


def render_text(findings: Sequence[Finding]) -> str:
    if not findings:
        return "no findings"
    return "\n".join(format_finding_text(f) for f in sorted(findings, key=sort_key))


def findings_json(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    return [f.to_dict() for f in sorted(findings, key=sort_key)]


def render_json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)


_SARIF_LEVEL = {Severity.INFO: "note", Severity.WARNING: "warning", Severity.ERROR: "error"}


def render_sarif(
    findings: Sequence[Finding], rule_docs: Mapping[str, tuple[str, str]], version: str
) -> dict[str, Any]:
    """SARIF 2.1.0 log. `rule_docs` maps rule ID -> (title, remedy)."""
    used = sorted({f.rule_id for f in findings})
    rules = [
        {
            "id": rid,
            "shortDescription": {"text": rule_docs.get(rid, (rid, ""))[0]},
            "help": {"text": rule_docs.get(rid, ("", ""))[1]},
        }
        for rid in used
    ]
    results = []
    for f in sorted(findings, key=sort_key):
        r: dict[str, Any] = {
            "ruleId": f.rule_id,
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f"[{f.subject}] {f.message} Fix: {f.remedy}"},
            "properties": {"subject": f.subject, "remedy": f.remedy},
        }
        if f.waived is not None:
            r["suppressions"] = [{"kind": "external", "justification": f.waived}]
        results.append(r)
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "vllm-secure-launch",
                        "version": version,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
