"""The keeper: a tiny stdlib-only process between the launcher and vLLM.

    python -I -S keeper.py --parent PID --grace SECONDS -- ARGV...

Why it exists: PR_SET_PDEATHSIG only reaches the *direct* child of a dying process. vLLM's
engine-core and worker processes are grandchildren of the launcher and survive it (a known vLLM
problem). So the launcher's direct child is this keeper, which

* sets its own parent-death signal and then checks getppid() against --parent (the launcher
  may have died before prctl; checking afterwards closes that race);
* marks itself child subreaper, so every process of vLLM's tree that loses its parent is
  re-parented to the keeper and stays findable;
* fork()s vLLM with an empty signal mask and PR_SET_PDEATHSIG=SIGKILL, then execs ARGV
  exactly (environment inherited unchanged from the launcher's plan);
* when the launcher dies (even from SIGKILL), SIGKILLs every descendant and exits;
* when vLLM exits, gives its remaining descendants up to --grace seconds, SIGKILLs the rest,
  and exits with vLLM's code (128+N when vLLM died from signal N).

It does no work in signal handlers: signals are blocked and taken with sigwaitinfo(). It never
forwards the launcher's stop signals: the launcher signals the whole process group (keeper and
vLLM share it), so vLLM sees exactly one signal, as it would from a terminal.

Only the standard library, and nothing of the launcher, is imported: it runs with -I -S.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
DEATH_SIGNAL = signal.SIGUSR2  # our parent-death signal: nothing else sends it to the keeper
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
EXIT_INTERNAL = 70
EXIT_REFUSED = 78
# Set by the launcher when the firewall is on (firewall/enforce.py); never passed on to vLLM.
FIREWALL_RULESET, FIREWALL_CGROUP = "VSL_FIREWALL_RULESET", "VSL_FIREWALL_CGROUP"


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _say(text: str) -> None:
    try:
        os.write(2, f"vllm-secure-launch: keeper: {text}\n".encode())
    except OSError:
        pass


def ppid_map() -> dict[int, int]:
    """pid -> ppid for every process (/proc/PID/stat; the comm may hold spaces and parens).
    Shared with the launcher (procnet), which may import this stdlib-only module."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2 :].split()
        if len(rest) > 1:
            out[int(entry)] = int(rest[1])
    return out


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for pid, ppid in ppid_map().items():
        out.setdefault(ppid, []).append(pid)
    return out


def descendants(root: int) -> list[int]:
    children = _children_map()
    out: list[int] = []
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap() -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        out.append((pid, status))


