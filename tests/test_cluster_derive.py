"""Planner tables for the multi-node derivation (cluster/): hostlist expansion, ranks, head
address, job-unique ports, DP start ranks, layouts and refusals. Pure: no Slurm, no processes."""

from __future__ import annotations

import pytest

from vllm_secure_launch.addresses import IfAddr
from vllm_secure_launch.cluster import derive as D
from vllm_secure_launch.cluster.hostlist import HostlistError, expand, tasks_per_node
from vllm_secure_launch.config.policy import Policy
from vllm_secure_launch.host.facts import HostFacts
from vllm_secure_launch.plan.build import build_plan
from vllm_secure_launch.surface import flags

IFACES = {"lo": (IfAddr("127.0.0.1", 8),), "eth0": (IfAddr("10.200.0.12", 24),),
          "pub0": (IfAddr("198.18.0.12", 24),)}
HEAD_IFACES = {"lo": (IfAddr("127.0.0.1", 8),), "eth0": (IfAddr("10.200.0.11", 24),),
               "pub0": (IfAddr("198.18.0.11", 24),)}
RESOLVES = {"node1": ("10.200.0.11",)}


@pytest.mark.parametrize("text,hosts", [
    ("node1", ("node1",)),
    ("gpu[01-04,07]", ("gpu01", "gpu02", "gpu03", "gpu04", "gpu07")),
    ("n[1-2],m3", ("n1", "n2", "m3")),
    ("n[8-11]", ("n8", "n9", "n10", "n11")),
    ("n[008-010]", ("n008", "n009", "n010")),
    ("r[1-2]-n[01-02]", ("r1-n01", "r1-n02", "r2-n01", "r2-n02")),
    ("a,b[3],c.example.org", ("a", "b3", "c.example.org")),
    ("node[1-2]", ("node1", "node2")),
])
def test_hostlist_expands_like_slurm(text, hosts):
    assert expand(text) == hosts


@pytest.mark.parametrize("text", ["", "n[1-", "n]1[", "n[2-1]", "n[a-b]", "a,,b", "n[[1]]",
                                  "n[0-99999999]", "n 1"])
def test_hostlist_refuses_malformed_lists(text):
    with pytest.raises(HostlistError):
        expand(text)


@pytest.mark.parametrize("text,counts", [("1(x2)", (1, 1)), ("2(x3),1", (2, 2, 2, 1)),
                                         ("1", (1,)), ("4,1", (4, 1))])
def test_tasks_per_node(text, counts):
    assert tasks_per_node(text) == counts


@pytest.mark.parametrize("job,ports", [("1", (20002, 20003)), ("4500", (20000, 20001)),
                                       ("4499", (28998, 28999)), (None, None)])
def test_job_unique_ports_stay_in_the_documented_range(job, ports):
    assert D.job_ports(job) == ports


def slurm_env(rank: int, nodes: str = "node[1-2]", tasks: str = "1(x2)", job: str = "42",
              **extra: str) -> dict[str, str]:
    names = expand(nodes)
    return {"SLURM_JOB_ID": job, "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": nodes,
            "SLURM_JOB_NODELIST": nodes, "SLURMD_NODENAME": names[rank],
            "SLURM_NODEID": str(rank), "SLURM_STEP_TASKS_PER_NODE": tasks,
            "SLURM_LOCALID": "0", **extra}


def run(argv, environ, *, rank=1, accelerator="cpu", resolves=RESOLVES, **pol):
    policy = Policy(**{"internal_cidr": "10.200.0.0/24", **pol})
    args = flags.parse(list(argv))
    ifaces = HEAD_IFACES if rank == 0 else IFACES
    return D.amend(args, environ, policy, ifaces, accelerator, resolves)


def ids(d):
    return [f.rule_id for f in d.findings]


def test_tp_across_two_nodes_follower():
    d = run(["m", "-tp", "2"], slurm_env(1))
    v = d.args.values
    assert (v["nnodes"], v["node_rank"], v["master_addr"], v["master_port"]) == \
        ("2", "1", "10.200.0.11", "20084")
    assert v["headless"] is True and v["distributed_executor_backend"] == "mp"
    assert ids(d) == ["VSL320"]


