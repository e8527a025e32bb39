"""VSL1xx — where the API listens, and the one private address internal listeners are pinned to."""

from __future__ import annotations

from typing import Any, Iterator

from vllm_secure_launch.addresses import (
    HOSTNAME,
    LINK_LOCAL,
    LOOPBACK,
    PRIVATE,
    PUBLIC,
    WILDCARD,
    ApiEndpoint,
    classify,
    parse_ip,
)
from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.rules.context import Context
from vllm_secure_launch.rules.registry import Rule

WILDCARD_API = Rule(
    "VSL101", "the API would listen on every interface", Severity.ERROR,
    "give --host a specific address (or leave it out: the policy's address, 127.0.0.1 by default, "
    "is used), or use --uds; to really serve on all interfaces set [api] allow_wildcard = true "
    "(VSL_ALLOW_WILDCARD=1) and give an API key",
)
API_HOSTNAME = Rule(
    "VSL102", "the API host is not a literal address of this host", Severity.ERROR,
    "give --host a literal IP address that this host owns (see `ip -br addr`); hostnames are "
    "refused because the socket audit must know the exact address",
)
API_NO_KEY = Rule(
    "VSL103", "the API listens beyond loopback without an API key", Severity.ERROR,
    "provide a key with --api-key-file PATH (mode 0600), systemd LoadCredential=vllm-api-key, or "
    "VLLM_API_KEY; or bind to 127.0.0.1 / --uds",
)
PORT_ZERO = Rule(
    "VSL104", "the API port is 0 or not a valid port", Severity.ERROR,
    "give --port a fixed number between 1 and 65535 (port 0 picks a random port that clients and "
    "the audit cannot know)",
)
PUBLIC_API = Rule(
    "VSL105", "the API listens on a public address", Severity.WARNING,
    "prefer a private address behind a load balancer; the endpoint gate and the API key protect "
    "it, but nothing limits who can try",
)
UDS_API = Rule(
    "VSL106", "the API listens on a unix socket", Severity.INFO,
    "nothing to do; make sure only the intended users can reach the socket's directory",
)
API_DEFAULT_HOST = Rule(
    "VSL107", "no --host given: the launcher sets the policy's API address", Severity.INFO,
    "nothing to do; vLLM alone would have listened on 0.0.0.0",
)
INTERNAL_UNRESOLVED = Rule(
    "VSL110", "the internal-network setting does not resolve to one local address", Severity.ERROR,
    "set exactly one of --internal-iface, --internal-cidr or --internal-ip (VSL_INTERNAL_*, "
    "[network] in the policy) to an interface/address this node has",
)
INTERNAL_NOT_PRIVATE = Rule(
    "VSL111", "the internal address is not private", Severity.ERROR,
    "use an interface on a private network (RFC 1918, RFC 6598, IPv6 ULA) or loopback; internal "
    "vLLM/torch traffic is unauthenticated and partly pickled",
)
MULTINODE_NO_INTERNAL = Rule(
    "VSL112", "a multi-node shape without an explicit internal network", Severity.ERROR,
    "set --internal-iface (or --internal-cidr / --internal-ip) to the private cluster interface "
    "on every node",
)
ADDRESS_ELSEWHERE = Rule(
    "VSL113", "a user-given internal address points outside the internal network", Severity.ERROR,
    "remove the setting and let the launcher pin it, or make it an address inside the internal "
    "network",
)
KV_EVENTS_WILDCARD = Rule(
    "VSL114", "the KV-events publisher would bind every interface", Severity.ERROR,
    "set --kv-events-config endpoint to ipc://... or tcp://*:0 (which binds VLLM_HOST_IP, the "
    "pinned address)",
)
WILDCARD_CONNECTOR = Rule(
    "VSL115", "a KV connector with hard-coded wildcard listeners", Severity.ERROR,
    "MooncakeConnector (bootstrap server on 0.0.0.0:8998 unless bootstrap_server_address is set) "
    "and MoRIIOConnector (tcp://* handshake/notify) cannot be pinned; use another connector or "
    "waive VSL115 and firewall the ports",
)
HOSTNAME_PUBLIC = Rule(
    "VSL116", "this host's name resolves to a non-private address", Severity.INFO,
    "nothing to do: gloo would listen there, so the launcher pins GLOO_SOCKET_IFNAME to the "
    "internal interface",
)

