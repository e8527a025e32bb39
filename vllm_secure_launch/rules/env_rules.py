"""VSL4xx — the environment vLLM would inherit (shared/reference/vllm-0.32-surface.md §3).

A dangerous variable is refused when it is present at all, whatever its value: vLLM reads
several of them loosely ("true", "1", "yes"...), so "set to a false value" is no way around the
rule. The child environment never carries them (unless a waiver allows the rule).
"""

from __future__ import annotations

import re

from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.rules.context import Context
from vllm_secure_launch.rules.registry import Rule

DEV_MODE = Rule(
    "VSL401", "vLLM dev mode is enabled", Severity.ERROR,
    "unset VLLM_SERVER_DEV_MODE; dev routes (/collective_rpc, /sleep, /server_info, ...) are "
    "unauthenticated and must never run in production",
)
LEGACY_PROFILER = Rule(
    "VSL402", "a torch/CUDA profiler variable is set", Severity.ERROR,
    "unset VLLM_TORCH_PROFILER_DIR / VLLM_TORCH_CUDA_PROFILE (profiling registers "
    "unauthenticated /start_profile and /stop_profile routes)",
)
INSECURE_SERIALIZATION = Rule(
    "VSL403", "pickle serialization is enabled on engine sockets", Severity.ERROR,
    "unset VLLM_ALLOW_INSECURE_SERIALIZATION: it lets anyone who reaches an engine socket run code",
)
RUNTIME_LORA = Rule(
    "VSL404", "runtime LoRA loading is enabled", Severity.ERROR,
    "unset VLLM_ALLOW_RUNTIME_LORA_UPDATING; load adapters at start with --lora-modules instead",
)
DEBUG_RESPONSES = Rule(
    "VSL405", "API responses are logged in full", Severity.ERROR,
    "unset VLLM_DEBUG_LOG_API_SERVER_RESPONSE: it writes every response body to the logs",
)
RUST_FRONTEND = Rule(
    "VSL406", "the Rust front end (an external binary) would replace the audited API server",
    Severity.ERROR,
    "unset VLLM_USE_RUST_FRONTEND, VLLM_RUST_FRONTEND_PATH and VLLM_USE_RUST_BENCH: its routes and "
    "auth cannot be audited and it receives the API key on its command line",
)
PLUGINS = Rule(
    "VSL407", "VLLM_PLUGINS loads plugins the policy does not list", Severity.ERROR,
    "list every needed plugin in the policy ([vllm] plugins = [...] or VSL_PLUGINS); the launcher "
    "pins VLLM_PLUGINS to exactly that list",
)
SAGEMAKER_LOADERS = Rule(
    "VSL408", "a SageMaker/CUSTOM_* code loader variable is set", Severity.ERROR,
    "unset the CUSTOM_* and SAGEMAKER_* variables: vLLM's SageMaker helper imports the code they "
    "name into the API server",
)
VLLM_PORT_URI = Rule(
    "VSL409", "VLLM_PORT is not a port number", Severity.ERROR,
    "unset VLLM_PORT or set it to an integer base port (Kubernetes service links inject "
    "VLLM_PORT=tcp://... for a Service named vllm: rename the Service or set "
    "enableServiceLinks: false)",
)
LOGGING_CONFIG = Rule(
    "VSL410", "a logging dictConfig file is loaded", Severity.ERROR,
    "unset VLLM_LOGGING_CONFIG_PATH and drop --logging-config/--log-config-file: a dictConfig can "
    "instantiate arbitrary callables at start-up",
)
DEBUG_DUMP = Rule(
    "VSL411", "a tracing or debug-dump variable is set", Severity.ERROR,
    "unset it: it writes internal state (function traces, graphs, request data) to disk and "
    "slows the server",
)
DOS_GUARD = Rule(
    "VSL412", "a denial-of-service guard is disabled", Severity.ERROR,
    "remove the variable (keep vLLM's default) or set a positive value",
)
RISKY_SWITCH = Rule(
    "VSL413", "a risky vLLM behaviour switch is set", Severity.ERROR,
    "unset it, or waive VSL413 in the policy with the reason this deployment needs it",
)
SCRUBBED = Rule(
    "VSL414", "an inherited variable is removed from vLLM's environment", Severity.INFO,
    "nothing to do; remove it from the service's environment to silence this",
)

