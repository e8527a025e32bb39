"""`probe`: check a running vLLM, from any machine, for routes that answer without a key.

For every route of the inventory (routes.py) one request that changes nothing:
* GET for read-only routes;
* for POST-only inference routes, POST with an unparsable JSON body: FastAPI rejects it (400)
  before the handler runs, so nothing is generated;
* for routes that act (/pause, /sleep, /scale_elastic_ep, /collective_rpc, /start_profile, LoRA
  loading, ...) only GET: 405 means the route exists and nothing stood in front of it (the
  router answered), 401 means an auth layer did, 404 that it is absent. Inferred, never acted;
* for WebSocket routes a handshake, closed as soon as the status line is read.

Standard library only (http.client, ssl, socket). Pure result model; the transport is
injectable so the classification is tested without a server. Only cli/ prints.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from vllm_secure_launch.errors import UsageError
from vllm_secure_launch.findings import Finding, envelope
from vllm_secure_launch.rules import gate_rules
from vllm_secure_launch.surface import routes

OPEN = "open"  # answered without any credential
KEY = "key"  # an auth layer refused the request without a key
ABSENT = "absent"  # 404: not served (or denied by the gate, which looks the same on purpose)
UNCLEAR = "unclear"

REACHABLE = "reachable"  # with the key: the route answers
REFUSED = "refused"  # with the key: still refused (401/403/404)

# Variants of a route the gate denies, sent as GET; none may reach vLLM's router.
TRICK_BASE = "/invocations"
TRICKS = ("//invocations", "/invocations/", "/%69nvocations", "/v1/../invocations",
          "/INVOCATIONS", "/invocations;x", "/v1/models/..%2F..%2Finvocations",
          "/health/../invocations")


@dataclass(frozen=True)
class Response:
    status: int | None  # None = no HTTP response (connection closed or refused)
    body: bytes = b""
    error: str = ""


# send(method, path, headers, body, websocket) -> Response
Transport = Callable[[str, str, dict[str, str], bytes, bool], Response]


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    base_path: str  # --root-path prefix, "" for none

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base_path}"


@dataclass(frozen=True)
class RouteResult:
    path: str
    method: str
    area: str
    sensitivity: str
    default: str  # the gate's default verdict for the route
    verdict: str  # open | key | absent | unclear
    status: int | None
    with_key: str | None = None  # reachable | refused | None (not tried)
    key_status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "method": self.method, "area": self.area,
                "sensitivity": self.sensitivity, "gate_default": self.default,
                "verdict": self.verdict, "status": self.status, "with_key": self.with_key,
                "key_status": self.key_status}


@dataclass(frozen=True)
class TrickResult:
    path: str
    status: int | None
    reached: bool


@dataclass(frozen=True)
class ProbeReport:
    target: str
    results: tuple[RouteResult, ...]
    tricks: tuple[TrickResult, ...]
    findings: tuple[Finding, ...]
    key_used: bool = False
    allowed_open: tuple[str, ...] = field(default_factory=tuple)

    @property
    def open_sensitive(self) -> bool:
        return any(f.blocking for f in self.findings)

    @property
    def decision(self) -> str:
        """The envelope's decision: "fail" (exit 77) when something sensitive is open."""
        return "fail" if self.open_sensitive else "pass"

    def to_dict(self) -> dict[str, Any]:
        """The body of the "probe" report; the findings go in the envelope."""
        return {
            "target": self.target,
            "key_used": self.key_used,
            "allowed_open": list(self.allowed_open),
            "open_sensitive": self.open_sensitive,
            "routes": [r.to_dict() for r in self.results],
            "path_tricks": [{"path": t.path, "status": t.status, "reached": t.reached}
                            for t in self.tricks],
        }


# ---------------------------------------------------------------------------------------------
# Pure classification


def _is_default_not_found(body: bytes) -> bool:
    try:
        return json.loads(body) == {"detail": "Not Found"}
    except ValueError:
        return False


def classify(probe_kind: str, resp: Response) -> str:
    """Verdict for one no-key (or keyed) response, from the route's probe kind."""
    s = resp.status
    if s is None:
        return UNCLEAR
    if s in (401, 403):
        return KEY
    if s == 404:
        # FastAPI's own 404 body (the gate sends the same) = no route; any other 404 body came
        # from a handler (e.g. "response not found") = the route answered.
        return ABSENT if _is_default_not_found(resp.body) else OPEN
    if probe_kind == routes.PROBE_WS:
        return OPEN if s == 101 else UNCLEAR
    if 200 <= s < 300 or s in (400, 405, 422):
        # 400/422: the handler's validation rejected the probe body; 405: the router answered
        # (nothing stood in front of it for this path).
        return OPEN
    return UNCLEAR


