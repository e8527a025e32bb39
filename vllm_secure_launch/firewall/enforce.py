"""Decide, arm and clean up the kernel firewall for one service.

    plan_firewall(plan, policy, args) -> Plan   (prepare: findings + the exact ruleset in facts)
    arm(plan) -> (Plan, Armed | None)            (serve, before spawn: cgroup made, ruleset
                                                  checked by the kernel, keeper told via env)
    disarm(armed)                                (serve, after the supervisor returns)

The keeper loads the table (it owns its netlink socket) and puts vLLM into the cgroup before
exec; see supervise/keeper.py. Modes: `auto` enforces when the host allows it and otherwise
warns (VSL131); `enforce` and `strict` refuse with 78 when they cannot (VSL132); `strict`
also limits egress to the internal network, loopback and the allowed media/hub hosts.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import replace
from typing import Any, Callable, Mapping

from vllm_secure_launch.errors import LauncherError
from vllm_secure_launch.exitcodes import ExitCode
from vllm_secure_launch.findings import Finding, apply_waivers, blocking
from vllm_secure_launch.firewall import cgroup as cg
from vllm_secure_launch.firewall.spec import Spec, ruleset
from vllm_secure_launch.records import record
from vllm_secure_launch.rules import firewall_rules as R

CAP_NET_ADMIN = 12
NFT_SONAME = "libnftables.so.1"  # the soname holder.library() loads first
# Set in the keeper's environment only; the keeper removes them before vLLM starts.
ENV_RULESET, ENV_CGROUP = "VSL_FIREWALL_RULESET", "VSL_FIREWALL_CGROUP"
HUB_HOSTS = ("huggingface.co", "cdn-lfs.huggingface.co", "cdn-lfs-us-1.hf.co",
             "cas-bridge.xethub.hf.co")


@record
class Armed:
    cgroup: str  # directory to remove after the run


def has_net_admin(status: str = "/proc/self/status") -> bool:
    try:
        with open(status, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


def unusable() -> str | None:
    """Why the launcher cannot enforce here (a sentence), or None."""
    if not has_net_admin():
        return "the launcher has neither root nor CAP_NET_ADMIN"
    try:
        where = cg.locate(name(os.getpid()))
    except (cg.CgroupError, OSError) as exc:
        return str(exc)
    parent = os.path.dirname(where.path)
    if not os.access(parent, os.W_OK):
        return (f"the launcher's cgroup {parent} is not writable (systemd: Delegate=yes, or "
                "run as root)")
    if library_on_disk():
        return None
    from vllm_secure_launch.firewall import holder  # ctypes + dlopen: ~1 MiB, a few ms

    try:
        holder.library()
    except holder.NftError as exc:
        return str(exc)
    return None


def library_on_disk(environ: Mapping[str, str] | None = None, root: str = "/") -> bool:
    """libnftables.so.1 is in a directory the dynamic loader searches (LD_LIBRARY_PATH,
    ld.so.conf.d, the system directories). Planning needs to know that it is there, not to load
    it (that costs every dry run ~1 MiB and a few ms): the keeper loads it before vLLM starts
    and refuses with 78 when it cannot. When it is not found here, the caller dlopens it, so a
    library the loader finds some other way still counts."""
    env = os.environ if environ is None else environ
    dirs = [d for d in env.get("LD_LIBRARY_PATH", "").split(":") if d.startswith("/")]
    conf = os.path.join(root, "etc/ld.so.conf.d")
    try:
        confs = sorted(n for n in os.listdir(conf) if n.endswith(".conf"))
    except OSError:
        confs = []
    for name in confs:
        try:
            with open(os.path.join(conf, name), encoding="utf-8", errors="replace") as fh:
                dirs += [ln.strip() for ln in fh if ln.strip().startswith("/")]
        except OSError:
            continue
    machine = os.uname().machine
    dirs += [f"/usr/lib/{machine}-linux-gnu", f"/lib/{machine}-linux-gnu", "/usr/lib64",
             "/lib64", "/usr/lib", "/lib"]
    return any(os.path.isfile(os.path.join(root, d.lstrip("/"), NFT_SONAME)) for d in dirs)


def name(pid: int) -> str:
    return f"{cg.PREFIX}{pid}"


def build_spec(plan: Any, policy: Any, args: Any, where: cg.Cgroup) -> Spec:
    internal = [f"{ip}/{ipaddress.ip_address(ip).max_prefixlen}"
                for ip in plan.expected.internal_ips]
    for cidr in (plan.facts.get("internal_network"), policy.internal_cidr):
        if cidr:
            internal.append(str(cidr))
    api = plan.api
    port = None if (api.uds or api.headless) else api.port
    strict = policy.firewall == "strict"
    allow = egress_allowed(args, plan.env) if strict else ()
    return Spec(table=f"vsl_{os.getpid()}", cgroup=where.nft_path, level=where.level,
                api_port=port, api_sources=tuple(policy.api_allowed_sources),
                internal=tuple(internal), strict=strict, egress_allow=allow)


def egress_allowed(args: Any, env: Mapping[str, str]) -> tuple[str, ...]:
    """Strict mode's extra destinations: --allowed-media-domains, and the model hub unless
    the child runs offline. Resolved once, now: a name that moves later stays refused."""
    import socket  # strict mode only: `socket` builds IntEnums at import, ~5 ms (issue 9)

    hosts = [h for h in (args.get("allowed_media_domains") or []) if h]
    if env.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
        hosts += HUB_HOSTS
    out: set[str] = set()
    for host in hosts:
        try:
            infos = socket.getaddrinfo(host, 443, proto=socket.IPPROTO_TCP)
        except OSError:
            continue  # unresolvable now: refused, which is the safe side
        out.update(str(i[4][0]).split("%")[0] for i in infos)
    return tuple(sorted(out))


def plan_firewall(plan: Any, policy: Any, args: Any) -> Any:
    """Add the firewall's findings and the exact ruleset to the plan (refusing when required
    and impossible). Reads the host (capabilities, mounts); changes nothing."""
    mode = policy.firewall
    if mode == "off":
        return _with(plan, policy, [R.OFF.finding("firewall", "--firewall off: no kernel "
                                                  "enforcement for vLLM's tree"),
                                    *_sources_unenforced(policy)], None)
    why = unusable()
    if why is not None:
        rule = R.NOT_ENFORCED if mode == "auto" else R.REQUIRED
        return _with(plan, policy, [rule.finding("firewall", f"{why}; vLLM's tree would run "
                                                 "without the kernel firewall"),
                                    *_sources_unenforced(policy)], None)
    where = cg.locate(name(os.getpid()))
    spec = build_spec(plan, policy, args, where)
    mode_in_force = "strict" if spec.strict else "enforce"
    found = R.ENFORCED.finding("firewall", f"mode {mode_in_force}; table inet {spec.table} on "
                               f"cgroup {where.path}")
    return _with(plan, policy, [found], {**spec.to_dict(), "mode": mode_in_force,
                                         "cgroup_dir": where.path, "ruleset": ruleset(spec)})


def _sources_unenforced(policy: Any) -> list[Finding]:
    if not policy.api_allowed_sources:
        return []
    return [R.SOURCES_NOT_ENFORCED.finding(
        "api_allowed_sources", f"the API port would accept connections from anywhere, not "
        f"only from {', '.join(policy.api_allowed_sources)}")]


def _with(plan: Any, policy: Any, found: list[Finding], doc: dict[str, Any] | None) -> Any:
    found = apply_waivers(found, policy.waivers)
    info = doc or {"mode": "off", "requested": policy.firewall}
    facts = {**plan.facts, "firewall": info}
    decision = "refuse" if blocking(found) else plan.decision
    return replace(plan, findings=(*plan.findings, *found), facts=facts, decision=decision)


def arm(plan: Any) -> tuple[Any, Armed | None]:
    """Before spawn: make the cgroup and hand it and the ruleset to the keeper, which loads the
    table before vLLM exists and refuses with 78 when the kernel does not accept it (fail
    closed; a separate check here would only add its cost to every start)."""
    doc = plan.facts.get("firewall") or {}
    if doc.get("mode") not in ("enforce", "strict"):
        return plan, None
    path = doc["cgroup_dir"]
    cg.sweep(os.path.dirname(path))
    try:
        cg.create(cg.Cgroup(path, doc["cgroup"], doc["level"]))
    except cg.CgroupError as exc:
        raise LauncherError(str(exc), "the kernel firewall is required for this start",
                            "fix the cgroup access or set --firewall auto",
                            ExitCode.REFUSED) from None
    env = {**plan.env, ENV_RULESET: doc["ruleset"], ENV_CGROUP: path}
    return replace(plan, env=env), Armed(path)


def supervised(plan: Any, run: Callable[[Any], int]) -> int:
    """arm -> run(plan with the keeper's firewall env) -> disarm, on every exit path."""
    plan, armed = arm(plan)
    try:
        return run(plan)
    finally:
        disarm(armed)


def disarm(armed: Armed | None) -> None:
    """After the run: the table went with the keeper; remove the (now empty) cgroup."""
    if armed is not None:
        cg.remove(armed.cgroup)
