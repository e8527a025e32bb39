"""The planner, exhaustively through tables: (argv, env, policy, host facts) -> Plan.

Pure: no processes, no sockets. Each row names the behaviour it pins.
"""

from __future__ import annotations

import dataclasses

import pytest

from vllm_secure_launch.addresses import IfAddr
from vllm_secure_launch.config.policy import Policy
from vllm_secure_launch.host.facts import HostFacts, SecretFile
from vllm_secure_launch.plan.build import GATE_MIDDLEWARE, build_plan
from vllm_secure_launch.surface import flags as vllm_flags

IFACES = {
    "lo": (IfAddr("127.0.0.1", 8), IfAddr("::1", 128)),
    "eth0": (IfAddr("192.0.2.2", 24), IfAddr("fd00::2", 64)),  # a "public" (TEST-NET) uplink
    "eth1": (IfAddr("10.0.0.5", 24),),
    "ib0": (IfAddr("10.10.0.7", 16),),
    "cgn0": (IfAddr("100.64.1.1", 10),),
    "ula0": (IfAddr("fd12:3456::7", 64),),
}
KEY = "s3cret-key-value"


def host(**kw) -> HostFacts:
    base = dict(interfaces=IFACES, hostname="node1", hostname_addrs=("10.0.0.5",), uid=0,
                pid=4242, python="/venv/bin/python", runtime_dir="/run/test")
    base.update(kw)
    return HostFacts(**base)


def keyfile(mode=0o600, value=KEY, error=None) -> SecretFile:
    return SecretFile("/etc/vllm/key", value, mode, error)


def plan_for(argv, env=None, policy=None, facts=None, **kw):
    env = {"VLLM_API_KEY": KEY} if env is None else env
    return build_plan(vllm_flags.parse(argv), env, policy or Policy(), facts or host(), **kw)


def ids(plan) -> set[str]:
    return {f.rule_id for f in plan.findings}


def blocking_ids(plan) -> set[str]:
    return {f.rule_id for f in plan.findings if f.blocking}


KEYED = {"VLLM_API_KEY": KEY}

