"""Load an nftables table through libnftables and keep it alive. Standard library only.

The keeper (supervise/keeper.py, run with -I -S) loads this file by path. Why libnftables
and not the `nft` program: a table with `flags owner` lives exactly as long as the netlink
socket that created it; `nft` closes its socket when it exits, libnftables keeps it open in
the context until nft_ctx_free (or the process's death, SIGKILL included). So the table is
tied to the keeper, which itself never outlives vLLM's tree nor the launcher.
"""

from __future__ import annotations

import ctypes
import fcntl
import os

NFT_CTX_DEFAULT = 0


class NftError(Exception):
    """libnftables refused the ruleset (its error text) or is missing."""


def library() -> ctypes.CDLL:
    # The soname first: find_library runs ldconfig/gcc and costs tens of milliseconds.
    try:
        lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
    except OSError:
        from ctypes.util import find_library  # slow (subprocess): only as the fallback

        try:
            lib = ctypes.CDLL(find_library("nftables") or "libnftables.so",
                              use_errno=True)
        except OSError:
            raise NftError("libnftables is not installed (Debian/Ubuntu: apt-get install "
                           "nftables; RHEL: dnf install nftables)") from None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    return lib


def _fds() -> set[tuple[int, str]]:
    """(fd, what it points to): by target, because listing /proc/self/fd itself briefly takes
    the lowest free number, which the netlink socket may take next."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            out.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
        except (OSError, ValueError):
            continue  # the listing's own descriptor, already closed
    return out


def _cloexec(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
    except OSError:
        pass  # the listing's own descriptor, already closed


class Table:
    """One loaded table; close() (or the process's exit) deletes it."""

    def __init__(self, ruleset: str, dry_run: bool = False) -> None:
        self._lib = library()
        before = _fds()
        self._ctx = self._lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not self._ctx:
            raise NftError("libnftables could not create a context")
        self._lib.nft_ctx_buffer_error(self._ctx)
        self._lib.nft_ctx_buffer_output(self._ctx)
        if dry_run:  # parse and check against the kernel's view, change nothing
            self._lib.nft_ctx_set_dry_run(self._ctx, True)
        failed = self._lib.nft_run_cmd_from_buffer(self._ctx, ruleset.encode()) != 0
        # The owner socket (libnftables opens it lazily, in the first command) must not leak
        # into vLLM: whoever holds it may delete the table. exec closes it in the child.
        for fd, _target in _fds() - before:
            _cloexec(fd)
        if failed:
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
            self.close()
            raise NftError(err.strip().splitlines()[0] if err.strip() else "unknown error")

    def close(self) -> None:
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)  # closes the socket: the kernel drops the table
            self._ctx = None

