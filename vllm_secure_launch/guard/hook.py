"""Start-up hook that pins every torch TCPStore server to an allowed address.

Runs inside every interpreter of vLLM's process tree (API server, engine cores, workers started
by spawn or fork). The launcher copies this file into the target environment's site-packages
as a standalone module and adds a `.pth` line that imports it only when `VSL_TCPSTORE_ALLOWED`
(or `VSL_TCPSTORE_ALLOWED_FILE`) is set, see guard_install.py. It therefore imports nothing but
the standard library, and torch only lazily (torch is never imported by this module: it acts
when torch itself imports torch.distributed).

Why this exists (shared/reference/torch-tcpstore.md, measured with torch 2.13): a master
`TCPStore` always listens on the dual-stack wildcard `[::]`, whatever `host_name` says, and no
flag or environment variable changes that. The only way to pin it is `master_listen_fd`: a
socket bound to one address and already listening. This hook replaces
`torch._C._distributed_c10d.TCPStore` by a subclass that creates such a socket on the address
that `host_name` resolves to, after checking that the address is allowed, and refuses wildcard
or disallowed hosts. It fails closed: a store it cannot pin is never started.

Semantics kept from torch: port 0 (the store reports the kernel-assigned port), multi-tenant
stores that share one server per port, torch's `DistNetworkError` text with `EADDRINUSE` on a
busy port (vLLM retries on that text), and client stores (`is_master=False`) are untouched.
Caller-supplied fds are checked (bound to an allowed address, TCP, listening), not trusted.
"""

from __future__ import annotations

import os
import sys

ENV_ALLOWED = "VSL_TCPSTORE_ALLOWED"
ENV_ALLOWED_FILE = "VSL_TCPSTORE_ALLOWED_FILE"
GUARD_ATTR = "__vsl_tcpstore_guard__"  # set on the guarded class; the self-test looks for it
SETTING_HINT = (
    f"the launcher's --internal-ip (vLLM's processes receive it in {ENV_ALLOWED})"
)

_TCPSTORE_PARAMS = (
    "host_name",
    "port",
    "world_size",
    "is_master",
    "timeout",
    "wait_for_workers",
    "multi_tenant",
    "master_listen_fd",
    "use_libuv",
)


class TCPStoreGuardError(RuntimeError):
    """A master TCPStore was refused because it could not be pinned to an allowed address."""


# ---------------------------------------------------------------------------------------------
# Allowed addresses


def canonical_ip(text: str) -> str | None:
    """The canonical text of a literal IPv4/IPv6 address (scope id dropped), or None."""
    import socket

    addr = text.strip()
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    addr = addr.split("%", 1)[0]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, addr))
        except (OSError, ValueError):
            continue
    return None


def is_wildcard(ip: str) -> bool:
    return ip in ("0.0.0.0", "::")


def parse_allowed(text: str) -> frozenset[str]:
    """Parse a comma/whitespace separated list of literal IPs. Raises ValueError on any entry
    that is not a literal address or is a wildcard: a wrong allowed set must never widen."""
    out: set[str] = set()
    for raw in text.replace(",", " ").split():
        ip = canonical_ip(raw)
        if ip is None:
            raise ValueError(f"{raw!r} is not a literal IP address")
        if is_wildcard(ip):
            raise ValueError(f"{raw!r} is a wildcard address; it would allow every interface")
        out.add(ip)
    if not out:
        raise ValueError("the list of allowed addresses is empty")
    return frozenset(out)


