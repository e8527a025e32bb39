"""The output pump: copy vLLM's stdout and stderr through the UI byte for byte, and keep the
last lines to explain an early exit.

The pipes are non-blocking; the loop polls them and calls `forward` for each readable one, so
a chatty vLLM never stalls the loop and a silent one never blocks it.

It also notes when a line says that vLLM's API server is about to answer (READY_HINTS): the
loop then probes /health at once instead of at the next backoff step. A hint only moves a
probe earlier; readiness is still GET /health == 200 and a clean audit.
"""

from __future__ import annotations

import collections
import os
from typing import Iterable, Literal

from vllm_secure_launch.supervise.ui import UI

TAIL_LINES = 30
PARTIAL_MAX = 4096  # bytes of an unfinished line kept for the tail (a line without end)
Outcome = Literal["data", "again", "eof"]
# vLLM 0.32/0.33 `entrypoints/openai/api_server.py` logs "Starting vLLM server on …" just before
# uvicorn starts; uvicorn logs "Application startup complete." right before it listen()s.
READY_HINTS = (b"Starting vLLM server on", b"Application startup complete")


class Pump:
    """The pipes' read ends (-> our fd 1 or 2), the unfinished line of each, the tail."""

    def __init__(self, ui: UI, pipes: Iterable[tuple[int, int]] = ()) -> None:
        self.ui = ui
        self.fds: dict[int, int] = {}
        self.partial: dict[int, bytes] = {}
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.hinted = False  # a READY_HINTS line was seen since take_hint() last looked
        for fd, target in pipes:
            self.add(fd, target)

    def add(self, fd: int, target: int) -> None:
        os.set_blocking(fd, False)
        self.fds[fd] = target

    def forward(self, fd: int) -> Outcome:
        """Copy what vLLM wrote to our own fd: "data", "again" (nothing now) or "eof"."""
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return "again"
        except OSError:
            return "eof"
        if not data:
            return "eof"
        self.ui.passthrough(self.fds[fd], data)
        self.keep(fd, data)
        return "data"

    def keep(self, fd: int, data: bytes) -> None:
        """Add the complete lines of `data` to the tail; hold back the unfinished rest."""
        buf = self.partial.get(fd, b"") + data
        *lines, rest = buf.split(b"\n")
        self.partial[fd] = rest[-PARTIAL_MAX:]
        for ln in lines:
            self.tail.append(ln.decode(errors="replace").rstrip("\r"))
            if any(h in ln for h in READY_HINTS):
                self.hinted = True

    def take_hint(self) -> bool:
        """Whether a line said the API server is about to answer (once per such line)."""
        hinted, self.hinted = self.hinted, False
        return hinted

    def close(self, fd: int) -> None:
        os.close(fd)
        del self.fds[fd]

    def drain(self) -> None:
        """Forward what the tree wrote last, before it died, and close every pipe."""
        for fd in list(self.fds):
            while self.forward(fd) == "data":
                pass
            self.close(fd)

    def close_all(self) -> None:
        for fd in list(self.fds):
            self.close(fd)

    def saw(self, text: str) -> bool:
        return any(text in ln for ln in self.tail)

    def last_lines(self, n: int = 12) -> list[str]:
        """The last `n` non-blank lines, to show when vLLM failed."""
        return [ln for ln in self.tail if ln.strip()][-n:]
