"""Multi-head latent attention (MLA): DeepSeek-V2's attention (Liu et al. 2024, arXiv 2405.04434, section 2.1),
also DeepSeek-V3's (arXiv 2412.19437, section 2.1.1), as Megatron-Core trains it (MLASelfAttention).

Per layer and token: the query through a low-rank bottleneck, h -> q_lora_rank (RMSNorm) -> heads x (qk_head_dim +
qk_rope_head_dim); keys and values through another, h -> kv_lora_rank + qk_rope_head_dim, the compressed part
normed and up-projected to heads x (qk_head_dim + v_head_dim), the rotary key part shared by the heads; rotary
embedding on the rope parts; a fused attention whose queries and keys are qk_head_dim + qk_rope_head_dim wide (192
for DeepSeek-V3) and values v_head_dim (128) on every head (training materialises per-head keys and values); an
output projection heads x v_head_dim -> h. DeepSeek-V3's 128 heads of 192/128 make its attention core 2.9 times the
work of a 128-head attention of hidden/heads = 56, which is what ``ops.layer_ops`` builds from hidden and heads.

``apply`` rewrites the attention of a layer built by ``ops.layer_ops`` into MLA's kernels: the q/k/v projection
becomes the four projections and two norms, the attention core takes MLA's widths, rotary embedding covers the rope
parts only, the output projection reads heads x v_head_dim. The rest of the layer (MLP or MoE block, norms,
residuals) is untouched. Tensor parallelism splits the heads (the up-projections by columns, the output projection
by rows; the up-projections gather their sequence-parallel latents, ``SEQUENCE_PARALLEL_GATHERED_PROJECTIONS``); the
down-projections are not split (``duplicated``): each rank runs them whole on the tokens its sequence-parallel input
holds, 1/tp of the microbatch's with sequence parallelism, all of them without it (``down_projection_tokens``), and
the latents' norms run on the same share. Their weights, whole on every rank, get their gradients all-reduced over the
tensor-parallel group once a step with sequence parallelism (``duplicated_params``;
``parallel.sequence_parallel_grads``). Sources: docs/calibration/round-27.md "Round 27: MLA's down-projections per
tensor-parallel rank". With ``training.recompute_modules: [mla_up_proj]`` the up-projections and rotary embedding are
re-run before the backward (``up_projection_recompute``).
"""

from __future__ import annotations

import dataclasses

from simcluster.spec.model import TransformerSpec
from simcluster.workload import fp8_recipes, grad_accumulation, mla_casts
from simcluster.workload.ops import (
    LSE_BYTES_PER_ELEMENT,
    RMSNORM_FLOP_PER_ELEMENT,
    ROPE_FLOP_PER_ELEMENT,
    Op,
    Shard,
    _Linear,
    _memory,
    _quantize_ops,
)

# the ops of ops.layer_ops that hold the attention MLA replaces, by name
PROJECTION, OUTPUT, CORE, CORE_BACKWARD, ROPE = "qkv", "attn_out", "attention", "attention_backward", "rope"


def projections(model: TransformerSpec, shard: Shard) -> list[_Linear]:
    """MLA's input projections on one rank: the query's down and up (or one direct projection), the key/value's
    down (with the shared rotary key) and up."""
    a, h, tokens, local = model.mla, model.hidden, shard.tokens, down_projection_tokens(shard)
    heads = model.heads // shard.tp
    qk = a.qk_head_dim + a.qk_rope_head_dim
    query = ([_Linear("mla_q_down", local, h, a.q_lora_rank), _Linear("mla_q_up", tokens, a.q_lora_rank, heads * qk)]
             if a.q_lora_rank else [_Linear("mla_q", tokens, h, heads * qk)])
    return [*query, _Linear("mla_kv_down", local, h, a.kv_lora_rank + a.qk_rope_head_dim),
            _Linear("mla_kv_up", tokens, a.kv_lora_rank, heads * (a.qk_head_dim + a.v_head_dim))]


def down_projection_tokens(shard: Shard) -> int:
    """Tokens one rank's down-projections (and the latents' norms) see: its sequence-parallel share. In the
    megatron-core 0.14.0 wheel's TE layer spec (models/gpt/gpt_layer_specs.py) ``linear_q_down_proj`` and
    ``linear_kv_down_proj`` are ``backend.linear()``, TELinear, which MLASelfAttention builds with
    ``parallel_mode='duplicated'`` (transformer/multi_latent_attention.py) and hands to Transformer Engine as
    ``parallel_mode=None``, tp_size 1: no gather, the GEMM on the input as it comes, ``hidden_states`` of
    [s / TP, b, h] with sequence parallelism ("q_compressed: [s / TP, b, q_lora_rank]"), [s, b, h] without. The
    latents' norms are Transformer Engine's LayerNormColumnParallelLinear's (``qk_layernorm``) over that local
    input, normed before the gather."""
    return shard.tokens // shard.sp_divisor