def test_tp_across_two_nodes_head_uses_its_own_internal_address():
    d = run(["m", "-tp", "2"], slurm_env(0), rank=0, resolves={})
    v = d.args.values
    assert v["node_rank"] == "0" and v["master_addr"] == "10.200.0.11"
    assert "headless" not in v


@pytest.mark.parametrize("gpus,argv,mode,per_node", [
    ("8", ["m", "-tp", "8", "-pp", "2"], "tp", 8),
    ("4", ["m", "-tp", "8"], "tp", 4),
    ("8", ["m", "-dp", "4", "-tp", "4"], "dp", 2),
    ("8", ["m", "-dp", "4", "-dpl", "2"], "dp", 2),
])
def test_layouts_on_gpus(gpus, argv, mode, per_node):
    env = slurm_env(1, extra_gpu := "gpu[01-02]") | {"SLURM_GPUS_ON_NODE": gpus}
    d = run(argv, env, accelerator="cuda", resolves={"gpu01": ("10.200.0.11",)})
    assert ids(d) == ["VSL320"], d.findings
    v = d.args.values
    if mode == "tp":
        assert v["nnodes"] == "2" and v["node_rank"] == "1"
    else:
        assert v["data_parallel_size_local"] == str(per_node)
        assert v["data_parallel_start_rank"] == str(per_node)
        assert v["data_parallel_address"] == "10.200.0.11"
        assert v["data_parallel_rpc_port"] == "20085"
        assert "nnodes" not in v
    assert extra_gpu


@pytest.mark.parametrize("rank,start", [(0, "0"), (1, "2"), (2, "4"), (3, "6")])
def test_dp_start_ranks_per_node(rank, start):
    env = slurm_env(rank, "n[1-4]") | {"SLURM_GPUS_ON_NODE": "2"}
    d = D.amend(flags.parse(["m", "-dp", "8"]), env, Policy(internal_ip="10.200.0.12"),
                IFACES, "cuda", {"n1": ("10.200.0.11",)})
    # the head gets none: vLLM 0.32 reads a start rank without --headless as hybrid LB
    assert d.args.values.get("data_parallel_start_rank", "0") == start
    assert ("data_parallel_start_rank" in d.args.values) == (rank > 0)
    assert ("headless" in d.args.values) == (rank > 0)


def test_dp_two_cpu_nodes():
    d = run(["m", "-dp", "2"], slurm_env(1))
    v = d.args.values
    assert (v["data_parallel_size_local"], v["data_parallel_start_rank"]) == ("1", "1")
    assert v["headless"] is True


@pytest.mark.parametrize("argv,env,why", [
    (["m", "-tp", "3"], slurm_env(1), "not a multiple"),
    (["m"], slurm_env(1), "fits on one node"),
    (["m", "-dp", "3"], slurm_env(1), "does not split"),
    (["m", "-tp", "4"], slurm_env(1), "needs 2 devices per node"),
    (["m", "-dp", "2", "-tp", "2"], slurm_env(1), "do not fit"),
])
def test_layouts_that_do_not_split_are_refused(argv, env, why):
    d = run(argv, env)
    assert ids(d) == ["VSL324"] and why in d.findings[0].message
    assert d.args.values == flags.parse(argv).values  # nothing derived


def test_two_tasks_per_node_is_refused():
    d = run(["m", "-tp", "2"], slurm_env(1, tasks="2(x2)"))
    assert ids(d) == ["VSL321"]
    d = run(["m", "-tp", "2"], slurm_env(1, SLURM_LOCALID="1"))
    assert ids(d) == ["VSL321"]
    d = run(["m"], slurm_env(0, nodes="node1", tasks="2"), rank=0)
    assert ids(d) == ["VSL321"]


@pytest.mark.parametrize("argv,pol", [
    (["m", "-tp", "2", "--node-rank", "0"], {}),
    (["m", "-tp", "2", "--nnodes", "4"], {}),
    (["m", "-dp", "2", "--data-parallel-start-rank", "0"], {}),
    (["m", "-tp", "2"], {"node_rank": "0"}),
    (["m", "-tp", "2"], {"node_list": "node[1-3]"}),
])
def test_contradicting_explicit_values_are_refused(argv, pol):
    d = run(argv, slurm_env(1), **pol)
    assert "VSL322" in ids(d), d.findings


