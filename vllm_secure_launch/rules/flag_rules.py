"""VSL2xx — endpoints, authentication and flags that load code (surface.md §4.3, §5, §8)."""

from __future__ import annotations

import os
import re

from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.rules.context import Context
from vllm_secure_launch.rules.registry import Rule

ARGV_KEY = Rule(
    "VSL201", "an API key was given on the command line", Severity.WARNING,
    "put the key in a file (--api-key-file, mode 0600), a systemd credential (LoadCredential="
    "vllm-api-key) or VLLM_API_KEY; the key was already visible in the launcher's own argv, so "
    "rotate it",
)
KEY_FILE_BAD = Rule(
    "VSL202", "the API key file is unusable", Severity.ERROR,
    "make the key file readable only by the service user (chmod 600), non-empty and one line",
)
NO_KEY_LOOPBACK = Rule(
    "VSL203", "no API key is configured and the endpoint gate is off", Severity.WARNING,
    "provide a key (--api-key-file, LoadCredential=vllm-api-key or VLLM_API_KEY); without key and "
    "gate every local user can use every route",
)
TOKENIZER_INFO = Rule(
    "VSL204", "the tokenizer-info endpoint is enabled", Severity.ERROR,
    "drop --enable-tokenizer-info-endpoint (it serves chat templates and tokenizer config "
    "without authentication)",
)
PROFILER = Rule(
    "VSL205", "the profiler is configured", Severity.ERROR,
    "drop --profiler-config: any profiler registers unauthenticated /start_profile and "
    "/stop_profile routes",
)
MIDDLEWARE = Rule(
    "VSL206", "a user middleware would run in the API server", Severity.ERROR,
    "drop --middleware (it imports an arbitrary module and runs before authentication); the "
    "launcher injects its own endpoint gate",
)
GRPC = Rule(
    "VSL207", "the gRPC server is enabled", Severity.ERROR,
    "drop --grpc/--grpc-port: vLLM's gRPC server has no TLS and no authentication",
)
CORS_WILDCARD = Rule(
    "VSL208", "CORS allows any origin with credentials", Severity.ERROR,
    "list the real origins in --allowed-origins, or drop --allow-credentials",
)
MEDIA_PATH = Rule(
    "VSL209", "local media may be read from a system directory", Severity.ERROR,
    "point --allowed-local-media-path at a dedicated media directory (listed in the policy's "
    "[vllm] allowed_media_dirs), never / or a system directory",
)
SCALE_OUT = Rule(
    "VSL210", "a mode that adds operational routes or wildcard stores is enabled", Severity.ERROR,
    "drop the flag unless this deployment needs it; --enable-elastic-ep and "
    "--enable-fault-tolerance create TCPStores and state-changing routes",
)
TOKENS_ONLY = Rule(
    "VSL211", "token-in/token-out scale-out routes are enabled", Severity.WARNING,
    "keep the endpoint gate on (it denies /abort_requests and the render routes by default)",
)
TOOL_SERVER_DEMO = Rule(
    "VSL214", "the demo tool server runs model-generated code", Severity.ERROR,
    "drop --tool-server demo (it runs model-generated Python without network isolation)",
)
REQUEST_TEMPLATE = Rule(
    "VSL215", "clients may send their own chat templates", Severity.ERROR,
    "drop --trust-request-chat-template, or waive VSL215 when every client is trusted: a "
    "request-supplied Jinja template is rendered by the server (GHSA-6fvq-23cw-5628, "
    "GHSA-69j4-grxj-j64p; Jinja sandbox escapes CVE-2025-27516, CVE-2024-56326)",
    doc="vLLM 0.32/0.33 entrypoints/openai online_renderer: with the flag a request's "
    "chat_template is used instead of the server's.",
)
ARGV_HF_TOKEN = Rule(
    "VSL217", "a Hugging Face token was given on the command line", Severity.WARNING,
    "set HF_TOKEN in the environment (or a credential file) instead of --hf-token; the launcher "
    "moves it into vLLM's environment",
)
LOG_CONFIG_FLAG = Rule(
    "VSL218", "a logging dictConfig is loaded from a flag", Severity.ERROR,
    "drop --logging-config/--log-config-file: a dictConfig can instantiate arbitrary callables",
)
REMOTE_CODE = Rule(
    "VSL220", "remote model code would be trusted", Severity.ERROR,
    "drop --trust-remote-code, or audit the model repository, pin --code-revision and waive "
    "VSL220 with the reason",
)
IMPORT_BY_NAME = Rule(
    "VSL221", "a flag makes vLLM import code by name", Severity.ERROR,
    "drop the flag, or waive VSL221 in the policy naming the audited module",
)

