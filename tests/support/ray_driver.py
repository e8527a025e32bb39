"""A Ray driver for tests/test_ray_start_netns.py (runs with real Ray, and torch for `gloo`).

    ray_driver.py ADDRESS nodes   one task pinned to each alive node -> JSON {ok, nodes, ips}
    ray_driver.py ADDRESS gloo IP PORT
                                  two tasks (one per node) form a torch.distributed gloo group
                                  through a TCPStore on IP:PORT (the head's internal address)
                                  and all_reduce; each also tries a wildcard TCPStore, which
                                  the launcher's TCPStore guard (inherited env) must refuse.
Prints one line `RESULT <json>`; a failed ray.init prints `RESULT {"ok": false, ...}`."""

import json
import os
import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


def emit(doc):
    print("RESULT " + json.dumps(doc), flush=True)


def on_each_node(fn, *args):
    nodes = sorted((n for n in ray.nodes() if n["Alive"]), key=lambda n: n["NodeManagerAddress"])
    refs = [fn.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(i, len(nodes), *args) for i, n in enumerate(nodes)]
    return ray.get(refs, timeout=240)


@ray.remote(num_cpus=1)
def where(rank, world):
    return {"ip": ray.util.get_node_ip_address(), "pid": os.getpid()}


@ray.remote(num_cpus=1)
def gloo(rank, world, ip, port):
    import datetime

    import torch
    import torch.distributed as dist

    out = {"ip": ray.util.get_node_ip_address(), "allowed": os.environ.get("VSL_TCPSTORE_ALLOWED")}
    try:  # the guard refuses a wildcard store before it binds anything
        dist.TCPStore("0.0.0.0", int(port) + 1, world_size=1, is_master=True,
                      timeout=datetime.timedelta(seconds=5), wait_for_workers=False)
        out["wildcard"] = "bound"
    except Exception as exc:  # noqa: BLE001 - what matters is that it did not bind
        out["wildcard"] = f"refused: {type(exc).__name__}: {str(exc)[:160]}"
    dist.init_process_group("gloo", init_method=f"tcp://{ip}:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    dist.destroy_process_group()
    out["sum"] = float(t.item())
    return out


def main():
    address, mode = sys.argv[1], sys.argv[2]
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001
        emit({"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
        return 3
    if mode == "nodes":
        res = on_each_node(where)
    else:
        res = on_each_node(gloo, sys.argv[3], sys.argv[4])
    emit({"ok": True, "nodes": len(res), "results": res})
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
