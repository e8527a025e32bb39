"""The derivation's one effect: resolve the head node's name (getaddrinfo, i.e. /etc/hosts and
DNS as the node sees them). pipeline calls it before planning; the planner gets the result."""

from __future__ import annotations

import socket


def addresses(name: str) -> tuple[str, ...]:
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return ()
    return tuple(sorted({str(i[4][0]) for i in infos}))