RULES = (ARGV_KEY, KEY_FILE_BAD, NO_KEY_LOOPBACK, TOKENIZER_INFO, PROFILER, MIDDLEWARE, GRPC,
         CORS_WILDCARD, MEDIA_PATH, SCALE_OUT, TOKENS_ONLY, TOOL_SERVER_DEMO, REQUEST_TEMPLATE,
         ARGV_HF_TOKEN, LOG_CONFIG_FLAG, REMOTE_CODE, IMPORT_BY_NAME)

SAFE_BACKENDS = (None, "mp", "uni", "ray", "external_launcher")
# dest -> value that means "not set" for the import-by-name flags
IMPORT_FLAGS: dict[str, tuple[object, ...]] = {
    "worker_cls": ("auto", ""),
    "worker_extension_cls": ("",),
    "scheduler_cls": (None, ""),
    "logits_processors": (None, "", []),
    "model_class_overrides": (None, "", {}, "{}"),
    "io_processor_plugin": (None, ""),
    "tool_parser_plugin": ("",),
    "reasoning_parser_plugin": ("",),
}
MODULE_PATH_KEYS = ("kv_connector_module_path", "ec_connector_module_path", "module_path",
                    "cache_policy_module_path", "backpressure_cls", "spec_module_path",
                    "policy_module_path", "worker_cls", "scheduler_cls", "proposer_cls",
                    # structured_outputs_config: a module name, or a .py file that is executed
                    # (entrypoints/common/cli_args.py init_parser_plugin in 0.33)
                    "reasoning_parser_plugin")
# Keys inside any JSON sub-config whose value vLLM imports by name (grep of vLLM 0.32/0.33 for
# resolve_obj_by_qualname / importlib.import_module / __import__ fed from config values).
_CODE_KEY = re.compile(r"(module_path|_module$|_cls$|^cls$|class_path|qualname|_class$)")


def _flag(ctx: Context, dest: str) -> str:
    return ctx.args.spellings.get(dest) or "--" + dest.replace("_", "-")


def check_keys(ctx: Context) -> list[Finding]:
    out = []
    if ctx.args.get("api_key"):
        out.append(ARGV_KEY.finding("--api-key", "--api-key is taken out of vLLM's command line "
                                                 "and handed over in the environment"))
    if ctx.key.problem:
        out.append(KEY_FILE_BAD.finding(ctx.key.source, ctx.key.problem))
    elif ctx.key.value is None and not ctx.gate:  # with the gate, VSL252 says it
        out.append(NO_KEY_LOOPBACK.finding("api key", "no API key is configured"))
    if isinstance(ctx.args.get("hf_token"), str) and ctx.args.get("hf_token"):
        out.append(ARGV_HF_TOKEN.finding("--hf-token", "--hf-token is moved to HF_TOKEN in vLLM's "
                                                       "environment"))
    return out


def _profiler_set(value: object) -> bool:
    if isinstance(value, dict):
        return value.get("profiler") not in (None, "", "none", "None")
    return value not in (None, "", "{}", "null")


def check_flags(ctx: Context) -> list[Finding]:
    a = ctx.args
    out = []
    if a.get("enable_tokenizer_info_endpoint"):
        out.append(TOKENIZER_INFO.finding(_flag(ctx, "enable_tokenizer_info_endpoint"),
                                          "GET /tokenizer_info would be served without auth"))
    if a.has("profiler_config") and _profiler_set(a.get("profiler_config")):
        out.append(PROFILER.finding(_flag(ctx, "profiler_config"), "a profiler is configured"))
    for mw in a.get("middleware") or []:
        out.append(MIDDLEWARE.finding("--middleware", f"--middleware {mw} would be imported"))
    if a.get("grpc") or a.get("grpc_port") not in (None, ""):
        out.append(GRPC.finding("--grpc", "the gRPC server would listen without TLS or auth"))
    out += check_cors(a.get("allowed_origins"), bool(a.get("allow_credentials")))
    for dest in ("enable_elastic_ep", "enable_fault_tolerance", "enable_scale_out"):
        if a.get(dest):
            out.append(SCALE_OUT.finding(_flag(ctx, dest), f"{_flag(ctx, dest)} is enabled"))
    if a.get("tokens_only"):
        out.append(TOKENS_ONLY.finding("--tokens-only", "token-in/token-out routes are served"))
    if str(a.get("tool_server", "")).strip() == "demo":
        out.append(TOOL_SERVER_DEMO.finding("--tool-server", "--tool-server demo"))
    # enable_mm_embeds: request-supplied image/audio/video embeddings are torch.load-ed too
    # (surface-data/code-loading.md torch-load-request-embeds, 0.32 and 0.33).
    for dest in ("enable_prompt_embeds", "enable_mm_embeds", "trust_request_mm_kwargs"):
        if a.get(dest):
            out.append(REQUEST_INPUTS.finding(_flag(ctx, dest), f"{_flag(ctx, dest)} is enabled"))
    if str(a.get("load_format", "")).strip().lower() in ("netloader", "rfork"):
        out.append(LISTENING_LOADER.finding("--load-format",
                                            f"--load-format {a.get('load_format')} listens"))
    if a.get("trust_request_chat_template"):
        out.append(REQUEST_TEMPLATE.finding("--trust-request-chat-template",
                                            "request-supplied chat templates are rendered"))
    for dest in ("logging_config", "log_config_file"):
        if a.get(dest):
            out.append(LOG_CONFIG_FLAG.finding(_flag(ctx, dest), f"{a.get(dest)} would be loaded"))
    if a.get("trust_remote_code"):
        out.append(REMOTE_CODE.finding(_flag(ctx, "trust_remote_code"),
                                       "code from the model repository would run"))
    return out


