"""The TCPStore guard with real torch (2.13 CPU) in child interpreters of a throwaway venv
that has the hook installed exactly as the launcher installs it.

Each scenario run (tests/_tcpstore_scenarios.py) starts two ranks by spawn or fork and covers:
a master store with a client in the other rank, a port-0 store, rendezvous(), a
StatelessProcessGroup-style explicit fd, init_process_group("gloo", "tcp://...") with 1 and 2
ranks; rank 0 also checks that wildcard / disallowed hosts, a wildcard fd and a busy port are
refused (the busy port with torch's EADDRINUSE text). The pytest process never imports torch.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from tests._guard_venv import SCENARIOS, clean_env, make_venv, run_py
from vllm_secure_launch.guard import install as gi

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                       reason="torch is not installed in this venv"),
    pytest.mark.integration,  # child interpreters importing torch: not in the fast lane
]

GUARD = {"VSL_TCPSTORE_ALLOWED": "127.0.0.1"}


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> str:
    return make_venv(tmp_path_factory.mktemp("vslts-venv") / "venv")


def run_scenarios(python: str, method: str, backend: str, base_port: int, env: dict,
                  *extra: str) -> dict:
    proc = subprocess.run([python, SCENARIOS, method, backend, "127.0.0.1", str(base_port),
                           *extra], env=env, capture_output=True, text=True, timeout=400,
                          stdin=subprocess.DEVNULL, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def all_listeners(result: dict) -> list[tuple[str, int]]:
    out = []
    for r in result["ranks"]:
        for key in ("listeners", "listeners_pg1"):
            out += [tuple(x) for x in r.get(key, [])]
    return out


@pytest.mark.parametrize("method,backend,base", [
    ("spawn", "libuv", 20200), ("spawn", "legacy", 20210),
    ("fork", "libuv", 20220), ("fork", "legacy", 20230),
])
def test_every_store_and_group_listens_only_on_the_allowed_address(
        venv_python, method, backend, base):
    """Guarded: master store, port 0, rendezvous, explicit fd, gloo PG with 1 and 2 ranks all
    work and every listener of both ranks is on 127.0.0.1 (the only allowed address);
    wildcard and disallowed hosts are refused and clients still work."""
    res = run_scenarios(venv_python, method, backend, base, clean_env(GUARD))
    r0, r1 = res["ranks"]
    assert "error" not in r0, r0.get("error")
    assert "error" not in r1, r1.get("error")
    if method == "fork":
        assert res["parent"]["guarded"] is True
    assert r0["guarded"] and r1["guarded"]
    assert r0["store_libuv"] is (backend == "libuv")
    assert (r0["store_client_value"], r1["store_client_value"]) == ("world", "hello")
    assert r0["port0"][0] > 0 and r0["port0"][1] == "v"
    assert r0["rendezvous"] == "ok" and r0["explicit_fd"] == [True, "ok"]
    assert r0["pg1"] == [1.0, 1.0] and r0["pg2"] == r1["pg2"] == [3.0, 3.0]
    for key in ("refuse_wildcard4", "refuse_wildcard6", "refuse_rendezvous"):
        assert r0[key].startswith("TCPStoreGuardError") and "wildcard" in r0[key], key
    assert r0["refuse_other"].startswith("TCPStoreGuardError") and "127.0.0.9" in r0["refuse_other"]
    assert "master_listen_fd" in r0["refuse_wildcard_fd"]
    assert r0["busy_port"].startswith("DistNetworkError") and "EADDRINUSE" in r0["busy_port"]
    listeners = all_listeners(res)
    ports = {p for _ip, p in listeners}
    assert {base, base + 1, base + 4} <= ports  # the stores really listen (fixed ports)
    assert r0["port0"][0] in ports
    assert {ip for ip, _p in listeners} == {"127.0.0.1"}, listeners


def test_unguarded_baseline_listens_on_the_wildcard(venv_python):
    """Without VSL_TCPSTORE_ALLOWED the .pth is inert and torch's stores listen on [::]:
    the proof that the guarded test above would see a leak."""
    res = run_scenarios(venv_python, "spawn", "libuv", 20240, clean_env(), "--no-refusals")
    assert all(not r.get("guarded") for r in res["ranks"])
    wild = [(ip, p) for ip, p in all_listeners(res) if ip in ("::", "0.0.0.0")]
    assert (("::", 20240) in wild or ("0.0.0.0", 20240) in wild), all_listeners(res)


IN_PROCESS = r"""
import json, socket, weakref, sys
import torch.distributed as dist
import torch._C._distributed_c10d as c10d
import torch.distributed.rendezvous
import psutil
rdzv = sys.modules["torch.distributed.rendezvous"]  # the package attribute is a function
out = {}
def listening():
    return sorted((c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections("inet")
                  if c.status == psutil.CONN_LISTEN)
out["same_class"] = dist.TCPStore is c10d.TCPStore is rdzv.TCPStore
keep = []
for lib in (True, False):
    s = dist.TCPStore("::1", 0, 1, True, wait_for_workers=False, use_libuv=lib)
    keep.append(s)
    v4 = socket.socket()
    out["v6_port_on_v4_%s" % lib] = v4.connect_ex(("127.0.0.1", s.port))
    v4.close()
    c = dist.TCPStore("::1", s.port, 1, False)
    c.set("a", "b")
    out["v6_ok_%s" % lib] = s.get("a").decode()
out["isinstance"] = isinstance(keep[0], dist.TCPStore) and isinstance(keep[0], dist.Store)
p = dist.PrefixStore("pre", keep[0]); p.set("x", "y")
out["prefix"] = keep[0].get("pre/x").decode()
out["weakref"] = weakref.ref(keep[0])() is keep[0]
# multi-tenant: two master stores on one fixed port share torch's cached server.
m1 = dist.TCPStore("127.0.0.1", 20250, 1, True, wait_for_workers=False, multi_tenant=True)
m2 = dist.TCPStore("127.0.0.1", 20250, 1, True, wait_for_workers=False, multi_tenant=True)
m1.set("mt", "shared")
out["multi_tenant"] = m2.get("mt").decode()
keep += [m1, m2]
out["listeners"] = listening()
print(json.dumps(out))
"""


def test_in_process_semantics_ipv6_prefix_weakref_multi_tenant(venv_python):
    proc = run_py(venv_python, IN_PROCESS, clean_env({"VSL_TCPSTORE_ALLOWED": "127.0.0.1,::1"}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same_class"] and out["isinstance"] and out["weakref"]
    assert out["v6_ok_True"] == out["v6_ok_False"] == "b"
    # IPV6_V6ONLY: the ::1 store does not answer on IPv4.
    assert out["v6_port_on_v4_True"] != 0 and out["v6_port_on_v4_False"] != 0
    assert out["prefix"] == "y" and out["multi_tenant"] == "shared"
    assert {ip for ip, _p in out["listeners"]} <= {"127.0.0.1", "::1"}
    assert [p for _ip, p in out["listeners"]].count(20250) == 1


def test_pth_is_inert_without_the_variable(venv_python):
    code = (f"import sys; print(json.dumps([{gi.MODULE_NAME!r} in sys.modules, "
            "[type(f).__name__ for f in sys.meta_path]]))")
    proc = run_py(venv_python, "import json;" + code, clean_env())
    loaded, finders = json.loads(proc.stdout)
    assert loaded is False and "_TorchDistributedFinder" not in finders
    proc = run_py(venv_python, "import torch.distributed as d; "
                  "print(hasattr(d.TCPStore, '__vsl_tcpstore_guard__'))", clean_env())
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("flags", [[], ["-I"], ["-E"], ["-I", "-B"]])
def test_self_test_passes_also_under_isolated_and_ignore_environment(venv_python, flags):
    res = gi.self_test(venv_python, clean_env(GUARD), extra_args=flags)
    assert res.ok, res.reason
    assert res.guarded and res.hook_loaded and res.refuses_wildcard
    assert res.allowed == ("127.0.0.1",) and res.torch_version.startswith("2.")


def test_self_test_fails_under_dash_S(venv_python):
    res = gi.self_test(venv_python, clean_env(GUARD), extra_args=["-S"])
    assert not res.ok and "-S" in res.reason


def test_self_test_fails_when_the_hook_is_not_installed(tmp_path):
    python = make_venv(tmp_path / "bare", install_guard=False)
    res = gi.self_test(python, clean_env(GUARD))
    assert not res.ok and not res.hook_loaded and "did not run" in res.reason


def test_self_test_reports_an_invalid_setting(venv_python):
    res = gi.self_test(venv_python, clean_env({"VSL_TCPSTORE_ALLOWED": "0.0.0.0"}))
    assert not res.ok and "wildcard" in res.reason


def test_invalid_setting_refuses_every_master_store_but_not_clients(venv_python):
    code = ("import torch.distributed as d\n"
            "try:\n d.TCPStore('127.0.0.1', 0, 1, True, wait_for_workers=False)\n"
            " print('STARTED')\n"
            "except Exception as e:\n print(type(e).__name__, e)\n")
    proc = run_py(venv_python, code, clean_env({"VSL_TCPSTORE_ALLOWED": ""}))
    assert "TCPStoreGuardError" in proc.stdout and "STARTED" not in proc.stdout


def test_allowed_file_for_workers_the_launcher_does_not_start(venv_python, tmp_path):
    f = tmp_path / "allowed"
    f.write_text("127.0.0.1\n")
    res = gi.self_test(venv_python, clean_env({"VSL_TCPSTORE_ALLOWED_FILE": str(f)}))
    assert res.ok and res.allowed == ("127.0.0.1",)


def test_existing_sitecustomize_still_runs(venv_python, tmp_path):
    """The hook is a .pth: a sitecustomize of the environment (here on PYTHONPATH) is neither
    shadowed nor skipped, and both are active in the same interpreter."""
    (tmp_path / "sitecustomize.py").write_text("import os\nos.environ['VSLTS_SITECUSTOM'] = '1'\n")
    code = ("import os, torch.distributed as d; "
            "print(os.environ.get('VSLTS_SITECUSTOM'), "
            "hasattr(d.TCPStore, '__vsl_tcpstore_guard__'))")
    proc = run_py(venv_python, code, clean_env({**GUARD, "PYTHONPATH": str(tmp_path)}))
    assert proc.stdout.split() == ["1", "True"], proc.stderr[-2000:]


def test_a_broken_hook_fails_closed_with_exit_78(tmp_path):
    python = make_venv(tmp_path / "broken")
    module = Path(gi.site_packages_of(python)) / f"{gi.MODULE_NAME}.py"
    module.write_text("raise ImportError('simulated damage')\n")
    proc = run_py(python, "print('RAN')", clean_env(GUARD))
    assert proc.returncode == gi.EXIT_GUARD_BROKEN and "RAN" not in proc.stdout
    assert "simulated damage" in proc.stderr and "refusing to run unguarded" in proc.stderr
    ok = run_py(python, "print('RAN')", clean_env())  # switched off: unaffected
    assert ok.returncode == 0 and ok.stdout.strip() == "RAN"


def test_install_after_torch_import_patches_in_place(venv_python):
    """A late install() (torch.distributed already imported) still swaps every binding."""
    code = ("import sys, torch.distributed as d, torch.distributed.rendezvous, "
            f"{gi.MODULE_NAME} as g, os\n"
            "r = sys.modules['torch.distributed.rendezvous']\n"
            "os.environ['VSL_TCPSTORE_ALLOWED'] = '127.0.0.1'\n"
            "print(g.install(), g.guard_state()['guarded'], r.TCPStore is d.TCPStore)\n")
    proc = run_py(venv_python, code, clean_env())
    assert proc.stdout.split() == ["True", "True", "True"], proc.stderr[-2000:]


def _plan(python: str, env: dict, opts=(), internal=("127.0.0.1",), loopback=True):
    from vllm_secure_launch.plan.model import ApiEndpoint, ExpectedListeners, Plan

    api = ApiEndpoint("127.0.0.1", 20260)
    return Plan(decision="start", argv=(python, *opts, "-m", "vllm_secure_launch.supervise.entry",
                                        "serve", "m"),
                env=env, env_set={}, env_removed=(), secret_env=frozenset(), api=api,
                expected=ExpectedListeners(api, tuple(internal), loopback), findings=())


def test_prepare_installs_and_self_tests_a_plan(tmp_path):
    """guard_install.prepare(plan), as pipeline.py calls it: installs the hook into the
    plan's interpreter's environment (fresh venv here) and passes the self-test."""
    python = make_venv(tmp_path / "fresh", install_guard=False)
    env = clean_env({"VSL_TCPSTORE_ALLOWED": "127.0.0.1,::1"})
    assert gi.prepare(_plan(python, env, opts=("-I",))) == []
    assert (Path(gi.site_packages_of(python)) / gi.PTH_NAME).exists()


def test_prepare_reuses_a_passed_self_test_until_the_hook_changes(venv_python, tmp_path):
    """serve's second start in the same environment skips the torch-importing child: the
    real self-test passes once, is stored in the private cache, and is reused; a changed
    hook file runs the real self-test again."""
    env = clean_env(GUARD)
    cache_dir = str(tmp_path / "cache")
    assert gi.prepare(_plan(venv_python, env), cache_dir=cache_dir) == []
    installed = gi.ensure_installed(venv_python)
    hit = gi.cached_self_test(venv_python, env, installed, cache_dir=cache_dir)
    assert hit.ok and hit.detail == {"cached": True} and hit.torch_version
    module = Path(installed.module_path)
    module.write_text(module.read_text() + "# touched\n")
    try:
        again = gi.cached_self_test(venv_python, env, installed, cache_dir=cache_dir)
        assert again.ok and again.detail.get("cached") is None and again.guarded
    finally:
        gi.ensure_installed(venv_python)  # restore this launcher's hook for later tests


def test_prepare_reports_vsl352_and_vsl354(venv_python):
    got = gi.prepare(_plan(venv_python, clean_env()))
    assert [f.rule_id for f in got] == ["VSL352"]
    got = gi.prepare(_plan(venv_python, clean_env(GUARD), opts=("-S",)))
    assert [f.rule_id for f in got] == ["VSL354"]


def test_prepare_reports_vsl350_when_torch_is_missing(tmp_path):
    """A venv without the shared packages: the hook installs, but torch does not import."""
    import subprocess as sp
    import sys as _sys

    base = getattr(_sys, "_base_executable", _sys.executable)
    sp.run([base, "-m", "venv", "--without-pip", str(tmp_path / "notorch")], check=True)
    python = str(tmp_path / "notorch" / "bin" / "python")
    got = gi.prepare(_plan(python, clean_env(GUARD)))
    assert [f.rule_id for f in got] == ["VSL350"] and "torch" in got[0].message
