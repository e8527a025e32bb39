"""Reads the machine: interfaces, hostname, identity, secrets sources. The only effects of the
planning phase live here; the planner gets a frozen HostFacts."""

from __future__ import annotations

import os
import socket
import stat
import sys
from dataclasses import dataclass, field
from typing import Mapping

from vllm_secure_launch.addresses import IfAddr


@dataclass(frozen=True)
class SecretFile:
    """A secret read from a file, with the facts the rules judge (mode, owner)."""

    path: str
    value: str | None  # None when unreadable/missing
    mode: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class HostFacts:
    interfaces: Mapping[str, tuple[IfAddr, ...]] = field(default_factory=dict)
    hostname: str = "localhost"
    hostname_addrs: tuple[str, ...] = ()
    uid: int = 0
    user: str = "root"
    pid: int = 0
    python: str = sys.executable
    runtime_dir: str = "/tmp"
    api_key_file: SecretFile | None = None  # --api-key-file
    credential_key: SecretFile | None = None  # $CREDENTIALS_DIRECTORY/vllm-api-key
    dirs: Mapping[str, bool] = field(default_factory=dict)  # path -> exists (media dirs)


def _prefixlen(netmask: str | None, family: int) -> int:
    if not netmask:
        return 32 if family == socket.AF_INET else 128
    if family == socket.AF_INET:
        return sum(bin(int(p)).count("1") for p in netmask.split("."))
    import ipaddress

    return ipaddress.IPv6Network(f"::/{netmask}").prefixlen if "/" not in netmask else int(
        netmask.split("/")[1])


def interfaces() -> dict[str, tuple[IfAddr, ...]]:
    import psutil

    out: dict[str, tuple[IfAddr, ...]] = {}
    for name, addrs in psutil.net_if_addrs().items():
        items = []
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    items.append(IfAddr(a.address.split("%")[0], _prefixlen(a.netmask, a.family)))
                except ValueError:
                    continue
        out[name] = tuple(items)
    return out


def read_secret_file(path: str) -> SecretFile:
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
        return SecretFile(path, value, stat.S_IMODE(st.st_mode))
    except FileNotFoundError:
        return SecretFile(path, None, error="does not exist")
    except PermissionError:
        return SecretFile(path, None, error="is not readable (permission denied)")
    except (OSError, UnicodeDecodeError) as exc:
        return SecretFile(path, None, error=f"cannot be read ({exc.__class__.__name__})")


def _user() -> str:
    # getpass.getuser()'s order, without importing getpass (and termios) at every start.
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(name):
            return os.environ[name]
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, OSError):
        return str(os.getuid())


def _hostname_addrs(name: str) -> tuple[str, ...]:
    try:
        # An ASCII name as bytes: a str would load the idna codec (and unicodedata) first.
        host: str | bytes = name.encode("ascii") if name.isascii() else name
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return ()
    return tuple(sorted({str(i[4][0]) for i in infos}))


def runtime_base(environ: Mapping[str, str], configured: str) -> str:
    """Where the private per-run directory goes: configured > $RUNTIME_DIRECTORY (systemd
    RuntimeDirectory=) > $XDG_RUNTIME_DIR > the temp dir."""
    return (configured or environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
            or environ.get("XDG_RUNTIME_DIR") or _tempdir())


def _tempdir() -> str:
    """tempfile.gettempdir()'s candidates in its order, without importing tempfile (shutil,
    random, bz2, lzma: ~0.7 MiB) at every start; tempfile decides only when none is usable."""
    for d in (os.environ.get("TMPDIR"), os.environ.get("TEMP"), os.environ.get("TMP"),
              "/tmp", "/var/tmp", "/usr/tmp"):
        if d and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK):
            return os.path.abspath(d)
    import tempfile

    return tempfile.gettempdir()


def collect(
    environ: Mapping[str, str], api_key_file: str, runtime_dir: str,
    media_dirs: tuple[str, ...] = (),
) -> HostFacts:
    hostname = socket.gethostname()
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    cred = None
    if cred_dir and os.path.exists(os.path.join(cred_dir, "vllm-api-key")):
        cred = read_secret_file(os.path.join(cred_dir, "vllm-api-key"))
    return HostFacts(
        interfaces=interfaces(),
        hostname=hostname,
        hostname_addrs=_hostname_addrs(hostname),
        uid=os.getuid(),
        user=_user(),
        pid=os.getpid(),
        python=sys.executable,
        runtime_dir=runtime_base(environ, runtime_dir),
        api_key_file=read_secret_file(api_key_file) if api_key_file else None,
        credential_key=cred,
        dirs={d: os.path.isdir(d) for d in media_dirs},
    )