# Directories that hold the system, other users' files or secrets (systemd credentials,
# Kubernetes service-account tokens, the kubelet's pod volumes): a media root may be none of
# these, inside none of them, and no ancestor of one (that would include it).
SENSITIVE_DIRS = ("/etc", "/proc", "/sys", "/dev", "/root", "/boot", "/home", "/run",
                  "/var/run", "/var/lib/kubelet", "/var/log", "/var/lib/private", "/usr", "/bin",
                  "/sbin", "/lib", "/lib64", "/tmp", "/var/tmp", "/dev/shm")


def canonical_path(ctx: Context, path: str) -> str:
    """The path as vLLM will open it: relative to the service's working directory, symlinks
    followed (host facts resolved them; a pure join is the fallback)."""
    return ctx.host.realpaths.get(path) or os.path.normpath(os.path.join(ctx.host.cwd, path))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def sensitive_reason(ctx: Context, real: str) -> str | None:
    secret_files = [f.path for f in (ctx.host.api_key_file, ctx.host.credential_key) if f]
    cred = ctx.environ.get("CREDENTIALS_DIRECTORY")
    roots = [*SENSITIVE_DIRS, *([cred] if cred else []),
             *(os.path.dirname(os.path.realpath(f)) for f in secret_files)]
    for root in roots:
        if _inside(real, root):
            return f"it is inside {root}"
        if _inside(root, real):
            return f"it contains {root}"
    return None


def cors_allows_all(origins: object) -> bool:
    """Starlette's CORSMiddleware: allow_all_origins = "*" in allow_origins. On a JSON string
    that is a substring test ("https://*.a.com" allows all), on an object a key test."""
    if isinstance(origins, (str, dict, list, tuple)):
        return "*" in origins
    return False


def check_cors(origins: object, credentials: bool) -> list[Finding]:
    out = []
    if origins is not None and not (isinstance(origins, list)
                                    and all(isinstance(o, str) for o in origins)):
        out.append(CORS_SHAPE.finding("--allowed-origins", f"--allowed-origins is a JSON "
                                      f"{type(origins).__name__}, not a list of origins"))
    if credentials and cors_allows_all(origins):
        out.append(CORS_WILDCARD.finding("--allowed-origins", "any origin may send credentialed "
                                                              "requests"))
    return out


def check_media_path(ctx: Context) -> list[Finding]:
    path = ctx.args.get("allowed_local_media_path")
    if not path or not isinstance(path, str):
        return []
    real = canonical_path(ctx, path)
    allowed = [os.path.normpath(d) for d in ctx.policy.allowed_media_dirs]
    if any(_inside(real, d) for d in allowed):
        return []
    why = sensitive_reason(ctx, real)
    if why is None:
        return []
    shown = path if real == path else f"{path} (resolves to {real})"
    return [MEDIA_PATH.finding("--allowed-local-media-path",
                               f"{shown} exposes files to file:// media URLs: {why}")]


def is_dotted_path(value: object) -> bool:
    """vLLM's own test for an import path (SpeculativeConfig._is_custom_proposer_path)."""
    if not isinstance(value, str) or "/" in value or value.startswith(("http:", "https:")):
        return False
    parts = value.replace(":", ".").split(".")
    return len(parts) >= 2 and all(p.isidentifier() for p in parts)