# name, argv, env, policy kwargs, host kwargs, decision, rule ids that must block (subset)
CASES = [
    ("plain loopback default is accepted", ["m"], {}, {}, {}, "start", set()),
    ("wildcard host refused", ["m", "--host", "0.0.0.0"], KEYED, {}, {}, "refuse", {"VSL101"}),
    ("ipv6 wildcard refused", ["m", "--host", "::"], KEYED, {}, {}, "refuse", {"VSL101"}),
    ("empty host is the wildcard", ["m", "--host", ""], KEYED, {}, {}, "refuse", {"VSL101"}),
    ("abbreviated --hos wildcard refused", ["m", "--hos", "0.0.0.0"], KEYED, {}, {}, "refuse",
     {"VSL101"}),
    ("underscore spelling --api_key is still taken out", ["m", "--api_key", "x"], {}, {}, {},
     "start", set()),
    ("wildcard allowed by policy with key", ["m", "--host", "0.0.0.0"], KEYED,
     {"allow_wildcard": True}, {}, "start", set()),
    ("wildcard allowed by policy needs a key", ["m", "--host", "0.0.0.0"], {"VLLM_API_KEY": ""},
     {"allow_wildcard": True}, {}, "refuse", {"VSL103"}),
    ("private host without key refused", ["m", "--host", "10.0.0.5"], {"VLLM_API_KEY": ""}, {},
     {}, "refuse", {"VSL103"}),
    ("loopback without key refused by the gate", ["m"], {"VLLM_API_KEY": ""}, {}, {}, "refuse",
     {"VSL250"}),
    ("loopback without key and without gate warns", ["m"], {"VLLM_API_KEY": ""},
     {"gate_policy": {"enabled": False}}, {}, "start", set()),
    ("private host with key accepted", ["m", "--host", "10.0.0.5"], KEYED, {}, {}, "start", set()),
    ("host not on this machine refused", ["m", "--host", "10.9.9.9"], KEYED, {}, {}, "refuse",
     {"VSL102"}),
    ("hostname refused", ["m", "--host", "api.example"], KEYED, {}, {}, "refuse", {"VSL102"}),
    ("port 0 refused", ["m", "--port", "0"], {}, {}, {}, "refuse", {"VSL104"}),
    ("port with = refused", ["m", "--port=0"], {}, {}, {}, "refuse", {"VSL104"}),
    ("uds accepted", ["m", "--uds", "/run/vllm/api.sock"], {}, {}, {}, "start", set()),
    ("dev mode refused", ["m"], {"VLLM_SERVER_DEV_MODE": "1"}, {}, {}, "refuse", {"VSL401"}),
    ("dev mode set false still refused", ["m"], {"VLLM_SERVER_DEV_MODE": "0"}, {}, {}, "refuse",
     {"VSL401"}),
    ("legacy profiler refused", ["m"], {"VLLM_TORCH_PROFILER_DIR": "/tmp/p"}, {}, {}, "refuse",
     {"VSL402"}),
    ("cuda profiler refused", ["m"], {"VLLM_TORCH_CUDA_PROFILE": "1"}, {}, {}, "refuse", {"VSL402"}),
    ("insecure serialization refused", ["m"], {"VLLM_ALLOW_INSECURE_SERIALIZATION": "false"}, {},
     {}, "refuse", {"VSL403"}),
    ("runtime lora refused", ["m"], {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}, {}, {},
     "refuse", {"VSL404"}),
    ("response logging refused", ["m"], {"VLLM_DEBUG_LOG_API_SERVER_RESPONSE": "true"}, {}, {},
     "refuse", {"VSL405"}),
    ("rust frontend refused", ["m"], {"VLLM_USE_RUST_FRONTEND": "1"}, {}, {}, "refuse",
     {"VSL406"}),
    ("rust frontend path refused", ["m"], {"VLLM_RUST_FRONTEND_PATH": "/x/vllm-rs"}, {}, {},
     "refuse", {"VSL406"}),
    ("unlisted plugins refused", ["m"], {"VLLM_PLUGINS": "evil"}, {}, {}, "refuse", {"VSL407"}),
    ("listed plugins accepted", ["m"], {"VLLM_PLUGINS": "good"}, {"plugins": ("good",)}, {},
     "start", set()),
    ("sagemaker loader refused", ["m"], {"SAGEMAKER_MODEL_PATH": "/opt/ml"}, {}, {}, "refuse",
     {"VSL408"}),
    ("custom handler refused", ["m"], {"CUSTOM_FASTAPI_PING_HANDLER": "x:y"}, {}, {}, "refuse",
     {"VSL408"}),
    ("uri VLLM_PORT refused", ["m"], {"VLLM_PORT": "tcp://10.0.0.1:8000"}, {}, {}, "refuse",
     {"VSL409"}),
    ("integer VLLM_PORT accepted", ["m"], {"VLLM_PORT": "30000"}, {}, {}, "start", set()),
    ("logging config refused", ["m"], {"VLLM_LOGGING_CONFIG_PATH": "/x.json"}, {}, {}, "refuse",
     {"VSL410"}),
    ("trace function refused", ["m"], {"VLLM_TRACE_FUNCTION": "1"}, {}, {}, "refuse", {"VSL411"}),
    ("dos guard zero refused", ["m"], {"VLLM_REGEX_COMPILATION_TIMEOUT_S": "0"}, {}, {}, "refuse",
     {"VSL412"}),
    ("dos guard positive accepted", ["m"], {"VLLM_MAX_N_SEQUENCES": "64"}, {}, {}, "start", set()),
    ("responses store refused", ["m"], {"VLLM_ENABLE_RESPONSES_API_STORE": "1"}, {}, {}, "refuse",
     {"VSL413"}),
    ("tokenizer info refused", ["m", "--enable-tokenizer-info-endpoint"], {}, {}, {}, "refuse",
     {"VSL204"}),
    ("profiler config refused", ["m", "--profiler-config", '{"profiler": "torch"}'], {}, {}, {},
     "refuse", {"VSL205"}),
    ("profiler dotted key refused", ["m", "--profiler-config.profiler", "torch"], {}, {}, {},
     "refuse", {"VSL205"}),
    ("user middleware refused", ["m", "--middleware", "evil.mw"], {}, {}, {}, "refuse",
     {"VSL206"}),
    ("grpc refused", ["m", "--grpc"], {}, {}, {}, "refuse", {"VSL207"}),
    ("cors wildcard with credentials refused",
     ["m", "--allowed-origins", '["*"]', "--allow-credentials"], {}, {}, {}, "refuse", {"VSL208"}),
    ("cors wildcard without credentials accepted", ["m", "--allowed-origins", '["*"]'], {}, {},
     {}, "start", set()),
    ("media path / refused", ["m", "--allowed-local-media-path", "/"], {}, {}, {}, "refuse",
     {"VSL209"}),
    ("media path /etc refused", ["m", "--allowed-local-media-path", "/etc/"], {}, {}, {},
     "refuse", {"VSL209"}),
    ("media path in policy accepted", ["m", "--allowed-local-media-path", "/srv/media"], {},
     {"allowed_media_dirs": ("/srv/media",)}, {}, "start", set()),
    ("elastic ep refused", ["m", "--enable-elastic-ep"], {}, {"internal_iface": "eth1"}, {},
     "refuse", {"VSL210"}),
    ("demo tool server refused", ["m", "--tool-server", "demo"], {}, {}, {}, "refuse",
     {"VSL214"}),
    ("log config flag refused", ["m", "--log-config-file", "/x.json"], {}, {}, {}, "refuse",
     {"VSL218"}),
    ("trust remote code refused", ["m", "--trust-remote-code"], {}, {}, {}, "refuse", {"VSL220"}),
    ("trust remote code abbreviated refused", ["m", "--trust-remote"], {}, {}, {}, "refuse",
     {"VSL220"}),
    ("no-trust-remote-code accepted", ["m", "--no-trust-remote-code"], {}, {}, {}, "start", set()),
    ("trust remote code waived", ["m", "--trust-remote-code"], {},
     {"waivers": {"VSL220": "audited"}}, {}, "start", set()),
    ("worker cls refused", ["m", "--worker-cls", "evil.Worker"], {}, {}, {}, "refuse", {"VSL221"}),
    ("executor qualname refused", ["m", "--distributed-executor-backend", "evil.Exec"], {}, {}, {},
     "refuse", {"VSL221"}),
    ("tool parser plugin file refused", ["m", "--tool-parser-plugin", "/tmp/p.py"], {}, {}, {},
     "refuse", {"VSL221"}),
    ("kv connector module path refused",
     ["m", "--kv-transfer-config", '{"kv_connector":"X","kv_role":"kv_both",'
      '"kv_connector_module_path":"evil"}'], {}, {"internal_iface": "eth1"}, {}, "refuse",
     {"VSL221"}),
    ("multi-node without internal refused", ["m", "--nnodes", "2", "-tp", "2"], {}, {}, {},
     "refuse", {"VSL112"}),
    ("headless without internal refused", ["m", "--headless", "--data-parallel-address",
                                           "10.0.0.1"], {}, {}, {}, "refuse", {"VSL112"}),
    ("ray backend without internal refused", ["m", "--distributed-executor-backend", "ray"], {},
     {}, {}, "refuse", {"VSL112"}),
    ("multi-node with internal iface accepted", ["m", "--nnodes", "2", "-tp", "2"], {},
     {"internal_iface": "eth1"}, {}, "start", set()),
    ("multi-node master addr public refused",
     ["m", "--nnodes", "2", "--master-addr", "192.0.2.9"], {}, {"internal_iface": "eth1"}, {},
     "refuse", {"VSL113"}),
    ("master addr wildcard refused", ["m", "--nnodes", "2", "--master-addr", "0.0.0.0"], {},
     {"internal_iface": "eth1"}, {}, "refuse", {"VSL113"}),
    ("master addr other subnet refused", ["m", "--nnodes", "2", "--master-addr", "10.0.1.9"], {},
     {"internal_iface": "eth1"}, {}, "refuse", {"VSL113"}),
    ("dpa inside subnet accepted", ["m", "-dp", "2", "-dpa", "10.0.0.9", "-dpl", "1"], {},
     {"internal_iface": "eth1"}, {}, "start", set()),
    ("dpa= spelling outside subnet refused", ["m", "-dp", "2", "-dpa=10.7.0.9", "-dpl", "1"], {},
     {"internal_iface": "eth1"}, {}, "refuse", {"VSL113"}),
    ("follower without head refused", ["m", "--nnodes", "2", "--node-rank", "1", "--headless"],
     {}, {"internal_iface": "eth1"}, {}, "refuse", {"VSL303"}),
    ("VLLM_HOST_IP public refused", ["m"], {"VLLM_HOST_IP": "192.0.2.2"}, {}, {}, "refuse",
     {"VSL113"}),
    ("GLOO iface mismatch refused", ["m"], {"GLOO_SOCKET_IFNAME": "eth0"},
     {"internal_iface": "eth1"}, {}, "refuse", {"VSL113"}),
    ("internal iface public refused", ["m"], {}, {"internal_iface": "eth0"}, {}, "refuse",
     {"VSL111"}),
    ("internal public waived", ["m"], {}, {"internal_iface": "eth0",
                                           "waivers": {"VSL111": "lab network"}}, {}, "start",
     set()),
    ("internal iface missing refused", ["m"], {}, {"internal_iface": "nope0"}, {}, "refuse",
     {"VSL110"}),
    ("internal cidr ambiguous refused", ["m"], {}, {"internal_cidr": "10.0.0.0/8"}, {}, "refuse",
     {"VSL110"}),
    ("internal cidr unique accepted", ["m"], {}, {"internal_cidr": "10.10.0.0/16"}, {}, "start",
     set()),
    ("internal cgnat accepted", ["m"], {}, {"internal_iface": "cgn0"}, {}, "start", set()),
    ("internal ula accepted", ["m"], {}, {"internal_ip": "fd12:3456::7"}, {}, "start", set()),
    ("internal ip not local refused", ["m"], {}, {"internal_ip": "10.0.0.99"}, {}, "refuse",
     {"VSL110"}),
    ("two internal settings refused", ["m"], {}, {"internal_ip": "10.0.0.5",
                                                  "internal_iface": "eth1"}, {}, "refuse",
     {"VSL110"}),
    ("kv events wildcard refused",
     ["m", "--kv-events-config", '{"enable_kv_cache_events": true}'], {}, {}, {}, "refuse",
     {"VSL114"}),
    ("kv events tcp://*:0 accepted",
     ["m", "--kv-events-config", '{"enable_kv_cache_events": true, "endpoint": "tcp://*:0"}'],
     {}, {}, {}, "start", set()),
    ("mooncake refused", ["m", "--kv-transfer-config",
                          '{"kv_connector":"MooncakeConnector","kv_role":"kv_both"}'], {},
     {"internal_iface": "eth1"}, {}, "refuse", {"VSL115"}),
    ("key file world readable refused", ["m"], {}, {}, {"api_key_file": keyfile(0o644)},
     "refuse", {"VSL202"}),
    ("key file missing refused", ["m"], {}, {}, {"api_key_file": keyfile(value=None,
                                                                      error="does not exist")},
     "refuse", {"VSL202"}),
    ("key file 0600 accepted", ["m", "--host", "10.0.0.5"], {}, {},
     {"api_key_file": keyfile()}, "start", set()),
]


