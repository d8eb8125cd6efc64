"""The fp8 tensors multi-head latent attention quantizes, from its own modules (round 28).

Megatron-Core's MLASelfAttention in the Transformer Engine layer spec (megatron-core 0.14-0.17,
transformer/multi_latent_attention.py and models/gpt/gpt_layer_specs.py): the layer's input norm is a TENorm of its
own (``input_layernorm``), whose 16-bit output [s / TP, b, h] feeds two duplicated TELinear down-projections
(``linear_q_down_proj``, ``linear_kv_down_proj``; Transformer Engine ``parallel_mode=None``, no gather). Each module
quantizes its input itself (TE 2.x linear.py ``input_quantizer(inputmat)``), so the same h-wide shard is quantized
twice, neither time by a norm (current scaling: an amax pass before each cast). The latents' norms are fused into the
up-projections (``linear_q_up_proj`` / ``linear_kv_up_proj``: TELayerNormColumnParallelLinear with
``qk_layernorm``, ``q_layernorm`` / ``kv_layernorm`` IdentityOp): their outputs are norm-fed, quantized on the
sequence-parallel shard [s / TP, b, q_lora_rank] and [s / TP, b, kv_lora_rank] and all-gathered (rowwise only under
current scaling, their transposes made after the backward's re-gather: ``fp8_recipes.gathered_transposes``). The
output projection (``linear_proj``, TERowParallelLinear) quantizes the attention output, heads / TP x v_head_dim
wide on every token. Backward, each linear quantizes its output gradient: the projection's on the shard, then
gathered (base.py ``grad_output_preprocess``); the up-projections' over every token, heads / TP x (qk + rope) and
heads / TP x (qk + v) wide; the down-projections' on the shard, q_lora_rank and kv_lora_rank + rope wide (the key
part's gradient concatenated with the shared rotary key's before the cast). Without q_lora_rank the query's one
projection (``linear_q_proj``, TEColumnParallelLinear) quantizes the h-wide shard, gathered, and its output
gradient. ``recompute_modules: [mla_up_proj]`` re-runs the two up-projections (``qkv_up_proj_and_rope_apply`` under
``CheckpointWithoutOutput(fp8=...)``), norms included, so their inputs are normed, quantized and gathered again.

Tensors as ``fp8_recipes.quantize_kernels`` takes them: (elements, norm_fed, gathered) on one rank for one microbatch.
"""

from __future__ import annotations

from typing import Protocol

from simcluster.spec.model import TransformerSpec

Tensor = tuple[float, bool, bool]


class Shard(Protocol):
    """What MLA's casts read of a rank's share (``workload.ops.Shard`` has it; typed here so that ops, which calls
    this module, is not imported back)."""

    tokens: float
    sp_divisor: int
    tp: int


def tensors(model: TransformerSpec, shard: Shard) -> tuple[list[Tensor], list[Tensor]]:
    """(forward, backward) tensors MLA's linears quantize on one rank a microbatch (module docstring)."""
    a, h, tokens = model.mla, model.hidden, shard.tokens
    local = tokens / shard.sp_divisor            # the sequence-parallel shard's tokens (all of them without it)
    gathered = shard.sp_divisor > 1
    heads = model.heads // shard.tp
    q_width = heads * (a.qk_head_dim + a.qk_rope_head_dim)
    if a.q_lora_rank:
        query_forward = [(local * h, False, False), (local * a.q_lora_rank, True, gathered)]
        query_backward = [(tokens * q_width, False, False), (local * a.q_lora_rank, False, False)]
    else:
        query_forward = [(local * h, False, gathered)]
        query_backward = [(tokens * q_width, False, False)]
    forward = [*query_forward, (local * h, False, False), (local * a.kv_lora_rank, True, gathered),
               (tokens * heads * a.v_head_dim, False, False)]
    backward = [(local * h, False, gathered), *query_backward,
                (tokens * heads * (a.qk_head_dim + a.v_head_dim), False, False),
                (local * (a.kv_lora_rank + a.qk_rope_head_dim), False, False)]
    return forward, backward


def recompute_tensors(model: TransformerSpec, shard: Shard) -> list[Tensor]:
    """What ``recompute_modules: [mla_up_proj]`` quantizes again before the backward: the up-projections' norm-fed
    latents (as ``mla.up_projection_recompute`` re-runs the ``_up`` projections only)."""
    forward, _ = tensors(model, shard)
    return [tensor for tensor in forward if tensor[1]]
