"""The tensor-parallel all-reduce of the gradients of parameters every tensor-parallel rank holds whole, with sequence
parallelism (Megatron-Core).

With sequence parallelism each tensor-parallel rank runs the norms (and whatever else works on the sequence-parallel
tokens) on its own 1/tp of the sequence, so the gradients of the parameters those modules hold whole are partial
sums over its tokens. Megatron-Core marks such parameters ``sequence_parallel`` and, once a step after the
data-parallel gradient sync, ``finalize_model_grads`` sums them over the tensor-parallel group in one coalesced
all-reduce of their main gradients (``_allreduce_non_tensor_model_parallel_grads``, alias
``_allreduce_layernorm_grads``; megatron-core 0.14.0 wheel, distributed/finalize_model_grads.py). The parameters
marked (same wheel): Transformer Engine's norms and LayerNormLinear norm gains (TE sets the attribute from its own
``sequence_parallel`` argument), the row-parallel linears' biases (extensions/transformer_engine.py
TERowParallelLinear), the MoE router's weight (transformer/moe/router.py), and TELinear built with
``parallel_mode='duplicated'`` (MLA's down-projections, ``workload.mla.duplicated_params``). With
``qk_layernorm`` the query and key norms are summed too, by name. Without sequence parallelism every rank computes
the same full gradient and nothing is reduced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.spec.model import TransformerSpec
from simcluster.workload import mla

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario

# MTP's norms beyond its transformer layer: enorm, hnorm and its final layernorm (workload.mtp.extra_params_per_rank)
MTP_NORMS = 3


def applies(scenario: Scenario) -> bool:
    """Whether the step has this all-reduce: Megatron-Core with sequence parallelism over more than one TP rank."""
    p = scenario.parallelism
    return scenario.megatron_core and p.sequence_parallel and p.tp > 1


def chunk_params(model: TransformerSpec, layers: int, moe_layers: int, last: bool) -> float:
    """The ``sequence_parallel`` parameters of one model chunk on one tensor-parallel rank: per layer its norms
    (``norm_params``, the q/k norms with them), its row-parallel biases (attention output and fc2, where the model
    has biases) and MLA's duplicated projections and latent norms; per MoE layer the router; on the last chunk the
    final norm and the MTP modules' own norms (their transformer layers are in ``layers``)."""
    norm = model.hidden * (2 if model.norm == "layernorm" else 1)
    biases = 2 * model.hidden if model.linear_biases else 0
    edge = norm * (1 + MTP_NORMS * model.mtp_layers) if last else 0
    return (layers * (model.norm_params + biases + mla.duplicated_params(model))
            + moe_layers * model.router_params + edge)


def stage_bytes(scenario: Scenario, counts: list[int], moe_counts: list[int]) -> list[float]:
    """Bytes of the all-reduce per pipeline stage (its chunks' parameters, ``counts`` / ``moe_counts`` per chunk as
    ``memory.chunk_layers`` gives them) in the main gradient's width (``parallelism.grad_reduce_dtype``: Megatron-Core
    keeps ``main_grad`` in fp32 with grad_reduce_in_fp32, else in the parameters' dtype); zeros where it does not
    apply. Megatron-FSDP (ZeRO-3 on Megatron-Core) all-reduces each gradient's local shard (``grad._local_tensor``),
    1/(dp x cp) of it."""
    p = scenario.parallelism
    per_stage = [0.0] * p.pp
    if not applies(scenario):
        return per_stage
    element = BYTES_PER_ELEMENT[p.grad_reduce_dtype] / (p.dp * p.cp if p.zero_stage == 3 else 1)
    for index, (layers, moe_layers) in enumerate(zip(counts, moe_counts, strict=True)):
        last = index == len(counts) - 1
        per_stage[index % p.pp] += element * chunk_params(scenario.model, layers, moe_layers, last)
    return per_stage
