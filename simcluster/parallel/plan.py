"""Per-rank programs: what each pipeline stage computes and communicates in one training step (pure, no SimPy).

``plan(scenario, fabric)`` turns the model, the layout and the schedule into a ``StepPlan``: per model chunk the
fused compute time of its forward and backward for one microbatch (with the tensor-parallel collectives inside it),
the pipeline messages, the data-parallel gradient buckets and the optimizer step. The engine replays the plan with
one timeout per (chunk, microbatch, phase), which is what keeps 16k-GPU simulations fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import simcluster.workload.optimizer_step as optimizer_step
from simcluster.core import catalog
from simcluster.parallel import (
    activation_offload,
    deepspeed_pipeline,
    ep_overlap,
    fsdp_runtime,
    memory,
    param_gather_overlap,
    sequence_parallel_grads,
)
from simcluster.parallel.ep_overlap import EpOverlap
from simcluster.parallel.layout import Layout, expert_groups
from simcluster.parallel.memory import deferred_output_wgrads  # the last stage's deferred wgrads: memory and time
from simcluster.parallel.schedules import Work, interleaved_blocking, p2p_blocks, pipeline_order
from simcluster.spec.config import Scenario
from simcluster.spec.hardware import BYTES_PER_ELEMENT, GpuSpec
from simcluster.workload import (
    async_backward,
    async_tp,
    call_issue,
    composer_adamw,
    composer_train_metrics,
    fp8_params,
    fp8_recipes,
    fp32_embedding_grads,
    grad_scaling,
    host_dispatch,
    interference,
    kernels,
    lightning_loop,
    megatron_fp16_step,
    mla,
    moe,
    mtp,
    mxfp8_swizzles,
    nan_check,
    power_clock,
    torchao_float8,
    userbuffers,
)
from simcluster.workload.ops import (
    HIGH_PRECISION,
    MLP,
    MOE,
    SHARED_EXPERTS,
    MlpBlock,
    Op,
    Shard,
    attention_core,
    embedding_ops,
    layer_ops,
    local_kv_hidden,
    output_ops,
    shard_for,
)


@dataclass(frozen=True)
class ChunkCost:
    """One model chunk on one rank, for one microbatch. Times in seconds, FLOP per rank.

    The tensor-parallel collectives of a phase (``tp_collectives``: (op, count) of ``tp_bytes`` each) run on the
    engine's network; ``*_tp_comm_s`` is their time alone on the fabric, how long ``tp_comm_overlap`` slows the
    compute it runs under (``workload.interference``), and for comparison.
    """

    chunk: int
    stage: int
    layers: int
    forward_compute_s: float
    forward_tp_comm_s: float
    backward_compute_s: float  # backward-input + backward-weight + recompute
    backward_tp_comm_s: float
    forward_flop: float
    backward_flop: float
    grad_bytes: float  # dense gradients of this chunk on one rank (reduced over dp x cp)
    param_bytes: float  # dense parameters of this chunk on one rank (all-gathered over dp x cp by ZeRO >= 1)
    # routed-expert parameters of this chunk on one rank, all-gathered by ZeRO >= 1 over the expert data-parallel
    # group (0 when it has one member: nothing to gather)
    expert_param_bytes: float = 0.0
    expert_grad_bytes: float = 0.0  # routed-expert gradients, reduced over the expert data-parallel group likewise
    # the last chunk's backward without the output layer's weight-gradient GEMM, for the microbatches whose GEMM
    # Megatron-Core defers to the pipeline flush (``deferred_output_wgrad``); 0 elsewhere
    deferred_backward_compute_s: float = 0.0
    # of each compute time above, the part the SM clock sets (``kernels.StreamTime.clock_bound_s``: compute-bound
    # kernels of a device-bound block), which a GPU's speed spread scales (engine.variability ``block_s``)
    forward_clock_s: float = 0.0
    backward_clock_s: float = 0.0
    deferred_backward_clock_s: float = 0.0
    # ring attention's key/value exchange per phase: (attention time it hides behind, ring steps, bytes per step)
    cp_exchange: dict[str, tuple[float, int, float]] = field(default_factory=dict)
    tp_collectives: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)  # phase -> (op, count)
    # the TP collectives of a phase that stay blocking after the compute while those of ``tp_collectives`` overlap
    # it: async TP's unfused backward collectives (``workload.async_tp``), and with the overlap off Megatron's and
    # TE's synchronous backward ones (``workload.async_backward``); not in ``tp_collectives`` nor ``*_tp_comm_s``
    tp_blocking: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    # the backward's ``tp_collectives`` start with its compute without ``tp_comm_overlap``: the column-parallel
    # linears' async collectives beside their GEMMs (``workload.async_backward``)
    tp_async_backward: bool = False
    # of those, what outlasts the GEMM each runs beside (``async_backward.exposed_s``, per microbatch): exposed TP
    # communication the backward waits for after its compute, not compute (no GPU-speed factor scales it)
    tp_async_exposed_s: float = 0.0
    tp_bytes: float = 0.0
    # bytes of one TP collective per op where they differ from ``tp_bytes`` (fp8 all-gathers, ``tp_collective_bytes``);
    # ``*_tp_comm_s`` and the engine's network (``Simulation.tensor_parallel``'s ``op_bytes``) use them.
    tp_op_bytes: dict[str, float] = field(default_factory=dict)
    # expert parallelism's token dispatch and combine per phase: all-to-alls over the EP groups, ``ep_bytes`` each
    ep_collectives: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    ep_bytes: float = 0.0
    # expert tensor parallelism: the dispatched tokens all-gathered over the ETP group, the expert outputs
    # reduce-scattered back, per phase, ``etp_bytes`` each (the gathered size)
    etp_collectives: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    etp_bytes: float = 0.0
    # ``ep_overlap`` (parallel.ep_overlap): the chunk's MoE layers and one MoE layer's attention and MLP sub-stages
    # per phase (seconds), under which a merged partner's all-to-alls hide
    moe_layers: int = 0
    ep_substages: dict[str, tuple[float, float]] = field(default_factory=dict)
    # the kernels of each phase's block as the host issues them (device time, count): the compute times above are
    # their ``elapsed_s`` plus the pipeline step's host time (workload.kernels.StreamTime)
    forward_stream: kernels.StreamTime = field(default_factory=kernels.StreamTime)
    backward_stream: kernels.StreamTime = field(default_factory=kernels.StreamTime)
    # work of the chunk's forward on a step's first microbatch only, before its compute: Transformer Engine's fp8
    # weight quantize (``chunk_weight_quantize_s``)
    first_forward_s: float = 0.0
    # per phase ("deferred_backward": a deferring microbatch's backward), the seconds of ``{phase}_compute_s`` that
    # the embedding (first chunk) and the output layer (last chunk: final norm, logits, cross-entropy, MTP) take:
    # a block cut at layer boundaries gives them to its end parts (engine.data_parallel ``Cuts``)
    edge_s: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class StepPlan:
    """Everything the engine needs to simulate one step of a scenario."""

    scenario: Scenario
    layout: Layout
    chunks: list[ChunkCost]
    orders: list[list[Work]]  # per pipeline stage
    microbatches: int
    p2p_bytes: float  # activation (or its gradient) sent between stages per microbatch, per tensor-parallel rank
    bucket_bytes: float
    optimizer_s: list[float]  # per pipeline stage, per rank, after the gradients are reduced (local DDP's passes too)
    dp_grad_op: str  # "allreduce" (ZeRO-0) or "reduce_scatter" (ZeRO >= 1)
    param_gather: bool  # ZeRO-1/2: all-gather updated parameters after the optimizer (ZeRO-3 gathers before use)
    stage_params: list[float] = field(default_factory=list)
    p2p_blocking: bool = False  # a pipeline send blocks its sender until the exchange completes (parallelism.p2p)
    p2p_gather_bytes: float = 0.0  # all-gather over the receiver's TP group rebuilding a scattered message (total)
    # interleaved: whether the warm-up forwards and the cool-down backwards send by blocking exchanges
    # (schedules.interleaved_blocking); the steady state's sends stay asynchronous
    p2p_interleaved_blocking: tuple[bool, bool] = (False, False)
    embedding_grad_bytes: float = 0.0  # tied word-embedding gradient all-reduced by the first and last stage
    # (dense, expert): whether each bucket's gradients are scaled on the compute stream before its collective in the
    # backward (workload.grad_scaling; where it runs after the backward, in optimizer_s)
    grad_scaled: tuple[bool, bool] = (False, False)
    # whether each bucket is checked for NaN (its norm and host reads) on the compute stream before its scaling and
    # collective in the backward (workload.nan_check; where it runs after the backward, in optimizer_s)
    nan_checked: bool = False
    grad_norm_axes: tuple[str, ...] = ()  # the gradient-norm all-reduce's group: ranks differing on these axes
    # per pipeline stage: the TP all-reduce of the gradients of parameters each TP rank holds whole, with sequence
    # parallelism (parallel.sequence_parallel_grads); empty or 0: none
    sequence_parallel_grad_bytes: list[float] = field(default_factory=list)
    # a send after a forward waits for the next backward's gradient: the two in series (deepspeed_pipeline)
    p2p_sequential: bool = False
    # defer_embedding_wgrad_compute (``deferred_output_wgrad``): the first ``deferred_wgrads`` microbatches of the last
    # chunk leave their output-layer wgrad GEMM (``deferred_wgrad_s`` alone) to the last stage's pipeline flush, each
    # after an all-gather of its sequence-parallel input of ``deferred_gather_bytes`` (0: none)
    deferred_wgrads: int = 0
    deferred_wgrad_s: float = 0.0
    deferred_wgrad_clock_s: float = 0.0  # of it, the part the SM clock sets (``ChunkCost.forward_clock_s``)
    deferred_gather_bytes: float = 0.0
    ep_overlap: EpOverlap | None = None  # Megatron-Core's combined 1F1B all-to-all overlap (parallel.ep_overlap)
    # per pipeline stage: the part of optimizer_s after the first model chunk's update, under which that chunk's
    # parameter all-gather runs (overlap_param_gather_with_optimizer_step; parallel.param_gather_overlap); empty: none
    optimizer_tail_s: list[float] = field(default_factory=list)

    def stage_of(self, chunk: int) -> int:
        return chunk % self.layout.pp

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)


EDGE_PHASES = ("forward", "backward", "deferred_backward")   # ChunkCost.edge_s


def _within_s(piece: kernels.StreamTime, whole: kernels.StreamTime) -> float:
    """Of ``whole.elapsed_s()``, the seconds its part ``piece`` takes: its time on the side that binds ``whole``
    (the device's kernels and gaps, or the host's launches: ``StreamTime.elapsed_s``)."""
    return piece.device_bound_s() if whole.device_bound_s() >= whole.host_bound_s() else piece.host_bound_s()


def _phase_stream(ops: dict[str, list], phases: tuple[str, ...], gpu, precision: str,
                  te: bool = False) -> kernels.StreamTime:
    """The kernels of ``phases`` as one block the host issues (their max of device and host time is taken per
    block, ``kernels.StreamTime``); ``te``: a Transformer Engine layer's (its module calls' host time,
    workload.host_dispatch)."""
    pool = _clock_pool(ops, phases, gpu, precision)
    return sum((kernels.stream_time(ops[phase], gpu, precision, phase if te else None, pool) for phase in phases),
               kernels.StreamTime())


def _clock_pool(ops: dict[str, list], phases: tuple[str, ...], gpu, precision: str) -> tuple[float, ...] | None:
    """Under the duty-cycle clock (workload/power_clock.py), the power balance terms per second of ``phases``
    together: the phases of a layer alternate layer by layer, so the power controller averages their mix
    (``power_clock.pooled_terms``). None for one phase or the fixed clock."""
    if len(phases) < 2 or power_clock.clock_model() != "duty_cycle":
        return None
    terms = [kernels.duty_terms(ops[phase], [kernels.roofline_s(op, gpu, precision) for op in ops[phase]],
                                gpu.name, precision) for phase in phases]
    total = [sum(column) for column in zip(*terms, strict=True)]
    duration = sum(total[:3])
    return tuple(t / duration for t in total) if duration > 0.0 else None


def _phase_flop(ops: dict[str, list], phases: tuple[str, ...]) -> float:
    return sum(op.flop for phase in phases for op in ops[phase])


BACKWARD_PHASES = ("recompute", "backward_input", "backward_weight")


def tp_collectives_per_layer(scenario: Scenario, moe_layer: bool = False) -> dict[str, list[tuple[str, int]]]:
    """Megatron tensor-parallel collectives of one layer per phase, as (op, count).

    Without sequence parallelism: 2 all-reduces forward (after attention and MLP) and 2 backward (Shoeybi et al.
    2019, fig. 4). With it, each all-reduce becomes a reduce-scatter + all-gather pair (Korthikanti et al. 2022,
    section 4.2.2). Full recompute repeats the forward's collectives during the backward. An MoE layer without
    shared experts keeps only the attention's pair: its router and experts work on the sequence-parallel tokens,
    which the dispatch moves (Megatron-Core's alltoall dispatcher); shared experts are a TP-split MLP with its pair.
    A whole-module checkpoint re-runs its MLP's pair (``mlp_pairs_recomputed``).
    """
    if scenario.parallelism.tp == 1:
        return {"forward": [], "backward": []}
    per_layer = 1 if moe_layer and not scenario.model.moe.shared_experts else 2
    pair = [("reduce_scatter", 1), ("all_gather", 1)] if scenario.parallelism.sequence_parallel else [("allreduce", 1)]
    fwd = [(op, per_layer * count) for op, count in pair]
    bwd = list(fwd)
    if scenario.training.activation_recompute == "full":
        bwd = bwd + fwd
    recomputed = mlp_pairs_recomputed(scenario, moe_layer)
    if recomputed:
        bwd = bwd + [(op, recomputed * count) for op, count in pair]
    return {"forward": fwd, "backward": bwd}


def module_checkpoints(scenario: Scenario) -> tuple[str, ...]:
    """The whole-module checkpoints of ``training.recompute_modules`` that run: none under full recompute, which
    re-runs the layer already (Megatron-Core applies recompute_modules with selective granularity only)."""
    t = scenario.training
    return () if t.activation_recompute == "full" else tuple(
        module for module in t.recompute_modules if module in (MLP, MOE, SHARED_EXPERTS))


def mlp_pairs_recomputed(scenario: Scenario, moe_layer: bool) -> int:
    """Tensor-parallel collective pairs (all-reduce, or reduce-scatter and all-gather) a layer's module checkpoints
    re-run before its backward: the dense MLP's (``mlp``: fc1's sequence-parallel gather and fc2's reduction sit
    inside the checkpointed MLP); in an MoE layer the shared experts' once for ``moe`` and once for
    ``shared_experts`` (nested checkpoints each re-run their forward, ``ops.module_recompute``)."""
    modules = module_checkpoints(scenario)
    if not moe_layer:
        return int(MLP in modules)
    if not scenario.model.moe.shared_experts:
        return 0
    return int(MOE in modules) + int(SHARED_EXPERTS in modules)


def chunk_tp_calls(dense_ops, dense: int, moe_ops, moe_layers: int) -> tuple[tuple[str, int], ...]:
    """A chunk's TP collectives of one phase, (op, count): ``dense_ops`` and ``moe_ops`` are one dense and one MoE
    layer's calls of the phase (``tp_collectives_per_layer``, after the overlap split), ``dense`` and ``moe_layers``
    the chunk's layers of each kind. The two lists share their leading calls (the attention's pair, a full
    recompute's) and differ only in the module-checkpoint pairs appended at the end (``mlp_pairs_recomputed``: ``mlp``
    re-runs a dense layer's MLP pair only, ``moe`` and ``shared_experts`` an MoE layer's shared-expert pair only), so
    the common calls add and either tail stays its own layers'. Per op the result is dense x sum(dense_ops) +
    moe_layers x sum(moe_ops), what the chunk's layers issue (the engine charges the counts, ``agents.share``)."""
    common = min(len(dense_ops), len(moe_ops))
    if any(op != moe_op for (op, _), (moe_op, _) in zip(dense_ops[:common], moe_ops[:common], strict=True)):
        raise ValueError(f"dense and MoE layers' TP collectives differ in order: {dense_ops} / {moe_ops}")
    return (tuple((op, dense * count + moe_layers * moe_count)
                  for (op, count), (_, moe_count) in zip(dense_ops[:common], moe_ops[:common], strict=True))
            + tuple((op, dense * count) for op, count in dense_ops[common:])
            + tuple((op, moe_layers * count) for op, count in moe_ops[common:]))


