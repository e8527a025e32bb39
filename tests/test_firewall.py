"""The firewall's pure parts and its refusals: ruleset text, cgroup v2 discovery in both
layouts, mode decisions (auto warns, enforce refuses), the keeper failing closed, and the
dry run showing the exact table. Kernel behaviour is in test_firewall_netns.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from vllm_secure_launch.config.policy import Policy, resolve
from vllm_secure_launch.errors import PolicyFileError
from vllm_secure_launch.firewall import cgroup as cg
from vllm_secure_launch.firewall import enforce
from vllm_secure_launch.firewall.spec import Spec, ruleset, split_families
from vllm_secure_launch.plan.model import ApiEndpoint, ExpectedListeners, Plan
from vllm_secure_launch.supervise import keeper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "abcdefabcdefabcdefabcdef12345678"


def plan(host: str = "127.0.0.1", port: int | None = 8000, **facts) -> Plan:
    api = ApiEndpoint(host, port)
    return Plan(decision="start", argv=("vllm", "serve"), env={}, env_set={}, env_removed=(),
                secret_env=frozenset(), api=api,
                expected=ExpectedListeners(api, ("10.1.0.5",)), findings=(),
                facts={"internal_network": "10.1.0.0/24", **facts})


SPEC = Spec("vsl_1", "unified/vsl-1", 1, 8000, (), ("10.1.0.0/24", "10.1.0.5/32"))


def test_ruleset_is_deterministic_owned_and_matches_the_cgroup():
    text = ruleset(SPEC)
    assert text == ruleset(SPEC)
    assert "\tflags owner\n" in text
    assert text.count('socket cgroupv2 level 1 "unified/vsl-1"') == 2  # input and output
    assert "meta l4proto tcp th dport 8000 accept" in text
    assert "elements = { 10.1.0.0/24 }" in text  # the /32 inside the /24 is merged
    # metadata refused before anything is accepted on the way out
    out = text[text.index("chain tree_out"):]
    assert out.index("@metadata4 reject") < out.index("accept")
    assert "\t\tdrop\n" in text  # ingress default for the tree


def test_strict_mode_ends_egress_with_a_reject_and_api_sources_narrow_the_port():
    text = ruleset(Spec("t", "x", 1, 80, ("192.0.2.0/24",), (), True, ("198.51.100.7",)))
    out = text[text.index("chain tree_out"):]
    assert "ip daddr @egress4 accept" in out
    assert out.rstrip().endswith("reject with icmpx admin-prohibited\n\t}\n}")
    assert "th dport 80 ip saddr @api4 accept" in text


def test_split_families_merges_and_sorts():
    assert split_families(["10.0.0.5", "10.0.0.0/8", "::1", "192.0.2.1/32"]) == (
        ["10.0.0.0/8", "192.0.2.1/32"], ["::1/128"])


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or cg.cgroup2_mount() is None,
                    reason="needs root, nft and a cgroup v2 mount")
def test_ruleset_passes_nft_check(tmp_path):
    where = cg.locate(f"vsl-test{os.getpid()}")
    cg.create(where)
    try:
        path = tmp_path / "t.nft"
        path.write_text(ruleset(Spec("vsl_t", where.nft_path, where.level, 8000, (),
                                     ("10.0.0.0/8",), True, ("1.1.1.1",))))
        r = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    finally:
        cg.remove(where.path)


MOUNTINFO = "{id} 1 0:{id} / {point} rw,relatime - {fs} {fs} rw\n"


@pytest.mark.parametrize("mounts,expected", [
    ([("/sys/fs/cgroup", "cgroup2")], "/sys/fs/cgroup"),  # unified layout
    ([("/sys/fs/cgroup", "tmpfs"), ("/sys/fs/cgroup/cpu", "cgroup"),
      ("/sys/fs/cgroup/unified", "cgroup2")], "/sys/fs/cgroup/unified"),  # hybrid
    ([("/sys/fs/cgroup/cpu", "cgroup")], None),  # v1 only
    ([("/mnt/cg2", "cgroup2")], None),  # nft cannot name a path outside /sys/fs/cgroup
])
def test_cgroup2_mount_in_each_layout(tmp_path, mounts, expected):
    info = tmp_path / "mountinfo"
    info.write_text("".join(MOUNTINFO.format(id=20 + i, point=p, fs=fs)
                            for i, (p, fs) in enumerate(mounts)))
    assert cg.cgroup2_mount(str(info)) == expected


def test_own_cgroup_reads_the_v2_line(tmp_path):
    f = tmp_path / "cgroup"
    f.write_text("4:memory:/x\n0::/system.slice/vllm.service\n")
    assert cg.own_cgroup(str(f)) == "/system.slice/vllm.service"
    f.write_text("4:memory:/x\n")
    with pytest.raises(cg.CgroupError, match="no cgroup v2"):
        cg.own_cgroup(str(f))


def test_setting_reads_cli_env_and_file_and_rejects_unknown_values(tmp_path):
    assert resolve({}, {}, None).firewall == "auto"
    assert resolve({}, {"VSL_FIREWALL": "off"}, None).firewall == "off"
    pol = tmp_path / "p.toml"
    pol.write_text('[launcher]\nfirewall = "strict"\n')
    assert resolve({}, {}, str(pol)).firewall == "strict"
    assert resolve({"firewall": "enforce"}, {"VSL_FIREWALL": "off"}, str(pol)).firewall == \
        "enforce"
    with pytest.raises(PolicyFileError, match="firewall"):
        resolve({}, {"VSL_FIREWALL": "maybe"}, None)


def test_off_is_an_info_finding_and_no_ruleset():
    p = enforce.plan_firewall(plan(), Policy(firewall="off"), {})
    assert [f.rule_id for f in p.findings] == ["VSL133"]
    assert p.facts["firewall"]["mode"] == "off" and not p.refused


@pytest.mark.parametrize("mode,rule,refused", [("auto", "VSL131", False),
                                               ("enforce", "VSL132", True),
                                               ("strict", "VSL132", True)])
def test_unusable_host_warns_in_auto_and_refuses_when_required(monkeypatch, mode, rule, refused):
    """The host check itself is exercised for real below (no CAP_NET_ADMIN); here its answer
    is fixed so that each mode's decision is pinned."""
    monkeypatch.setattr(enforce, "unusable", lambda: "no cgroup v2 file system is mounted")
    p = enforce.plan_firewall(plan(), Policy(firewall=mode), {})
    f = [f for f in p.findings if f.rule_id.startswith("VSL13")]
    assert [x.rule_id for x in f] == [rule] and "no cgroup v2" in f[0].message
    assert p.refused is refused
    assert p.facts["firewall"]["mode"] == "off"


