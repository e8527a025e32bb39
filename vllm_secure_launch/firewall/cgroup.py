"""cgroup v2 for vLLM's tree: find the mount, make and remove the service's own cgroup.

Two layouts exist: unified (cgroup2 at /sys/fs/cgroup, every current distribution) and hybrid
(v1 controllers at /sys/fs/cgroup/*, cgroup2 at /sys/fs/cgroup/unified). nft resolves a
`socket cgroupv2` path below /sys/fs/cgroup, so the path we hand it carries the `unified/`
prefix in the hybrid layout; a cgroup2 mounted anywhere else cannot be named by nft.
"""

from __future__ import annotations

import os
import time

from vllm_secure_launch.records import record

NFT_ROOT = "/sys/fs/cgroup"  # where nft looks up `socket cgroupv2` paths
PREFIX = "vsl-"


class CgroupError(Exception):
    """Why no cgroup v2 directory for vLLM's tree can be used (a sentence)."""


@record
class Cgroup:
    path: str  # absolute directory
    nft_path: str  # relative to /sys/fs/cgroup, as nft wants it
    level: int  # depth below the cgroup2 root

    @property
    def procs(self) -> str:
        return os.path.join(self.path, "cgroup.procs")


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The cgroup2 mount point nft can name: /sys/fs/cgroup or below it; else None."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    points = []
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            points.append(left.split()[4])
    for point in sorted(points, key=len):
        if point == NFT_ROOT or point.startswith(NFT_ROOT + "/"):
            return point
    return None


def own_cgroup(proc: str = "/proc/self/cgroup") -> str:
    """This process's cgroup v2 path ("0::/a/b" -> "/a/b")."""
    with open(proc, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("0::"):
                return line[3:].strip() or "/"
    raise CgroupError("this process has no cgroup v2 membership (/proc/self/cgroup has no 0:: "
                      "line)")


def locate(name: str) -> Cgroup:
    """Where the service's cgroup goes: a child of the launcher's own cgroup v2 (so that a
    delegated subtree, systemd's Delegate=yes, is all that is needed)."""
    mount = cgroup2_mount()
    if mount is None:
        raise CgroupError("no cgroup v2 file system is mounted at /sys/fs/cgroup or "
                          "/sys/fs/cgroup/unified")
    rel = own_cgroup().strip("/")
    parts = [p for p in rel.split("/") if p] + [name]
    path = os.path.join(mount, *parts)
    nft = os.path.relpath(path, NFT_ROOT)
    return Cgroup(path=path, nft_path=nft, level=len(parts))


def create(cg: Cgroup) -> None:
    try:
        os.mkdir(cg.path, 0o755)
    except OSError as exc:
        raise CgroupError(f"cannot create the cgroup {cg.path} ({exc.strerror}); the launcher "
                          "needs write access to its own cgroup v2 (root, or a delegated "
                          "subtree such as systemd's Delegate=yes)") from None


def remove(path: str, wait: float = 2.0) -> bool:
    """rmdir once the cgroup is empty (the last processes may still be exiting)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def sweep(parent: str) -> None:
    """Remove empty vsl-* cgroups whose launcher (pid in the name) is gone: left when the
    launcher and the keeper were both SIGKILLed at once (the nft table went with the keeper)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid = name[len(PREFIX):].split("-", 1)[0]
        if name.startswith(PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.rmdir(os.path.join(parent, name))
            except OSError:
                pass  # not empty or already gone: never touch a live tree
