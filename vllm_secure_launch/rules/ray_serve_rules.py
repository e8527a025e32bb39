"""VSL720–VSL729 — serving on a Ray cluster (`--distributed-executor-backend ray`,
`--data-parallel-backend ray`; issue 14, docs/ray-serve.md).

vLLM's `ray.init()` joins whatever cluster `RAY_ADDRESS` names and runs its workers there, so
the launcher hands vLLM a Ray client that can only authenticate with a token (Ray >= 2.52:
`RAY_AUTH_MODE=token` plus `RAY_AUTH_TOKEN_PATH`) and refuses every spelling that would join a
cluster it cannot check. Ray's own `ray.init(address=...)` never switches token mode on by
itself, which is why the launcher sets it for vLLM. The live checks of the cluster itself
(token enforced, dashboard unreachable, nodes internal) are VSL730–VSL739, judged in
rules/ray_live_rules.py from what preflight/ray_cluster.py observes.
"""

from __future__ import annotations

from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.rules.context import Context
from vllm_secure_launch.rules.registry import Rule

SERVING = Rule(
    "VSL720", "serving on a Ray cluster: token auth set for vLLM, the cluster checked before start",
    Severity.INFO,
    "nothing to do; `--dry-run` shows the Ray variables vLLM gets (RAY_ADDRESS, RAY_AUTH_MODE, "
    "RAY_AUTH_TOKEN_PATH) and the cluster check's result",
)
AUTH_MODE = Rule(
    "VSL721", "RAY_AUTH_MODE is set to something other than token", Severity.ERROR,
    "unset RAY_AUTH_MODE (the launcher sets RAY_AUTH_MODE=token for vLLM) or set it to token; "
    "a Ray client without token mode connects to clusters that need no token",
)
NO_TOKEN_FILE = Rule(
    "VSL722", "no Ray token file is named", Severity.ERROR,
    "give --ray-token-file (VSL_RAY_TOKEN_FILE, policy [ray] ray_token_file) or RAY_AUTH_TOKEN_PATH: "
    "the file the cluster was started with (`vllm-secure-launch ray start --head` writes it); "
    "do not rely on ~/.ray/auth_token, which Ray 2.60 writes world-readable",
)
TOKEN_FILE_UNSAFE = Rule(
    "VSL723", "the Ray token file is not safe to use", Severity.ERROR,
    "use an absolute path to a regular file owned by the service user, mode 0600 or 0400, "
    "holding one line of at least 32 characters (e.g. `python -c 'import secrets; "
    "print(secrets.token_hex(32))' > FILE; chmod 600 FILE`)",
)
TOKEN_IN_ENV = Rule(
    "VSL724", "RAY_AUTH_TOKEN holds Ray's token in the environment", Severity.ERROR,
    "unset RAY_AUTH_TOKEN and give the token as a file (--ray-token-file or RAY_AUTH_TOKEN_PATH): "
    "every Ray worker and task process inherits the variable and it is readable in "
    "/proc/PID/environ; the launcher removes it from vLLM's environment unless VSL724 is waived",
)
NO_ADDRESS = Rule(
    "VSL725", "no Ray head address: vLLM's ray.init() would start or pick a cluster by itself",
    Severity.ERROR,
    "set RAY_ADDRESS=<head internal IP>:<GCS port> (e.g. 10.0.0.1:6379), the head started with "
    "`vllm-secure-launch ray start --head`; RAY_ADDRESS=auto/local is refused because it starts "
    "or picks a cluster the launcher has not checked",
)
NOT_INSTALLED = Rule(
    "VSL726", "Ray is not installed in vLLM's environment", Severity.ERROR,
    "install Ray (>= 2.52, the version the cluster runs; prefer plain `ray` over `ray[default]`) "
    "into the environment of the vLLM command; vLLM's Ray backend fails without it",
)
PRE_TOKEN = Rule(
    "VSL727", "the installed Ray predates token authentication (Ray < 2.52)", Severity.ERROR,
    "upgrade Ray in vLLM's environment and on every node to 2.52 or later (`pip install -U "
    "'ray>=2.52'`): older Ray has no authentication at all on its GCS, raylets, workers or "
    "dashboard",
)

RULES = (SERVING, AUTH_MODE, NO_TOKEN_FILE, TOKEN_FILE_UNSAFE, TOKEN_IN_ENV, NO_ADDRESS,
         NOT_INSTALLED, PRE_TOKEN)

TOKEN_AUTH_SINCE = (2, 52)
MIN_TOKEN_CHARS = 32  # Ray's own generator writes 64 hex characters (secrets.token_hex(32))
# RAY_ADDRESS values that are no address: ray.init() starts a local cluster ("local") or looks
# one up from /tmp/ray/ray_current_cluster ("auto"), neither of which the launcher checked.
NON_ADDRESSES = frozenset({"", "auto", "local"})


def ray_backend(ctx: Context) -> bool:
    return "ray" in (ctx.args.get("distributed_executor_backend"),
                     ctx.args.get("data_parallel_backend"))


