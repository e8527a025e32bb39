"""Every JSON document the launcher emits is in the one envelope and valid against
docs/report.schema.json: dry-run plans, check, preflight, probe (against a tiny local HTTP
server) and rules; the schema covers every kind of findings.KINDS and is strict enough to
catch a stray key."""

from __future__ import annotations

import http.server
import json
import pathlib
import threading

import jsonschema
import pytest
from click.testing import CliRunner

from vllm_secure_launch import findings
from vllm_secure_launch.cli.main import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "report.schema.json").read_text())
KEY = "schema-test-key-123"


@pytest.fixture(scope="module")
def validator():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    return jsonschema.Draft202012Validator(SCHEMA)


def emit(*args: str, env: dict | None = None) -> dict:
    # VLLM_CPU_KVCACHE_SPACE: the CPU preflight's need stays below this machine's free memory.
    base = {"VLLM_API_KEY": KEY, "VLLM_CPU_KVCACHE_SPACE": "1", "VSL_POLICY": None}
    r = CliRunner().invoke(cli, list(args), env={**base, **(env or {})})
    assert KEY not in r.output
    return json.loads(r.output)


def assert_valid(validator, doc: dict, kind: str) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message[:300]}" for e in validator.iter_errors(doc)]
    assert not errors, errors
    assert doc["kind"] == kind and doc["schema_version"] == findings.SCHEMA_VERSION
    assert list(doc)[:5] == ["schema_version", "tool", "kind", "decision", "findings"]


PLANS = [
    (("serve", "m"), {}, "start"),
    (("serve", "m", "--host", "0.0.0.0"), {}, "refuse"),
    (("serve", "m", "--trust-remote-code"), {}, "refuse"),
    (("--internal-iface", "lo", "serve", "--model", "m", "--port", "8123"), {}, "start"),
    (("serve", "m", "--uds", "/tmp/vsl-schema-test.sock"), {}, None),
    (("serve", "m"), {"VLLM_API_KEY": ""}, "refuse"),
    (("--accelerator", "cuda", "serve", "m"), {}, "preflight-failed"),
]


@pytest.mark.parametrize("args,env,decision", PLANS)
def test_dry_run_plans_are_valid(validator, args, env, decision):
    doc = emit("--dry-run", "--format", "json", *args, env=env)
    assert_valid(validator, doc, "plan")
    if decision:
        assert doc["decision"] == decision


def test_report_file_is_the_plan_document(validator, tmp_path):
    out = tmp_path / "plan.json"
    printed = emit("--dry-run", "--format", "json", "--report", str(out), "serve", "m")
    written = json.loads(out.read_text())
    assert_valid(validator, written, "plan")
    assert written == printed


@pytest.mark.parametrize("args,decision", [(("m",), "start"),
                                           (("m", "--trust-remote-code"), "refuse")])
def test_check_is_valid(validator, args, decision):
    doc = emit("--format", "json", "check", *args)
    assert_valid(validator, doc, "check")
    assert doc["decision"] == decision
    assert doc["vllm"]["surface"] in ("0.32", "0.33") and doc["vllm"]["why"]  # surface used
    assert decision == "start" or any(f["id"] == "VSL220" for f in doc["findings"])


@pytest.mark.parametrize("args", [("--format", "json", "preflight"),
                                  ("preflight", "--format", "json", "--accelerator", "cuda")])
def test_preflight_is_valid(validator, args):
    doc = emit(*args)
    assert_valid(validator, doc, "preflight")
    assert doc["decision"] == ("preflight-failed" if doc["blocked"] else "start")


def test_rules_is_valid(validator):
    doc = emit("rules", "--format", "json")
    assert_valid(validator, doc, "rules")
    assert {"VSL101", "VSL401"} <= {r["id"] for r in doc["rules"]}


class _Server(http.server.BaseHTTPRequestHandler):
    """A vLLM stand-in: /health and /metrics open, /v1/* behind a key, everything else 404."""

    def _answer(self) -> None:
        path = self.path.split("?")[0]
        if path in ("/health", "/metrics"):
            status, body = 200, b"{}"
        elif path.startswith("/v1/"):
            status, body = 401, b'{"error": "Unauthorized"}'
        else:
            status, body = 404, b'{"detail":"Not Found"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    # a short poll interval: shutdown() waits for it (0.5 s by default, per test)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("extra,decision", [((), "fail"), (("--allow-open", "/metrics"), "pass")])
def test_probe_is_valid(validator, server, extra, decision):
    doc = emit("probe", "--format", "json", "--timeout", "2", *extra, server)
    assert_valid(validator, doc, "probe")
    assert doc["decision"] == decision and doc["open_sensitive"] is (decision == "fail")
    assert {r["path"] for r in doc["routes"] if r["verdict"] == "open"} >= {"/health"}


def test_every_kind_is_covered_by_the_schema():
    assert set(SCHEMA["properties"]["kind"]["enum"]) == set(findings.KINDS)
    covered: set[str] = set()
    for branch in SCHEMA["allOf"]:
        cond = branch["if"]["properties"]["kind"]
        covered |= {cond["const"]} if "const" in cond else set(cond["enum"])
        assert "then" in branch
    assert covered == set(findings.KINDS)


def test_envelope_of_every_kind_validates_and_a_stray_key_does_not(validator):
    doc = emit("--format", "json", "check", "m")
    assert not list(validator.iter_errors(doc))
    for broken in ({**doc, "stray": 1}, {**doc, "schema_version": 1},
                   {**doc, "decision": "maybe"}, {k: v for k, v in doc.items() if k != "tool"},
                   {**doc, "findings": [{"id": "X1"}]}):
        assert list(validator.iter_errors(broken)), broken
    for kind in ("advisories", "render", "run"):
        minimal = findings.envelope(kind, "start", (), {}, "0.0")
        assert not list(validator.iter_errors(minimal)), kind
