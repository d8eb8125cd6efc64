"""Mixture-of-experts MLPs: the router, token permutation, grouped expert GEMMs and shared experts of one MoE layer
on one rank, per phase (the MLP block ``ops.layer_ops`` wraps), and the load of the busiest expert-parallel rank.

Layout (Megatron-Core, alltoall token dispatcher): with tensor parallelism the tokens are split over the TP ranks
(sequence parallelism, which Megatron-Core requires for MoE with tp > 1), so each rank routes ``tokens/tp`` tokens
of its microbatch. Each token goes to ``top_k`` experts; expert parallelism (``ep``) places ``experts/ep`` experts on
each rank of an EP group, and the all-to-all dispatch (the engine's, not an op here) brings every rank the tokens
routed to its experts. Expert tensor parallelism (``etp``) splits each expert's ffn over ``etp`` ranks, which then
all see the tokens of their group: an expert's GEMMs have ``etp * ep * tokens/tp * top_k / experts`` rows on
average. Shared experts (DeepSeekMoE) see every token and are split by ``tp`` like a dense MLP.

Load: the ranks of an EP group wait for each other at the combine all-to-all, so a step is as slow as the rank with
the most routed tokens. Its load relative to the mean (``busiest_rank_load``) comes from the tokens-per-expert
distribution: the router's systematic spread (``model.moe.load``; data/moe.yaml) and the sampling noise of the
tokens the EP group routes per microbatch (``ep_group_tokens``; core/token_routing.py ``sampling_cv``), which a
router forced to balance keeps (``balanced``); the grouped GEMMs are sized with it, their efficiency falling with
tokens per expert through the GEMM-shape model (``kernels.gemm_efficiency``: tile and wave quantisation in the
token dimension, batch = local experts). Model FLOP (MFU) count the balanced load.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cache

from simcluster.core import catalog
from simcluster.core.token_routing import TokenRouting, cv_from_max_violation, cv_from_switch_balance
from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.spec.model import MoESpec, TransformerSpec
from simcluster.workload import fp8_recipes, kernels, mla, moe_host, mtp, ops
from simcluster.workload.ops import (
    BACKWARD_ELEMENTWISE_FLOP_RATIO,
    HIGH_PRECISION,
    MlpBlock,
    Op,
    Shard,
    _Linear,
    _memory,
    activation_ops,
    mlp_block,
)


@cache
def _constants() -> dict:
    return catalog.load("moe")


def load_cv(moe: MoESpec) -> float:
    """The router's systematic coefficient of variation of tokens per expert (the sampling part comes from the
    tokens, ``busiest_rank_load``): ``moe.load`` when a number, 0 when ``balanced`` (Megatron-Core's
    --moe-router-force-load-balancing draws every token's logits at random, RandomSTE in megatron/core/transformer/
    moe/moe_utils.py: uniform top-k, no preference), else that of the published reference router of data/moe.yaml
    nearest in granularity (``reference_router``)."""
    return _load_cv(moe.load, moe.experts)


def reference_router(experts: int) -> dict:
    """The reference router of data/moe.yaml ``load.references`` whose number of experts is nearest to ``experts``
    on a log scale (8 and 64 measured: up to 22 experts the 8-expert one)."""
    return min(_constants()["load"]["references"], key=lambda ref: abs(math.log(experts / ref["experts"])))


def reference_cv(reference: dict) -> float:
    """A reference router's systematic CV from what was published of it: a maximum violation over its experts
    (``token_routing.cv_from_max_violation``) or the Switch statistic a framework logged, averaged over the logged
    steps (``token_routing.cv_from_switch_balance``, probability share moving as the routed share)."""
    if "max_violation" in reference:
        return cv_from_max_violation(reference["max_violation"], reference["experts"])
    logged = reference["switch_balance"]
    return cv_from_switch_balance(sum(logged) / len(logged))


def _load_cv(load: str | float, experts: int) -> float:
    if load in ("balanced", "round_robin"):
        return 0.0
    if load != "measured":
        return float(load)
    return reference_cv(reference_router(experts))


def busiest_rank_load(moe: MoESpec, ep: int, tokens: float | None = None) -> float:
    """Routed tokens of the busiest of ``ep`` expert-parallel ranks relative to the mean (>= 1), the EP group
    routing ``tokens`` tokens a microbatch (``ep_group_tokens``; None leaves out their sampling noise).

    Each rank holds experts/ep experts; their loads, independent with coefficient of variation CV (systematic and
    sampling parts in quadrature, core/token_routing.py), sum to a rank load of CV / sqrt(experts/ep) relative
    spread, and the busiest of ep ranks is expected at 1 + CV / sqrt(experts/ep) * z(ep) (``expected_max_normal``).
    One rank (ep = 1) holds every token: 1. A capacity factor caps it (tokens beyond are dropped; Fedus et al. 2021,
    Switch Transformer, section 2.2).
    """
    return token_routing(moe, tokens).busiest_load(ep)


def token_routing(moe: MoESpec | None, tokens: float | None = None,
                  intranode_ratio: float = 0.0, internode_ratio: float = 0.0) -> TokenRouting | None:
    """The tokens' routing over a model's experts (``token_routing.TokenRouting``) with their load's systematic
    spread (``load_cv``), the ``tokens`` routed a microbatch (sampling noise; None: not counted) and capacity
    factor: what DeepEP's all-to-all sends (``parallelism.ep_alltoall: hierarchical``), its intranode kernels
    SM-bound at NCCL's rate over ``intranode_ratio`` and its network phase at NCCL's NIC rate over
    ``internode_ratio`` (collectives/deepep.py; 0: not DeepEP); None for a dense model."""
    if moe is None:
        return None
    return _token_routing(moe.experts, moe.top_k, moe.load, moe.capacity_factor, tokens, intranode_ratio,
                          moe.groups, moe.group_topk, internode_ratio)


@cache
def _token_routing(experts: int, top_k: int, load, capacity_factor: float | None,
                   tokens: float | None = None, intranode_ratio: float = 0.0, groups: int | None = None,
                   group_limit: int | None = None, internode_ratio: float = 0.0) -> TokenRouting:
    """``token_routing`` by value (the engine asks for it at every expert-parallel block)."""
    consecutive = load == "round_robin"   # exact loads: no sampling noise either (core/token_routing.py)
    return TokenRouting(experts, top_k, load_cv=_load_cv(load, experts), capacity_factor=capacity_factor,
                        tokens=None if consecutive else tokens, intranode_ratio=intranode_ratio,
                        consecutive=consecutive, groups=groups, group_limit=group_limit,
                        internode_ratio=internode_ratio)


def routed_tokens(model: TransformerSpec, shard: Shard) -> float:
    """Tokens one rank routes per microbatch: its sequence-parallel share (``tokens / tp``)."""
    return shard.tokens / shard.tp


def ep_group_tokens(model: TransformerSpec, shard: Shard, ep: int, etp: int = 1) -> float:
    """Tokens whose routing one expert-parallel group's experts share per microbatch, what their sampling noise
    counts: each of the ep x etp ranks routes its ``routed_tokens`` (Megatron-Core's router runs per microbatch on
    each rank's sequence-parallel tokens before the dispatch; the all-to-all brings each rank the EP group's tokens
    for its experts, and expert-TP ranks all-gather theirs: ``moe_block``'s etp x ep x routed x k / E rows an
    expert)."""
    return ep * etp * routed_tokens(model, shard)


def step_load(model: TransformerSpec, shard: Shard, ep: int, etp: int = 1) -> float:
    """``busiest_rank_load`` of a model's MoE layers with the tokens its EP group routes a microbatch
    (``ep_group_tokens``): what the step's expert GEMMs, all-to-alls and activations are sized by; 1 for a dense
    model; padded to capacity (``pad_to_capacity``), every expert runs its capacity: the capacity factor."""
    if model.moe is None:
        return 1.0
    if model.moe.pad_to_capacity:
        return model.moe.capacity_factor
    return busiest_rank_load(model.moe, ep, ep_group_tokens(model, shard, ep, etp))


# Nodes of the busiest rank's load at which the expert GEMMs are timed and averaged (``step_load_nodes``): the
# midpoint rule over equally weighted mid-quantiles. On a step function its error is at most half a node's weight,
# 1/32 of the step's height, per step the spread crosses, at 16 tile searches per GEMM shape (a handful of shapes).
LOAD_NODES = 16


def step_load_nodes(model: TransformerSpec, shard: Shard, ep: int, etp: int = 1) -> tuple[float, ...]:
    """The busiest rank's load at ``LOAD_NODES`` equally weighted nodes of the distribution ``step_load`` is the
    mean of (``TokenRouting.busiest_load_nodes``: the maximum over the EP ranks of the same systematic and sampling
    spread), relative to ``step_load``: what the expert GEMMs' time is averaged over (``moe_block``), since a
    GEMM's time is a step function of its rows (whole row blocks and waves, ``kernels.gemm_efficiency``) and the
    time at the mean load is not the mean time. (1.0,) for a dense model, padded to capacity (every expert runs
    its capacity) or one EP rank."""
    if model.moe is None or model.moe.pad_to_capacity or ep <= 1:
        return (1.0,)
    tokens = ep_group_tokens(model, shard, ep, etp)
    mean = busiest_rank_load(model.moe, ep, tokens)
    nodes = token_routing(model.moe, tokens).busiest_load_nodes(ep, LOAD_NODES)
    return tuple(node / mean for node in nodes)


@dataclass(frozen=True)
class Router:
    """The router's kernels as a scenario configures them (training.moe_router, moe_router_dtype,
    moe_load_balancing): what its backward launches (``router_backward_kernels``)."""
    kernels: str = "unfused"            # fused | unfused | unfused_v0.9 (data/moe.yaml host_launches.router_backward)
    dtype: str = "model"                # model | fp32
    load_balancing: str = "aux_loss"    # aux_loss | seq_aux_loss

    @classmethod
    def of(cls, training) -> Router:
        """The router a scenario's ``training`` section configures."""
        return cls(training.moe_router, training.moe_router_dtype, training.moe_load_balancing)


