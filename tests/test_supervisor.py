"""The supervisor with a fake child program (tests/support/fake_vllm.py: a real process that
serves /health, just not vLLM — fast). Real vLLM is covered in test_e2e_serve.py.

Pins: readiness, exit-code propagation (vLLM's code, 128+N), 75 on timeout, 126/127, signal
forwarding to the process group, grace then SIGKILL of the whole tree (also setsid'd escapees),
empty signal mask in the real child even when the launcher inherited a blocked one, nothing left
after SIGKILL of the launcher, READY=1/STOPPING=1 on a real NOTIFY_SOCKET, the audit catching
late wildcard listeners (enforce: 77, warn: keeps serving and reports).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import sys
import tempfile
import time

import pytest

from tests.support.supervised import (
    NotifySocket,
    alive,
    descendants,
    fake_argv,
    read_json,
    start_launcher,
    status_field,
    wait_for,
    write_plan,
)

# Not in the fast lane: real child processes (tests/support/fake_vllm.py), waited on.
pytestmark = pytest.mark.integration

PY = sys.executable


@pytest.fixture
def tmp_path():
    """Our own directory: the shared pytest basetemp is rotated by other runs on this machine."""
    path = tempfile.mkdtemp(prefix="vslsv-")
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def plan(tmp_path, port: int, *fake_args: str, **sv) -> str:
    sv.setdefault("ready_timeout", 20)
    sv.setdefault("stop_grace", 3)
    sv.setdefault("report_path", str(tmp_path / "report.json"))
    doc = {
        "host": "127.0.0.1", "port": port,
        "argv": fake_argv("--port", str(port), "--state", str(tmp_path / "state.json"), *fake_args),
        "supervision": sv, "rpc_dir": str(tmp_path / "rpc"),
    }
    return write_plan(str(tmp_path / "plan.json"), doc)


def ready(tmp_path) -> dict:
    return wait_for(lambda: (r := read_json(str(tmp_path / "report.json"))) and r["phase"] == "serving" and r,
                    20, what="serving")


def finish(proc, timeout: float = 20) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_ready_clean_audit_then_sigterm_exits_with_vllms_code_and_leaves_nothing(tmp_path):
    ns = NotifySocket(str(tmp_path / "notify"))
    p = start_launcher(plan(tmp_path, 18011, "--term-code", "3", "--children", "2"),
                       env={"NOTIFY_SOCKET": ns.path})
    rep = ready(tmp_path)
    assert rep["clean"] and [l["reason"] for l in rep["listeners"]] == ["api"]
    assert os.stat(tmp_path / "rpc").st_mode & 0o777 == 0o700
    wait_for(lambda: ns.has("READY=1"), 5, what="READY=1")
    tree = descendants(p.pid)
    assert len(tree) >= 4  # keeper, fake, 2 grandchildren
    p.send_signal(signal.SIGTERM)
    code, _, err = finish(p)
    assert code == 3, err
    assert "received SIGTERM" in err
    assert ns.has("STOPPING=1")
    assert not [pid for pid in tree if alive(pid)]
    # The run's private directory (vLLM's RPC sockets, TMPDIR) goes with the run.
    assert not (tmp_path / "rpc").exists()
    ns.close()


def test_child_has_empty_signal_mask_and_own_session_even_if_launcher_mask_was_blocked(tmp_path):
    # The launcher is exec'd with TERM/INT/HUP/USR1 blocked (a careless parent); a mask is
    # inherited through fork+exec, so the child's SigBlk is read from /proc of the real child.
    blocker = [PY, "-c", "import os,signal,sys; signal.pthread_sigmask(signal.SIG_BLOCK,"
               "{signal.SIGTERM,signal.SIGINT,signal.SIGHUP,signal.SIGUSR1}); os.execv(sys.argv[1], sys.argv[1:])"]
    p = start_launcher(plan(tmp_path, 18012), prefix=blocker)
    ready(tmp_path)
    state = read_json(str(tmp_path / "state.json"))
    child = state["pid"]
    assert int(status_field(p.pid, "SigBlk"), 16) != 0  # the launcher did inherit the mask
    assert int(status_field(child, "SigBlk"), 16) == 0
    assert state["sigblk"] == "0000000000000000"
    assert os.getsid(child) != os.getsid(p.pid) and os.getsid(child) == os.getpgid(child)
    p.send_signal(signal.SIGTERM)
    assert finish(p)[0] == 0


def test_vllm_exit_before_ready_propagates_code_and_shows_last_lines(tmp_path):
    p = start_launcher(plan(tmp_path, 18013, "--exit-after", "0.3", "--exit-code", "7"))
    code, out, err = finish(p)
    assert code == 7
    assert "VSL621" in err and "fatal error, giving up" in err
    assert "fake vllm starting" in out  # vLLM's stdout passes through to ours
    rep = read_json(str(tmp_path / "report.json"))
    assert rep["exit_code"] == 7 and any(f["id"] == "VSL621" for f in rep["findings"])


def test_forwarded_signal_that_kills_vllm_gives_128_plus_n(tmp_path):
    p = start_launcher(plan(tmp_path, 18014))
    ready(tmp_path)
    p.send_signal(signal.SIGHUP)  # the fake has no SIGHUP handler: it dies from it
    assert finish(p)[0] == 128 + signal.SIGHUP


def test_grace_then_sigkill_of_the_whole_tree_including_escaped_processes(tmp_path):
    p = start_launcher(plan(tmp_path, 18015, "--ignore-term", "--children", "1", "--escape",
                            stop_grace=1))
    ready(tmp_path)
    state = read_json(str(tmp_path / "state.json"))
    tree = descendants(p.pid)
    assert set(state["children"]) <= set(tree)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    code, _, err = finish(p)
    assert code == 128 + signal.SIGKILL, err
    assert time.monotonic() - t0 < 6
    assert "killing every process" in err
    assert not [pid for pid in tree if alive(pid)]


def test_not_healthy_in_time_stops_vllm_and_exits_75(tmp_path):
    p = start_launcher(plan(tmp_path, 18016, "--delay", "100", "--children", "1",
                            ready_timeout=1.5, stop_grace=1))
    wait_for(lambda: read_json(str(tmp_path / "state.json")), 10, what="fake start")
    tree = descendants(p.pid)
    code, _, err = finish(p)
    assert code == 75 and "VSL620" in err
    assert not [pid for pid in tree if alive(pid)]


def test_command_not_found_127_and_not_executable_126(tmp_path):
    doc = {"host": "127.0.0.1", "port": 18017, "argv": ["/nonexistent/vllm", "serve"]}
    p = start_launcher(write_plan(str(tmp_path / "a.json"), doc))
    code, _, err = finish(p)
    assert code == 127 and "VSL623" in err and "was not found" in err and "Traceback" not in err
    noexec = tmp_path / "vllm"
    noexec.write_text("#!/bin/sh\n")
    doc["argv"] = [str(noexec), "serve"]
    p = start_launcher(write_plan(str(tmp_path / "b.json"), doc))
    code, _, err = finish(p)
    assert code == 126 and "cannot be executed" in err


def test_sigkill_of_the_launcher_leaves_no_process_of_the_tree(tmp_path):
    p = start_launcher(plan(tmp_path, 18018, "--children", "2", "--escape", "--ignore-term"))
    ready(tmp_path)
    tree = descendants(p.pid)
    assert len(tree) >= 5
    p.kill()
    p.wait()
    wait_for(lambda: not [pid for pid in tree if alive(pid)], 5, what="tree gone")


def test_keeper_killed_orphans_are_reaped_by_the_launcher(tmp_path):
    p = start_launcher(plan(tmp_path, 18019, "--children", "2", "--ignore-term"))
    ready(tmp_path)
    rep = read_json(str(tmp_path / "report.json"))
    tree = descendants(p.pid)
    os.kill(rep["keeper_pid"], signal.SIGKILL)
    code, _, err = finish(p)
    assert code == 128 + signal.SIGKILL
    assert not [pid for pid in tree if alive(pid)]


@pytest.mark.parametrize("mode", ["enforce", "warn"])
def test_late_wildcard_listener_enforce_77_warn_keeps_serving(tmp_path, mode):
    port = 18020 if mode == "enforce" else 18021
    p = start_launcher(plan(tmp_path, port, "--late-listen", f"0.0.0.0:{port + 100}",
                            "--late-after", "1.0", "--children", "1", audit=mode))
    ready(tmp_path)
    tree = descendants(p.pid)
    if mode == "enforce":
        code, _, err = finish(p)
        assert code == 77, err
        assert "VSL600" in err and f"0.0.0.0:{port + 100}/tcp" in err
        assert not [pid for pid in tree if alive(pid)]
        rep = read_json(str(tmp_path / "report.json"))
        bad = [l for l in rep["listeners"] if l["verdict"] == "violation"]
        assert bad and bad[0]["pid"] == read_json(str(tmp_path / "state.json"))["pid"]
        assert rep["exit_code"] == 77
    else:
        def flagged():
            rep = read_json(str(tmp_path / "report.json"))
            return rep and any(l["verdict"] == "violation" for l in rep["listeners"]) and rep
        rep = wait_for(flagged, 10, what="violation in report")
        assert rep["phase"] == "serving" and p.poll() is None
        assert rep["findings"][0]["severity"] == "warning"
        p.send_signal(signal.SIGTERM)
        assert finish(p)[0] == 0


def test_late_dual_stack_udp_listener_is_caught(tmp_path):
    p = start_launcher(plan(tmp_path, 18022, "--late-listen", "[::]:18122", "--late-udp",
                            "--late-after", "0.5"))
    ready(tmp_path)
    code, _, err = finish(p)
    assert code == 77 and "[::]:18122/udp" in err


def test_pid1_in_a_pid_namespace_handles_sigterm_and_reaps(tmp_path):
    if not os.path.exists("/usr/bin/unshare") or os.geteuid() != 0:
        pytest.skip("needs root and util-linux unshare")
    p = start_launcher(plan(tmp_path, 18023, "--children", "2", "--ignore-term", stop_grace=1),
                       prefix=["unshare", "--pid", "--fork", "--mount-proc"])
    ready(tmp_path)
    rep = read_json(str(tmp_path / "report.json"))
    assert rep["pid"] == 1  # the launcher is PID 1 of the namespace
    launcher = descendants(p.pid)[0]  # unshare's forked child, PID 1 inside
    tree = descendants(launcher)
    # The keeper dies: its orphans go to PID 1, which kills and reaps them all.
    keeper = [t for t in tree if status_field(t, "NSpid").split()[-1] == str(rep["keeper_pid"])][0]
    os.kill(keeper, signal.SIGKILL)
    code, _, err = finish(p)
    assert code == 128 + signal.SIGKILL, err
    assert not [pid for pid in tree if os.path.exists(f"/proc/{pid}")]  # no zombie either


def test_pid1_forwards_sigterm(tmp_path):
    if not os.path.exists("/usr/bin/unshare") or os.geteuid() != 0:
        pytest.skip("needs root and util-linux unshare")
    p = start_launcher(plan(tmp_path, 18024, "--term-code", "4"),
                       prefix=["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"])
    ready(tmp_path)
    launcher = descendants(p.pid)[0]
    os.kill(launcher, signal.SIGTERM)  # PID 1 ignores signals it has no handler for
    code, _, err = finish(p)
    assert code == 4, err


def test_vllm_exit_while_serving_vsl622_and_its_code(tmp_path):
    p = start_launcher(plan(tmp_path, 18025, "--die-after", "1", "--exit-code", "9"))
    code, _, err = finish(p)
    assert code == 9 and "VSL622" in err and "engine died" in err


def test_watchdog_pings_only_while_health_answers_vsl624(tmp_path):
    ns = NotifySocket(str(tmp_path / "notify"))
    p = start_launcher(plan(tmp_path, 18026, "--health-fail-after", "2.5"),
                       env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "1000000"})
    ready(tmp_path)
    wait_for(lambda: ns.has("WATCHDOG=1"), 5, what="WATCHDOG=1")
    rep = wait_for(lambda: (r := read_json(str(tmp_path / "report.json"))) and
                   any(f["id"] == "VSL624" for f in r["findings"]) and r, 10, what="VSL624")
    assert rep["phase"] == "serving"
    n = sum(m == "WATCHDOG=1" for m in ns.drain())
    time.sleep(2)
    assert sum(m == "WATCHDOG=1" for m in ns.drain()) == n  # no pings while /health fails
    p.send_signal(signal.SIGTERM)
    assert finish(p)[0] == 0
    ns.close()


def headless_plan(tmp_path, *fake_args: str, internal_ip: str | None = "127.0.0.2",
                  **sv) -> str:
    """A headless follower's plan: no API; the fake's /health on 127.0.0.1 stands for vLLM's
    loopback-only sockets, --late-listen for the engines' listener on the internal address."""
    sv = {"ready_timeout": 10, "stop_grace": 3, "report_path": str(tmp_path / "report.json"),
          **sv}
    doc = {
        "host": None, "port": None, "headless": True, "internal_ip": internal_ip,
        "internal_ips": [internal_ip] if internal_ip else [],
        "argv": fake_argv("--port", "0", "--state", str(tmp_path / "state.json"), *fake_args),
        "supervision": sv, "rpc_dir": str(tmp_path / "rpc"),
    }
    return write_plan(str(tmp_path / "plan.json"), doc)


