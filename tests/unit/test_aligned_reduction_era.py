"""Megatron's aligned gradient reduction (engine.aligned_reduction) is Megatron-Core's (2023 on: --delay-grad-reduce,
later align_grad_reduce, wired as config.grad_sync_func): the 2020-22 Megatron-LM stack, whose layer the scenario marks
``training.layer_backward: eager``, had no grad_sync_func (its train_step reduced after forward_backward_func), so the
same pipelined run with its reduction overlapped keeps the gradient hooks' timing there, and is aligned with
Megatron-Core's fused layer."""

from __future__ import annotations

import pytest

from simcluster.engine import Simulation
from simcluster.engine.aligned_reduction import ReduceAlignedAcrossStages, megatron_lm_2020_22
from simcluster.engine.data_parallel import ReduceBucketsDuringBackward
from tests.unit.test_engine import scenario


def _pipelined(layer_backward: str):
    return scenario(cluster__gpus_per_node=8, parallelism__pp=4, parallelism__dp=2, parallelism__zero_stage=1,
                    training__global_batch_size=16, training__layer_backward=layer_backward)


@pytest.mark.parametrize("layer_backward", ["fused", "eager"])
def test_only_megatron_core_era_runs_align_the_reduction(layer_backward):
    s = _pipelined(layer_backward)
    assert s.megatron_core and s.parallelism.overlap_grad_reduce and s.parallelism.schedule == "1f1b"
    kinds = {type(agent.gradients) for agent in Simulation(s).agents}
    if layer_backward == "eager":
        assert megatron_lm_2020_22(s)
        assert kinds == {ReduceBucketsDuringBackward}
    else:
        assert not megatron_lm_2020_22(s)
        assert ReduceAlignedAcrossStages in kinds


@pytest.mark.parametrize(("name", "expected"), [
    ("narayanan2021-145.6b-a100", True),        # Megatron-LM 2021
    ("bigscience-bloom-176b-384-a100", False),  # eager layer, DeepSpeed's engine
    ("mpt-13b-8-h100", False),                  # eager layer, FSDP (llm-foundry)
])
def test_the_2020_22_stack_is_megatron_lm_with_its_own_data_parallel(name, expected):
    from simcluster.spec import config
    assert megatron_lm_2020_22(config.load(name)) is expected


def test_composer_data_parallel_is_not_the_2020_22_stack_without_fsdp_either():
    s = scenario(cluster__gpus_per_node=8, parallelism__pp=4, parallelism__dp=2, parallelism__zero_stage=1,
                 training__global_batch_size=16, training__layer_backward="eager",
                 training__optimizer="decoupled_adamw")
    assert s.parallelism.zero_stage < 3 and s.training.layer_backward == "eager"
    assert not megatron_lm_2020_22(s)
