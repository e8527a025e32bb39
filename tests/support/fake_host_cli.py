"""Run the real CLI with preflight's machine boundary pointed at fakes (no GPU/NPU here).

Narrow fake at the boundary only: `VSL_TEST_HOSTVIEW` holds HostView keyword arguments as JSON
(fake /dev, /usr/local/Ascend, metadata dirs, npu-smi timeout) and `VSL_TEST_FAKE_GPUS` a number
of fake H100s served by tests/fakes/nvml.FakeNVML. Everything else — planning, preflight's
judgement, amendment, the supervisor — is the real code path of `vllm-secure-launch`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    from vllm_secure_launch.host import view

    kwargs = json.loads(os.environ.pop("VSL_TEST_HOSTVIEW", "{}"))
    gpus = int(os.environ.pop("VSL_TEST_FAKE_GPUS", "0"))
    if gpus:
        from tests.fakes.nvml import FakeNVML, h100s

        fake = FakeNVML(h100s(gpus))
        kwargs["nvml_loader"] = lambda: fake
    view.HostView = functools.partial(view.HostView, **kwargs)  # type: ignore[misc]
    from vllm_secure_launch.cli.main import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
