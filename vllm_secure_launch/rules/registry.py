"""Rule registry: stable IDs, titles, default severity, remedy. An ID is never reused.

Families (shared/DESIGN.md): VSL1xx network, 2xx endpoints/auth, 3xx cluster, 4xx environment,
5xx preflight, 6xx audit and supervision, 7xx Ray, 9xx internal. Each family module declares a
tuple `RULES` of `Rule`; `all_rules()` collects them. The rule's doc is its documentation
(`vllm-secure-launch rules` prints it).
"""

from __future__ import annotations

from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.records import record


@record
class Rule:
    id: str
    title: str
    severity: Severity
    remedy: str
    doc: str = ""

    def finding(
        self,
        subject: str,
        message: str,
        *,
        severity: Severity | None = None,
        remedy: str | None = None,
    ) -> Finding:
        return Finding(
            rule_id=self.id,
            severity=self.severity if severity is None else severity,
            subject=subject,
            message=message,
            remedy=self.remedy if remedy is None else remedy,
        )
