"""The TCPStore guard without torch: the allowed set, address resolution, fd checks, the `.pth`
line, installation into site-packages, and the VSL35x rules. Real torch: see
test_tcpstore_guard_torch.py; real namespaces: test_guard_netns.py."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from vllm_secure_launch.findings import Severity
from vllm_secure_launch.guard import hook as tg
from vllm_secure_launch.guard import install as gi
from vllm_secure_launch.rules import guard_rules as gr

# --------------------------------------------------------------------------------------------
# allowed set


def test_parse_allowed_canonicalises_and_accepts_brackets_and_scopes():
    got = tg.parse_allowed(" 10.0.0.5, [::1] ,fe80::1%eth0 127.0.0.1")
    assert got == frozenset({"10.0.0.5", "::1", "fe80::1", "127.0.0.1"})


@pytest.mark.parametrize("text", ["0.0.0.0", "::", "10.0.0.1,0:0::0", "", " , ", "node0",
                                  "10.0.0.256"])
def test_parse_allowed_refuses_wildcards_names_and_empty(text):
    with pytest.raises(ValueError):
        tg.parse_allowed(text)


def test_allowed_from_environ_off_when_unset():
    assert tg.allowed_from_environ({}) is None


def test_allowed_from_environ_names_the_variable_on_error():
    with pytest.raises(ValueError, match="VSL_TCPSTORE_ALLOWED"):
        tg.allowed_from_environ({"VSL_TCPSTORE_ALLOWED": "0.0.0.0"})


def test_allowed_from_file(tmp_path):
    f = tmp_path / "allowed"
    f.write_text("# internal network\n10.1.2.3\n127.0.0.1  # loopback\n")
    assert tg.allowed_from_environ({"VSL_TCPSTORE_ALLOWED_FILE": str(f)}) == frozenset(
        {"10.1.2.3", "127.0.0.1"})
    with pytest.raises(ValueError, match="cannot be read"):
        tg.allowed_from_environ({"VSL_TCPSTORE_ALLOWED_FILE": str(tmp_path / "missing")})


def test_install_is_a_no_op_when_not_switched_on():
    before = list(sys.meta_path)
    assert tg.install({}) is False
    assert sys.meta_path == before


# --------------------------------------------------------------------------------------------
# resolving the master host


ALLOWED = frozenset({"127.0.0.1", "::1"})


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "[::]", "0"])
def test_wildcard_hosts_are_refused_with_the_setting_named(host):
    with pytest.raises(tg.TCPStoreGuardError) as exc:
        tg.resolve_master_address(host, 0, ALLOWED)
    text = str(exc.value)
    assert "wildcard" in text and "VSL_TCPSTORE_ALLOWED" in text and "Fix:" in text


def test_disallowed_host_is_refused_and_named():
    with pytest.raises(tg.TCPStoreGuardError) as exc:
        tg.resolve_master_address("127.0.0.9", 0, ALLOWED)
    assert "127.0.0.9" in str(exc.value) and "--internal-ip" in str(exc.value)


def test_unresolvable_host_is_refused():
    with pytest.raises(tg.TCPStoreGuardError, match="does not resolve"):
        tg.resolve_master_address("vslts-no-such-host.invalid", 0, ALLOWED)


def test_names_resolve_to_the_allowed_address():
    assert tg.resolve_master_address("localhost", 0, ALLOWED)[1] in ALLOWED
    assert tg.resolve_master_address("::1", 0, ALLOWED) == (socket.AF_INET6, "::1")


# --------------------------------------------------------------------------------------------
# sockets


def test_bind_listener_binds_exactly_and_ipv6_only():
    s4 = tg.bind_listener(socket.AF_INET, "127.0.0.1", 0)
    s6 = tg.bind_listener(socket.AF_INET6, "::1", 0)
    try:
        assert s4.getsockname()[0] == "127.0.0.1"
        assert s4.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert s6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        s4.close()
        s6.close()


@pytest.mark.integration  # builds torch's own error type: imports torch (seconds)
def test_bind_listener_keeps_torchs_eaddrinuse_text():
    s = tg.bind_listener(socket.AF_INET, "127.0.0.1", 0)
    try:
        with pytest.raises(Exception) as exc:
            tg.bind_listener(socket.AF_INET, "127.0.0.1", s.getsockname()[1])
        # vLLM retries only when this text is present (config/parallel.py).
        assert "EADDRINUSE" in str(exc.value) and "Address already in use" in str(exc.value)
    finally:
        s.close()


def test_bind_listener_refuses_an_address_not_on_this_host():
    with pytest.raises(tg.TCPStoreGuardError, match="198.18.255.254"):
        tg.bind_listener(socket.AF_INET, "198.18.255.254", 0)


def _listening(host: str, family=socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen()
    return s


def test_check_listen_fd_accepts_allowed_listening_socket_and_leaves_it_open():
    s = _listening("127.0.0.1")
    try:
        assert tg.check_listen_fd(s.fileno(), ALLOWED) == ("127.0.0.1", s.getsockname()[1])
        assert s.fileno() >= 0 and s.getsockname()[0] == "127.0.0.1"  # still open
    finally:
        s.close()


@pytest.mark.parametrize("host,family", [("0.0.0.0", socket.AF_INET), ("::", socket.AF_INET6),
                                         ("127.0.0.2", socket.AF_INET)])
def test_check_listen_fd_refuses_wildcard_and_disallowed(host, family):
    s = _listening(host, family)
    try:
        with pytest.raises(tg.TCPStoreGuardError, match="master_listen_fd"):
            tg.check_listen_fd(s.fileno(), ALLOWED)
    finally:
        s.close()


def test_check_listen_fd_refuses_non_listening_and_non_tcp():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(tg.TCPStoreGuardError, match="not listening"):
            tg.check_listen_fd(s.fileno(), ALLOWED)
        with pytest.raises(tg.TCPStoreGuardError, match="not a TCP socket"):
            tg.check_listen_fd(u.fileno(), ALLOWED)
    finally:
        s.close()
        u.close()


def test_own_wildcard_listener_sees_this_process():
    s = _listening("0.0.0.0")
    p = _listening("127.0.0.1")
    try:
        assert tg.own_wildcard_listener(s.getsockname()[1]) is True
        assert tg.own_wildcard_listener(p.getsockname()[1]) is False
    finally:
        s.close()
        p.close()


# --------------------------------------------------------------------------------------------
# the .pth line and installation


def test_pth_line_is_one_import_line_and_inert_without_the_variable():
    line = gi.pth_line()
    assert line.startswith("import ") and line.count("\n") == 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSL_TCPSTORE")}
    code = compile(line, "<pth>", "exec")
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        exec(code, {})  # nothing imported, nothing raised
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert gi.MODULE_NAME not in sys.modules


def test_module_source_is_stdlib_only_and_carries_a_digest():
    src = gi.module_source()
    assert "sha256 of the source" in src
    imports = {ln.split()[1].split(".")[0] for ln in src.splitlines()
               if ln.strip().startswith(("import ", "from ")) and not ln.startswith("#")}
    assert imports <= {"__future__", "os", "sys", "socket", "errno", "torch"}


def test_ensure_installed_is_idempotent_and_atomic(tmp_path):
    r1 = gi.ensure_installed(site_packages=tmp_path)
    assert r1.changed
    assert Path(r1.pth_path).read_text() == gi.pth_line()
    assert Path(r1.module_path).read_text() == gi.module_source()
    r2 = gi.ensure_installed(site_packages=tmp_path)
    assert not r2.changed and r2.digest == r1.digest
    Path(r1.module_path).write_text("# stale\n")
    assert gi.ensure_installed(site_packages=tmp_path).changed
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert gi.uninstall(tmp_path) and not Path(r1.pth_path).exists()


def _install_as_nobody(path: str, q) -> None:
    os.setgid(65534)
    os.setuid(65534)
    try:
        gi.ensure_installed(site_packages=path)
        q.put("installed")
    except gi.GuardInstallError as exc:
        q.put(exc.paragraph() + f"|code={exc.code}")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_ensure_installed_refuses_clearly_when_site_packages_is_not_writable():
    # Not under tmp_path: its 0700 parents would hide the directory from the unprivileged user.
    base = Path(tempfile.mkdtemp(prefix="vslts-ro-"))
    os.chmod(base, 0o755)
    target = base / "site-packages"
    target.mkdir(mode=0o755)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_install_as_nobody, args=(str(target), q))
    p.start()
    msg = q.get(timeout=60)
    p.join(10)
    assert "cannot write the TCPStore guard hook" in msg and "VSL351" in msg
    assert msg.endswith("|code=78")
    assert not list(target.iterdir())
    shutil.rmtree(base)


def test_ensure_installed_refuses_missing_site_packages(tmp_path):
    with pytest.raises(gi.GuardInstallError, match="does not exist"):
        gi.ensure_installed(site_packages=tmp_path / "nope")


def test_site_packages_of_reports_the_venv_not_the_base_interpreter():
    sp = gi.site_packages_of(sys.executable)
    import sysconfig

    assert sp == sysconfig.get_paths()["purelib"]


def test_self_test_fails_without_the_variable():
    r = gi.self_test(sys.executable, {"PATH": os.environ.get("PATH", "")})
    assert not r.ok and "VSL_TCPSTORE_ALLOWED" in r.reason


def test_guard_env_adds_loopback_unless_forbidden():
    assert gi.guard_env(["10.0.0.5"]) == {"VSL_TCPSTORE_ALLOWED": "10.0.0.5,127.0.0.1,::1"}
    assert gi.guard_env(["10.0.0.5"], allow_loopback=False) == {
        "VSL_TCPSTORE_ALLOWED": "10.0.0.5"}


# --------------------------------------------------------------------------------------------
# rules


def test_rule_catalog_ids_are_in_range_and_documented():
    ids = [r.id for r in gr.RULES]
    assert len(set(ids)) == len(ids)
    for r in gr.RULES:
        assert r.id.startswith("VSL3") and 350 <= int(r.id[3:]) <= 369
        assert r.title and r.remedy


def test_vsl350_from_a_failed_self_test():
    res = gi.SelfTestResult(False, "torch.distributed.TCPStore is not the guarded class", "py")
    (f,) = gr.self_test_findings(res)
    assert f.rule_id == "VSL350" and f.severity == Severity.ERROR and "guarded" in f.message
    assert gr.self_test_findings(gi.SelfTestResult(True, "", "py")) == []


def test_vsl351_from_an_install_error():
    f = gr.install_finding(gi.GuardInstallError("cannot write", "why", "fix it"))
    assert f.rule_id == "VSL351" and "cannot write" in f.message


def test_vsl352_when_the_child_env_lacks_the_switch():
    (f,) = gr.check_child({}, [], ["10.0.0.5"], True)
    assert f.rule_id == "VSL352"


def test_vsl353_wildcard_garbage_and_addresses_outside_the_plan():
    env = {"VSL_TCPSTORE_ALLOWED": "10.0.0.5,0.0.0.0,bogus,10.9.9.9,127.0.0.1"}
    got = gr.check_child(env, [], ["10.0.0.5"], allow_loopback=False)
    assert [f.rule_id for f in got] == ["VSL353"] * 4
    ok = gr.check_child({"VSL_TCPSTORE_ALLOWED": "10.0.0.5,127.0.0.1,::1"}, ["-I"],
                        ["10.0.0.5"], True)
    assert ok == []


@pytest.mark.parametrize("flag", ["-S", "-IS"])
def test_vsl354_interpreter_without_site(flag):
    got = gr.check_child({"VSL_TCPSTORE_ALLOWED": "10.0.0.5"}, [flag], ["10.0.0.5"], True)
    assert [f.rule_id for f in got] == ["VSL354"]


def test_vsl355_inherited_variable():
    (f,) = gr.check_inherited({"VSL_TCPSTORE_ALLOWED": "1.2.3.4"})
    assert f.rule_id == "VSL355" and f.severity == Severity.WARNING
    assert gr.check_inherited({}) == []