def router_backward_kernels(router: Router) -> int:
    """Kernels the router launches backward (data/moe.yaml host_launches.router_backward), from its parts: the
    implementation's own (fused, unfused, unfused_v0.9), the fp32 router's casts, the router weight's main-grad
    accumulation, the dgrad's sum into the layer input's gradient, and the sequence aux loss."""
    table = _constants()["host_launches"]["router_backward"]
    return (table[router.kernels] + table["main_grad_accumulate"] + table["dgrad_into_input"]
            + (table["fp32_casts"] if router.dtype == "fp32" else 0)
            + (table["seq_aux_loss"] if router.load_balancing == "seq_aux_loss" else 0))


def moe_block(model: TransformerSpec, shard: Shard, ep: int = 1, etp: int = 1, load: float = 1.0,
              cuda_graphs: bool = False, dispatcher: str = "alltoall", router: Router = Router(),
              load_nodes: tuple[float, ...] = (1.0,)) -> MlpBlock:
    """The MLP block of an MoE layer on one rank for one microbatch, its experts sized for ``load`` times the mean
    routed tokens (``busiest_rank_load`` for the step's time; 1 for model FLOP), with the kernel launches the
    host issues beyond its device ops (``host_launches``; ``cuda_graphs``: router and preprocess graphed;
    ``router``: its kernels, ``Router``), for Megatron-Core's ``dispatcher`` (``alltoall`` or ``flex``:
    ``permutation_rows``). ``load_nodes``: the load's spread as equally weighted multiples of ``load``
    (``step_load_nodes``), over which the expert GEMMs' time is averaged (``Op.row_nodes``)."""
    moe = model.moe
    assert moe is not None and moe.experts % ep == 0, "validated in config"
    h, e, k = model.hidden, shard.activation_bytes_per_element, moe.top_k
    routed = routed_tokens(model, shard)

    # router: logits = x W_r (tokens x experts), then softmax and top-k over the experts; with the fp32 router
    # (``router_gemms``) its logits and scores are fp32 and its backward GEMMs run in TF32 on fp32 operands
    router_gemm, router_bwd_gemm, router_casts = router_gemms(router, math.ceil(routed), h, moe.experts, shard)
    fp32_router = bool(router_casts)
    scores = routed * moe.experts
    per_element = _constants()["router_flop_per_element"]
    score_bytes = BYTES_PER_ELEMENT["fp32"] if fp32_router else e
    router_act = _memory("router_topk", per_element * scores, 2 * scores * score_bytes)
    router_act_bwd = _memory("router_topk", BACKWARD_ELEMENTWISE_FLOP_RATIO * per_element * scores,
                             3 * scores * score_bytes)
    if cuda_graphs and router_casts:
        # graphed (``cuda_graphs``), the casts replay inside the router's graph; the model charges a graphed
        # router's device ops one kernel gap each (host_launches), so their bytes ride on the top-k's backward
        # instead of adding four ops
        router_act_bwd = dataclasses.replace(
            router_act_bwd, hbm_bytes=router_act_bwd.hbm_bytes + sum(op.hbm_bytes for op in router_casts))
        router_casts = []

    # permutation: copy each of ``source`` token rows to its slots, grouped by expert (read source*h, write k*T*h);
    # unpermutation weights each expert output by its probability and sums a row's slots (read k*T*h, write
    # source*h). Backward runs the same copies the other way. HBM-bound copies (Megatron-Core moe_utils.permute /
    # unpermute); which rows they see depends on the dispatcher (``permutation_rows``).
    # The flex dispatcher permutes after the dispatch, the rows this rank received: the busiest rank's ``load``.
    flex = dispatcher == "flex" and ep * etp > 1
    source = permutation_rows(model, routed, ep) if flex else routed
    received = load if flex else 1.0
    copies = (source + k * routed) * h * received
    slots = k * routed * received
    permute = _memory("permute", 0.0, copies * e)
    unpermute = _memory("unpermute", 2.0 * slots * h, copies * e)
    permute_bwd = _memory("permute", 0.0, copies * e)
    unpermute_bwd = _memory("unpermute", 2.0 * slots * h, (copies + slots) * e)

    # grouped expert GEMMs: experts/ep local experts, each with its mean tokens at ``load``, ffn split by etp
    local_experts = moe.experts // ep
    per_expert = etp * ep * routed * k * load / moe.experts
    ffn_local = moe.ffn_hidden // etp
    up_width = ffn_local * (2 if model.mlp == "swiglu" else 1)
    # Rows: the exact (fractional) mean, not rounded: FLOP and bytes are the mean's, and the kernel's time is that of
    # the whole tiles it runs (``kernels.gemm_efficiency``: ceil(rows / tile) tiles, useful MACs the mean's), so
    # time never falls as rows grow (a kernel of 4096.3 rows a expert runs the tiles of 4097 rows and no fewer).
    # Their time is the mean over the load's spread (``load_nodes``, ``Op.row_nodes``; the weight gradients' time is
    # linear in their reduction over rows, so their mean is the time at the mean).
    up = _Linear("expert_up", per_expert, h, up_width, batch=local_experts, row_nodes=load_nodes)
    down = _Linear("expert_down", per_expert, ffn_local, h, batch=local_experts, row_nodes=load_nodes)
    act, act_bwd = activation_ops("expert_act", model, local_experts * per_expert * ffn_local, e)
    # forward: the router before the host's sync on the tokens per expert, the permutation, shared and routed
    # experts after it (``forward_order``)
    forward = [router_forward_gemm(router_gemm, fp32_router, shard), router_act]
    backward_input = [unpermute_bwd, down.dgrad(shard), act_bwd, up.dgrad(shard), permute_bwd, router_act_bwd,
                      *router_casts[:2], router_bwd_gemm.dgrad(shard), *router_casts[2:]]
    backward_weight = [down.wgrad(shard), up.wgrad(shard), router_bwd_gemm.wgrad(shard)]  # ops.wgrad_output_bytes
    fp8 = shard.precision == "fp8"
    quantizes = fp8_quantize_kernels(local_experts, shard.fp8_recipe, shard.fp8_transpose) if fp8 else 0
    launches = host_launches(local_experts, cuda_graphs, fp8_quantizes=quantizes, flex=flex, router=router,
                             collectives=layer_collectives(shard, ep, flex, router), precision=shard.precision,
                             fp8_no_work_share=fp8_no_work_share(quantizes, shard.fp8_recipe) if fp8 else 0.0)
    forward += launches["router_forward"]
    backward_input += launches["backward_input"]
    backward_weight += launches["backward_weight"]
    expert_rows = local_experts * per_expert
    sorts = [] if flex else sort_chunks_ops(expert_rows * h * e, ep, local_experts)
    backward_input += sorts
    # the forward after the router in the order the host issues it (``forward_order``; the race after the host
    # sync, kernels.synced_stall_s): the alltoall dispatcher's permutation, [dispatch, the engine's], the shared
    # experts, the sort by local expert (flex: the permutation), fc1's per-expert launches and fc1, the activation,
    # fc2's and fc2, the sort back, [combine], unpermute; each forward sort after the kernel building its row map
    # (moe_host.sort_map_ops; the backward's sorts reuse the maps; padded to capacity the dispatcher transposes
    # instead, no map)
    fc1_launches, fc2_launches = _halves(launches["forward"])
    maps = moe_host.sort_map_ops(expert_rows) if sorts and not moe.pad_to_capacity else []
    routed_forward = [*maps, *sorts[:1], *fc1_launches, up.forward(shard), act, *fc2_launches, down.forward(shard),
                      *maps, *sorts[1:], unpermute]
    cast_forward = expert_rows * (h + ffn_local)
    cast_backward = expert_rows * (h + up_width)
    shared_forward: list[Op] = []
    if moe.shared_experts:
        shared = mlp_block(model, shard, moe.shared_experts * moe.ffn_hidden, name="shared_expert")
        shared_forward = shared.forward
        backward_input += shared.backward_input
        backward_weight += shared.backward_weight
        cast_forward += shared.cast_forward_elements
        cast_backward += shared.cast_backward_elements
    forward += forward_order(moe, permute, shared_forward, routed_forward, flex, ep, etp)
    return MlpBlock(forward, backward_input, backward_weight, cast_forward, cast_backward, standalone_norm=True,
                    act_recompute=(act,), moe_layer=True, shared_forward=tuple(shared_forward))