RULES = (WILDCARD_API, API_HOSTNAME, API_NO_KEY, PORT_ZERO, PUBLIC_API, UDS_API,
         API_DEFAULT_HOST, INTERNAL_UNRESOLVED, INTERNAL_NOT_PRIVATE, MULTINODE_NO_INTERNAL,
         ADDRESS_ELSEWHERE, KV_EVENTS_WILDCARD, WILDCARD_CONNECTOR, HOSTNAME_PUBLIC)

DEFAULT_PORT = 8000


def api_endpoint(ctx: Context) -> ApiEndpoint:
    """Where the API will listen after the plan's changes (pure)."""
    tls = bool(ctx.args.get("ssl_keyfile") and ctx.args.get("ssl_certfile"))
    if ctx.args.get("headless") or ctx.int_arg("api_server_count", 1) == 0:
        return ApiEndpoint(None, None, headless=True)
    uds = ctx.args.get("uds")
    if uds:
        return ApiEndpoint(None, None, uds=str(uds), tls=tls)
    if ctx.args.has("host"):
        # vLLM's optional_type(str) turns --host '' into None, which binds "" = 0.0.0.0.
        host = "" if ctx.args.get("host") is None else str(ctx.args.get("host"))
    else:
        host = ctx.policy.api_host
    if host.strip().lower() == "localhost":
        host = "127.0.0.1"
    ip = parse_ip(host)
    if ip is not None:
        host = str(ip)
    try:
        port = int(ctx.args.get("port", DEFAULT_PORT))
    except (TypeError, ValueError):
        port = -1
    return ApiEndpoint(host, port, tls=tls)


def _local_ips(ctx: Context) -> set[object]:
    return {parse_ip(a.ip) for addrs in ctx.host.interfaces.values() for a in addrs}


def check_api(ctx: Context) -> list[Finding]:
    api = api_endpoint(ctx)
    if api.headless:
        return []
    if api.uds:
        return [UDS_API.finding("--uds", f"the API listens on unix:{api.uds}")]
    out: list[Finding] = []
    if not ctx.args.has("host"):
        out.append(API_DEFAULT_HOST.finding("--host", f"--host {api.host} is set by the launcher"))
    if api.port is None or not 0 < api.port < 65536:
        out.append(PORT_ZERO.finding("--port", f"--port {ctx.args.get('port')} is not a usable "
                                               "fixed port"))
    host = api.host or ""
    cls = classify(host)
    key = ctx.key.value is not None
    if cls == WILDCARD:
        if not ctx.policy.allow_wildcard:
            out.append(WILDCARD_API.finding("--host", f"--host {host or repr('')} listens on every "
                                                      "interface"))
    elif cls == HOSTNAME:
        out.append(API_HOSTNAME.finding("--host", f"--host {host} is a name, not an address"))
        return out
    elif parse_ip(host) not in _local_ips(ctx):
        out.append(API_HOSTNAME.finding("--host", f"--host {host} is not an address of this host"))
    if cls != LOOPBACK and not key:
        out.append(API_NO_KEY.finding("--host", f"the API on {host or '0.0.0.0'} would answer "
                                                "without any API key"))
    if cls in (PUBLIC, LINK_LOCAL):
        out.append(PUBLIC_API.finding("--host", f"--host {host} is a {cls} address"))
    return out


def check_internal(ctx: Context) -> list[Finding]:
    if ctx.internal_error is not None:
        return [INTERNAL_UNRESOLVED.finding("internal network", ctx.internal_error.what,
                                            remedy=ctx.internal_error.fix)]
    out: list[Finding] = []
    if ctx.multinode and not ctx.explicit_internal:
        out.append(MULTINODE_NO_INTERNAL.finding(
            "internal network", "this shape talks to other nodes (" + "; ".join(ctx.multinode)
            + ") but no internal network is set, so internal listeners would follow the "
            "hostname and default route"))
    if ctx.internal is not None:
        cls = classify(ctx.internal.ip)
        if cls not in (LOOPBACK, PRIVATE):
            out.append(INTERNAL_NOT_PRIVATE.finding(
                "internal network", f"{ctx.internal.ip} ({ctx.internal.iface}) is a {cls} address"))
    return out


