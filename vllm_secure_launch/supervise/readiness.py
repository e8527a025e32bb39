"""GET /health on the planned API endpoint (TCP, TLS or unix socket), one probe at a time.

The supervisor owns the loop (it also forwards output and signals while it waits), so this
module gives single, bounded probes, the backoff schedule between them, and the bookkeeping
of the two waits (ReadyWait while loading, HealthWatch while serving).

Why probing is cheap during the load: vLLM binds its HTTP socket early but only listen()s
after startup (shared/reference/vllm-0.32-surface.md §1.3), so a connect before readiness is
refused at once instead of hanging.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from typing import Iterable

from vllm_secure_launch.plan.model import ApiEndpoint
from vllm_secure_launch.supervise.audit import Listener, canonical_ip, is_loopback


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


# After a readiness hint (pump.READY_HINTS): 10, 15, 22, 34, 51 ms … up to the same cap.
HINTED = Backoff(initial=0.01)


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


@dataclass
class ReadyWait:
    """While vLLM loads: when the next probe is due (backoff) and when waiting ends."""

    api: ApiEndpoint
    deadline: float
    next_probe: float
    backoff: Backoff = Backoff()
    attempt: int = 0

    def due(self, now: float) -> bool:
        return now >= self.next_probe

    def probe(self, now: float) -> Probe:
        """One probe, bounded by the time left (at least 0.2 s, at most 2 s)."""
        return probe(self.api, timeout=min(2.0, max(0.2, self.deadline - now)))

    def retry(self, now: float) -> None:
        """The probe failed: schedule the next one from `now` (after the probe returned)."""
        self.attempt += 1
        self.next_probe = now + self.backoff.delay(self.attempt)

    def hint(self, now: float) -> None:
        """vLLM said its API server is about to answer: probe now, then on HINTED steps (its
        socket listens a few ms after the line), so /health 200 is seen within ~10 ms and not
        up to a whole backoff step (200 ms) late."""
        self.backoff = HINTED
        self.attempt = 0
        self.next_probe = min(self.next_probe, now)

    def expired(self, now: float) -> bool:
        return now >= self.deadline


def follower_listeners(internal_ip: str | None, listeners: Iterable[Listener]
                       ) -> list[Listener]:
    """What makes a headless follower ready (it has no API server, so no /health): the
    listeners of vLLM's tree on this node's internal address. A follower's engines open them
    when they join the head's process groups over the internal network (gloo/NCCL/HCCL pairs
    listen on the address of GLOO/NCCL/HCCL_SOCKET_IFNAME, which is this address; so do the DP
    engines' groups), so their presence is what /proc can show of "joined the head", and the
    audit judges them before READY. A plan without an internal address (an engine-only node
    on one host) counts its loopback listeners instead."""
    if internal_ip:
        want = canonical_ip(internal_ip)
        return [lst for lst in listeners if canonical_ip(lst.address) == want]
    return [lst for lst in listeners if is_loopback(lst.address)]


def hang_probe_interval(hang_timeout: float) -> float | None:
    """Seconds between health probes without a systemd watchdog: a few per hang timeout
    (at most every 5 s), or None (no probes) when the hang check is off."""
    if not hang_timeout > 0:
        return None
    return min(5.0, max(0.5, hang_timeout / 4))


@dataclass
class HealthWatch:
    """While serving: GET /health once per systemd watchdog interval (else per
    hang_probe_interval; none when both are off)."""

    api: ApiEndpoint
    interval: float | None
    next: float | None = None
    ok: bool = True
    failing_since: float | None = None  # when the current run of failed probes began

    def start(self, now: float) -> None:
        if self.interval is not None:
            self.next = now

    def due(self, now: float) -> bool:
        return self.next is not None and now >= self.next

    def check(self, now: float) -> Probe | None:
        """Probe now; returns the probe when the answer changed (lost or back), else None.
        A headless node has no API server: it counts as healthy."""
        interval = self.interval or 1.0
        self.next = now + interval
        result = (Probe(True, 200, None) if self.api.headless
                  else probe(self.api, timeout=min(2.0, interval)))
        if result.ok:
            self.failing_since = None
        elif self.failing_since is None:
            self.failing_since = now
        if result.ok == self.ok:
            return None
        self.ok = result.ok
        return result

    def hung(self, now: float, timeout: float) -> bool:
        """Whether no probe has succeeded for `timeout` seconds (0: the check is off)."""
        since = self.failing_since
        return timeout > 0 and since is not None and now - since >= timeout