def router_gemms(router: Router, tokens: int, hidden: int, experts: int,
                 shard: Shard) -> tuple[_Linear, _Linear, list[Op]]:
    """The router GEMM as Megatron-Core runs it (moe_utils.py ``RouterGatingLinearFunction``, the 2025 releases
    with ``te_general_gemm``; read at NVIDIA/Megatron-LM e61c384 and the stored 0.13-0.15 versions): its forward
    GEMM, its backward GEMM (dgrad and wgrad) and the fp32 router's four cast kernels of the backward.

    In the model's dtype one 16-bit GEMM serves all three phases and there are no casts. With
    ``--moe-router-dtype fp32`` (``Router.dtype``) the forward is ``te_general_gemm(weight, inp, fp32)``: the
    16-bit weight and input on the tensor cores, only the logits written in fp32 (``router_forward_gemm``); the
    backward casts the saved weight and input to fp32 (``weight.to(router_dtype)``, ``inp.to(router_dtype)``) and
    runs both GEMMs on fp32 operands with an fp32 output, ``te_general_gemm(..., router_dtype, grad=True)``, which
    Transformer Engine's cuBLASLt GEMM runs in TF32 (transformer_engine/common/gemm/cublaslt_gemm.cu, TE 2.x: "Use
    TF32 only for pure FP32 GEMM", ``CUBLAS_COMPUTE_32F_FAST_TF32`` when A, B and D are all fp32; TE 1.x: "default
    to tf32 except for e5m2 inputs"; the forward's 16-bit operands run CUBLAS_COMPUTE_32F on the 16-bit tensor
    cores), then casts the input and weight gradients back (``grad_input[0].to(ctx.input_dtype)``,
    ``grad_weight[0].to(ctx.weight_dtype)``). Each cast reads its tensor at one width and writes it at the other
    (2 + 4 bytes an element): the weight (experts x hidden) and the input (tokens x hidden) up, their gradients
    down. These are the kernels data/moe.yaml ``router_backward.fp32_casts`` counts (4), now with their bytes
    (``launch_counts`` no longer adds them as zero-work launches). A run whose GEMMs are fp32 already casts
    nothing."""
    high = HIGH_PRECISION.get(shard.precision)
    gemm = _Linear("router", tokens, hidden, experts, high, main_grad=False)   # a torch GEMM, not a TE module
    if router_cast_kernels(router, shard.precision) == 0:
        return gemm, gemm, []
    backward = _Linear("router", tokens, hidden, experts, ROUTER_FP32_GEMM_PRECISION, main_grad=False)
    cast = BYTES_PER_ELEMENT[ROUTER_FP32_GEMM_PRECISION] + shard.activation_bytes_per_element
    weight, inputs = experts * hidden, tokens * hidden
    casts = [_memory("router_cast", 0.0, elements * cast) for elements in (weight, inputs, inputs, weight)]
    return gemm, backward, casts


