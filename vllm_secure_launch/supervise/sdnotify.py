"""sd_notify(3) without libsystemd: one datagram per message to $NOTIFY_SOCKET.

A no-op without NOTIFY_SOCKET (not under systemd Type=notify). '@name' is an abstract socket
(leading NUL byte). Send errors are swallowed: a notification that cannot be delivered must
never take the service down (systemd then times out and acts on its own).

Sends never block: a unix datagram sendto() waits while the receiver's queue is full, and the
supervisor's loop must keep forwarding signals and output. A message that finds the queue full
is kept (at most MAX_PENDING, oldest dropped first) and sent again by the next send() or
flush(), so READY=1 and STOPPING=1 are not lost to a slow reader.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Mapping

MAX_PENDING = 32


def socket_address(value: str) -> str | bytes | None:
    """The AF_UNIX address of a NOTIFY_SOCKET value, or None when unusable."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock:… and relative paths are not supported


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked for.

    WATCHDOG_PID, when set, names the process systemd expects the pings from.
    """
    usec = environ.get("WATCHDOG_USEC", "")
    wpid = environ.get("WATCHDOG_PID", "")
    if not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
        return None
    if wpid and (not (wpid.isascii() and wpid.isdigit()) or int(wpid) != pid):
        return None
    return int(usec) / 2e6


@dataclass
class Notifier:
    """Sends sd_notify messages; `enabled` is False (every call a no-op) without a socket."""

    address: str | bytes | None
    _sock: socket.socket | None = field(default=None, repr=False)
    _pending: deque = field(default_factory=lambda: deque(maxlen=MAX_PENDING), repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        return cls(socket_address(value) if value else None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Queue one message and send what is queued; True when this one went out."""
        if self.address is None:
            return False
        self._pending.append("\n".join(lines).encode())
        return self.flush()

    def flush(self) -> bool:
        """Send queued messages in order; False when some are still waiting (or failed)."""
        if self.address is None:
            return False
        while self._pending:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                    )
                self._sock.sendto(self._pending[0], self.address)
            except (BlockingIOError, InterruptedError):
                return False  # the reader is behind: try again later
            except OSError:
                self._pending.clear()  # nobody listens there: drop, never fail the service
                return False
            self._pending.popleft()
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_one_line(text)}")

    def extend_timeout(self, seconds: float) -> bool:
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())
