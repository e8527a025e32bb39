"""A stand-in for vLLM's process tree (stdlib only) for the firewall tests.

    python fw_tree.py API_PORT INTERNAL_PORT LATE_PORT

Binds the wildcard like a careless dependency would: an HTTP server on 0.0.0.0:API_PORT
(GET /health; GET /connect?host=H&port=P tries an outgoing TCP connection from inside the
tree and answers "ok" or the error; GET /crash exits 3), a forked child listening on
0.0.0.0:INTERNAL_PORT at once, and a listener on 0.0.0.0:LATE_PORT opened one second later.
"""

from __future__ import annotations

import http.server
import os
import socket
import sys
import threading
import time
import urllib.parse


def listen_forever(port: int) -> None:
    srv = socket.create_server(("0.0.0.0", port), reuse_port=False)
    while True:
        conn, _ = srv.accept()
        conn.sendall(b"hi\n")
        conn.close()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        body = b"ok"
        if url.path == "/crash":
            os._exit(3)
        if url.path == "/connect":
            q = urllib.parse.parse_qs(url.query)
            try:
                socket.create_connection((q["host"][0], int(q["port"][0])), timeout=2).close()
            except OSError as exc:
                body = f"error {exc.__class__.__name__}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    api, internal, late = (int(a) for a in sys.argv[1:4])
    if os.fork() == 0:  # a second process of the tree, like an engine core
        listen_forever(internal)
    def late_open() -> None:
        time.sleep(1.0)
        listen_forever(late)
    threading.Thread(target=late_open, daemon=True).start()
    http.server.ThreadingHTTPServer(("0.0.0.0", api), Handler).serve_forever()


if __name__ == "__main__":
    main()