def router_forward_gemm(gemm: _Linear, fp32_logits: bool, shard: Shard) -> Op:
    """The router's forward GEMM; with the fp32 router (``fp32_logits``: ``router_gemms``) its logits are written
    in fp32 (tokens x experts x 4 bytes) instead of 16 bits."""
    op = gemm.forward(shard)
    if not fp32_logits:
        return op
    extra = op.m * op.n * (BYTES_PER_ELEMENT["fp32"] - max(BYTES_PER_ELEMENT[op.precision or shard.precision],
                                                            BYTES_PER_ELEMENT["bf16"]))
    return dataclasses.replace(op, hbm_bytes=op.hbm_bytes + extra)


def router_cast_kernels(router: Router, precision: str) -> int:
    """The fp32 router's cast kernels in the backward (data/moe.yaml ``router_backward.fp32_casts``; ``router_gemms``):
    none in the model's dtype or when the run's GEMMs are fp32 already."""
    if router.dtype != "fp32" or precision in ("fp32", "tf32"):
        return 0
    return _constants()["host_launches"]["router_backward"]["fp32_casts"]


def permutation_rows(model: TransformerSpec, routed: float, ep: int) -> float:
    """Token rows the flex dispatcher's permutation reads on one rank (and its unpermutation writes): the rows the
    dispatch brought, one per (token, destination GPU) pair, as DeepEP sends a token once to each GPU holding one of
    its experts (``token_routing``): ``routed`` tokens per rank times the distinct GPUs of the ``ep`` a token
    reaches, on average (every rank sends as many as it receives; at most ``group_topk`` of them when the router's
    groups are the ranks' experts, ``model.moe.groups``; the round-robin gate's block, ``load: round_robin``, the
    GPUs it spans: ``token_routing``, the engine's routing). Megatron-Core's MoEFlexTokenDispatcher permutes
    AFTER the dispatch (token_dispatcher.py ``_DeepepManager.get_permuted_hidden_states_by_experts``: the received
    rows and their local-expert routing map into expert-major order, one fused ``permute``) and unpermutes before
    the combine, which sums a token's rows per GPU and node; the alltoall dispatcher permutes the ``routed`` local
    tokens into k copies before its all-to-all and sorts them again by local expert after it
    (``sort_chunks_ops``), which the flex dispatcher does not run."""
    return routed * token_routing(model.moe).distinct_gpus(1, ep)   # experts % ep == 0: config


