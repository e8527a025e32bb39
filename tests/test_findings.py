"""One Finding type; text, JSON and SARIF are views of the same list; waivers stay visible."""

from __future__ import annotations

import json

from vllm_secure_launch.findings import (
    Finding,
    Severity,
    apply_waivers,
    blocking,
    findings_json,
    render_sarif,
    render_text,
)

F1 = Finding("VSL101", Severity.ERROR, "--host", "wildcard", "use 127.0.0.1")
F2 = Finding("VSL902", Severity.INFO, "--x", "unknown", "check spelling")


def test_severity_is_ordered():
    assert Severity.INFO < Severity.WARNING < Severity.ERROR
    assert Severity.parse("Warning") is Severity.WARNING


def test_waiver_unblocks_but_stays_in_every_view():
    fs = apply_waivers([F1, F2], {"VSL101": "lab"})
    assert not blocking(fs)
    assert "waived: lab" in render_text(fs)
    assert findings_json(fs)[0]["waived"] == "lab"
    sarif = render_sarif(fs, {"VSL101": ("t", "r")}, "0")
    res = sarif["runs"][0]["results"]
    assert res[0]["suppressions"][0]["justification"] == "lab"


def test_views_agree():
    fs = [F2, F1]
    js = findings_json(fs)
    assert [d["id"] for d in js] == ["VSL101", "VSL902"]  # errors first
    assert set(js[0]) == {"id", "severity", "subject", "message", "remedy"}
    sarif = render_sarif(fs, {}, "0.1")
    json.dumps(sarif)
    assert sarif["version"] == "2.1.0"
    assert [r["ruleId"] for r in sarif["runs"][0]["results"]] == ["VSL101", "VSL902"]
    assert [r["level"] for r in sarif["runs"][0]["results"]] == ["error", "note"]
    text = render_text(fs)
    assert text.index("VSL101") < text.index("VSL902")