@pytest.mark.skipif(os.geteuid() != 0 or cg.cgroup2_mount() is None or not shutil.which("nft"),
                    reason="needs root, nft and cgroup v2")
def test_enforced_plan_carries_the_exact_ruleset():
    p = enforce.plan_firewall(plan(), Policy(firewall="auto"), {})
    doc = p.facts["firewall"]
    assert doc["mode"] == "enforce" and [f.rule_id for f in p.findings] == ["VSL130"]
    assert doc["ruleset"].startswith(f"table inet vsl_{os.getpid()} {{")
    assert doc["cgroup_dir"].endswith(f"vsl-{os.getpid()}")


def _cli(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO, VLLM_API_KEY=KEY, VLLM_CPU_KVCACHE_SPACE="1",
               VSL_ACCELERATOR="cpu")
    return subprocess.run([*prefix, sys.executable, "-m", "vllm_secure_launch.cli.main", *args],
                          capture_output=True, text=True, env=env, timeout=120)


NO_NET_ADMIN = ("setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to drop CAP_NET_ADMIN with setpriv")
def test_without_net_admin_enforce_refuses_78_and_auto_warns(tmp_path):
    """Real privilege loss (setpriv drops CAP_NET_ADMIN from the launcher)."""
    model = str(tmp_path)
    r = _cli("--firewall", "enforce", "check", model, prefix=NO_NET_ADMIN)
    assert r.returncode == 78, r.stdout + r.stderr
    assert "VSL132" in r.stdout and "CAP_NET_ADMIN" in r.stdout
    r = _cli("check", model, prefix=NO_NET_ADMIN)
    assert "VSL131" in r.stdout and "WARNING" in r.stdout, r.stdout + r.stderr


@pytest.mark.skipif(os.geteuid() != 0 or cg.cgroup2_mount() is None or not shutil.which("nft"),
                    reason="needs root, nft and cgroup v2")
def test_dry_run_prints_the_table(tmp_path):
    r = _cli("--firewall", "enforce", "--dry-run", "serve", str(tmp_path))
    assert "firewall: enforce (nftables table loaded before vLLM starts):" in r.stdout, r.stdout
    assert "flags owner" in r.stdout and "socket cgroupv2 level" in r.stdout