def forward_order(moe: MoESpec, permute: Op, shared: list[Op], routed: list[Op], flex: bool, ep: int = 1,
                  etp: int = 1) -> list[Op]:
    """An MoE layer's forward after its router, in the order the host issues it (data/moe.yaml ``host_syncs``):
    the host sync, unless padded to capacity (``pad_to_capacity``: Megatron-Core then needs no CPU value), before
    the alltoall dispatcher's first permutation (which a 2025 Megatron-Core issues before waiting and runs while
    the host waits), then the expert compute in MoELayer.experts_compute's order: the ``shared`` experts, the
    dispatch postprocess (the flex dispatcher's permutation, after DeepEP's dispatch) and the ``routed`` experts.
    Dropless without expert or expert-tensor parallelism (``ep`` x ``etp`` == 1: the dispatcher's ep_size x
    tp_size, its tp group being the expert-TP one) there are no all-to-all splits to wait for: preprocess sets the
    sync point to "before_finish" ("before_permutation_2" with unfused permute and several local experts; no
    sort at ep 1), both in dispatch_postprocess, after the shared experts (Megatron-Core token_dispatcher.py
    MoEAlltoAllTokenDispatcher.preprocess, the ``ep_size > 1 or tp_size > 1`` else branch); a capacity factor
    without padding still syncs before the first permutation (num_out_tokens)."""
    sync = [] if moe.pad_to_capacity else host_syncs("forward")
    if flex:
        return [*sync, *shared, permute, *routed]
    if ep * etp == 1 and moe.capacity_factor is None:
        return [permute, *shared, *sync, *routed]
    return [*sync, permute, *shared, *routed]


