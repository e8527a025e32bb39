"""The CLI as an operator uses it: dry-run/check/rules output, exit codes, clear errors without
tracebacks, secrets never printed, and a dry run that never imports torch or vllm."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Not in the fast lane: the launcher CLI as a child process.
pytestmark = pytest.mark.integration

KEY = "cli-test-key-123"


def run(*args, env=None, input=None):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("VSL_", "VLLM_"))}
    full["VLLM_API_KEY"] = KEY
    # A dry run includes the CPU preflight (what serve would check): a small KV cache keeps these
    # planning tests independent of how much memory this machine has free right now.
    full["VLLM_CPU_KVCACHE_SPACE"] = "1"
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "vllm_secure_launch.cli.main", *args],
                          capture_output=True, text=True, env=full, input=input, timeout=60)


def test_dry_run_json_schema():
    r = run("--dry-run", "--format", "json", "serve", "my-model", "--api-key", KEY)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for key in ("schema_version", "decision", "argv", "env", "env_removed", "findings",
                "expected_listeners", "api"):
        assert key in doc
    assert doc["decision"] == "start" and doc["schema_version"] == 2 and doc["kind"] == "plan"
    assert doc["tool"]["name"] == "vllm-secure-launch"
    assert isinstance(doc["argv"], list) and "my-model" in doc["argv"]
    assert doc["env"]["VLLM_API_KEY"] == "<redacted>"
    assert KEY not in r.stdout and KEY not in r.stderr
    f = doc["findings"][0]
    assert set(f) >= {"id", "severity", "subject", "message", "remedy"}


def test_dry_run_refused_exit_78_and_text():
    r = run("--dry-run", "serve", "m", "--host", "0.0.0.0", env={"VLLM_API_KEY": KEY})
    assert r.returncode == 78
    assert "VSL101" in r.stdout and "decision: refuse" in r.stdout
    assert KEY not in r.stdout + r.stderr


def test_env_alone_drives_the_entrypoint():
    """A container entrypoint ["vllm-secure-launch", "serve"] works with env alone."""
    r = run("serve", "m", env={"VSL_DRY_RUN": "1", "VSL_FORMAT": "json",
                               "VSL_INTERNAL_IFACE": "lo"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["internal"]["iface"] == "lo"


def test_check_and_sarif():
    r = run("check", "m", "--trust-remote-code")
    assert r.returncode == 78 and "VSL220" in r.stdout
    r = run("--format", "sarif", "check", "m")
    assert r.returncode == 0
    assert json.loads(r.stdout)["version"] == "2.1.0"


def test_rules_lists_every_rule():
    r = run("rules", "--format", "json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc["kind"] == "rules" and doc["findings"] == []
    ids = [x["id"] for x in doc["rules"]]
    assert "VSL101" in ids and "VSL401" in ids and all(x.startswith("VSL") for x in ids)


@pytest.mark.parametrize("args,code,needle", [
    (("--dry-run", "serve", "m", "--conf", "x.yaml"), 2, "ambiguous"),
    (("--dry-run", "serve", "m", "--config=x.yaml"), 2, "--config"),
    (("--dry-run", "serve", "m", "--port"), 2, "--port"),
    (("--policy", "/nonexistent.toml", "--dry-run", "serve", "m"), 2, "does not exist"),
    (("--audit", "loud", "serve", "m"), 2, "audit"),
    (("--dry-run", "--report", "/nonexistent/dir/r.json", "serve", "m"), 2, "report"),
])
def test_errors_are_one_paragraph_no_traceback(args, code, needle):
    r = run(*args)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert needle in r.stderr
    assert r.stderr.startswith("vllm-secure-launch: error:")


def test_bad_policy_env_value():
    r = run("--dry-run", "serve", "m", env={"VSL_READY_TIMEOUT": "soon"})
    assert r.returncode == 2 and "VSL_READY_TIMEOUT" in r.stderr and "Traceback" not in r.stderr


def test_report_file(tmp_path):
    out = tmp_path / "plan.json"
    r = run("--dry-run", "--report", str(out), "serve", "m")
    assert r.returncode == 0
    assert json.loads(out.read_text())["decision"] == "start"


def test_help_everywhere():
    for args in (("--help",), ("serve", "--help"), ("check", "--help"), ("rules", "--help"),
                 ("probe", "--help"), ("preflight", "--help")):
        r = run(*args)
        assert r.returncode == 0 and "Usage" in r.stdout, args


def test_dry_run_never_imports_torch_or_vllm():
    code = (
        "import sys\n"
        "from vllm_secure_launch.cli import main\n"
        "sys.argv=['vllm-secure-launch','--dry-run','serve','m','-tp','2','--config-format','auto']\n"
        "try:\n    main.main()\nexcept SystemExit:\n    pass\n"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('torch','vllm','pynvml','torch_npu','mindspore','transformers')]\n"
        "sys.stderr.write('HEAVY=' + ','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY=" in r.stderr and r.stderr.rsplit("HEAVY=", 1)[1].strip() == "", r.stderr


@pytest.mark.parametrize("args,env,code,needle", [
    (("--vllm-command", "vllm 'serve", "--dry-run", "serve", "m"), {}, 2, "--vllm-command"),
    (("--dry-run", "serve", "m"), {"VSL_VLLM_COMMAND": "a 'b"}, 2, "VSL_VLLM_COMMAND"),
    (("--audit-interval", "0", "--dry-run", "serve", "m"), {}, 2, "audit_interval"),
    (("--ready-timeout", "0", "--dry-run", "serve", "m"), {}, 2, "ready_timeout"),
    (("--vllm-command", "/nonexistent/vllm serve", "serve", "m"), {}, 127, "was not found"),
])
def test_more_bad_input_is_a_clear_error(args, env, code, needle):
    """Unbalanced quotes, a spinning audit interval and a missing vLLM command are clear errors
    with their documented exit codes (2, 127) — never an internal error, nothing started."""
    r = run(*args, env=env)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert needle in r.stderr and "Traceback" not in r.stderr and "internal error" not in r.stderr


def test_unknown_option_value_is_not_echoed_in_findings():
    """A mistyped secret option (--api-keyy=VALUE, --apikey VALUE) is refused (VSL223) and its
    value appears in no report: not in findings, not in the plan's argv (issue 10)."""
    r = run("--format", "json", "check", "m", "--api-keyy=SECRETVALUE")
    assert r.returncode == 78 and "VSL223" in r.stdout
    assert "SECRETVALUE" not in r.stdout and "--api-keyy" in r.stdout
    r = run("--format", "json", "--dry-run", "serve", "m", "--apikey", "SECRETVALUE2",
            "--api_key2=SECRETVALUE3")
    assert r.returncode == 78 and "SECRETVALUE" not in r.stdout + r.stderr
    assert "--apikey" in r.stdout