def test_headless_head_is_refused():
    d = run(["m", "-tp", "2", "--headless"], slurm_env(0), rank=0)
    assert "VSL322" in ids(d)


def test_explicit_values_that_agree_win_and_are_kept():
    d = run(["m", "-tp", "2", "--node-rank", "1", "--master-port", "31000"], slurm_env(1))
    assert ids(d) == ["VSL320"]
    assert d.args.values["master_port"] == "31000"


@pytest.mark.parametrize("resolves", [{}, {"node1": ("198.18.0.11",)}])
def test_head_name_outside_the_internal_network_is_refused(resolves):
    d = run(["m", "-tp", "2"], slurm_env(1), resolves=resolves)
    assert ids(d) == ["VSL323"]


def test_written_master_addr_needs_no_resolution():
    d = run(["m", "-tp", "2", "--master-addr", "10.200.0.11"], slurm_env(1), resolves={})
    assert ids(d) == ["VSL320"]


def test_multinode_without_internal_setting_is_refused():
    d = run(["m", "-tp", "2"], slurm_env(1), internal_cidr="")
    assert ids(d) == ["VSL326"]


def test_batch_script_of_a_multinode_job_is_refused():
    env = slurm_env(0)
    del env["SLURM_STEP_NODELIST"]
    assert ids(run(["m", "-tp", "2"], env, rank=0)) == ["VSL325"]


def test_slurm_off_and_on():
    assert run(["m", "-tp", "2"], slurm_env(1), slurm="off").findings == ()
    assert ids(run(["m"], {}, slurm="on")) == ["VSL325"]
    assert run(["m"], {}).findings == ()  # not in Slurm, nothing explicit: a one-node layout


def test_one_node_allocation_derives_nothing():
    d = run(["m", "-tp", "2"], slurm_env(0, nodes="node1", tasks="1"), rank=0)
    assert d.findings == () and d.args.values == flags.parse(["m", "-tp", "2"]).values


@pytest.mark.parametrize("pol,ok", [
    ({"node_list": "node[1-2]", "node_rank": "1"}, True),
    ({"node_list": "node1,node2", "node_rank": "1"}, True),
    ({"node_list": "node[1-2]"}, False),
    ({"node_rank": "1"}, False),
    ({"node_list": "node[1-2]", "node_rank": "2"}, False),
    ({"node_list": "node[1-2]", "node_rank": "x"}, False),
    ({"node_list": "node[1-", "node_rank": "1"}, False),
])
def test_explicit_node_list_outside_slurm(pol, ok):
    d = run(["m", "-tp", "2"], {}, **pol)
    if ok:
        assert ids(d) == ["VSL320"]
        assert d.args.values["master_addr"] == "10.200.0.11"
        assert "master_port" not in d.args.values  # no job: vLLM's default port
    else:
        assert ids(d) == ["VSL325"]


def test_ray_backend_is_left_to_ray():
    d = run(["m", "-tp", "2", "--distributed-executor-backend", "ray"], slurm_env(1))
    assert ids(d) == ["VSL320"] and "nnodes" not in d.args.values


def test_the_plan_carries_the_derived_options_and_the_follower_env():
    policy = Policy(internal_cidr="10.200.0.0/24", api_key_file="")
    d = run(["m", "-tp", "2"], slurm_env(1))
    host = HostFacts(interfaces=IFACES, pid=7)
    plan = build_plan(d.args, {"VLLM_API_KEY": "k" * 32}, policy, host,
                      extra_findings=d.findings)
    argv = " ".join(plan.argv)
    assert "--nnodes=2" in argv and "--node-rank=1" in argv and "--headless" in argv
    assert "--master-addr=10.200.0.11" in argv and "--master-port=20084" in argv
    assert plan.env["VLLM_HOST_IP"] == "10.200.0.12"
    assert plan.env["GLOO_SOCKET_IFNAME"] == "eth0"
    assert plan.env["VSL_TCPSTORE_ALLOWED"].startswith("10.200.0.12")
    assert not plan.refused, plan.findings


