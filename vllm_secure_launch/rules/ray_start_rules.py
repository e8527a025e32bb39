"""VSL700–VSL719 — `vllm-secure-launch ray start`: a Ray node started the hardened way.

Judged by the Ray planner (raycluster/plan.py) over a RayContext, not by the serve planner:
listed as a catalog (rules/catalogs.py); the cases are in tests/corpus/ray_start/. Facts and
source lines: docs/ray.md.
"""

from __future__ import annotations

from dataclasses import field
from typing import Mapping

from vllm_secure_launch.addresses import LOOPBACK, InternalNet, ResolveError, classify, parse_ip
from vllm_secure_launch.config.policy import Policy
from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.records import record
from vllm_secure_launch.rules.ray_serve_rules import MIN_TOKEN_CHARS, has_token_auth
from vllm_secure_launch.rules.registry import Rule
from vllm_secure_launch.surface import ray_start as S

HARDENED = Rule(
    "VSL700", "Ray node hardened: internal address, pinned ports, token auth", Severity.INFO,
    "nothing to do; `--dry-run ray start ...` prints the exact command line and environment")
NODE_IP = Rule(
    "VSL701", "--node-ip-address is not this node's internal address", Severity.ERROR,
    "drop --node-ip-address (the launcher sets the internal address) or give this node's "
    "address on the internal network (--internal-iface/--internal-cidr/--internal-ip)",
    "Ray advertises the node IP to every peer and binds its agents there; an address outside "
    "the internal network puts the cluster's traffic on it.")
NO_INTERNAL = Rule(
    "VSL702", "the internal network cannot be resolved for Ray", Severity.ERROR,
    "set exactly one of --internal-iface, --internal-cidr, --internal-ip to a local private "
    "address (the same network on every node)")
BAD_PORT = Rule(
    "VSL703", "a Ray port is 0, out of range or not a number", Severity.ERROR,
    "give a fixed port 1-65535 or drop the option (the launcher pins the documented value); "
    "a random port cannot be expected by the audit nor the firewall rules")
PINNED = Rule(
    "VSL704", "Ray ports pinned by the launcher", Severity.INFO,
    "nothing to do; write an option yourself to choose another fixed port")
DASHBOARD_HOST = Rule(
    "VSL705", "the Ray dashboard would listen on a non-loopback address", Severity.ERROR,
    "drop --dashboard-host (or give 127.0.0.1) and reach the dashboard through an SSH tunnel; "
    "the dashboard's Jobs API runs code (CVE-2023-48022 'ShadowRay', CVE-2025-62593)")
DEBUGGER = Rule(
    "VSL706", "--ray-debugger-external opens remote debuggers on every interface",
    Severity.ERROR, "drop --ray-debugger-external; debug with a local `ray debug`",
    "util/rpdb.py:236-240 binds the breakpoint's pdb server to 0.0.0.0: anyone reaching it "
    "runs code in the worker.")
AUTH_MODE = Rule(
    "VSL707", "RAY_AUTH_MODE turns Ray's token authentication off", Severity.ERROR,
    "unset RAY_AUTH_MODE (the launcher sets token) ; every node and client needs "
    "RAY_AUTH_MODE=token")
TOKEN_IN_ENV = Rule(
    "VSL708", "RAY_AUTH_TOKEN holds the token in the environment", Severity.ERROR,
    "unset RAY_AUTH_TOKEN and put the token in a 0600 file (--ray-token-file or "
    "RAY_AUTH_TOKEN_PATH)", "Every Ray daemon, worker and task inherits the environment; it "
    "is readable in /proc/PID/environ and in task runtime environments.")
TOKEN_FILE = Rule(
    "VSL709", "Ray's token file is missing or unsafe", Severity.ERROR,
    "give --ray-token-file (VSL_RAY_TOKEN_FILE, [ray] ray_token_file) or RAY_AUTH_TOKEN_PATH: a "
    "regular file owned by the service user, mode 0600 or 0400, one line of at least 32 "
    "characters (`python -c 'import secrets; print(secrets.token_hex(32))'`); copy the head's "
    "file to every worker")
