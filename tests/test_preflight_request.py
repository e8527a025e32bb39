"""PreflightRequest.from_serve_args: the device count, memory fraction and dtype vLLM 0.32 uses.

Pure: ServeArgs are built by hand (values as written, keyed by argparse dest).
"""

from __future__ import annotations

import pytest

from vllm_secure_launch.errors import UsageError
from vllm_secure_launch.preflight import DEFAULT_MEMORY_FRACTION, PreflightRequest
from vllm_secure_launch.preflight.request import local_device_count
from vllm_secure_launch.surface.args import ServeArgs


def req(values: dict, environ: dict | None = None, accelerator: str | None = None,
        spellings: dict | None = None) -> PreflightRequest:
    args = ServeArgs(model="m", values=values, spellings=spellings or {})
    return PreflightRequest.from_serve_args(args, environ or {}, accelerator)


def test_defaults_are_vllm_032s_one_device_and_092_fraction():
    r = req({})
    assert (r.local_devices, r.memory_fraction, r.dtype) == (1, 0.92, "auto")
    assert DEFAULT_MEMORY_FRACTION == 0.92  # vllm/config/cache.py in 0.32 (the issue said 0.9)
    assert r.memory_fraction_source == "vLLM 0.32 default"
    assert r.accelerator == "auto"


@pytest.mark.parametrize("values, expected", [
    ({"tensor_parallel_size": "4"}, 4),
    ({"tensor_parallel_size": "2", "pipeline_parallel_size": "2"}, 4),
    ({"tensor_parallel_size": "2", "prefill_context_parallel_size": "2"}, 4),
    ({"tensor_parallel_size": "2", "data_parallel_size": "4"}, 8),  # all DP ranks local
    ({"tensor_parallel_size": "2", "data_parallel_size": "4", "data_parallel_size_local": "2"},
     4),
    ({"data_parallel_size": "4", "data_parallel_size_local": "0"}, 0),  # API-only node
    ({"tensor_parallel_size": "2", "data_parallel_size": "4", "data_parallel_rank": "1"}, 2),
    ({"tensor_parallel_size": "2", "data_parallel_size": "4",
      "data_parallel_external_lb": True}, 2),
    # --nnodes: the whole world split evenly over the nodes (EngineArgs, 0.32)
    ({"tensor_parallel_size": "8", "pipeline_parallel_size": "2", "nnodes": "2"}, 8),
    ({"tensor_parallel_size": "4", "data_parallel_size": "4", "nnodes": "2"}, 8),
    ({"tensor_parallel_size": "4", "data_parallel_size": "4", "nnodes": "2",
      "data_parallel_size_local": "2"}, 8),
])
def test_local_device_count_mirrors_vllm(values, expected):
    assert req(values).local_devices == expected


def test_nnodes_not_dividing_the_world_is_a_layout_error():
    r = req({"tensor_parallel_size": "3", "nnodes": "2"})
    assert r.layout_error and "does not divide" in r.layout_error
    assert req({"tensor_parallel_size": "2", "nnodes": "2", "node_rank": "2"}).layout_error


def test_ray_backends_mark_placement_as_ray():
    assert req({"distributed_executor_backend": "ray"}).placed_by_ray
    assert req({"data_parallel_backend": "ray"}).placed_by_ray
    assert not req({"distributed_executor_backend": "mp"}).placed_by_ray


def test_memory_fraction_dtype_and_device_ids_as_written():
    r = req({"gpu_memory_utilization": "0.5", "dtype": "BFloat16", "device_ids": "2, 3"},
            spellings={"gpu_memory_utilization": "--device-memory-utilization"})
    assert (r.memory_fraction, r.dtype, r.device_ids) == (0.5, "bfloat16", ("2", "3"))
    assert r.memory_fraction_source == "--device-memory-utilization"
    assert req({"device_ids": ["0", "1"]}).device_ids == ("0", "1")


@pytest.mark.parametrize("values, words", [
    ({"tensor_parallel_size": "two"}, "--tensor-parallel-size 'two' is not a whole number"),
    ({"data_parallel_size": "-1"}, "negative"),
    ({"gpu_memory_utilization": "1.5"}, "not a fraction"),
    ({"gpu_memory_utilization": "0"}, "not a fraction"),
    ({"gpu_memory_utilization": "lots"}, "not a fraction"),
])
def test_malformed_numbers_are_usage_errors_with_a_fix(values, words):
    with pytest.raises(UsageError) as exc:
        req(values)
    assert words in exc.value.what and exc.value.fix


def test_accelerator_cli_beats_env_beats_auto_and_unknown_is_usage():
    assert req({}, {"VSL_ACCELERATOR": "cuda"}).accelerator == "cuda"
    assert req({}, {"VSL_ACCELERATOR": "cuda"}, "cpu").accelerator == "cpu"
    with pytest.raises(UsageError):
        req({}, {"VSL_ACCELERATOR": "tpu"})


def test_environ_is_kept_out_of_repr_and_to_dict():
    r = req({}, {"HF_TOKEN": "hf_secret"})
    assert "hf_secret" not in repr(r) and "hf_secret" not in str(r.to_dict())


def test_local_device_count_explains_itself():
    n, basis, err = local_device_count(tp=2, pp=1, pcp=1, dp=4, dpl=None, nnodes=2, node_rank=0,
                                       external_lb=False)
    assert (n, err) == (4, None) and "nnodes 2" in basis
