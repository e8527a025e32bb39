"""The supervisor's pieces that work without starting processes: wait status -> exit code,
the run report (envelope, decision, body keys), the audit watcher's memory and warn mode, the
output pump's tail (on a real pipe), and the readiness bookkeeping.

The loop, the child handle and the audit against real processes are covered end to end in
test_supervisor.py (fake vLLM) and test_e2e_serve.py (real vLLM).
"""

from __future__ import annotations

import os
import signal

import pytest

from vllm_secure_launch.addresses import ApiEndpoint
from vllm_secure_launch.findings import SCHEMA_VERSION, Finding, Severity
from vllm_secure_launch.plan.model import ExpectedListeners
from vllm_secure_launch.rules import audit_rules as R
from vllm_secure_launch.supervise import report
from vllm_secure_launch.supervise.audit import AuditResult, Listener, Verdict, compare
from vllm_secure_launch.supervise.audit_watch import Memory, api_elsewhere, downgrade
from vllm_secure_launch.supervise.child import Child, exit_code, is_zombie
from vllm_secure_launch.supervise.pump import TAIL_LINES, Pump
from vllm_secure_launch.supervise.readiness import HINTED, Backoff, HealthWatch, ReadyWait
from vllm_secure_launch.supervise.stop import Stopper
from vllm_secure_launch.supervise.ui import UI

API = ApiEndpoint("127.0.0.1", 8000)
EXPECTED = ExpectedListeners(API, ("10.0.0.5",))


# -- child: exit status -> code -------------------------------------------------------------

@pytest.mark.parametrize("status, code", [
    (0, 0),
    (3 << 8, 3),
    (255 << 8, 255),
    (signal.SIGTERM, 128 + signal.SIGTERM),
    (signal.SIGKILL, 128 + signal.SIGKILL),
    (signal.SIGSEGV | 0x80, 128 + signal.SIGSEGV),  # killed and dumped core
])
def test_exit_code_is_the_code_or_128_plus_the_signal(status, code):
    assert exit_code(status) == code


def test_exit_code_of_a_real_wait_status_matches_the_shell():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    assert exit_code(status) == 7


@pytest.mark.parametrize("line, zombie", [
    (b"12 (python3) S 1 12 12", False),
    (b"12 (a) b) Z 1 12 12", True),  # the comm may hold spaces and parens: the last ")" counts
    (b"12 (vllm (Z)) R 1 12 12", False),
])
def test_is_zombie_reads_the_state_after_the_last_paren(line, zombie):
    assert is_zombie(line) is zombie


def test_a_child_never_spawned_is_not_running_and_signals_nothing():
    c = Child()
    assert not c.running
    c.signal_group(signal.SIGTERM)  # no pid: nothing to signal, no error
    c.kill_all()


# -- report ---------------------------------------------------------------------------------

def state(**kw) -> report.RunState:
    base = dict(phase="serving", audit="enforce", audits=2, clean=True, api=API.url(),
                expected=EXPECTED.to_dict(), argv=("vllm", "serve", "m"), pid=10, keeper_pid=11,
                listeners=[], findings=(), exit_code=None, vllm_code=None, tail=("a", "b"))
    base.update(kw)
    return report.RunState(**base)


BODY_KEYS = ["phase", "audit", "audits", "clean", "api", "expected", "argv", "pid", "keeper_pid",
             "listeners", "exit_code"]


def test_report_is_the_envelope_of_kind_run_with_the_body_keys_of_before():
    doc = report.build(state(), version="9.9")
    assert list(doc)[:5] == ["schema_version", "tool", "kind", "decision", "findings"]
    assert doc["schema_version"] == SCHEMA_VERSION and doc["kind"] == "run"
    assert doc["tool"] == {"name": "vllm-secure-launch", "version": "9.9"}
    assert list(doc)[5:] == BODY_KEYS
    assert doc["argv"] == ["vllm", "serve", "m"] and doc["keeper_pid"] == 11


@pytest.mark.parametrize("phase, clean, decision", [
    ("loading", True, "clean"),
    ("serving", True, "clean"),
    ("stopping", True, "stopped"),
    ("exited", True, "stopped"),
    ("serving", False, "dirty"),
    ("exited", False, "dirty"),
])
def test_report_decision(phase, clean, decision):
    assert report.build(state(phase=phase, clean=clean))["decision"] == decision


def test_report_carries_vllms_last_lines_only_after_a_failed_exit():
    tail = tuple(f"line {i}" for i in range(40))
    assert "vllm_tail" not in report.build(state(tail=tail, vllm_code=1))  # still serving
    assert "vllm_tail" not in report.build(state(phase="exited", tail=tail, vllm_code=0))
    doc = report.build(state(phase="exited", tail=tail, vllm_code=1, exit_code=1))
    assert doc["vllm_tail"] == list(tail[-report.TAIL_LINES:]) and doc["exit_code"] == 1


