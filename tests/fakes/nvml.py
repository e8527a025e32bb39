"""An NVML-like object with nvidia-ml-py's function names, for tests on machines without a GPU.

Only the calls preflight makes exist. Values follow nvidia-ml-py 13 return shapes: strings for
UUID/name/driver, an int for the CUDA driver version (12040 = 12.4), objects with .total/.free/
.used for memory, (major, minor) for capability, a 4-tuple for remapped rows, objects with
.pid/.usedGpuMemory for processes. A per-GPU `unsupported` set makes a call raise
NVML_ERROR_NOT_SUPPORTED, `failing` raises another NVML error (GPU lost).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

GIB = 1024**3

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_COMPUTEMODE_DEFAULT = 0
NVML_COMPUTEMODE_PROHIBITED = 2

_TEXT = {
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(_TEXT.get(value, f"NVML error {value}"))
        self.value = value


@dataclass
class FakeMig:
    uuid: str
    total: int = 10 * GIB
    free: int = 10 * GIB


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    bus_id: str = "00000000:18:00.0"
    minor: int = 0
    total: int = 80 * GIB
    free: int = 79 * GIB
    cc: tuple[int, int] = (9, 0)
    ecc_uncorrected: int = 0
    retired_pending: int = 0
    remap: tuple[int, int, int, int] = (0, 0, 0, 0)
    mig_mode: int = 0
    migs: list[FakeMig] = field(default_factory=list)
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)
    compute_mode: int = NVML_COMPUTEMODE_DEFAULT
    unsupported: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)


class FakeNVML:
    NVMLError = NVMLError
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    NVML_VOLATILE_ECC = NVML_VOLATILE_ECC
    NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE
    NVML_COMPUTEMODE_PROHIBITED = NVML_COMPUTEMODE_PROHIBITED

    def __init__(self, gpus: list[FakeGpu], *, init_error: int | None = None,
                 driver: str = "580.95.05", cuda: int = 13000,
                 process_names: dict[int, str] | None = None):
        self.gpus = gpus
        self.init_error = init_error
        self.driver = driver
        self.cuda = cuda
        self.process_names = process_names or {}
        self.initialised = False
        self.shutdown_calls = 0

    # -- helpers ---------------------------------------------------------------------------
    def _gpu(self, handle: Any, call: str) -> FakeGpu:
        gpu = handle.gpu
        if call in gpu.unsupported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if call in gpu.failing:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return gpu

    # -- NVML API --------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        if pid not in self.process_names:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return self.process_names[pid]

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:
        return SimpleNamespace(gpu=self.gpus[i], mig=None)

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return h.mig.uuid if h.mig is not None else h.gpu.uuid

    def nvmlDeviceGetName(self, h: Any) -> str:
        return h.gpu.name

    def nvmlDeviceGetPciInfo(self, h: Any) -> Any:
        return SimpleNamespace(busId=h.gpu.bus_id.encode())  # bytes, as older bindings return

    def nvmlDeviceGetMinorNumber(self, h: Any) -> int:
        return h.gpu.minor

    def nvmlDeviceGetMigMode(self, h: Any) -> tuple[int, int]:
        gpu = self._gpu(h, "nvmlDeviceGetMigMode")
        return (gpu.mig_mode, gpu.mig_mode)

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:
        return 7 if h.gpu.mig_mode else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, i: int) -> Any:
        if i >= len(h.gpu.migs):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return SimpleNamespace(gpu=h.gpu, mig=h.gpu.migs[i])

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> Any:
        gpu = self._gpu(h, "nvmlDeviceGetMemoryInfo")
        src = h.mig if h.mig is not None else gpu
        return SimpleNamespace(total=src.total, free=src.free, used=src.total - src.free)

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in h.gpu.processes]

    def nvmlDeviceGetTotalEccErrors(self, h: Any, error_type: int, counter: int) -> int:
        gpu = self._gpu(h, "nvmlDeviceGetTotalEccErrors")
        assert (error_type, counter) == (NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC)
        return gpu.ecc_uncorrected

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h: Any) -> int:
        return self._gpu(h, "nvmlDeviceGetRetiredPagesPendingStatus").retired_pending

    def nvmlDeviceGetRemappedRows(self, h: Any) -> tuple[int, int, int, int]:
        return self._gpu(h, "nvmlDeviceGetRemappedRows").remap

    def nvmlDeviceGetCudaComputeCapability(self, h: Any) -> tuple[int, int]:
        return self._gpu(h, "nvmlDeviceGetCudaComputeCapability").cc

    def nvmlDeviceGetComputeMode(self, h: Any) -> int:
        return self._gpu(h, "nvmlDeviceGetComputeMode").compute_mode


def h100s(n: int) -> list[FakeGpu]:
    """n idle H100s with distinct UUIDs, PCI bus IDs and minor numbers."""
    return [FakeGpu(uuid=f"GPU-{i:x}{i:x}a1b2c3-0000-1111-2222-33334444555{i}",
                    bus_id=f"00000000:{0x18 + 0x10 * i:02X}:00.0", minor=i) for i in range(n)]