LOOPBACK_WIDENED = Rule(
    "VSL415", "a loopback-address variable points beyond loopback", Severity.ERROR,
    "unset VLLM_LOOPBACK_IP or set it to 127.0.0.1 / ::1: vLLM binds its in-node sockets there",
    doc="vLLM's get_loopback_ip() (vllm/utils/network_utils.py) returns VLLM_LOOPBACK_IP as is, "
    "so a wildcard or a routable address there opens in-node sockets to the network.",
)
SHARED_CACHE = Rule(
    "VSL416", "a compile or model cache is in a world-writable directory", Severity.ERROR,
    "point the variable at a directory only the service user can write (e.g. under its home or "
    "the systemd CacheDirectory=); another local user could plant pickled artefacts there that "
    "vLLM and torch load as code",
)
RAY_ADDRESS_OUTSIDE = Rule(
    "VSL417", "RAY_ADDRESS points outside the internal network", Severity.ERROR,
    "unset RAY_ADDRESS or point it at a Ray head on loopback or the internal network; vLLM's "
    "ray.init() joins whatever cluster it names and runs its workers there",
)

OPTIMIZED = Rule(
    "VSL418", "Python's optimize mode would strip vLLM's assert checks", Severity.ERROR,
    "unset PYTHONOPTIMIZE (and drop -O/-OO): vLLM bounds-checks peer- and request-supplied "
    "data with assert (Mooncake and NIXL connectors, video frame bounds), and CVE-2026-41523 "
    "was such an assert; vLLM never checks for optimize mode itself",
)

# An ID from the VSL228-VSL239 block kept for the rules vLLM 0.33's surface needs.
REQUEST_BODY_LOGGED = Rule(
    "VSL229", "request bodies would be logged at a level the service's logs keep",
    Severity.ERROR,
    "unset VLLM_REQUEST_BODY_LOG_LEVEL (vLLM logs request bodies at DEBUG), drop "
    "--enable-log-requests, or waive VSL229 where logs may hold every prompt",
    doc="vLLM 0.33 entrypoints/serve/utils/request_logger.py log_request_body: with "
    "--enable-log-requests the whole request JSON (prompts, images, tool arguments) is logged "
    "at VLLM_REQUEST_BODY_LOG_LEVEL (envs.py, default DEBUG, upper-cased); a level above DEBUG "
    "puts it in the ordinary logs. New in 0.33 (0.32 logs the body at DEBUG only).",
)
RULES = (OPTIMIZED, DEV_MODE, LEGACY_PROFILER, INSECURE_SERIALIZATION, RUNTIME_LORA, DEBUG_RESPONSES,
         RUST_FRONTEND, PLUGINS, SAGEMAKER_LOADERS, VLLM_PORT_URI, LOGGING_CONFIG, DEBUG_DUMP,
         DOS_GUARD, RISKY_SWITCH, SCRUBBED, LOOPBACK_WIDENED, SHARED_CACHE, RAY_ADDRESS_OUTSIDE,
         REQUEST_BODY_LOGGED)