def test_a_refusal_refuses_the_plan():
    d = run(["m", "-tp", "3"], slurm_env(1))
    plan = build_plan(d.args, {"VLLM_API_KEY": "k" * 32}, Policy(internal_cidr="10.200.0.0/24"),
                      HostFacts(interfaces=IFACES), extra_findings=d.findings)
    assert plan.refused


@pytest.mark.parametrize("env,acc,n", [
    ({}, "cpu", 1), ({"SLURM_GPUS_ON_NODE": "4"}, "cuda", 4),
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, "cuda", 2),
    ({"ASCEND_RT_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, "ascend", 8), ({}, "cuda", None),
])
def test_devices_per_node(env, acc, n):
    assert D.devices_per_node(env, acc) == n


@pytest.mark.parametrize("rank,ip,ifaces", [(0, "10.200.0.11", HEAD_IFACES),
                                            (1, "10.200.0.12", IFACES)])
def test_ascend_nodes_get_their_own_hccl_variables(rank, ip, ifaces):
    """Each node pins HCCL to its own internal address and interface, from the same setting."""
    env = slurm_env(rank) | {"ASCEND_RT_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
    policy = Policy(internal_cidr="10.200.0.0/24")
    d = D.amend(flags.parse(["m", "-tp", "16"]), env, policy, ifaces, "ascend", RESOLVES)
    assert [f.rule_id for f in d.findings] == ["VSL320"]
    plan = build_plan(d.args, {**env, "VLLM_API_KEY": "k" * 32}, policy,
                      HostFacts(interfaces=ifaces), accelerator="ascend",
                      extra_findings=d.findings)
    assert plan.env["HCCL_IF_IP"] == ip and plan.env["VLLM_HOST_IP"] == ip
    assert plan.env["HCCL_SOCKET_IFNAME"] == "=eth0"
    assert d.args.values["master_addr"] == "10.200.0.11"


@pytest.mark.parametrize("job,base,host_range", [
    ("1", 61048, "61080-61095"), ("94", 61000, "61032-61047"), ("93", 65464, "65496-65511"),
    ("42", 63016, "63048-63063"),
])
def test_hccl_ports_are_job_unique_and_stay_in_the_documented_range(job, base, host_range):
    assert D.hccl_ports(job) == {"HCCL_IF_BASE_PORT": str(base),
                                 "HCCL_HOST_SOCKET_PORT_RANGE": host_range}
    assert D.HCCL_SLOTS == 94 and D.job_ports(job)[1] < D.HCCL_BASE  # type: ignore[index]
    assert D.hccl_ports(None) == {} and D.hccl_ports("") == {}


def ascend_plan(rank: int, env: dict[str, str], argv=("m", "-tp", "16")):
    ifaces = HEAD_IFACES if rank == 0 else IFACES
    policy = Policy(internal_cidr="10.200.0.0/24")
    d = D.amend(flags.parse(list(argv)), env, policy, ifaces, "ascend", RESOLVES)
    plan = build_plan(d.args, {**env, "VLLM_API_KEY": "k" * 32}, policy,
                      HostFacts(interfaces=ifaces), accelerator="ascend",
                      extra_findings=d.findings, extra_env=d.env)
    return d, plan


NPUS = {"ASCEND_RT_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}


@pytest.mark.parametrize("rank,argv,ip", [
    (0, ("m", "-tp", "16"), "10.200.0.11"), (1, ("m", "-tp", "16"), "10.200.0.12"),
    (0, ("m", "-tp", "8", "-dp", "2"), "10.200.0.11"),
    (1, ("m", "-tp", "8", "-dp", "2"), "10.200.0.12"),
])
def test_hccl_variables_per_node(rank, argv, ip):
    """The planner table for HCCL per node: the node's own address and interface, the job's
    HCCL host ports (the same on every node of the job), and the audit expects those ports."""
    d, plan = ascend_plan(rank, slurm_env(rank) | NPUS, argv)
    assert not plan.refused, [f for f in plan.findings if f.blocking]
    env = plan.env
    assert (env["HCCL_IF_IP"], env["HCCL_SOCKET_IFNAME"], env["HCCL_IF_BASE_PORT"],
            env["HCCL_HOST_SOCKET_PORT_RANGE"]) == (ip, "=eth0", "63016", "63048-63063")
    assert "HCCL_NPU_SOCKET_PORT_RANGE" not in env  # not pinned (plan/hccl.py says why)
    assert {k: plan.env_set[k] for k in ("HCCL_IF_BASE_PORT", "HCCL_HOST_SOCKET_PORT_RANGE")}
    assert [(r.name, r.first, r.last) for r in plan.expected.port_ranges] == [
        ("HCCL_IF_BASE_PORT", 63016, 63047), ("HCCL_HOST_SOCKET_PORT_RANGE", 63048, 63063)]
    assert "HCCL_IF_BASE_PORT=63016" in d.findings[0].message  # VSL320 says what it derived


def test_exported_hccl_ports_win_and_the_audit_expects_those():
    env = slurm_env(1) | NPUS | {"HCCL_IF_BASE_PORT": "50000",
                                 "HCCL_HOST_SOCKET_PORT_RANGE": "51000-51003,51010"}
    d, plan = ascend_plan(1, env)
    assert d.env == {} and plan.env["HCCL_IF_BASE_PORT"] == "50000"
    assert [(r.first, r.last) for r in plan.expected.port_ranges] == [
        (50000, 50031), (51000, 51003), (51010, 51010)]


def test_no_hccl_ports_outside_a_job_off_ascend_or_on_one_node():
    explicit = Policy(internal_cidr="10.200.0.0/24", node_list="node[1-2]", node_rank="1")
    d = D.amend(flags.parse(["m", "-tp", "16"]), NPUS, explicit, IFACES, "ascend", RESOLVES)
    assert d.env == {} and d.args.values["node_rank"] == "1"
    assert run(["m", "-tp", "2"], slurm_env(1)).env == {}  # cpu
    one = slurm_env(0, nodes="node1", tasks="1") | NPUS
    d, plan = ascend_plan(0, one, ("m", "-tp", "8"))
    assert d.env == {} and "HCCL_IF_BASE_PORT" not in plan.env and not plan.expected.port_ranges


@pytest.mark.parametrize("text,spec", [
    ("auto", ()), ("60000-60050", ((60000, 60050),)),
    ("61000,61050-61100,61200-61210", ((61000, 61000), (61050, 61100), (61200, 61210))),
    ("60050-60000", None), ("x", None), ("0", None), ("70000", None), ("1-", None),
])
def test_hccl_port_spec_parser(text, spec):
    from vllm_secure_launch.plan.hccl import parse_port_spec

    assert parse_port_spec(text) == spec


def test_non_ascii_digits_are_values_not_crashes():
    """str.isdigit() accepts "²", which int() refuses: the numbers the operator or Slurm sets
    are read as ASCII decimals, so such a value is malformed (or hashed), never a crash."""
    from vllm_secure_launch.plan.hccl import expected_ranges, parse_port_spec
    from vllm_secure_launch.rules.ray_live_rules import split_hostport

    assert parse_port_spec("²-3") is None and parse_port_spec("60000-6000²") is None
    assert expected_ranges({"HCCL_IF_BASE_PORT": "²"}) == ()
    assert D.job_ports("²") is not None and D.hccl_ports("²")
    assert split_hostport("10.0.0.1:²")[1] is None


def test_rendered_script_paths_are_absolute_and_home_expanded(monkeypatch):
    """`render sbatch` writes the paths each node reads: absolute (a node starts in the job's
    directory), with `~` expanded as the local preflight reads it."""
    from vllm_secure_launch.cli.render_sbatch import launcher_flags

    monkeypatch.setenv("HOME", "/home/svc")
    flags_ = launcher_flags({"npu_peers": "~/rt.json", "policy": "p.toml",
                             "api_key_file": "/k"})
    assert "/home/svc/rt.json" in flags_ and "/k" in flags_
    assert any(f.endswith("/p.toml") and f.startswith("/") for f in flags_)
