"""What every rule sees: the parsed vLLM arguments, the environment, the policy, the host facts,
and the few things derived from them once (internal network, multi-node shape, API key)."""

from __future__ import annotations

from typing import Any, Mapping

from vllm_secure_launch.addresses import InternalNet, ResolveError, resolve_internal
from vllm_secure_launch.config.policy import Policy
from vllm_secure_launch.host.facts import HostFacts
from vllm_secure_launch.records import record
from vllm_secure_launch.surface.args import ServeArgs


@record
class KeyChoice:
    source: str  # "api-key-file", "credentials", "env", "argv" or "none"
    value: str | None
    problem: str | None = None  # why the chosen source is unusable (file mode, unreadable...)


@record
class Context:
    args: ServeArgs
    environ: Mapping[str, str]
    policy: Policy
    host: HostFacts
    internal: InternalNet | None
    internal_error: ResolveError | None
    multinode: tuple[str, ...]
    key: KeyChoice
    accelerator: str = "cpu"
    gate: bool = True  # the endpoint gate will be injected

    def int_arg(self, dest: str, default: int) -> int:
        """An integer option as vLLM converts it ("2k" is 2000); `default` when unset/invalid."""
        from vllm_secure_launch.surface.flags import number

        if self.args.get(dest) is None:
            return default
        try:
            v = number(self.args, dest)
        except (TypeError, ValueError):
            return default
        return int(v) if v is not None else default

    def bool_arg(self, dest: str) -> bool:
        return bool(self.args.get(dest, False))

    @property
    def explicit_internal(self) -> bool:
        p = self.policy
        return bool(p.internal_iface or p.internal_cidr or p.internal_ip)


def _truthy_config(v: Any) -> bool:
    return v not in (None, "", {}, [], "null", "None")


def multinode_reasons(args: ServeArgs, host: HostFacts) -> tuple[str, ...]:
    """Why this vLLM shape talks to other nodes (empty for a single node)."""
    from vllm_secure_launch.addresses import LOOPBACK, classify, parse_ip

    reasons = []

    def as_int(dest: str, default: int) -> int:
        from vllm_secure_launch.surface.flags import number

        if args.get(dest) is None:
            return default
        try:
            v = number(args, dest)
        except (TypeError, ValueError):
            return default
        return int(v) if v is not None else default

    if as_int("nnodes", 1) > 1:
        reasons.append(f"--nnodes {args.get('nnodes')}")
    if args.get("headless"):
        reasons.append("--headless")
    dpa = args.get("data_parallel_address")
    if dpa and classify(str(dpa)) != LOOPBACK:
        local = {parse_ip(a.ip) for addrs in host.interfaces.values() for a in addrs}
        if parse_ip(str(dpa)) not in local:
            reasons.append(f"--data-parallel-address {dpa} is not an address of this host")
    if args.get("distributed_executor_backend") == "ray":
        reasons.append("--distributed-executor-backend ray")
    if args.get("data_parallel_backend") == "ray":
        reasons.append("--data-parallel-backend ray")
    if _truthy_config(args.get("kv_transfer_config")):
        reasons.append("--kv-transfer-config (KV transfer between instances)")
    dp = as_int("data_parallel_size", 1)
    dpl = args.get("data_parallel_size_local")
    if dpl is not None and as_int("data_parallel_size_local", dp) < dp:
        reasons.append(f"--data-parallel-size-local {dpl} < --data-parallel-size {dp}")
    if as_int("data_parallel_start_rank", 0) > 0:
        reasons.append(f"--data-parallel-start-rank {args.get('data_parallel_start_rank')}")
    if args.get("enable_elastic_ep"):
        reasons.append("--enable-elastic-ep")
    return tuple(reasons)


def choose_key(args: ServeArgs, environ: Mapping[str, str], host: HostFacts) -> KeyChoice:
    """--api-key-file > $CREDENTIALS_DIRECTORY/vllm-api-key > VLLM_API_KEY > --api-key (argv)."""
    for source, sf in (("api-key-file", host.api_key_file), ("credentials", host.credential_key)):
        if sf is None:
            continue
        if sf.value is None:
            return KeyChoice(source, None, f"{sf.path} {sf.error}")
        if not sf.value:
            return KeyChoice(source, None, f"{sf.path} is empty")
        if "\n" in sf.value:
            return KeyChoice(source, None, f"{sf.path} holds more than one line")
        if sf.mode is not None and sf.mode & 0o077 and source == "api-key-file":
            return KeyChoice(source, None,
                             f"{sf.path} is readable by group or others (mode {sf.mode:04o})")
        return KeyChoice(source, sf.value)
    if environ.get("VLLM_API_KEY"):
        return KeyChoice("env", environ["VLLM_API_KEY"])
    argv_keys = args.get("api_key")
    if argv_keys:
        first = argv_keys[0] if isinstance(argv_keys, list) else str(argv_keys)
        return KeyChoice("argv", first)
    return KeyChoice("none", None)


def build_context(
    args: ServeArgs, environ: Mapping[str, str], policy: Policy, host: HostFacts,
    accelerator: str = "cpu", gate: bool = True,
) -> Context:
    internal: InternalNet | None = None
    err: ResolveError | None = None
    try:
        internal = resolve_internal(policy.internal_iface, policy.internal_cidr,
                                    policy.internal_ip, host.interfaces)
    except ResolveError as exc:
        err = exc
    return Context(args, environ, policy, host, internal, err, multinode_reasons(args, host),
                   choose_key(args, environ, host), accelerator, gate)