# name -> rule: refused when present, whatever the value.
PRESENCE: dict[str, Rule] = {
    "PYTHONOPTIMIZE": OPTIMIZED,
    "VLLM_SERVER_DEV_MODE": DEV_MODE,
    "VLLM_TORCH_PROFILER_DIR": LEGACY_PROFILER,
    "VLLM_TORCH_CUDA_PROFILE": LEGACY_PROFILER,
    "VLLM_ALLOW_INSECURE_SERIALIZATION": INSECURE_SERIALIZATION,
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": RUNTIME_LORA,
    "VLLM_DEBUG_LOG_API_SERVER_RESPONSE": DEBUG_RESPONSES,
    "VLLM_USE_RUST_FRONTEND": RUST_FRONTEND,
    "VLLM_RUST_FRONTEND_PATH": RUST_FRONTEND,
    "VLLM_USE_RUST_BENCH": RUST_FRONTEND,
    "VLLM_LOGGING_CONFIG_PATH": LOGGING_CONFIG,
    "VLLM_TRACE_FUNCTION": DEBUG_DUMP,
    "VLLM_DEBUG_DUMP_PATH": DEBUG_DUMP,
    "VLLM_PATTERN_MATCH_DEBUG": DEBUG_DUMP,
    "VLLM_GC_DEBUG": DEBUG_DUMP,
    "VLLM_DEBUG_WORKSPACE": DEBUG_DUMP,
    "VLLM_DEBUG_MFU_METRICS": DEBUG_DUMP,
    "VLLM_CUSTOM_SCOPES_FOR_PROFILING": DEBUG_DUMP,
    "VLLM_NVTX_SCOPES_FOR_PROFILING": DEBUG_DUMP,
    "VLLM_LOG_MODEL_INSPECTION": DEBUG_DUMP,
    "VLLM_ALLOW_LONG_MAX_MODEL_LEN": RISKY_SWITCH,
    "VLLM_ENABLE_RESPONSES_API_STORE": RISKY_SWITCH,
    "VLLM_V1_USE_OUTLINES_CACHE": RISKY_SWITCH,
    "VLLM_SKIP_MODEL_NAME_VALIDATION": RISKY_SWITCH,
    "VLLM_KEEP_ALIVE_ON_ENGINE_DEATH": RISKY_SWITCH,
    "VLLM_MODEL_REDIRECT_PATH": RISKY_SWITCH,
    "VLLM_USE_MODELSCOPE": RISKY_SWITCH,
    "VLLM_DISABLE_REQUEST_ID_RANDOMIZATION": RISKY_SWITCH,
    "VLLM_ENABLE_COHERE_API": RISKY_SWITCH,
}
_WHY = {
    "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "allows max_model_len beyond the model (NaNs, out-of-bounds)",
    "VLLM_ENABLE_RESPONSES_API_STORE": "keeps every response in memory forever (leak, exposure)",
    "VLLM_V1_USE_OUTLINES_CACHE": "unbounded on-disk cache, unsafe with untrusted users",
    "VLLM_SKIP_MODEL_NAME_VALIDATION": "accepts any model name",
    "VLLM_KEEP_ALIVE_ON_ENGINE_DEATH": "keeps the API up after the engine died",
    "VLLM_MODEL_REDIRECT_PATH": "silently redirects model names to local folders",
    "VLLM_USE_MODELSCOPE": "pulls models and code from ModelScope",
    "VLLM_DISABLE_REQUEST_ID_RANDOMIZATION": "lets client request IDs collide across clients",
    "VLLM_ENABLE_COHERE_API": "adds the /cohere API",
}
# DoS guards -> vLLM 0.32's default (vllm/envs.py). Refused when 0 (disables the guard), not a
# finite positive number, or more than DOS_FACTOR times the default (disabled by size).
DOS_GUARDS: dict[str, float] = {
    "VLLM_REGEX_COMPILATION_TIMEOUT_S": 5, "VLLM_CHAT_TEMPLATE_RENDER_TIMEOUT": 30.0,
    "VLLM_MAX_EMBED_DECODE_BYTES": 2_147_483_648, "VLLM_MAX_N_SEQUENCES": 16384,
    "VLLM_MAX_COMPLETION_PROMPTS": 1024, "VLLM_MAX_STOP_STRINGS": 4,
    "VLLM_MAX_NUM_BAD_WORDS": 128, "VLLM_MAX_BAD_WORDS_TOTAL_TOKENS": 1024,
    "VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB": 256, "VLLM_TOOL_PARSE_REGEX_TIMEOUT_SECONDS": 1,
    "VLLM_MAX_AUDIO_CLIP_FILESIZE_MB": 25, "VLLM_MAX_AUDIO_DECODE_DURATION_S": 600,
    "VLLM_MAX_AUDIO_DECODE_BYTES": 268_435_456, "VLLM_IMAGE_FETCH_TIMEOUT": 5,
    "VLLM_VIDEO_FETCH_TIMEOUT": 30, "VLLM_AUDIO_FETCH_TIMEOUT": 10,
}
# vLLM 0.33 adds these bounds (vllm/envs.py; surface-data/diff-0.32-0.33.md). The HTTP body and
# template-fuel bounds are enforced only by the Rust front end (refused: VSL406), so setting
# them changes nothing today, but 0 still says "no limit" and is refused like the others.
DOS_GUARDS_0_33: dict[str, float] = {
    **DOS_GUARDS,
    "VLLM_HTTP_MAX_REQUEST_BODY_SIZE": 33_554_432, "VLLM_CHAT_TEMPLATE_FUEL": 500_000,
    "VLLM_MAX_MEDIA_REQUEST_DECODE_BYTES": 715_827_880,
    "VLLM_MAX_MEDIA_REQUEST_DOWNLOAD_SIZE_MB": 256,
}
DOS_GUARDS_BY_SURFACE = {"0.32": DOS_GUARDS, "0.33": DOS_GUARDS_0_33}
DOS_FACTOR = 16
# Caches that hold pickled or compiled artefacts vLLM/torch/triton load back as code.
CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "VLLM_CACHE_ROOT",
              "VLLM_ASSETS_CACHE", "VLLM_XLA_CACHE_PATH", "XDG_CACHE_HOME", "HF_HOME",
              "HF_MODULES_CACHE", "TORCH_EXTENSIONS_DIR", "OUTLINES_CACHE_DIR")
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
LOADER_PREFIXES = ("CUSTOM_", "SAGEMAKER_")
# Removed quietly (with an info finding): ignored or offline-only variables that must not leak
# into the service (HOST_IP is ignored by vLLM; VLLM_DP_* are for offline SPMD only).
SCRUB = ("HOST_IP", "VLLM_DP_MASTER_IP", "VLLM_DP_MASTER_PORT", "VLLM_DP_RANK", "VLLM_DP_SIZE",
         "VLLM_DP_RANK_LOCAL")


