"""The live look at the Ray cluster vLLM is about to join (the effects of VSL730–VSL739; the
judgement is rules/ray_live_rules.py).

The launcher never imports Ray: a short script runs in a child interpreter of vLLM's own
environment (the Ray vLLM will use) and asks the GCS for its node list and the dashboard's
recorded address through Ray's GcsClient — no driver, no job, no worker port. It runs twice:
once with token mode off, no token variable and an empty HOME (so ~/.ray/auth_token cannot
help), which a token cluster must refuse; once with the token file, which it must accept.
Each run is bounded by a timeout; a run that times out or fails otherwise decides nothing,
and the judgement refuses then. The dashboard port is probed by TCP on the head's addresses,
and this host's raylet (its node address and worker ports) is read from /proc.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
from typing import Iterable, Mapping

from vllm_secure_launch.rules.ray_live_rules import Observation, Probe, split_hostport

TIMEOUT = 45.0  # per probe: `import ray` alone takes seconds on a busy host
CONNECT_TIMEOUT = 2.0
# Ray's default (ray_constants.DEFAULT_DASHBOARD_PORT); the one `ray start` also pins. A
# literal here, not an import of surface.ray_start: the serve path does not load Ray's surface.
DASHBOARD_PORT = 8265
MARK = "VSL-RAY-PROBE:"

# Runs in vLLM's interpreter. GcsClient connects, fetches the cluster ID (the first RPC, which
# a token cluster refuses without the token) and answers two read-only calls.
SCRIPT = r"""
import json, sys
out = {}
try:
    from ray._raylet import GcsClient
    c = GcsClient(address=sys.argv[1])
    info = c.get_all_node_info(timeout=float(sys.argv[2]))
    out["nodes"] = [[n.node_manager_address, n.state == 0, bool(n.is_head_node)]
                    for n in info.values()]
    d = c.internal_kv_get(b"dashboard", b"dashboard", timeout=float(sys.argv[2]))
    out["dashboard"] = d.decode() if d else ""
except BaseException as e:
    out["error"] = type(e).__name__ + ": " + str(e).splitlines()[0][:400] if str(e) else type(e).__name__
print("VSL-RAY-PROBE:" + json.dumps(out), flush=True)
"""
AUTH_MARKS = ("Unauthenticated", "InvalidAuthToken", "AuthenticationError",
              "Authentication token is missing or incorrect")


def probe(python: str, address: str, env: Mapping[str, str], timeout: float = TIMEOUT) -> Probe:
    """One GcsClient run in a child of `python` with exactly `env` (plus PATH)."""
    try:
        r = subprocess.run([python, "-I", "-c", SCRIPT, address, str(max(timeout / 3, 1.0))],
                           env={"PATH": os.environ.get("PATH", os.defpath), **env},
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return Probe(False, error=f"no answer within {timeout:.0f} s")
    except OSError as exc:
        return Probe(False, error=f"cannot run {python}: {exc.strerror}")
    line = next((ln for ln in reversed(r.stdout.splitlines()) if ln.startswith(MARK)), None)
    if line is None:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return Probe(False, error=f"the probe exited {r.returncode}: {tail}")
    try:
        doc = json.loads(line[len(MARK):])
    except ValueError:
        return Probe(False, error="the probe's answer is not JSON")
    if "error" in doc:
        err = str(doc["error"])
        return Probe(False, auth_rejected=any(m in err + r.stderr for m in AUTH_MARKS),
                     error=err)
    nodes = tuple((str(a), bool(al), bool(h)) for a, al, h in doc.get("nodes", []))
    return Probe(True, nodes=nodes, dashboard=str(doc.get("dashboard") or ""))


def connects(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except (OSError, UnicodeError, OverflowError, ValueError):
        # A name the GCS reports may be no valid host (a label over 63 characters), or a
        # port over 65535: not reachable, and the check goes on (it never raises).
        return False


def dashboard_targets(address: str, p: Probe) -> list[tuple[str, int]]:
    """The head's non-loopback addresses x the dashboard ports (the default and the recorded)."""
    from vllm_secure_launch.rules.ray_live_rules import _is_loopback

    hosts = [split_hostport(address)[0], *(a for a, _, head in p.nodes if head)]
    ports = {DASHBOARD_PORT}
    if p.dashboard:
        port = split_hostport(p.dashboard)[1]
        if port:
            ports.add(port)
    return [(h, port) for h in dict.fromkeys(hosts) if h and not _is_loopback(h)
            for port in sorted(ports)]


