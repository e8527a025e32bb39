"""The launcher's signal set-up for one run: no-op handlers, a wakeup pipe, an open mask.

No work in handlers (shared/DESIGN.md §6): the handlers are empty and `signal.set_wakeup_fd`
writes each signal's number to a pipe that the loop polls with vLLM's output. Everything is
undone in `restore`, so run() leaves the process as it found it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Any

from vllm_secure_launch.supervise.child import WATCHED


def _noop(signum: int, frame: object) -> None:
    """Deliberately empty: set_wakeup_fd has already queued the signal number."""


def drain(fd: int) -> list[int]:
    """The signal numbers set_wakeup_fd queued on the pipe."""
    out: list[int] = []
    while True:
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            return out
        if not data:
            return out
        out.extend(data)


@dataclass
class Signals:
    wake_r: int = -1
    wake_w: int = -1
    old_handlers: dict[int, Any] = field(default_factory=dict)
    old_wakeup: int = -1
    old_mask: set[int] = field(default_factory=set)

    def install(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.old_handlers = {s: signal.signal(s, _noop) for s in WATCHED}
        self.old_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        # A parent may have handed us a blocked mask; our handlers need the signals delivered.
        self.old_mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)

    def restore(self) -> None:
        signal.set_wakeup_fd(self.old_wakeup)
        for s, h in self.old_handlers.items():
            signal.signal(s, h)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old_mask)
        os.close(self.wake_r)
        os.close(self.wake_w)