# Transformer Engine gathers the sequence-parallel inputs of its GEMMs in fp8 in fp8 training: LayerNormLinear and
# LayerNormMLP write the norm output as fp8 and all-gather that (``ln_out`` of dtype uint8 before
# gather_along_first_dim, also when re-gathered for the weight gradient), the row-parallel layers' backward casts dY
# to fp8 before gathering it (TransformerEngineBaseModule.grad_output_preprocess, "FP8 case with gather"), and with
# userbuffers overlap "AllGather buffers use fp8 when using fp8 recipe" (initialize_ub); all in
# transformer_engine/pytorch/module/{layernorm_linear,base}.py, TE 1.x. Reduce-scatters and all-reduces sum partial
# GEMM outputs, which stay 16-bit.
FP8_GATHERED_OPS = ("all_gather",)


def tp_collective_bytes(scenario: Scenario, activation_bytes: float) -> dict[str, float]:
    """Bytes of one tensor-parallel collective per op, for ``activation_bytes`` of 16-bit activation: the all-gathers
    of fp8 training move fp8 elements (``FP8_GATHERED_OPS``), everything else the activation's own width."""
    sizes = {"allreduce": activation_bytes, "reduce_scatter": activation_bytes, "all_gather": activation_bytes}
    precision = scenario.training.precision
    if precision in HIGH_PRECISION:  # Transformer Engine's low-precision GEMM inputs (fp8)
        ratio = BYTES_PER_ELEMENT[precision] / shard_for(scenario).activation_bytes_per_element
        sizes.update({op: activation_bytes * ratio for op in FP8_GATHERED_OPS})
    return sizes


# Time of one collective alone on the fabric: (op, group of fabric GPU indices, size_bytes) -> seconds. The engine
# supplies it (collectives.timing.isolated_time_s on its fabric), so the plan needs no network or fabric of its own.
CollectiveTime = Callable[[str, tuple[int, ...], float], float]


def busiest_moe_block(scenario: Scenario, shard: Shard) -> MlpBlock | None:
    """The MoE layer's MLP block on the busiest expert-parallel rank as the step plan times it (``moe.moe_block`` at
    ``moe.step_load``, its expert GEMMs averaged over ``moe.step_load_nodes``); None for a dense model. Shared with
    scripts/moe_layer_terms.py, which itemises it."""
    t, p, m = scenario.training, scenario.parallelism, scenario.model
    if not m.moe:
        return None
    return moe.moe_block(m, shard, p.ep, p.etp, moe.step_load(m, shard, p.ep, p.etp), t.moe_cuda_graphs,
                         p.moe_dispatcher, moe.Router.of(t), moe.step_load_nodes(m, shard, p.ep, p.etp))