def _cmdline(pid: str, proc: str) -> list[str]:
    try:
        with open(os.path.join(proc, pid, "cmdline"), "rb") as fh:
            return fh.read(1 << 20).decode("utf-8", "replace").split("\0")
    except OSError:
        return []


def _opts(argv: Iterable[str]) -> dict[str, str]:
    return dict(a[2:].partition("=")[::2] for a in argv if a.startswith("--") and "=" in a)


def local_raylet(node_ips: Iterable[str], gcs: str,
                 proc: str = "/proc") -> tuple[tuple[str, tuple[tuple[int, int], ...]] | None, str]:
    """This host's raylet at one of `node_ips`: (its node address, worker port ranges). With
    several (two clusters on one host), the one whose --gcs-address is `gcs` wins."""
    wanted = set(node_ips)
    seen, found = [], []
    for pid in (p for p in os.listdir(proc) if p.isdigit()):
        argv = _cmdline(pid, proc)
        if not argv or os.path.basename(argv[0]) != "raylet":
            continue
        opts = _opts(argv)
        ip = opts.get("node_ip_address", "")
        seen.append(ip)
        if ip in wanted:
            found.append((opts.get("gcs-address") == gcs, ip, _worker_ports(opts)))
    if found:
        _, ip, ports = max(found, key=lambda f: f[0])
        return (ip, ports), ""
    where = ", ".join(sorted(wanted)) or "no internal address"
    return None, (f"no raylet on this host has node address {where}"
                  + (f" (raylets here: {', '.join(sorted(set(seen)))})" if seen else ""))


def _worker_ports(opts: Mapping[str, str]) -> tuple[tuple[int, int], ...]:
    parts = [p.strip() for p in opts.get("worker_port_list", "").split(",")]
    listed = [int(p) for p in parts if p.isascii() and p.isdigit()]
    if listed:
        return tuple((p, p) for p in sorted(listed))
    lo, hi = opts.get("min_worker_port", ""), opts.get("max_worker_port", "")
    if lo.isascii() and hi.isascii() and lo.isdigit() and hi.isdigit() and int(lo) > 0:
        return ((int(lo), int(hi)),)
    return ()


def observe(python: str, env: Mapping[str, str], local_ips: Iterable[str],
            timeout: float = TIMEOUT) -> Observation:
    """Everything the judgement needs; never raises for a cluster that misbehaves."""
    address = env.get("RAY_ADDRESS", "")
    with tempfile.TemporaryDirectory(prefix="vsl-ray-probe-") as home:
        base = {"HOME": home, "RAY_USAGE_STATS_ENABLED": "0"}
        # Token mode off, no token anywhere: a token cluster refuses the cluster-ID RPC.
        bare = probe(python, address, {**base, "RAY_AUTH_MODE": "disabled"}, timeout)
        token = probe(python, address, {**base, "RAY_AUTH_MODE": "token",
                                        "RAY_AUTH_TOKEN_PATH": env.get("RAY_AUTH_TOKEN_PATH", "")},
                      timeout)
    reach = tuple((f"{h}:{p}", connects(h, p)) for h, p in dashboard_targets(address, token))
    host, port = split_hostport(address)
    local, why = local_raylet(local_ips, f"{host}:{port}" if port else "")
    return Observation(address, bare, token, reach, local, why)
