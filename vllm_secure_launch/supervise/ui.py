"""The launcher's own output on stderr during `serve`.

Every line is prefixed `vllm-secure-launch:` (text) or is one JSON object (--log-format json),
so it cannot be mistaken for vLLM's own output, which passes through byte for byte. When stderr
is a terminal a live status line (phase, elapsed time) sits at the bottom; it is cleared before
any other output and redrawn after it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable

from vllm_secure_launch.findings import Finding

PREFIX = "vllm-secure-launch:"


@dataclass
class UI:
    stream: IO[str] = field(default_factory=lambda: sys.stderr)
    log_format: str = "text"  # text | json
    tty: bool | None = None  # None: ask the stream
    clock: Callable[[], float] = time.monotonic
    _status: str = ""
    _status_shown: bool = False
    _last_draw: float = float("-inf")
    _bol: dict[int, bool] = field(default_factory=dict)  # fd -> last passthrough byte was '\n'

    def __post_init__(self) -> None:
        if self.tty is None:
            try:
                self.tty = self.stream.isatty()
            except (AttributeError, ValueError):
                self.tty = False

    # -- the launcher's own lines -----------------------------------------------------------

    def event(self, level: str, message: str, **fields: Any) -> None:
        self._clear_status()
        if self.log_format == "json":
            doc = {
                "ts": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
                "source": "vllm-secure-launch",
                "level": level,
                "msg": message,
            }
            doc.update({k: v for k, v in fields.items() if v is not None})
            line = json.dumps(doc, default=str)
        else:
            tag = "" if level == "info" else f"{level}: "
            line = f"{PREFIX} {tag}{message}"
        self._write(line + "\n")
        self._redraw_status()

    def info(self, message: str, **fields: Any) -> None:
        self.event("info", message, **fields)

    def warn(self, message: str, **fields: Any) -> None:
        self.event("warning", message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self.event("error", message, **fields)

    def finding(self, f: Finding, **fields: Any) -> None:
        level = {10: "info", 20: "warning", 30: "error"}.get(int(f.severity), "error")
        if self.log_format == "json":
            self.event(level, f.message, event="finding", finding=f.to_dict(), **fields)
        else:
            self.event(level, f"{f.rule_id} [{f.subject}] {f.message} Fix: {f.remedy}.")

    # -- the live status line ----------------------------------------------------------------

    def status(self, phase: str, elapsed: float, detail: str = "", force: bool = False) -> None:
        """Show `phase` and `elapsed` on the terminal's last line (nothing when not a tty)."""
        if not self.tty or self.log_format == "json":
            return
        now = self.clock()
        if not force and now - self._last_draw < 0.5:
            return
        self._last_draw = now
        text = f"{PREFIX} [{_fmt_elapsed(elapsed)}] {phase}"
        if detail:
            text += f" – {detail}"
        self._status = text
        self._status_shown = False
        self._redraw_status()

    def end_status(self) -> None:
        self._clear_status()
        self._status = ""

    def _clear_status(self) -> None:
        if self._status_shown:
            self._write("\r\033[K")
            self._status_shown = False

    def _redraw_status(self) -> None:
        if self.tty and self._status and not self._status_shown and self._bol.get(2, True):
            self._write("\r\033[K" + self._status)
            self._status_shown = True

    # -- vLLM's output ----------------------------------------------------------------------

    def passthrough(self, fd: int, data: bytes) -> None:
        """Write vLLM's bytes unchanged to our fd 1 or 2 (status line out of the way)."""
        if not data:
            return
        self._clear_status()
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass
        _write_all(fd, data)
        self._bol[fd] = data.endswith(b"\n")
        self._redraw_status()

    def _write(self, text: str) -> None:
        if not self._bol.get(2, True) and not text.startswith("\r"):
            text = "\n" + text  # vLLM left a partial line: do not glue ours to it
            self._bol[2] = True
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            continue
        except OSError:
            return  # our own stdout/stderr is gone: drop vLLM's output rather than die
        view = view[n:]


def _fmt_elapsed(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60:d}:{s % 60:02d}"


def make_ui(log_format: str = "text") -> UI:
    """The UI for `serve`: stderr, text or JSON lines, live status line on a terminal."""
    return UI(stream=sys.stderr, log_format=log_format)