def plan(scenario: Scenario, collective_time_s: CollectiveTime) -> StepPlan:
    """Build the step plan of ``scenario``; ``collective_time_s`` times its tensor-parallel collectives alone on the
    fabric (how long ``tp_comm_overlap`` slows the compute)."""
    t, p, m = scenario.training, scenario.parallelism, scenario.model
    gpu, precision = scenario.cluster.gpu, t.precision
    layout = Layout.of(p)
    shard = shard_for(scenario)
    activation_element = shard.activation_bytes_per_element  # 16-bit between GEMMs, also in fp8 training
    # the parameters a sharded optimizer gathers: fp32 ones under autocast_fp32_params (memory.state_precision)
    weight_element = memory.state_bytes_per_param(memory.state_precision(t))["weights"]
    fp8_weights = fp8_params.enabled(t)   # GEMM weights gathered in fp8 (workload.fp8_params)
    # GEMM weights all-gathered in fp8: Megatron-Core's fp8 parameters or torchao's float8 all-gather for FSDP2
    fp8_gather = fp8_weights or torchao_float8.fsdp_float8_all_gather(t, p)
    fp8_params.refuse_sharded_transpose(t, p.zero_stage, gpu.name)
    # MXFP8's scale swizzles inside each GEMM call, as launches, by the container's Transformer Engine release
    # (workload.mxfp8_swizzles; before userbuffers' chunks, after MLA's linears)
    def swizzles(phases: dict[str, list[Op]]) -> dict[str, list[Op]]:
        return mxfp8_swizzles.apply_for(scenario, phases)

    layer = swizzles(mla.apply(m, shard, layer_ops(m, shard)))   # multi-head latent attention where the model has it
    layer_gemms = fp8_gemms(layer)
    overlap = p.tp_comm_overlap and p.sequence_parallel and p.tp > 1
    ub = overlap and p.tp_comm_overlap_impl == "userbuffers"  # Transformer Engine userbuffers' chunk GEMMs
    micro_pipelined = overlap and p.tp_comm_overlap_impl == "async_tp"  # PyTorch's async TP (dense layers only)
    ub_settings = userbuffers.scenario_charged(scenario) if ub else None  # TE's defaults or a NeMo configuration
    # full recompute's first forward runs without autograd: TE gathers qkv's and fc1's inputs over NCCL
    grad_free_forward = ub and t.activation_recompute == "full"
    if ub:
        layer = userbuffers.apply(layer, p.tp, precision, activation_element, kernels.sm_count(gpu.name), ub_settings,
                                  p.te_version, grad_free_forward)
    if micro_pipelined:
        layer = async_tp.apply(layer, p.tp, precision)
    embed = embedding_ops(m, shard)
    output = output_ops(m, shard)
    deferred_wgrads = deferred_output_wgrads(scenario)
    te = host_dispatch.transformer_engine_layers(scenario)   # their module calls' host time
    layer_fwd = _phase_stream(layer, ("forward",), gpu, precision, te)
    layer_bwd = _phase_stream(layer, BACKWARD_PHASES, gpu, precision, te)
    # MoE layers: experts sized for the busiest expert-parallel rank, whose load sets the step (workload.moe)
    moe_mlp = busiest_moe_block(scenario, shard)
    moe_layer = swizzles(mla.apply(m, shard, layer_ops(m, shard, moe_mlp))) if m.moe else layer
    if ub and m.moe:
        moe_layer = userbuffers.apply(moe_layer, p.tp, precision, activation_element, kernels.sm_count(gpu.name),
                                      ub_settings, p.te_version, grad_free_forward)
    moe_gemms = fp8_gemms(moe_layer)
    moe_fwd = _phase_stream(moe_layer, ("forward",), gpu, precision, te)
    moe_bwd = _phase_stream(moe_layer, BACKWARD_PHASES, gpu, precision, te)
    ep_per_layer = expert_parallel_per_layer(scenario)
    ep_substages = _ep_substages(moe_mlp, moe_fwd, moe_bwd, gpu, precision, te) if p.ep_overlap and m.moe else {}
    etp_per_layer = expert_tensor_parallel_per_layer(scenario)
    ep_bytes = dispatch_bytes(scenario)

    # Tensor-parallel collectives move the full activation of the microbatch (s*b*h elements; each rank holds
    # 1/tp of it with sequence parallelism) among the tp ranks of one node, over NVLink: timed once here with the
    # analytic model, which is exact for a group alone on its NVSwitch.
    activation_bytes = t.seq_len / p.cp * t.micro_batch_size * m.hidden * activation_element
    tp_group = layout.group(0, "tp")
    per_layer = tp_collectives_per_layer(scenario)
    moe_per_layer = tp_collectives_per_layer(scenario, moe_layer=True) if m.moe else per_layer
    blocking: dict[str, tuple[tuple[str, int], ...]] = {}
    moe_blocking = blocking
    async_bwd = async_backward.applies(scenario)  # overlap off: the column-parallel linears' async collectives
    linears = (async_backward.linears(per_layer), async_backward.linears(moe_per_layer)) if async_bwd else (0, 0)
    if micro_pipelined:  # the collectives the pass leaves to NCCL run after the compute, blocking (dense only)
        per_layer, blocking = async_tp.split(per_layer)
        moe_per_layer, moe_blocking = per_layer, blocking
    elif async_bwd:
        per_layer, blocking = async_backward.split(per_layer, p.sequence_parallel)
        moe_per_layer, moe_blocking = async_backward.split(moe_per_layer, p.sequence_parallel)
    elif grad_free_forward:  # the first forward's all-gathers over NCCL before their GEMMs (userbuffers.apply)
        per_layer, blocking = userbuffers.grad_free_split(per_layer)
        moe_per_layer, moe_blocking = userbuffers.grad_free_split(moe_per_layer)
    tp_op_bytes = tp_collective_bytes(scenario, activation_bytes)
    tp_cost, moe_tp_cost = ({phase: sum(count * collective_time_s(op, tuple(tp_group), tp_op_bytes[op])
                                        for op, count in ops) for phase, ops in calls.items()}
                            for calls in (per_layer, moe_per_layer))
    if ub:  # each pipeline overlap's last reduce-scatter chunk runs after its last GEMM chunk (workload.userbuffers)
        rs_chunk, fp8_chunk = userbuffers.last_chunk_bytes(activation_bytes, p.tp, activation_element, precision,
                                                           ub_settings)  # fp8_chunk: fp8_buf
        chunk_s = collective_time_s("reduce_scatter", tuple(tp_group), rs_chunk)
        fp8_s = collective_time_s("reduce_scatter", tuple(tp_group), fp8_chunk) if fp8_chunk else None
        layer_fwd += userbuffers.exposed_stream(layer, ("forward",), chunk_s, ub_settings, fp8_s, precision)
        layer_bwd += userbuffers.exposed_stream(layer, BACKWARD_PHASES, chunk_s, ub_settings, fp8_s, precision)
        moe_fwd += userbuffers.exposed_stream(moe_layer, ("forward",), chunk_s, ub_settings, fp8_s, precision)
        moe_bwd += userbuffers.exposed_stream(moe_layer, BACKWARD_PHASES, chunk_s, ub_settings, fp8_s, precision)
        # MXFP8: the scale-inverses of each all-gather filled into a userbuffer, gathered blocking over NCCL
        forward = () if grad_free_forward else ("forward",)   # a grad-free forward gathers over NCCL
        layer_fwd += mxfp8_scale_gathers(scenario, layer, forward, tp_group, collective_time_s, ub_settings)
        layer_bwd += mxfp8_scale_gathers(scenario, layer, BACKWARD_PHASES, tp_group, collective_time_s, ub_settings)
        moe_fwd += mxfp8_scale_gathers(scenario, moe_layer, forward, tp_group, collective_time_s, ub_settings)
        moe_bwd += mxfp8_scale_gathers(scenario, moe_layer, BACKWARD_PHASES, tp_group, collective_time_s,
                                       ub_settings)
    if shard.precision == "fp8":  # current scaling's amax all-reduce before each sequence-parallel cast
        layer_fwd += tp_amax_all_reduces(scenario, "forward", tp_group, collective_time_s)
        layer_bwd += tp_amax_all_reduces(scenario, "backward", tp_group, collective_time_s)
        moe_fwd += tp_amax_all_reduces(scenario, "forward", tp_group, collective_time_s, moe_layer=bool(m.moe))
        moe_bwd += tp_amax_all_reduces(scenario, "backward", tp_group, collective_time_s, moe_layer=bool(m.moe))
    async_exposed_s = moe_async_exposed_s = 0.0
    if async_bwd:  # what outlasts the GEMM it runs beside (the engine overlaps the rest with the block): a TP wait
        comm_s = {op: collective_time_s(op, tuple(tp_group), tp_op_bytes[op]) for op, _ in per_layer["backward"]}
        async_exposed_s = async_backward.exposed_s(layer, linears[0], p.sequence_parallel, gpu, precision, comm_s)
        moe_async_exposed_s = async_backward.exposed_s(moe_layer, linears[1], p.sequence_parallel, gpu, precision,
                                                       comm_s)
    cp_per_layer = context_parallel_exchange(scenario)

    counts, moe_counts = memory.chunk_layers(m, p.pp, p.virtual_stages, p.layers_per_stage)  # MTP's: last chunk
    mtp_extra = swizzles(mtp.extra_ops(m, shard))   # eh_proj's GEMM calls swizzle too
    # the MTP modules' eh_proj collectives, on the last chunk, blocking (built without a userbuffers name)
    mtp_calls = (mtp.tp_collectives(m, p.sequence_parallel, round(tp_op_bytes["allreduce"] / tp_op_bytes["all_gather"]))
                 if m.mtp_layers and p.tp > 1 else {})
    experts_per_layer = memory.expert_params_per_rank(m, p.ep, p.etp)
    # routed-expert gradients are reduced over the expert data-parallel group; with one member, not at all
    reduced_experts = experts_per_layer if scenario.expert_data_parallel > 1 else 0.0
    grad_element = BYTES_PER_ELEMENT[p.grad_reduce_dtype]
    # Megatron's pipeline schedule spends host time on every model-chunk step (efficiency.yaml host_overhead)
    step_s = kernels.pipeline_step_overhead_s() if p.pp > 1 else 0.0
    # full-iteration CUDA graphs (efficiency.yaml host_overhead.cuda_graphs on): the schedule's forward and backward
    # blocks replay from one graph, its Python and pipeline steps with them (the optimizer step stays eager)
    graph_step = t.cuda_graph_scope == "full_iteration" and kernels.host_model().cuda_graphs
    if graph_step:
        step_s = 0.0
    float8_copy_in = _float8_copy_in(scenario, layout, layer, collective_time_s)   # torchao's float8 all-gather
    chunks, chunk_param_counts, chunk_gemm_counts = [], [], []
    for index, (layers, moe_layers) in enumerate(zip(counts, moe_counts, strict=True)):
        first, last = index == 0, index == len(counts) - 1
        dense = layers - moe_layers
        fwd_stream = dense * layer_fwd + moe_layers * moe_fwd
        bwd_stream = dense * layer_bwd + moe_layers * moe_bwd
        if shard.precision == "fp8":  # delayed scaling's amax reduction, once per chunk, microbatch and direction
            gemms = dense * layer_gemms + moe_layers * moe_gemms
            fwd_stream += amax_region(scenario, gemms, "forward", layout, collective_time_s)
            bwd_stream += amax_region(scenario, gemms, "backward", layout, collective_time_s)
        fwd_flop = dense * _phase_flop(layer, ("forward",)) + moe_layers * _phase_flop(moe_layer, ("forward",))
        bwd_flop = (dense * _phase_flop(layer, BACKWARD_PHASES)
                    + moe_layers * _phase_flop(moe_layer, BACKWARD_PHASES))
        kept_stream = bwd_stream if last and deferred_wgrads else None  # the backward of a deferring microbatch
        edges = {phase: [kernels.StreamTime(), kernels.StreamTime()] for phase in EDGE_PHASES}  # embedding, output
        for ops, present in ((embed, first), (output, last), (mtp_extra, last and m.mtp_layers > 0)):
            if present:
                streams = {"forward": _phase_stream(ops, ("forward",), gpu, precision),
                           "backward": _phase_stream(ops, BACKWARD_PHASES, gpu, precision)}
                fwd_stream += streams["forward"]
                bwd_stream += streams["backward"]
                fwd_flop += _phase_flop(ops, ("forward",))
                bwd_flop += _phase_flop(ops, BACKWARD_PHASES)
                if kept_stream is not None:
                    streams["deferred_backward"] = _phase_stream(
                        ops, DEFERRED_KEPT_PHASES if ops is output else BACKWARD_PHASES, gpu, precision)
                    kept_stream += streams["deferred_backward"]
                for phase, stream in streams.items():
                    edges[phase][ops is not embed] += stream
        params = memory.chunk_params(m, p.tp, layers, first, last, p.pp, moe_layers)
        experts = moe_layers * experts_per_layer
        gemm_weights = (memory.chunk_gemm_weights(m, p.tp, layers, moe_layers, experts_per_layer)
                        if fp8_gather else 0.0)
        if t.activation_offload_layers:  # TE's offload stream falling behind (pp 1: the one chunk holds every layer)
            stalls = activation_offload.microbatch_stalls_s(
                gpu.name, m.layers, t.activation_offload_layers, layer_fwd.elapsed_s(), layer_bwd.elapsed_s(),
                memory.layer_activation_bytes(m, shard))
            fwd_stream += kernels.StreamTime(stall_s=stalls[0])
            bwd_stream += kernels.StreamTime(stall_s=stalls[1])
        if fsdp_runtime.runs_fsdp1(scenario):  # FSDP1's gradient copy, pad and pre-divide, on side streams
            bwd_stream += kernels.StreamTime(device_s=fsdp_runtime.backward_interference_s(
                params + experts, memory.zero3_units(m, layers, first, last, p.pp, merged_root=True), weight_element,
                interference.memory_bound_share([op for ph in BACKWARD_PHASES for op in layer[ph]], gpu, precision),
                gpu, precision, grad_element, p.dp * p.cp,
                fsdp_runtime.unit_numels(memory.layer_params_per_rank(m, p.tp), layers, params + experts)))
        if last and lightning_loop.applies(scenario):  # Lightning's metrics, synced log and progress bar
            bwd_stream += kernels.stream_time(lightning_loop.microbatch_ops(), gpu, precision)
        if last and composer_train_metrics.applies(scenario):  # Composer's train metrics after each backward
            bwd_stream += kernels.stream_time(composer_train_metrics.microbatch_ops(
                shard.tokens, math.ceil(m.vocab / shard.tp), shard.activation_bytes_per_element), gpu, precision)
        first_forward_s = chunk_weight_quantize_s(scenario, layers, moe_layers, fp8_weights)
        if float8_copy_in is not None:  # torchao's shard casts on FSDP2's copy-in stream, ahead of each gather
            gathers = float8_copy_in.gathers(scenario, layers, first, last)
            if gathers is None:   # gathered once a step, on the first microbatch's forward: the device's waits
                # there, the launches' host time spread over the step's forwards (the host runs ahead of the GPU)
                once = float8_copy_in.forward(layers, layer_fwd.elapsed_s())
                first_forward_s += once.device_bound_s()
                fwd_stream += kernels.StreamTime(host_extra_s=once.host_extra_s / scenario.microbatches)
            else:
                fwd_stream += float8_copy_in.forward(gathers[0], layer_fwd.elapsed_s())
                bwd_stream += float8_copy_in.backward(gathers[1], layer_bwd.elapsed_s())
        if fsdp_runtime.copies_out(scenario):  # FSDP2's copy-out after each all-gather, on the compute stream
            fwd_copy, bwd_copy, once = _fsdp2_copy_out(scenario, layers, first, last, gathered_param_bytes(
                params, experts, gemm_weights if fp8_gather else None, weight_element, scenario.expert_data_parallel
            )[0], weight_element)
            fwd_stream += fwd_copy
            bwd_stream += bwd_copy
            first_forward_s += once
            # and the reduce-scatter copy-in of each unit's gradients, on the compute stream before its reduce-scatter
            bwd_stream += _fsdp2_reduce_scatter_copy_in(scenario, layers, first, last,
                                                        params + moe_layers * reduced_experts, weight_element,
                                                        grad_element)
        if graph_step:
            fwd_stream, bwd_stream = kernels.graphed(fwd_stream), kernels.graphed(bwd_stream)
            kept_stream = kernels.graphed(kept_stream) if kept_stream is not None else None
            edges = {phase: [kernels.graphed(piece) for piece in pieces] for phase, pieces in edges.items()}
        chunk_param_counts.append(params + experts)
        chunk_gemm_counts.append(gemm_weights)
        param_bytes, expert_param_bytes = gathered_param_bytes(params, experts, gemm_weights if fp8_gather else None,
                                                               weight_element, scenario.expert_data_parallel)
        chunks.append(ChunkCost(
            chunk=index, stage=index % p.pp, layers=layers,
            forward_compute_s=fwd_stream.elapsed_s() + step_s,
            forward_tp_comm_s=dense * tp_cost["forward"] + moe_layers * moe_tp_cost["forward"],
            backward_compute_s=bwd_stream.elapsed_s() + step_s,
            backward_tp_comm_s=dense * tp_cost["backward"] + moe_layers * moe_tp_cost["backward"],
            deferred_backward_compute_s=kept_stream.elapsed_s() + step_s if kept_stream is not None else 0.0,
            forward_clock_s=fwd_stream.clock_bound_s(), backward_clock_s=bwd_stream.clock_bound_s(),
            deferred_backward_clock_s=kept_stream.clock_bound_s() if kept_stream is not None else 0.0,
            forward_flop=fwd_flop, backward_flop=bwd_flop,
            grad_bytes=params * grad_element, expert_grad_bytes=moe_layers * reduced_experts * grad_element,
            param_bytes=param_bytes, expert_param_bytes=expert_param_bytes,
            cp_exchange={phase: (layers * attention_s, layers * steps, step_bytes)
                         for phase, (attention_s, steps, step_bytes) in cp_per_layer.items()},
            tp_collectives={phase: chunk_tp_calls(ops, dense, moe_per_layer[phase], moe_layers)
                            for phase, ops in per_layer.items()},
            tp_blocking={phase: chunk_tp_calls(blocking.get(phase, ()), dense, moe_blocking.get(phase, ()), moe_layers)
                         + (tuple(mtp_calls.get(phase, ())) if last else ())
                         for phase in dict.fromkeys([*blocking, *(mtp_calls if last else ())])},
            tp_async_backward=async_bwd,
            tp_async_exposed_s=dense * async_exposed_s + moe_layers * moe_async_exposed_s,
            tp_bytes=activation_bytes,
            tp_op_bytes={op: size for op, size in tp_op_bytes.items() if size != activation_bytes},
            ep_collectives={phase: tuple((op, moe_layers * count) for op, count in ops if moe_layers)
                            for phase, ops in ep_per_layer.items()},
            ep_bytes=ep_bytes,
            etp_collectives={phase: tuple((op, moe_layers * count) for op, count in ops if moe_layers)
                             for phase, ops in etp_per_layer.items()},
            etp_bytes=ep_bytes * p.etp, moe_layers=moe_layers, ep_substages=ep_substages,
            forward_stream=fwd_stream, backward_stream=bwd_stream,
            first_forward_s=first_forward_s,
            edge_s={phase: tuple(_within_s(piece, whole) for piece in edges[phase])
                    for phase, whole in (("forward", fwd_stream), ("backward", bwd_stream),
                                         ("deferred_backward", kept_stream)) if whole is not None},
        ))

    layer_tensors = optimizer_step.parameter_tensors_per_layer(scenario.model.norm, scenario.model.linear_biases)
    stage_params = [sum(n for c, n in zip(chunks, chunk_param_counts, strict=True) if c.stage == s)
                    for s in range(p.pp)]
    stage_fp8 = [fp8_params.Fp8Shard(
        sum(n for c, n in zip(chunks, chunk_gemm_counts, strict=True) if c.stage == s) / stage_params[s],
        fp8_params.GEMM_WEIGHT_TENSORS_PER_LAYER / layer_tensors, t.fp8_recipe) if fp8_weights else None
        for s in range(p.pp)]
    # ZeRO >= 1 shards the optimizer over the data- and context-parallel ranks holding the same parameters, routed
    # experts over their expert data-parallel ranks
    shards = p.dp * p.cp if p.zero_stage >= 1 else 1
    expert_shards = scenario.expert_data_parallel if p.zero_stage >= 1 else 1
    stage_experts = [experts_per_layer * sum(n for c, n in enumerate(moe_counts) if c % p.pp == s)
                     for s in range(p.pp)]
    optimizer_params = [(params - experts) / shards + experts / expert_shards
                        for params, experts in zip(stage_params, stage_experts, strict=True)]
    orders = [pipeline_order(p.schedule, p.pp, s, scenario.microbatches, p.virtual_stages) for s in range(p.pp)]
    p2p_bytes, gather_bytes = pipeline_messages(scenario, activation_bytes)
    # DeepSpeed's BF16_Optimizer counts its own gradient norm and zeroing (deepspeed_pipeline)
    wrapper_passes = not (p.pipeline_engine == "deepspeed"
                          and deepspeed_pipeline.uses_bf16_optimizer(precision, p.grad_reduce_dtype))
    deferred_stream = (_phase_stream(output, ("backward_weight",), gpu, precision) if deferred_wgrads
                       else kernels.StreamTime())

    # overlap_param_gather_with_optimizer_step: per stage, the share of its optimizer shard stepped after the first
    # model chunk's gather is dispatched (param_gather_overlap.later_share); None: one optimizer step
    tail_shares = [param_gather_overlap.later_share(
        [n - moe_counts[c.chunk] * experts_per_layer for c, n in zip(chunks, chunk_param_counts, strict=True)
         if c.stage == stage],
        [moe_counts[c.chunk] * experts_per_layer for c in chunks if c.stage == stage], shards, expert_shards)
        if p.overlap_param_gather_with_optimizer_step else None for stage in range(p.pp)]

    def stage_optimizer_s(stage: int, params: float, tail_share: float | None = None, head: bool = False) -> float:
        """Stage ``stage``'s optimizer step over its ``params`` shard parameters (``optimizer_time_s``)."""
        return optimizer_time_s(params, gpu, precision, p.grad_reduce_dtype, t.optimizer,
                                params if p.zero_stage >= 2 else stage_params[stage],
                                fsdp_runtime.optimizer_tensors(    # Composer's per-piece optimizer loop
                                    sum(c.layers for c in chunks if c.stage == stage), sum(memory.zero3_units(
                                        m, c.layers, c.chunk == 0, c.chunk == len(chunks) - 1, p.pp)
                                        for c in chunks if c.stage == stage), layer_tensors,
                                    shards if fsdp_runtime.applies(scenario) else 1)  # no ZeRO-1: all local
                                if t.optimizer == "decoupled_adamw" else optimizer_step.shard_tensors(
                                    sum(c.layers for c in chunks if c.stage == stage) * layer_tensors, shards),
                                p.zero_stage >= 1, wrapper_passes, stage_fp8[stage],
                                gradient_buffers(scenario, sum(c.stage == stage for c in chunks)),
                                t.adam_moments_dtype, lightning_loop.clip_over(scenario), tail_share, head)

    def stage_step_s(stage: int, params: float) -> float:
        """The whole optimizer step of stage ``stage``: one, or the head and tail of the split one."""
        share = tail_shares[stage]
        if share is None:
            return stage_optimizer_s(stage, params)
        return stage_optimizer_s(stage, params, share, head=True) + stage_optimizer_s(stage, params, share)

    step_plan = StepPlan(
        scenario=scenario, layout=layout, chunks=chunks, orders=orders, microbatches=scenario.microbatches,
        p2p_bytes=p2p_bytes, bucket_bytes=p.grad_bucket_size,
        optimizer_s=[stage_step_s(stage, params)
                     + local_ddp_time_s(sum(c.grad_bytes + c.expert_grad_bytes for c in chunks if c.stage == stage),
                                        gpu, precision, p.local_ddp)
                     + grad_scaling.serial_s(scenario, [(c.grad_bytes, c.expert_grad_bytes) for c in chunks
                                                        if c.stage == stage])
                     + nan_check.serial_s(scenario, [(c.grad_bytes, c.expert_grad_bytes) for c in chunks
                                                     if c.stage == stage])
                     + (float8_copy_in.precompute_s(sum(c.layers for c in chunks if c.stage == stage))
                        if float8_copy_in is not None else 0.0)
                     for stage, params in enumerate(optimizer_params)],
        dp_grad_op="allreduce" if p.zero_stage == 0 else "reduce_scatter",
        param_gather=p.zero_stage in (1, 2), stage_params=stage_params,
        p2p_blocking=p2p_blocks(p.p2p, p.schedule, p.virtual_stages), p2p_gather_bytes=gather_bytes,
        p2p_interleaved_blocking=interleaved_blocking(p.p2p, p.virtual_stages, scenario.megatron_core),
        embedding_grad_bytes=embedding_grad_bytes(scenario),
        grad_scaled=grad_scaling.scaled(scenario) if grad_scaling.in_backward(scenario) else (False, False),
        nan_checked=nan_check.applies(scenario) and grad_scaling.in_backward(scenario),
        grad_norm_axes=grad_norm_axes(p),
        sequence_parallel_grad_bytes=sequence_parallel_grads.stage_bytes(scenario, counts, moe_counts),
        deferred_wgrads=deferred_wgrads,
        deferred_wgrad_s=deferred_stream.elapsed_s(), deferred_wgrad_clock_s=deferred_stream.clock_bound_s(),
        deferred_gather_bytes=activation_bytes if deferred_wgrads and p.tp > 1 and p.sequence_parallel else 0.0,
    )
    if p.overlap_param_gather_with_optimizer_step:   # the tail, a part of optimizer_s (stage_step_s)
        step_plan.optimizer_tail_s = [stage_optimizer_s(stage, params, tail_shares[stage])
                                      for stage, params in enumerate(optimizer_params)]
    if p.ep_overlap and m.moe and p.ep > 1:
        step_plan.ep_overlap = ep_overlap.build(
            scenario, orders, {phase: interference.memory_bound_share(
                [op for part in parts for op in moe_layer[part]], gpu, precision)
                for phase, parts in (("forward", ("forward",)), ("backward", BACKWARD_PHASES))},
            len({r // scenario.cluster.gpus_per_node for r in expert_groups(layout, 0, p.ep, p.etp)[0]}) > 1,
            {phase: sum(count for _, count in calls) for phase, calls in ep_per_layer.items()})
    if p.pipeline_engine == "deepspeed":  # DeepSpeed's PipelineEngine (parallel.deepspeed_pipeline)
        return deepspeed_pipeline.apply(step_plan, collective_time_s)
    return step_plan


# With the EP overlap the attention node ends with the router and the dispatch preprocess (Megatron-Core
# TransformerLayer: "If EP overlap is enabled, remaining of mlp will be called as fine_grained_callables": route()
# and preprocess() run before it returns), so their kernels belong to the attention sub-stage
ATTENTION_NODE_MOE_OPS = frozenset({"router", "router_topk", "router_cast", "permute"})


def _ep_substages(mlp, moe_fwd, moe_bwd, gpu, precision: str, te: bool = False) -> dict[str, tuple[float, float]]:
    """One MoE layer's (attention, MLP) sub-stages per phase for ``ep_overlap``: the MLP the MoE block's kernels
    but the router's and the permutation's (``ATTENTION_NODE_MOE_OPS``), the attention the rest of the layer
    (recompute counted in the backward); ``te``: Transformer Engine layers, whose expert modules' host time
    (``_phase_stream``) goes with the MLP."""
    def expert_s(phases: tuple[str, ...]) -> float:
        ops = {phase: [op for op in getattr(mlp, phase) if op.name not in ATTENTION_NODE_MOE_OPS]
               for phase in phases}
        return _phase_stream(ops, phases, gpu, precision, te).elapsed_s()

    mlp_s = {"forward": expert_s(("forward",)), "backward": expert_s(("backward_input", "backward_weight"))}
    layer_s = {"forward": moe_fwd.elapsed_s(), "backward": moe_bwd.elapsed_s()}
    return {phase: (max(0.0, layer_s[phase] - mlp_s[phase]), min(mlp_s[phase], layer_s[phase])) for phase in mlp_s}


# A deferring microbatch's output layer runs its backward without the weight-gradient GEMM (Megatron-Core
# LinearWithGradAccumulationAndAsyncCommunication.backward: wgrad_compute False once grad_output is buffered)
DEFERRED_KEPT_PHASES = ("recompute", "backward_input")


def fp8_gemms(layer: dict[str, list]) -> int:
    """The fp8 GEMMs of a layer's forward (each a Transformer Engine GEMM with its own amaxes): GEMMs that run in the
    run's precision (not the 16-bit ones, ``Op.precision``), before userbuffers splits them into chunks."""
    return sum(op.kind == "gemm" and op.precision is None for op in layer["forward"])


@dataclass(frozen=True)
class Float8CopyIn:
    """torchao's float8 all-gather on FSDP2 as the step pays it beyond its 1-byte gathers (``workload.torchao_float8``,
    ``fsdp_runtime.float8_copy_in_*``), per transformer-layer unit gathered: the copy-in charge on the compute stream
    (forward and backward HBM-bound shares), the copy-in chain ahead of the gather, the gather alone, and with
    precompute the step's fused amax pass."""

    fsdp2: bool                 # zero_stage 3 gathering every microbatch (else: once a step, the first microbatch)
    charge_fwd: kernels.StreamTime
    charge_bwd: kernels.StreamTime
    chain_s: float
    gather_s: float
    layer_weights: float        # float8-linear weight elements of a layer on one rank, unsharded
    linears: int
    shards: int
    precompute: bool            # the scales from one fused amax pass a step (torchao_float8.precompute)
    group: tuple[int, ...]      # the FSDP group (dp x cp) of rank 0
    gpu: GpuSpec
    precision: str
    collective_time_s: CollectiveTime

    def gathers(self, scenario: Scenario, layers: int, first: bool, last: bool) -> tuple[int, int] | None:
        """Float8 units gathered per microbatch (forward, backward) of a chunk of ``layers``, or None when FSDP2
        keeps them gathered through the step: the backward's kept ones (``units_kept_after_forward``) beyond the
        root units are not gathered again."""
        if not self.fsdp2:
            return None
        p = scenario.parallelism
        units = memory.zero3_units(scenario.model, layers, first, last, p.pp, fsdp_runtime.root_holds_output(scenario))
        kept = max(0, fsdp_runtime.units_kept_after_forward(scenario, units) - (units - layers))
        return layers, layers - kept

    def forward(self, gathers: int, compute_s: float) -> kernels.StreamTime:
        """``gathers`` forward gathers: their copy-in charge, and their chains' exposure, the first waited for."""
        return gathers * self.charge_fwd + kernels.StreamTime(stall_s=fsdp_runtime.float8_gather_exposed_s(
            self.chain_s, self.gather_s, compute_s, gathers, first_exposed=True))

    def backward(self, gathers: int, compute_s: float) -> kernels.StreamTime:
        """``gathers`` backward re-gathers, the first prefetched behind the last kept unit's backward."""
        return gathers * self.charge_bwd + kernels.StreamTime(stall_s=fsdp_runtime.float8_gather_exposed_s(
            self.chain_s, self.gather_s, compute_s, gathers, first_exposed=False))

    def precompute_s(self, layers: int) -> float:
        """``precompute_float8_dynamic_scale_for_fsdp`` after the optimizer step over a stage's ``layers``, on the
        compute stream: ``_foreach_norm`` reading every float8 shard (one launch), stack, clamp, division, and the
        amaxes' one all-reduce over the FSDP group, which the division waits for. 0 without precompute."""
        if not self.precompute or not layers:
            return 0.0
        weights = layers * self.linears
        ops = [Op("torchao _foreach_norm(inf)", "memory", 0.0,
                  torchao_float8.PRECOMPUTE_READ_BYTES * layers * self.layer_weights / self.shards)]
        ops += [Op("torchao precompute scale", "memory", 0.0, 0.0)] * torchao_float8.PRECOMPUTE_KERNELS
        ops.append(Op(kernels.HOST_ONLY_LAUNCH, "memory", 0.0, 0.0))
        return (kernels.stream_time(ops, self.gpu, self.precision).elapsed_s()
                + self.collective_time_s("allreduce", self.group, weights * torchao_float8.AMAX_ALL_REDUCE_BYTES))


def _fsdp2_copy_out(scenario: Scenario, layers: int, first: bool, last: bool, gathered_bytes: float,
                    weight_element: float) -> tuple[kernels.StreamTime, kernels.StreamTime, float]:
    """FSDP2's all-gather copy-out of a chunk (``fsdp_runtime.copy_out_ops``): (the forward's kernels, the backward's,
    the step's first forward's seconds) per microbatch. ``gathered_bytes``: the chunk's units as gathered on one rank
    (root unit included). Gathered every microbatch: every unit in the forward, in the backward the transformer
    layers resharded after it (``units_kept_after_forward``; the root stays gathered); gathered once a step
    (``gathers_once_per_step``): every unit once, on the step's first forward."""
    p, m = scenario.parallelism, scenario.model
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    units = memory.zero3_units(m, layers, first, last, p.pp, fsdp_runtime.root_holds_output(scenario))
    forward = kernels.stream_time(fsdp_runtime.copy_out_ops(gathered_bytes, units), gpu, precision)
    if fsdp_runtime.gathers_once_per_step(scenario):
        return kernels.StreamTime(), kernels.StreamTime(), forward.elapsed_s()
    root_bytes = memory.chunk_params(m, p.tp, 0, first, last, p.pp) * weight_element  # embedding, norm, output: 16-bit
    regathered = layers - max(0, fsdp_runtime.units_kept_after_forward(scenario, units) - (units - layers))
    layer_bytes = (gathered_bytes - root_bytes) / layers if layers else 0.0
    backward = kernels.stream_time(fsdp_runtime.copy_out_ops(regathered * layer_bytes, regathered), gpu, precision)
    return forward, backward, 0.0


def _fsdp2_reduce_scatter_copy_in(scenario: Scenario, layers: int, first: bool, last: bool, reduced_params: float,
                                  weight_element: float, grad_element: float) -> kernels.StreamTime:
    """FSDP2's reduce-scatter copy-in of a chunk's units (``fsdp_runtime.reduce_scatter_copy_in_ops``), per
    microbatch: each unit's unsharded gradients (``reduced_params`` elements in all, at the parameter dtype) into the
    reduce dtype's buffer, once a unit and microbatch; reduce-scattered once a step after the last backward
    (``gathers_once_per_step``): the step's copy-in spread over its backwards (its total exact, its place not)."""
    p, m = scenario.parallelism, scenario.model
    units = memory.zero3_units(m, layers, first, last, p.pp, fsdp_runtime.root_holds_output(scenario))
    ops = fsdp_runtime.reduce_scatter_copy_in_ops(reduced_params, units, weight_element, grad_element)
    stream = kernels.stream_time(ops, scenario.cluster.gpu, scenario.training.precision)
    if fsdp_runtime.gathers_once_per_step(scenario):
        return (1.0 / scenario.microbatches) * stream
    return stream


def _float8_copy_in(scenario: Scenario, layout: Layout, layer: dict, collective_time_s: CollectiveTime
                    ) -> Float8CopyIn | None:
    """The per-unit terms of torchao's float8 all-gather (``Float8CopyIn``); None when it is off."""
    t, p, m = scenario.training, scenario.parallelism, scenario.model
    if not torchao_float8.fsdp_float8_all_gather(t, p):
        return None
    gpu, precision = scenario.cluster.gpu, t.precision
    precompute = torchao_float8.precompute(t, p)
    group = tuple(sorted({cp_rank for dp_rank in layout.group(0, "dp") for cp_rank in layout.group(dp_rank, "cp")}))
    shards = p.dp * p.cp
    weights = memory.layer_gemm_weights_per_rank(m, p.tp)
    linears = torchao_float8.float8_linears_per_layer(m.mlp_matrices)
    ops = fsdp_runtime.float8_copy_in_ops(weights / shards, linears, precompute)
    all_reduces = 0 if precompute else linears
    element = memory.state_bytes_per_param(memory.state_precision(t))["weights"]
    gathered = (memory.layer_params_per_rank(m, p.tp) - weights) * element + weights * torchao_float8.GATHER_BYTES
    shares = [interference.memory_bound_share([op for ph in phases for op in layer[ph]], gpu, precision)
              for phases in (("forward",), BACKWARD_PHASES)]
    return Float8CopyIn(
        fsdp2=p.zero_stage == 3 and not fsdp_runtime.gathers_once_per_step(scenario),
        charge_fwd=fsdp_runtime.float8_copy_in_charge(ops, all_reduces, shares[0], gpu, precision),
        charge_bwd=fsdp_runtime.float8_copy_in_charge(ops, all_reduces, shares[1], gpu, precision),
        chain_s=fsdp_runtime.float8_copy_in_chain_s(
            ops, all_reduces, collective_time_s("allreduce", group, torchao_float8.AMAX_ALL_REDUCE_BYTES), gpu,
            precision),
        gather_s=collective_time_s("all_gather", group, gathered),
        layer_weights=weights, linears=linears, shards=shards,
        precompute=precompute, group=group, gpu=gpu, precision=precision,
        collective_time_s=collective_time_s)


def amax_reduction_group(layout: Layout) -> tuple[int, ...]:
    """Megatron-Core's FP8 amax reduction group of rank 0: the tensor-, context- and data-parallel ranks of its
    pipeline stage (``parallel_state.get_amax_reduction_group(with_context_parallel=True)`` =
    ``_TENSOR_AND_DATA_PARALLEL_GROUP_WITH_CP``, r0.8-r0.10)."""
    return tuple(sorted({tp_rank for dp_rank in layout.group(0, "dp") for cp_rank in layout.group(dp_rank, "cp")
                         for tp_rank in layout.group(cp_rank, "tp")}))


def amax_region(scenario: Scenario, gemms: int, direction: str, layout: Layout,
                collective_time_s: CollectiveTime) -> kernels.StreamTime:
    """One fp8 autocast region's amax reduction and scale update in ``direction`` (``fp8_recipes.amax_reduction``):
    the concatenation and update kernels on the compute stream, the NCCL all-reduce's launch (host only), and the
    all-reduce itself, which the compute stream waits for (blocking, ``async_op=False``), at its time alone on the
    fabric. Nothing for recipes without it (current scaling, MXFP8, torchao)."""
    t = scenario.training
    size_bytes, reduction = fp8_recipes.amax_reduction(t.fp8_recipe, gemms, direction)
    if not reduction:
        return kernels.StreamTime()
    ops = [Op(name, "memory", 0.0, float(size)) for name, _elements, size in reduction]
    group = amax_reduction_group(layout)
    if len(group) > 1:
        ops.append(Op(kernels.HOST_ONLY_LAUNCH, "memory", 0.0, 0.0))
    wait_s = collective_time_s("allreduce", group, size_bytes)
    return kernels.stream_time(ops, scenario.cluster.gpu, t.precision) + kernels.StreamTime(device_s=wait_s)


def tp_amax_all_reduces(scenario: Scenario, phase: str, tp_group, collective_time_s: CollectiveTime,
                        moe_layer: bool = False) -> kernels.StreamTime:
    """Current scaling's amax all-reduces in one layer's ``phase`` ("forward" or "backward";
    ``fp8_recipes.tp_amax_reductions``): one per tensor quantized on its sequence-parallel shard and then all-gathered
    (the all-gathers of ``tp_collectives_per_layer``: the column-parallel inputs forward, the row-parallel output
    gradients and full recompute's inputs backward), each an NCCL launch (host only) and a MAX all-reduce of one fp32
    amax over ``tp_group`` that the cast waits for, at its time alone on the fabric. Nothing for the other recipes,
    without sequence parallelism or at tp 1. MLA's attention gathers two inputs where ``tp_collectives_per_layer``
    counts a dense attention's one (``mla.SEQUENCE_PARALLEL_GATHERED_PROJECTIONS``), in the forward and in a full
    recompute, and ``recompute_modules: [mla_up_proj]`` quantizes both again before the backward."""
    t = scenario.training
    gathers = sum(count for op, count in tp_collectives_per_layer(scenario, moe_layer)[phase] if op == "all_gather")
    if scenario.model.mla is not None and gathers:
        forwards = 1 if phase == "forward" else int(t.activation_recompute == "full")
        gathers += forwards * (mla.SEQUENCE_PARALLEL_GATHERED_PROJECTIONS - 1)
        if phase == "backward" and mla.up_projections_recomputed(shard_for(scenario)):
            gathers += mla.SEQUENCE_PARALLEL_GATHERED_PROJECTIONS
    count = fp8_recipes.tp_amax_reductions(t.fp8_recipe, gathers)
    if not count:
        return kernels.StreamTime()
    launches = [Op(kernels.HOST_ONLY_LAUNCH, "memory", 0.0, 0.0)] * count
    wait_s = count * collective_time_s("allreduce", tuple(tp_group), fp8_recipes.AMAX_BYTES)
    return kernels.stream_time(launches, scenario.cluster.gpu, t.precision) + kernels.StreamTime(device_s=wait_s)


def mxfp8_scale_gathers(scenario: Scenario, ops: dict[str, list], phases: tuple[str, ...], tp_group,
                        collective_time_s: CollectiveTime, settings) -> kernels.StreamTime:
    """MXFP8's scale-inverse all-gathers under userbuffers in ``phases`` of one layer's ``ops``
    (``userbuffers.mxfp8_scale_gathers``: TE 2.x fill_userbuffers_buffer_for_all_gather): each an NCCL launch (host
    only) and an all-gather of the microbatch's E8M0 scales (one byte per ``MX_BLOCK`` elements of the tokens x
    hidden activation) over ``tp_group`` that the compute stream waits for (blocking), at its time alone on the
    fabric. Nothing for the other recipes."""
    t, p, m = scenario.training, scenario.parallelism, scenario.model
    if t.precision in HIGH_PRECISION and t.fp8_recipe == "mxfp8" and p.te_version >= 2:   # TE 1.x: no MXFP8
        count = userbuffers.mxfp8_scale_gathers(ops, phases, settings)
    else:
        count = 0
    if not count:
        return kernels.StreamTime()
    scale_bytes = (t.seq_len / p.cp * t.micro_batch_size * m.hidden / fp8_recipes.MX_BLOCK
                   * fp8_recipes.MX_SCALE_BYTES)
    launches = [Op(kernels.HOST_ONLY_LAUNCH, "memory", 0.0, 0.0)] * count
    wait_s = count * collective_time_s("all_gather", tuple(tp_group), scale_bytes)
    return kernels.stream_time(launches, scenario.cluster.gpu, t.precision) + kernels.StreamTime(device_s=wait_s)


def expert_parallel_per_layer(scenario: Scenario) -> dict[str, list[tuple[str, int]]]:
    """Expert parallelism's all-to-alls of one MoE layer per phase, as (op, count): token dispatch and combine
    forward, their gradients backward (Megatron-Core's alltoall token dispatcher); full recompute and
    ``recompute_modules: [moe]`` (MoELayer's checkpointed custom_forward holds dispatch and combine) repeat the
    forward's. None without expert parallelism (ep = 1: every token's experts are local)."""
    if scenario.model.moe is None or scenario.parallelism.ep == 1:
        return {"forward": [], "backward": []}
    forward = [("alltoall", 2)]
    backward = list(forward)
    if scenario.training.activation_recompute == "full" or MOE in module_checkpoints(scenario):
        backward = backward + forward
    return {"forward": forward, "backward": backward}


def expert_tensor_parallel_per_layer(scenario: Scenario) -> dict[str, list[tuple[str, int]]]:
    """Expert tensor parallelism's collectives of one MoE layer per phase: after the dispatch the ETP ranks
    all-gather their tokens (each expert shard sees the group's tokens), before the combine they reduce-scatter the
    partial expert outputs (Megatron-Core's alltoall dispatcher with moe_expert_tensor_parallel_size > 1);
    backward the reverse pair; full recompute and ``recompute_modules: [moe]`` repeat the forward's. None with
    etp = 1."""
    if scenario.model.moe is None or scenario.parallelism.etp == 1:
        return {"forward": [], "backward": []}
    forward = [("all_gather", 1), ("reduce_scatter", 1)]
    backward = list(forward)
    if scenario.training.activation_recompute == "full" or MOE in module_checkpoints(scenario):
        backward = backward + forward
    return {"forward": forward, "backward": backward}


def dispatch_bytes(scenario: Scenario) -> float:
    """What one rank sends in a dispatch (or a combine) all-to-all, nccl-tests' all-to-all size: its tokens/tp
    routed tokens, each to top_k experts, h elements of 16 bits (Megatron-Core dispatches the bf16 activations; fp8
    dispatch, as DeepSeek-V3 does, is not modelled), times the busiest rank's load (the all-to-all ends when the
    busiest rank has received its tokens; an approximation that puts that load on every pair)."""
    m, p = scenario.model, scenario.parallelism
    if m.moe is None or p.ep == 1:
        return 0.0
    shard = shard_for(scenario)
    rows = (moe.routed_tokens(m, shard) * m.moe.top_k
            * moe.step_load(m, shard, p.ep, p.etp))
    return rows * m.hidden * shard.activation_bytes_per_element


def grad_norm_axes(parallelism) -> tuple[str, ...]:
    """The axes of the gradient-norm all-reduce's group: every rank with the distributed optimizer (ZeRO >= 1, each
    holds a shard of the gradients), the model-parallel group (tp x pp) without it (Megatron-Core
    get_grad_stats_parallel_group)."""
    return ("tp", "cp", "pp", "dp") if parallelism.zero_stage >= 1 else ("tp", "pp")


def pipeline_messages(scenario: Scenario, activation_bytes: float) -> tuple[float, float]:
    """Bytes of a pipeline message per TP rank on the inter-stage link, and of the all-gather that rebuilds it on
    the receiver (0 when none).

    With sequence parallelism each TP rank holds 1/tp of the activation and sends it. Without it the activation is
    replicated over the TP group; Megatron-LM's scatter/gather (--scatter-gather-tensors-in-pipeline, on by
    default; Narayanan et al. 2021, section 4.1) sends 1/tp of it per TP rank, each over its own NIC, and
    all-gathers the pieces over the receiver's TP group (NVLink). Megatron-Core dropped it: every TP rank then sends
    the whole activation (``p2p_scatter_gather: false``).
    """
    p = scenario.parallelism
    if p.tp == 1 or p.sequence_parallel:
        return activation_bytes / p.tp, 0.0
    if p.p2p_scatter_gather:
        return activation_bytes / p.tp, activation_bytes
    return activation_bytes, 0.0


def embedding_grad_bytes(scenario: Scenario) -> float:
    """The tied word-embedding gradient the first and last pipeline stage all-reduce after the backward (Megatron-LM
    finalize_model_grads -> _allreduce_word_embedding_grads, over the "embedding group" of the two stages): each
    holds a copy of the vocab/tp x hidden shard, its gradient in the gradient buffer's precision; so do untied
    embeddings when multi-token prediction embeds on the last stage (workload.mtp: the shared embedding). 0 when
    neither or there is no pipeline (vocabulary padding ignored). NeMo 1.x with Apex's distributed Adam all-reduces
    the copies' ``main_grad``, their view into Apex's gradient buffer, which is fp32 where it keeps the embedding's
    gradient in fp32 (``workload.fp32_embedding_grads``; NeMo ``allreduce_first_last_embeddings``)."""
    m, p = scenario.model, scenario.parallelism
    if not (m.tied_embeddings or m.mtp_layers) or p.pp == 1:
        return 0.0
    width = (fp32_embedding_grads.GRAD_BYTES if fp32_embedding_grads.applies(scenario)
             else BYTES_PER_ELEMENT[p.grad_reduce_dtype])
    return m.vocab / p.tp * m.hidden * width


# Megatron-LM clip_grads.get_grad_norm_fp32: the squared norm of a rank's gradients is one float32, all-reduced (SUM)
GRAD_NORM_BYTES = 4.0


def context_parallel_exchange(scenario: Scenario) -> dict[str, tuple[float, int, float]]:
    """Ring attention's key/value exchange of one layer per phase (Liu et al. 2023; Megatron-Core CP): the attention
    time it overlaps, its cp-1 ring steps, and the bytes each rank passes to its neighbour per step.

    Transformer Engine's p2p loop (``AttnFuncWithCP`` / ``AttnFuncWithCPAndKVP2P``, transformer_engine/pytorch/
    attention.py, TE 1.x; docs/calibration/round-19.md "Round 19"): the attention runs in cp steps of equal work (causal
    load balancing), each exchange posted at the top of a step and waited for at the top of the next (forward) or at the
    end of its own step (backward), so an exchange hides behind one step's attention only. Forward: the K/V block of
    step i+1 beside step i, none beside the last step, so cp-1 exchanges behind (cp-1)/cp of the attention. Backward:
    the K/V block beside step 0, the K/V block with the running K/V gradients beside the middle steps, the K/V gradients
    beside the last: 2(cp-1) K/V blocks of bytes behind all cp steps, charged as cp-1 ring steps of twice the bytes
    (the same total, the same exposure when every step's exchange outlasts it or none does). The engine times the
    exchange on the network; the part longer than the attention it overlaps is exposed. Empty without context
    parallelism.
    """
    p, t, m = scenario.parallelism, scenario.training, scenario.model
    if p.cp == 1:
        return {}
    shard = shard_for(scenario)
    kv_bytes = (2 * t.seq_len / p.cp * t.micro_batch_size * local_kv_hidden(m, p.tp)
                * shard.activation_bytes_per_element)
    core = dict(zip(("forward", "backward"), attention_core(m, shard), strict=True))
    # the share of the attention's steps an exchange runs beside: forward all but the last of cp steps, backward all
    hiding = {"forward": (p.cp - 1) / p.cp, "backward": 1.0}
    return {phase: (hiding[phase] * kernels.ops_time_s(core[phase], scenario.cluster.gpu, t.precision), p.cp - 1,
                    factor * kv_bytes)
            for phase, factor in (("forward", 1), ("backward", 2))}


@cache
def _engine_constants() -> dict:
    return catalog.load("engine")


# fp16 training's loss scaling adds two passes over the gradients before Adam (Megatron-LM
# megatron/optimizer/optimizer.py, Float16OptimizerWithFloat16Params: _copy_model_grads_to_main_grads casts the fp16
# gradients into the fp32 main gradients, read 2 B + write 4 B per parameter, unless they already are fp32;
# _unscale_main_grads_and_check_for_nan runs torch._amp_foreach_non_finite_check_and_unscale_ over them, read 4 B +
# write 4 B). bf16 training has no grad scaler, and Megatron's bf16 main gradients are its fp32 buffer.
LOSS_SCALING_UNSCALE_BYTES_PER_PARAM = 8
FP16_GRAD_COPY_BYTES_PER_PARAM = 6


def gradient_buffers(scenario: Scenario, stage_chunks: int) -> int:
    """Gradient buffers a rank's optimizer step zeroes (``optimizer_step`` pass 5): Megatron-Core's DDP wraps every
    model chunk and holds a dense buffer and, with experts, an expert-parallel one per chunk (megatron-core 0.9.0
    distributed_data_parallel.py l. 429-439); other stacks (and Apex's distributed Adam) one."""
    if not scenario.megatron_core or scenario.parallelism.grad_buckets == "apex":
        return 1
    return stage_chunks * (2 if scenario.model.moe is not None else 1)


def optimizer_time_s(params: float, gpu, precision: str, grad_dtype: str = "fp32", optimizer: str = "adam",
                     buffer_elements: float | None = None, tensors: float = 1.0, distributed: bool = True,
                     wrapper_passes: bool = True, fp8: fp8_params.Fp8Shard | None = None, buffers: int = 1,
                     moments: str = "fp32", clip_over: str = "shard", tail_share: float | None = None,
                     head: bool = False) -> float:
    """The optimizer step over ``params`` shard parameters (the rank's optimizer state), memory-bound.

    ``adam`` (Megatron-Core), ``adam_precision_aware``, ``torch_adamw``: the framework's kernels from source
    (workload.optimizer_step), over the shard and over the ``buffer_elements`` of the rank's gradient buffer
    (default: ``params``, held in ``buffers`` gradient buffers: ``gradient_buffers``): each call from Python a
    kernel of the stream with its gap (per-tensor loops: one per each of ``tensors`` shard tensors), the host's
    dispatch after the gradient norm's ``.item()`` sync (``kernels.ops_time_s``); a multi_tensor_apply call's
    further launches, queued back to back by its C++ loop, each the measured queued-launch latency (efficiency.yaml
    launch_overhead_s, the "fill" structure's gap); ``moments``: Adam's moment dtype (training.adam_moments_dtype);
    ``clip_over``: ``torch_adamw``'s clipping over the shard or the buffer (``optimizer_step.passes``).
    ``tail_share`` (Megatron-Core's optimizers only; ``overlap_param_gather_with_optimizer_step``,
    parallel/param_gather_overlap.py): the step as two optimizers run it, the share of the shard (its tensors alike)
    the later ones step. ``head`` False: the tail, the passes after the gradient norm's host sync over that share and
    the gradient buffers' zeroing; True: the head, the passes up to the sync over the whole shard (one norm over
    both optimizers) and then the first chunk's update over the rest. Each part is one block with its own calls, so
    head + tail counts the second optimizer's ``multi_tensor_apply`` calls and fp8 scale kernels a single step has
    once.
    ``decoupled_adamw``: Composer's unfused DecoupledAdamW and FSDP's gradient clipping (workload.composer_adamw);
    ``megatron2020`` / ``megatron2021``: Megatron-LM's fp16 wrappers around apex FusedAdam
    (workload.megatron_fp16_step) as one memory-bound op; ``decoupled_adamw`` as ``composer_adamw.step_ops``' 10
    kernels (2 clipping, 8 Adam) per tensor piece of ``tensors``, each with its gap.
    fp16 adds loss scaling's unscale pass and, for 16-bit gradients outside ``optimizer_step``'s recipes, their
    copy into fp32 main gradients."""
    unscale = LOSS_SCALING_UNSCALE_BYTES_PER_PARAM if precision == "fp16" else 0.0
    if optimizer in optimizer_step.OPTIMIZERS:
        ops, queued = optimizer_step_ops(params, precision, grad_dtype, optimizer, buffer_elements, tensors,
                                         distributed, wrapper_passes, fp8, buffers, moments, clip_over, tail_share,
                                         head)
        return kernels.ops_time_s(ops, gpu, precision) + queued * kernels.launch_overhead_s()
    if optimizer == "decoupled_adamw":   # per tensor, each kernel with its gap (workload.composer_adamw)
        extra = unscale + (FP16_GRAD_COPY_BYTES_PER_PARAM if precision == "fp16" and grad_dtype != "fp32" else 0.0)
        ops = composer_adamw.step_ops(params, tensors, _engine_constants()["optimizer"]["flop_per_param"])
        return kernels.ops_time_s(ops + ([Op("fp16 passes", "memory", 0.0, extra * params)] if extra else []), gpu,
                                  precision)
    else:
        hbm_bytes_per_param = megatron_fp16_step.optimizer_bytes_per_param(optimizer)
    hbm_bytes_per_param += unscale
    if precision == "fp16" and grad_dtype != "fp32":
        hbm_bytes_per_param += FP16_GRAD_COPY_BYTES_PER_PARAM
    op = Op(name="adam", kind="memory", flop=_engine_constants()["optimizer"]["flop_per_param"] * params,
            hbm_bytes=hbm_bytes_per_param * params)
    return kernels.op_time_s(op, gpu, precision)


def optimizer_step_ops(params: float, precision: str, grad_dtype: str = "fp32", optimizer: str = "adam",
                       buffer_elements: float | None = None, tensors: float = 1.0, distributed: bool = True,
                       wrapper_passes: bool = True, fp8: fp8_params.Fp8Shard | None = None, buffers: int = 1,
                       moments: str = "fp32", clip_over: str = "shard", tail_share: float | None = None,
                       head: bool = False) -> tuple[list[Op], int]:
    """The kernels ``optimizer_time_s`` times for ``optimizer_step.OPTIMIZERS`` (its arguments): the ops the host
    issues, in order, a ``kernels.HOST_SYNC`` after the gradient norm, and the launches ``multi_tensor_apply`` calls
    queue beyond their first."""
    unscale = LOSS_SCALING_UNSCALE_BYTES_PER_PARAM if precision == "fp16" else 0.0
    buffer = params if buffer_elements is None else buffer_elements
    ops: list[Op] = []
    if unscale and (tail_share is None or head):
        ops.append(Op(name="unscale_main_grads", kind="memory", flop=0.0, hbm_bytes=unscale * params))
    queued = 0   # launches a multi_tensor_apply call queues after its first, from C++: no host dispatch each
    step_passes = optimizer_step.passes(optimizer, grad_dtype, distributed, precision, wrapper_passes, fp8, moments,
                                        clip_over)
    synced = [i for i, step_pass in enumerate(step_passes) if step_pass.sync_after]
    cut = synced[-1] + 1 if synced and tail_share is not None else 0   # the passes up to the norm's sync
    for index, step_pass in enumerate(step_passes):
        share = 1.0
        if tail_share is not None and index < cut:    # prepare_grads and the norm over every optimizer: head
            if not head:
                continue
        elif tail_share is not None and step_pass.over == "buffer":   # zero_grad_buffer, next step: tail
            if head:
                continue
        elif tail_share is not None:
            share = 1.0 - tail_share if head else tail_share
        elements = params * share if step_pass.over == "shard" else buffer
        if step_pass.over == "shard" and share == 0:   # an optimizer with nothing to step: no launch
            continue
        count = optimizer_step.launches(step_pass, elements, tensors * share if step_pass.over == "shard"
                                        else tensors, buffers)
        calls = 1 if step_pass.launch == "multi_tensor" else count
        queued += count - calls
        ops.extend([Op(name=step_pass.name, kind="memory", flop=0.0,
                       hbm_bytes=step_pass.bytes * elements / calls)] * calls)
        if step_pass.sync_after:
            ops.append(Op(name=kernels.HOST_SYNC, kind="memory", flop=0.0, hbm_bytes=0.0))
    return ops, queued


def chunk_weight_quantize_s(scenario: Scenario, layers: int, moe_layers: int, fp8_weights: bool) -> float:
    """Transformer Engine's quantization of the GEMM weights of a chunk of ``layers`` layers (``moe_layers`` MoE) on
    one rank, in the chunk's forward of a step's first microbatch (Megatron-Core ``forward_step`` ->
    ``set_is_first_microbatch``; ``fp8_params.weight_quantize_kernels``, one kernel set per weight tensor of
    ``memory.chunk_gemm_weight_tensors``, a call each: ``call_issue.queued_weight_quantizes``, ``Op.no_work``; with
    fp8 parameters only their transpose on Hopper): 0 outside fp8."""
    t, p, m = scenario.training, scenario.parallelism, scenario.model
    if t.precision != "fp8":
        return 0.0
    tensors = memory.chunk_gemm_weight_tensors(m, p.tp, layers, moe_layers, p.ep, p.etp)
    gpu = scenario.cluster.gpu
    found = fp8_params.weight_quantize_kernels(t.fp8_recipe, fp8_recipes.transposes(gpu.name), fp8_weights, tensors)
    ops = [Op(name, "memory", 0.0, float(size), queued=queued, no_work=name in fp8_recipes.NO_WORK_OPS)
           for (name, _elements, size), queued in zip(found, call_issue.queued_weight_quantizes(t.fp8_recipe, found),
                                                      strict=True)]
    return kernels.ops_time_s(ops, gpu, t.precision) if ops else 0.0


def fp8_weight_quantize_s(scenario: Scenario, stage: int, fp8_weights: bool) -> float:
    """``chunk_weight_quantize_s`` summed over the chunks of pipeline rank ``stage``: what one GPU of it spends a
    step quantizing its weights."""
    p = scenario.parallelism
    layers, moe = memory.chunk_layers(scenario.model, p.pp, p.virtual_stages, p.layers_per_stage)
    return sum(chunk_weight_quantize_s(scenario, layers[c], moe[c], fp8_weights)
               for c in range(stage, len(layers), p.pp))


def local_ddp_time_s(grad_bytes: float, gpu, precision: str, local_ddp: str) -> float:
    """Megatron-LM's local DDP passes over a stage's ``grad_bytes`` of gradients around its all-reduce (none: 0):
    one memory-bound op, serial with the step like the all-reduce it surrounds (workload.megatron_fp16_step)."""
    passes = megatron_fp16_step.local_ddp_elements_per_grad(local_ddp)
    if not passes:
        return 0.0
    return kernels.op_time_s(Op(name="local_ddp", kind="memory", flop=0.0, hbm_bytes=passes * grad_bytes), gpu,
                             precision)


def gathered_param_bytes(dense: float, experts: float, gemm_weights: float | None, weight_element: float,
                         expert_data_parallel: int) -> tuple[float, float]:
    """Bytes of a chunk's parameters the distributed optimizer all-gathers on one rank: (dense, over dp x cp;
    routed experts, over the expert data-parallel group). Megatron-Core keeps expert parameters in their own
    param-and-grad buffers over the expert data-parallel group (megatron/core/distributed/
    distributed_data_parallel.py ``expert_parallel_buffers``, from Megatron-LM 293e104, 2024, to 0011998, 2026),
    so a group of one gathers nothing. ``gemm_weights``
    (fp8 parameters, ``workload.fp8_params``; None without): the chunk's GEMM weights, routed experts included,
    all-gathered in fp8."""
    if gemm_weights is None:
        dense_bytes, expert_element = dense * weight_element, weight_element
    else:
        fp8_element = fp8_params.gather_bytes_per_param()
        dense_gemm = gemm_weights - experts  # the routed experts are GEMM weights only
        dense_bytes, expert_element = (dense - dense_gemm) * weight_element + dense_gemm * fp8_element, fp8_element
    return dense_bytes, experts * expert_element if expert_data_parallel > 1 else 0.0


def bucket_count(grad_bytes: float, bucket_bytes: float, layers: int, stage: int = 0, model_chunk: int = 0,
                 megatron_core: bool = False, disable_bucketing: bool = False) -> int:
    """Gradient buckets of a chunk: DDP-style fixed-size buckets, never finer than one per layer.

    Megatron-Core's DistributedDataParallel keeps them only on the first pipeline stage's first model chunk: it sets
    ``bucket_size = None`` (one bucket) when ``get_pipeline_model_parallel_rank() > 0`` or ``disable_bucketing``,
    which Megatron-LM's ``get_model`` and NeMo 2.x's ``MegatronParallel.init_ddp`` pass as ``model_chunk_idx > 0``
    (NVIDIA/Megatron-LM megatron/core/distributed/distributed_data_parallel.py, core_r0.7 to r0.12), or on every
    chunk with ``disable_bucketing`` (``... or overlap_param_gather_with_optimizer_step``: param_gather_overlap)."""
    if megatron_core and (stage > 0 or model_chunk > 0 or disable_bucketing):
        return 1
    return max(1, min(max(layers, 1), math.ceil(grad_bytes / bucket_bytes)))