def test_report_findings_are_the_envelopes_sorted_json():
    warn = R.HEALTH_LOST.finding("h", "lost")
    err = R.WILDCARD_LISTENER.finding("0.0.0.0:1/tcp", "wild")
    doc = report.build(state(findings=(warn, err)))
    assert [f["id"] for f in doc["findings"]] == [err.rule_id, warn.rule_id]


def test_report_write_is_atomic_and_says_why_it_failed(tmp_path):
    path = tmp_path / "r.json"
    assert report.write(str(path), {"a": 1}) is None
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert report.write(str(tmp_path / "missing" / "r.json"), {}) is not None


def test_kept_findings_keep_each_rule_and_subject_once():
    kept = report.KeptFindings()
    f = R.EXITED_WHILE_SERVING.finding("vLLM", "exited")
    assert kept.add(f) and not kept.add(R.EXITED_WHILE_SERVING.finding("vLLM", "other text"))
    assert kept.add(R.EXITED_WHILE_SERVING.finding("other", "exited"))
    assert [x.subject for x in kept.all()] == ["vLLM", "other"]


# -- audit watcher --------------------------------------------------------------------------

def verdict(address: str, port: int, inode: int) -> Verdict:
    return compare(EXPECTED, [Listener("tcp", address, port, inode, 5, "vllm")]).verdicts[0]


def test_memory_notes_new_and_closed_listeners_and_keeps_closed_ones():
    m = Memory()
    api, wild = verdict("127.0.0.1", 8000, 1), verdict("0.0.0.0", 9000, 2)
    assert m.update((api,), 1.0)  # new
    assert not m.update((api,), 2.0)  # same set
    assert m.update((api, wild), 3.0)  # one more
    assert m.update((api,), 4.0)  # one closed
    assert not m.update((api,), 5.0)
    rows = m.rows(t0=0.5)
    assert [(r["port"], r["open"], r["first_seen_s"]) for r in rows] == [(8000, True, 0.5),
                                                                          (9000, False, 2.5)]
    assert rows[1]["verdict"] == "violation" and rows[1]["reason"] == "wildcard"


def test_warn_mode_downgrades_audit_findings_to_warnings_and_so_does_not_block():
    result = compare(EXPECTED, [Listener("tcp", "0.0.0.0", 9000, 2, 5, "vllm")])
    assert not result.clean
    warned = downgrade(result)
    assert warned.clean and warned.verdicts == result.verdicts
    assert [f.severity for f in warned.findings] == [Severity.WARNING]
    info = AuditResult((), (Finding("VSL600", Severity.INFO, "x", "y", "z"),))
    assert downgrade(info).findings[0].severity == Severity.INFO  # never raised


def test_api_elsewhere_picks_foreign_listeners_on_the_api_address_or_a_wildcard():
    foreign = [Listener("tcp", "127.0.0.1", 8000), Listener("tcp", "0.0.0.0", 8000),
               Listener("tcp", "127.0.0.1", 8001), Listener("udp", "127.0.0.1", 8000),
               Listener("tcp", "10.0.0.5", 8000)]
    assert api_elsewhere(API, foreign) == foreign[:2]
    assert api_elsewhere(ApiEndpoint(None, None, uds="/run/v.sock"), foreign) == []


# -- output pump ----------------------------------------------------------------------------

class _Sink(UI):
    def __init__(self) -> None:
        super().__init__(tty=False)
        self.got: list[tuple[int, bytes]] = []

    def passthrough(self, fd: int, data: bytes) -> None:
        self.got.append((fd, data))


def test_pump_forwards_bytes_unchanged_and_keeps_complete_lines_in_the_tail():
    ui = _Sink()
    r, w = os.pipe()
    pump = Pump(ui, [(r, 2)])
    try:
        assert pump.forward(r) == "again"  # non-blocking: nothing written yet
        os.write(w, b"one\r\ntw")
        assert pump.forward(r) == "data"
        os.write(w, b"o\n\nthree")
        assert pump.forward(r) == "data"
        assert ui.got == [(2, b"one\r\ntw"), (2, b"o\n\nthree")]
        assert list(pump.tail) == ["one", "two", ""]  # "three" has no end yet
        assert pump.last_lines() == ["one", "two"] and pump.saw("tw")
        os.close(w)
        w = -1
        assert pump.forward(r) == "eof"
        pump.close(r)
        assert pump.fds == {}
    finally:
        if w != -1:
            os.close(w)
        pump.close_all()