TOKEN_NEW = Rule(
    "VSL710", "Ray's token file does not exist yet; the head creates it", Severity.INFO,
    "copy the file (mode 0600) to every worker node before they join")
TEMP_DIR = Rule(
    "VSL711", "--temp-dir is not inside a private directory", Severity.ERROR,
    "drop --temp-dir (the launcher uses a 0700 directory of its own) or give one whose parent "
    "is a directory owned by the service user with mode 0700",
    "Ray makes its session directories 0777 (logs, sockets, runtime environments).")
ARGV = Rule(
    "VSL712", "the `ray start` arguments cannot be read", Severity.ERROR,
    "fix the option (`ray start --help` lists them); unknown options are refused, not passed")
ROLE = Rule(
    "VSL713", "neither a head nor a join to a head on the internal network", Severity.ERROR,
    "give --head on the head node and --address HEAD_INTERNAL_IP:6379 on the others (under "
    "Slurm the launcher derives both); --address with --head and --proxy-server-url are not "
    "supported")
HEAD_ADDRESS = Rule(
    "VSL714", "--address names a head outside the internal network", Severity.ERROR,
    "give the head's internal IP and GCS port, e.g. --address 10.0.0.1:6379")
FIREWALL = Rule(
    "VSL715", "Ray's wildcard listeners would run without the kernel firewall", Severity.ERROR,
    "run the launcher as root or with CAP_NET_ADMIN and a delegated cgroup v2 subtree "
    "(docs/firewall.md); waive VSL715 only where a host firewall admits Ray's ports from the "
    "internal network alone, and set --audit warn as well",
    "Ray 2.60's GCS, raylet, object manager and every core worker listen on the wildcard "
    "whatever --node-ip-address says; without the cgroup-matched nftables table they answer "
    "on every interface (docs/ray.md).")
DASHBOARD_ON = Rule(
    "VSL716", "the Ray dashboard is on (loopback only)", Severity.WARNING,
    "leave --include-dashboard off unless needed; reach it with `ssh -L 8265:127.0.0.1:8265`")
PORT_CLASH = Rule(
    "VSL717", "two Ray ports collide or the worker port range is empty", Severity.ERROR,
    "give every Ray port its own value and --min-worker-port <= --max-worker-port, outside "
    "the other ports")
BLOCK = Rule(
    "VSL718", "the launcher keeps Ray in the foreground (--block)", Severity.INFO,
    "nothing to do; run it as a service (systemd, `srun ... &`); stopping the launcher stops "
    "the node", "A daemonised `ray start` would leave the daemons outside supervision, the "
    "audit and the kernel firewall's lifetime.")
NO_RAY = Rule(
    "VSL719", "Ray is missing or too old for token authentication", Severity.ERROR,
    "install ray>=2.52 (tested: 2.60.0) into the launcher's environment: pip install "
    "'ray==2.60.0'")

RULES = (HARDENED, NODE_IP, NO_INTERNAL, BAD_PORT, PINNED, DASHBOARD_HOST, DEBUGGER, AUTH_MODE,
         TOKEN_IN_ENV, TOKEN_FILE, TOKEN_NEW, TEMP_DIR, ARGV, ROLE, HEAD_ADDRESS, FIREWALL,
         DASHBOARD_ON, PORT_CLASH, BLOCK, NO_RAY)


@record
class TokenFacts:
    """What the host says about the token file (read by raycluster/host.py)."""

    path: str
    exists: bool
    regular: bool = True
    mode: int | None = None
    owner_ok: bool = True
    length: int = 0  # characters of the first line, stripped
    lines: int = 1
    error: str | None = None  # why it could not be read


@record
class RayContext:
    args: S.RayArgs
    environ: Mapping[str, str]
    policy: Policy
    internal: InternalNet | None
    internal_error: ResolveError | None
    local_ips: frozenset[str]
    head: bool
    token: TokenFacts | None
    ray_version: str | None
    firewall_unusable: str | None  # why the kernel firewall cannot be enforced here
    temp_parent_private: bool | None = None  # the user's --temp-dir parent: 0700 and ours
    argv_error: str | None = None
    derived_head: str | None = None  # the head's internal IP derived from Slurm
    planned_temp_dir: str = ""  # the launcher's own --temp-dir (when the user gives none)
    ray_client: bool = False  # grpcio is installed: Ray starts its Client server on the head
    extra: tuple[Finding, ...] = field(default=())


