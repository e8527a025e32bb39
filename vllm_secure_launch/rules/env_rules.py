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

RULES = (DEV_MODE, LEGACY_PROFILER, INSECURE_SERIALIZATION, RUNTIME_LORA, DEBUG_RESPONSES,
         RUST_FRONTEND, PLUGINS, SAGEMAKER_LOADERS, VLLM_PORT_URI, LOGGING_CONFIG, DEBUG_DUMP,
         DOS_GUARD, RISKY_SWITCH, SCRUBBED)

# name -> rule: refused when present, whatever the value.
PRESENCE: dict[str, Rule] = {
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
# DoS guards: refused when 0 (disables the guard) or not a positive number.
DOS_GUARDS = (
    "VLLM_REGEX_COMPILATION_TIMEOUT_S", "VLLM_CHAT_TEMPLATE_RENDER_TIMEOUT",
    "VLLM_MAX_EMBED_DECODE_BYTES", "VLLM_MAX_N_SEQUENCES", "VLLM_MAX_COMPLETION_PROMPTS",
    "VLLM_MAX_STOP_STRINGS", "VLLM_MAX_NUM_BAD_WORDS", "VLLM_MAX_BAD_WORDS_TOTAL_TOKENS",
    "VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB", "VLLM_TOOL_PARSE_REGEX_TIMEOUT_SECONDS",
)
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
    for name in DOS_GUARDS:
        if name not in ctx.environ:
            continue
        raw = ctx.environ[name].strip()
        try:
            ok = float(raw) > 0
        except ValueError:
            ok = False
        if not ok:
            out.append(DOS_GUARD.finding(name, f"{name}={raw!r} disables or breaks the guard"))
    return out


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


CHECKS = (check_presence, check_dos_guards, check_vllm_port, check_plugins, check_scrubbed)
