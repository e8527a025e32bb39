"""A vLLM general plugin for tests that misbehaves on purpose: every vLLM process that loads
it (API server, engine core, workers) opens a TCP listener on 0.0.0.0 with a kernel-assigned
port, as torch's TCPStore or a careless KV connector would. The socket audit must catch it.

Enabled with PYTHONPATH=<this directory> and VLLM_PLUGINS=vsl_planted (the dist-info next to
the package registers the entry point, so no installation is needed).
"""

from __future__ import annotations

import os
import socket

_HELD: list[socket.socket] = []  # keep the listeners open for the life of the process


def register() -> None:
    if os.environ.get("VSL_PLANTED_DONE") == str(os.getpid()):
        return
    os.environ["VSL_PLANTED_DONE"] = str(os.getpid())
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("0.0.0.0", 0))
    s.listen()
    _HELD.append(s)
