"""A tiny fake vLLM for fast supervisor tests: a real process, just not vLLM (stdlib only).

    python fake_vllm.py --host 127.0.0.1 --port P [options]

Serves GET /health (200) after --delay seconds, writes a JSON state file (--state) with its pid,
its children's pids and the SigBlk/SigIgn masks read from /proc/self/status, and can misbehave
on demand: exit early (--exit-after/--exit-code), ignore SIGTERM (--ignore-term), start
grandchildren (--children, --escape: one that leaves the process group with setsid), or open a
wildcard listener late (--late-listen HOST:PORT --late-after SECONDS).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import socket
import sys
import threading
import time


def status_field(name: str) -> str:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(name + ":"):
                return line.split()[1]
    return ""


HEALTH_FAIL_AT = [float("inf")]


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        code = 200 if self.path in ("/health", "/v1/models") else 404
        if time.monotonic() >= HEALTH_FAIL_AT[0]:
            code = 503
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def sleeper(setsid: bool) -> int:
    pid = os.fork()
    if pid == 0:
        if setsid:
            os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL removes it
        while True:
            time.sleep(3600)
    return pid


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--uds")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--exit-after", type=float)
    p.add_argument("--exit-code", type=int, default=0)
    p.add_argument("--term-code", type=int, default=0, help="exit code after SIGTERM")
    p.add_argument("--ignore-term", action="store_true")
    p.add_argument("--children", type=int, default=0)
    p.add_argument("--escape", action="store_true")
    p.add_argument("--late-listen")
    p.add_argument("--late-after", type=float, default=0.5)
    p.add_argument("--late-udp", action="store_true")
    p.add_argument("--state")
    p.add_argument("--die-after", type=float, help="exit (--exit-code) this long after serving")
    p.add_argument("--health-fail-after", type=float, help="/health answers 503 after this")
    p.add_argument("--print", default="fake vllm starting")
    a = p.parse_args()

    print(a.print, flush=True)
    print("fake vllm: a line on stderr", file=sys.stderr, flush=True)
    kids = [sleeper(False) for _ in range(a.children)]
    if a.escape:
        kids.append(sleeper(True))
    state = {"pid": os.getpid(), "children": kids, "sigblk": status_field("SigBlk"),
             "sigign": status_field("SigIgn"), "pgid": os.getpgid(0), "sid": os.getsid(0)}
    if a.state:
        with open(a.state + ".tmp", "w") as fh:
            json.dump(state, fh)
        os.replace(a.state + ".tmp", a.state)

    if a.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(a.term_code))

    if a.exit_after is not None:
        time.sleep(a.exit_after)
        print("fake vllm: fatal error, giving up", file=sys.stderr, flush=True)
        return a.exit_code
    time.sleep(a.delay)
    if a.uds:
        class UnixServer(http.server.HTTPServer):
            address_family = socket.AF_UNIX

            def server_bind(self) -> None:
                self.socket.bind(self.server_address)

        class UnixHealth(Health):
            def address_string(self) -> str:
                return "unix"

        srv: http.server.HTTPServer = UnixServer(a.uds, UnixHealth)
    else:
        srv = http.server.HTTPServer((a.host, a.port), Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    if a.health_fail_after is not None:
        HEALTH_FAIL_AT[0] = time.monotonic() + a.health_fail_after
    if a.die_after is not None:
        time.sleep(a.die_after)
        print("fake vllm: engine died", file=sys.stderr, flush=True)
        return a.exit_code
    held = []
    if a.late_listen:
        time.sleep(a.late_after)
        host, _, port = a.late_listen.rpartition(":")
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM if a.late_udp else socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host.strip("[]"), int(port)))
        if not a.late_udp:
            s.listen()
        print(f"fake vllm: late listener {a.late_listen} at {time.time():.6f}", flush=True)
        held.append(s)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
