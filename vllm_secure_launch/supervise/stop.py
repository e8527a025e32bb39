"""Stopping vLLM's tree: the stop signal to its process group, SIGKILL for every descendant
after the grace, and for the keeper too when it has not exited KEEPER_LAST seconds later.

The loop says when a stop begins and calls `tick` on every pass; the deadlines here are what
it must wake up for.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Callable

from vllm_secure_launch.supervise.child import Child
from vllm_secure_launch.supervise.ui import UI

KEEPER_LAST = 2.0  # seconds the keeper gets to report vLLM's status after the tree is killed


@dataclass
class Stopper:
    child: Child
    ui: UI
    grace: float
    clock: Callable[[], float]
    deadline: float | None = None  # SIGKILL for the tree (set when the stop begins)
    killed: bool = False
    keeper_deadline: float = float("inf")  # SIGKILL for the keeper too (once killed)

    def begin(self, reason: str, sig: int) -> None:
        """Send `sig` to the process group and start the grace; SIGKILL kills at once."""
        self.deadline = self.clock() + self.grace
        if sig == signal.SIGKILL:
            self.kill(reason)  # the keeper is spared briefly: it reports vLLM's status
            return
        self.ui.info(
            f"stopping vLLM ({reason}): {signal.Signals(sig).name} to its process group, "
            f"SIGKILL after {self.grace:g} s",
            event="stopping", reason=reason,
        )
        self.child.signal_group(sig)

    def tick(self, now: float, stopping: bool) -> None:
        due = self.deadline is not None and now >= self.deadline
        if stopping and due and not self.killed:
            self.kill(f"still running {self.grace:g}s after the stop signal")
        if self.killed and self.child.code is None and now >= self.keeper_deadline:
            self.kill("the keeper did not exit", keeper_too=True)

    def deadlines(self, stopping: bool) -> list[float]:
        out = []
        if stopping and self.deadline is not None and not self.killed:
            out.append(self.deadline)
        if self.killed and self.child.code is None:
            out.append(self.keeper_deadline)
        return out

    def kill(self, why: str, keeper_too: bool = False) -> None:
        """SIGKILL every descendant. The keeper is spared for KEEPER_LAST seconds so that it can
        still report vLLM's own exit status (vLLM may have exited already, with its
        descendants lingering); then it goes too."""
        if not self.killed:
            self.ui.warn(f"{why}: killing every process of vLLM's tree", event="kill")
        self.killed = True
        self.keeper_deadline = self.clock() + KEEPER_LAST
        self.child.kill_descendants()
        if keeper_too:
            self.child.kill_all()
