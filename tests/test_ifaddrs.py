"""host/ifaddrs.py reads this host's interface addresses from rtnetlink exactly as
psutil.net_if_addrs (getifaddrs) reports them, so that the planning path need not import psutil
(issue 9). Compared on this host, and in a network namespace holding the cases that differ
between the two families: labelled IPv4 aliases, secondary addresses, a point-to-point peer,
IPv6, a link without addresses, and enough addresses to span several netlink reads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from vllm_secure_launch.host import facts

COMPARE = ("from vllm_secure_launch.host import facts\n"
           "a, b = facts.interfaces(), facts._psutil_interfaces()\n"
           "assert a == b, (a, b)\n"
           "print(sum(len(v) for v in a.values()))\n")


def test_netlink_equals_psutil_on_this_host() -> None:
    assert facts.interfaces() == facts._psutil_interfaces()


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                    reason="needs root and iproute2 for a network namespace")
def test_netlink_equals_psutil_in_a_namespace_with_aliases_and_many_addresses() -> None:
    ns = f"vsl-perf-ifaddrs-{os.getpid()}"
    ip = ["ip", "-n", ns]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run([*ip, "link", "add", "d0", "type", "veth", "peer", "name", "d1"],
                       check=True)
        subprocess.run([*ip, "link", "set", "d0", "up"], check=True)
        cmds = [["10.1.0.1/24", "dev", "d0"], ["10.1.0.2/24", "dev", "d0", "label", "d0:al"],
                ["10.9.0.1", "peer", "10.9.0.2/32", "dev", "d0"],
                ["fd00:1::1/64", "dev", "d0"], ["fd00:2::1/48", "dev", "d0"]]
        cmds += [[f"10.2.{i // 250}.{i % 250 + 1}/16", "dev", "d0"] for i in range(400)]
        batch = "".join("address add " + " ".join(c) + "\n" for c in cmds)
        subprocess.run([*ip, "-batch", "-"], input=batch, text=True, check=True)
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", COMPARE],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert r.returncode == 0, r.stderr[-3000:]
        assert int(r.stdout) >= 405
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
