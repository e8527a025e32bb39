"""Policy: TOML file, VSL_* env, CLI; CLI > env > file > defaults; unknown keys and wrong types
are errors that name the key; waivers need a rule ID and a reason."""

from __future__ import annotations

import pytest

from vllm_secure_launch.config.policy import Policy, policy_path, resolve
from vllm_secure_launch.errors import PolicyFileError


def write(tmp_path, text):
    p = tmp_path / "policy.toml"
    p.write_text(text)
    return str(p)


def test_defaults_need_no_file():
    p = resolve({}, {}, None)
    assert p == Policy(origins=p.origins)
    assert p.api_host == "127.0.0.1" and p.audit == "enforce" and not p.allow_wildcard
    assert set(p.origins.values()) == {"default"}


def test_precedence_cli_env_file_default(tmp_path):
    path = write(tmp_path, '[launcher]\naudit = "off"\nready_timeout = 10\n'
                           '[network]\ninternal_iface = "eth1"\n')
    p = resolve({}, {}, path)
    assert (p.audit, p.ready_timeout, p.internal_iface) == ("off", 10.0, "eth1")
    p = resolve({}, {"VSL_AUDIT": "warn", "VSL_READY_TIMEOUT": "20"}, path)
    assert (p.audit, p.ready_timeout) == ("warn", 20.0)
    p = resolve({"audit": "enforce"}, {"VSL_AUDIT": "warn"}, path)
    assert p.audit == "enforce" and p.origins["audit"] == "cli"
    assert p.origins["ready_timeout"] == "file"


def test_example_policy_is_valid():
    import pathlib

    ex = pathlib.Path(__file__).parent.parent / "examples" / "policy.toml"
    p = resolve({}, {}, str(ex))
    assert p.audit == "enforce"


@pytest.mark.parametrize("text,needle", [
    ('[launcher]\naudti = "warn"\n', "audti"),
    ('[lancher]\naudit = "warn"\n', "lancher"),
    ('[launcher]\nready_timeout = "soon"\n', "ready_timeout"),
    ('[launcher]\naudit = "loud"\n', "audit"),
    ('[api]\nallow_wildcard = "yes"\n', "allow_wildcard"),
    ('[vllm]\nplugins = "a,b"\n', "plugins"),
    ('[waivers]\nVSL1 = "x"\n', "VSL1"),
    ('[waivers]\nVSL101 = ""\n', "VSL101"),
    ('launcher = 3\n', "launcher"),
    ('[launcher\n', "not valid TOML"),
])
def test_bad_files_name_the_key(tmp_path, text, needle):
    with pytest.raises(PolicyFileError) as e:
        resolve({}, {}, write(tmp_path, text))
    assert needle in e.value.paragraph()


def test_bad_env_values_are_clear():
    with pytest.raises(PolicyFileError, match="VSL_READY_TIMEOUT"):
        resolve({}, {"VSL_READY_TIMEOUT": "soon"}, None)
    with pytest.raises(PolicyFileError, match="VSL_ALLOW_WILDCARD"):
        resolve({}, {"VSL_ALLOW_WILDCARD": "maybe"}, None)


def test_waivers_and_lists(tmp_path):
    path = write(tmp_path, '[waivers]\nVSL220 = "audited repo"\n[vllm]\nplugins = ["a"]\n')
    p = resolve({}, {"VSL_PLUGINS": "a, b"}, path)
    assert p.waivers == {"VSL220": "audited repo"}
    assert p.plugins == ("a", "b")


def test_policy_path_resolution(tmp_path):
    assert policy_path("/x", {"VSL_POLICY": "/y"}) == "/x"
    assert policy_path(None, {"VSL_POLICY": "/y"}) == "/y"


def test_missing_explicit_policy_is_an_error():
    with pytest.raises(PolicyFileError, match="does not exist"):
        resolve({}, {}, "/nonexistent/policy.toml")