def _request_for(route: routes.RouteInfo) -> tuple[str, bytes, bool]:
    if route.probe == routes.PROBE_BAD_JSON:
        return "POST", b"{", False
    if route.probe == routes.PROBE_WS:
        return "GET", b"", True
    return "GET", b"", False  # PROBE_GET and PROBE_GET_405


def _key_result(kind: str, resp: Response) -> str | None:
    v = classify(kind, resp)
    if v == OPEN:
        return REACHABLE
    if v in (KEY, ABSENT):
        return REFUSED
    return None


def run_probe(target: Target, send: Transport, api_key: str | None = None,
              allow_open: Iterable[str] = (),
              inventory: Sequence[routes.RouteInfo] | None = None) -> ProbeReport:
    """Probe every route of `inventory`; by default every route of every known vLLM version
    (routes.every_route()): a route the running version lacks answers 404 and reads as closed,
    so one probe serves a server of any known version."""
    if inventory is None:
        inventory = routes.every_route()
    allowed = tuple(dict.fromkeys(allow_open))
    results: list[RouteResult] = []
    findings: list[Finding] = []
    for route in inventory:
        method, body, ws = _request_for(route)
        headers = {"Content-Type": "application/json"} if body else {}
        resp = send(method, route.probe_path, headers, body, ws)
        verdict = classify(route.probe, resp)
        with_key = key_status = None
        if api_key is not None and verdict == KEY:
            kresp = send(method, route.probe_path,
                         {**headers, "Authorization": f"Bearer {api_key}"}, body, ws)
            with_key, key_status = _key_result(route.probe, kresp), kresp.status
        result = RouteResult(route.path, method if not ws else "WS", route.area,
                             route.sensitivity, route.default, verdict, resp.status, with_key,
                             key_status)
        results.append(result)
        findings.extend(_findings_for(route, result, allowed))
    tricks = []
    for path in TRICKS:
        resp = send("GET", path, {}, b"", False)
        reached = resp.status is not None and (200 <= resp.status < 300 or resp.status == 405)
        tricks.append(TrickResult(path, resp.status, reached))
    base_open = any(r.path == TRICK_BASE and r.verdict == OPEN for r in results)
    if not base_open:
        # Only meaningful where the plain route is closed: a variant that reaches the router
        # then is a way around the gate (or proxy).
        for t in tricks:
            if t.reached:
                findings.append(gate_rules.PROBE_PATH_TRICK.finding(
                    t.path, f"GET {t.path} reached a route (HTTP {t.status}) while "
                    f"{TRICK_BASE} itself is closed"))
    return ProbeReport(target.display, tuple(results), tuple(tricks), tuple(findings),
                       api_key is not None, allowed)


def _findings_for(route: routes.RouteInfo, r: RouteResult,
                  allowed: tuple[str, ...]) -> list[Finding]:
    out: list[Finding] = []
    if route.path in allowed:
        return out
    if r.verdict == OPEN and route.sensitivity != routes.NONE:
        rule = gate_rules.PROBE_OPEN_HIGH if route.sensitivity == routes.HIGH \
            else gate_rules.PROBE_OPEN_LOW
        out.append(rule.finding(route.path, f"{r.method} {route.path} ({route.what}) answered "
                                f"HTTP {r.status} without a key"))
    elif r.with_key == REACHABLE and route.default == routes.DENY:
        out.append(gate_rules.PROBE_DENIED_WITH_KEY.finding(
            route.path, f"{r.method} {route.path} ({route.what}) answered HTTP {r.key_status} "
            "with the API key"))
    elif r.verdict == UNCLEAR:
        out.append(gate_rules.PROBE_UNCLEAR.finding(
            route.path, f"{r.method} {route.path} answered "
            f"{'no response' if r.status is None else 'HTTP ' + str(r.status)}"))
    return out


# ---------------------------------------------------------------------------------------------
# Effects: URL parsing and the http.client transport


def parse_target(url: str) -> Target:
    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"probe URL {url!r} is not an http(s)://HOST[:PORT][/ROOT] URL",
                         fix="give the API's base URL, e.g. http://10.0.0.5:8000")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise UsageError(f"probe URL {url!r} must not carry a query, fragment or credentials",
                         why="a credential in a URL ends up in shell history and logs",
                         fix="pass the key with --api-key-file")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UsageError(f"probe URL {url!r} has an invalid port") from None
    base = parts.path.rstrip("/")
    return Target(parts.scheme, parts.hostname, port, base)


