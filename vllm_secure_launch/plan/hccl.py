"""HCCL's host-side ports on Ascend nodes: what the launcher pins per job, and what the audit
then expects. Pure.

CANN's variables (HCCL user guide, environment variables; hiascend.com envref_07_0074,
hcclenvref_07_0020 / _0021):
  * HCCL_IF_BASE_PORT: first host-NIC port HCCL uses when a communicator is created from root
    info (torch_npu's ProcessGroupHCCL); HCCL occupies 32 ports from it (CANN 8.2 and later;
    16 before), default 60000-60031, valid 1024-65520.
  * HCCL_HOST_SOCKET_PORT_RANGE: the host-side ports HCCL may use (ports and ranges separated
    by commas, "a-b" inclusive, or "auto" for OS-assigned); at least as many as HCCL processes
    per NPU.
  * HCCL_NPU_SOCKET_PORT_RANGE: the same on the NPU's own network port. Not pinned: those
    sockets live on the NPU's RoCE address, which the host's socket audit cannot see and two
    jobs never share (each job has its own NPUs); and CANN does not support it on Atlas A2
    with MC2 fused communication operators (AllGatherMatmul and the like).
"""

from __future__ import annotations

from typing import Mapping

from vllm_secure_launch.plan.model import PortRange

BASE_PORT_SPAN = 32  # ports HCCL takes from HCCL_IF_BASE_PORT (16 before CANN 8.2: covered)
HOST_RANGE_SIZE = 16  # >= HCCL processes per NPU, with room (one per NPU is the usual)
NAMES = ("HCCL_IF_BASE_PORT", "HCCL_HOST_SOCKET_PORT_RANGE")


def _decimal(text: str) -> bool:
    # str.isdigit() alone accepts "²", which int() then refuses (a crash, not a finding)
    return text.isascii() and text.isdigit()


def parse_port_spec(text: str) -> tuple[tuple[int, int], ...] | None:
    """"60000-60050,60100" -> ((60000, 60050), (60100, 60100)); "auto" -> (); None when
    malformed (then nothing is expected and HCCL itself rejects the value)."""
    text = text.strip()
    if text == "auto":
        return ()
    out = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not _decimal(lo) or (sep and not _decimal(hi)):
            return None
        a, b = int(lo), int(hi) if sep else int(lo)
        if not 1 <= a <= b <= 65535:
            return None
        out.append((a, b))
    return tuple(out)


def expected_ranges(env: Mapping[str, str]) -> tuple[PortRange, ...]:
    """The HCCL host port ranges the child environment pins (derived or written)."""
    out: list[PortRange] = []
    base = env.get("HCCL_IF_BASE_PORT", "").strip()
    if _decimal(base) and 1024 <= int(base) <= 65520:
        out.append(PortRange("HCCL_IF_BASE_PORT", int(base),
                             min(65535, int(base) + BASE_PORT_SPAN - 1)))
    spec = parse_port_spec(env.get("HCCL_HOST_SOCKET_PORT_RANGE", "auto")) or ()
    out.extend(PortRange("HCCL_HOST_SOCKET_PORT_RANGE", a, b) for a, b in spec)
    return tuple(out)