def check_ray(ctx: RayContext) -> list[Finding]:
    if ctx.ray_version is None:
        return [NO_RAY.finding("ray", "the `ray` package is not installed in the launcher's "
                               "environment")]
    if not has_token_auth(ctx.ray_version):
        return [NO_RAY.finding("ray", f"ray {ctx.ray_version} has no token authentication "
                               "(RAY_AUTH_MODE=token needs 2.52 or newer)")]
    return []


def check_argv(ctx: RayContext) -> list[Finding]:
    if ctx.argv_error:
        return [ARGV.finding("ray start", ctx.argv_error)]
    return [ARGV.finding(o, f"{o} is not a `ray start` option of Ray 2.60")
            for o in ctx.args.unknown]


def check_role(ctx: RayContext) -> list[Finding]:
    a = ctx.args
    if a.has("--proxy-server-url"):
        return [ROLE.finding("--proxy-server-url", "--proxy-server-url routes the node through "
                             "an outside proxy")]
    if ctx.head and a.has("--address"):
        return [ROLE.finding("--address", "--address with --head points the head at an "
                             "external Redis/GCS")]
    if not ctx.head and not a.has("--address") and ctx.derived_head is None:
        return [ROLE.finding("ray start", "neither --head nor --address was given")]
    return []


def _host_port(text: str) -> tuple[str, str]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest.lstrip(":")
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    return host, port


def check_addresses(ctx: RayContext) -> list[Finding]:
    out = []
    if ctx.internal_error is not None:
        return [NO_INTERNAL.finding("internal network", ctx.internal_error.what,
                                    remedy=ctx.internal_error.fix)]
    internal = ctx.internal
    if internal is None:
        return []
    given = ctx.args.get("--node-ip-address")
    if given is not None:
        ip = parse_ip(given)
        if ip is None or not internal.contains(given) or str(ip) not in ctx.local_ips:
            out.append(NODE_IP.finding("--node-ip-address", (
                f"--node-ip-address {given} is not an address of this node inside the internal "
                f"network {internal.network}")))
    address = ctx.args.get("--address")
    if address is not None and not ctx.head:
        host, port = _host_port(address)
        ok_host = parse_ip(host) is not None and (internal.contains(host) or (
            classify(host) == LOOPBACK and internal.how == "loopback-default"))
        if not ok_host:
            out.append(HEAD_ADDRESS.finding("--address", (
                f"--address {address}: the head must be a literal IP inside "
                f"{internal.network}")))
        elif port and not (port.isascii() and port.isdigit()):
            out.append(BAD_PORT.finding("--address", f"--address {address}: port {port!r}"))
    return out


def _port_value(text: str | None) -> int | None:
    if text is None or not (text.strip().isascii() and text.strip().isdigit()):
        return None
    n = int(text)
    return n if 0 < n < 65536 else None


def port_options(head: bool, client: bool = True) -> list[S.Port]:
    """The ports this node pins: head-only ones on the head; the Ray Client server only where
    grpcio is installed (minimal `ray` refuses --ray-client-server-port)."""
    return [p for p in S.PORTS if (head or not p.head_only)
            and (client or p.option != "--ray-client-server-port")]


def check_ports(ctx: RayContext) -> list[Finding]:
    out = []
    for p in port_options(ctx.head, ctx.ray_client):
        raw = ctx.environ.get(p.option) if p.env else ctx.args.get(p.option)
        if raw is not None and _port_value(raw) is None:
            why = ("Ray would pick a random port" if raw.strip() == "0"
                   else "not a port 1-65535")
            out.append(BAD_PORT.finding(p.option, f"{p.option}={raw}: {why}"))
    for name in ("--min-worker-port", "--max-worker-port", "--dashboard-port"):
        raw = ctx.args.get(name)
        if raw is not None and _port_value(raw) is None:
            out.append(BAD_PORT.finding(name, f"{name}={raw} is not a port 1-65535"))
    listed = ctx.args.get("--worker-port-list")
    if listed is not None and (not listed.strip() or any(
            _port_value(x) is None for x in listed.split(","))):
        out.append(BAD_PORT.finding("--worker-port-list", f"--worker-port-list={listed}: "
                                    "every entry must be a port 1-65535"))
    return out or _clashes(ctx)


