"""sdnotify.py: datagrams on a real unix socket (path and abstract '@'), no-op without
NOTIFY_SOCKET, watchdog interval from WATCHDOG_USEC/WATCHDOG_PID."""

from __future__ import annotations

import os
import socket

from vllm_secure_launch.supervise.sdnotify import Notifier, socket_address, watchdog_interval


def _recv(sock):
    sock.settimeout(2)
    return sock.recv(4096).decode()


def test_path_socket_receives_each_message(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(path)
        n = Notifier.from_env({"NOTIFY_SOCKET": path})
        assert n.enabled
        assert n.ready("serving")
        assert _recv(srv) == "READY=1\nSTATUS=serving"
        n.status("loading\nmodel")
        assert _recv(srv) == "STATUS=loading model"
        n.extend_timeout(30)
        assert _recv(srv) == "EXTEND_TIMEOUT_USEC=30000000"
        n.watchdog()
        assert _recv(srv) == "WATCHDOG=1"
        n.stopping()
        assert _recv(srv) == "STOPPING=1"
        n.close()


def test_abstract_socket():
    name = f"vslsv-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(b"\0" + name.encode())
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert _recv(srv) == "READY=1"


def test_noop_without_socket_and_errors_swallowed(tmp_path):
    assert not Notifier.from_env({}).ready()
    assert not Notifier.from_env({}).enabled
    gone = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert gone.enabled and not gone.ready()  # no listener: no exception
    assert socket_address("vsock:2:1") is None


def test_watchdog_interval():
    assert watchdog_interval({}, 1) is None
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}, 1) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, 1) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "2"}, 1) is None


def test_send_never_blocks_on_a_full_queue_and_keeps_messages_for_later(tmp_path):
    path = str(tmp_path / "slow")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(path)
        n = Notifier.from_env({"NOTIFY_SOCKET": path})
        for i in range(200):  # far more than the receiver's queue holds
            n.status(f"tick {i}")
        n.ready()
        assert n.pending  # nothing blocked; the rest waits
        got = []
        srv.settimeout(0.2)
        for _ in range(100):
            try:
                while True:
                    got.append(srv.recv(4096).decode())
            except TimeoutError:
                pass
            if n.flush():
                break
        try:
            while True:
                got.append(srv.recv(4096).decode())
        except TimeoutError:
            pass
        assert got[-1] == "READY=1"
