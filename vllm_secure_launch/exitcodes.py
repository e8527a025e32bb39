"""The one exit-code table (shared/DESIGN.md). Only the CLI layer turns results into codes."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    USAGE = 2
    PREFLIGHT_FAILED = 69
    INTERNAL = 70
    NOT_READY = 75
    EXITED_UNASKED = 76
    AUDIT_FAILED = 77
    REFUSED = 78
    HUNG = 79
    CANNOT_EXECUTE = 126
    NOT_FOUND = 127


def from_wait_status(returncode: int) -> int:
    """Map a child's return code (negative = killed by signal) to the launcher's exit code."""
    if returncode < 0:
        return 128 + (-returncode)
    return returncode


TABLE = (
    (0, "success (dry-run/check/preflight: would start; serve: vLLM exited 0)"),
    (2, "command-line usage error"),
    (69, "preflight failed (no or unhealthy accelerator, too few devices, too little memory)"),
    (70, "internal error of the launcher"),
    (75, "vLLM did not become healthy in time"),
    (76, "vLLM exited with code 0 although the launcher had not asked it to stop (e.g. its "
         "engine core died): a failure, so that Restart=on-failure restarts the service"),
    (77, "the socket audit found a forbidden listener (vLLM was stopped), or probe found open routes"),
    (78, "refused by policy; nothing was started"),
    (79, "vLLM hung: GET /health failed for --hang-timeout seconds while serving; the launcher "
         "SIGKILLed its tree"),
    (126, "vLLM could not be executed"),
    (127, "vLLM was not found"),
    (-1, "other: vLLM's own exit code; 128+N when vLLM was killed by signal N"),
)