def final_ports(ctx: RayContext) -> dict[str, int]:
    """option/env name -> the port the node will use: the user's, else the pinned default.
    Only valid after check_ports passed."""
    out = {}
    for p in port_options(ctx.head, ctx.ray_client):
        raw = ctx.environ.get(p.option) if p.env else ctx.args.get(p.option)
        out[p.option] = _port_value(raw) or p.default
    return out


def worker_ports(ctx: RayContext) -> tuple[tuple[int, int], ...]:
    """The core workers' ports as inclusive ranges."""
    listed = ctx.args.get("--worker-port-list")
    if listed:
        return tuple((int(x), int(x)) for x in listed.split(","))
    lo = _port_value(ctx.args.get("--min-worker-port")) or S.WORKER_PORTS[0]
    hi = _port_value(ctx.args.get("--max-worker-port")) or S.WORKER_PORTS[1]
    return ((lo, hi),)


def _clashes(ctx: RayContext) -> list[Finding]:
    out = []
    seen: dict[int, str] = {}
    for option, port in final_ports(ctx).items():
        if port in seen:
            out.append(PORT_CLASH.finding(option, f"{option} and {seen[port]} are both {port}"))
        seen[port] = option
    for lo, hi in worker_ports(ctx):
        if lo > hi:
            out.append(PORT_CLASH.finding("--min-worker-port", f"worker ports {lo}-{hi} are "
                                          "an empty range"))
        for port, option in seen.items():
            if lo <= port <= hi:
                out.append(PORT_CLASH.finding(option, f"{option} {port} lies inside the worker "
                                              f"port range {lo}-{hi}"))
    return out


def check_dashboard(ctx: RayContext) -> list[Finding]:
    out = []
    host = ctx.args.get("--dashboard-host")
    if host is not None and classify(host) != LOOPBACK:
        out.append(DASHBOARD_HOST.finding("--dashboard-host", f"--dashboard-host {host} is "
                                          "reachable from other hosts"))
    include = S.truthy(ctx.args.get("--include-dashboard"))
    if ctx.args.has("--include-dashboard") and include is None:
        out.append(ARGV.finding("--include-dashboard", "--include-dashboard takes true or "
                                "false"))
    elif include and not out:
        out.append(DASHBOARD_ON.finding("--include-dashboard", "the dashboard and its Jobs API "
                                        "listen on 127.0.0.1 of the head"))
    if ctx.args.has("--ray-debugger-external"):
        out.append(DEBUGGER.finding("--ray-debugger-external", "remote pdb servers on "
                                    "0.0.0.0 at every breakpoint"))
    return out


def check_auth(ctx: RayContext) -> list[Finding]:
    out = []
    mode = ctx.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.strip().lower() != "token":
        out.append(AUTH_MODE.finding("RAY_AUTH_MODE", f"RAY_AUTH_MODE={mode}"))
    if ctx.environ.get("RAY_AUTH_TOKEN"):
        out.append(TOKEN_IN_ENV.finding("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN is set (value not "
                                        "shown)"))
    out += _system_config_auth(ctx.args.get("--system-config"))
    out += _token_findings(ctx)
    return out


def _system_config_auth(text: str | None) -> list[Finding]:
    """Ray's internal config (--system-config JSON) holds its C++ settings; one whose name
    speaks of auth could override the token mode the launcher sets. Not confirmed for Ray
    2.60's keys, so refused whole (fail closed), as is JSON that cannot be read."""
    if text is None:
        return []
    import json

    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return [ARGV.finding("--system-config", "--system-config is not a JSON object")]
    keys = sorted(k for k in doc if "auth" in str(k).lower())
    return [AUTH_MODE.finding("--system-config", f"--system-config sets {k}, which may turn "
                              "token authentication off") for k in keys]