@pytest.mark.parametrize("name,argv,env,pol,hostkw,decision,must_block", CASES,
                         ids=[c[0] for c in CASES])
def test_decision_table(name, argv, env, pol, hostkw, decision, must_block):
    plan = plan_for(argv, {**KEYED, **env}, Policy(**pol), host(**hostkw))
    assert plan.decision == decision, [f.to_dict() for f in plan.findings]
    assert must_block <= blocking_ids(plan), [f.to_dict() for f in plan.findings]
    if decision == "start":
        assert not blocking_ids(plan)


def test_api_key_never_in_argv_and_moves_to_env():
    """--api-key on the command line is removed from vLLM's argv, reported, and handed over in
    VLLM_API_KEY (redacted in every view)."""
    plan = plan_for(["m", "--api-key", KEY, "--host", "10.0.0.5"], env={})
    assert KEY not in " ".join(plan.argv)
    assert plan.env["VLLM_API_KEY"] == KEY
    assert "VSL201" in ids(plan)
    assert plan.redacted_env()["VLLM_API_KEY"] == "<redacted>"


def test_key_sources_precedence():
    """--api-key-file beats the systemd credential, which beats VLLM_API_KEY."""
    cred = SecretFile("/run/credentials/x/vllm-api-key", "from-cred", 0o400)
    p = plan_for(["m"], {"VLLM_API_KEY": "from-env"}, facts=host(credential_key=cred))
    assert p.env["VLLM_API_KEY"] == "from-cred"
    p = plan_for(["m"], {"VLLM_API_KEY": "from-env"},
                 facts=host(credential_key=cred, api_key_file=keyfile(value="from-file")))
    assert p.env["VLLM_API_KEY"] == "from-file"