def host_syncs(phase: str) -> list[Op]:
    """The host's device-to-host syncs of an MoE layer in ``phase`` (data/moe.yaml host_syncs): the tokens per
    expert copied to the CPU for the all-to-all splits and the grouped GEMMs' per-expert rows, as a zero-work
    ``kernels.HOST_SYNC`` op (the copy) placed before the routed experts, whose launches then cannot run ahead
    (``kernels.synced_stall_s``)."""
    return [_memory(kernels.HOST_SYNC, 0.0, 0.0)] * _constants()["host_syncs"].get(phase, 0)


def sort_chunks_ops(received_bytes: float, ep: int, local_experts: int) -> list[Op]:
    """The alltoall dispatcher's second permutation, per phase: the tokens an all-to-all brings arrive grouped by
    source rank and are re-sorted by local expert before the expert GEMMs, and the expert outputs sorted back before
    the combine (Megatron-Core MoEAlltoAllTokenDispatcher, "Permutation 2: Sort tokens by local expert",
    moe_utils.sort_chunks_by_idxs, one fused kernel with moe_permute_fusion); the backward runs both on the
    gradients. Each reads and writes the ``received_bytes`` this rank's experts see. None with one local expert or
    without expert parallelism (nothing to re-sort)."""
    if ep == 1 or local_experts == 1:
        return []
    return [_memory("moe_sort_chunks", 0.0, 2 * received_bytes)] * 2


# The device ops of moe_block that stand for router kernels: the router GEMM and its softmax/top-k forward; their
# gradients and the router's dgrad and wgrad backward. host_launches adds the rest of the router's launches.
ROUTER_OPS = {"forward": 2, "backward": 3}
# The precision of the fp32 router's backward GEMMs (``router_gemms``): fp32 operands and output, which Transformer
# Engine's cuBLASLt GEMM runs with CUBLAS_COMPUTE_32F_FAST_TF32 (cublaslt_gemm.cu: "Use TF32 only for pure FP32 GEMM")
ROUTER_FP32_GEMM_PRECISION = "tf32"
GROUPED_GEMMS = {"forward": 2, "backward_input": 2, "backward_weight": 2}  # fc1 and fc2 in every phase


# Phases whose grouped GEMMs quantize their operands expert by expert in fp8 (data/moe.yaml
# fp8_quantize_per_local_expert): the input of fc1 and fc2 forward, their output gradients backward.
FP8_QUANTIZED_GROUPED_GEMMS = {"forward": 2, "backward_input": 2, "backward_weight": 0}


def layer_collectives(shard: Shard, ep: int, flex: bool, router: Router) -> dict[str, int]:
    """NCCL kernels an MoE layer launches on its compute stream per phase beyond the engine's token all-to-alls and
    the router/preprocess launch counts (data/moe.yaml host_launches.collectives; both measured at TP 1, CP 1):
    the auxiliary loss's all-reduce of the tokens per expert over the TP x CP group in the router's forward
    (tp x cp > 1), and the alltoall dispatcher's all-to-all of the permuted routing probabilities, forward and
    backward (ep > 1, not flex, which sends them inside DeepEP's dispatch; Megatron Core >= 0.13, for which the
    fused router stands: a scenario carries no version, see moe.yaml)."""
    table = _constants()["host_launches"]["collectives"]
    counts = {"router_forward": 0, "forward": 0, "backward_input": 0}
    if shard.tp * shard.cp > 1:
        counts["router_forward"] += table["aux_loss_tokens_allreduce"]
    if ep > 1 and not flex and router.kernels in table["probs_alltoall_routers"]:
        counts["forward"] += table["probs_alltoall"]
        counts["backward_input"] += table["probs_alltoall"]
    return counts