def allowed_from_environ(environ: dict[str, str] | None = None) -> frozenset[str] | None:
    """The allowed set from the environment; None when the guard is not switched on.

    Raises ValueError (with the variable named) when it is switched on but malformed."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_ALLOWED)
    path = env.get(ENV_ALLOWED_FILE)
    if text is None and path is None:
        return None
    if text is not None:
        try:
            return parse_allowed(text)
        except ValueError as exc:
            raise ValueError(f"{ENV_ALLOWED}={text!r}: {exc}") from None
    try:
        with open(path, encoding="utf-8") as fh:  # type: ignore[arg-type]
            content = fh.read()
    except OSError as exc:
        raise ValueError(f"{ENV_ALLOWED_FILE}={path!r} cannot be read: {exc}") from None
    lines = [ln.split("#", 1)[0] for ln in content.splitlines()]
    try:
        return parse_allowed(" ".join(lines))
    except ValueError as exc:
        raise ValueError(f"{ENV_ALLOWED_FILE}={path!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Sockets


def _refuse(what: str, fix: str) -> TCPStoreGuardError:
    return TCPStoreGuardError(
        f"vllm-secure-launch refused to start a torch TCPStore server: {what} A TCPStore is an "
        "unauthenticated key/value server (vLLM unpickles values read from it), so it may only "
        f"listen on an allowed internal address. Fix: {fix}"
    )


def _addr_in_use_error(ip: str, port: int, exc: OSError) -> Exception:
    """torch's own error type and wording for a busy port: vLLM retries only when the text
    contains EADDRINUSE (config/parallel.py stateless_init_dp_group)."""
    text = (
        "The server socket has failed to listen on any local network address. "
        f"port: {port}, useIpv6: {':' in ip}, code: -{exc.errno}, name: EADDRINUSE, "
        f"message: address already in use (Address already in use: {ip}:{port}; "
        "bound by the vllm-secure-launch TCPStore guard)"
    )
    try:
        import torch.distributed as dist

        return dist.DistNetworkError(text)
    except Exception:  # noqa: BLE001 - the text still carries EADDRINUSE
        return RuntimeError(text)


def resolve_master_address(host: str, port: int, allowed: frozenset[str]) -> tuple[int, str]:
    """Resolve `host` like torch's client will and return (family, ip) of the first resolved
    address that is allowed. Refuses wildcards and hosts that resolve only outside the set:
    binding another address instead would leave the store unable to reach itself."""
    import socket

    wildcard_fix = (
        "give vLLM the internal address (--master-addr / --data-parallel-address / "
        f"VLLM_HOST_IP) instead of a wildcard; the allowed set is {sorted(allowed)} "
        f"(from {SETTING_HINT})."
    )
    if not host or canonical_ip(host) in ("0.0.0.0", "::"):
        raise _refuse(
            f"its host {host!r} is a wildcard, which listens on every interface.", wildcard_fix
        )
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except OSError as exc:
        raise _refuse(
            f"its host {host!r} does not resolve ({exc}).",
            "use a literal internal IP address for the master address.",
        ) from None
    resolved: list[tuple[int, str]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = canonical_ip(str(sockaddr[0]))
        if ip is not None and (family, ip) not in resolved:
            resolved.append((family, ip))
    wild = [ip for _f, ip in resolved if is_wildcard(ip)]
    if wild:
        raise _refuse(
            f"its host {host!r} resolves to the wildcard {wild[0]}, which listens on every "
            "interface.",
            wildcard_fix,
        )
    for family, ip in resolved:  # type: ignore[assignment]
        if ip in allowed:
            return family, ip
    shown = ", ".join(ip for _f, ip in resolved) or "nothing"
    raise _refuse(
        f"its host {host!r} resolves to {shown}, which is not in the allowed set "
        f"{sorted(allowed)}.",
        "point vLLM's master address (--master-addr, --data-parallel-address, VLLM_HOST_IP) "
        f"at the internal address, or set {SETTING_HINT} to the address the store must use.",
    )


def bind_listener(family: int, ip: str, port: int):  # -> socket.socket
    """A TCP socket bound to exactly (ip, port) and listening. IPv6 sockets get IPV6_V6ONLY so
    an IPv6 bind never also answers for IPv4."""
    import errno
    import socket

    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # torch sets SO_REUSEADDR on its own listeners too (restarts within TIME_WAIT work).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((ip, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise _addr_in_use_error(ip, port, exc) from None
            raise _refuse(
                f"binding {ip}:{port} failed ({exc.strerror or exc}).",
                "check that the allowed address is configured on this host "
                f"({SETTING_HINT}).",
            ) from None
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock


def check_listen_fd(fd: int, allowed: frozenset[str]) -> tuple[str, int]:
    """Check a caller-supplied `master_listen_fd`: a TCP socket, listening, bound to an allowed
    address. Returns (ip, port). The fd is left open either way: torch (or the caller) owns it,
    and closing it here could close an unrelated descriptor later reusing the number."""
    import socket

    try:
        sock = socket.socket(fileno=int(fd))
    except (OSError, ValueError, TypeError) as exc:
        raise _refuse(
            f"the master_listen_fd {fd!r} is not a socket ({exc}).",
            "pass a TCP socket bound to the internal address and listening.",
        ) from None
    try:
        family, kind = sock.family, sock.type
        name = sock.getsockname()
        listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    finally:
        sock.detach()
    if family not in (socket.AF_INET, socket.AF_INET6) or kind != socket.SOCK_STREAM:
        raise _refuse(
            f"the master_listen_fd {fd} is not a TCP socket.",
            "pass a TCP socket bound to the internal address and listening.",
        )
    ip = canonical_ip(str(name[0])) or str(name[0])
    port = int(name[1])
    if ip not in allowed:
        raise _refuse(
            f"the caller-supplied master_listen_fd is bound to {ip}:{port}, which is "
            f"{'a wildcard' if is_wildcard(ip) else 'not an allowed address'} (allowed: "
            f"{sorted(allowed)}).",
            "bind the listening socket to the internal address (vLLM uses "
            f"--data-parallel-address for it), or change {SETTING_HINT}.",
        )
    if not listening:
        raise _refuse(
            f"the caller-supplied master_listen_fd ({ip}:{port}) is not listening.",
            "call listen() on the socket before passing it to TCPStore.",
        )
    return ip, port


def own_wildcard_listener(port: int) -> bool:
    """True when this process holds a wildcard TCP listener on `port` (from /proc)."""
    inodes: set[str] = set()
    try:
        for name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return False
    wild4, wild6 = "00000000", "0" * 32
    for table, wild in (("/proc/self/net/tcp", wild4), ("/proc/self/net/tcp6", wild6)):
        try:
            with open(table, encoding="ascii") as fh:
                next(fh, None)
                for line in fh:
                    f = line.split()
                    if len(f) < 10 or f[3] != "0A":  # 0A = LISTEN
                        continue
                    addr, _, hexport = f[1].partition(":")
                    if int(hexport, 16) == port and addr == wild and f[9] in inodes:
                        return True
        except OSError:
            continue
    return False


# ---------------------------------------------------------------------------------------------
# The guarded class


def _bind_args(args: tuple, kwargs: dict) -> dict:
    if len(args) > len(_TCPSTORE_PARAMS):
        raise TypeError(f"TCPStore() takes at most {len(_TCPSTORE_PARAMS)} positional arguments")
    bound = dict(zip(_TCPSTORE_PARAMS, args))
    for key, value in kwargs.items():
        if key in bound:
            raise TypeError(f"TCPStore() got multiple values for argument {key!r}")
        bound[key] = value
    return bound


def make_guarded_class(base: type, allowed: frozenset[str] | None, config_error: str | None):
    """Subclass of torch's pybind TCPStore that pins master stores. `config_error` set means
    the guard is switched on but its setting is broken: every master store is refused."""
    # Ports of multi-tenant master stores this process created: torch reuses its cached server
    # for a second multi-tenant store on the same port, which needs no new socket.
    mt_ports: dict[int, int] = {}

    def __init__(self, *args, **kwargs):  # noqa: N807 - replaces TCPStore.__init__
        bound = _bind_args(args, kwargs)
        if not bound.get("is_master", False):
            base.__init__(self, *args, **kwargs)  # clients only dial out
            return
        if config_error is not None or allowed is None:
            raise _refuse(
                f"the guard's setting is invalid ({config_error}).",
                f"fix {ENV_ALLOWED} (a comma-separated list of literal internal IPs); the "
                "launcher sets it from its internal address.",
            )
        fd = bound.get("master_listen_fd")
        if fd is not None:
            check_listen_fd(fd, allowed)
            base.__init__(self, *args, **kwargs)
            return
        host = str(bound.get("host_name", ""))
        port = int(bound.get("port", 0))
        family, ip = resolve_master_address(host, port, allowed)
        multi = bool(bound.get("multi_tenant", False))
        pid = os.getpid()
        try:
            sock = bind_listener(family, ip, port)
        except Exception as exc:
            if not (multi and port > 0 and mt_ports.get(port) == pid and "EADDRINUSE" in str(exc)):
                raise
            # Our own multi-tenant server still holds the port: torch reuses it, no new bind.
            base.__init__(self, **bound)
            if own_wildcard_listener(port):
                raise _refuse(
                    f"torch opened a wildcard listener on port {port} while reusing a "
                    "multi-tenant store.",
                    "report this as a bug of vllm-secure-launch.",
                ) from None
            return
        real_port = int(sock.getsockname()[1])
        listen_fd = sock.detach()  # torch owns and closes the fd from here on, also on failure
        call = dict(bound)
        # Pass the bound port, never 0: the legacy backend rejects port 0 with an fd.
        call["port"] = real_port
        call["master_listen_fd"] = listen_fd
        base.__init__(self, **call)
        if multi:
            mt_ports[real_port] = pid

    namespace = {
        "__init__": __init__,
        "__doc__": base.__doc__,
        "__module__": getattr(base, "__module__", "torch.distributed"),
        GUARD_ATTR: True,
        "__vsl_allowed__": allowed or frozenset(),
        "__vsl_config_error__": config_error,
        "__vsl_base__": base,
    }
    cls = type(base)(base.__name__, (base,), namespace)
    cls.__qualname__ = getattr(base, "__qualname__", base.__name__)
    return cls


# ---------------------------------------------------------------------------------------------
# Installation in the interpreter


def patch_loaded(allowed: frozenset[str] | None, config_error: str | None) -> bool:
    """Replace TCPStore in torch's c10d extension and every loaded torch.distributed module.
    Returns False when torch's c10d extension is not initialised yet (try again later)."""
    c10d = sys.modules.get("torch._C._distributed_c10d")
    if c10d is None:
        c10d = getattr(sys.modules.get("torch._C"), "_distributed_c10d", None)
    original = getattr(c10d, "TCPStore", None) if c10d is not None else None
    if original is None:
        return False
    if getattr(original, GUARD_ATTR, False):
        guarded = original
        original = getattr(guarded, "__vsl_base__", original)
    else:
        guarded = make_guarded_class(original, allowed, config_error)
        c10d.TCPStore = guarded  # type: ignore[union-attr]
    # Modules that already bound the name (torch.distributed binds it before its first
    # submodule import) get the guarded class too.
    for name, module in list(sys.modules.items()):
        if module is None or not (
            name == "torch.distributed" or name.startswith("torch.distributed.")
        ):
            continue
        try:
            if getattr(module, "TCPStore", None) is original:
                module.TCPStore = guarded  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a lazy module that refuses getattr has no binding
            continue
    return True


