"""What `--dry-run` prints is what `serve` starts (issue 9, item 1).

`serve` runs with a recording stand-in for the vLLM command: a script that writes the argv and
environment it was started with to a file and exits 3. The dry run's document must name exactly
that argv, and every variable it says it sets must reach the child with that value (values only
known at run time — the private run directory, named after the launcher's pid — are listed by the
document under `runtime_values` and compared by shape). On CPU (this machine), and with the
CUDA (fake NVML) and Ascend (fake /dev + npu-smi stand-in) boundaries faked: see
tests/support/fake_host_cli.py.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.hosts import ascend_dev, ascend_root, make_dev, make_dist, npu_smi_bin

# Not in the fast lane: the launcher CLI and `serve` as child processes.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "support" / "fake_host_cli.py"
KEY = "sk-dry-run-equals-serve-0123456789"


def recorder(tmp: Path, python: str = sys.executable) -> Path:
    script = tmp / "record-vllm"
    script.write_text(
        f"#!{python}\n"
        "import json, os, sys\n"
        f"with open({str(tmp / 'rec.json')!r}, 'w') as fh:\n"
        "    json.dump({'argv': sys.argv, 'env': dict(os.environ)}, fh)\n"
        "sys.exit(3)\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def launch(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VSL_", "VLLM_"))}
    env.update(VLLM_API_KEY=KEY, VLLM_CPU_KVCACHE_SPACE="1",
               VSL_RUNTIME_DIR=str(tmp / "run"), PYTHONPATH=str(ROOT))
    (tmp / "run").mkdir(mode=0o700)
    # The recording stand-in is not vLLM: VSL224 refuses it unless waived, as for any wrapper.
    (tmp / "policy.toml").write_text('[waivers]\nVSL224 = "recording stand-in of the test"\n')
    env["VSL_POLICY"] = str(tmp / "policy.toml")
    return env


def compare(doc: dict, rec: dict, parent_env: dict[str, str]) -> None:
    argv = rec["argv"]
    assert doc["argv"][1:] == argv[1:] and Path(doc["argv"][0]).name == Path(argv[0]).name
    runtime = set(doc["runtime_values"]["env"])
    got = rec["env"]
    for key, value in doc["env"].items():
        assert key in got, f"{key} is in the dry run but not in the child's environment"
        if value == "<redacted>":
            continue
        if key in runtime:
            assert got[key].startswith(str(Path(doc["rpc_dir"]).parent)), (key, got[key])
        else:
            assert got[key] == value, (key, value, got[key])
    for key in doc["env_removed"]:
        assert key not in got, f"{key} was to be removed but reached the child"
    # Nothing else changed: every other variable is the inherited one.
    for key, value in got.items():
        if key not in doc["env"] and key not in runtime:
            assert parent_env.get(key) == value, f"{key} set by serve but not shown by the dry run"


def run_both(tmp: Path, args: list[str], env: dict[str, str],
             python: str = sys.executable) -> dict:
    cmd = str(recorder(tmp, python))
    common = ["--vllm-command", cmd, *args[:args.index("serve")]]
    vllm = args[args.index("serve"):]
    dry = launch([*common, "--dry-run", "--format", "json", *vllm], env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    doc = json.loads(dry.stdout)
    served = launch([*common, *vllm], env)
    assert served.returncode == 3, served.stdout + served.stderr
    rec = json.loads((tmp / "rec.json").read_text())
    parent = {k: v for k, v in env.items() if not k.startswith("VSL_")}
    compare(doc, rec, parent)
    return doc


def test_cpu_dry_run_is_what_serve_starts(tmp_path):
    env = base_env(tmp_path)
    doc = run_both(tmp_path, ["--accelerator", "cpu", "serve", "m", "--max-model-len", "64"], env)
    assert doc["accelerator"] == "cpu" and doc["preflight"]["platform"] == "cpu"


def test_cuda_dry_run_carries_preflight_device_pinning(tmp_path):
    """Fake NVML with two H100s and CUDA_VISIBLE_DEVICES=1,0: preflight pins the index list to
    the same GPUs' UUIDs and sets CUDA_DEVICE_ORDER; both must be in the dry run and reach the
    child."""
    env = base_env(tmp_path)
    dev = make_dev(tmp_path / "dev", ["nvidiactl", "nvidia-uvm", "nvidia0", "nvidia1"])
    site = tmp_path / "site"
    make_dist(site, "vllm", "0.32.0")
    env.update(CUDA_VISIBLE_DEVICES="1,0", VSL_TEST_FAKE_GPUS="2", VSL_TEST_HOSTVIEW=json.dumps(
        {"dev_root": str(dev), "dist_paths": [str(site)]}))
    doc = run_both(tmp_path, ["--accelerator", "cuda", "serve", "m", "-tp", "2"], env)
    uuids = doc["env"]["CUDA_VISIBLE_DEVICES"].split(",")
    by_index = {d["id"]: d["uuid"] for d in doc["preflight"]["devices"]}
    assert len(uuids) == 2 and all(u.startswith("GPU-") for u in uuids), doc["env"]
    assert set(uuids) == set(by_index.values()), (uuids, by_index)
    assert doc["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_ascend_dry_run_carries_cann_environment(tmp_path):
    """Fake /dev/davinci*, /usr/local/Ascend and a recorded-output npu-smi."""
    env = base_env(tmp_path)
    dev = ascend_dev(tmp_path / "dev", 2)
    root = ascend_root(tmp_path / "Ascend")
    bin_dir = npu_smi_bin(tmp_path / "bin", "healthy")
    site = tmp_path / "site"
    for name, version in (("vllm", "0.11.0"), ("vllm-ascend", "0.11.0rc1")):
        make_dist(site, name, version)
    # No CANN variables set: preflight finds the toolkit under the (fake) Ascend root and the
    # plan must carry ASCEND_HOME_PATH and friends to the child.
    env.pop("ASCEND_HOME_PATH", None)
    env.update(PATH=f"{bin_dir}:{env['PATH']}",
               VSL_TEST_HOSTVIEW=json.dumps({"dev_root": str(dev), "ascend_root": str(root),
                                             "dist_paths": [str(site)]}))
    doc = run_both(tmp_path, ["--accelerator", "ascend", "serve", "m", "-tp", "2"], env)
    assert doc["preflight"]["platform"] == "ascend"
    assert doc["env"]["ASCEND_HOME_PATH"] == str(root / "ascend-toolkit" / "latest"), doc["env"]


@pytest.mark.parametrize("flag", ["--dry-run", None])
def test_refused_plan_exits_78_in_dry_run_and_serve(tmp_path, flag):
    env = base_env(tmp_path)
    args = ["--accelerator", "cpu", *([flag] if flag else []), "serve", "m", "--trust-remote-code"]
    proc = launch(args, env)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert not (tmp_path / "rec.json").exists()


def test_vllm_0_33_dry_run_is_what_serve_starts(tmp_path):
    """A vLLM 0.33 environment (metadata only; the recording stand-in runs on its interpreter):
    the plan is made with 0.33's surface, its 0.33 spellings reach the child as planned, and the
    gate config the child gets names 0.33's route inventory."""
    import site as site_mod

    env = base_env(tmp_path)
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    make_dist(site, "vllm", "0.33.0")
    (venv / "bin").mkdir()
    python = venv / "bin" / "python3"
    python.symlink_to(sys.executable)
    # A venv of its own (only vLLM 0.33's metadata), with a .pth to this interpreter's
    # packages: serve's TCPStore guard self-test imports torch on it.
    (venv / "pyvenv.cfg").write_text(f"home = {Path(os.path.realpath(sys.executable)).parent}\n"
                                     "include-system-site-packages = false\n")
    (site / "vsl-test-deps.pth").write_text("\n".join(site_mod.getsitepackages()) + "\n")
    doc = run_both(tmp_path, ["--accelerator", "cpu", "serve", "m", "--disable-prefix-caching",
                              "--enable-fastapi-docs", "--watchdog-config.dump_dir",
                              "/var/lib/vllm/wd"], env, str(python))
    assert doc["vllm"]["version"] == "0.33.0" and doc["vllm"]["surface"] == "0.33", doc["vllm"]
    assert "--disable-prefix-caching" in doc["argv"] and "--enable-fastapi-docs" in doc["argv"]
    assert json.loads(doc["env"]["VSL_GATE_CONFIG"])["surface"] == "0.33"
    assert not {f["id"] for f in doc["findings"]} & {"VSL433", "VSL902"}
