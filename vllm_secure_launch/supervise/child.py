"""The child process handle: start the keeper (and so vLLM), signal its process group, kill
its tree, reap, and turn a wait status into an exit code.

    launcher ── keeper.py (own session + process group; subreaper) ── vLLM ── engines, workers

The launcher's direct child is the stdlib keeper (see keeper.py for why). Everything here is
an OS effect on that one tree; the loop decides *when* (phases, deadlines), this module only
knows *how*.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import sys
from dataclasses import dataclass
from typing import Mapping

from vllm_secure_launch.errors import LauncherError
from vllm_secure_launch.exitcodes import ExitCode
from vllm_secure_launch.supervise import listeners as procnet
from vllm_secure_launch.supervise.keeper import signal_all

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
WATCHED = (*STOP_SIGNALS, signal.SIGCHLD)


def keeper_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "keeper.py")


def keeper_argv(parent: int, grace: float, argv: tuple[str, ...]) -> list[str]:
    """The launcher's direct child: the stdlib keeper, isolated (-I -S) from the child env's
    PYTHON* variables and from site-packages, followed by the planned argv unchanged."""
    return [sys.executable, "-I", "-S", keeper_path(), "--parent", str(parent),
            "--grace", f"{grace:g}", "--", *argv]


def resolve_command(argv: tuple[str, ...], env: Mapping[str, str]) -> str:
    """The executable vLLM's argv[0] names, or a LauncherError with exit 127 / 126."""
    if not argv:
        raise LauncherError("the plan has no command to run", code=ExitCode.INTERNAL)
    cmd = argv[0]
    found = cmd if "/" in cmd else shutil.which(cmd, mode=os.F_OK, path=env.get("PATH", os.defpath))
    if found is None or not os.path.exists(found):
        raise LauncherError(
            f"vLLM's command {cmd!r} was not found",
            "the launcher starts vLLM with the planned command line and it does not exist",
            "install vLLM into the launcher's Python environment or set --vllm-command "
            "(env VSL_VLLM_COMMAND) to an existing command",
            code=ExitCode.NOT_FOUND,
        )
    if os.path.isdir(found) or not os.access(found, os.X_OK):
        raise LauncherError(
            f"vLLM's command {found!r} cannot be executed",
            "it is a directory or lacks execute permission for this user",
            "point --vllm-command (env VSL_VLLM_COMMAND) at an executable file",
            code=ExitCode.CANNOT_EXECUTE,
        )
    return found


def remove_private_dir(path: str) -> None:
    """Remove the run's private directory once vLLM's tree is gone (best effort: a run
    directory per start would otherwise pile up under the runtime dir). shutil.rmtree unlinks
    symlinks inside it (the torch cache link) without following them."""
    import shutil

    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
        shutil.rmtree(path, ignore_errors=True)


def make_private_dir(path: str) -> None:
    """Create `path` 0700, owned by us; refuse one that another user owns or a symlink.

    vLLM puts its ZMQ ipc:// sockets there (VLLM_RPC_BASE_PATH); anyone who can connect to
    them can drive the engine, so the directory must be ours alone before vLLM starts.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise LauncherError(
                f"the private RPC directory {path} is not a directory owned by this user",
                "vLLM's internal sockets would be reachable by its owner",
                "remove it, or choose another parent with VSL_RUNTIME_DIR ([launcher] "
                "runtime_dir in the policy)",
                code=ExitCode.REFUSED,
            )
        os.chmod(path, 0o700)
    except OSError as exc:
        raise LauncherError(
            f"cannot create the private RPC directory {path}: {exc.strerror}",
            "vLLM's internal ipc:// sockets need a private directory",
            "make its parent writable, or choose another parent with VSL_RUNTIME_DIR "
            "([launcher] runtime_dir in the policy)",
            code=ExitCode.REFUSED,
        ) from None


def exit_code(status: int) -> int:
    """A wait status as the shell shows it: the exit code, or 128+N after signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def is_zombie(stat_line: bytes) -> bool:
    """Whether a /proc/PID/stat line is a zombie's (the comm may hold spaces and parens)."""
    end = stat_line.rfind(b")")
    return stat_line[end + 2 : end + 3] == b"Z"


def _gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return is_zombie(fh.read())
    except OSError:
        return True


@dataclass
class Child:
    """The keeper process: its pid once spawned, its exit code (vLLM's) once reaped."""

    pid: int | None = None
    code: int | None = None

    @property
    def running(self) -> bool:
        return self.pid is not None and self.code is None

    def spawn(self, argv: tuple[str, ...], env: Mapping[str, str],
              grace: float) -> list[tuple[int, int]]:
        """Start the keeper with vLLM's stdout/stderr on pipes; returns [(read end, our fd)]."""
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        actions = [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
        try:
            self.pid = os.posix_spawn(
                sys.executable,
                keeper_argv(os.getpid(), grace, argv),
                dict(env),
                file_actions=actions,
                setsid=True,  # own session and process group: signals reach the whole tree
                setsigmask=(),  # empty mask: a blocked SIGTERM would be inherited across exec
                setsigdef=(*WATCHED, signal.SIGPIPE, signal.SIGXFSZ),  # as subprocess does
            )
        except OSError as exc:
            os.close(out_r)
            os.close(err_r)
            raise LauncherError(
                f"cannot start the keeper process: {exc.strerror}",
                "the launcher starts vLLM through a small helper of its own",
                "check that the launcher's Python interpreter can be executed",
                code=ExitCode.CANNOT_EXECUTE,
            ) from None
        finally:
            os.close(out_w)
            os.close(err_w)
        return [(out_r, 1), (err_r, 2)]

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the keeper's process group (vLLM's too), as a terminal would."""
        if self.pid is None or self.code is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill_descendants(self) -> None:
        """SIGKILL every live descendant but the keeper (it still has vLLM's status to give)."""
        signal_all([p for p in live_descendants() if p != self.pid], signal.SIGKILL)

    def kill_all(self) -> None:
        """SIGKILL the keeper's group and then every live descendant that is left."""
        if self.pid is None or self.code is not None:
            return
        self.signal_group(signal.SIGKILL)
        signal_all(live_descendants(), signal.SIGKILL)

    def reap(self) -> bool:
        """Reap every child we have (as PID 1 or subreaper every orphan of the tree is ours);
        True when the keeper was among them."""
        keeper_done = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return keeper_done
            if pid == 0:
                return keeper_done
            if pid == self.pid:
                self.code = exit_code(status)
                keeper_done = True


def live_descendants() -> list[int]:
    """Every process below the launcher that is not dead (zombies are dead, awaiting reaping)."""
    return [p for p in procnet.descendants(os.getpid()) if not _gone_or_zombie(p)]