class _TorchDistributedFinder:
    """A meta-path finder that never finds anything: it only notices the first import of a
    `torch.distributed.*` submodule (torch.distributed/__init__ imports several right after it
    binds TCPStore, and before rendezvous.py or distributed_c10d.py bind the name) and swaps
    the class in then. Removes itself once done, so it costs nothing afterwards."""

    def __init__(self, allowed: frozenset[str] | None, config_error: str | None) -> None:
        self.allowed = allowed
        self.config_error = config_error

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - importlib protocol
        if fullname.startswith("torch.distributed.") and patch_loaded(
                self.allowed, self.config_error):
                try:
                    sys.meta_path.remove(self)
                except ValueError:
                    pass
        return None

    def invalidate_caches(self) -> None:
        return None


def install(environ: dict[str, str] | None = None) -> bool:
    """Switch the guard on for this interpreter when the environment asks for it.

    Returns True when the guard is (now or already) active. A malformed setting does not
    raise here (that would kill every Python process of the tree, most of which never start a
    store); instead every master store is refused with the reason."""
    try:
        allowed = allowed_from_environ(environ)
        config_error = None
    except ValueError as exc:
        allowed, config_error = None, str(exc)
        if not _switched_on(environ):
            return False
    if allowed is None and config_error is None:
        return False
    for finder in sys.meta_path:
        if isinstance(finder, _TorchDistributedFinder) or type(finder).__name__ == (
            "_TorchDistributedFinder"
        ):
            return True
    if patch_loaded(allowed, config_error):
        return True  # torch.distributed was already imported: patched in place
    sys.meta_path.insert(0, _TorchDistributedFinder(allowed, config_error))
    return True


def _switched_on(environ: dict[str, str] | None) -> bool:
    env = os.environ if environ is None else environ
    return ENV_ALLOWED in env or ENV_ALLOWED_FILE in env


def guard_state() -> dict:
    """What the self-test reports: is the TCPStore class torch uses the guarded one?"""
    state: dict = {"guarded": False}
    c10d = sys.modules.get("torch._C._distributed_c10d")
    dist = sys.modules.get("torch.distributed")
    rdzv = sys.modules.get("torch.distributed.rendezvous")
    cls = getattr(c10d, "TCPStore", None)
    state["guarded"] = bool(
        cls is not None
        and getattr(cls, GUARD_ATTR, False)
        and getattr(dist, "TCPStore", None) is cls
        and (rdzv is None or getattr(rdzv, "TCPStore", None) is cls)
    )
    state["allowed"] = sorted(getattr(cls, "__vsl_allowed__", ()) or ())
    state["config_error"] = getattr(cls, "__vsl_config_error__", None)
    return state