def test_headless_follower_is_ready_only_after_its_internal_listener_appeared(tmp_path):
    """A stand-in process tree for a --headless follower: its loopback socket is up at once,
    its engines' listener on the internal address (the gloo/HCCL pair after joining the head)
    1.5 s later. READY=1 comes only after that listener appeared and the audit of it was
    clean; no /health is waited for (there is none)."""
    ns = NotifySocket(str(tmp_path / "notify"))
    port = 18000 + os.getpid() % 1000
    p = start_launcher(headless_plan(tmp_path, "--late-listen", f"127.0.0.2:{port}",
                                     "--late-after", "1.5"), env={"NOTIFY_SOCKET": ns.path})
    wait_for(lambda: read_json(str(tmp_path / "state.json")), 10, what="fake started")
    time.sleep(0.8)
    rep = read_json(str(tmp_path / "report.json"))
    assert not ns.has("READY=1") and (rep is None or rep["phase"] != "serving")
    rep = ready(tmp_path)
    wait_for(lambda: ns.has("READY=1"), 5, what="READY=1")
    rows = {(r["address"], r["port"]): r for r in rep["listeners"]}
    assert rows[("127.0.0.2", port)]["reason"] == "internal"
    p.send_signal(signal.SIGTERM)
    code, _, err = finish(p)
    assert code in (0, 128 + signal.SIGTERM), err
    assert f"engines listen on 127.0.0.2:{port}/tcp" in err and "/health" not in err
    ns.close()