def _token_findings(ctx: RayContext) -> list[Finding]:
    t = ctx.token
    if t is None:
        return [TOKEN_FILE.finding("token file", "no token file: give --ray-token-file or "
                                   "RAY_AUTH_TOKEN_PATH")]
    if not t.path.startswith("/"):
        # Each Ray process resolves RAY_AUTH_TOKEN_PATH against its own working directory
        # (and `serve` refuses it too, VSL723).
        return [TOKEN_FILE.finding(t.path, f"{t.path} is a relative path: give the token "
                                   "file's absolute path")]
    if not t.exists:
        if ctx.head and t.error is None:
            return [TOKEN_NEW.finding(t.path, f"{t.path} does not exist; the head writes a new "
                                      "token there (mode 0600) before Ray starts")]
        return [TOKEN_FILE.finding(t.path, f"{t.path} does not exist" + (
            f" ({t.error})" if t.error else "; a worker needs the head's token file"))]
    problems = []
    if t.error:
        problems.append(t.error)
    if not t.regular:
        problems.append("it is not a regular file")
    if not t.owner_ok:
        problems.append("it is not owned by the service user")
    if t.mode is not None and t.mode & 0o077:
        problems.append(f"it is readable by group or others (mode {t.mode:04o})")
    if t.regular and not t.error and t.length < MIN_TOKEN_CHARS:
        problems.append(f"its token has {t.length} characters, fewer than {MIN_TOKEN_CHARS}")
    if t.lines > 1:
        problems.append("it holds more than one line (Ray reads only the first)")
    return [TOKEN_FILE.finding(t.path, f"{t.path}: {p}") for p in problems]


# Ray puts its sockets at TEMP/session_YYYY-MM-DD_HH-MM-SS_UUUUUU_PID/sockets/plasma_store
# (63 characters after TEMP with a 5-digit pid, up to 65 with 7) and refuses a path over the
# 107 bytes of sun_path (_private/utils.py:1760): a longer TEMP fails only after a slow start.
SOCKET_TAIL = 65
SUN_PATH = 107


def check_temp_dir(ctx: RayContext) -> list[Finding]:
    out = []
    given = ctx.args.get("--temp-dir")
    if given is not None and not ctx.temp_parent_private:
        out.append(TEMP_DIR.finding("--temp-dir", f"--temp-dir {given}: its parent is not a "
                                    "0700 directory of the service user"))
    temp = given or ctx.planned_temp_dir
    if temp and len(temp.encode()) + SOCKET_TAIL > SUN_PATH:
        out.append(TEMP_DIR.finding("--temp-dir", (
            f"{temp} is {len(temp.encode())} bytes: Ray's socket paths below it would exceed "
            f"the {SUN_PATH} bytes of a unix socket address"), remedy=(
            "use a shorter --temp-dir, or a shorter run directory base ([launcher] "
            "runtime_dir, VSL_RUNTIME_DIR, $RUNTIME_DIRECTORY)")))
    return out


def check_firewall(ctx: RayContext) -> list[Finding]:
    mode = ctx.policy.firewall
    if mode == "off":
        return [FIREWALL.finding("firewall", "--firewall off")]
    if ctx.firewall_unusable is not None:
        return [FIREWALL.finding("firewall", ctx.firewall_unusable)]
    return []


def check_block(ctx: RayContext) -> list[Finding]:
    if ctx.args.has("--block"):
        return []
    return [BLOCK.finding("--block", "--block added: the launcher supervises the node in the "
                          "foreground")]


CHECKS = (check_ray, check_argv, check_role, check_addresses, check_ports, check_dashboard,
          check_auth, check_temp_dir, check_firewall, check_block)


def evaluate(ctx: RayContext) -> list[Finding]:
    """Every check; a crashing one is a blocking VSL901 finding (fail closed)."""
    from vllm_secure_launch.rules.internal_rules import RULE_CRASHED

    out: list[Finding] = list(ctx.extra)
    for check in CHECKS:
        try:
            out.extend(check(ctx))
        except Exception as exc:  # noqa: BLE001 - an unchecked configuration is refused
            out.append(RULE_CRASHED.finding(check.__name__, f"{check.__name__} raised "
                                            f"{exc.__class__.__name__}: {exc}"))
    return out