def test_host_defaults_to_policy_address_and_gate_is_injected():
    plan = plan_for(["m"])
    assert "--host=127.0.0.1" in plan.argv or ("--host" in plan.argv)
    assert any(GATE_MIDDLEWARE in a for a in plan.argv)
    assert "VSL107" in ids(plan)
    plan = plan_for(["m"], policy=Policy(api_host="10.0.0.5"), env=KEYED)
    assert plan.api.host == "10.0.0.5"


def test_hygiene_env_and_dangerous_vars_removed():
    env = {"VLLM_SERVER_DEV_MODE": "1", "HOST_IP": "1.2.3.4", "NOTIFY_SOCKET": "/run/n",
           "PATH": "/usr/bin", "VSL_AUDIT": "warn", "VLLM_API_KEY": KEY}
    plan = plan_for(["m"], env, Policy(waivers={}))
    for name in ("VLLM_SERVER_DEV_MODE", "HOST_IP", "NOTIFY_SOCKET", "VSL_AUDIT"):
        assert name not in plan.env and name in plan.env_removed
    assert plan.env["PATH"] == "/usr/bin"
    for k, v in {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_DO_NOT_TRACK": "1",
                 "VLLM_MEDIA_URL_ALLOW_REDIRECTS": "0", "VLLM_PLUGINS": ""}.items():
        assert plan.env[k] == v
    assert plan.env["VLLM_RPC_BASE_PATH"] == plan.rpc_dir == plan.env["TMPDIR"]
    assert plan.rpc_dir.startswith("/run/test/")


