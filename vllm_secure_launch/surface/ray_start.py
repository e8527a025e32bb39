"""Ray 2.60's `ray start` as data: its options, its listening ports, and a parser.

Pure: no Ray import (the launcher never needs Ray in its own interpreter to plan), no I/O.
The option table follows `ray/scripts/scripts.py` of Ray 2.60.0 (`start`, lines 455-720); the
port table follows the measurements and source lines in docs/ray.md ("Ports").

Why a table and not click: `ray start` is Ray's CLI; the launcher must read an argv exactly as
Ray would (`--opt=value` and `--opt value`, flags without values) and write it back, adding
its pins, without importing Ray.
"""

from __future__ import annotations

from dataclasses import field

from vllm_secure_launch.records import record

# `ray start` options that take no value (click is_flag=True).
FLAGS = frozenset({
    "--head", "--block", "--no-redirect-output", "--enable-object-reconstruction",
    "--no-monitor", "--ray-debugger-external", "--disable-usage-stats",
    "--enable-resource-isolation", "--verbose",
})
# Options that take one value (everything else `ray start` knows).
VALUED = frozenset({
    "--address", "--node-ip-address", "--port", "--node-name", "--redis-shard-ports",
    "--object-manager-port", "--node-manager-port",
    "--min-worker-port", "--max-worker-port", "--worker-port-list", "--ray-client-server-port",
    "--memory", "--object-store-memory", "--num-cpus", "--num-gpus", "--resources",
    "--include-dashboard", "--dashboard-host", "--dashboard-port",
    "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
    "--plasma-directory", "--object-spilling-directory", "--autoscaling-config", "--temp-dir",
    "--system-config", "--metrics-export-port", "--tracing-startup-hook", "--labels",
    "--labels-file", "--include-log-monitor", "--system-reserved-cpu",
    "--system-reserved-memory", "--cgroup-path", "--proxy-server-url", "--log-style",
    "--log-color",
})

# Options whose value is a secret: on a command line every local user reads it (ps, /proc), and
# the launcher would print it in the plan. Refused before the value is read; Ray's token
# authentication (RAY_AUTH_TOKEN_PATH, a file) is what guards the cluster.
SECRET = frozenset({"--redis-password", "--redis-username"})

# Where a port's listener binds in Ray 2.60 (measured, docs/ray.md): WILDCARD = the C++ gRPC
# servers and the Python servers that ignore --node-ip-address; NODE_IP = the node address
# (and sometimes 127.0.0.1 too); LOOPBACK = 127.0.0.1 only.
WILDCARD, NODE_IP, LOOPBACK = "wildcard", "node-ip", "loopback"


@record
class Port:
    """One Ray listener the launcher pins."""

    name: str  # what listens
    option: str  # the `ray start` option, or the environment variable (env=True)
    default: int  # the launcher's pinned value (docs/ray.md)
    binds: str  # WILDCARD | NODE_IP | LOOPBACK
    head_only: bool = False
    env: bool = False  # set through the environment (Ray has no option for it)
    needs_default: bool = False  # exists only with `ray[default]` (grpcio, aiohttp installed)
    source: str = ""  # where Ray 2.60.0 defines it (relative to site-packages/ray)