def test_keeper_fails_closed_when_the_table_cannot_load(tmp_path):
    """A ruleset the kernel (or libnftables' absence) refuses: exit 78, vLLM never runs."""
    marker = tmp_path / "ran"
    env = dict(os.environ, VSL_FIREWALL_RULESET="table inet x { this is not nft }",
               VSL_FIREWALL_CGROUP=str(tmp_path))
    r = subprocess.run([sys.executable, "-I", "-S", keeper.__file__, "--parent",
                        str(os.getpid()), "--grace", "1", "--", "touch", str(marker)],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 78, r.stderr
    assert "firewall" in r.stderr and "nothing was started" in r.stderr
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# The API source allow-list ([api] allowed_sources, --api-allowed-sources)


def _tree_in(text: str) -> list[str]:
    body = text[text.index("chain tree_in"):]
    return [ln.strip() for ln in body[:body.index("}")].splitlines()[1:] if ln.strip()]


@pytest.mark.parametrize("sources,api_rules", [
    ((), ["meta l4proto tcp th dport 8000 accept"]),
    (("192.0.2.0/24",), ["meta l4proto tcp th dport 8000 ip saddr @api4 accept",
                         "meta l4proto tcp th dport 8000 ip6 saddr @api6 accept",
                         "meta l4proto tcp th dport 8000 drop"]),
])
def test_api_sources_decide_the_api_port_before_the_internal_accept(sources, api_rules):
    """Empty list: the API port from anywhere. A list: only from it (and loopback, accepted
    first); the drop comes before the internal accept, so the internal network is not
    implied for the API port."""
    rules = _tree_in(ruleset(Spec("t", "x", 1, 8000, sources, ("10.1.0.0/24",))))
    assert rules[:2] == ['iif "lo" accept', "ct state established,related accept"]
    assert rules[2:2 + len(api_rules)] == api_rules
    assert rules[2 + len(api_rules):] == ["ip saddr @internal4 accept",
                                          "ip6 saddr @internal6 accept", "drop"]


def test_api_sources_sets_are_split_by_family_and_merged():
    text = ruleset(Spec("t", "x", 1, 80, ("2001:db8::/32", "192.0.2.7/32", "192.0.2.0/24"), ()))
    assert "elements = { 192.0.2.0/24 }" in text and "elements = { 2001:db8::/32 }" in text


def test_api_sources_without_an_api_port_add_no_api_rule():
    text = ruleset(Spec("t", "x", 1, None, ("192.0.2.0/24",), ()))
    assert "dport" not in text


@pytest.mark.parametrize("given,canonical", [
    ("192.0.2.0/24", ("192.0.2.0/24",)),
    ("192.0.2.9/24, 10.1.2.3", ("192.0.2.0/24", "10.1.2.3/32")),  # host bits cleared
    ("2001:DB8::/32", ("2001:db8::/32",)),
    ("", ()),
])
def test_api_sources_setting_is_canonical_from_cli_and_env(given, canonical):
    assert resolve({"api_allowed_sources": given}, {}, None).api_allowed_sources == canonical
    assert resolve({}, {"VSL_API_ALLOWED_SOURCES": given}, None).api_allowed_sources == \
        canonical


@pytest.mark.parametrize("bad", ["192.0.2.0/33", "example.com", "10.0.0.0/8/9", "::g"])
def test_api_sources_refuse_what_is_not_a_network(tmp_path, bad):
    """A bad item is a usage error (exit 2) that names the setting and the item."""
    with pytest.raises(PolicyFileError, match=r"api_allowed_sources: .* is not an IP network"):
        resolve({}, {"VSL_API_ALLOWED_SOURCES": bad}, None)
    pol = tmp_path / "p.toml"
    pol.write_text(f'[api]\nallowed_sources = ["10.0.0.0/8", "{bad}"]\n')
    with pytest.raises(PolicyFileError, match=r"\(file\) is not an IP network") as exc:
        resolve({}, {}, str(pol))
    assert exc.value.code == 2


def test_api_sources_bad_on_the_command_line_exit_2(tmp_path):
    r = _cli("--api-allowed-sources", "192.0.2.0/33", "check", str(tmp_path))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "is not an IP network" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_api_sources_not_enforced_warn_vsl134(monkeypatch, mode):
    """Where the table is not loaded the list restricts nothing: a warning says so (enforce
    and strict already refuse with VSL132)."""
    monkeypatch.setattr(enforce, "unusable", lambda: "no CAP_NET_ADMIN")
    pol = Policy(firewall=mode, api_allowed_sources=("192.0.2.0/24",))
    p = enforce.plan_firewall(plan(), pol, {})
    assert [f.rule_id for f in p.findings] == ["VSL131" if mode == "auto" else "VSL133",
                                               "VSL134"]
    assert "192.0.2.0/24" in p.findings[1].message and not p.refused
    assert [f.rule_id for f in enforce.plan_firewall(plan(), Policy(firewall=mode),
                                                     {}).findings] == [p.findings[0].rule_id]


@pytest.mark.skipif(os.geteuid() != 0 or cg.cgroup2_mount() is None or not shutil.which("nft"),
                    reason="needs root, nft and cgroup v2")
def test_enforced_plan_carries_the_api_sources():
    pol = Policy(firewall="enforce", api_allowed_sources=("192.0.2.0/24",))
    doc = enforce.plan_firewall(plan(), pol, {}).facts["firewall"]
    assert doc["api_sources"] == ["192.0.2.0/24"]
    assert "th dport 8000 ip saddr @api4 accept" in doc["ruleset"]