def test_waived_dangerous_var_is_passed_through_and_reported():
    plan = plan_for(["m"], {"VLLM_SERVER_DEV_MODE": "1", "VLLM_API_KEY": KEY},
                    Policy(waivers={"VSL401": "lab only"}))
    assert plan.decision == "start"
    assert plan.env["VLLM_SERVER_DEV_MODE"] == "1"
    f = next(f for f in plan.findings if f.rule_id == "VSL401")
    assert f.waived == "lab only"


def test_internal_pins_from_one_setting():
    """One interface name drives VLLM_HOST_IP, gloo/NCCL/TP interfaces, the TCPStore guard, the
    master and data-parallel addresses and the audit's expectations."""
    plan = plan_for(["m", "--nnodes", "2", "-tp", "2"], policy=Policy(internal_iface="ib0"))
    e = plan.env
    assert e["VLLM_HOST_IP"] == "10.10.0.7"
    assert e["GLOO_SOCKET_IFNAME"] == "ib0" and e["TP_SOCKET_IFNAME"] == "ib0"
    assert e["NCCL_SOCKET_IFNAME"] == "=ib0"
    assert "HCCL_IF_IP" not in e
    assert e["VSL_TCPSTORE_ALLOWED"].split(",")[0] == "10.10.0.7"
    args = vllm_flags.parse(list(plan.argv[4:]))
    assert args.get("master_addr") == "10.10.0.7"
    assert args.get("data_parallel_address") == "10.10.0.7"
    assert plan.expected.internal_ips[0] == "10.10.0.7"
    plan = plan_for(["m"], policy=Policy(internal_iface="ib0"), accelerator="ascend")
    assert plan.env["HCCL_IF_IP"] == "10.10.0.7" and plan.env["HCCL_SOCKET_IFNAME"] == "=ib0"


