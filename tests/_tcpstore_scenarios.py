"""Scenario runner for the TCPStore guard tests (run as a script by the target interpreter).

    python _tcpstore_scenarios.py START_METHOD BACKEND HOST BASE_PORT [--no-refusals]

START_METHOD: spawn | fork. BACKEND: libuv | legacy. Starts two rank processes with the given
start method; they run, in order: a master store on a fixed port with a client in the other
rank; a port-0 master store; rendezvous(); a StatelessProcessGroup-style store with an explicit
pre-bound fd; init_process_group("gloo", "tcp://...") with 1 rank and then with 2 ranks
(all_reduce), and report every TCP listener of their own process while all of that is alive.
Rank 0 also records whether wildcard / disallowed hosts and a wildcard fd are refused.
Prints one JSON line: {"parent": {...}, "ranks": [{...}, {...}]}. With VSLTS_HOLD_DIR set, each
rank writes its listeners to rankN.json there and keeps them open until `release` appears.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
from datetime import timedelta


def listeners() -> list[list]:
    import psutil

    out = []
    for c in psutil.Process().net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN:
            out.append([c.laddr.ip, c.laddr.port])
    return sorted(out)


def _hold(directory: str, rank: int, current: list) -> None:
    """Publish this rank's listeners and keep everything open until the test has probed them
    from outside (it creates the file `release`)."""
    import time

    tmp = os.path.join(directory, f".rank{rank}.json")
    with open(tmp, "w") as fh:
        json.dump(current, fh)
    os.replace(tmp, os.path.join(directory, f"rank{rank}.json"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not os.path.exists(os.path.join(directory, "release")):
        time.sleep(0.1)


def _refused(fn) -> str:
    try:
        obj = fn()
    except Exception as exc:  # noqa: BLE001 - we report what was raised
        return f"{type(exc).__name__}: {exc}"
    del obj
    return "NOT REFUSED"


def rank_main(rank: int, method: str, backend: str, host: str, base: int, refusals: bool, q):
    res: dict = {"rank": rank}
    keep: list = []
    try:
        if backend == "legacy":
            os.environ["USE_LIBUV"] = "0"  # what the tcp:// rendezvous reads
        lib = backend == "libuv"
        import torch
        import torch.distributed as dist

        res["guarded"] = bool(getattr(dist.TCPStore, "__vsl_tcpstore_guard__", False))
        t = timedelta(seconds=60)
        # 1. master store on a fixed port, the other rank is its client.
        if rank == 0:
            s = dist.TCPStore(host, base, 2, True, timeout=t, use_libuv=lib)
            s.set("from0", "hello")
            res["store_libuv"] = bool(s.libuvBackend)
            keep.append(s)
            res["store_client_value"] = s.get("from1").decode()
        else:
            c = dist.TCPStore(host, base, 2, False, timeout=t, use_libuv=lib)
            c.set("from1", "world")
            res["store_client_value"] = c.get("from0").decode()
            keep.append(c)
        if rank == 0:
            # 2. port 0: the store reports the kernel-assigned port and answers on it.
            s0 = dist.TCPStore(host, 0, 1, True, wait_for_workers=False, timeout=t, use_libuv=lib)
            c0 = dist.TCPStore(host, s0.port, 1, False, timeout=t, use_libuv=lib)
            c0.set("k", "v")
            res["port0"] = [s0.port, s0.get("k").decode()]
            keep += [s0, c0]
            # 3. rendezvous()
            store, r, ws = next(
                dist.rendezvous(f"tcp://{host}:{base + 1}?rank=0&world_size=1", timeout=t)
            )
            store.set("rdzv", "ok")
            res["rendezvous"] = store.get("rdzv").decode()
            keep.append(store)
            # 4. StatelessProcessGroup style: the caller pre-binds its own fd.
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            ls = socket.socket(fam, socket.SOCK_STREAM)
            ls.bind((host, 0))
            ls.listen()
            port = ls.getsockname()[1]
            fd = ls.detach()
            sf = dist.TCPStore(host, port, 1, True, wait_for_workers=False, timeout=t,
                               master_listen_fd=fd, use_libuv=lib)
            sf.set("fd", "ok")
            res["explicit_fd"] = [sf.port == port, sf.get("fd").decode()]
            keep.append(sf)
            if refusals:
                res["refuse_wildcard4"] = _refused(lambda: dist.TCPStore(
                    "0.0.0.0", 0, 1, True, wait_for_workers=False, use_libuv=lib))
                res["refuse_wildcard6"] = _refused(lambda: dist.TCPStore(
                    "::", 0, 1, True, wait_for_workers=False, use_libuv=lib))
                res["refuse_other"] = _refused(lambda: dist.TCPStore(
                    "127.0.0.9", 0, 1, True, wait_for_workers=False, use_libuv=lib))
                res["refuse_rendezvous"] = _refused(lambda: next(dist.rendezvous(
                    f"tcp://0.0.0.0:{base + 2}?rank=0&world_size=1", timeout=t)))
                w = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                w.bind(("0.0.0.0", 0))
                w.listen()
                wport = w.getsockname()[1]
                res["refuse_wildcard_fd"] = _refused(lambda: dist.TCPStore(
                    host, wport, 1, True, wait_for_workers=False, master_listen_fd=w.fileno(),
                    use_libuv=lib))
                w.close()
                busy = _refused(lambda: dist.TCPStore(
                    host, base, 1, True, wait_for_workers=False, use_libuv=lib))
                res["busy_port"] = busy
            # 5. init_process_group with one rank, then destroyed.
            dist.init_process_group("gloo", init_method=f"tcp://{host}:{base + 3}", rank=0,
                                    world_size=1, timeout=t)
            x = torch.ones(2)
            dist.all_reduce(x)
            res["pg1"] = x.tolist()
            res["listeners_pg1"] = listeners()
            dist.destroy_process_group()
        # 6. init_process_group with two ranks.
        dist.init_process_group("gloo", init_method=f"tcp://{host}:{base + 4}", rank=rank,
                                world_size=2, timeout=t)
        x = torch.ones(2) * (rank + 1)
        dist.all_reduce(x)
        res["pg2"] = x.tolist()
        res["listeners"] = listeners()
        hold = os.environ.get("VSLTS_HOLD_DIR")
        if hold:
            _hold(hold, rank, res["listeners"])
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - report everything to the test
        res["error"] = traceback.format_exc()[-3000:]
    q.put(res)


def main() -> int:
    method, backend, host, base = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    refusals = "--no-refusals" not in sys.argv
    import multiprocessing as mp

    parent: dict = {}
    if method == "fork":
        # The parent imports torch first: forked ranks must inherit the patched class.
        import torch.distributed as dist

        parent["guarded"] = bool(getattr(dist.TCPStore, "__vsl_tcpstore_guard__", False))
    ctx = mp.get_context(method)
    q = ctx.Queue()
    procs = [ctx.Process(target=rank_main, args=(r, method, backend, host, base, refusals, q))
             for r in range(2)]
    for p in procs:
        p.start()
    ranks = []
    for _ in procs:
        try:
            ranks.append(q.get(timeout=240))
        except Exception:  # noqa: BLE001
            ranks.append({"error": "rank did not report in time"})
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()
    ranks.sort(key=lambda r: r.get("rank", 99))
    print(json.dumps({"parent": parent, "ranks": ranks}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