def test_pump_tail_is_bounded():
    pump = Pump(_Sink())
    pump.keep(1, b"".join(b"%d\n" % i for i in range(100)))
    assert len(pump.tail) == TAIL_LINES and pump.tail[-1] == "99"
    pump.keep(1, b"x" * 10000)
    assert len(pump.partial[1]) == 4096


# -- readiness bookkeeping ------------------------------------------------------------------

def test_ready_wait_backs_off_from_when_the_probe_returned():
    w = ReadyWait(API, deadline=10.0, next_probe=0.05, backoff=Backoff(0.05, 2.0, 0.3))
    assert not w.due(0.0) and w.due(0.05)
    w.retry(1.0)
    assert w.attempt == 1 and w.next_probe == pytest.approx(1.1)
    for _ in range(5):
        w.retry(2.0)
    assert w.next_probe == pytest.approx(2.3)  # capped
    assert not w.expired(9.9) and w.expired(10.0)


def test_pump_notes_a_readiness_hint_once_and_only_in_a_complete_line():
    pump = Pump(_Sink())
    assert not pump.take_hint()
    pump.keep(2, b"(APIServer pid=7) INFO loading weights\nINFO:     Application startup")
    assert not pump.take_hint()  # the line is not complete yet
    pump.keep(2, b" complete.\n")
    assert pump.take_hint() and not pump.take_hint()  # taken once
    pump.keep(1, b"(APIServer pid=7) INFO [api_server.py:1] Starting vLLM server on http://x\n")
    assert pump.take_hint()


def test_a_readiness_hint_makes_the_next_probe_due_now_then_on_short_steps():
    """After vLLM says its API server is about to answer, /health is probed at once and then
    every ~10 ms (growing to the same cap), not a whole 200 ms step later."""
    w = ReadyWait(API, deadline=100.0, next_probe=0.05)
    for _ in range(10):
        w.retry(5.0)
    assert w.next_probe == pytest.approx(5.2) and not w.due(5.01)
    w.hint(5.01)
    assert w.due(5.01) and w.attempt == 0 and w.backoff == HINTED
    w.retry(5.02)
    assert w.next_probe == pytest.approx(5.02 + 0.015)
    for _ in range(20):
        w.retry(6.0)
    assert w.next_probe == pytest.approx(6.0 + HINTED.cap)  # the cap is unchanged
    w.hint(7.0)
    assert w.next_probe == pytest.approx(6.2)  # a hint never makes a probe later


def test_health_watch_without_watchdog_never_probes():
    h = HealthWatch(API, interval=None)
    h.start(0.0)
    assert h.next is None and not h.due(100.0)


def test_health_watch_headless_counts_as_healthy_and_reports_no_change():
    h = HealthWatch(ApiEndpoint(None, None, headless=True), interval=5.0)
    h.start(1.0)
    assert h.due(1.0)
    assert h.check(1.0) is None and h.ok and h.next == 6.0


# -- stopping -------------------------------------------------------------------------------

def test_stopper_wakes_the_loop_at_the_grace_deadline_and_logs_the_stop():
    """Only the bookkeeping: no child was spawned, so nothing is signalled (tick, which kills,
    is covered with real processes in test_supervisor.py)."""
    now = [100.0]
    ui = _Sink()
    lines: list[str] = []
    ui.event = lambda level, message, **kw: lines.append(message)  # type: ignore[method-assign]
    s = Stopper(Child(), ui, grace=3.0, clock=lambda: now[0])
    assert s.deadlines(stopping=True) == []
    s.begin("received SIGTERM", signal.SIGTERM)
    assert s.deadline == 103.0 and s.deadlines(stopping=True) == [103.0]
    assert s.deadlines(stopping=False) == []
    assert lines == ["stopping vLLM (received SIGTERM): SIGTERM to its process group, "
                     "SIGKILL after 3 s"]


def test_follower_listeners_are_those_on_the_internal_address_else_loopback():
    """A headless follower is ready once vLLM's tree listens on the node's internal address
    (its engines joined the head); loopback sockets do not count, except on a plan without
    an internal address."""
    from vllm_secure_launch.supervise.readiness import follower_listeners

    lo, inner, v6 = (Listener("tcp", "127.0.0.1", 5000), Listener("tcp", "10.0.0.5", 41234),
                     Listener("tcp", "::1", 5001))
    assert follower_listeners("10.0.0.5", [lo, v6]) == []
    assert follower_listeners("10.0.0.5", [lo, inner]) == [inner]
    assert follower_listeners("::ffff:10.0.0.5", [inner]) == [inner]
    assert follower_listeners(None, [lo, inner, v6]) == [lo, v6]