def test_single_node_defaults_to_loopback():
    plan = plan_for(["m"])
    assert plan.env["VLLM_HOST_IP"] == "127.0.0.1"
    assert plan.env["GLOO_SOCKET_IFNAME"] == "lo"
    assert plan.expected.internal_ips == ("127.0.0.1", "::1")


def test_follower_keeps_head_address():
    plan = plan_for(["m", "--nnodes", "2", "--node-rank", "1", "--headless", "--master-addr",
                     "10.0.0.1"], policy=Policy(internal_iface="eth1"))
    assert plan.decision == "start"
    args = vllm_flags.parse(list(plan.argv[4:]))
    assert args.get("master_addr") == "10.0.0.1"


def test_config_yaml_counts_like_flags(tmp_path):
    """A --config YAML's keys are judged exactly like flags, and the child gets them expanded."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("host: 0.0.0.0\ntrust_remote_code: true\nmiddleware: [evil.mw]\n")
    plan = plan_for(["m", "--config", str(cfg)], KEYED)
    assert {"VSL101", "VSL220", "VSL206"} <= blocking_ids(plan)
    assert "--config" not in plan.argv


def test_vllm_command_override():
    plan = plan_for(["m"], policy=Policy(vllm_command=("vllm-mindspore", "serve")))
    assert plan.argv[:3] == ("vllm-mindspore", "serve", "m")


def test_rule_crash_fails_closed(monkeypatch):
    """A rule that raises is itself a blocking finding (VSL901)."""
    from vllm_secure_launch.rules import flag_rules

    def boom(ctx):
        raise ValueError("boom")

    monkeypatch.setattr(flag_rules, "CHECKS", (boom,))
    plan = plan_for(["m"])
    assert plan.decision == "refuse" and "VSL901" in blocking_ids(plan)


def test_plan_is_frozen_and_pure():
    plan = plan_for(["m"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.decision = "start"  # type: ignore[misc]
    assert plan_for(["m"]) == plan


# name, argv, env, policy kwargs, host kwargs, rule id that must be reported (not blocking)
NOTICES = [
    ("public API address warns", ["m", "--host", "192.0.2.2"], {}, {}, {}, "VSL105"),
    ("unix socket API is reported", ["m", "--uds", "/run/v.sock"], {}, {}, {}, "VSL106"),
    ("hostname resolving publicly is reported", ["m"], {}, {},
     {"hostname_addrs": ("192.0.2.2",)}, "VSL116"),
    ("no key without gate warns", ["m"], {"VLLM_API_KEY": ""}, {"gate_policy": {"enabled": False}},
     {}, "VSL203"),
    ("tokens-only warns", ["m", "--tokens-only"], {}, {}, {}, "VSL211"),
    # --trust-request-chat-template now refuses (issue 13): tests/test_refusals_2026.py
    ("hf token on argv moves to env", ["m", "--hf-token", "hf_x"], {}, {}, {}, "VSL217"),
    ("multi-node pins are reported", ["m", "--nnodes", "2"], {}, {"internal_iface": "eth1"}, {},
     "VSL301"),
    ("ray daemons warn", ["m", "--distributed-executor-backend", "ray"], {},
     {"internal_iface": "eth1"}, {}, "VSL302"),
    ("scrubbed variables are reported", ["m"], {"HOST_IP": "1.2.3.4"}, {}, {}, "VSL414"),
    ("duplicate flags are reported", ["m", "--port", "1", "--port", "8001"], {}, {}, {}, "VSL903"),
    ("unknown flags are reported", ["m", "--no-such-flag"], {}, {}, {}, "VSL902"),
]


@pytest.mark.parametrize("name,argv,env,pol,hostkw,rule", NOTICES, ids=[c[0] for c in NOTICES])
def test_notices_table(name, argv, env, pol, hostkw, rule):
    plan = plan_for(argv, {**KEYED, **env}, Policy(**pol), host(**hostkw))
    hits = [f for f in plan.findings if f.rule_id == rule]
    assert hits and not any(f.blocking for f in hits), [f.to_dict() for f in plan.findings]


def test_hf_token_never_in_argv():
    plan = plan_for(["m", "--hf-token", "hf_secret"])
    assert "hf_secret" not in " ".join(plan.argv)
    assert plan.env["HF_TOKEN"] == "hf_secret" and "HF_TOKEN" in plan.secret_env


def test_headless_follower_has_no_api_and_no_host_flag():
    """A --headless follower runs no API server: no --host is added, the plan's API is
    headless (the supervisor then needs no /health), and API rules do not apply."""
    plan = plan_for(["m", "--nnodes", "2", "--node-rank", "1", "--headless", "--master-addr",
                     "10.0.0.1"], policy=Policy(internal_iface="eth1"))
    assert plan.api.headless and plan.decision == "start"
    assert not any(a.startswith("--host") for a in plan.argv)
    assert "VSL107" not in ids(plan)


@pytest.mark.parametrize("extra,ok", [
    ({"bootstrap_server_address": "10.0.0.9:8998"}, True),
    ({"bootstrap_server_address": "192.0.2.9:8998"}, False),
    ({"host_ip": "[fd00::9]:1"}, False),
    ({"proxy_ip": "10.0.0.7"}, True),
    ({"secondary_tiers": [{"type": "kvcr", "control_host": "0.0.0.0"}]}, False),
])
def test_kv_connector_hosts_must_be_internal(extra, ok):
    """Hosts inside --kv-transfer-config (Mooncake bootstrap, MoRIIO, offload tiers) must lie in
    the internal network (VSL113)."""
    import json

    cfg = {"kv_connector": "NixlConnector", "kv_role": "kv_both",
           "kv_connector_extra_config": extra}
    plan = plan_for(["m", "--kv-transfer-config", json.dumps(cfg)],
                    policy=Policy(internal_iface="eth1"))
    assert ("VSL113" not in blocking_ids(plan)) is ok, [f.to_dict() for f in plan.findings]


@pytest.mark.parametrize("cmd,known", [
    (("vllm", "serve"), True), (("/opt/venv/bin/vllm", "serve"), True),
    (("vllm-mindspore", "serve"), True),
    (("python3", "-m", "vllm.entrypoints.cli.main", "serve"), True),
    (("/usr/bin/python3.11", "-I", "-m", "vllm_secure_launch.supervise.entry", "serve"), True),
    (("env", "VLLM_ALLOW_INSECURE_SERIALIZATION=1", "vllm", "serve"), False),
    (("vllm", "serve", "--trust-remote-code"), False), (("vllm",), False),
    (("bash", "-c", "vllm serve"), False), (("python3", "-c", "import os", "serve"), False),
    (("python3", "-m", "evil", "serve"), False),
])
def test_vllm_command_judgement(cmd, known):
    """Only known launchers of vLLM's serve pass; anything else is VSL224 (issue 10)."""
    from vllm_secure_launch.rules.flag_rules import known_vllm_command

    assert known_vllm_command(cmd) is known
    plan = plan_for(["m"], policy=Policy(vllm_command=cmd))
    assert ("VSL224" in {f.rule_id for f in plan.findings}) is (not known)
