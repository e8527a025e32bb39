"""Read what the Ray planner needs from this machine: Ray's version and extras, the token file,
the --temp-dir parent, whether the kernel firewall can be enforced, the head's addresses.
Reads only; the decisions are raycluster/plan.py's."""

from __future__ import annotations

import os
import stat
import sys
from importlib import metadata
from typing import Mapping

from vllm_secure_launch.cluster import derive, lookup
from vllm_secure_launch.config.policy import Policy
from vllm_secure_launch.files import FileProblem, read_text
from vllm_secure_launch.host import facts as host_facts
from vllm_secure_launch.raycluster.plan import RayHost, token_path
from vllm_secure_launch.rules.ray_start_rules import TokenFacts
from vllm_secure_launch.surface import ray_start as S

TOKEN_LIMIT = 4096


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def ray_command() -> str:
    """`ray` of the launcher's own environment (its console script), else the one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "ray")
    return here if os.access(here, os.X_OK) else "ray"


def read_token(path: str) -> TokenFacts:
    """The token file's facts, read through files.read_bounded (regular file, bounded)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return TokenFacts(path, exists=False)
    except OSError as exc:
        return TokenFacts(path, exists=False, error=f"cannot stat it ({exc.strerror})")
    regular = stat.S_ISREG(st.st_mode)
    mode, owner_ok = stat.S_IMODE(st.st_mode), st.st_uid == os.geteuid()
    if not regular:
        return TokenFacts(path, True, regular=False, mode=mode, owner_ok=owner_ok)
    try:
        text = read_text(path, limit=TOKEN_LIMIT)
    except FileProblem as exc:
        return TokenFacts(path, True, mode=mode, owner_ok=owner_ok, error=exc.what)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    first = lines[0].strip() if lines else ""
    return TokenFacts(path, True, mode=mode, owner_ok=owner_ok, length=len(first),
                      lines=max(1, len(lines)))


def private_parent(temp_dir: str) -> bool:
    """Whether --temp-dir's parent is a real directory of ours with mode 0700."""
    parent = os.path.dirname(os.path.abspath(temp_dir))
    try:
        st = os.lstat(parent)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and stat.S_IMODE(st.st_mode) & 0o077 == 0)


def collect(ray_argv: list[str], environ: Mapping[str, str], policy: Policy) -> RayHost:
    from vllm_secure_launch.firewall.enforce import unusable

    try:
        temp = S.parse(ray_argv).get("--temp-dir")
    except S.RayArgvError:
        temp = None
    path = token_path(environ, policy)
    head = derive.head_to_resolve(environ, policy, "cpu")
    base = host_facts.HostFacts(
        interfaces=host_facts.interfaces(), uid=os.getuid(), pid=os.getpid(),
        python=sys.executable, runtime_dir=host_facts.runtime_base(environ, policy.runtime_dir))
    return RayHost(
        host=base, ray_command=ray_command(), ray_version=_version("ray"),
        ray_client=_version("grpcio") is not None,
        token=read_token(path) if path else None,
        temp_parent_private=private_parent(temp) if temp else None,
        firewall_unusable=None if policy.firewall == "off" else unusable(),
        head_addrs={head: lookup.addresses(head)} if head else {},
    )