def check_presence(ctx: Context) -> list[Finding]:
    out = []
    for name in sorted(ctx.environ):
        rule = PRESENCE.get(name)
        if rule is not None:
            why = _WHY.get(name, "")
            msg = f"{name} is set (to {ctx.environ[name]!r})" if rule is not RUST_FRONTEND else (
                f"{name} is set")
            out.append(rule.finding(name, msg + (f": {why}" if why else "")
                                    + "; any value counts, vLLM reads it loosely"))
        elif name.startswith(LOADER_PREFIXES):
            out.append(SAGEMAKER_LOADERS.finding(name, f"{name} is set: it can make vLLM's "
                                                       "SageMaker helper import code"))
    return out


def check_dos_guards(ctx: Context) -> list[Finding]:
    out = []
    # The guards (and defaults) of the vLLM that will run; a surface without its own table
    # (a launcher older than its vLLM) gets the newest known one.
    guards = DOS_GUARDS_BY_SURFACE.get(ctx.args.surface, DOS_GUARDS_0_33)
    for name in guards:
        if name not in ctx.environ:
            continue
        raw = ctx.environ[name].strip()
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not (value > 0 and value != float("inf")):
            out.append(DOS_GUARD.finding(name, f"{name}={raw!r} disables or breaks the guard"))
        elif value > guards[name] * DOS_FACTOR:
            out.append(DOS_GUARD.finding(
                name, f"{name}={raw} is more than {DOS_FACTOR}× vLLM's default "
                f"({guards[name]:g}): the guard is disabled by size",
                remedy=f"keep it within {guards[name] * DOS_FACTOR:g}, or waive VSL412 "
                "with the reason"))
    return out


def check_loopback_ip(ctx: Context) -> list[Finding]:
    import ipaddress

    raw = ctx.environ.get("VLLM_LOOPBACK_IP", "").strip()
    if not raw:
        return []
    try:
        ok = ipaddress.ip_address(raw).is_loopback
    except ValueError:
        ok = False
    return [] if ok else [LOOPBACK_WIDENED.finding(
        "VLLM_LOOPBACK_IP", f"VLLM_LOOPBACK_IP={raw!r} is not a loopback address")]