def token_path(ctx: Context) -> str:
    """The token file vLLM gets: the launcher's setting, else Ray's own variable."""
    return ctx.policy.ray_token_file or ctx.environ.get("RAY_AUTH_TOKEN_PATH", "")


def ray_address(ctx: Context) -> str:
    return ctx.environ.get("RAY_ADDRESS", "").strip()


def has_token_auth(ray_version: str) -> bool:
    """Ray `ray_version` has token authentication (2.52 or newer, its pre-releases included);
    False for a version that cannot be read (fail closed). Also `ray start`'s check."""
    from vllm_secure_launch.surface.advisories import parse_version

    try:
        return parse_version(ray_version.split("+", 1)[0]).release >= TOKEN_AUTH_SINCE
    except ValueError:
        return False


def check_serving(ctx: Context) -> list[Finding]:
    if not ray_backend(ctx):
        return []
    out = [*_auth(ctx), *_token_file(ctx), *_address(ctx), *_installed(ctx)]
    if not any(f.blocking for f in out):
        out.append(SERVING.finding("ray", f"vLLM joins the Ray cluster at {ray_address(ctx)} "
                                   f"with the token in {token_path(ctx)}"))
    return out


def _auth(ctx: Context) -> list[Finding]:
    out = []
    mode = ctx.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.strip().lower() != "token":
        out.append(AUTH_MODE.finding("RAY_AUTH_MODE", f"RAY_AUTH_MODE={mode!r}: Ray's token "
                                     "authentication would be off for vLLM"))
    if "RAY_AUTH_TOKEN" in ctx.environ:
        out.append(TOKEN_IN_ENV.finding("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN is set (its value is "
                                        "not shown)"))
    return out


def _token_file(ctx: Context) -> list[Finding]:
    own, ray_own = ctx.policy.ray_token_file, ctx.environ.get("RAY_AUTH_TOKEN_PATH", "")
    if not own and not ray_own:
        return [NO_TOKEN_FILE.finding("ray_token_file", "neither --ray-token-file nor "
                                      "RAY_AUTH_TOKEN_PATH names Ray's token file")]
    if own and ray_own and own != ray_own:
        return [TOKEN_FILE_UNSAFE.finding("RAY_AUTH_TOKEN_PATH", f"--ray-token-file {own} and "
                                          f"RAY_AUTH_TOKEN_PATH={ray_own} name different files")]
    facts = ctx.host.ray_token
    path = own or ray_own
    if not path.startswith("/"):
        return [TOKEN_FILE_UNSAFE.finding(path, f"{path} is a relative path; Ray resolves it in "
                                          "each process's own working directory")]
    if facts is None or facts.path != path:
        return [TOKEN_FILE_UNSAFE.finding(path, f"{path} was not read")]
    problem = facts.problem(ctx.host.uid, MIN_TOKEN_CHARS)
    return [TOKEN_FILE_UNSAFE.finding(path, f"{path} {problem}")] if problem else []


def _address(ctx: Context) -> list[Finding]:
    # Outside the internal network is VSL417 (rules/env_rules.py); here: no address at all.
    raw = ray_address(ctx)
    if raw.lower() in NON_ADDRESSES:
        what = f"RAY_ADDRESS={raw!r}" if raw else "RAY_ADDRESS is not set"
        return [NO_ADDRESS.finding("RAY_ADDRESS", f"{what}: vLLM's ray.init() would start a "
                                   "local cluster or join one the launcher has not checked")]
    return []


def _installed(ctx: Context) -> list[Finding]:
    # Only when the packages of vLLM's environment were read at all (a fake host has none).
    if not ctx.host.packages_source:
        return []
    version = ctx.host.packages.get("ray")
    if version is None:
        return [NOT_INSTALLED.finding("ray", f"no ray distribution in the environment of "
                                      f"{ctx.host.packages_source}")]
    if not has_token_auth(version):
        return [PRE_TOKEN.finding("ray", f"ray {version} is installed; token authentication "
                                  "exists since Ray 2.52.0")]
    return []


CHECKS = (check_serving,)


def child_env(ctx: Context) -> dict[str, str]:
    """The Ray variables vLLM gets on a Ray backend (none otherwise). Values, never secrets: the
    token stays in its file, which Ray reads in every process that needs it."""
    if not ray_backend(ctx):
        return {}
    env = {
        # ray.init(address=...) never turns token mode on by itself (Ray 2.60,
        # _private/worker.py): without this vLLM's driver would speak to the cluster token-less.
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
        # The driver's own metrics agent client; Ray's metrics endpoints carry no auth at all.
        "RAY_enable_metrics_collection": "0",
    }
    if token_path(ctx):
        env["RAY_AUTH_TOKEN_PATH"] = token_path(ctx)
    if ray_address(ctx):
        env["RAY_ADDRESS"] = ray_address(ctx)
    return env


def removed_names(ctx: Context) -> tuple[str, ...]:
    """Ray variables taken out of vLLM's environment: the token as a value (VSL724)."""
    if ray_backend(ctx) and "RAY_AUTH_TOKEN" in ctx.environ and (
            TOKEN_IN_ENV.id not in ctx.policy.waivers):
        return ("RAY_AUTH_TOKEN",)
    return ()
