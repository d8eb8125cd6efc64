"""How an agent keeps its data-parallel replicas in step: when gradients are reduced and parameters gathered.

The ZeRO stage and the two overlap options decide both, once per agent (``strategies``); the agent's step then
calls the same four hooks whatever they are. Every hook starts the same collectives and yields the same SimPy
events, in the same order, as one generator testing the options in the loop would: the network driver merges
transfers by the instant and order they start, so a change of order would change the results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simcluster.parallel.fsdp_runtime import gathers_once_per_step, root_holds_output, units_kept_after_forward
from simcluster.parallel.mcore_buckets import Bucket, gpt_param_tensors, layer_tensors, megatron_core_bucket_groups
from simcluster.parallel.megatron_fsdp_prefetch import prefetches_next_unit
from simcluster.parallel.memory import layer_params_per_rank, zero3_units
from simcluster.parallel.param_gather_overlap import disables_bucketing
from simcluster.parallel.plan import StepPlan, bucket_count
from simcluster.spec.config import (
    Parallelism,
    Scenario,
    lazy_first_param_gather,
    nemo_apex_group_per_virtual_stage,
    stated_mcore_version,
)
from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.workload import fp8_params, fp32_embedding_grads, grad_scaling, nan_check
from simcluster.workload.ops import local_kv_hidden

# Apex DistributedFusedAdam aligns each bucket's shard to 128 bytes of the gradient dtype
# (apex/contrib/optimizers/distributed_fused_adam.py: self.alignment = 128 // dtype_size).
APEX_ALIGN_BYTES = 128


@dataclass(frozen=True)
class Cuts:
    """A chunk's block cut where its gradient buckets become ready, each part as long as its units really take.

    Units in forward order: the embedding (0), the layers (1 to L), the output layer (L + 1: final norm, logits and
    cross-entropy). ``bounds`` ascend from the chunk's first unit to one past its last; a forward's part i runs the
    units [bounds[i], bounds[i + 1]), a backward's part i the same spans from the top, so a backward starts with the
    loss and the output layer and ends with the embedding, as autograd runs Megatron-Core's GPT model in reverse.
    A part's compute is its units' (``portion``): the embedding's and the output layer's seconds
    (``ChunkCost.edge_s``), each layer an equal share of the rest; it runs its layers' share of the per-layer work
    (TP, EP and ring attention collectives)."""
    bounds: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.bounds) - 1


def part_count(parts) -> int:
    """How many parts a block is cut in: ``parts`` equal ones, or ``Cuts``."""
    return len(parts) if isinstance(parts, Cuts) else parts


def portion(cost, phase: str, part: int | None, parts, deferred: bool = False) -> tuple[float, int, int, int]:
    """Part ``part`` of ``cost``'s ``phase`` block cut in ``parts`` (a count of equal parts, or ``Cuts``): its
    seconds (``deferred``: of a deferring microbatch's backward), and its layers lo..hi of n. The parts' seconds
    add up to the block's compute."""
    part = part or 0
    total = cost.deferred_backward_compute_s if deferred else getattr(cost, f"{phase}_compute_s")
    if not isinstance(parts, Cuts):
        return total / parts, part, part + 1, parts
    span = part if phase == "forward" else len(parts) - 1 - part
    start, end = parts.bounds[span], parts.bounds[span + 1]
    layers = cost.layers
    embedding_s, head_s = cost.edge_s.get("deferred_backward" if deferred else phase, (0.0, 0.0))
    lo, hi = min(max(start - 1, 0), layers), min(max(end - 1, 0), layers)
    seconds = ((embedding_s if start == 0 else 0.0) + (head_s if end == layers + 2 else 0.0)
               + (hi - lo) * (total - embedding_s - head_s) / layers)
    return seconds, lo, hi, layers


def collective(agent, op: str, dense_bytes: float, expert_bytes: float, name: str) -> list:
    """Reduce gradients or gather parameters on ``agent``'s data-parallel stream: ``dense_bytes`` over dp x cp,
    then the routed experts' ``expert_bytes`` over the expert data-parallel group, none when there are none
    (Megatron-Core keeps expert parameters in their own param-and-grad buffers over the expert data-parallel group,
    ``DistributedDataParallel.expert_parallel_buffers``, and its ``start_grad_sync``/``start_param_sync`` run the
    dense bucket groups, then the expert ones). The events of their completion."""
    events = [agent.sim.data_parallel(agent, op, dense_bytes, name)]
    if expert_bytes:
        events.append(agent.sim.data_parallel(agent, op, expert_bytes, f"expert {name}", experts=True))
    return events


def communicator_streams(scenario: Scenario) -> bool:
    """Whether a rank's dense and expert data-parallel collectives run at once, each group in its own order.

    NCCL runs one communicator's operations in the order they were issued, one at a time, even when the caller
    issues them on different CUDA streams (Megatron-LM megatron/core/distributed/fsdp/src/docs/runtime_schedule.md
    and its nccl_same_pg_two_streams_{async,sync}.py probes; NVIDIA/nccl#1262; pytorch/pytorch#177098 and #186335:
    FSDP2's all-gather and reduce-scatter streams share the shard group's one communicator "and so serializes them
    on the wire"). So every stack's all-gathers and reduce-scatters over one group keep one stream, in issue order
    (ZeRO-3's prefetch issues unit u+1's gather before unit u's reduce-scatter). Two groups are two communicators:
    Megatron-FSDP (ZeRO-3 on Megatron-Core) gathers each bucket group asynchronously on its own group
    (``AllGatherPipeline.all_gather_params``: ``_coalescing_manager(dp_group, async_ops=True)`` per data-parallel
    group, which ProcessGroupNCCL runs on that group's own NCCL stream), so the dense group's collectives and the
    expert data-parallel group's run at once; its reduce-scatters are each waited for on the one ``rs_stream``
    before the next is issued from it (``GradReducePipeline.mark_bucket_ready``), whichever group they reduce
    over (``Simulation._after_reduction``). Its separate all-gather communicator (``--create-all-gather-group``,
    Megatron-LM PR #2663, merged 2026-01; experts in PR #3249) is opt-in and not modelled. Megatron-Core's
    DDP/distributed optimizer (ZeRO-1/2) also issues its dense and expert bucket groups on their own groups; not
    modelled (one stream): only the ZeRO-3 path changes.
    """
    return scenario.parallelism.zero_stage == 3 and scenario.megatron_core


class GradientReduction:
    """Without data parallelism there is nothing to reduce: a backward is one block."""

    def backward(self, agent, work):
        """Run ``work``'s backward; returns the gradient reductions it started (events)."""
        yield from agent.parameters.run(agent, "backward", work)
        return []

    def after_backward(self, agent):
        """Reductions to start once the stage's whole backward has run (a generator, as ``backward``: a bucket's
        gradient scaling runs on the compute stream before its collective, ``reduce_bucket``); returns their
        events."""
        yield from ()
        return []


def chunk_buckets(plan: StepPlan, cost) -> int:
    """The buckets a chunk's gradients (dense and routed experts) are reduced, and its parameters gathered, in:
    each bucket reduces and gathers its share of both parts, each over its own group (``collective``). On
    Megatron-Core one bucket, the whole chunk's, off the first pipeline stage's first model chunk (``bucket_count``):
    reduced once the chunk's last backward ends, its parameters gathered before its first forward."""
    return bucket_count(cost.grad_bytes + cost.expert_grad_bytes, plan.bucket_bytes, cost.layers, stage=cost.stage,
                        model_chunk=cost.chunk // plan.layout.pp, megatron_core=plan.scenario.megatron_core,
                        disable_bucketing=disables_bucketing(plan.scenario))


def apex_group_elements(plan: StepPlan, cost) -> list[tuple[float, float]]:
    """Elements each of a chunk's Apex bucket groups communicates, in backward order (its first layer's last), as
    (elements reduced at ``grad_reduce_dtype``, elements reduced in fp32).

    NeMo 1.x's ``configure_optimizers`` (megatron_gpt_model.py) hands Apex one ``init_params_bucket`` group per
    Transformer layer, reversed, and adds the parameters of no layer (embedding, output layer, final norm) to the
    chunk's first layer's group; Apex opens new buckets for each group, cuts it into buckets of ``bucket_size`` =
    ``grad_bucket_size`` / grad dtype elements (shard per rank floored to 128 B, times the ranks) and communicates
    every bucket whole, so a group is its parameters rounded up to whole buckets. A group's buckets become ready
    together (each depends on all the group's parameters) and are reduced as one coalesced NCCL group: priced as one
    collective of the group's bytes here (NCCL spreading the grouped operations over its channels; the buckets one
    after another, each with its own ring latency, is the other bound: scripts/dp_ring_scaling.py --apex).
    Where NeMo keeps the word embedding's gradient in fp32 (``workload.fp32_embedding_grads``), its
    MegatronDistributedFusedAdam gives those parameters (in the group of the parameters of no layer) buckets of their
    own, first, with ``grad_sync_dtype`` fp32 and as many elements as the others (Apex's ``default_shard_size``, from
    the optimizer's default dtype): rounded up to whole buckets apart from the rest of the group.
    Under virtual stages NeMo 2.0.0 on (a stated release from 0.9, ``config.nemo_apex_group_per_virtual_stage``) hands
    Apex one group per model chunk instead (``buckets.append(make_parameter_bucket(module))``): the chunk's parameters
    in one group, complete after the chunk's whole backward; 2.0.0rc0/rc1 (24.05, 24.07) still cut a group a layer.
    NeMo also puts every chunk's parameters of no layer in the first chunk's first-layer group (``buckets[-1]``);
    here each chunk keeps its own (docs/calibration/round-26.md, round 26)."""
    s = plan.scenario
    p = s.parallelism
    width = BYTES_PER_ELEMENT[p.grad_reduce_dtype]
    ranks = p.dp * p.cp
    align = APEX_ALIGN_BYTES // width
    shard = int(p.grad_bucket_size / width / ranks)
    bucket = max(shard - shard % align, align) * ranks
    layer = layer_params_per_rank(s.model, p.tp)
    rest = max(0.0, cost.grad_bytes / width - cost.layers * layer)
    fp32 = (min(rest, fp32_embedding_grads.chunk_params(s.model, p.tp, cost.chunk == 0,
                                                        cost.chunk == plan.chunk_count - 1, p.pp))
            if fp32_embedding_grads.applies(s) else 0.0)
    last = (layer if cost.layers else 0.0) + rest - fp32   # the group of the parameters of no layer, 16-bit part
    groups = [(layer, 0.0)] * (cost.layers - 1) + [(last, fp32)]
    if p.virtual_stages > 1 and nemo_apex_group_per_virtual_stage(stated_mcore_version(s.training)):
        groups = [(sum(low for low, _ in groups), fp32)]
    return [(math.ceil(low / bucket) * bucket, math.ceil(high / bucket) * bucket) for low, high in groups]


def chunk_bucket_groups(plan: StepPlan, cost) -> list[Bucket] | None:
    """A chunk's gradient bucket groups as Megatron-Core's DistributedDataParallel forms them
    (``mcore_buckets.megatron_core_bucket_groups``: the parameters in reverse registration order, a bucket closed at
    ``grad_bucket_size`` elements, padded to a multiple of dp x cp at ZeRO 1-2; the tied embedding alone with pp > 1;
    with fp8 parameters the non-fp8 buckets merged into the last fp8 group), in formation order. Where it buckets at
    all: ``grad_buckets: megatron_core`` (Megatron-Core's DDP at ZeRO 0-2, its default there) with the
    reduction overlapped (a finite bucket), on the first pipeline stage's first model chunk (``bucket_count``: one
    bucket elsewhere), and on the last stage's only model chunk when it holds a tied output layer under pipelining
    (the output layer alone, then the rest). None where the engine keeps equal buckets: other stacks, Apex's groups,
    the other chunks, a chunk with routed experts or MLA (their tensor lists, with the expert buffers apart, are not
    written here). The chunk's dense gradient elements are conserved: the embedding and output layer take what its
    layers do not hold (the untied or last stage's output layer its vocabulary's share, the embedding the rest:
    learned positions of max_seq_len x hidden after the word embedding, not in the shared embedding's bucket). Each
    group's ``low`` is a unit of ``Cuts`` (the embedding 0, layer i i + 1, the final norm and output layer L + 1)."""
    s = plan.scenario
    p, model = s.parallelism, s.model
    shared = model.tied_embeddings and p.pp > 1 and p.zero_stage > 0
    # overlap_param_gather_with_optimizer_step: every chunk one bucket (param_gather_overlap.disables_bucketing)
    walked = cost.stage == 0 and cost.chunk // plan.layout.pp == 0 and not disables_bucketing(s)
    # the last stage's copy of a tied output layer under pipelining is marked shared_embedding as well
    # (language_module.py): a bucket of its own although the stage does not bucket (bucket_size None), its own group
    # on the stage's only model chunk (a later model chunk disables bucketing: one group, force_single_bucket_group)
    shared_head = shared and cost.stage == p.pp - 1 and plan.chunk_count == p.pp
    if (p.grad_buckets != "megatron_core" or not cost.grad_bytes or not math.isfinite(p.grad_bucket_size)
            or not (walked or shared_head)
            or cost.expert_grad_bytes or model.moe is not None or model.mla is not None):
        return None
    width = BYTES_PER_ELEMENT[p.grad_reduce_dtype]
    layer = layer_tensors(model.hidden, model.q_hidden / p.tp, local_kv_hidden(model, p.tp), model.ffn / p.tp,
                          model.mlp_matrices, model.norm_params, model.linear_biases)
    other = layer_params_per_rank(model, p.tp) - sum(n for n, _ in layer)   # whatever else: with the first norm
    layer[2 if model.linear_biases else 1] = (layer[2 if model.linear_biases else 1][0] + other, False)
    rest = cost.grad_bytes / width - cost.layers * sum(n for n, _ in layer)
    first, last = cost.chunk == 0, cost.chunk == plan.chunk_count - 1
    final_norm = (2 if model.norm == "layernorm" else 1) * model.hidden if last else 0.0
    # the untied output layer (last chunk); the embedding (first chunk) holds the rest: word and learned positions
    untied = last and (not model.tied_embeddings or shared_head)
    head = min(rest - final_norm, math.ceil(model.vocab / p.tp) * model.hidden) if untied else 0.0
    embedding = rest - final_norm - head if first else 0.0
    # the learned positions (replicated over TP) are a tensor of their own after the word embedding
    positions = min(embedding, model.max_seq_len * model.hidden) if model.position == "learned" else 0.0
    tensors = gpt_param_tensors(layer, cost.layers, embedding=embedding - positions, final_norm=final_norm, head=head,
                                shared_embedding=shared, positions=positions, edge_units=True)
    if shared_head:
        tensors[-1] = tensors[-1]._replace(alone=True)
    # bucket ends padded to shard evenly with the distributed optimizer only (ZeRO 0: all-reduced as they are)
    return megatron_core_bucket_groups(tensors, p.grad_bucket_size / width if walked else math.inf,
                                       p.dp * p.cp if p.zero_stage else 1, fp8_params.enabled(s.training))


def bucket_schedule(plan: StepPlan, cost) -> tuple[list[tuple[float, float, float, float]], list[int], int | Cuts]:
    """A chunk's buckets: their (gradient, expert gradient, parameter, expert parameter) bytes in the order the
    backward makes them; for each, the part of the chunk's backward after which it is complete; and ``parts`` (a
    count of equal parts, or ``Cuts``). The forward gathers them in reverse, each before the part mirroring it.
    ``grad_buckets: apex``: Apex's per-layer groups (``apex_group_elements``), dense only, a layer a part.
    Megatron-Core (``chunk_bucket_groups``): its own unequal bucket groups, each complete after the backward of its
    lowest unit, the backward cut there (``Cuts``: at most one part per group, each part its units' real cost, so
    the first group waits for the loss and output layer's backward; the embedding runs with layer 0). Megatron-Core
    registers a backward post-hook on each parameter's gradient accumulator (distributed_data_parallel.py
    ``_make_backward_post_hook``, ``grad_acc.register_hook``); it fires once autograd has accumulated that
    parameter's gradient, and ``register_grad_ready`` (param_and_grad_buffer.py) starts a bucket group's
    ``start_grad_sync`` once all of its parameters have fired. A group's parameters are gathered at the chunk's fp8
    width for its fp8 GEMM weights and the 16-bit width for the rest, scaled so the chunk gathers
    ``cost.param_bytes`` plus its padding. Otherwise equal buckets, bucket b complete after part b of as many equal
    parts."""
    p = plan.scenario.parallelism
    width = BYTES_PER_ELEMENT[p.grad_reduce_dtype]
    if p.grad_buckets == "apex" and cost.grad_bytes:
        param_width = cost.param_bytes * width / cost.grad_bytes   # gathered at param_sync_dtype, fp32 buckets too
        sizes = [(low * width + high * fp32_embedding_grads.GRAD_BYTES, 0.0, (low + high) * param_width, 0.0)
                 for low, high in apex_group_elements(plan, cost)]
        return sizes, list(range(len(sizes))), len(sizes)
    groups = chunk_bucket_groups(plan, cost)
    if groups is not None:
        # parameter bytes: fp8 GEMM weights at 1 byte against the 16-bit rest (fp8_params), the chunk's total
        # conserved up to the padding
        fp8 = fp8_params.gather_bytes_per_param() / BYTES_PER_ELEMENT["bf16"]
        weighted = [g.elements - g.gemm_elements * (1 - fp8) for g in groups]
        scale = cost.param_bytes * sum(g.elements for g in groups) / (cost.grad_bytes / width) / sum(weighted)
        sizes = [(g.elements * width, 0.0, w * scale, 0.0) for g, w in zip(groups, weighted, strict=True)]
        if not cost.layers:
            return sizes, [0] * len(groups), 1
        # units (Cuts): the embedding 0, layer i i + 1, the output layer L + 1, those the chunk holds; the embedding
        # runs in layer 0's part (no cut between them: its backward, a scatter-add, is under 1 % of a layer's, 0.09
        # of 4.3 ms on megatron-16b, and a cut would cost a part in each direction)
        first = 0 if cost.chunk == 0 else 1
        lows = [g.low if g.low > 1 else first for g in groups]
        bounds = sorted({first, cost.layers + (2 if cost.chunk == plan.chunk_count - 1 else 1)} | set(lows))
        return sizes, [len(bounds) - 2 - bounds.index(low) for low in lows], Cuts(tuple(bounds))
    n = chunk_buckets(plan, cost)
    return ([(cost.grad_bytes / n, cost.expert_grad_bytes / n, cost.param_bytes / n, cost.expert_param_bytes / n)]
            * n, list(range(n)), n)


def bucket_bytes(plan: StepPlan, cost) -> list[tuple[float, float, float, float]]:
    """(gradient, expert gradient, parameter, expert parameter) bytes of each of a chunk's buckets, in the order
    the backward makes them (``bucket_schedule``)."""
    return bucket_schedule(plan, cost)[0]


class ReduceBucketsDuringBackward(GradientReduction):
    """PyTorch DDP / Megatron-Core ``overlap_grad_reduce``: a bucket is reduced as soon as the backward has made it,
    while the rest of the backward runs.

    Gradients are final on a chunk's last microbatch; ZeRO-2/3 keep only a gradient shard, so they reduce-scatter
    on every microbatch (``every_microbatch``).
    """

    def __init__(self, every_microbatch: bool):
        self.every_microbatch = every_microbatch

    def backward(self, agent, work):
        plan = agent.sim.plan
        if not (work.microbatch == plan.microbatches - 1 or self.every_microbatch):
            return (yield from super().backward(agent, work))
        cost = plan.chunks[work.chunk]
        # ZeRO-3/FSDP reduce-scatters each unit's gradient as its backward ends (Zhao et al. 2023, section 3.2)
        units = agent.parameters.units(agent, work)
        sizes, ready, parts = (([(cost.grad_bytes / units, cost.expert_grad_bytes / units, 0.0, 0.0)] * units,
                                list(range(units)), units) if units else bucket_schedule(plan, cost))
        checks = bucket_checks(agent.sim, cost) if plan.nan_checked and not units else None
        reductions = []
        for part in range(part_count(parts)):
            yield from agent.parameters.before_part(agent, work, part, part_count(parts))
            yield from agent.compute("backward", work, part=part, parts=parts)
            for bucket, (grad, expert_grad, _, _) in enumerate(sizes):
                if ready[bucket] == part:
                    if units:  # ZeRO-3 units: no Megatron-Core buffer to scale
                        reductions += collective(agent, plan.dp_grad_op, grad, expert_grad,
                                                 f"grad {plan.dp_grad_op} c{work.chunk}b{bucket}")
                    else:
                        reductions += yield from reduce_bucket(agent, work.chunk, bucket, grad, expert_grad,
                                                               work.microbatch, checks[bucket] if checks else 1)
        return reductions


def bucket_checks(sim, cost) -> list[int]:
    """Megatron-Core buckets in each of a chunk's bucket groups (``bucket_schedule``'s order), each checked by
    ``check_for_nan_in_grad``: the groups' own (``mcore_buckets.Bucket.buckets``: the merged last group under fp8
    parameters holds several), one a group where the engine keeps equal buckets."""
    key = ("bucket checks", cost.chunk)
    if key not in sim.blocks:
        groups = chunk_bucket_groups(sim.plan, cost)
        sim.blocks[key] = ([g.buckets for g in groups] if groups is not None
                           else [1] * len(bucket_schedule(sim.plan, cost)[0]))
    return sim.blocks[key]


def reduce_bucket(agent, chunk: int, bucket: int, grad: float, expert_grad: float, microbatch: int = -1,
                  checks: int = 1):
    """Megatron-Core's ``start_grad_sync`` for one bucket group, on the compute stream (the compute stream's next
    work waits for each): with ``check_for_nan_in_grad`` its NaN check (``workload.nan_check``: a norm over the
    gradients of each of the group's ``checks`` buckets and the host reads of its isnan / isinf;
    ``plan.nan_checked``), then its gradients multiplied by the bucket's scaling factor (``workload.grad_scaling``;
    ``plan.grad_scaled`` says which of the dense and expert buffers; one memory-bound kernel per scaled buffer),
    then its collective started on the data-parallel stream. Returns the collective's events."""
    sim, plan = agent.sim, agent.sim.plan
    scenario = plan.scenario
    if plan.nan_checked:
        key = ("nan check", grad, expert_grad, checks)
        if key not in sim.blocks:
            sim.blocks[key] = nan_check.bucket_s(scenario, grad, expert_grad, checks)
        yield from _before_collective(agent, f"nan check c{chunk}b{bucket}", sim.blocks[key], microbatch)
    if any(plan.grad_scaled):
        seconds = 0.0
        for size, scaled in ((grad, plan.grad_scaled[0]), (expert_grad, plan.grad_scaled[1])):
            if scaled and size > 0:
                key = ("grad scale", size)
                if key not in sim.blocks:
                    sim.blocks[key] = grad_scaling.kernel_s(grad_scaling.ELEMENTS_PER_GRAD * size,
                                                            scenario.cluster.gpu, scenario.training.precision)
                seconds += sim.blocks[key]
        yield from _before_collective(agent, f"grad scale c{chunk}b{bucket}", seconds, microbatch)
    return collective(agent, plan.dp_grad_op, grad, expert_grad, f"grad {plan.dp_grad_op} c{chunk}b{bucket}")


def _before_collective(agent, name: str, seconds: float, microbatch: int):
    """Run ``seconds`` of a bucket's work before its collective on the compute stream (slowed by the GPU's speed
    under variability, as every block), recorded as ``name``."""
    if seconds <= 0:
        return
    sim = agent.sim
    env = sim.env
    started_at_s = env.now
    if sim.variability is not None:  # per-GPU speed and stragglers (engine.variability)
        seconds *= sim.variability.speed_of(agent)
    yield env.timeout(seconds)
    agent.tally.compute_s += seconds
    sim.recorder.compute(agent, "compute", name, microbatch, started_at_s, env.now)


class ReduceAfterBackward(GradientReduction):
    """One reduction of each chunk's gradient buffer after the whole backward (Megatron-LM's 2021 DDP): nothing
    overlaps it."""

    def after_backward(self, agent):
        plan = agent.sim.plan
        yield from ()   # the buffers' scaling runs in the optimizer's block here (workload.grad_scaling.serial_s)
        return [event for chunk in reversed(agent.chunks())
                for event in collective(agent, plan.dp_grad_op, plan.chunks[chunk].grad_bytes,
                                        plan.chunks[chunk].expert_grad_bytes, f"grad {plan.dp_grad_op} c{chunk}")]


class ParameterGathering:
    """Every rank holds all of its stage's parameters (ZeRO-0, or no data parallelism): nothing to gather."""

    def start_step(self, agent) -> None:
        """Start what the step's forwards will wait for."""

    def start_schedule(self, agent) -> None:
        """The pipeline schedule starts (after the optimizer tail of ``overlap_param_gather_with_optimizer_step``):
        start what it dispatches before its first receive."""

    def before_use(self, agent, work):
        """Make ``work``'s chunk's parameters whole before it runs (or start gathering them)."""
        yield from ()

    def units(self, agent, work) -> int | None:
        """How many units ``work``'s chunk is gathered in, when they set the parts of its blocks; else None."""
        return None

    def before_part(self, agent, work, part: int, parts: int):
        """Before part ``part`` of ``parts`` of ``work``'s block runs: wait for what it needs."""
        yield from ()

    def run(self, agent, phase: str, work):
        """Run ``work``'s ``phase``, in one block."""
        yield from agent.compute(phase, work)

    def forward(self, agent, work):
        """Run ``work``'s forward."""
        yield from self.run(agent, "forward", work)

    def after_optimizer(self, agent):
        """Make the updated parameters whole for the next step."""
        yield from ()


class GatherAfterOptimizer(ParameterGathering):
    """ZeRO-1/2: each rank updated its shard only, so the stage's parameters are all-gathered after the optimizer,
    exposed. On Megatron-Core, one synchronous all-gather per bucket of each chunk's buffer (``bucket_schedule``):
    without ``overlap_param_gather`` its ``DistributedOptimizer.step`` "launch[es] synchronous all-gather
    communication calls here", ``_dispatch_gather_model_params`` per bucket with ``async_op=False``
    (NVIDIA/Megatron-LM megatron/core/optimizer/distributed_optimizer.py, the grad_buffer.py era, a8a5512); queued
    on the one data-parallel stream they run one after another, each with its own ring latency. Other stacks: one
    all-gather of the stage's parameters."""

    def after_optimizer(self, agent):
        plan = agent.sim.plan
        mine = [c for c in plan.chunks if c.stage == agent.stage]
        if not plan.scenario.megatron_core:
            yield from agent.wait_data_parallel(collective(agent, "all_gather", sum(c.param_bytes for c in mine),
                                                           sum(c.expert_param_bytes for c in mine),
                                                           "param all_gather"))
            return
        events = [event for c in mine for b, (_, _, param, expert_param) in enumerate(bucket_bytes(plan, c)[::-1])
                  for event in collective(agent, "all_gather", param, expert_param, f"param all_gather c{c.chunk}b{b}")]
        yield from agent.wait_data_parallel(events)


class GatherDuringForward(ParameterGathering):
    """ZeRO-1/2 with Megatron-Core ``overlap_param_gather``: the parameters the previous step updated are gathered
    bucket by bucket while this step's forward runs; each part of a chunk's first forward waits for its own bucket.

    When the gathers are dispatched (``training.mcore_version``, ``config.lazy_first_param_gather``): before 0.9 the
    distributed optimizer's ``zero_grad`` dispatches the first one at the step's start, so every chunk's are queued
    then; from 0.9 (the bucket groups) a stage holding one model chunk dispatches its first at the chunk's first
    forward pre-hook (``finish_param_sync``: "first AG bucket in first model chunk if ... align_param_gather is
    False", as it is without a virtual pipeline), i.e. after its first microbatch's activations arrived.

    With virtual stages (``interleaved``; Megatron-Core's own buffers) the chunks after the first two (aligned) or
    the first (chained) are dispatched after the step's start (docs/calibration/round-26.md, "Round 26: Megatron-Core's
    vocabulary padding, interleaved parameter gathers and gradient zeroing"; the released megatron-core wheels
    0.8.0 and 0.9.0):
    - 0.9 on (``aligned``): Megatron-LM's align_param_gather (on by default with a virtual pipeline,
      ``--no-align-param-gather``) and NeMo 2's comm-overlap callback (with pp > 1 and vp > 1) hand the interleaved
      schedule ``param_sync_func``, which dispatches a whole chunk's bucket groups at once (DDP ``start_param_sync``),
      the pre-hooks only waiting (``skip_next_bucket_dispatch``): chunks 0 and 1 before the first forward
      ("Synchronize params for first two model chunks", pipeline_parallel/schedules.py 0.9.0 l. 685-688), chunk
      c >= 2 at the start of this rank's forward ``(c - 1) pp - pp_rank`` (``param_sync_microbatch_id =
      microbatch_id + pipeline_parallel_rank`` being chunk c - 1's first microbatch, "we launch asynchronous
      communication at the same time across the pipeline-parallel group", l. 733-750). That forward is in the
      schedule's first group; a rank running fewer forwards dispatches the chunk at its own first forward.
    - before 0.9 (``chained``): no ``param_sync_func`` (Megatron-LM's ``--delay-param-gather``, off by default, was
      replaced by align in August 2024), so the distributed optimizer's pre-hook chain runs over every chunk's
      buckets in chunk order ("We keep the view_items in model chunk order", distrib_optimizer.py 0.8.0 l. 1356-1361;
      ``_finish_param_sync_helper`` waits for handle i then dispatches i + 1, l. 1454-1475): chunk c's first gather
      starts when chunk c - 1's last one is waited for, in chunk c - 1's first forward. Within a chunk the engine
      keeps its gathers queued together (round 24: a one-ahead chain at the engine's layer-granular waits is an
      artefact of the cut, not the framework).

    With ``overlap_param_gather_with_optimizer_step`` (``with_optimizer_step``; parallel/param_gather_overlap.py) the
    stage's first chunk's gathers are the ones the previous step's optimizer dispatched after that chunk's update:
    queued at the step's start, where the agent then runs the rest of that optimizer step (``plan.optimizer_tail_s``)
    before its first forward; the schedule dispatches chunk 1 (aligned) at its start (``start_schedule``), after
    the tail.

    Holds the step's gathers until their forward: one instance per agent.
    """

    def __init__(self, lazy_first: bool = False, interleaved: str | None = None, with_optimizer_step: bool = False):
        self._lazy_first = lazy_first
        self._interleaved = interleaved  # None (all at the start), "aligned" (0.9 on) or "chained" (before 0.9)
        self._with_optimizer_step = with_optimizer_step
        self._at_schedule_start: list[int] = []  # chunks the schedule dispatches before its first receive
        self._buckets: dict[int, list[list]] = {}  # a chunk's gathers, by the forward part that first needs them
        self._deferred: set[int] = set()  # chunks whose gathers wait for their first forward
        self._at_forward: dict[tuple[int, int], list[int]] = {}  # aligned: (chunk, microbatch) -> chunks it starts
        self._after_chunk: dict[int, int] = {}  # chained: chunk -> the chunk its last gather's wait starts

    def start_step(self, agent) -> None:
        self._buckets, self._at_forward, self._after_chunk = {}, {}, {}
        chunks = agent.chunks()
        self._deferred = set(chunks) if self._lazy_first and len(chunks) == 1 else set()
        if self._interleaved and len(chunks) > 1:
            self._deferred = set(chunks[1:] if self._interleaved == "chained" else chunks[2:])
            if self._interleaved == "chained":
                self._after_chunk = dict(zip(chunks[:-1], chunks[1:], strict=True))
            else:
                pp = agent.sim.plan.layout.pp
                forwards = [w for w in agent.sim.plan.orders[agent.stage] if w.phase == "forward"]
                for c in range(2, len(chunks)):
                    k = (c - 1) * pp - agent.stage
                    if k < len(forwards):
                        self._at_forward.setdefault((forwards[k].chunk, forwards[k].microbatch), []).append(chunks[c])
                if self._with_optimizer_step:  # chunk 0 under the optimizer's tail, chunk 1 at the schedule's start
                    self._deferred.add(chunks[1])
                    self._at_schedule_start = [chunks[1]]
        for chunk in chunks:
            if chunk not in self._deferred:
                self._buckets[chunk] = self._queue(agent, chunk)

    def start_schedule(self, agent) -> None:
        for chunk in self._at_schedule_start:
            self._dispatch(agent, chunk)
        self._at_schedule_start = []

    def _dispatch(self, agent, chunk: int) -> None:
        """Queue ``chunk``'s gathers unless they are queued already."""
        if chunk in self._deferred:
            self._deferred.discard(chunk)
            self._buckets[chunk] = self._queue(agent, chunk)

    @staticmethod
    def _queue(agent, chunk: int):
        """Start ``chunk``'s gathers; returns them by the forward part that first needs them, and the parts."""
        plan = agent.sim.plan
        cost = plan.chunks[chunk]
        # the gradient buckets' parameters (Megatron-Core gathers each bucket of its param-and-grad buffer),
        # in forward order
        sizes, ready, parts = bucket_schedule(plan, cost)
        count = part_count(parts)
        by_part = [[] for _ in range(count)]
        for b in reversed(range(len(sizes))):
            _, _, param, expert_param = sizes[b]
            by_part[count - 1 - ready[b]] += collective(agent, "all_gather", param, expert_param,
                                                        f"param all_gather c{chunk}b{len(sizes) - 1 - b}")
        return by_part, parts

    def forward(self, agent, work):
        for chunk in self._at_forward.pop((work.chunk, work.microbatch), ()):
            self._dispatch(agent, chunk)
        self._dispatch(agent, work.chunk)
        gathers = self._buckets.pop(work.chunk, None)
        if gathers is None:
            yield from super().forward(agent, work)
            return
        by_part, parts = gathers
        last = max((part for part, events in enumerate(by_part) if events), default=-1)
        for part, events in enumerate(by_part):
            if events:
                yield from agent.wait_data_parallel(events)
            if part == last and work.chunk in self._after_chunk:  # chained: the next chunk's first gather
                self._dispatch(agent, self._after_chunk.pop(work.chunk))
            yield from agent.compute("forward", work, part=part, parts=parts)


class GatherBeforeUse(ParameterGathering):
    """ZeRO-3/FSDP: a chunk's parameters are gathered unit by unit (a layer, the embedding, the output projection:
    ``memory.zero3_units``) before each use, forward and backward, and the next unit's all-gather is prefetched
    while the current unit computes (FSDP ``forward_prefetch``/``BACKWARD_PRE``, DeepSpeed's stage-3 prefetch): at
    most two units are whole at a time, as ``memory.zero3_gathered_bytes`` counts them.

    A block of L units, each gathering in g and computing in c, takes g + (L-1) max(g, c) + c: the first unit's
    gather is exposed, the others hide behind the previous unit's compute when shorter. Units are equal shares of
    the chunk's parameters and compute (the embedding and output units are in truth larger than a layer).
    Holds the all-gather of the unit to run next: one instance per agent. ``kept``: units still whole from the
    forward (``fsdp_runtime.units_kept_after_forward``: FSDP1's root, FSDP2's root and last block), the backward's
    first ones, gathered once; the first gathered unit's all-gather starts with the last kept one (its pre-backward
    prefetch: FSDP1 BACKWARD_PRE from the root's, FSDP2 from the last block's). FSDP2 under pipelining
    (``fsdp_runtime.gathers_once_per_step``) keeps every unit gathered across the step's microbatches: only a
    chunk's first forward (microbatch 0) gathers.
    """

    def __init__(self, prefetch: bool = True):
        self._next = None
        # False: Megatron-FSDP that prefetches nothing (megatron_fsdp_prefetch: a stated unit size of at most one unit
        # on Megatron-Core 0.12-0.13, or of 1 later): each unit's gather is issued at its own hook and waited for
        self.prefetch = prefetch

    def _first_gathered(self, agent, work) -> int:
        """The first part of ``work`` that needs an all-gather."""
        if work.phase != "backward":
            once = work.microbatch > 0 and gathers_once_per_step(agent.sim.plan.scenario)
            return self.units(agent, work) if once else 0
        return units_kept_after_forward(agent.sim.plan.scenario, self.units(agent, work))

    def units(self, agent, work) -> int:
        plan = agent.sim.plan
        cost, p = plan.chunks[work.chunk], plan.scenario.parallelism
        return zero3_units(plan.scenario.model, cost.layers, work.chunk == 0, work.chunk == plan.chunk_count - 1,
                           p.pp, root_holds_output(plan.scenario))

    def before_use(self, agent, work):
        first, units = self._first_gathered(agent, work), self.units(agent, work)
        self._next = self._gather(agent, work, 0, units) if first == 0 else None
        yield from ()

    def before_part(self, agent, work, part: int, parts: int):
        first = self._first_gathered(agent, work)
        if part < first:  # still whole from the forward; the last kept unit's pre-backward prefetches the next one
            if part == first - 1 and first < parts and self.prefetch:
                self._next = self._gather(agent, work, first, parts)
            return
        current, self._next = self._next, None
        if current is None:  # not prefetched: gathered at the unit's own hook
            current = self._gather(agent, work, part, parts)
        yield from agent.wait_data_parallel(current)
        if part + 1 < parts and self.prefetch:  # prefetch: the next unit's gather runs while this one computes
            self._next = self._gather(agent, work, part + 1, parts)

    def run(self, agent, phase: str, work):
        units = self.units(agent, work)
        for unit in range(units):
            yield from self.before_part(agent, work, unit, units)
            yield from agent.compute(phase, work, part=unit, parts=units)

    @staticmethod
    def _gather(agent, work, unit: int, units: int):
        cost = agent.sim.plan.chunks[work.chunk]
        return collective(agent, "all_gather", cost.param_bytes / units, cost.expert_param_bytes / units,
                          f"zero3 all_gather {work.phase} c{work.chunk} u{unit}")


def strategies(options: Parallelism, plan: StepPlan, data_parallel: bool) -> tuple[GradientReduction,
                                                                                  ParameterGathering]:
    """One agent's gradient reduction and parameter gathering, from the scenario's parallelism options."""
    if not data_parallel:
        return GradientReduction(), ParameterGathering()
    if options.overlap_grad_reduce:
        # FSDP2 under pipelining reduce-scatters once, after the last microbatch (fsdp_runtime.gathers_once_per_step)
        gradients = ReduceBucketsDuringBackward(every_microbatch=options.zero_stage >= 2
                                                and not gathers_once_per_step(plan.scenario))
    else:
        gradients = ReduceAfterBackward()
    if options.zero_stage == 3:
        parameters = GatherBeforeUse(prefetches_next_unit(plan.scenario))
    elif plan.param_gather:  # ZeRO-1/2
        lazy = plan.scenario.megatron_core and lazy_first_param_gather(plan.scenario.training.mcore_version)
        parameters = (GatherDuringForward(lazy, interleaved_param_gather(plan.scenario),
                                          options.overlap_param_gather_with_optimizer_step)
                      if options.overlap_param_gather else GatherAfterOptimizer())
    else:
        parameters = ParameterGathering()
    return gradients, parameters


def interleaved_param_gather(scenario: Scenario) -> str | None:
    """How Megatron-Core dispatches an interleaved stage's parameter gathers (``GatherDuringForward``): "aligned"
    (0.9 on: the schedule's ``param_sync_func``), "chained" (before 0.9: the distributed optimizer's pre-hook chain
    across chunks), None: no virtual stages, no release, or not Megatron-Core's own buffers (Apex's distributed Adam,
    ``grad_buckets: apex``, syncs its parameters its own way, not read here)."""
    version = scenario.training.mcore_version
    if (not scenario.megatron_core or scenario.parallelism.virtual_stages == 1 or version is None
            or scenario.parallelism.grad_buckets == "apex"):
        return None
    return "aligned" if lazy_first_param_gather(version) else "chained"