def check_hostname(ctx: Context) -> list[Finding]:
    bad = [a for a in ctx.host.hostname_addrs if classify(a) not in (LOOPBACK, PRIVATE)]
    if not bad:
        return []
    return [HOSTNAME_PUBLIC.finding("hostname", f"{ctx.host.hostname} resolves to "
                                                f"{', '.join(bad)}")]


def _endpoint_host(endpoint: str) -> str | None:
    # tcp://HOST:PORT -> HOST (brackets kept off); None for ipc://, inproc://
    if not endpoint.startswith("tcp://"):
        return None
    rest = endpoint[len("tcp://"):]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0]


def _binds(endpoint: str) -> bool:
    """vLLM's ZmqEventPublisher._is_bind_endpoint (vllm/distributed/kv_events.py, 0.32/0.33):
    it binds when the string contains '*' or '::' anywhere, or is ipc/inproc; else connects."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


def _judge_bind(ctx: Context, what: str, endpoint: str) -> list[Finding]:
    """A ZMQ endpoint that vLLM binds: only tcp://*:0 (vLLM binds VLLM_HOST_IP, the pinned
    address), ipc/inproc, loopback or the internal address may be bound."""
    if endpoint == "tcp://*:0" or endpoint.startswith(("ipc://", "inproc://")):
        return []
    host = _endpoint_host(endpoint) or ""
    if host in ("*", "::", "0.0.0.0", "") or "*" in host:
        return [KV_EVENTS_WILDCARD.finding("--kv-events-config",
                                           f"{what} {endpoint} binds every interface")]
    kind = classify(host)
    internal = ctx.internal.ip if ctx.internal else None
    if kind == LOOPBACK or (internal is not None and host == internal):
        return []
    return [KV_EVENTS_WILDCARD.finding("--kv-events-config", f"{what} {endpoint} binds {host}, "
                                       "which is neither loopback nor the internal address")]


def check_kv_events(ctx: Context) -> list[Finding]:
    cfg = ctx.args.get("kv_events_config")
    if not isinstance(cfg, dict) or not cfg.get("enable_kv_cache_events"):
        return []
    out: list[Finding] = []
    endpoint = str(cfg.get("endpoint", "tcp://*:5557"))
    if _binds(endpoint):
        out += _judge_bind(ctx, "endpoint", endpoint)
    replay = cfg.get("replay_endpoint")
    if replay:  # the replay socket is always bound, whatever its spelling
        out += _judge_bind(ctx, "replay_endpoint", str(replay))
    return out


def _connectors(cfg: object, where: str = "--kv-transfer-config"
                ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every connector config, nested ones (MultiConnector's extra_config.connectors) included."""
    if isinstance(cfg, dict):
        if "kv_connector" in cfg:
            yield where, cfg
        extra = cfg.get("kv_connector_extra_config")
        if isinstance(extra, dict):
            for i, child in enumerate(extra.get("connectors") or []):
                yield from _connectors(child, f"{where}.connectors[{i}]")


def check_connectors(ctx: Context) -> list[Finding]:
    out = []
    for where, cfg in _connectors(ctx.args.get("kv_transfer_config")):
        conn = str(cfg.get("kv_connector", ""))
        extra = cfg.get("kv_connector_extra_config") or {}
        if "moriio" in conn.lower():
            out.append(WILDCARD_CONNECTOR.finding(
                where, f"{conn} binds its handshake and notify sockets on tcp://*"))
        elif "mooncake" in conn.lower():
            addr = str(extra.get("bootstrap_server_address") or "") if isinstance(extra, dict) \
                else ""
            host = addr.rsplit(":", 1)[0].strip("[]") if addr else ""
            if not host or host in ("0.0.0.0", "::", "*"):
                out.append(WILDCARD_CONNECTOR.finding(
                    where, f"{conn} starts its bootstrap server on 0.0.0.0 "
                    f"(bootstrap_server_address {addr if addr else 'absent'})"))
    return out


CHECKS = (check_api, check_internal, check_hostname, check_kv_events, check_connectors)
