"""Megatron's aligned gradient reduction (engine.aligned_reduction) belongs to its 1F1B schedules: the same pipelined
Megatron-Core ZeRO-1 run is aligned with ``schedule: 1f1b`` and keeps the reduction during the backward with
``schedule: gpipe`` (Megatron has no GPipe schedule)."""

from __future__ import annotations

from simcluster.engine import Simulation
from simcluster.engine.aligned_reduction import ReduceAlignedAcrossStages
from simcluster.engine.data_parallel import ReduceBucketsDuringBackward
from tests.unit.test_engine import scenario


def _pipelined(schedule):
    return scenario(cluster__gpus_per_node=8, parallelism__pp=4, parallelism__dp=2, parallelism__zero_stage=1,
                    parallelism__schedule=schedule, training__global_batch_size=16)


def test_only_the_1f1b_schedule_aligns_the_reduction():
    aligned = [type(agent.gradients) for agent in Simulation(_pipelined("1f1b")).agents]
    # non-interleaved 1F1B: the first stage keeps its hooks, the others reduce after the cool-down
    assert ReduceAlignedAcrossStages in aligned
    assert all(type(agent.gradients) is ReduceBucketsDuringBackward for agent in Simulation(_pipelined("gpipe")).agents)
