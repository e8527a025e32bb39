"""GET /health on the planned API endpoint (TCP, TLS or unix socket), one probe at a time.

The supervisor owns the loop (it also forwards output and signals while it waits), so this
module gives single, bounded probes plus the backoff schedule between them.

Why probing is cheap during the load: vLLM binds its HTTP socket early but only listen()s
after startup (shared/reference/vllm-0.32-surface.md §1.3), so a connect before readiness is
refused at once instead of hanging.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass

from vllm_secure_launch.plan.model import ApiEndpoint


@dataclass(frozen=True)
class Probe:
    ok: bool
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Backoff:
    """Delay before probe number n (0-based): initial * factor**n, capped.

    The cap bounds how late readiness is noticed (time-to-ready overhead); a probe before
    readiness is a refused connect (vLLM binds early, listens late), so 5 per second cost
    next to nothing even during a many-minute load.
    """

    initial: float = 0.05
    factor: float = 1.5
    cap: float = 0.2

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.initial * (self.factor ** min(attempt, 64)))


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _connection(api: ApiEndpoint, timeout: float) -> http.client.HTTPConnection:
    if api.uds:
        return _UnixHTTPConnection(api.uds, timeout)
    if api.host is None or api.port is None:
        raise ValueError("API endpoint has neither host:port nor a unix socket")
    if api.tls:
        # The probe checks liveness, not identity: the service may use a private CA or a
        # certificate for a public name; the address itself is the launcher's own plan.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(api.host, api.port, timeout=timeout, context=ctx)
    return http.client.HTTPConnection(api.host, api.port, timeout=timeout)


def probe(api: ApiEndpoint, timeout: float = 2.0, path: str = "/health") -> Probe:
    """One GET /health; ok only on status 200."""
    conn = _connection(api, timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return Probe(resp.status == 200, resp.status)
    except (OSError, http.client.HTTPException) as exc:
        return Probe(False, None, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
