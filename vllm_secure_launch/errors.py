"""Errors that reach the user as one clear paragraph: what, why, how to fix."""

from __future__ import annotations

from vllm_secure_launch.exitcodes import ExitCode


class LauncherError(Exception):
    """An expected failure with a user-facing explanation and an exit code.

    `what` says what went wrong, `why` why it matters or what caused it, `fix` how to fix it.
    Never put a secret in any of them.
    """

    def __init__(self, what: str, why: str = "", fix: str = "", code: int = ExitCode.USAGE):
        super().__init__(what)
        self.what = what
        self.why = why
        self.fix = fix
        self.code = int(code)

    def paragraph(self) -> str:
        parts = [self.what.rstrip(".") + "."]
        if self.why:
            parts.append(self.why.rstrip(".") + ".")
        if self.fix:
            parts.append("Fix: " + self.fix.rstrip(".") + ".")
        return " ".join(parts)


class UsageError(LauncherError):
    def __init__(self, what: str, why: str = "", fix: str = ""):
        super().__init__(what, why, fix, ExitCode.USAGE)


class PolicyFileError(LauncherError):
    """A policy file that cannot be read or does not validate (usage error, exit 2)."""

    def __init__(self, what: str, why: str = "", fix: str = ""):
        super().__init__(what, why, fix, ExitCode.USAGE)
