"""Audit and supervision rules (VSL600–VSL649): what the post-start socket audit and the
supervised run report. IDs are stable and never reused."""

from __future__ import annotations

from vllm_secure_launch.findings import Severity
from vllm_secure_launch.rules.registry import Rule

WILDCARD_LISTENER = Rule(
    id="VSL600",
    title="a process of vLLM's tree listens on a wildcard address",
    severity=Severity.ERROR,
    remedy=(
        "bind the component to the internal IP instead of all interfaces (VLLM_HOST_IP, "
        "GLOO_SOCKET_IFNAME, the component's host option); torch TCPStore listeners cannot be "
        "pinned: disable the feature that starts them or contain vLLM with a firewall or network "
        "namespace"
    ),
    doc=(
        "A TCP or UDP socket bound to 0.0.0.0 or :: (a dual-stack [::] listener accepts IPv4 "
        "too) is reachable from every network the host is on. The launcher found it after "
        "vLLM became healthy or later, during the continuous watch."
    ),
)

UNPLANNED_ADDRESS = Rule(
    id="VSL601",
    title="a process of vLLM's tree listens on an address outside the plan",
    severity=Severity.ERROR,
    remedy=(
        "bind the component to the planned internal IP or loopback, or add the address to the "
        "plan (--internal-ip / policy) if this interface is trusted"
    ),
    doc=(
        "Allowed are the API socket on exactly the planned address and port, any port on the "
        "planned internal addresses, and loopback when the plan allows it. Any other address "
        "means a component chose an interface by itself (hostname resolution, default route)."
    ),
)

API_NOT_OWNED = Rule(
    id="VSL602",
    title="the planned API socket is not held by vLLM's process tree",
    severity=Severity.ERROR,
    remedy=(
        "find and stop the other process that listens on the API address and port "
        "(ss -ltnp), or choose a free --port"
    ),
    doc=(
        "GET /health answered on the planned API address, but no process started by the "
        "launcher listens there: another program answers in vLLM's name."
    ),
)

AUDIT_UNAVAILABLE = Rule(
    id="VSL603",
    title="the socket audit could not read the process tree's sockets",
    severity=Severity.ERROR,
    remedy=(
        "run the launcher with /proc mounted and readable (procfs, same PID namespace as vLLM), "
        "or pass --audit off knowingly"
    ),
    doc="The audit fails closed: sockets that cannot be seen cannot be judged clean.",
)

NOT_READY_IN_TIME = Rule(
    id="VSL620",
    title="vLLM did not become healthy in time",
    severity=Severity.ERROR,
    remedy=(
        "raise --ready-timeout (env VSL_READY_TIMEOUT) for large models, or read vLLM's log "
        "above for what it was waiting on"
    ),
    doc="GET /health did not return 200 within the ready timeout; vLLM was stopped (exit 75).",
)

EXITED_BEFORE_READY = Rule(
    id="VSL621",
    title="vLLM exited before it became healthy",
    severity=Severity.ERROR,
    remedy="read vLLM's last lines in the report or above and fix the cause it names",
    doc="The launcher exits with vLLM's own code (128+N when it died from signal N).",
)

EXITED_WHILE_SERVING = Rule(
    id="VSL622",
    title="vLLM exited while serving",
    severity=Severity.WARNING,
    remedy="read vLLM's last lines; a non-zero code means the engine or server failed",
    doc="vLLM exited without being asked to stop; the launcher exits with its code.",
)

CANNOT_START = Rule(
    id="VSL623",
    title="vLLM could not be started",
    severity=Severity.ERROR,
    remedy=(
        "check that vLLM is installed in the launcher's Python environment, or set "
        "--vllm-command (env VSL_VLLM_COMMAND) to a command that exists and is executable"
    ),
    doc="The command is not found (exit 127) or not executable (exit 126).",
)

HEALTH_LOST = Rule(
    id="VSL624",
    title="GET /health stopped answering 200 while serving",
    severity=Severity.WARNING,
    remedy="read vLLM's log; systemd's watchdog (WatchdogSec=) restarts the service if it stays down",
    doc="The launcher stops sending WATCHDOG=1 while /health fails.",
)

EXITED_UNASKED = Rule(
    id="VSL625",
    title="vLLM exited with code 0 although it was not asked to stop",
    severity=Severity.ERROR,
    remedy="read vLLM's last lines (a dead engine core makes vLLM's API server shut down with 0); "
    "systemd's Restart=on-failure restarts the service on the launcher's exit code 76",
    doc=(
        "vLLM's API server ends with code 0 when its engine core dies (killed, out of memory). "
        "The launcher did not ask it to stop, so the service is down: the launcher exits 76, "
        "never 0, so a supervisor restarts it."
    ),
)

HUNG = Rule(
    id="VSL626",
    title="vLLM hung: GET /health failed for the hang timeout while serving",
    severity=Severity.ERROR,
    remedy="read vLLM's log (a stopped or deadlocked API server); raise --hang-timeout "
    "(VSL_HANG_TIMEOUT) if /health is only slow under load, 0 turns the check off",
    doc=(
        "While serving the launcher probes GET /health (every watchdog interval, else every "
        "few seconds). When no probe has succeeded for --hang-timeout seconds it SIGKILLs "
        "vLLM's tree (a stopped process ignores SIGTERM) and exits 79."
    ),
)

RULES: tuple[Rule, ...] = (
    WILDCARD_LISTENER,
    UNPLANNED_ADDRESS,
    API_NOT_OWNED,
    AUDIT_UNAVAILABLE,
    NOT_READY_IN_TIME,
    EXITED_BEFORE_READY,
    EXITED_WHILE_SERVING,
    CANNOT_START,
    HEALTH_LOST,
    EXITED_UNASKED,
    HUNG,
)
