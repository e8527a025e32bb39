"""The supervisor's loop: run a Plan through its phases (starting, loading, auditing, serving,
stopping, exited), waking on signals, vLLM's output and deadlines, and dispatching each to the
piece whose job it is.

    launcher (this process: child subreaper, PID 1 duties)
      └─ keeper.py      own session + process group; parent-death signal; subreaper
           └─ vLLM      exactly plan.argv / plan.env; empty signal mask; PDEATHSIG=SIGKILL
                └─ engine core, workers, …  (same process group unless they leave it)

The pieces: child.py (the keeper process: spawn, signal, kill, reap), pump.py (vLLM's output),
audit_watch.py (the socket audit), readiness.py (GET /health while loading and serving),
sdnotify.py (systemd), report.py (the run report). This module owns only time and order.

Signals: no work in handlers. The handlers are no-ops; `signal.set_wakeup_fd` queues the signal
numbers on a pipe that the single-threaded poll() loop reads together with vLLM's output
(shared/DESIGN.md §6). Stop signals (TERM, INT, HUP, QUIT) go to the whole process group, as a
terminal would send them; after `stop_grace` every descendant is SIGKILLed.

Exit code (shared/DESIGN.md): vLLM's own, 128+N when it died from signal N, 75 when it was not
healthy in time, 76 when it exited 0 without being asked to stop (a dead engine core makes
vLLM's API server shut down with 0: never a success), 77 when the audit (enforce) found a
forbidden listener, 79 when /health failed for the hang timeout while serving, 126/127 when it
could not be executed / found. A second stop signal during the stop kills the tree at once.
Only the cli package prints; this module talks through `ui`.
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from vllm_secure_launch import startup
from vllm_secure_launch.errors import LauncherError
from vllm_secure_launch.exitcodes import ExitCode
from vllm_secure_launch.findings import Finding
from vllm_secure_launch.plan.model import Plan
from vllm_secure_launch.rules import audit_rules as R
from vllm_secure_launch.supervise import report
from vllm_secure_launch.supervise.audit_watch import AuditWatch
from vllm_secure_launch.supervise.child import (
    STOP_SIGNALS,
    Child,
    keeper_argv,
    keeper_path,
    live_descendants,
    make_private_dir,
    remove_private_dir,
    resolve_command,
)
from vllm_secure_launch.supervise.keeper import signal_all
from vllm_secure_launch.supervise.pump import Pump
from vllm_secure_launch.supervise.readiness import (
    HealthWatch,
    ReadyWait,
    follower_listeners,
    hang_probe_interval,
)
from vllm_secure_launch.supervise.sdnotify import Notifier, watchdog_interval
from vllm_secure_launch.supervise.signals import Signals, drain
from vllm_secure_launch.supervise.stop import Stopper
from vllm_secure_launch.supervise.torchcache import link_default_cache
from vllm_secure_launch.supervise.ui import UI

# Re-exported: pipeline.py and older callers use them from here.
__all__ = ["keeper_argv", "keeper_path", "make_private_dir", "resolve_command", "run"]

PR_SET_CHILD_SUBREAPER = 36
EXTEND_EVERY = 10.0  # seconds between EXTEND_TIMEOUT_USEC messages while loading
EXTEND_BY = 30.0  # each one gives systemd this much more start time
NOT_STARTED = ("loading", "starting", "auditing")


def _prctl(option: int, value: int) -> bool:
    import ctypes  # only here: the launcher does not need ctypes on other paths

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(option, value, 0, 0, 0) == 0)


@dataclass
class _Run:
    """One run of a plan: the phase, the loop's own timers and exit code, and the pieces it
    dispatches to (one _Run per call of run(): no module state)."""

    plan: Plan
    ui: UI
    environ: Mapping[str, str]
    clock: Callable[[], float] = time.monotonic
    phase: str = "starting"
    t0: float = 0.0
    code_override: int | None = None  # the launcher's own exit code (75, 77, 126, 127)
    next_audit: float = 0.0
    next_extend: float = 0.0
    next_status: float = 0.0

    def __post_init__(self) -> None:
        self.sv = self.plan.supervision
        self.notifier = Notifier.from_env(self.environ)
        self.child = Child()
        self.pump = Pump(self.ui)
        self.watch = AuditWatch(self.plan.expected, self.plan.api, self.sv.audit == "enforce")
        self.watchdog = watchdog_interval(self.environ, os.getpid())
        self.health = HealthWatch(self.plan.api, self.watchdog or hang_probe_interval(
            self.sv.hang_timeout))
        self.wait = ReadyWait(self.plan.api, deadline=0.0, next_probe=0.0)
        self.events = report.KeptFindings()  # the run's own findings (the audit keeps its own)
        self.stop = Stopper(self.child, self.ui, self.sv.stop_grace, self.clock)

    # ---------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.clock() - self.t0

    def set_phase(self, phase: str, detail: str = "") -> None:
        self.phase = phase
        self.ui.status(phase, self.elapsed(), detail, force=True)
        self.notifier.status(f"{phase}{': ' + detail if detail else ''}")

    # -- start ------------------------------------------------------------------------------
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
            link_default_cache(plan.env)  # torch's headers persist though TMPDIR is per run
        for fd, target in self.child.spawn(plan.argv, plan.env, self.sv.stop_grace):
            self.pump.add(fd, target)
        return True

    def start_loading(self) -> None:
        plan = self.plan
        wait = (f"headless, no API server: waiting up to {self.sv.ready_timeout:g} s for its "
                "engines' internal listeners" if plan.api.headless else
                f"waiting up to {self.sv.ready_timeout:g} s for GET {plan.api.url('/health')}")
        self.ui.info(f"started vLLM (keeper pid {self.child.pid}); {wait}", event="started",
                     pid=self.child.pid)
        self.wait.deadline = self.t0 + self.sv.ready_timeout
        self.wait.next_probe = self.clock() + self.wait.backoff.delay(0)
        self.set_phase("loading")

    # -- the loop ---------------------------------------------------------------------------
    def loop(self, wake_r: int) -> int:
        poller = select.poll()
        poller.register(wake_r, select.POLLIN)
        for r in self.pump.fds:
            poller.register(r, select.POLLIN)
        while True:
            self.tick(self.clock())
            if self.finished():
                break
            timeout = max(0.0, self.next_deadline() - self.clock())
            for fd, _ev in poller.poll(int(timeout * 1000) + 1):
                if fd == wake_r:
                    self.on_signals(drain(wake_r))
                elif self.pump.forward(fd) == "eof":
                    poller.unregister(fd)
                    self.pump.close(fd)
            if self.pump.take_hint() and self.phase == "loading":
                self.wait.hint(self.clock())  # probe /health now, not at the next step
        self.pump.drain()
        return self.exit_code()

    def finished(self) -> bool:
        if self.child.code is None:
            return False
        left = live_descendants()
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
            cands += [self.wait.next_probe, self.wait.deadline]
            if self.notifier.enabled:
                cands.append(self.next_extend)
        if self.phase == "serving" and self.sv.audit != "off":
            cands.append(self.next_audit)
        if self.phase == "serving" and self.health.next is not None:
            cands.append(self.health.next)
        cands += self.stop.deadlines(self.phase == "stopping")
        if self.child.code is not None:
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
        self.stop.tick(now, self.phase == "stopping")

    def status_detail(self) -> str:
        if self.phase == "loading" and self.plan.api.headless:
            return "starting headless engines"
        if self.phase == "loading":
            return f"waiting for GET {self.plan.api.url('/health')}"
        if self.phase == "serving":
            return f"{self.plan.api.url()} · {self.watch.audits} audits"
        return ""

    # -- loading ----------------------------------------------------------------------------
    def tick_loading(self, now: float) -> None:
        self.extend_start(now)
        if self.plan.api.headless:
            ports = tuple(self.plan.facts.get("ready_ports") or ())
            if ports:
                self.tick_planned_ports(now, ports)
            else:
                self.tick_headless(now)
            return
        if self.wait.due(now):
            if self.wait.probe(now).ok:
                self.ui.info(
                    f"vLLM is healthy after {self.elapsed():.1f} s: {self.plan.api.url()}",
                    event="healthy", elapsed=round(self.elapsed(), 3),
                )
                self.on_healthy(self.clock())
                return
            self.wait.retry(self.clock())
        self.expire_loading()

    def tick_planned_ports(self, now: float, ports: tuple[int, ...]) -> None:
        """A node whose plan names ports that must listen and files that must exist (a Ray
        node: GCS and raylet, and the address file `ray start` writes once the node is up):
        ready once they do and the audit is clean; the continuous audit covers the rest."""
        if not self.ports_listening(now, ports):
            self.expire_loading()
            return
        self.ui.info(f"listening on {', '.join(map(str, ports))}; ready after a clean audit",
                     event="healthy", elapsed=round(self.elapsed(), 3))
        self.on_healthy(self.clock())

    def ports_listening(self, now: float, ports: tuple[int, ...]) -> bool:
        """Whether the tree listens on every one of `ports` (polled on the probe backoff)."""
        if not self.wait.due(now):
            return False
        try:
            seen = {lst.port for lst in self.watch.scanner.scan(now, force=True).listeners}
        except OSError:
            seen = set()
        paths = self.plan.facts.get("ready_paths") or ()
        if set(ports) <= seen and all(os.path.exists(p) for p in paths):
            return True
        self.wait.retry(self.clock())
        return False

    def expire_loading(self) -> None:
        if self.wait.expired(self.clock()) and self.phase == "loading":
            what = ("GET /health did not return 200" if not self.plan.api.headless else
                    "the planned ports did not listen")
            self.record(R.NOT_READY_IN_TIME.finding(
                self.plan.api.url("/health"), f"{what} within {self.sv.ready_timeout:g} s.",
            ))
            self.begin_stop("not healthy in time", code=ExitCode.NOT_READY)

    def tick_headless(self, now: float) -> None:
        """A headless node (--headless, --api-server-count 0) has no API server and so no
        /health. Its first audit runs before vLLM binds anything, so a clean one would say
        nothing: it is ready once its engines' internal listeners appeared (they joined the
        head's process groups, readiness.follower_listeners) and the audit of the tree is
        clean, within ready_timeout; the continuous audit then covers later listeners."""
        if self.wait.due(now):
            if self.sv.audit != "off":
                if not self.audit(now):
                    return  # a forbidden listener while loading: stopped (77)
                seen = self.watch.last.verdicts if self.watch.last else ()
                found = follower_listeners(self.plan.internal_ip, [v.listener for v in seen])
            else:
                try:
                    seen_off = self.watch.scanner.scan(now).listeners
                except OSError:
                    seen_off = []  # cannot look: not ready (fail closed, 75 at the deadline)
                found = follower_listeners(self.plan.internal_ip, seen_off)
            if found:
                where = ", ".join(sorted({lst.endpoint for lst in found})[:4])
                self.ui.info(f"headless: vLLM's engines listen on {where} after "
                             f"{self.elapsed():.1f} s; ready after a clean audit",
                             event="healthy", elapsed=round(self.elapsed(), 3))
                self.on_healthy(self.clock())
                return
            self.wait.retry(self.clock())
        if self.wait.expired(self.clock()) and self.phase == "loading":
            self.record(R.NOT_READY_IN_TIME.finding(
                "headless", f"no listener of vLLM's engines appeared on the internal address "
                f"within {self.sv.ready_timeout:g} s: the follower did not join the head."))
            self.begin_stop("not ready in time", code=ExitCode.NOT_READY)

    def extend_start(self, now: float) -> None:
        """Under systemd, keep extending the start timeout while vLLM loads."""
        if not self.notifier.enabled or now < self.next_extend:
            return
        self.next_extend = now + EXTEND_EVERY
        left = max(0.0, self.wait.deadline - now)
        self.notifier.send(
            f"EXTEND_TIMEOUT_USEC={int(min(EXTEND_BY, left + self.sv.stop_grace + 5) * 1e6)}",
            f"STATUS=loading: waiting for vLLM to become healthy ({int(self.elapsed())} s)",
        )

    def on_healthy(self, now: float) -> None:
        if self.sv.audit == "off":
            self.ui.warn("socket audit is off (--audit off): listeners are not checked")
            self.go_serving(now)
            return
        self.set_phase("auditing")
        if self.audit(now, force=True):
            self.go_serving(now)

    def go_serving(self, now: float) -> None:
        self.set_phase("serving")
        self.ui.end_status()
        api = self.plan.api
        if api.headless:
            self.ui.info(f"running headless; audit: {self.sv.audit}", event="ready",
                         url=api.url(), audit=self.sv.audit)
        else:
            how = (f"curl --unix-socket {api.uds} http://localhost/v1/models" if api.uds
                   else f"curl {api.url('/v1/models')}")
            self.ui.info(
                f"serving on {api.url()}; audit: {self.sv.audit}; try: {how} "
                "-H 'Authorization: Bearer $KEY'",
                event="ready", url=api.url(), audit=self.sv.audit,
            )
        self.notifier.ready(f"serving on {api.url()}")
        self.next_audit = now + self.sv.audit_interval
        self.health.start(now)
        self.write_report()

    # -- serving ----------------------------------------------------------------------------
    def tick_serving(self, now: float) -> None:
        if self.sv.audit != "off" and now >= self.next_audit:
            # Schedule from the planned time, not from now, so the period does not drift.
            self.next_audit = max(self.next_audit + self.sv.audit_interval, now + 0.05)
            if not self.audit(now):
                return
        if self.health.due(now):
            self.watch_health(now)

    def watch_health(self, now: float) -> None:
        changed = self.health.check(now)
        if changed is not None and not changed.ok:
            why = changed.error or changed.status
            self.record(R.HEALTH_LOST.finding(self.plan.api.url("/health"),
                                              f"GET /health failed: {why}."))
            self.write_report()
        elif changed is not None:
            self.ui.info("GET /health answers 200 again")
        if self.health.hung(now, self.sv.hang_timeout):
            # A stopped (SIGSTOP) or deadlocked API server ignores SIGTERM: kill the tree.
            self.record(R.HUNG.finding(self.plan.api.url("/health"), (
                f"GET /health has not answered 200 for {self.sv.hang_timeout:g} s.")))
            self.begin_stop("vLLM hung", code=ExitCode.HUNG, sig=signal.SIGKILL)
            return
        if self.watchdog and self.health.ok and self.watch.clean:
            self.notifier.watchdog()  # warn: findings do not hold back WATCHDOG=1

    # -- audit ------------------------------------------------------------------------------
    def audit(self, now: float, force: bool = False) -> bool:
        """One audit; returns False when it stopped vLLM (enforce)."""
        done = self.watch.check(now, force=force)
        for f in done.new:
            self.ui.finding(f)
        if done.changed or done.new:
            self.write_report()
        result = done.result
        if self.watch.enforce and not result.clean:
            self.ui.error(
                f"socket audit failed: {len(result.findings)} forbidden listener(s); stopping vLLM",
                event="audit", clean=False,
            )
            self.begin_stop("socket audit", code=ExitCode.AUDIT_FAILED)
            return False
        if self.watch.audits == 1 or done.new:
            n, bad = len(result.verdicts), len(result.findings)
            verdict = f"{bad} finding(s) (warn)" if bad else "clean"
            self.ui.info(f"socket audit: {n} listener(s), {verdict}", event="audit", clean=not bad,
                         listeners=[v.to_dict() for v in result.verdicts])
        return True

    def record(self, f: Finding) -> None:
        """Keep and show one of the run's own findings once."""
        if self.events.add(f):
            self.ui.finding(f)

    # -- stopping ---------------------------------------------------------------------------
    def begin_stop(self, reason: str, code: int | None = None, sig: int = signal.SIGTERM) -> None:
        if code is not None and self.code_override is None:
            self.code_override = int(code)
        if self.phase == "stopping":
            # A second stop signal (a second Ctrl-C, an impatient operator) means "now".
            self.stop.kill(f"{reason} during the stop")
            return
        self.set_phase("stopping", reason)
        self.notifier.stopping(f"stopping: {reason}")
        self.notifier.extend_timeout(self.sv.stop_grace + 5)
        self.stop.begin(reason, sig)

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
        if self.child.reap():
            self.on_vllm_exit()

    def on_vllm_exit(self) -> None:
        code = self.child.code
        if self.phase == "stopping":
            self.ui.info(f"vLLM exited with code {code}", event="exited", code=code)
        elif self.phase in NOT_STARTED:
            f = R.EXITED_BEFORE_READY.finding(
                "vLLM", f"vLLM exited with code {code} before it became healthy."
            )
            if code in (126, 127) and self.pump.saw("keeper: cannot execute"):
                f = R.CANNOT_START.finding(
                    "vLLM", f"the command could not be executed (exit {code}).")
            self.record(f)
            self.show_tail()
        else:
            self.record(R.EXITED_WHILE_SERVING.finding(
                "vLLM", f"vLLM exited with code {code} while serving."))
            if code:
                self.show_tail()
        if self.phase != "stopping":
            if code == 0 and self.code_override is None:
                # Nobody asked vLLM to stop, so the service is down: never a success.
                self.record(R.EXITED_UNASKED.finding(
                    "vLLM", "vLLM exited with code 0 although nobody asked it to stop."))
                self.code_override = int(ExitCode.EXITED_UNASKED)
            self.phase = "exited"
            self.notifier.stopping(f"vLLM exited with code {code}")

    def show_tail(self) -> None:
        lines = self.pump.last_lines()
        if lines:
            self.ui.error("vLLM's last lines:\n" + "\n".join(f"    {ln}" for ln in lines),
                          event="tail", lines=lines)

    def exit_code(self) -> int:
        if self.code_override is not None:
            return self.code_override
        return self.child.code if self.child.code is not None else int(ExitCode.INTERNAL)

    # -- report -----------------------------------------------------------------------------
    def state(self) -> report.RunState:
        ended = self.child.code is not None or self.code_override
        return report.RunState(
            phase=self.phase, audit=self.sv.audit, audits=self.watch.audits,
            clean=self.watch.passed, api=self.plan.api.url(),
            expected=self.plan.expected.to_dict(), argv=self.plan.argv, pid=os.getpid(),
            keeper_pid=self.child.pid, listeners=self.watch.memory.rows(self.t0),
            findings=(*self.events.all(), *self.watch.findings.all()),
            exit_code=self.exit_code() if ended else None, vllm_code=self.child.code,
            tail=tuple(self.pump.tail),
        )

    def report_doc(self) -> dict[str, Any]:
        return report.build(self.state())

    def write_report(self) -> None:
        path = self.sv.report_path
        if not path:
            return
        why = report.write(path, self.report_doc())
        if why is not None:
            self.ui.warn(f"cannot write the report {path}: {why}")

    # -- leaving ----------------------------------------------------------------------------
    def leave(self) -> None:
        """Whatever way run() ends: nothing of vLLM's may survive us; last report; close."""
        if self.child.running:
            # Leaving early (an exception): kill the tree and wait for it, briefly.
            self.stop.kill("the launcher is leaving", keeper_too=True)
            deadline = time.monotonic() + 5
            while live_descendants() and time.monotonic() < deadline:
                self.reap()
                time.sleep(0.05)
            self.reap()
        self.write_report()
        self.notifier.close()
        self.watch.close()
        self.pump.close_all()


def run(plan: Plan, ui: UI, environ: Mapping[str, str] | None = None) -> int:
    """Run the plan to the end; returns the launcher's exit code (shared/DESIGN.md table).

    vLLM's command not found / not executable: finding VSL623 and 127 / 126 (nothing started).
    Raises LauncherError (with its exit code) when the private RPC directory is unusable.
    Must be called from the main thread (signal handling).
    """
    if plan.refused:
        return int(ExitCode.REFUSED)
    startup.resume()  # supervising is long-running: collect garbage again (startup.py)
    r = _Run(plan, ui, os.environ if environ is None else environ)
    r.t0 = r.clock()
    # Orphans of vLLM's tree are re-parented to us, not to init: we can still find and kill them.
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    sigs = Signals()
    sigs.install()
    try:
        if not r.spawn():
            return r.exit_code()
        r.start_loading()
        code = r.loop(sigs.wake_r)
        r.ui.end_status()
        return code
    finally:
        r.leave()
        sigs.restore()
        if plan.rpc_dir and not live_descendants():
            remove_private_dir(plan.rpc_dir)  # nothing of vLLM's tree can still use it
