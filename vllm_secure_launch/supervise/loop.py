"""Run a Plan: start vLLM, wait for /health, audit its sockets, watch, stop cleanly.

    launcher (this process: child subreaper, PID 1 duties)
      └─ keeper.py      own session + process group; parent-death signal; subreaper
           └─ vLLM      exactly plan.argv / plan.env; empty signal mask; PDEATHSIG=SIGKILL
                └─ engine core, workers, …  (same process group unless they leave it)

Why a keeper: PR_SET_PDEATHSIG only reaches a direct child, and vLLM's engine and workers
survive their parent. The keeper kills the whole tree when the launcher dies, even of SIGKILL
(see keeper.py). The launcher is a subreaper too, so anything the keeper loses is still ours.

Signals: no work in handlers. The handlers are no-ops; `signal.set_wakeup_fd` queues the signal
numbers on a pipe that the single-threaded poll() loop reads together with vLLM's output
(shared/DESIGN.md §6). Stop signals (TERM, INT, HUP, QUIT) go to the whole process group, as a
terminal would send them; after `stop_grace` every descendant is SIGKILLed.

vLLM's stdout and stderr are piped through byte for byte (the launcher keeps the last lines to
explain an early exit, and keeps its terminal status line out of the way).

Exit code (shared/DESIGN.md): vLLM's own, 128+N when it died from signal N, 75 when it was not
healthy in time, 77 when the audit (enforce) found a forbidden listener, 126/127 when it could
not be executed / found. Only the cli package prints; this module talks through `ui`.
"""

from __future__ import annotations

import collections
import json
import os
import select
import shutil
import signal
import stat
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from vllm_secure_launch import __version__
from vllm_secure_launch.errors import LauncherError
from vllm_secure_launch.exitcodes import ExitCode
from vllm_secure_launch.files import write_atomic
from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.plan.model import Plan
from vllm_secure_launch.rules import audit_rules as R
from vllm_secure_launch.supervise import audit, readiness
from vllm_secure_launch.supervise import listeners as procnet
from vllm_secure_launch.supervise.keeper import signal_all
from vllm_secure_launch.supervise.sdnotify import Notifier, watchdog_interval
from vllm_secure_launch.supervise.ui import UI

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
WATCHED = (*STOP_SIGNALS, signal.SIGCHLD)
PR_SET_CHILD_SUBREAPER = 36
EXTEND_EVERY = 10.0  # seconds between EXTEND_TIMEOUT_USEC messages while loading
EXTEND_BY = 30.0  # each one gives systemd this much more start time
TAIL_LINES = 30
KEEPER_LAST = 2.0  # seconds the keeper gets to report vLLM's status after the tree is killed


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


def _prctl(option: int, value: int) -> bool:
    import ctypes  # only here: the launcher does not need ctypes on other paths

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, value, 0, 0, 0) == 0


def _noop(signum: int, frame: object) -> None:
    """Deliberately empty: set_wakeup_fd has already queued the signal number."""


@dataclass
class _Seen:
    verdict: audit.Verdict
    first_seen: float
    last_seen: float
    open: bool = True