PORTS: tuple[Port, ...] = (
    Port("GCS", "--port", 6379, WILDCARD, head_only=True,
         source="scripts/scripts.py:463-470; _private/ray_constants.py:130"),
    Port("raylet node manager", "--node-manager-port", 6380, WILDCARD,
         source="scripts/scripts.py:508-514; _private/services.py:1963-1971"),
    Port("raylet object manager", "--object-manager-port", 6381, WILDCARD,
         source="scripts/scripts.py:502-507; _private/services.py:1963-1968"),
    Port("runtime-env agent (HTTP)", "--runtime-env-agent-port", 6382, NODE_IP,
         source="scripts/scripts.py:631-636; _private/runtime_env/agent/main.py:243-259"),
    Port("dashboard agent gRPC", "--dashboard-agent-grpc-port", 6383, WILDCARD,
         needs_default=True, source="scripts/scripts.py:625-630; dashboard/agent.py:164-169"),
    Port("dashboard agent HTTP", "--dashboard-agent-listen-port", 6384, NODE_IP,
         needs_default=True,
         source="scripts/scripts.py:619-624; dashboard/http_server_agent.py:54-66"),
    Port("metrics export (Prometheus; off with RAY_enable_metrics_collection=0)",
         "--metrics-export-port", 6385, WILDCARD, needs_default=True,
         source="scripts/scripts.py:688-693; dashboard/modules/reporter/reporter_agent.py:529"),
    Port("dashboard head metrics (Prometheus)", "DASHBOARD_METRIC_PORT", 6386, WILDCARD,
         head_only=True, env=True, needs_default=True,
         source="dashboard/consts.py:67; dashboard/head.py:344-371"),
    Port("autoscaler monitor metrics (Prometheus)", "AUTOSCALER_METRIC_PORT", 6387, WILDCARD,
         head_only=True, env=True, needs_default=True,
         source="autoscaler/_private/constants.py:106; autoscaler/_private/monitor.py:195-211"),
    Port("Ray Client server", "--ray-client-server-port", 10001, NODE_IP, head_only=True,
         needs_default=True, source="scripts/scripts.py:537-544; _private/services.py:2471"),
)
# Core workers, actors and drivers: one gRPC server each, on the wildcard, inside this range.
WORKER_PORTS = (10002, 10999)
WORKER_SOURCE = "scripts/scripts.py:515-536; _private/parameter.py:323-394"
DASHBOARD_PORT = 8265  # the dashboard and Jobs REST API, only on loopback (head, if enabled)
BY_OPTION = {p.option: p for p in PORTS}


class RayArgvError(ValueError):
    """The `ray start` arguments cannot be read (unknown option, missing value)."""


@record
class RayArgs:
    """`ray start` arguments: options in the order given, `--opt=v` and `--opt v` alike."""

    options: tuple[tuple[str, str | None], ...] = ()  # (option, value or None for a flag)
    unknown: tuple[str, ...] = field(default=())  # options `ray start` does not know

    def has(self, option: str) -> bool:
        return any(o == option for o, _ in self.options)

    def get(self, option: str) -> str | None:
        """The last value given (click keeps the last one too)."""
        found = None
        for o, v in self.options:
            if o == option:
                found = v
        return found

    def without(self, *names: str) -> RayArgs:
        return RayArgs(tuple((o, v) for o, v in self.options if o not in names), self.unknown)

    def with_option(self, option: str, value: str | None) -> RayArgs:
        return RayArgs((*self.without(option).options, (option, value)), self.unknown)

    def argv(self) -> list[str]:
        out = []
        for o, v in self.options:
            out.append(o if v is None else f"{o}={v}")
        return out


def parse(argv: list[str] | tuple[str, ...]) -> RayArgs:
    """Read `ray start`'s arguments (what follows `ray start`)."""
    out: list[tuple[str, str | None]] = []
    unknown: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--"):
            raise RayArgvError(f"unexpected argument {arg!r}: `ray start` takes only options")
        name, eq, value = arg.partition("=")
        if name in SECRET:
            raise RayArgvError(
                f"{name} puts a secret on the command line, where every local user can read it; "
                "remove it: the cluster is guarded by Ray's token (--ray-token-file)")
        if name in FLAGS:
            if eq:
                raise RayArgvError(f"{name} takes no value")
            out.append((name, None))
        elif name in VALUED:
            if not eq:
                if i >= len(argv):
                    raise RayArgvError(f"{name} needs a value")
                value = argv[i]
                i += 1
            out.append((name, value))
        else:
            unknown.append(name)
    return RayArgs(tuple(out), tuple(unknown))


def truthy(value: str | None) -> bool | None:
    """click's BOOL: true/1/yes/y/on and false/0/no/n/off (None when unreadable)."""
    if value is None:
        return None
    low = value.strip().lower()
    if low in ("1", "true", "t", "yes", "y", "on"):
        return True
    if low in ("0", "false", "f", "no", "n", "off"):
        return False
    return None