def _live(pids: list[int]) -> list[int]:
    """Descendants that are not zombies (a zombie is dead, only waiting to be reaped)."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if data[data.rfind(b")") + 2 : data.rfind(b")") + 3] != b"Z":
            out.append(pid)
    return out


def kill_tree(me: int, grace: float) -> None:
    """SIGTERM every descendant, wait up to `grace`, SIGKILL what is left, reap everything."""
    if grace > 0:
        signal_all(_live(descendants(me)), signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _live(descendants(me)) and time.monotonic() < deadline:
            _reap()
            time.sleep(0.05)
    for _ in range(50):  # processes may fork while we kill: repeat until none is left
        left = _live(descendants(me))
        if not left:
            break
        signal_all(left, signal.SIGKILL)
        _reap()
        time.sleep(0.02)
    _reap()


def _exec_child(argv: list[str], keeper: int, mask: set[int], procs: str | None = None,
                gate: int | None = None) -> None:
    """In the forked child: parent-death signal, race check, enter the cgroup, wait for the
    table (`gate`), empty mask, exec. Never returns."""
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != keeper:
            os._exit(EXIT_INTERNAL)
        try:
            _join_cgroup(procs)
        except OSError as exc:
            _say(f"firewall: cannot enter the cgroup {procs}: {exc.strerror}")
            os._exit(EXIT_REFUSED)
        if gate is not None and os.read(gate, 1) != b"1":
            os._exit(EXIT_REFUSED)  # the table did not load (the keeper says why): no exec
        for sig in mask:  # dispositions back to default before the mask opens
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.execvp(argv[0], argv)
    except OSError as exc:
        _say(f"cannot execute {argv[0]!r}: {exc.strerror}")
        os._exit(127 if exc.errno in (errno.ENOENT, errno.ENOTDIR) else 126)
    except BaseException:  # noqa: BLE001 - nothing may escape into the keeper's code
        os._exit(EXIT_INTERNAL)


def _load_table(ruleset: str) -> object:
    """Load the service's nftables table (any error -> the caller refuses with 78). The
    keeper holds the table's netlink socket, so the kernel drops the table when the keeper
    exits, whatever the cause."""
    # -I -S: the package is not importable here, so run the stdlib-only holder by path
    # (exec of its source is cheaper than importlib's machinery: it is on vLLM's start path).
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "firewall", "holder.py")
    with open(path, encoding="utf-8") as fh:
        holder: dict[str, object] = {"__name__": "vsl_firewall_holder"}
        exec(compile(fh.read(), path, "exec"), holder)  # noqa: S102 - our own file
    return holder["Table"](ruleset)  # type: ignore[operator]


def _join_cgroup(procs: str | None) -> None:
    """In the forked child, before exec: enter vLLM's cgroup, so every socket of the tree
    is created inside it and matched by the table from its first instant."""
    if procs is not None:
        with open(procs, "w") as fh:
            fh.write("0")


def _remove_cgroup(path: str) -> None:
    for _ in range(50):  # the last exiting processes may leave the cgroup a moment later
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run(parent: int, grace: float, argv: list[str]) -> int:
    watched: set[int] = {signal.SIGCHLD, DEATH_SIGNAL, *STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    _prctl(PR_SET_PDEATHSIG, DEATH_SIGNAL)
    if os.getppid() != parent:  # the launcher died before prctl took effect
        return EXIT_INTERNAL
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    ruleset = os.environ.pop(FIREWALL_RULESET, None)  # never passed on to vLLM
    cgroup = os.environ.pop(FIREWALL_CGROUP, None)
    if ruleset is None or cgroup is None:
        ruleset = cgroup = None
    procs = None if cgroup is None else os.path.join(cgroup, "cgroup.procs")
    # With the firewall, the child is forked first and waits on `gate` before exec: its move
    # into the cgroup (the kernel waits for an RCU grace period, ~10 ms) then overlaps the
    # table load instead of following it, and it never inherits the table's netlink socket.
    gate, release = os.pipe() if ruleset is not None else (None, None)
    me = os.getpid()
    child = os.fork()
    if child == 0:
        if release is not None:
            os.close(release)  # else the child would never see EOF when the table fails
        _exec_child(argv, me, {int(s) for s in watched}, procs, gate)
    table = None
    if ruleset is not None and gate is not None and release is not None:
        os.close(gate)
        try:
            table = _load_table(ruleset)
        except Exception as exc:  # noqa: BLE001 - fail closed: no vLLM without its firewall
            _say(f"firewall: the nftables table could not be loaded ({exc}); nothing was "
                 "started")
            os.close(release)  # the child reads EOF and exits without exec
            os.waitpid(child, 0)
            return EXIT_REFUSED
        os.write(release, b"1")
        os.close(release)
    try:
        return _supervise(parent, grace, child, watched)
    finally:
        if table is not None:
            table.close()  # type: ignore[attr-defined]
        if cgroup is not None:  # the tree is reaped: the cgroup goes too, even if the
            _remove_cgroup(cgroup)  # launcher died and cannot clean up


def _supervise(parent: int, grace: float, child: int, watched: set[int]) -> int:
    me = os.getpid()
    code: int | None = None
    while True:
        info = signal.sigwaitinfo(watched)
        if os.getppid() != parent:
            # The launcher is gone (any cause, SIGKILL included): nothing may outlive it.
            kill_tree(me, 0)
            return 128 + signal.SIGKILL if code is None else code
        if info.si_signo != signal.SIGCHLD:
            continue  # a stop signal: vLLM got it too (process group); the launcher decides
        for pid, status in _reap():
            if pid == child:
                code = exit_code(status)
        if code is not None:
            kill_tree(me, grace)
            return code


def main(args: list[str]) -> int:
    try:
        sep = args.index("--")
        opts, argv = args[:sep], args[sep + 1 :]
        parent = int(opts[opts.index("--parent") + 1])
        grace = float(opts[opts.index("--grace") + 1])
    except (ValueError, IndexError):
        _say("usage: keeper.py --parent PID --grace SECONDS -- ARGV...")
        return 2
    if not argv:
        _say("no command given")
        return 2
    return run(parent, grace, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
