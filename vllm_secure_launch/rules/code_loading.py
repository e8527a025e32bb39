"""Every place where a user-supplied string reaches code loading or deserialisation in vLLM, and
how the launcher judges it: the one table of the code-loading inventory.

The entries are those of surface-data/code-loading.json (curated from vLLM's source and resolved
to file:line in every known version by scripts/surface/gen-vllm-surface code-loading; the grep of
every import/pickle site in each version is its checklist). tests/test_code_loading_inventory.py
holds this table to that file: the same entries, a site in every known vLLM version, rule IDs
that exist, and for each entry a flag or variable can reach, the rule firing on it. A new vLLM
version's data with a new entry fails that test until the entry is judged here.

Each value is the rule IDs that refuse (or pin) the path, or, where no rule is needed, why.
"""

from __future__ import annotations

from typing import Mapping

# A value that is a string says why no launcher rule is needed.
JUDGED: Mapping[str, tuple[str, ...] | str] = {
    "middleware": ("VSL206",),
    "tool-parser-plugin": ("VSL221",),
    "reasoning-parser-plugin": ("VSL221",),
    "worker-cls": ("VSL221",),
    "worker-extension-cls": ("VSL221",),
    "distributed-executor-backend": ("VSL221",),
    "scheduler-cls": ("VSL221",),
    "logits-processors": ("VSL221",),
    "kv-connector-module-path": ("VSL221",),
    "ec-connector-module-path": ("VSL221",),
    "kv-offload-spec-module-path": ("VSL221",),
    "kv-offload-cache-policy-module-path": ("VSL221",),
    "kv-offload-tier-module-path": ("VSL221",),
    "kv-offload-backpressure-cls": ("VSL221",),
    "kvcr-policy": ("VSL221",),
    "ec-manager-cls": ("VSL221",),
    "speculative-custom-class": ("VSL221",),
    "compilation-backend": ("VSL221",),
    "inductor-passes": ("VSL221",),
    "model-class-overrides": ("VSL221",),
    "logging-dictconfig": ("VSL218", "VSL410"),
    "entry-point-plugins": ("VSL407",),
    "rust-frontend-binary": ("VSL406",),
    "io-processor-plugin": ("VSL221",),
    "trust-remote-code": ("VSL220",),
    "pooler-activation": "vLLM resolves the name only among torch.nn activation classes "
                         "(restricted import), never an arbitrary module",
    "insecure-serialization": ("VSL403",),
    # Reached only over the dev-mode RL routes (refused: VSL401; denied by the gate) and only
    # with pickle serialization switched on (VSL403).
    "update-weights-ipc-handles-pickled": ("VSL401", "VSL403"),
    "collective-rpc-cloudpickle": ("VSL401",),
    # Peers of a multi-node run: internal network required and pinned, audit of listeners.
    "message-queue-pickle": ("VSL112", "VSL110", "VSL601"),
    # The TCPStore guard pins the store to the plan's peers; VLLM_DP_MASTER_* are scrubbed.
    "tcpstore-pickle": ("VSL352", "VSL353", "VSL414"),
    "group-coordinator-recv-object": ("VSL112", "VSL601"),
    "mm-shm-object-storage": "shared memory created by vLLM's own processes with the service "
                             "user's mode (0600); reaching it needs that user's rights",
    "cpu-shm-communicator": "shared memory between vLLM's own CPU workers, created 0600 by the "
                            "service user",
    "weight-cache-ipc-pickle": "vLLM checks the socket directory is the service user's own "
                               "and mode 0700 before it connects (weight_cache/protocol.py)",
    # The planner gives inductor/outlines caches a private directory; a world-writable one
    # is refused.
    "compile-cache-pickle": ("VSL416",),
    "torch-load-lora": ("VSL404",),
    "torch-load-model-weights": "torch.load with weights_only=True on the operator's own model "
                                "files (the advisory gate covers torch versions whose "
                                "weights_only can be bypassed)",
    "torch-load-request-embeds": ("VSL226",),
}


def rule_ids() -> frozenset[str]:
    return frozenset(r for v in JUDGED.values() if not isinstance(v, str) for r in v)