@dataclass
class _Run:
    plan: Plan
    ui: UI
    environ: Mapping[str, str]
    clock: Any = time.monotonic
    # -- state of one run (not module state: one _Run per call of run()) --
    phase: str = "starting"
    t0: float = 0.0
    keeper: int | None = None
    keeper_code: int | None = None
    code_override: int | None = None
    stop_deadline: float | None = None
    killed: bool = False
    keeper_deadline: float = float("inf")
    ready_deadline: float = 0.0
    next_probe: float = 0.0
    probe_attempt: int = 0
    next_audit: float = 0.0
    next_watchdog: float | None = None
    next_extend: float = 0.0
    next_status: float = 0.0
    health_ok: bool = True
    audit_clean: bool = True
    audits: int = 0
    ready_sent: bool = False
    findings: dict[tuple[str, str, int | None], Finding] = field(default_factory=dict)
    seen: dict[tuple[int, str, str, int], _Seen] = field(default_factory=dict)
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    partial: dict[int, bytes] = field(default_factory=dict)
    fds: dict[int, int] = field(default_factory=dict)  # pipe read end -> our fd (1 or 2)

    def __post_init__(self) -> None:
        self.sv = self.plan.supervision
        self.notifier = Notifier.from_env(self.environ)
        self.wd_interval = watchdog_interval(self.environ, os.getpid())
        self.scanner = procnet.TreeScanner(os.getpid())
        self.backoff = readiness.Backoff()

    # ---------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.clock() - self.t0

    def set_phase(self, phase: str, detail: str = "") -> None:
        self.phase = phase
        self.ui.status(phase, self.elapsed(), detail, force=True)
        self.notifier.status(f"{phase}{': ' + detail if detail else ''}")

    # -- spawn ------------------------------------------------------------------------------
    def spawn(self) -> bool:
        """Start the keeper (and so vLLM); False when vLLM's command cannot run (126/127)."""
        plan = self.plan
        try:
            resolve_command(plan.argv, plan.env)
        except LauncherError as exc:
            if exc.code not in (ExitCode.NOT_FOUND, ExitCode.CANNOT_EXECUTE):
                raise
            self.record(R.CANNOT_START.finding(
                plan.argv[0] if plan.argv else "vLLM", exc.paragraph(), remedy=exc.fix or None))
            self.code_override = exc.code
            self.phase = "exited"
            return False
        if plan.rpc_dir:
            make_private_dir(plan.rpc_dir)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        actions = [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
        try:
            self.keeper = os.posix_spawn(
                sys.executable,
                keeper_argv(os.getpid(), self.sv.stop_grace, plan.argv),
                dict(plan.env),
                file_actions=actions,
                setsid=True,  # own session and process group: signals reach the whole tree
                setsigmask=(),  # empty mask: a blocked SIGTERM would be inherited across exec
                setsigdef=(*WATCHED, signal.SIGPIPE, signal.SIGXFSZ),  # as subprocess does
            )
        except OSError as exc:
            raise LauncherError(
                f"cannot start the keeper process: {exc.strerror}",
                "the launcher starts vLLM through a small helper of its own",
                "check that the launcher's Python interpreter can be executed",
                code=ExitCode.CANNOT_EXECUTE,
            ) from None
        finally:
            os.close(out_w)
            os.close(err_w)
        for r, target in ((out_r, 1), (err_r, 2)):
            os.set_blocking(r, False)
            self.fds[r] = target
        return True

    # -- the loop ---------------------------------------------------------------------------
    def loop(self, wake_r: int) -> int:
        poller = select.poll()
        poller.register(wake_r, select.POLLIN)
        for r in self.fds:
            poller.register(r, select.POLLIN)
        while True:
            now = self.clock()
            self.tick(now)
            if self.finished():
                break
            timeout = max(0.0, self.next_deadline() - self.clock())
            for fd, _ev in poller.poll(int(timeout * 1000) + 1):
                if fd == wake_r:
                    self.on_signals(_drain(wake_r))
                elif self.forward(fd) == "eof":
                    poller.unregister(fd)
                    os.close(fd)
                    del self.fds[fd]
        for fd in list(self.fds):  # what the tree wrote last, before it died
            while self.forward(fd) == "data":
                pass
            os.close(fd)
        self.fds.clear()
        return self.exit_code()

    def finished(self) -> bool:
        if self.keeper_code is None:
            return False
        left = self.live_descendants()
        if left:
            # The keeper is gone but something it did not catch is still ours: no process of
            # vLLM's tree may outlive the launcher.
            signal_all(left, signal.SIGKILL)
            self.reap()
            return False
        return True

    def next_deadline(self) -> float:
        now = self.clock()
        cands = [now + 1.0, self.next_status]
        if self.phase == "loading":
            cands += [self.next_probe, self.ready_deadline]
            if self.notifier.enabled:
                cands.append(self.next_extend)
        if self.phase == "serving" and self.sv.audit != "off":
            cands.append(self.next_audit)
        if self.phase == "serving" and self.next_watchdog is not None:
            cands.append(self.next_watchdog)
        if self.phase == "stopping" and self.stop_deadline is not None and not self.killed:
            cands.append(self.stop_deadline)
        if self.killed and self.keeper_code is None:
            cands.append(self.keeper_deadline)
        if self.keeper_code is not None:
            cands.append(now + 0.05)
        return min(cands)

    def tick(self, now: float) -> None:
        if self.notifier.pending:
            self.notifier.flush()
        if now >= self.next_status:
            self.next_status = now + 1.0
            self.ui.status(self.phase, self.elapsed(), self.status_detail())
        if self.phase == "loading":
            self.tick_loading(now)
        elif self.phase == "serving":
            self.tick_serving(now)
        elif self.phase == "stopping":
            if not self.killed and self.stop_deadline is not None and now >= self.stop_deadline:
                self.kill_all(f"still running {self.sv.stop_grace:g}s after the stop signal")
        if self.killed and self.keeper_code is None and now >= self.keeper_deadline:
            self.kill_all("the keeper did not exit", keeper_too=True)

    def status_detail(self) -> str:
        if self.phase == "loading" and self.plan.api.headless:
            return "starting headless engines"
        if self.phase == "loading":
            return f"waiting for GET {self.plan.api.url('/health')}"
        if self.phase == "serving":
            return f"{self.plan.api.url()} · {self.audits} audits"
        return ""

    # -- loading ----------------------------------------------------------------------------
    def tick_loading(self, now: float) -> None:
        if self.notifier.enabled and now >= self.next_extend:
            self.next_extend = now + EXTEND_EVERY
            left = max(0.0, self.ready_deadline - now)
            self.notifier.send(
                f"EXTEND_TIMEOUT_USEC={int(min(EXTEND_BY, left + self.sv.stop_grace + 5) * 1e6)}",
                f"STATUS=loading: waiting for vLLM to become healthy ({int(self.elapsed())} s)",
            )
        if self.plan.api.headless:
            # A headless node (--headless, --api-server-count 0) has no API server and so no
            # /health: it counts as ready once started and its first audit is clean; the
            # continuous audit then covers the listeners its engines open later.
            self.ui.info("headless: no API server to wait for; ready after a clean audit",
                         event="healthy", elapsed=round(self.elapsed(), 3))
            self.on_healthy(self.clock())
            return
        if now >= self.next_probe:
            result = readiness.probe(self.plan.api, timeout=min(2.0, max(0.2, self.ready_deadline - now)))
            if result.ok:
                self.ui.info(
                    f"vLLM is healthy after {self.elapsed():.1f} s: {self.plan.api.url()}",
                    event="healthy", elapsed=round(self.elapsed(), 3),
                )
                self.on_healthy(self.clock())
                return
            self.probe_attempt += 1
            self.next_probe = self.clock() + self.backoff.delay(self.probe_attempt)
        if self.clock() >= self.ready_deadline and self.phase == "loading":
            f = R.NOT_READY_IN_TIME.finding(
                self.plan.api.url("/health"),
                f"GET /health did not return 200 within {self.sv.ready_timeout:g} s.",
            )
            self.record(f)
            self.begin_stop("not healthy in time", code=ExitCode.NOT_READY)

    def on_healthy(self, now: float) -> None:
        if self.sv.audit == "off":
            self.ui.warn("socket audit is off (--audit off): listeners are not checked")
            self.go_serving(now)
            return
        self.set_phase("auditing")
        if self.run_audit(now, force=True):
            self.go_serving(now)

    def go_serving(self, now: float) -> None:
        self.set_phase("serving")
        self.ui.end_status()
        api = self.plan.api
        how = (
            f"curl --unix-socket {api.uds} http://localhost/v1/models"
            if api.uds
            else f"curl {api.url('/v1/models')}"
        )
        if api.headless:
            self.ui.info(f"running headless; audit: {self.sv.audit}", event="ready",
                         url=api.url(), audit=self.sv.audit)
        else:
            self.ui.info(
                f"serving on {api.url()}; audit: {self.sv.audit}; try: {how} "
                "-H 'Authorization: Bearer $KEY'",
                event="ready", url=api.url(), audit=self.sv.audit,
            )
        self.ready_sent = self.notifier.ready(f"serving on {api.url()}")
        self.next_audit = now + self.sv.audit_interval
        if self.wd_interval is not None:
            self.next_watchdog = now
        self.write_report()

    # -- serving ----------------------------------------------------------------------------
    def tick_serving(self, now: float) -> None:
        if self.sv.audit != "off" and now >= self.next_audit:
            # Schedule from the planned time, not from now, so the period does not drift.
            self.next_audit = max(self.next_audit + self.sv.audit_interval, now + 0.05)
            if not self.run_audit(now):
                return
        if self.next_watchdog is not None and now >= self.next_watchdog:
            interval = self.wd_interval or 1.0
            self.next_watchdog = now + interval
            result = (readiness.Probe(True, 200, None) if self.plan.api.headless
                      else readiness.probe(self.plan.api, timeout=min(2.0, interval)))
            if result.ok != self.health_ok:
                self.health_ok = result.ok
                if not result.ok:
                    f = R.HEALTH_LOST.finding(self.plan.api.url("/health"),
                                              f"GET /health failed: {result.error or result.status}.")
                    self.record(f)
                    self.write_report()
                else:
                    self.ui.info("GET /health answers 200 again")
            if self.health_ok and self.audit_clean:
                self.notifier.watchdog()

    # -- audit ------------------------------------------------------------------------------
    def run_audit(self, now: float, force: bool = False) -> bool:
        """One audit; returns False when it stopped vLLM (enforce)."""
        self.audits += 1
        try:
            obs = self.scanner.scan(now, force=force)
            result = audit.compare(self.plan.expected, obs.listeners,
                                   api_seen_elsewhere=self.api_elsewhere(obs.foreign))
        except OSError as exc:
            result = audit.unavailable(f"cannot read /proc: {exc}")
        enforce = self.sv.audit == "enforce"
        if not enforce:  # warn: reported, not blocking
            result = audit.AuditResult(
                result.verdicts,
                tuple(replace(f, severity=min(f.severity, Severity.WARNING)) for f in result.findings),
            )
        changed = self.remember(result, now)
        new = [f for f in result.findings if self.record(f)]
        self.audit_clean = result.clean  # warn: findings do not block (nor READY=1, WATCHDOG=1)
        if changed or new:
            self.write_report()
        if enforce and not result.clean:
            self.ui.error(
                f"socket audit failed: {len(result.findings)} forbidden listener(s); stopping vLLM",
                event="audit", clean=False,
            )
            self.begin_stop("socket audit", code=ExitCode.AUDIT_FAILED)
            return False
        if self.audits == 1 or new:
            n = len(result.verdicts)
            verdict = "clean" if not result.findings else f"{len(result.findings)} finding(s) (warn)"
            self.ui.info(f"socket audit: {n} listener(s), {verdict}", event="audit",
                         clean=not result.findings, listeners=[v.to_dict() for v in result.verdicts])
        return True

    def api_elsewhere(self, foreign: list[audit.Listener]) -> list[audit.Listener]:
        api = self.plan.api
        if api.host is None or api.port is None:
            return []
        host = audit.canonical_ip(api.host)
        return [
            lst for lst in foreign
            if lst.proto == "tcp" and lst.port == api.port
            and (audit.canonical_ip(lst.address) == host or audit.is_wildcard(lst.address))
        ]

    def remember(self, result: audit.AuditResult, now: float) -> bool:
        changed = False
        current = set()
        for v in result.verdicts:
            lst = v.listener
            key = (lst.inode, lst.proto, lst.address, lst.port)
            current.add(key)
            if key in self.seen:
                self.seen[key].last_seen = now
                self.seen[key].open = True
            else:
                self.seen[key] = _Seen(v, now, now)
                changed = True
        for key, s in self.seen.items():
            if key not in current and s.open:
                s.open = False
                changed = True
        return changed

    def record(self, f: Finding) -> bool:
        """Keep and show a finding once (the watch repeats every second)."""
        key = (f.rule_id, f.subject, None)
        if key in self.findings:
            return False
        self.findings[key] = f
        self.ui.finding(f)
        return True

    # -- stopping ---------------------------------------------------------------------------
    def begin_stop(self, reason: str, code: int | None = None, sig: int = signal.SIGTERM) -> None:
        if code is not None and self.code_override is None:
            self.code_override = int(code)
        if self.phase == "stopping":
            self.signal_group(sig)  # a repeated signal goes through (e.g. a second Ctrl-C)
            return
        self.set_phase("stopping", reason)
        self.notifier.stopping(f"stopping: {reason}")
        self.notifier.extend_timeout(self.sv.stop_grace + 5)
        self.stop_deadline = self.clock() + self.sv.stop_grace
        self.ui.info(
            f"stopping vLLM ({reason}): {signal.Signals(sig).name} to its process group, "
            f"SIGKILL after {self.sv.stop_grace:g} s",
            event="stopping", reason=reason,
        )
        self.signal_group(sig)

    def signal_group(self, sig: int) -> None:
        if self.keeper is None or self.keeper_code is not None:
            return
        try:
            os.killpg(self.keeper, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill_all(self, why: str, keeper_too: bool = False) -> None:
        """SIGKILL every descendant. The keeper is spared for KEEPER_LAST seconds so that it can
        still report vLLM's own exit status (vLLM may have exited already, with its
        descendants lingering); then it goes too."""
        if not self.killed:
            self.ui.warn(f"{why}: killing every process of vLLM's tree", event="kill")
        self.killed = True
        self.keeper_deadline = self.clock() + KEEPER_LAST
        signal_all([p for p in self.live_descendants() if p != self.keeper], signal.SIGKILL)
        if keeper_too and self.keeper is not None and self.keeper_code is None:
            try:
                os.killpg(self.keeper, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            signal_all(self.live_descendants(), signal.SIGKILL)

    def live_descendants(self) -> list[int]:
        return [p for p in procnet.descendants(os.getpid()) if not _is_zombie(p)]

    # -- signals and children ---------------------------------------------------------------
    def on_signals(self, signums: list[int]) -> None:
        for signum in signums:
            if signum == signal.SIGCHLD:
                self.reap()
            elif signum in STOP_SIGNALS:
                name = signal.Signals(signum).name
                self.begin_stop(f"received {name}", sig=signum)
        self.reap()  # SIGCHLDs coalesce: always look

    def reap(self) -> None:
        # As PID 1 (or subreaper) every orphan of the tree becomes our child: reap them all.
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.keeper:
                self.keeper_code = _exit_code(status)
                self.on_vllm_exit()

    def on_vllm_exit(self) -> None:
        code = self.keeper_code
        if self.phase == "stopping":
            self.ui.info(f"vLLM exited with code {code}", event="exited", code=code)
        elif self.phase in ("loading", "starting", "auditing"):
            f = R.EXITED_BEFORE_READY.finding(
                "vLLM", f"vLLM exited with code {code} before it became healthy."
            )
            if code in (126, 127) and any("keeper: cannot execute" in ln for ln in self.tail):
                f = R.CANNOT_START.finding("vLLM", f"the command could not be executed (exit {code}).")
            self.record(f)
            self.show_tail()
        else:
            self.record(R.EXITED_WHILE_SERVING.finding("vLLM", f"vLLM exited with code {code} while serving."))
            if code:
                self.show_tail()
        if self.phase != "stopping":
            self.phase = "exited"
            self.notifier.stopping(f"vLLM exited with code {code}")

    def show_tail(self) -> None:
        lines = [ln for ln in self.tail if ln.strip()][-12:]
        if lines:
            self.ui.error("vLLM's last lines:\n" + "\n".join(f"    {ln}" for ln in lines),
                          event="tail", lines=lines)

    def exit_code(self) -> int:
        if self.code_override is not None:
            return self.code_override
        return self.keeper_code if self.keeper_code is not None else int(ExitCode.INTERNAL)

    # -- output -----------------------------------------------------------------------------
    def forward(self, fd: int) -> str:
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
        buf = self.partial.get(fd, b"") + data
        *lines, rest = buf.split(b"\n")
        self.partial[fd] = rest[-4096:]
        for ln in lines:
            self.tail.append(ln.decode(errors="replace").rstrip("\r"))
        return "data"

    # -- report -----------------------------------------------------------------------------
    def report_doc(self) -> dict[str, Any]:
        listeners = []
        for s in self.seen.values():
            d = s.verdict.to_dict()
            d["open"] = s.open
            d["first_seen_s"] = round(s.first_seen - self.t0, 3)
            listeners.append(d)
        findings = list(self.findings.values())
        doc: dict[str, Any] = {
            "tool": "vllm-secure-launch",
            "version": __version__,
            "phase": self.phase,
            "audit": self.sv.audit,
            "audits": self.audits,
            "clean": not any(f.severity >= Severity.WARNING and f.rule_id in _AUDIT_IDS for f in findings),
            "api": self.plan.api.url(),
            "expected": self.plan.expected.to_dict(),
            "argv": list(self.plan.argv),
            "pid": os.getpid(),
            "keeper_pid": self.keeper,
            "listeners": listeners,
            "findings": [f.to_dict() for f in findings],
            "exit_code": self.exit_code() if self.keeper_code is not None or self.code_override else None,
        }
        if self.phase in ("exited", "stopping") and self.keeper_code not in (None, 0):
            doc["vllm_tail"] = list(self.tail)[-TAIL_LINES:]
        return doc

    def write_report(self) -> None:
        path = self.sv.report_path
        if not path:
            return
        try:
            write_atomic(path, json.dumps(self.report_doc(), indent=2) + "\n")
        except OSError as exc:
            self.ui.warn(f"cannot write the report {path}: {exc.strerror}")


_AUDIT_IDS = {R.WILDCARD_LISTENER.id, R.UNPLANNED_ADDRESS.id, R.API_NOT_OWNED.id, R.AUDIT_UNAVAILABLE.id}


def _drain(fd: int) -> list[int]:
    out: list[int] = []
    while True:
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            return out
        if not data:
            return out
        out.extend(data)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return True
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] == b"Z"


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run(plan: Plan, ui: UI, environ: Mapping[str, str] | None = None) -> int:
    """Run the plan to the end; returns the launcher's exit code (shared/DESIGN.md table).

    vLLM's command not found / not executable: finding VSL623 and 127 / 126 (nothing started).
    Raises LauncherError (with its exit code) when the private RPC directory is unusable.
    Must be called from the main thread (signal handling).
    """
    if plan.refused:
        return int(ExitCode.REFUSED)
    env = os.environ if environ is None else environ
    r = _Run(plan, ui, env)
    r.t0 = r.clock()
    # Orphans of vLLM's tree are re-parented to us, not to init: we can still find and kill them.
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_handlers = {s: signal.signal(s, _noop) for s in WATCHED}
    old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    # A parent may have handed us a blocked mask; our handlers need the signals delivered.
    old_mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
    try:
        if not r.spawn():
            return r.exit_code()
        wait = ("headless, no API server" if plan.api.headless else
                f"waiting up to {plan.supervision.ready_timeout:g} s for "
                f"GET {plan.api.url('/health')}")
        r.ui.info(f"started vLLM (keeper pid {r.keeper}); {wait}", event="started", pid=r.keeper)
        r.ready_deadline = r.t0 + plan.supervision.ready_timeout
        r.next_probe = r.clock() + r.backoff.delay(0)
        r.set_phase("loading")
        code = r.loop(wake_r)
        r.ui.end_status()
        return code
    finally:
        if r.keeper is not None and r.keeper_code is None:
            # Leaving early (an exception): nothing of vLLM's may survive us.
            r.kill_all("the launcher is leaving", keeper_too=True)
            deadline = time.monotonic() + 5
            while r.live_descendants() and time.monotonic() < deadline:
                r.reap()
                time.sleep(0.05)
            r.reap()
        r.write_report()
        r.notifier.close()
        r.scanner.close()
        signal.set_wakeup_fd(old_wakeup)
        for s, h in old_handlers.items():
            signal.signal(s, h)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(wake_r)
        os.close(wake_w)
        for fd in r.fds:
            os.close(fd)