def _module_paths(value: object, where: str) -> list[str]:
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            if (k in MODULE_PATH_KEYS or _CODE_KEY.search(str(k))) and v and (
                    k in MODULE_PATH_KEYS or is_dotted_path(v)):
                found.append(f"{where}.{k}={v}")
            found.extend(_module_paths(v, f"{where}.{k}"))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.extend(_module_paths(v, f"{where}[{i}]"))
    return found


def check_import_by_name(ctx: Context) -> list[Finding]:
    a = ctx.args
    out = []
    for dest, unset in IMPORT_FLAGS.items():
        if a.has(dest) and a.get(dest) not in unset:
            out.append(IMPORT_BY_NAME.finding(_flag(ctx, dest),
                                              f"{_flag(ctx, dest)} {a.get(dest)} imports code"))
    backend = a.get("distributed_executor_backend")
    if backend not in SAFE_BACKENDS:
        out.append(IMPORT_BY_NAME.finding("--distributed-executor-backend",
                                          f"--distributed-executor-backend {backend} is imported "
                                          "as a class"))
    from vllm_secure_launch.surface.flags import of

    for dest in of(a).json_dests():
        for hit in _module_paths(a.get(dest), _flag(ctx, dest)):
            out.append(IMPORT_BY_NAME.finding(_flag(ctx, dest), f"{hit} imports code"))
    out += _nested_imports(ctx)
    return out


def _nested_imports(ctx: Context) -> list[Finding]:
    """Code loading by name from values whose key does not say so (vLLM 0.32/0.33):
    speculative_config model with method custom_class (v1/spec_decode/custom_class_proposer.py),
    compilation_config backend (config/compilation.py resolve_obj_by_qualname) and
    inductor_compile_config string values (config/compilation.py __import__)."""
    a, out = ctx.args, []
    spec = a.get("speculative_config")
    if isinstance(spec, dict) and (spec.get("method") == "custom_class" or (
            spec.get("method") is None and is_dotted_path(spec.get("model")))):
        out.append(IMPORT_BY_NAME.finding("--speculative-config", f"--speculative-config.model "
                                          f"{spec.get('model')} is imported as a proposer class"))
    comp = a.get("compilation_config")
    if isinstance(comp, dict):
        if is_dotted_path(comp.get("backend")):
            out.append(IMPORT_BY_NAME.finding("--compilation-config", "--compilation-config."
                                              f"backend {comp['backend']} is imported"))
        inductor = comp.get("inductor_compile_config")
        for k, v in (inductor.items() if isinstance(inductor, dict) else ()):
            if is_dotted_path(v):
                out.append(IMPORT_BY_NAME.finding(
                    "--compilation-config", f"--compilation-config.inductor_compile_config.{k} "
                    f"{v} is imported"))
    return out