def read_key_file(path: str) -> str:
    from vllm_secure_launch.files import FileProblem, read_text

    try:
        key = read_text(path, limit=64 * 1024).strip()
    except FileProblem as exc:
        raise UsageError(f"cannot read the API key file {path}: {exc.what}",
                         fix=exc.fix) from None
    if not key or "\n" in key:
        raise UsageError(f"the API key file {path} must hold exactly one non-empty line")
    return key


def http_transport(target: Target, timeout: float, insecure: bool) -> Transport:
    ctx: ssl.SSLContext | None = None
    if target.scheme == "https":
        ctx = ssl.create_default_context()
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE

    def connect() -> http.client.HTTPConnection:
        if ctx is not None:
            return http.client.HTTPSConnection(target.host, target.port, timeout=timeout,
                                               context=ctx)
        return http.client.HTTPConnection(target.host, target.port, timeout=timeout)

    def send(method: str, path: str, headers: dict[str, str], body: bytes,
             websocket: bool) -> Response:
        conn = connect()
        hdrs = dict(headers)
        if websocket:
            hdrs.update({"Upgrade": "websocket", "Connection": "Upgrade",
                         "Sec-WebSocket-Version": "13",
                         "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()})
        try:
            # skip_accept_encoding etc. are irrelevant; the path goes out exactly as given.
            conn.putrequest(method, target.base_path + path, skip_accept_encoding=True)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            if body or method == "POST":
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = b"" if websocket or resp.status == 101 else resp.read(65536)
            return Response(resp.status, data)
        except (OSError, http.client.HTTPException) as exc:
            return Response(None, b"", f"{exc.__class__.__name__}: {exc}")
        finally:
            conn.close()

    return send


def check_reachable(target: Target, timeout: float) -> None:
    """Fail early with a usage error (exit 2) when nothing answers at the address."""
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            pass
    except OSError as exc:
        raise UsageError(f"cannot connect to {target.display}: {exc.strerror or exc}",
                         why="probe needs a running server to check",
                         fix="check the URL and that vLLM is up and reachable from here"
                         ) from None


def probe(url: str, *, api_key: str | None = None, timeout: float = 5.0, insecure: bool = False,
          allow_open: Iterable[str] = ()) -> ProbeReport:
    target = parse_target(url)
    check_reachable(target, timeout)
    send = http_transport(target, timeout, insecure)
    first = send("GET", "/health", {}, b"", False)
    if first.status is None:
        raise UsageError(f"{target.display} accepted a connection but gave no HTTP answer "
                         f"({first.error})",
                         fix="check the scheme (http vs https, --insecure for self-signed "
                         "certificates) and the port")
    return run_probe(target, send, api_key, allow_open)


# ---------------------------------------------------------------------------------------------
# Views (strings only; cli prints them)


def render_text(report: ProbeReport) -> str:
    lines = [f"probe {report.target}" + (" (with API key)" if report.key_used else "")]
    width = max(len(r.path) for r in report.results) if report.results else 10
    for r in report.results:
        key = f"  with key: {r.with_key} ({r.key_status})" if r.with_key else ""
        status = "-" if r.status is None else str(r.status)
        lines.append(f"  {r.verdict:<7} {r.method:<6} {r.path:<{width}} {status:>4}  "
                     f"[{r.sensitivity}, gate default {r.default}]{key}")
    reached = [t for t in report.tricks if t.reached]
    lines.append(f"path tricks: {len(report.tricks)} sent, {len(reached)} reached a route")
    opened = [r for r in report.results if r.verdict == OPEN]
    lines.append(f"open without a key: {', '.join(r.path for r in opened) or 'none'}")
    for f in report.findings:
        lines.append(f"{f.severity.label.upper()} {f.rule_id} [{f.subject}] {f.message}")
        lines.append(f"    fix: {f.remedy}")
    lines.append("result: " + ("sensitive routes are open" if report.open_sensitive
                               else "nothing sensitive is open"))
    return "\n".join(lines)


def render_json(report: ProbeReport) -> str:
    """The "probe" report in the one envelope (findings.envelope)."""
    from vllm_secure_launch import __version__

    doc = envelope("probe", report.decision, report.findings, report.to_dict(), __version__)
    return json.dumps(doc, indent=2)


__all__ = ["probe", "run_probe", "classify", "parse_target", "read_key_file", "render_text",
           "render_json", "ProbeReport", "RouteResult", "Response", "Target"]