def test_headless_follower_without_its_internal_listener_exits_75(tmp_path):
    """Bounded wait: a follower whose engines never listen on the internal address (it never
    joined the head) is not reported ready; after ready_timeout it stops with 75."""
    ns = NotifySocket(str(tmp_path / "notify"))
    p = start_launcher(headless_plan(tmp_path, ready_timeout=2),
                       env={"NOTIFY_SOCKET": ns.path})
    code, _, err = finish(p)
    assert code == 75, err
    assert "VSL620" in err and "did not join the head" in err and not ns.has("READY=1")
    state = read_json(str(tmp_path / "state.json"))
    assert state and not alive(state["pid"])
    ns.close()


def test_headless_follower_with_a_wildcard_listener_while_loading_exits_77(tmp_path):
    """The readiness audits are real audits: a forbidden listener before READY stops it."""
    port = 19000 + os.getpid() % 1000
    p = start_launcher(headless_plan(tmp_path, "--late-listen", f"0.0.0.0:{port}",
                                     "--late-after", "0.3"))
    code, _, err = finish(p)
    assert code == 77, err
    assert "VSL600" in err and f"0.0.0.0:{port}" in err


def test_engine_only_node_without_internal_address_counts_loopback_listeners(tmp_path):
    """A headless plan without an internal address (engines only, one host) is ready after its
    loopback listener appeared and a clean audit: no /health wait (it would never answer)."""
    ns = NotifySocket(str(tmp_path / "notify"))
    p = start_launcher(headless_plan(tmp_path, internal_ip=None),
                       env={"NOTIFY_SOCKET": ns.path})
    ready(tmp_path)
    wait_for(lambda: ns.has("READY=1"), 5, what="READY=1")
    p.send_signal(signal.SIGTERM)
    code, _, err = finish(p)
    assert code in (0, 128 + signal.SIGTERM), err  # the fake may not have its handler yet
    assert "headless" in err and "/health" not in err
    ns.close()
