"""The OS boundaries preflight touches, injectable so tests can point them at fakes.

Everything that reads the machine goes through a HostView: filesystem roots (/dev,
/usr/local/Ascend, /sys, /proc), the NVML module, the `npu-smi` executable (found on PATH, run
with a timeout) and the package-metadata search path. The defaults read the real machine.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from vllm_secure_launch.records import record


@record
class CommandResult:
    returncode: int | None  # None: timed out or could not be executed
    stdout: str
    stderr: str
    error: str | None = None  # why it did not run to completion


def import_pynvml() -> Any:
    """The official NVML binding (nvidia-ml-py installs the `pynvml` module).

    Imported here, lazily, so the launcher never loads it unless CUDA is checked.
    """
    import pynvml  # type: ignore[import-not-found]

    return pynvml


@record
class HostView:
    dev_root: str = "/dev"
    ascend_root: str = "/usr/local/Ascend"
    sys_root: str = "/sys"
    proc_root: str = "/proc"
    # Returns an object with nvidia-ml-py's function names (nvmlInit, nvmlDeviceGetCount, ...).
    nvml_loader: Callable[[], Any] = import_pynvml
    # PATH used to find npu-smi; None = the request's environ PATH, else os.defpath.
    path: str | None = None
    npu_smi_timeout: float = 10.0  # also each hccn_tool call
    # The NPU ports' addresses (address_N=/netmask_N=), read on multi-node Ascend layouts.
    hccn_conf: str = "/etc/hccn.conf"
    # Where engine dist-info/egg-info entries are searched; None = sys.path.
    dist_paths: Sequence[str] | None = None

    def dev(self, name: str) -> str:
        return os.path.join(self.dev_root, name)

    def list_dev(self) -> list[str]:
        try:
            return sorted(os.listdir(self.dev_root))
        except OSError:
            return []

    def ascend(self, *parts: str) -> str:
        return os.path.join(self.ascend_root, *parts)

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return None

    def which(self, name: str, environ_path: str | None) -> str | None:
        import shutil  # lazily: only the Ascend check looks up a tool

        search = self.path if self.path is not None else (environ_path or os.defpath)
        return shutil.which(name, path=search)

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """Run a read-only query tool; never raises.

        A fixed argv (no shell), a timeout because a wedged driver makes npu-smi hang, and
        stdin closed so the tool can never wait for input.
        """
        import subprocess  # lazily: the CPU and CUDA paths never run a tool

        try:
            proc = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=timeout,
                stdin=subprocess.DEVNULL, check=False, errors="replace",
            )
        except subprocess.TimeoutExpired as exc:
            return CommandResult(None, _text(exc.stdout), _text(exc.stderr),
                                 f"timed out after {timeout:g} s")
        except OSError as exc:
            return CommandResult(None, "", "", f"could not be executed: {exc.strerror or exc}")
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