VLLM_COMMAND = Rule(
    "VSL224", "the vLLM command is not a known launcher of vLLM's serve", Severity.ERROR,
    "leave --vllm-command / VSL_VLLM_COMMAND / [launcher] vllm_command unset (vLLM of the "
    "launcher's Python), or name one of: `vllm serve`, `vllm-mindspore serve`, `PYTHON -m "
    "vllm.entrypoints.cli.main serve`, `PYTHON -m vllm_secure_launch.supervise.entry serve`, by "
    "path or name, with nothing after `serve`; vLLM's own options go after `serve` where the "
    "launcher judges them. Waive VSL224 only for a wrapper you audited",
    doc="The command runs with the plan's environment and arguments: `env VAR=...` would set "
    "variables the planner removed, extra options after `serve` would be read by vLLM but never "
    "judged, and another program is not vLLM at all.",
)
CORS_SHAPE = Rule(
    "VSL225", "--allowed-origins is not a JSON list of origin strings", Severity.ERROR,
    "write a JSON list, e.g. --allowed-origins '[\"https://app.example.com\"]': Starlette tests "
    "\"*\" in the value, so a string containing * or an object with a \"*\" key allows every "
    "origin",
)
REQUEST_INPUTS = Rule(
    "VSL226", "clients may send inputs the server deserialises or passes to processors",
    Severity.ERROR,
    "drop --enable-prompt-embeds (request tensors are loaded with torch.load: GHSA-mrw7-hf4f-"
    "83pf, GHSA-mcmc-2m55-j8jj, torch CVE-2025-32434) and --trust-request-mm-kwargs (request "
    "kwargs reach multimodal processors: GHSA-58v5-2m8f-94pr), or waive VSL226 when every "
    "client is trusted",
    doc="vllm/config/model.py (enable_prompt_embeds) and entrypoints protocol checks of "
    "mm_processor_kwargs/media_io_kwargs, 0.32 and 0.33.",
)
LISTENING_LOADER = Rule(
    "VSL227", "a load format opens a server socket", Severity.ERROR,
    "use another --load-format: vllm-ascend's netloader serves weights on an unauthenticated "
    "TCP port (VLLM_HOST_IP, LISTEN_PORT + device id) and rfork runs a FastAPI seed server on "
    "0.0.0.0 with a dynamic port, gated only by a seed_key query value",
    doc="vllm-ascend v0.23.0 netloader/interaction/elastic.py and rfork/seed_server.py.",
)
WATCHDOG_DUMP = Rule(
    "VSL228", "vLLM 0.33's watchdog would write stack dumps into a shared or system directory",
    Severity.ERROR,
    "point --watchdog-config dump_dir at a directory only the service user can write (its "
    "StateDirectory, e.g. /var/lib/vllm/watchdog), or leave dump_dir empty (watchdog off)",
    doc="vLLM 0.33 vllm/utils/watch_dog.py ThreadedWatchDog.dump_stack: os.makedirs(dump_dir) "
    "and open(dump_dir/VLLM_STACK_DUMP_for_<name>_<pid>.log, 'a') -- a predictable name opened "
    "for append, following symlinks, so in a world-writable directory another user chooses "
    "which file the service appends to; faulthandler writes every thread's stack into it "
    "(config/watchdog_config.py: an empty dump_dir disables the watchdog). New in 0.33.",
)
ALL_RULES = (*RULES, VLLM_COMMAND, CORS_SHAPE, REQUEST_INPUTS, LISTENING_LOADER, WATCHDOG_DUMP)
RULES = ALL_RULES  # type: ignore[assignment]  # the family's tuple grows here

# `PYTHON [-I -s -E -B -u] -m MODULE serve` with one of these modules.
_VLLM_MODULES = ("vllm.entrypoints.cli.main", "vllm_secure_launch.supervise.entry")
_VLLM_SCRIPTS = ("vllm", "vllm-mindspore")
_PYTHON_FLAGS = ("-I", "-s", "-E", "-B", "-u")


def known_vllm_command(cmd: tuple[str, ...]) -> bool:
    import os.path
    import re

    if len(cmd) < 2 or cmd[-1] != "serve":
        return False
    head = os.path.basename(cmd[0])
    if len(cmd) == 2:
        return head in _VLLM_SCRIPTS
    if not re.fullmatch(r"python(\d+(\.\d+)?)?", head):
        return False
    rest = list(cmd[1:-1])
    while rest and rest[0] in _PYTHON_FLAGS:
        rest.pop(0)
    return len(rest) == 2 and rest[0] == "-m" and rest[1] in _VLLM_MODULES


def check_vllm_command(ctx: Context) -> list[Finding]:
    cmd = tuple(ctx.policy.vllm_command)
    if not cmd or known_vllm_command(cmd):
        return []
    origin = ctx.policy.origins.get("vllm_command", "the policy")
    where = {"cli": "--vllm-command", "env": "VSL_VLLM_COMMAND",
             "file": "[launcher] vllm_command"}.get(origin, "vllm_command")
    from vllm_secure_launch.surface.secrets import redact_argv

    shown = " ".join(redact_argv(cmd, {t.split("=", 1)[0] for t in cmd if "=" in t}))
    return [VLLM_COMMAND.finding(where, f"{where} is `{shown}`: not vLLM's serve as the launcher "
                                 "knows it; whatever it adds is not judged")]


def _watchdog_dir(value: object) -> str:
    if isinstance(value, str):  # a raw (non-JSON) value: vLLM would refuse it anyway
        return ""
    return str(value.get("dump_dir") or "") if isinstance(value, dict) else ""


def check_watchdog(ctx: Context) -> list[Finding]:
    """--watchdog-config (vLLM 0.33): where the stack dumps go."""
    dump_dir = _watchdog_dir(ctx.args.get("watchdog_config"))
    if not dump_dir:
        return []
    real = canonical_path(ctx, dump_dir)
    reason = sensitive_reason(ctx, real)
    if reason is None:
        return []
    return [WATCHDOG_DUMP.finding(_flag(ctx, "watchdog_config"),
                                  f"dump_dir {dump_dir} ({real}): {reason}")]


CHECKS = (check_keys, check_flags, check_media_path, check_import_by_name, check_vllm_command,
          check_watchdog)
