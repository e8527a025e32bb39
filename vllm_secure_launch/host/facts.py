"""Reads the machine: interfaces, hostname, identity, secrets sources. The only effects of the
planning phase live here; the planner gets a frozen HostFacts."""

from __future__ import annotations

# `_socket` is the C module behind `socket`: importing `socket` itself builds its IntEnum
# classes, ~5 ms of every start (issue 9); the raw calls and constants are all that is needed.
import _socket as socket
import os
import stat
import sys
from dataclasses import field
from typing import Mapping

from vllm_secure_launch.addresses import IfAddr
from vllm_secure_launch.records import record


@record
class SecretFile:
    """A secret read from a file, with the facts the rules judge (mode, owner)."""

    path: str
    value: str | None  # None when unreadable/missing
    mode: int | None = None
    error: str | None = None


@record
class TokenFile:
    """What the rules judge of Ray's token file (host.ray_token). The token itself is never
    kept: only its length, so no report or plan can carry it."""

    path: str
    length: int = 0  # characters of the first line, whitespace trimmed (what Ray reads)
    mode: int | None = None
    owner: int | None = None
    error: str | None = None  # why it cannot be used as read (missing, not regular, ...)

    def problem(self, uid: int, min_chars: int) -> str | None:
        """Why this file must not be Ray's token file (a phrase), or None."""
        if self.error:
            return self.error
        if self.owner is not None and self.owner != uid:
            return f"is owned by uid {self.owner}, not the service user (uid {uid})"
        if self.mode is not None and self.mode & 0o077:
            return f"is readable or writable by group or others (mode {self.mode:04o})"
        if self.length < min_chars:
            return (f"holds a token of {self.length} characters; at least {min_chars} are "
                    "needed")
        return None


@record
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
    cwd: str = "/"  # the service's working directory (vLLM resolves relative paths there)
    # path as given -> the path the kernel resolves it to (cwd joined, symlinks followed)
    realpaths: Mapping[str, str] = field(default_factory=dict)
    # distribution -> version of the vLLM environment (host/packages.py), and where it was read
    packages: Mapping[str, str] = field(default_factory=dict)
    packages_source: str = ""
    # (surface version, exact match, why) chosen for those packages (surface/versions.py)
    surface: tuple[str, bool, str] = ("0.32", True, "default")
    ray_token: TokenFile | None = None  # Ray's token file, when one is named (issue 14)


def _prefixlen(netmask: str | None, family: int) -> int:
    """psutil gives netmasks as addresses ('255.255.255.0', 'ffff:ffff:ffff:ffff::'), which
    ipaddress cannot take as an IPv6 prefix: count the mask's one-bits instead (a mask with a
    hole is not a prefix and is refused by the caller through ValueError)."""
    if not netmask:
        return 32 if family == socket.AF_INET else 128
    if "/" in netmask:
        return int(netmask.split("/", 1)[1])
    import ipaddress

    mask = int(ipaddress.ip_address(netmask))
    width = 32 if family == socket.AF_INET else 128
    ones = bin(mask).count("1")
    if mask != ((1 << ones) - 1) << (width - ones):
        raise ValueError(f"netmask {netmask} is not a prefix")
    return ones


def interfaces() -> dict[str, tuple[IfAddr, ...]]:
    from vllm_secure_launch.host import ifaddrs

    found = ifaddrs.read()  # rtnetlink: what psutil reads, without importing psutil
    if found is not None:
        return {name: tuple(IfAddr(ip, plen) for _fam, ip, plen in addrs)
                for name, addrs in found.items()}
    return _psutil_interfaces()


def _psutil_interfaces() -> dict[str, tuple[IfAddr, ...]]:
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


KEY_LIMIT = 64 * 1024  # a key is one line


def read_secret_file(path: str) -> SecretFile:
    from vllm_secure_launch.files import FileProblem, read_text

    try:
        st = os.stat(path)
        value = read_text(path, limit=KEY_LIMIT).strip()
        return SecretFile(path, value, stat.S_IMODE(st.st_mode))
    except FileProblem as exc:
        return SecretFile(path, None, error=exc.what)
    except FileNotFoundError:
        return SecretFile(path, None, error="does not exist")
    except PermissionError:
        return SecretFile(path, None, error="is not readable (permission denied)")
    except (OSError, UnicodeDecodeError) as exc:
        return SecretFile(path, None, error=f"cannot be read ({exc.__class__.__name__})")


def read_token_file(path: str) -> TokenFile:
    """Ray's token file through files.read_bounded (regular file, bounded size, UTF-8), with
    the mode and owner Ray's own processes will find (os.stat follows symlinks as they do)."""
    from vllm_secure_launch.files import FileProblem, read_bounded

    if not path.startswith("/"):
        return TokenFile(path, error="is a relative path")
    try:
        st = os.stat(path)
        text = read_bounded(path, limit=KEY_LIMIT)
    except FileProblem as exc:
        return TokenFile(path, error=exc.what)
    except FileNotFoundError:
        return TokenFile(path, error="does not exist")
    except OSError as exc:
        return TokenFile(path, error=f"cannot be read ({exc.strerror})")
    assert isinstance(text, str)  # noqa: S101 - binary=False; for the type checker
    lines = text.splitlines()
    first = lines[0].strip() if lines else ""
    return TokenFile(path, len(first), stat.S_IMODE(st.st_mode), st.st_uid)


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
    paths: tuple[str, ...] = (),
    vllm_command: tuple[str, ...] = (),
    packages: tuple[dict[str, str], str] | None = None,
    surface: tuple[str, bool, str] = ("0.32", True, "default"),
    ray_token_file: str = "",
) -> HostFacts:
    from vllm_secure_launch.host import packages as pkgs

    found, source = packages if packages is not None else pkgs.installed(vllm_command)
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
        cwd=os.getcwd(),
        realpaths={p: os.path.realpath(p) for p in paths if p and "\0" not in p},
        packages=found,
        packages_source=source,
        surface=surface,
        ray_token=read_token_file(ray_token_file) if ray_token_file else None,
    )