def test_cut_short_secret_option_swallowed_by_a_dotted_key_is_redacted():
    """Found by the fuzzer: `--x. --api-ke K` — the dotted key takes `--api-ke` (an abbreviation
    of --api-key) as its JSON value, so K lands as a stray value of the option before. K is
    still redacted everywhere and the start refused (VSL223)."""
    r = run("--format", "json", "check", "m", "--lora-modules", "0", "--_.", "--api-ke",
            "SECRETVALUE4")
    assert r.returncode == 78 and "VSL223" in r.stdout
    assert "SECRETVALUE4" not in r.stdout + r.stderr
    # A second dotted key overwrites the first one's JSON value: the parsed arguments no longer
    # show the secret-looking option at all; the raw command line still does.
    r = run("--format", "json", "check", "m", "--_.", "--api-keyy", "SECRETVALUE5", "--_.", "")
    assert r.returncode == 78 and "VSL223" in r.stdout
    assert "SECRETVALUE5" not in r.stdout + r.stderr
    # A vLLM option that merely looks like one (--tokenizer: "tok") is not secret-bearing.
    r = run("--format", "json", "check", "m", "--tokenizer", "m")
    assert "VSL223" not in r.stdout


def test_unusable_runtime_dir_refuses_before_start(tmp_path):
    """A private run directory that cannot be created refuses the start (78) with the knob to
    change; nothing is started."""
    r = run("--audit", "off", "serve", "/nonexistent-model",
            env={"VSL_RUNTIME_DIR": "/proc/no-such-dir", "VSL_TCPSTORE_GUARD": "0",
                 "VSL_ACCELERATOR": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"})
    assert r.returncode == 78, r.stderr
    assert "VSL_RUNTIME_DIR" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("cmd", [["check"], ["--dry-run", "serve"], ["preflight", "--format", "text"]])
@pytest.mark.parametrize("token", ["-qh", "-hq", "-Oh"])
def test_a_dash_token_with_h_is_vllms_not_help(cmd, token):
    """click used to split `-qh` into `-q -h`, print help and exit 0: every command line with
    such a token was "approved" (issue 10). It is vLLM's argument now, judged as such."""
    r = run(*cmd, token, "m", "--trust-remote-code")
    assert "Usage:" not in r.stdout, r.stdout
    if cmd[0] != "preflight":
        assert r.returncode == 78 and "VSL220" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("cmd", [["check"], ["serve"], ["preflight"]])
def test_help_only_as_the_first_token(cmd):
    assert "Usage:" in run(*cmd, "--help").stdout
    assert "Usage:" in run(*cmd, "-h").stdout
