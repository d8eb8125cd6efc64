"""Megatron's aligned gradient reduction on pipelined runs: each stage starts a model chunk's gradient reduction
at a point of its schedule chosen so that every stage starts it at about the same time (``schedules.
aligned_grad_syncs``), rather than when the chunk's last backward ends.

Megatron-Core's schedules do this by default (Megatron-LM ``--delay-grad-reduce``, later ``align_grad_reduce``;
NeMo 2 wires the same ``grad_sync_func`` in some releases: docs/calibration/round-15.md "Round 15: the pipeline bubble,
itemised") because "asynchronous communication tends to slow down compute": a
reduction started when the cool-down reaches each stage slows that stage's next blocks while the cool-down's
critical path passes through it, stage after stage; started together, they slow the stages at once.
"""

from __future__ import annotations

from simcluster.engine.data_parallel import (
    GradientReduction,
    ReduceBucketsDuringBackward,
    bucket_bytes,
    bucket_checks,
    reduce_bucket,
)
from simcluster.parallel.schedules import aligned_grad_syncs


class ReduceAlignedAcrossStages(GradientReduction):
    """A stage's chunks' gradient buckets, each chunk's all at once after the backward unit ``syncs`` names
    (``schedules.aligned_grad_syncs``; unit = the count of the stage's backwards run this step). One instance per
    agent: it counts the backwards."""

    def __init__(self, syncs: dict[int, list[int]]):
        self.syncs = syncs
        self._unit = 0

    def backward(self, agent, work):
        yield from agent.parameters.run(agent, "backward", work)
        chunks = self.syncs.get(self._unit, ())
        self._unit += 1
        return (yield from _reduce(agent, chunks))

    def after_backward(self, agent):
        chunks, self._unit = self.syncs.get(self._unit, ()), 0
        return (yield from _reduce(agent, chunks))


def _reduce(agent, chunks) -> list:
    """Start the reduction of every bucket of ``chunks`` (named as ``ReduceBucketsDuringBackward`` names them), each
    after its gradient scaling (``data_parallel.reduce_bucket``); their events."""
    plan = agent.sim.plan
    events = []
    for chunk in chunks:
        checks = bucket_checks(agent.sim, plan.chunks[chunk]) if plan.nan_checked else None
        for bucket, (grad, expert_grad, _, _) in enumerate(bucket_bytes(plan, plan.chunks[chunk])):
            events += yield from reduce_bucket(agent, chunk, bucket, grad, expert_grad,
                                               checks=checks[bucket] if checks else 1)
    return events


def megatron_lm_2020_22(scenario) -> bool:
    """The 2020-22 Megatron-LM stack, which had no aligned reduction: its layer (``training.layer_backward: eager``,
    apex's LayerNorm and autograd's bias gradients, workload/eager_backward.py) on Megatron's pipeline engine.

    Megatron-LM then (train_step in megatron/training.py, 2021-22 and the forks taken from it: Megatron-DeepSpeed,
    BigScience) all-reduced the gradients after ``forward_backward_func`` returned (``if args.DDP_impl == 'local':
    for model_module in model: model_module.allreduce_gradients()``), with no ``grad_sync_func`` in its schedules;
    ``--overlap-grad-reduce`` and the alignment (``--no-delay-grad-reduce``, "delay / synchronize grad reductions in
    all but first PP stage", wired as ``config.grad_sync_func = [model_chunk.start_grad_sync ...]`` in ``train``)
    arrived together with Megatron-Core's DistributedDataParallel in 2023 (both absent from the 2021-22 train_step,
    present in NVIDIA/Megatron-LM megatron/training.py at 974d0fa9 and 003ad9f5), ``--no-align-grad-reduce``
    replacing the latter later (megatron/training/arguments.py: "If not set, all PP stages will launch gradient
    reduces simultaneously"). A
    scenario of that stack that overlaps its reduction (``overlap_grad_reduce``: PyTorch DDP's hooks) keeps the
    hooks' timing. Korthikanti et al.'s 2022 rows (``layer_backward`` fused) are not told apart by a key; they
    reduce nothing (dp 1) or after the backward (``overlap_grad_reduce: false``, as the paper states), so the
    alignment never applies to them. Runs with another framework's data parallelism are not that stack: FSDP
    (``zero_stage: 3``; Megatron-LM 2020-22 had no ZeRO-3) and torchtitan's or Composer's optimizers (llm-foundry's
    MPT rows are eager too)."""
    p, t = scenario.parallelism, scenario.training
    return (t.layer_backward == "eager" and p.pipeline_engine == "megatron" and p.zero_stage < 3
            and t.optimizer not in ("torch_adamw", "decoupled_adamw"))


def aligned(gradients: GradientReduction, scenario, plan, stage: int) -> GradientReduction:
    """``gradients`` (``data_parallel.strategies``) as Megatron-Core's pipelined schedules run it: the reduction of a
    stage's chunks aligned across stages when the chunks' gradients are reduced once a step, during the backward
    (``overlap_grad_reduce`` with ZeRO 0/1) on Megatron's 1F1B schedules (Megatron has no GPipe schedule: a
    ``schedule: gpipe`` run keeps ``gradients``) of the Megatron-Core era (not ``megatron_lm_2020_22``); else
    ``gradients`` itself."""
    if not (type(gradients) is ReduceBucketsDuringBackward and not gradients.every_microbatch
            and plan.layout.pp > 1 and scenario.megatron_core and scenario.parallelism.schedule == "1f1b"
            and not megatron_lm_2020_22(scenario)):
        return gradients
    syncs = aligned_grad_syncs(plan.orders[stage], stage, scenario.parallelism.virtual_stages)
    return gradients if syncs is None else ReduceAlignedAcrossStages(syncs)