def duplicated_params(model: TransformerSpec) -> int:
    """Parameters of one MLA layer that every tensor-parallel rank holds whole: the down-projections (h x q_lora_rank
    and h x (kv_lora_rank + qk_rope_head_dim); TELinear ``parallel_mode='duplicated'``, tp_size 1) and the two latent
    norms' gains (``linear_{q,kv}_up_proj.layer_norm_weight``, not split by a column-parallel linear). 0 without MLA.
    With sequence parallelism Megatron-Core marks them ``sequence_parallel`` (TELinear: "Reduce the gradient further
    on the TP group since the weight is duplicated across TP ranks") and ``finalize_model_grads`` all-reduces their
    gradients over the tensor-parallel group (``_allreduce_non_tensor_model_parallel_grads``)."""
    a = model.mla
    if a is None:
        return 0
    query = model.hidden * a.q_lora_rank + a.q_lora_rank if a.q_lora_rank else 0
    return query + model.hidden * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank


def attention_params_per_rank(model: TransformerSpec, tp: int) -> float:
    """MLA's attention parameters on one tensor-parallel rank: the head-split projections by tp, the duplicated ones
    whole (``duplicated_params``)."""
    duplicated = duplicated_params(model)
    return (model.attention_params - duplicated) / tp + duplicated


def _norms(model: TransformerSpec, shard: Shard) -> tuple[list[Op], list[Op]]:
    """RMSNorms of the compressed query and key/value (forward, backward), on the sequence-parallel tokens."""
    a, e, tokens = model.mla, shard.activation_bytes_per_element, down_projection_tokens(shard)
    widths = [w for w in (a.q_lora_rank, a.kv_lora_rank) if w]
    forward = [_memory("mla_norm", RMSNORM_FLOP_PER_ELEMENT * tokens * w, 2 * tokens * w * e) for w in widths]
    backward = [_memory("mla_norm", 2 * RMSNORM_FLOP_PER_ELEMENT * tokens * w, 3 * tokens * w * e) for w in widths]
    return forward, backward


def _core(model: TransformerSpec, shard: Shard, op: Op) -> Op:
    """The fused attention ``op`` (``ops.attention_core``) with MLA's widths: scores over qk + rope, context over v,
    on every local head. Forward reads Q and K (qk + rope wide) and V and writes O (v wide), backward reads them and
    dO and writes dQ, dK, dV, as ``ops.attention_core`` counts them, plus the log-sum-exp."""
    a, e = model.mla, shard.activation_bytes_per_element
    heads = model.heads // shard.tp
    width = a.qk_head_dim + a.qk_rope_head_dim + a.v_head_dim      # Q + O per query, K + V per key
    b, s_q, s_kv = shard.micro_batch, op.m, op.n
    passes = 2 if op.name == CORE_BACKWARD else 1
    lse = b * heads * s_q * LSE_BYTES_PER_ELEMENT
    return dataclasses.replace(op, flop=passes * 2.0 * b * s_q * s_kv * heads * width,
                               hbm_bytes=passes * 2 * e * b * heads * width * (s_q + s_kv) / 2 + lse,
                               k=a.qk_head_dim + a.qk_rope_head_dim)