def in_world_writable(path: str) -> bool:
    import posixpath

    norm = posixpath.normpath(path) if path.startswith("/") else ""
    return any(norm == d or norm.startswith(d + "/") for d in WORLD_WRITABLE)


def check_caches(ctx: Context) -> list[Finding]:
    return [SHARED_CACHE.finding(name, f"{name}={ctx.environ[name]} is under a world-writable "
                                       "directory")
            for name in CACHE_VARS if name in ctx.environ and in_world_writable(ctx.environ[name])]


def check_ray_address(ctx: Context) -> list[Finding]:
    import ipaddress

    from vllm_secure_launch.rules.ray_serve_rules import NON_ADDRESSES, ray_backend

    raw = ctx.environ.get("RAY_ADDRESS", "").strip()
    # On a Ray backend "auto"/"local" are no address at all: VSL725 refuses them.
    if not raw or raw == "local" or (ray_backend(ctx) and raw.lower() in NON_ADDRESSES):
        return []
    host = raw.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    net = ctx.internal.network if ctx.internal else None
    if ip is not None and (ip.is_loopback or (net and ip in ipaddress.ip_network(net))):
        return []
    what = "names a host, not an IP, and" if ip is None else "is"
    return [RAY_ADDRESS_OUTSIDE.finding("RAY_ADDRESS", f"RAY_ADDRESS={raw!r} {what} not on "
                                        f"loopback or the internal network "
                                        f"({net or 'none configured'})")]


def check_vllm_port(ctx: Context) -> list[Finding]:
    raw = ctx.environ.get("VLLM_PORT")
    if raw is None or re.fullmatch(r"\d{1,5}", raw.strip()) and 0 < int(raw) < 65536:
        return []
    return [VLLM_PORT_URI.finding("VLLM_PORT", f"VLLM_PORT={raw!r} is not a port number "
                                               "(vLLM raises on URI values)")]


def check_plugins(ctx: Context) -> list[Finding]:
    raw = ctx.environ.get("VLLM_PLUGINS")
    if raw is None:
        return []
    wanted = [p for p in raw.split(",") if p]
    extra = [p for p in wanted if p not in ctx.policy.plugins]
    if not extra:
        return []
    allowed = ", ".join(ctx.policy.plugins) or "none"
    return [PLUGINS.finding("VLLM_PLUGINS", f"VLLM_PLUGINS names {', '.join(extra)}, which the "
                            f"policy does not allow (allowed: {allowed})")]


def check_scrubbed(ctx: Context) -> list[Finding]:
    return [SCRUBBED.finding(n, f"{n} is removed from vLLM's environment (ignored by vLLM or "
                                "meant for offline data parallelism only)")
            for n in SCRUB if n in ctx.environ]


# logging's level names (logging.getLevelNamesMapping, which vLLM 0.33 looks the value up in)
_LEVELS = {"CRITICAL": 50, "FATAL": 50, "ERROR": 40, "WARN": 30, "WARNING": 30, "INFO": 20,
           "DEBUG": 10, "NOTSET": 0}


def check_request_body_level(ctx: Context) -> list[Finding]:
    """vLLM 0.33: VLLM_REQUEST_BODY_LOG_LEVEL above DEBUG with --enable-log-requests."""
    raw = ctx.environ.get("VLLM_REQUEST_BODY_LOG_LEVEL")
    if ctx.args.surface == "0.32" or raw is None or not ctx.args.get("enable_log_requests"):
        return []
    level = _LEVELS.get(raw.upper())  # an unknown name: vLLM logs no body at all
    if level is None or level <= _LEVELS["DEBUG"]:
        return []
    return [REQUEST_BODY_LOGGED.finding(
        "VLLM_REQUEST_BODY_LOG_LEVEL", f"VLLM_REQUEST_BODY_LOG_LEVEL={raw} with "
        "--enable-log-requests logs every request body at that level")]


CHECKS = (check_presence, check_dos_guards, check_vllm_port, check_plugins, check_scrubbed,
          check_loopback_ip, check_caches, check_ray_address, check_request_body_level)
