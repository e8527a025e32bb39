"""Address classes and the resolution of the one internal setting."""

from __future__ import annotations

import pytest

from vllm_secure_launch.addresses import IfAddr, ResolveError, classify, resolve_internal

IF = {"lo": (IfAddr("127.0.0.1", 8),), "eth1": (IfAddr("10.0.0.5", 24),),
      "eth2": (IfAddr("10.1.0.5", 24),), "v6": (IfAddr("fe80::1", 64), IfAddr("fd00::5", 64))}


@pytest.mark.parametrize("addr,cls", [
    ("0.0.0.0", "wildcard"), ("::", "wildcard"), ("", "wildcard"), ("[::]", "wildcard"),
    ("127.0.0.1", "loopback"), ("127.5.0.1", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("172.31.255.1", "private"),
    ("192.168.1.1", "private"), ("100.64.0.1", "private"), ("fd00::1", "private"),
    ("172.32.0.1", "public"), ("8.8.8.8", "public"), ("192.0.2.2", "public"),
    ("2001:db8::1", "public"), ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("::ffff:10.0.0.1", "private"), ("::ffff:0.0.0.0", "wildcard"), ("example.com", "hostname"),
    ("224.0.0.1", "multicast"),
])
def test_classify(addr, cls):
    assert classify(addr) == cls


def test_resolve_by_iface_cidr_ip_and_default():
    assert resolve_internal("eth1", "", "", IF).ip == "10.0.0.5"
    assert resolve_internal("", "10.1.0.0/16", "", IF).iface == "eth2"
    n = resolve_internal("", "", "10.0.0.5", IF)
    assert (n.iface, n.network) == ("eth1", "10.0.0.0/24")
    assert n.contains("10.0.0.77") and not n.contains("10.1.0.5")
    assert resolve_internal("", "", "", IF).how == "loopback-default"
    assert resolve_internal("v6", "", "", IF).ip == "fd00::5"  # link-local skipped


@pytest.mark.parametrize("iface,cidr,ip,needle", [
    ("nope", "", "", "does not exist"), ("", "10.0.0.0/8", "", "several"),
    ("", "192.168.0.0/16", "", "no local address"), ("", "bad", "", "not a CIDR"),
    ("", "", "10.9.9.9", "not an address of this host"), ("", "", "x", "not an IP"),
    ("eth1", "", "10.0.0.5", "both set"),
])
def test_resolve_errors(iface, cidr, ip, needle):
    with pytest.raises(ResolveError, match=needle):
        resolve_internal(iface, cidr, ip, IF)


@pytest.mark.parametrize("mask,family,want", [
    ("255.255.255.0", 2, 24), ("255.255.255.255", 2, 32), (None, 2, 32),
    ("ffff:ffff:ffff:ffff::", 10, 64), ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 10, 128),
    ("ffff:ff00::", 10, 24), ("::", 10, 0), (None, 10, 128),
])
def test_psutil_netmasks_become_prefixes_for_both_families(mask, family, want):
    """psutil spells IPv6 netmasks as addresses; they used to be dropped, so every IPv6 address
    of the host was unknown and `--host ::1` was refused (issue 10)."""
    from vllm_secure_launch.host.facts import _prefixlen

    assert _prefixlen(mask, family) == want


def test_a_netmask_with_a_hole_is_not_a_prefix():
    from vllm_secure_launch.host.facts import _prefixlen

    with pytest.raises(ValueError):
        _prefixlen("ffff:0:ffff::", 10)


def test_host_ipv6_loopback_is_read():
    from vllm_secure_launch.host.facts import interfaces

    assert any(a.ip == "::1" and a.prefixlen == 128 for a in interfaces().get("lo", ()))