def host_launches(local_experts: int, cuda_graphs: bool = False, fp8_quantizes: int = 0,
                  flex: bool = False, router: Router = Router(),
                  collectives: dict[str, int] | None = None, precision: str = "bf16",
                  fp8_no_work_share: float = 0.0) -> dict[str, list[Op]]:
    """Kernel launches of an MoE layer beyond its device ops, per phase, as zero-work ops (data/moe.yaml
    host_launches): the grouped GEMMs launch one GEMM per local expert (the device model runs each as one batched
    op) over several streams, those in series on one stream (``grouped_gemm_serial_kernels``) as kernels, the rest
    as ``kernels.HOST_ONLY_LAUNCH`` ops (host dispatch only); the layer's small NCCL ``collectives`` per phase
    (``layer_collectives``: kernels like any other, their latency not charged); and, without CUDA graphs, the fused
    router and EP
    preprocess launch ``router_forward`` kernels forward (key ``router_forward``: before the layer's host sync) and
    the ``router``'s ``router_backward_kernels`` backward (with the data gradients; the preprocess has none) where
    the device model has a few (``router_forward_flex`` with the flex dispatcher's fused preprocess, ``flex``); in
    fp8 the ``fp8_quantizes`` kernels (``fp8_quantize_kernels``) of each quantized grouped-GEMM operand, on the
    main stream, of which ``fp8_no_work_share`` have no work of their own (``fp8_no_work_share``: current scaling's
    one-element kernels, ``Op.no_work``; the first of each operand's call is its zeroing, issued from Python).

    Each kernel is a kernel like any other of its block (``kernels.StreamTime``): the host spends its dispatch time
    on it and the GPU its launch latency (efficiency.yaml host_overhead), so the launches hide under the block's
    device time where the GPU is the bottleneck and set the block's time where the host is; the forward's routed
    part follows the host sync (``host_syncs``), where the host cannot have run ahead."""
    launch = _memory("moe_launch", 0.0, 0.0)
    queued = dataclasses.replace(launch, queued=True)   # launched by the C++ of the call before it (call_issue)
    no_work = dataclasses.replace(queued, no_work=True)
    host_only = _memory(kernels.HOST_ONLY_LAUNCH, 0.0, 0.0)
    return {phase: [launch] * count["router"] + [queued] * count["grouped GEMMs"]
            + [launch] * first_quantizes + [no_work] * queued_no_work
            + [queued] * (count["fp8 quantizes"] - first_quantizes - queued_no_work)
            + [launch] * count["collectives"] + [host_only] * count["other streams"]
            for phase, count in launch_counts(local_experts, cuda_graphs, fp8_quantizes, flex, router,
                                              collectives, precision).items()
            for first_quantizes in [min(count["fp8 quantizes"], FP8_QUANTIZED_GROUPED_GEMMS.get(phase, 0))]
            for queued_no_work in [max(0, round(count["fp8 quantizes"] * fp8_no_work_share) - first_quantizes)]}


def launch_counts(local_experts: int, cuda_graphs: bool = False, fp8_quantizes: int = 0,
                  flex: bool = False, router: Router = Router(),
                  collectives: dict[str, int] | None = None, precision: str = "bf16") -> dict[str, dict[str, int]]:
    """``host_launches`` counted by class, per phase ("router_forward" and the phases of ``GROUPED_GEMMS``): the
    router's launches beyond the device model's ops (the fp32 router's casts in a run of ``precision`` are device
    ops, ``router_gemms``), the grouped GEMMs' kernels in series beyond the one batched
    op, the fp8 quantizes, the layer's small NCCL collectives (``layer_collectives``; the router's under CUDA
    graphs replay inside the graph) and the GEMMs launched on the other streams (host dispatch only)."""
    collectives = collectives or {}
    table = _constants()["host_launches"]
    router_forward = table["router_forward_flex" if flex else "router_forward"]
    extra = {"forward": router_forward - ROUTER_OPS["forward"],
             "backward_input": (router_backward_kernels(router) - ROUTER_OPS["backward"]
                                - router_cast_kernels(router, precision)),
             "backward_weight": 0}
    none = {"router": 0, "grouped GEMMs": 0, "fp8 quantizes": 0, "collectives": 0, "other streams": 0}
    counts = {"router_forward": {**none, "router": 0 if cuda_graphs else extra["forward"],
                                 "collectives": 0 if cuda_graphs else collectives.get("router_forward", 0)}}
    serial = grouped_gemm_serial_kernels(local_experts)
    gemms_issued = local_experts * table["gemm_per_local_expert"]
    for phase, gemms in GROUPED_GEMMS.items():
        counts[phase] = {"router": 0 if cuda_graphs or phase == "forward" else max(0, extra[phase]),
                         "grouped GEMMs": gemms * (serial - 1),
                         "fp8 quantizes": FP8_QUANTIZED_GROUPED_GEMMS[phase] * fp8_quantizes,
                         "collectives": collectives.get(phase, 0),
                         "other streams": gemms * (gemms_issued - serial)}
    return counts


def grouped_gemm_serial_kernels(local_experts: int) -> int:
    """Kernels of one grouped GEMM in series on the device: its ``gemm_per_local_expert`` GEMMs per local expert,
    issued round-robin over ``gemm_streams`` compute streams (Transformer Engine's multi_stream_cublas_gemm), run
    as ceil(GEMMs / streams) one after another on the busiest stream, whose gaps the others overlap."""
    table = _constants()["host_launches"]
    return math.ceil(local_experts * table["gemm_per_local_expert"] / table["gemm_streams"])


def fp8_quantize_kernels(local_experts: int, fp8_recipe: str, fp8_transpose: bool = True) -> int:
    """Kernels that quantize one fp8 operand of a grouped GEMM over ``local_experts`` experts, all in series on the
    main stream (data/moe.yaml ``fp8_quantize_per_local_expert``): Transformer Engine's PyTorch split_quantize fuses
    every expert's tensor into one kernel for delayed scaling (``fp8_quantize_fused_recipes``) where the cast also
    writes the transposed copy (``fp8_transpose``: Hopper; without it, Blackwell, the fused kernel is skipped), and
    quantizes them expert by expert otherwise: one kernel each for MXFP8, and for the per-tensor recipes (current
    scaling) the kernels ``fp8_recipes.quantize_kernels`` runs per tensor (the amax's zeroing, an amax pass, the
    one-thread nvte_compute_scale_from_amax and the cast, as for dense tensors)."""
    table = _constants()["host_launches"]
    if fp8_recipe in table["fp8_quantize_fused_recipes"] and fp8_transpose:
        return 1
    per_tensor = len(fp8_recipes.quantize_kernels(fp8_recipe, fp8_transpose, [(1.0, False)]))
    return per_tensor * math.ceil(local_experts * table["fp8_quantize_per_local_expert"])


