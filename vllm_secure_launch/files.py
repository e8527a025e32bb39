"""Reading and writing the launcher's own files safely. Standard library only.

* `read_bounded`: every input file (policy, --config, key files) is opened here. Only a regular
  file is read, checked with lstat-free `os.open(O_NONBLOCK)` + `fstat` so a FIFO or device can
  neither block nor stream forever; the size is capped; the text must be UTF-8.
* `write_atomic`: the report and similar outputs are written to a fresh, unpredictable
  temporary name in the target's directory (O_EXCL, mode 0600) and renamed over the target, so
  a planted symlink at a predictable name is never followed.
"""

from __future__ import annotations

import os
import stat

MAX_INPUT_BYTES = 4 * 1024 * 1024


class FileProblem(Exception):
    """Why a file cannot be used; `what` is a short phrase, `fix` a hint."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix


def read_bounded(path: str, *, limit: int = MAX_INPUT_BYTES, binary: bool = False) -> str | bytes:
    """The content of a regular file of at most `limit` bytes (text: UTF-8 decoded)."""
    if "\0" in path:
        raise FileProblem("the path contains a NUL byte", "give a plain file path")
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise FileProblem(f"cannot open it ({exc.strerror})",
                          "check the path and that the launcher's user may read it") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO"
                    if stat.S_ISFIFO(st.st_mode) else "a device" if
                    stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise FileProblem(f"it is {kind}, not a regular file", "point it at a regular file")
        if st.st_size > limit:
            raise FileProblem(f"it is {st.st_size} bytes, more than the {limit} allowed",
                              "use a smaller file")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise FileProblem(f"it holds more than the {limit} bytes allowed",
                                  "use a smaller file")
            chunks.append(chunk)
    except OSError as exc:
        raise FileProblem(f"cannot read it ({exc.strerror})", "check the file") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if binary:
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"it is not UTF-8 text (byte {exc.start})",
                          "save it as UTF-8") from None


def read_text(path: str, *, limit: int = MAX_INPUT_BYTES) -> str:
    text = read_bounded(path, limit=limit)
    assert isinstance(text, str)  # noqa: S101 - binary=False above; for the type checker
    return text


def write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    """Write `text` to `path` through a fresh temporary file in the same directory.

    Raises OSError (with strerror) when the directory is not writable or the disk is full; the
    temporary file is removed then, and the target is left as it was."""
    directory = os.path.dirname(os.path.abspath(path))
    import tempfile  # only writers need it; not imported at every start

    fd, tmp = tempfile.mkstemp(prefix=".vsl-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        # rename(2) replaces a symlink at `path` itself; it never writes through it.
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
