"""Multi-token prediction (MTP): the modules DeepSeek-V3 trains after its main model, each predicting one more
future token (Liu et al. 2024, DeepSeek-V3 Technical Report, arXiv 2412.19437, section 2.2 and figure 3).

Module k (Megatron-Core ``MultiTokenPredictionLayer``, all on the last pipeline stage): the embedding of the tokens
shifted by k (the main model's embedding, shared), an RMSNorm of it and one of the previous depth's hidden state,
their concatenation projected from 2h to h (``eh_proj``), one transformer layer of the decoder's last-layer type
(an MoE layer for DeepSeek-V3), and the main model's output head with its own cross-entropy (the final norm, the
logits and the loss of ``ops.output_ops``). NVIDIA's DeepSeek-V3 recipe trains one (Megatron-Bridge
recipes/deepseek/deepseek_v3.py, ``mtp_num_layers = 1``) and places it with the loss on the last stage
(``pipeline_model_parallel_layout``). Its transformer layer is counted with the chunk's layers
(``with_mtp_layers``); this module adds what surrounds it (``extra_ops``) and the projection's tensor-parallel
collectives (``tp_collectives``).
"""

from __future__ import annotations

from simcluster.spec.model import TransformerSpec
from simcluster.workload.ops import Op, Shard, _Linear, embedding_ops, norm_ops, output_ops


def with_mtp_layers(model: TransformerSpec, counts: list[int], moe_counts: list[int]) -> tuple[list[int], list[int]]:
    """Transformer layers and MoE layers per model chunk with the MTP modules' layers on the last chunk."""
    if not model.mtp_layers:
        return counts, moe_counts
    return ([*counts[:-1], counts[-1] + model.mtp_layers],
            [*moe_counts[:-1], moe_counts[-1] + model.mtp_moe_layers])


def extra_ops(model: TransformerSpec, shard: Shard) -> dict[str, list[Op]]:
    """Kernels of the MTP modules beyond their transformer layers, on one rank for one microbatch, per phase: per
    module the shifted tokens' embedding, the two input norms, ``eh_proj`` (a column-parallel linear, 2h -> h/tp)
    and the output head with its cross-entropy. Empty without MTP."""
    phases = {"forward": [], "backward_input": [], "backward_weight": [], "recompute": []}
    h = model.hidden
    for _ in range(model.mtp_layers):
        embed, head = embedding_ops(model, shard), output_ops(model, shard)
        eh_proj = _Linear("mtp_eh_proj", shard.tokens, 2 * h, h // shard.tp)
        (enorm, enorm_bwd), (hnorm, hnorm_bwd) = norm_ops("mtp_enorm", model, shard), norm_ops("mtp_hnorm",
                                                                                               model, shard)
        phases["forward"] += [*embed["forward"], *enorm, *hnorm, eh_proj.forward(shard), *head["forward"]]
        phases["backward_input"] += [*head["backward_input"], eh_proj.dgrad(shard), *enorm_bwd, *hnorm_bwd]
        phases["backward_weight"] += [*head["backward_weight"], eh_proj.wgrad(shard), *embed["backward_weight"]]
    return phases


def extra_params_per_rank(model: TransformerSpec, tp: int) -> float:
    """Parameters of the MTP modules beyond their transformer layers on one tensor-parallel rank: per module
    ``eh_proj`` (2h x h, split by tp) and three norms (the two input norms and its final norm). The embedding and
    the output head are the main model's (their copy on the last stage: ``memory.chunk_params``)."""
    h = model.hidden
    return model.mtp_layers * (2 * h * h / tp + 3 * h)


def tp_collectives(model: TransformerSpec, sequence_parallel: bool, gathered_ratio: int) -> dict[str, list]:
    """The MTP modules' tensor-parallel collectives per microbatch (tp > 1), as (op, count) in units of one
    collective of the layer's h-wide activation at that op's width (``parallel.plan.tp_collective_bytes``: the
    all-gathers at the GEMM input's width, fp8 in fp8 training; ``gathered_ratio``: the activation's bytes over the
    gathered element's, 1 or 2). Per module, megatron-core 0.14.0 ``MultiTokenPredictionLayer._concat_embeddings``:
    ``eh_proj`` is a TEColumnParallelLinear (2h -> h/tp), its output all-gathered on the last dimension
    (``gather_from_tensor_model_parallel_region``, a 16-bit [s, h]; its backward a split) and, with sequence
    parallelism, split back to the sequence-parallel share (``scatter_to_sequence_parallel_region``, whose backward
    all-gathers the 16-bit [s, h] gradient). With sequence parallelism Transformer Engine also gathers eh_proj's
    2h-wide input forward and reduce-scatters its 2h-wide input gradient backward (as a dense layer's QKV: the
    input's re-gather for the weight gradient, overlapped with the dgrad GEMM, is not counted there either); without
    it the input gradient is all-reduced."""
    n, r = model.mtp_layers, gathered_ratio
    if sequence_parallel:
        return {"forward": [("all_gather", n * (2 + r))],
                "backward": [("all_gather", n * r), ("reduce_scatter", 2 * n)]}
    return {"forward": [("all_gather", n * r)], "backward": [("allreduce", 2 * n)]}