def _rope(model: TransformerSpec, shard: Shard) -> Op:
    a, e = model.mla, shard.activation_bytes_per_element
    elements = shard.tokens * (model.heads // shard.tp + 1) * a.qk_rope_head_dim
    return _memory(ROPE, ROPE_FLOP_PER_ELEMENT * elements, 2 * elements * e)


def apply(model: TransformerSpec, shard: Shard, phases: dict[str, list[Op]]) -> dict[str, list[Op]]:
    """The layer ``phases`` (``ops.layer_ops``) with its attention as MLA's; unchanged without ``model.mla``."""
    if model.mla is None:
        return phases
    a = model.mla
    linears = projections(model, shard)
    output = _Linear(OUTPUT, shard.tokens, model.heads // shard.tp * a.v_head_dim, model.hidden)
    norms, norms_backward = _norms(model, shard)
    forward_projections = [linears[0].forward(shard), *norms[:1], *[x.forward(shard) for x in linears[1:]],
                           *norms[1:]]

    def rewrite(op: Op, phase: str) -> list[Op]:
        if op.name == PROJECTION:
            if phase == "backward_input":
                return [*norms_backward, *[x.dgrad(shard) for x in reversed(linears)]]
            if phase == "backward_weight":
                return [x.wgrad(shard) for x in linears]
            return forward_projections
        if op.name == OUTPUT:
            return [{"backward_input": output.dgrad, "backward_weight": output.wgrad}.get(phase, output.forward)(shard)]
        if op.kind == "attention" and op.name in (CORE, CORE_BACKWARD):
            return [_core(model, shard, op)]
        if op.name == ROPE:
            return [_rope(model, shard)]
        return [op]

    def accumulate(ops: list[Op]) -> list[Op]:  # the separate gradient accumulation over the latent wgrad GEMMs
        params = grad_accumulation.accumulated_params(ops)
        return [dataclasses.replace(op, flop=params, hbm_bytes=shard.grad_accumulation_bytes * params)
                if op.name == grad_accumulation.OP_NAME else op for op in ops]

    latent = {phase: [new for op in ops for new in rewrite(op, phase)] for phase, ops in phases.items()}
    latent["backward_weight"] = accumulate(latent["backward_weight"])
    if up_projections_recomputed(shard):
        latent["recompute"] = [*latent["recompute"], *up_projection_recompute(model, shard, linears, norms)]
    return latent


# MLA's column-parallel linears, by op name: the query's up-projection (or its one projection without q_lora_rank)
# and the key/value up-projection, TE LayerNormColumnParallelLinear / column-parallel TELinear gathering their
# sequence-parallel inputs (megatron-core 0.14.0 wheel, transformer/multi_latent_attention.py, MLASelfAttention
# ``linear_q_up_proj`` / ``linear_q_proj`` and ``linear_kv_up_proj``); the down-projections are duplicated. Their
# backward runs Transformer Engine's async input re-gather and dgrad reduce-scatter (``workload.async_backward``).
COLUMN_PARALLEL = ("mla_q", "mla_q_up", "mla_kv_up")

# Megatron-Core's recompute module name for MLA's up-projections (TransformerConfig.recompute_modules)
UP_PROJ_RECOMPUTE = "mla_up_proj"

# MLA's projections that gather a sequence-parallel input inside Transformer Engine. In Megatron-Core's TE layer spec
# (megatron-core 0.14.0 wheel, models/gpt/gpt_layer_specs.py and transformer/multi_latent_attention.py) the two
# down-projections are TELinear with parallel_mode "duplicated" (each rank projects its own sequence-parallel tokens;
# TE gets parallel_mode None, so no gather), while the query's up-projection (``linear_q_proj`` without
# q_lora_rank) and the key/value up-projection are column-parallel and take the sequence-parallel latents
# (``q_compressed`` / ``kv_compressed``: [s / TP, b, ...]), which TE gathers: two gathered inputs where a dense
# attention has one (QKV's). Both run inside the mla_up_proj checkpoint (``qkv_up_proj_and_rope_apply`` under
# ``CheckpointWithoutOutput(fp8=self.config.fp8)``), so that recompute gathers them again.
SEQUENCE_PARALLEL_GATHERED_PROJECTIONS = 2


def up_projections_recomputed(shard: Shard) -> bool:
    """Whether ``recompute_modules: [mla_up_proj]`` re-runs the up-projections before the backward (a full
    recompute re-runs the whole layer instead)."""
    return UP_PROJ_RECOMPUTE in shard.recompute_modules and shard.recompute != "full"


def up_projection_recompute(model: TransformerSpec, shard: Shard, linears: list[_Linear],
                            norms: list[Op] = ()) -> list[Op]:
    """What ``recompute_modules: [mla_up_proj]`` re-runs before the backward: the query and key/value up-projections
    and the rotary embedding, whose outputs (the per-head queries, keys and values, 192 + 192 + 128 wide a head for
    DeepSeek-V3) are dropped after the attention core reads them (Megatron-Core MLASelfAttention, qkv_up_checkpoint:
    CheckpointWithoutOutput over the up-projection, rope and concatenation). The compressed latents they read are
    kept, before their norms: the up-projections are TE LayerNormColumnParallelLinear (``q_layernorm`` /
    ``kv_layernorm`` IdentityOp in the TE spec), so the latents' ``norms`` run again inside them, and in fp8 their
    outputs are quantized (and gathered) again (``workload.mla_casts.recompute_tensors``; round 28). A full recompute
    already re-runs them."""
    ups = [x for x in linears if x.name.endswith("_up")]
    ops = [*norms, *[x.forward(shard) for x in ups], _rope(model, shard)]
    if shard.precision == "fp8" and shard.fp8_recipe in fp8_recipes.PER_TENSOR_RECIPES:
        ops += _quantize_ops(shard, mla_casts.recompute_tensors(model, shard))
    return ops
