"""Gradients of the SC21 runs (Narayanan et al. 2021, Table 1) as the authors' examples/sc21/run_table_1.sh ran them.

run_table_1.sh sets DDP=torch for 1.7B, 3.6B, 7.5B and 18B and DDP=local for every pipelined size (39B, 76B, 145B,
310B, 530B, 1T). PyTorch DDP all-reduces gradient buckets during the last microbatch's backward; Megatron-LM's
2021 local DDP all-reduces its contiguous fp16 buffer once after the whole backward (megatron/training.py train_step,
'backward-params-all-reduce') and, having no wgrad-fused accumulation then, adds every microbatch's weight gradients
into that buffer by a kernel of its own (megatron/model/distributed.py _make_param_hook,
param.main_grad.add_(param.grad.data)): read 2 B, read and write 2 B each per parameter (fp16 buffer).
"""

import pytest

from simcluster.spec import config
from simcluster.workload import grad_accumulation

RUN_TABLE_1_DDP = {"1.7b": "torch", "3.6b": "torch", "7.5b": "torch", "18.4b": "torch",
                   "39.1b": "local", "76.1b": "local", "145.6b": "local", "310.1b": "local",
                   "529.6b": "local", "1008b": "local"}


@pytest.mark.parametrize("size", sorted(RUN_TABLE_1_DDP))
def test_each_run_reduces_and_accumulates_its_gradients_as_its_ddp_did(size):
    scenario = config.load(f"narayanan2021-{size}-a100")
    local = RUN_TABLE_1_DDP[size] == "local"
    assert scenario.parallelism.overlap_grad_reduce is not local
    if scenario.microbatches > 1:  # no 2021 run fused accumulation into the wgrad GEMM: an add kernel a microbatch
        assert scenario.training.gradient_accumulation_fusion is False
    assert scenario.parallelism.grad_reduce_dtype == "fp16"


def test_the_local_ddp_hook_moves_six_bytes_per_parameter_and_microbatch():
    # fp16 main_grad.add_(grad): read the fp16 gradient (2 B), read and write the fp16 buffer (2 + 2 B)
    assert grad_accumulation.bytes_per_param(False, "fp16") == 6


# Megatron-LM 2021's step outside the model (docs/calibration/rounds-1-9.md, "Issue 15: Megatron-LM's 2020-2021 fp16
# step outside the model"), bytes per parameter counted by hand from megatron/optimizer/optimizer.py
# FP16OptimizerWithFP16Params.step: clip_grad_norm_fp32 (multi_tensor_l2norm of the fp32 main gradients: 4), apex
# FusedAdam (read weight, gradient, two moments: 16; write weight, two moments: 12), _copy_main_params_to_model_params
# (read fp32 4, write fp16 2). The local DDP's contiguous buffer (megatron/model/distributed.py): zero_grad_buffer
# (write 2) and buffer_.data /= world_size (read 2, write 2) per fp16 gradient.
MEGATRON2021_BYTES_PER_PARAM = 4 + (16 + 12) + (4 + 2)
CONTIGUOUS_DDP_BYTES_PER_PARAM = 2 + (2 + 2)


@pytest.mark.parametrize("size", sorted(RUN_TABLE_1_DDP))
def test_each_run_steps_megatron_2021s_optimizer_and_its_ddp_buffer(size):
    scenario = config.load(f"narayanan2021-{size}-a100")
    assert scenario.training.optimizer == "megatron2021"
    assert scenario.parallelism.local_ddp == ("contiguous" if RUN_TABLE_1_DDP[size] == "local" else "none")


def test_2021s_optimizer_and_ddp_buffer_cost_their_bytes_at_hbm_speed():
    """Closed form: HBM-bound, so the optimizer costs its 38 B per parameter and fp16's 14 (one op, one gap), and
    the contiguous buffer's passes 6 B per parameter (plus one stream gap), at the achievable HBM bandwidth."""
    from simcluster.parallel.plan import local_ddp_time_s, optimizer_time_s
    from simcluster.spec.hardware import gpu
    from simcluster.workload import kernels

    a100, params = gpu("a100-80gb-sxm"), 1e9
    bandwidth = a100.hbm_bandwidth * kernels.hbm_fraction(a100.name)
    # fp16 loss scaling's unscale (8 B) and the fp16 gradients' copy into fp32 (6 B) come with it (plan.py)
    assert optimizer_time_s(params, a100, "fp16", "fp16", "megatron2021") == pytest.approx(
        (MEGATRON2021_BYTES_PER_PARAM + 8 + 6) * params / bandwidth + kernels.host_model().kernel_gap_s, rel=1e-9)
    assert local_ddp_time_s(2 * params, a100, "fp16", "contiguous") == pytest.approx(
        CONTIGUOUS_DDP_BYTES_PER_PARAM * params / bandwidth + kernels.host_model().kernel_gap_s, rel=1e-9)
    assert local_ddp_time_s(2 * params, a100, "fp16", "none") == 0.0


@pytest.mark.parametrize(("training", "parallelism", "field"), [
    ({"optimizer": "megatron2021", "precision": "bf16"}, {}, "training.optimizer"),
    ({"optimizer": "megatron2020"}, {"zero_stage": 1}, "training.optimizer"),
    ({"optimizer": "megatron2022"}, {}, "training.optimizer"),
    ({}, {"local_ddp": "contiguous", "overlap_grad_reduce": True}, "parallelism.local_ddp"),
    ({}, {"local_ddp": "bucketed"}, "parallelism.local_ddp"),
])
def test_bad_megatron_step_keys_name_their_field(training, parallelism, field):
    from simcluster.core.errors import ScenarioError

    base = config.load("narayanan2021-1.7b-a100").model_dump(mode="json")
    data = base | {"training": base["training"] | training, "parallelism": base["parallelism"] | parallelism}
    with pytest.raises(ScenarioError, match=field.replace(".", r"\.")):
        config.from_dict(data)


def test_deepspeeds_pipeline_engine_refuses_megatrons_own_ddp():
    from simcluster.core.errors import ScenarioError

    base = config.load("bigscience-bloom-176b-384-a100").model_dump(mode="json")
    with pytest.raises(ScenarioError, match=r"parallelism\.pipeline_engine: deepspeed needs local_ddp: none"):
        config.from_dict(base | {"parallelism": base["parallelism"] | {"local_ddp": "contiguous"}})
