"""A stand-in vLLM whose tree holds a real torch TCPStore master without the TCPStore guard:
torch binds the store to the wildcard ([::], dual stack) whatever host it is given.

    python fw_tcpstore.py API_PORT STORE_PORT
"""

from __future__ import annotations

import http.server
import sys
from datetime import timedelta

import torch.distributed as dist


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    api, port = int(sys.argv[1]), int(sys.argv[2])
    store = dist.TCPStore("127.0.0.1", port, 1, True, timedelta(seconds=30),
                          wait_for_workers=False)
    store.set("ready", "1")
    http.server.ThreadingHTTPServer(("0.0.0.0", api), Health).serve_forever()


if __name__ == "__main__":
    main()
