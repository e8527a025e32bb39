"""The Ray planner (raycluster/plan.py) as tables: the corpus of VSL700-VSL719
(tests/corpus/ray_start/), and the exact command line, environment and expected listeners of
a head and a worker. Pure: a fake RayHost (interfaces, token facts), no Ray, no processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_corpus import IFACES
from vllm_secure_launch.config import policy as policy_mod
from vllm_secure_launch.host.facts import HostFacts
from vllm_secure_launch.raycluster.plan import RayHost, build
from vllm_secure_launch.rules import ray_start_rules as R
from vllm_secure_launch.surface import ray_start as S

CORPUS = Path(__file__).parent / "corpus" / "ray_start"
DEFAULT_POLICY = """
[network]
internal_iface = "eth1"
[ray]
ray_token_file = "/etc/ray/token"
"""
CASES = [c for p in sorted(CORPUS.glob("*.yaml")) for c in yaml.safe_load(p.read_text()) or []]
GOOD_TOKEN = R.TokenFacts("/etc/ray/token", True, mode=0o600, length=64)


def ray_host(overrides: dict[str, Any] | None = None) -> RayHost:
    o = dict(overrides or {})
    token: R.TokenFacts | None = GOOD_TOKEN
    if "token" in o and o["token"] is None:
        token = o.pop("token")
    elif "token" in o:
        t = dict(o.pop("token"))
        if isinstance(t.get("mode"), str):
            t["mode"] = int(t["mode"], 8)
        token = R.TokenFacts(**t)
    heads = {k: tuple(v) for k, v in (o.pop("head_addrs", None) or {}).items()}
    base = HostFacts(interfaces=IFACES, uid=0, pid=4242,
                     runtime_dir=o.pop("runtime_dir", "/run/t"))
    kw: dict[str, Any] = dict(host=base, ray_command="/venv/bin/ray", ray_version="2.60.0",
                              ray_client=False, token=token, head_addrs=heads)
    kw.update(o)
    return RayHost(**kw)


def plan_for(argv: list[str], env: dict[str, str] | None = None, policy: str | None = None,
             host: dict[str, Any] | None = None, tmp: Path | None = None):
    path = (tmp or Path("/tmp")) / "vsl-rs-policy.toml"
    path.write_text(DEFAULT_POLICY if policy is None else policy, encoding="utf-8")
    env = dict(env or {})
    pol = policy_mod.load({"policy": str(path)}, env)
    return build(argv, env, pol, ray_host(host))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case_fires_its_rules_and_decides(case, tmp_path):
    plan = plan_for(list(case["argv"]), case.get("env"), case.get("policy"), case.get("host"),
                    tmp_path)
    fired = {f.rule_id for f in plan.findings}
    assert set(case["fires"]) <= fired, (case["name"], sorted(fired))
    assert plan.decision == case["decision"], (
        case["name"], sorted(f.rule_id for f in plan.findings if f.blocking))


def test_every_ray_start_rule_has_a_case():
    covered = {rid for c in CASES for rid in c["fires"]}
    missing = sorted({r.id for r in R.RULES} - covered)
    assert not missing, f"ray start rules without a corpus case: {missing}"
    assert {r.id for r in R.RULES} == {f"VSL7{n:02d}" for n in range(20)}


def _opts(plan) -> dict[str, str | None]:
    return dict(S.parse(list(plan.argv[2:])).options)


def test_head_command_line_pins_every_port_and_the_internal_address(tmp_path):
    plan = plan_for(["--head", "--num-cpus", "2"], tmp=tmp_path)
    assert plan.decision == "start" and plan.argv[:2] == ("/venv/bin/ray", "start")
    o = _opts(plan)
    assert o["--node-ip-address"] == "10.0.0.5"
    assert {k: o[k] for k in ("--port", "--node-manager-port", "--object-manager-port",
                              "--runtime-env-agent-port", "--dashboard-agent-grpc-port",
                              "--dashboard-agent-listen-port", "--metrics-export-port",
                              "--min-worker-port", "--max-worker-port")} == {
        "--port": "6379", "--node-manager-port": "6380", "--object-manager-port": "6381",
        "--runtime-env-agent-port": "6382", "--dashboard-agent-grpc-port": "6383",
        "--dashboard-agent-listen-port": "6384", "--metrics-export-port": "6385",
        "--min-worker-port": "10002", "--max-worker-port": "10999"}
    assert "--ray-client-server-port" not in o  # minimal ray refuses the option
    assert o["--include-dashboard"] == "false" and "--dashboard-host" not in o
    assert "--disable-usage-stats" in o and "--block" in o and o["--num-cpus"] == "2"
    assert o["--temp-dir"] == "/run/t/vsl-ray-0-4242/ray" and plan.rpc_dir == "/run/t/vsl-ray-0-4242"
    assert plan.env_set == {
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/etc/ray/token",
        "RAY_USAGE_STATS_ENABLED": "0", "RAY_enable_metrics_collection": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "DASHBOARD_METRIC_PORT": "6386", "AUTOSCALER_METRIC_PORT": "6387",
        "VSL_TCPSTORE_ALLOWED": "10.0.0.5,127.0.0.1,::1", "VLLM_HOST_IP": "10.0.0.5",
        "GLOO_SOCKET_IFNAME": "eth1", "NCCL_SOCKET_IFNAME": "=eth1", "TP_SOCKET_IFNAME": "eth1"}
    assert plan.expected.internal_ips == ("10.0.0.5",)
    assert plan.expected.confined_ports == ((6379, 6379), (6380, 6380), (6381, 6381),
                                            (6383, 6383), (6385, 6385), (6386, 6386),
                                            (6387, 6387), (10002, 10999))
    assert plan.facts["ready_ports"] == [6379, 6380]


def test_head_with_grpcio_pins_the_ray_client_server(tmp_path):
    plan = plan_for(["--head"], host={"ray_client": True}, tmp=tmp_path)
    assert _opts(plan)["--ray-client-server-port"] == "10001"


def test_worker_joins_with_its_own_address_and_no_head_only_ports(tmp_path):
    plan = plan_for(["--address=10.0.0.1:6379"], env={"RAY_ADDRESS": "10.0.0.1:6379",
                                                      "RAY_AUTH_TOKEN_PATH": "/x"},
                    tmp=tmp_path)
    o = _opts(plan)
    assert plan.decision == "start" and o["--address"] == "10.0.0.1:6379"
    assert "--head" not in o and "--port" not in o and "--include-dashboard" not in o
    assert "DASHBOARD_METRIC_PORT" not in plan.env_set
    assert "RAY_ADDRESS" not in plan.env and plan.env_removed == ("RAY_ADDRESS",)
    # --ray-token-file wins over Ray's own variable
    assert plan.env["RAY_AUTH_TOKEN_PATH"] == "/etc/ray/token"
    assert plan.facts["ready_ports"] == [6380]


def test_user_ports_are_kept_and_expected(tmp_path):
    plan = plan_for(["--head", "--port", "7000", "--min-worker-port=30000",
                     "--max-worker-port=30010"], tmp=tmp_path)
    o = _opts(plan)
    assert o["--port"] == "7000" and o["--min-worker-port"] == "30000"
    assert (7000, 7000) in plan.expected.confined_ports
    assert (30000, 30010) in plan.expected.confined_ports


def test_dashboard_on_is_pinned_to_loopback(tmp_path):
    o = _opts(plan_for(["--head", "--include-dashboard", "true"], tmp=tmp_path))
    assert o["--include-dashboard"] == "true" and o["--dashboard-host"] == "127.0.0.1"


def test_no_confined_wildcard_without_the_firewall(tmp_path):
    """A waived VSL715 starts, but the audit then allows no wildcard at all."""
    pol = DEFAULT_POLICY + '[waivers]\nVSL715 = "host firewall"\n'
    plan = plan_for(["--head"], policy=pol, host={"firewall_unusable": "no"}, tmp=tmp_path)
    assert plan.decision == "start" and plan.expected.confined_ports == ()


def test_token_value_never_in_the_plan(tmp_path):
    plan = plan_for(["--head"], tmp=tmp_path)
    assert all(k != "RAY_AUTH_TOKEN" for k in plan.env_set)


@pytest.mark.parametrize("argv", [["--head", "--redis-password", "hunter2"],
                                  ["--head", "--redis-password=hunter2"],
                                  ["--head", "--redis-username=hunter2"]])
def test_a_secret_option_is_refused_and_never_shown(argv, tmp_path):
    """A password on `ray start`'s command line is readable by every local user: refused
    (VSL712) before its value is read, and neither the plan nor its document holds it."""
    plan = plan_for(argv, tmp=tmp_path)
    assert plan.decision == "refuse"
    assert "VSL712" in {f.rule_id for f in plan.findings if f.blocking}
    assert "hunter2" not in repr(plan)


def test_parser_reads_both_spellings_and_refuses_a_missing_value():
    a = S.parse(["--port=1", "--num-cpus", "2", "--block"])
    assert a.options == (("--port", "1"), ("--num-cpus", "2"), ("--block", None))
    with pytest.raises(S.RayArgvError):
        S.parse(["--port"])
    with pytest.raises(S.RayArgvError):
        S.parse(["--block=yes"])


def test_port_table_matches_the_documented_values():
    by = {p.option: p.default for p in S.PORTS}
    assert by == {"--port": 6379, "--node-manager-port": 6380, "--object-manager-port": 6381,
                  "--runtime-env-agent-port": 6382, "--dashboard-agent-grpc-port": 6383,
                  "--dashboard-agent-listen-port": 6384, "--metrics-export-port": 6385,
                  "DASHBOARD_METRIC_PORT": 6386, "AUTOSCALER_METRIC_PORT": 6387,
                  "--ray-client-server-port": 10001}
    assert all(p.option in S.VALUED for p in S.PORTS if not p.env)
    docs = (Path(__file__).parent.parent / "docs" / "ray.md").read_text(encoding="utf-8")
    for p in S.PORTS:
        assert f"`{p.option}`" in docs and str(p.default) in docs, p.option


SLURM_W = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "n[1-2]", "SLURMD_NODENAME": "n2",
           "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_LOCALID": "0"}


def test_slurm_worker_joins_the_heads_gcs_port(tmp_path):
    """The same argv on every node: the worker joins the head's --port and drops it itself."""
    plan = plan_for(["--port", "7000"], env=SLURM_W, host={"head_addrs": {"n1": ["10.0.0.1"]}},
                    tmp=tmp_path)
    o = _opts(plan)
    assert plan.decision == "start" and o["--address"] == "10.0.0.1:7000"
    assert "--port" not in o and "--head" not in o
    # a port written in --address is kept (docs/ray.md), the host is the derived head's
    plan = plan_for(["--address", "10.0.0.1:7100"], env=SLURM_W,
                    host={"head_addrs": {"n1": ["10.0.0.1"]}}, tmp=tmp_path)
    assert plan.decision == "start" and _opts(plan)["--address"] == "10.0.0.1:7100"


def test_slurm_head_is_the_first_node(tmp_path):
    plan = plan_for([], env={**SLURM_W, "SLURMD_NODENAME": "n1"}, tmp=tmp_path)
    assert "--head" in _opts(plan) and plan.facts["ray"]["role"] == "head"