def fp8_no_work_share(quantize_kernels: int, fp8_recipe: str) -> float:
    """Of ``quantize_kernels`` (``fp8_quantize_kernels``: one operand's), the share with no work of their own
    (``fp8_recipes.NO_WORK_OPS``: current scaling's amax zeroing and scale kernel per expert; none for a fused
    delayed-scaling kernel or MXFP8's casts)."""
    per_tensor = [name for name, *_ in fp8_recipes.quantize_kernels(fp8_recipe, False, [(1.0, False)])]
    if quantize_kernels <= 1 or not per_tensor:
        return 0.0
    return sum(name in fp8_recipes.NO_WORK_OPS for name in per_tensor) / len(per_tensor)


def _halves(launches: list[Op]) -> tuple[list[Op], list[Op]]:
    """A phase's launches of its two grouped GEMMs (fc1, fc2), each kind split evenly between them (fc1 the odd
    one): what the host issues with each GEMM."""
    first: list[Op] = []
    second: list[Op] = []
    for name in dict.fromkeys(op.name for op in launches):
        same = [op for op in launches if op.name == name]
        first += same[:(len(same) + 1) // 2]
        second += same[(len(same) + 1) // 2:]
    return first, second


def model_flop_per_step(model: TransformerSpec, seq_len: int, global_batch: int) -> float:
    """Model FLOP of one step (``ops.model_flop_per_step``), MoE layers with their balanced expert load: the
    work the model needs, what MFU counts (6 x active parameters per token, plus attention), and the
    multi-token-prediction modules' (``workload.mtp``), which the model trains too."""
    return (ops.model_flop_per_step(model, seq_len, global_batch, _balanced(model))
            + _mtp_matmul_flop(model, seq_len, global_batch, MODEL_PHASES, "none")
            + _mla_matmul_flop(model, seq_len, global_batch, MODEL_PHASES, "none"))


def hardware_flop_per_step(model: TransformerSpec, seq_len: int, global_batch: int, recompute: str,
                           modules: tuple[str, ...] = ()) -> float:
    """Hardware FLOP of one step (``ops.hardware_flop_per_step``), MoE layers with their balanced expert load;
    ``modules``: training.recompute_modules."""
    return (ops.hardware_flop_per_step(model, seq_len, global_batch, recompute, _balanced(model), modules)
            + _mtp_matmul_flop(model, seq_len, global_batch, ops.PHASES, recompute, modules)
            + _mla_matmul_flop(model, seq_len, global_batch, ops.PHASES, recompute, modules))


MODEL_PHASES = ("forward", "backward_input", "backward_weight")


def _mtp_matmul_flop(model: TransformerSpec, seq_len: int, global_batch: int, phases: tuple[str, ...],
                     recompute: str, modules: tuple[str, ...] = ()) -> float:
    """Matmul FLOP of the multi-token-prediction modules for ``global_batch`` sequences over ``phases``: their
    transformer layers (of the last layer's type) and what surrounds them (``mtp.extra_ops``)."""
    if not model.mtp_layers:
        return 0.0
    shard = Shard(seq_len=seq_len, micro_batch=global_batch, recompute=recompute, recompute_modules=modules)
    moe_layers = model.mtp_moe_layers
    layers = [(model.mtp_layers - moe_layers, ops.layer_ops(model, shard)),
              (moe_layers, ops.layer_ops(model, shard, moe_block(model, shard)) if moe_layers else None),
              (1, mtp.extra_ops(model, shard))]
    return sum(count * ops.flop(phase_ops[p], ops.MATMUL_KINDS) for count, phase_ops in layers if count
               for p in phases)


def _balanced(model: TransformerSpec):
    return None if model.moe is None else (lambda shard: moe_block(model, shard))


def _mla_matmul_flop(model: TransformerSpec, seq_len: int, global_batch: int, phases: tuple[str, ...],
                     recompute: str, modules: tuple[str, ...] = ()) -> float:
    """What multi-head latent attention (``workload.mla``) changes in the matmul FLOP of every layer (the MTP
    modules' too) over ``phases``: ``ops`` counts each layer's attention as multi-head attention of hidden/heads."""
    if model.mla is None:
        return 0.0
    shard = Shard(seq_len=seq_len, micro_batch=global_batch, recompute=recompute, recompute_modules=modules)
    layer = ops.layer_ops(model, shard)
    latent = mla.apply(model, shard, layer)
    per_layer = sum(ops.flop(latent[p], ops.MATMUL_KINDS) - ops.flop(layer[p], ops.MATMUL_KINDS) for p in phases)
    return (model.layers + model.mtp_layers) * per_layer
