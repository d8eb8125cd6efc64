"""Per-GPU memory: model states (weights, gradients, Adam), activations in flight, and a workspace margin.

Model states follow ZeRO's mixed-precision accounting (Rajbhandari et al. 2020, section 3.1): 2 bytes of
16-bit weights, 2 bytes of 16-bit gradients and K = 12 bytes of fp32 master weights, momentum and variance per
parameter; ZeRO stage 1 shards the optimizer states over the data-parallel group, stage 2 also the gradients,
stage 3 also the weights. Megatron-LM's distributed optimizer shards over data x context parallel ranks, and
so does this model.

Activations per layer and microbatch follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in
Large Transformer Models"), section 4, term by term, so that GPT shapes give the paper's equations exactly:
    no parallelism               s*b*h*(34 + 5*a*s/h)                   (eq. 1)
    tensor parallel              s*b*h*(10 + 24/t + 5*a*s/(h*t))        (eq. 2)
    tensor + sequence parallel   s*b*h/t*(34 + 5*a*s/h)                 (eq. 4)
    selective recompute          s*b*h/t*34                             (section 5)
    full recompute               2*s*b*h per layer (its input only; /t with sequence parallelism)
and generalise them to GQA (smaller K and V), SwiGLU (3 MLP matrices) and context parallelism (s -> s/cp for
the stored tensors, a*s^2 -> a*(s/cp)*s for the scores). Flash attention never stores the a*s^2 softmax,
dropout mask and dropout output, so it removes the 5*a*s/h term (Dao et al. 2022), like selective recompute.

In-flight microbatches (Korthikanti et al. 2022, section 4.2.3; Narayanan et al. 2021): with 1F1B pipeline
rank i holds min(pp - i, m) microbatches; GPipe holds all m; Megatron's interleaved 1F1B holds
2*(pp - i - 1) + (v - 1)*pp + 1 model-chunk microbatches, which on the first rank is the paper's
L*(1 + (p - 1)/(p*v)) layers' worth.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from simcluster.core import units
from simcluster.core.errors import OutOfMemoryError
from simcluster.parallel import fsdp_runtime
from simcluster.parallel.layout import split_layers
from simcluster.spec.config import TORCH_LOGITS
from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.spec.model import TransformerSpec
from simcluster.workload import (
    eager_norm_rope,
    fp8_params,
    kv_expansion,
    mla,
    mtp,
    optimizer_step,
    torchao_float8,
)
from simcluster.workload.moe import step_load
from simcluster.workload.ops import (
    EAGER_SWIGLU,
    EAGER_SWIGLU_EXTRA_STORED_TENSORS,
    LAYERNORM,
    LOGITS_SOFTMAX_BYTES_PER_ELEMENT,
    MASK_BYTES_PER_ELEMENT,
    MLP,
    MOE,
    MOE_ACT,
    SHARED_EXPERTS,
    Shard,
    local_kv_hidden,
    norm_statistics,
    shard_for,
)

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario, Training

# Bytes per parameter of the model states, mixed-precision Adam (Rajbhandari et al. 2020, ZeRO, section 3.1):
# 16-bit weights and gradients, fp32 master copy + momentum + variance (K = 12). FP8 training keeps 16-bit
# weights (Transformer Engine casts them per GEMM). Full fp32/tf32 training has no master copy: 4 + 4 + 8
# (Adam m, v).
MIXED_PRECISION_STATE_BYTES = {"weights": 2, "gradients": 2, "optimizer": 12}
FP32_STATE_BYTES = {"weights": 4, "gradients": 4, "optimizer": 8}
# DeepSpeed's BF16_Optimizer (deepspeed/runtime/bf16_optimizer.py, 2022; the path of pipeline_engine: deepspeed with
# bf16 and fp32 gradients, BLOOM 176B and the MT-NLG rows), what it holds per parameter of a rank, read from
# _setup_for_real_optimizer: the bf16 parameters flattened into one buffer (bf16_groups_flat, 2 B, whole); an fp32
# gradient buffer as long as that whole buffer (fp32_groups_gradients_flat = torch.zeros_like(bf16_groups_flat,
# dtype=torch.float32), 4 B, not partitioned: "4bytes x params and it's not sharded", BigScience's prequel); the fp32
# master weights of this rank's partition only (fp32_groups_flat_partition, 4 B / dp) and the Adam moments the wrapped
# optimizer keeps for that partition (8 B / dp); and the bf16 ``.grad`` autograd makes in each backward (2 B, whole):
# the pipeline engine's _exec_backward_pass calls clear_lp_grads() before the backward and
# update_hp_grads(clear_lp_grads=False) after it (the last stage through BF16_Optimizer.backward, the same pair), so the
# bf16 gradients live from one backward to the next, through the forwards between. In all 2 + 2 + 4 + 12 / dp B, where
# DeepSpeed's fp16 ZeRO-1 path (gradients accumulated in fp16 by autograd) holds 2 + 2 + 12 / dp.
BF16_OPTIMIZER_LP_GRAD_BYTES = 2

# Fixed per-GPU overhead outside the model (assumption, stated): CUDA context and kernel images (~0.5-1 GiB on
# Hopper with lazy loading), cuBLAS/cuDNN workspaces (tens of MiB), NCCL buffers of the tp/pp/dp/cp
# communicators (NCCL_BUFFSIZE 4 MiB per channel and peer; a few hundred MiB each). Rounded to 2 GiB.
WORKSPACE_FIXED_BYTES = 2 * 2**30
# FFN-wide tensors one MLP keeps for its backward, per activation: GELU its input and the down projection's input
# (Korthikanti et al. 2022, section 4.1); SwiGLU gate and up (the fused backward reads both) and the down input;
# squared ReLU what GELU keeps: Megatron-LM's squared_relu (torch.pow(F.relu(x), 2) under jit_fuser,
# megatron/training/activations.py) saves one ffn-wide tensor for dx = 2*relu(x)*dy, and the down projection (a
# Transformer Engine Linear) its input.
MLP_STORED_FFN_TENSORS = {"gelu": 2, "swiglu": 3, "squared_relu": 2}
# torchtitan's loss (training.logits_memory: torch_fp32; memory only). Its Llama casts the logits to fp32 in the model
# (torchtitan/models/llama/model.py, 2024: ``output = self.output(h).float()``, the model PyTorch's pipelining docs
# quote) and train.py calls torch.nn.functional.cross_entropy on them (log_softmax, then nll_loss), deleting its own
# reference to the logits before the backward. log_softmax saves its fp32 output (LOGITS_SOFTMAX_BYTES_PER_ELEMENT per
# logit, as Megatron's softmax); the backward then holds this many more fp32 [tokens, vocab/tp] tensors beside it:
# - tp = 1: nll_loss_backward's zero-filled gradient and _log_softmax_backward_data's result (aten, CUDA);
# - tp > 1, DTensor's loss_parallel (torchtitan's default with TP; torch/distributed/tensor/parallel/loss.py,
#   _nll_loss_and_log_softmax_backward: ``grad_input = torch.zeros_like(x)`` then ``(grad_input + torch.exp(x)) *
#   grad_output``): the zeros, exp(x) and their sum, then the product in place of exp(x).
# The forward holds less (tp = 1: the fp32 logits and the log-softmax; loss_parallel: the logits, the shifted
# logits and their exp or the result: 3 tensors, one of them the saved output).
TORCH_LOSS_BACKWARD_FP32_TENSORS = {"single": 2, "loss_parallel": 3}
# Router probabilities kept for the backward: fp32 assumed (Megatron-Core's moe_router_dtype: fp32 option; an
# upper bound, tokens/tp x experts elements per MoE layer)
ROUTER_PROBABILITY_BYTES = 4


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes on one GPU at the peak of a training step."""

    weights_bytes: float
    gradients_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    workspace_bytes: float
    stage: int = 0

    @property
    def total_bytes(self) -> float:
        return (self.weights_bytes + self.gradients_bytes + self.optimizer_bytes + self.activations_bytes
                + self.workspace_bytes)

    @property
    def allocated_bytes(self) -> float:
        """The tensors alone, what PyTorch's caching allocator hands out at the peak (torch.cuda.max_memory_allocated):
        the total less the runtime's own memory (CUDA context, NCCL buffers), which the allocator never holds. What it
        reserves (max_memory_reserved, what torchtitan reports) is at least this: freed blocks stay cached."""
        return self.total_bytes - WORKSPACE_FIXED_BYTES

    def rows(self) -> list[tuple[str, float]]:
        """(label, bytes) per component, for reports; the total is ``total_bytes``, not a row."""
        return [("weights", self.weights_bytes), ("gradients", self.gradients_bytes),
                ("optimizer states", self.optimizer_bytes), ("activations", self.activations_bytes),
                ("workspace", self.workspace_bytes)]

    def describe(self) -> str:
        parts = ", ".join(f"{label} {units.fmt(value, units.BYTES)}" for label, value in self.rows())
        return f"{units.fmt(self.total_bytes, units.BYTES)} ({parts})"


# ---- model states ------------------------------------------------------------------------------------------

def state_bytes_per_param(precision: str) -> dict[str, int]:
    """Bytes per parameter of weights, gradients and Adam states for the training precision."""
    return FP32_STATE_BYTES if precision in ("fp32", "tf32") else MIXED_PRECISION_STATE_BYTES


def state_precision(training: Training) -> str:
    """The precision whose model states a run holds (``state_bytes_per_param``): its own, or fp32 under
    ``autocast_fp32_params`` (workload.autocast_params): the parameters and their ``.grad`` are fp32 and torch's
    AdamW keeps two fp32 moments and no master copy, 4 + 4 + 8 bytes (``FP32_STATE_BYTES``), the 16-bit weights
    being per-microbatch copies (``autocast_weight_copy_bytes``)."""
    return "fp32" if training.autocast_fp32_params else training.precision


def autocast_weight_copy_bytes(model: TransformerSpec, shard: Shard) -> float:
    """The 16-bit weight copies one layer saves for its backward under ``autocast_fp32_params``, per microbatch:
    flash-attention's FusedDenseFunc and FusedMLPFunc (flash_attn/ops/fused_dense.py) cast each weight inside the
    forward and ``save_for_backward`` the cast copy (the dgrad GEMM reads it), so every GEMM weight of the layer is
    held once more in e bytes until the layer's backward; the biases' copies are not saved."""
    if not shard.autocast_fp32_params:
        return 0.0
    return shard.activation_bytes_per_element * layer_gemm_weights_per_rank(model, shard.tp)


def layer_params_per_rank(model: TransformerSpec, tp: int) -> float:
    """Parameters of one layer held by one tensor-parallel rank (Shoeybi et al. 2019 split).

    Q, K, V, the MLP's first matrices and their biases are split by columns, the output projections by rows;
    the row-parallel biases and the norms are replicated. KV heads are replicated when kv_heads < tp. Biases only
    where the model has them (``linear_biases``: GPT-style layernorm models; not Nemotron-4).
    """
    return layer_gemm_weights_per_rank(model, tp) + _layer_biases_per_rank(model, tp) + model.norm_params


def layer_gemm_weights_per_rank(model: TransformerSpec, tp: int) -> float:
    """The GEMM weights of one layer on one tensor-parallel rank (QKV, projection, MLP matrices; MLA's projections):
    what Transformer Engine holds as fp8 with fp8 parameters (workload.fp8_params)."""
    h, kv_local = model.hidden, local_kv_hidden(model, tp)
    q_local, ffn_local = model.q_hidden / tp, model.ffn / tp
    if model.mla is not None:   # multi-head latent attention (workload.mla): heads split by tp, down-projections whole
        return mla.attention_params_per_rank(model, tp) + model.mlp_matrices * h * ffn_local
    return 2 * h * q_local + 2 * h * kv_local + model.mlp_matrices * h * ffn_local


def _layer_biases_per_rank(model: TransformerSpec, tp: int) -> float:
    """The linear layers' biases of one layer on one rank (none without ``linear_biases``)."""
    if not model.linear_biases:
        return 0.0
    kv_local, q_local, ffn_local = local_kv_hidden(model, tp), model.q_hidden / tp, model.ffn / tp
    return q_local + 2 * kv_local + model.hidden + ffn_local + model.hidden


def moe_layer_params_per_rank(model: TransformerSpec, tp: int) -> float:
    """Parameters of an MoE layer on one rank outside its routed experts: attention and norms split as in a dense
    layer, the shared experts split by tp like a dense MLP, the router replicated (Megatron-Core)."""
    h, ffn_local = model.hidden, model.ffn / tp
    dense_mlp = model.mlp_matrices * h * ffn_local + ((ffn_local + h) if model.linear_biases else 0)
    shared = model.moe.shared_experts * model.expert_params / tp
    return layer_params_per_rank(model, tp) - dense_mlp + shared + model.router_params


def chunk_gemm_weights(model: TransformerSpec, tp: int, layers: int, moe_layers: int = 0,
                       experts_per_layer: float = 0.0) -> float:
    """GEMM weights of a chunk's transformer layers on one rank, routed experts included (``experts_per_layer``):
    its parameters that Transformer Engine holds as fp8 with fp8 parameters (workload.fp8_params). Not the embedding,
    output layer, norms, biases nor router."""
    dense = layer_gemm_weights_per_rank(model, tp)
    if not moe_layers:
        return layers * dense
    h, ffn_local = model.hidden, model.ffn / tp
    moe = dense - model.mlp_matrices * h * ffn_local + model.moe.shared_experts * model.expert_params / tp
    return (layers - moe_layers) * dense + moe_layers * (moe + experts_per_layer)


def chunk_gemm_weight_tensors(model: TransformerSpec, tp: int, layers: int, moe_layers: int = 0, ep: int = 1,
                              etp: int = 1) -> list[tuple[float, int]]:
    """The GEMM weight tensors of a chunk's transformer layers on one rank as (elements, count): each is one
    Transformer Engine weight, quantized by its own kernel (workload.fp8_params). Attention: QKV and the projection
    (Megatron-Core's ``linear_qkv``, ``linear_proj``); MLA ``linear_q_down_proj``, ``linear_q_up_proj`` (or
    ``linear_q_proj`` without a query bottleneck), ``linear_kv_down_proj``, ``linear_kv_up_proj``, ``linear_proj``
    (megatron/core/transformer/multi_latent_attention.py), split by tp as ``layer_gemm_weights_per_rank`` splits
    them (the down-projections whole on every rank: ``mla.duplicated_params``). MLP: ``linear_fc1`` (gate and up
    fused under SwiGLU) and ``linear_fc2``; an MoE layer's shared experts are one such MLP (``SharedExpertMLP``), and
    each local expert has its own fc1 and fc2 weight (TE ``GroupedLinear`` holds ``weight{i}`` per expert, one
    quantize each: grouped_linear.py). The router stays 16-bit (not a TE module).
    """
    h = model.hidden
    if model.mla is not None:
        a = model.mla
        qk = a.qk_head_dim + a.qk_rope_head_dim
        query = ((h * a.q_lora_rank, a.q_lora_rank * model.heads * qk / tp) if a.q_lora_rank
                 else (h * model.heads * qk / tp,))
        attention = [*query, h * (a.kv_lora_rank + a.qk_rope_head_dim),   # the down-projections whole (workload.mla)
                     a.kv_lora_rank * model.heads * (a.qk_head_dim + a.v_head_dim) / tp,
                     model.heads * a.v_head_dim * h / tp]
    else:
        q_local = model.q_hidden / tp
        attention = [h * (q_local + 2 * local_kv_hidden(model, tp)), q_local * h]

    def mlp(ffn: float) -> list[float]:
        return [(model.mlp_matrices - 1) * h * ffn, h * ffn]   # fc1, fc2

    tensors = [(n, layers) for n in attention] + [(n, layers - moe_layers) for n in mlp(model.ffn / tp)]
    if moe_layers:
        moe = model.moe
        if moe.shared_experts:
            tensors += [(n, moe_layers) for n in mlp(moe.shared_experts * moe.ffn_hidden / tp)]
        tensors += [(n, moe_layers * moe.experts // ep) for n in mlp(moe.ffn_hidden / etp)]
    return [(n, count) for n, count in tensors if count > 0 and n > 0]


def expert_params_per_rank(model: TransformerSpec, ep: int, etp: int) -> float:
    """Routed-expert parameters of one MoE layer on one rank: experts/ep experts, each split over etp ranks."""
    return model.moe.experts / ep * model.expert_params / etp if model.moe else 0.0


def chunk_moe_layers(model: TransformerSpec, counts: list[int]) -> list[int]:
    """MoE layers in each chunk of ``counts`` layers (model order)."""
    out, start = [], 0
    for layers in counts:
        out.append(sum(model.is_moe_layer(i) for i in range(start, start + layers)))
        start += layers
    return out


def chunk_layers(model: TransformerSpec, pp: int, virtual_stages: int = 1,
                 layers_per_stage: list[int] | None = None) -> tuple[list[int], list[int]]:
    """Transformer layers and MoE layers of each model chunk, the multi-token-prediction modules' layers on the
    last (``mtp.with_mtp_layers``)."""
    layers = split_layers(model.layers, pp, virtual_stages, layers_per_stage)
    return mtp.with_mtp_layers(model, layers, chunk_moe_layers(model, layers))


def chunk_params(model: TransformerSpec, tp: int, layers: int, first: bool, last: bool, pp: int,
                 moe_layers: int = 0) -> float:
    """Parameters of one model chunk of ``layers`` layers (``moe_layers`` of them MoE layers), per tensor-parallel
    rank, routed experts aside (``expert_params_per_rank``: sharded by expert parallelism, not tp).

    The first chunk holds the vocab-parallel token embedding (and learned positions), the last chunk the final
    norm and the output projection; with tied embeddings and pp > 1 the last stage keeps its own copy of the
    word embedding for the logits (Megatron-LM, Narayanan et al. 2021). Multi-token prediction adds its
    projection and norms to the last chunk (``mtp.extra_params_per_rank``; its layers are counted in ``layers``)
    and, with untied embeddings, a copy of the word embedding there for the shifted tokens.
    """
    params = (layers - moe_layers) * layer_params_per_rank(model, tp)
    if moe_layers:
        params += moe_layers * moe_layer_params_per_rank(model, tp)
    word_embedding = math.ceil(model.vocab / tp) * model.hidden
    if first:
        params += word_embedding
        params += model.max_seq_len * model.hidden if model.position == "learned" else 0
    if last:
        params += 2 * model.hidden if model.norm == "layernorm" else model.hidden
        if not model.tied_embeddings or pp > 1:
            params += word_embedding
        if model.mtp_layers:
            params += mtp.extra_params_per_rank(model, tp)
            params += word_embedding if not model.tied_embeddings and not first else 0
    return params


def stage_params(model: TransformerSpec, tp: int, pp: int, stage: int, virtual_stages: int = 1,
                 layers_per_stage: list[int] | None = None) -> float:
    """Parameters held by one GPU of pipeline rank ``stage`` (all its model chunks), per tensor-parallel rank."""
    layers, moe = chunk_layers(model, pp, virtual_stages, layers_per_stage)
    chunks = range(stage, len(layers), pp)
    return sum(chunk_params(model, tp, layers[c], c == 0, c == len(layers) - 1, pp, moe[c]) for c in chunks)


def stage_gemm_weights(model: TransformerSpec, tp: int, pp: int, stage: int, ep: int = 1, etp: int = 1,
                       virtual_stages: int = 1, layers_per_stage: list[int] | None = None) -> float:
    """GEMM weights (``chunk_gemm_weights``, routed experts included) held by one GPU of pipeline rank ``stage``."""
    layers, moe = chunk_layers(model, pp, virtual_stages, layers_per_stage)
    experts = expert_params_per_rank(model, ep, etp)
    return sum(chunk_gemm_weights(model, tp, layers[c], moe[c], experts) for c in range(stage, len(layers), pp))


def stage_expert_params(model: TransformerSpec, pp: int, stage: int, ep: int, etp: int, virtual_stages: int = 1,
                        layers_per_stage: list[int] | None = None) -> float:
    """Routed-expert parameters held by one GPU of pipeline rank ``stage``."""
    if model.moe is None:
        return 0.0
    _, moe = chunk_layers(model, pp, virtual_stages, layers_per_stage)
    return sum(moe[c] for c in range(stage, len(moe), pp)) * expert_params_per_rank(model, ep, etp)


def optimizer_state_bytes_per_param(precision: str, optimizer_name: str = "adam", moments: str = "fp32",
                                    master_weights: bool = True) -> float:
    """Optimizer state per parameter: fp32 training's, or the mixed-precision optimizer's from
    workload.optimizer_step (12 B; 10 with the precision-aware optimizer's 16-bit master-weight remainders; 4 B less
    each with bf16 ``moments``); without ``master_weights`` (16-bit parameters stepped in place, training.
    master_weights) two moments in the parameter dtype and no master copy: torch.optim.Adam's ``_init_group`` makes
    ``exp_avg`` and ``exp_avg_sq`` with ``torch.zeros_like(p, memory_format=torch.preserve_format)``."""
    if not master_weights:
        return 2.0 * BYTES_PER_ELEMENT[precision]
    per = state_bytes_per_param(precision)
    return per["optimizer"] if per is FP32_STATE_BYTES else optimizer_step.state_bytes_per_param(optimizer_name,
                                                                                                 moments)


def uses_bf16_optimizer(precision: str, grad_dtype: str) -> bool:
    """Whether DeepSpeed trains with its BF16_Optimizer: bf16 with fp32 gradients (its fp32 ``hp_grad``s)."""
    return precision == "bf16" and grad_dtype == "fp32"


def gradient_bytes_per_param(scenario: Scenario) -> float | None:
    """Bytes per parameter of the gradients a rank holds through the step, before ZeRO's sharding; None for fp32
    training's (``state_bytes_per_param``). The reduce dtype's buffer (Megatron-LM's main gradients, DeepSpeed's
    fp32 ``hp_grad``s or 16-bit ``.grad``), and under DeepSpeed's BF16_Optimizer also the bf16 ``.grad``s it keeps
    between backward passes (``BF16_OPTIMIZER_LP_GRAD_BYTES``). Megatron-LM's engine keeps none: its
    gradient-accumulation fusion writes the weight gradients straight into the fp32 main gradients."""
    p, t = scenario.parallelism, scenario.training
    if state_precision(t) in ("fp32", "tf32"):
        return None
    if not t.master_weights:
        # 16-bit parameters (training.master_weights false): FSDP2's foreach_reduce casts each reduced gradient shard
        # back to the sharded parameter's dtype, and autograd accumulates the .grad of parameters outside FSDP
        # (AutoModel's expert-parallel experts, ignored_params) in theirs
        return BYTES_PER_ELEMENT[t.precision]
    held = BYTES_PER_ELEMENT[p.grad_reduce_dtype]
    if p.pipeline_engine == "deepspeed" and uses_bf16_optimizer(t.precision, p.grad_reduce_dtype):
        held += BF16_OPTIMIZER_LP_GRAD_BYTES
    return held


def _state_bytes(params: float, precision: str, zero_stage: int, shards: int,
                 grad_bytes_per_param: float | None = None,
                 optimizer_name: str = "adam", moments: str = "fp32",
                 master_weights: bool = True) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes of ``params`` with ZeRO ``zero_stage`` over ``shards`` ranks.

    ``grad_bytes_per_param`` overrides the gradient buffer's element size: Megatron-LM keeps fp32 main gradients
    when it reduces in fp32, 2 + 4 + 12 bytes per parameter (Megatron-LM docs, distributed optimizer).
    ``optimizer_name``: mixed-precision optimizer state per parameter from workload.optimizer_step (12 B; 10 for
    the precision-aware optimizer's 16-bit master-weight remainders; 4 B less with bf16 ``moments``).
    """
    per = state_bytes_per_param(precision)
    grad_bytes = per["gradients"] if grad_bytes_per_param is None else grad_bytes_per_param
    state = optimizer_state_bytes_per_param(precision, optimizer_name, moments, master_weights)
    weights, gradients, optimizer = (params * per["weights"], params * grad_bytes, params * state)
    if zero_stage >= 1:
        optimizer /= shards
    if zero_stage >= 2:
        gradients /= shards
    if zero_stage >= 3:
        weights /= shards
    return weights, gradients, optimizer


# ---- activations -------------------------------------------------------------------------------------------

def layer_activation_bytes(model: TransformerSpec, shard: Shard) -> float:
    """Activation bytes one layer keeps for the backward, per microbatch and rank (Korthikanti 2022 s.4).

    Term by term, for 16-bit activations (e = 2 bytes) and 1-byte dropout masks, with T = b*s/cp local tokens:
    replicated across TP unless sequence parallel: two norm inputs 2eTh, QKV input eTh, MLP input eTh, two
    dropout masks 2Th (= 10sbh); split by TP: Q eTh, K and V eT*kv each, attention-output input eTh, MLP
    activation input and down-projection input eT*ffn each (3 for SwiGLU; 2 for squared ReLU,
    MLP_STORED_FFN_TENSORS) (= 24sbh for GPT); the scores:
    softmax output, dropout mask and dropout output (2e + 1)*b*(a/t)*(s/cp)*s (= 5as^2b), dropped by flash
    attention and selective recompute. Full recompute keeps the layer input only. A model trained without
    dropout (Llama) stores no masks and no dropout output: 8sbh + 24sbh, and e*a*s^2*b for the scores.

    FP8 training (Transformer Engine) keeps the inputs its GEMMs need for the weight gradients in the fp8 form
    it already cast them to, 1 byte: the QKV and MLP inputs and the down-projection input; the attention output
    stays 16-bit for the attention backward and gains a 1-byte copy for its projection (conf R: TE's Linear,
    LayerNormLinear and LayerNormMLP save their cast inputs).

    ``residual_in_fp32`` (flash-attention's GPT) keeps the two norm inputs, the residual stream, in 4 bytes.
    """
    h, e = model.hidden, shard.activation_bytes_per_element
    tokens = shard.tokens
    if shard.recompute == "full":
        return e * tokens * h / shard.sp_divisor
    fp8 = shard.precision == "fp8"
    g = BYTES_PER_ELEMENT["fp8"] if fp8 else e     # a stored GEMM input
    masks = 2 * MASK_BYTES_PER_ELEMENT * h if model.dropout else 0
    replicated = ((2 * residual_bytes(shard) + 2 * g) * h + masks) * tokens / shard.sp_divisor
    q_local = model.q_hidden / shard.tp
    kv_local = local_kv_hidden(model, shard.tp)
    attention = e * (2 * q_local + 2 * kv_local) + (BYTES_PER_ELEMENT["fp8"] * q_local if fp8 else 0)
    split = tokens * attention + dense_mlp_split_bytes(model, shard)
    if shard.kv_expansion:   # SDPA keeps the keys and values expanded to the query heads (kv_expansion)
        split += e * kv_expansion.saved_extra_elements(tokens, model.heads // shard.tp, kv_local // model.d_head,
                                                       model.d_head)
    scores = 0.0
    if shard.attention == "naive" and shard.recompute == "none":
        s_q = shard.seq_len / shard.cp
        heads_local = model.heads / shard.tp
        per_score = (2 * e + MASK_BYTES_PER_ELEMENT) if model.dropout else e  # softmax (+ mask and dropout output)
        scores = per_score * shard.micro_batch * heads_local * s_q * shard.seq_len
    return (replicated + split + scores + qk_norm_activation_bytes(model, shard)
            - (norm_output_bytes(model, shard) if model.mla is not None else 0.0)
            + autocast_weight_copy_bytes(model, shard) + eager_norm_extra_bytes(model, shard)
            - mlp_checkpoint_bytes(model, shard))


def dense_mlp_split_bytes(model: TransformerSpec, shard: Shard) -> float:
    """The dense MLP's TP-split stored tensors, per microbatch and rank (``layer_activation_bytes``): the
    activation's inputs (MLP_STORED_FFN_TENSORS - 1, e bytes; more for eager SwiGLU) and the down-projection's input
    (a stored GEMM input, g bytes), ffn/tp wide each."""
    e = shard.activation_bytes_per_element
    g = BYTES_PER_ELEMENT["fp8"] if shard.precision == "fp8" else e
    mlp_tensors = MLP_STORED_FFN_TENSORS[model.mlp] + (
        EAGER_SWIGLU_EXTRA_STORED_TENSORS if shard.mlp_activation == EAGER_SWIGLU else 0)
    return shard.tokens * ((mlp_tensors - 1) * e + g) * model.ffn / shard.tp


def mlp_checkpoint_bytes(model: TransformerSpec, shard: Shard) -> float:
    """What ``recompute_modules: [mlp]`` frees in a dense layer, per microbatch and rank: the checkpointed MLP
    (Transformer Engine's LayerNormMLP, the pre-MLP norm fused into fc1) keeps its input, the residual stream the
    norm reads (kept anyway, ``layer_activation_bytes``' norm input), and stores nothing else: fc1's input (the
    norm's output, g*T*h/sp) and the split tensors (``dense_mlp_split_bytes``) are rebuilt before its backward.
    0 without it or with full recompute."""
    if MLP not in shard.recompute_modules or shard.recompute == "full":
        return 0.0
    g = BYTES_PER_ELEMENT["fp8"] if shard.precision == "fp8" else shard.activation_bytes_per_element
    return g * shard.tokens / shard.sp_divisor * model.hidden + dense_mlp_split_bytes(model, shard)


def eager_norm_extra_bytes(model: TransformerSpec, shard: Shard) -> float:
    """What a layer's two eager fp32 norms (``training.norm_kernels: eager_fp32``) keep beyond the fused norm's
    16-bit input: autograd saves the fp32 upcast and the normalised 16-bit tensor (``eager_norm_rope``), not the
    input (its cast saves nothing). 0 for fused norms or with full recompute, which keeps the layer input only."""
    if shard.norm_kernels != eager_norm_rope.EAGER or shard.recompute == "full":
        return 0.0
    e = shard.activation_bytes_per_element
    return 2 * (eager_norm_rope.saved_bytes_per_element(e) - e) * shard.tokens / shard.sp_divisor * model.hidden


def residual_bytes(shard: Shard) -> int:
    """Bytes of a saved norm input, an element of the residual stream: 16-bit, or fp32 with ``residual_in_fp32``
    (flash-attention's dropout_add_layer_norm then writes and saves the residual sum in fp32)."""
    return BYTES_PER_ELEMENT["fp32"] if shard.residual_in_fp32 else shard.activation_bytes_per_element


def qk_norm_activation_bytes(model: TransformerSpec, shard: Shard) -> float:
    """What ``qk_layernorm``'s q and k norms keep for their backward beyond the attention's own tensors, per
    microbatch and rank: each norm's input (the QKV projection's q and k outputs, 16-bit, e*T*(q + kv) local
    widths; the norm's output is RoPE's input, which Megatron-Core's fused RoPE does not keep, and RoPE's output is
    the attention's stored Q and K) and its fp32 statistics per head row (Transformer Engine: rsigma, and mu for
    layernorm). Kept with selective recompute and layernorm recompute (neither covers them, ``ops.module_recompute``);
    0 without qk_layernorm or with full recompute, which keeps the layer input only."""
    if not model.qk_layernorm or shard.recompute == "full":
        return 0.0
    width = model.q_hidden / shard.tp + local_kv_hidden(model, shard.tp)
    statistics = norm_statistics(model) * BYTES_PER_ELEMENT["fp32"]
    return shard.tokens * width * (shard.activation_bytes_per_element + statistics / model.d_head)


def norm_output_bytes(model: TransformerSpec, shard: Shard) -> float:
    """What ``recompute_modules: [layernorm]`` frees per norm that is a module of its own (``ops.module_recompute``):
    its output, the next GEMM's stored input (g*T*h/sp of ``layer_activation_bytes``), dropped after the forward and
    rebuilt from the kept norm input before the backward (Megatron-Core CheckpointWithoutOutput). 0 without it or
    with full recompute."""
    if LAYERNORM not in shard.recompute_modules or shard.recompute == "full":
        return 0.0
    g = BYTES_PER_ELEMENT["fp8"] if shard.precision == "fp8" else shard.activation_bytes_per_element
    return g * shard.tokens / shard.sp_divisor * model.hidden


def moe_layer_activation_bytes(model: TransformerSpec, shard: Shard, ep: int, etp: int, load: float) -> float:
    """Activation bytes an MoE layer keeps, per microbatch and rank: a dense layer's (``layer_activation_bytes``)
    with the dense MLP's split tensors replaced by the experts': the permuted expert input (a stored GEMM input,
    h wide) and the activation and down-projection inputs, on the busiest rank's ``load`` x k x tokens/tp rows
    (``workload.moe``); the router's probabilities (fp32, tokens/tp x experts); the shared experts like a dense MLP.
    Full recompute keeps the layer input only, as for a dense layer. ``recompute_modules``: moe keeps the MoE
    block's input only (the pre-MLP norm's output, MoELayer's checkpoint input, counted as the dense MLP's input):
    no router probabilities, expert or shared-expert tensors; shared_experts drops the shared experts' tensors
    (their input is the same norm output); mlp leaves an MoE layer alone."""
    if shard.recompute == "full":
        return layer_activation_bytes(model, shard)
    dense = layer_activation_bytes(model, shard) + mlp_checkpoint_bytes(model, shard)
    moe, h, e = model.moe, model.hidden, shard.activation_bytes_per_element
    g = BYTES_PER_ELEMENT["fp8"] if shard.precision == "fp8" else e
    mlp_tensors = MLP_STORED_FFN_TENSORS[model.mlp]
    dense_mlp = shard.tokens * ((mlp_tensors - 1) * e + g) * model.ffn / shard.tp
    shared = shard.tokens * ((mlp_tensors - 1) * e + g) * moe.shared_experts * moe.ffn_hidden / shard.tp
    modules = shard.recompute_modules
    routed = shard.tokens / shard.tp
    rows = etp * routed * moe.top_k * load      # expert rows on this rank: experts/ep x ep*etp*routed*k*load/E
    # recompute_modules: [moe_act] drops the activation's output, the down-projection's stored input (with fp8
    # Megatron-Core has TE save it unquantized, set_save_original_input, and drops that): rebuilt before the backward
    act_output = 0.0 if MOE_ACT in shard.recompute_modules else g
    experts = rows * (g * h + ((mlp_tensors - 1) * e + act_output) * moe.ffn_hidden / etp)
    probabilities = ROUTER_PROBABILITY_BYTES * routed * moe.experts
    if MOE in modules:   # the checkpointed block keeps its input only
        shared = experts = probabilities = 0.0
    if SHARED_EXPERTS in modules:
        shared = 0.0
    return dense - dense_mlp + shared + experts + probabilities - norm_output_bytes(model, shard)


def moe_checkpoint_rebuilt_bytes(model: TransformerSpec, shard: Shard, ep: int, etp: int, load: float) -> float:
    """What one MoE layer's whole-module checkpoints (``recompute_modules``: moe, shared_experts) rebuild before its
    backward, live beside the stored activations while that backward runs: the layer's activations without them
    less with them (one layer at a time; 0 without them)."""
    if not {MOE, SHARED_EXPERTS} & set(shard.recompute_modules) or shard.recompute == "full":
        return 0.0
    kept = tuple(module for module in shard.recompute_modules if module not in (MOE, SHARED_EXPERTS))
    without = dataclasses.replace(shard, recompute_modules=kept)
    return (moe_layer_activation_bytes(model, without, ep, etp, load)
            - moe_layer_activation_bytes(model, shard, ep, etp, load))


def dispatch_buffer_bytes(model: TransformerSpec, shard: Shard, load: float) -> float:
    """The all-to-all buffers of one MoE layer's dispatch, live while it runs: the permuted tokens sent and those
    received, top_k x tokens/tp rows of h each on the busiest rank (an assumption of this model: one dispatch or
    combine in flight at a time, as Megatron-Core's alltoall dispatcher issues them)."""
    if model.moe is None:
        return 0.0
    rows = shard.tokens / shard.tp * model.moe.top_k * load
    return 2 * rows * model.hidden * shard.activation_bytes_per_element


def embedding_activation_bytes(model: TransformerSpec, shard: Shard) -> float:
    """The embedding's dropout mask (Korthikanti et al. 2022, section 4.3: s*b*h/t with sequence parallel)."""
    if not model.dropout:
        return 0.0
    return MASK_BYTES_PER_ELEMENT * shard.tokens * model.hidden / shard.sp_divisor


def output_activation_bytes(model: TransformerSpec, shard: Shard, logits_memory: str = "megatron") -> float:
    """Final norm and logits inputs plus the fp32 softmax of the vocab-parallel cross entropy (ibid., 4.3).

    With sequence parallelism Megatron's output projection saves its input's sequence shard and gathers it again in
    the backward (LinearWithGradAccumulationAndAsyncCommunication); torchtitan's (``logits_memory: torch_fp32``,
    ColwiseParallel(input_layouts=Shard(1))) gathers it before nn.Linear, which saves the gathered input. Either
    way the log-softmax is saved in fp32 (``TORCH_LOSS_BACKWARD_FP32_TENSORS``).

    The fused loss (``cross_entropy: fused``) saves the 16-bit logits themselves instead, e bytes a logit: flash-
    attention's xentropy CrossEntropyLossApex (training/src/losses/cross_entropy_apex.py, SoftmaxCrossEntropyLossFn:
    ``ctx.save_for_backward(logits, max_log_sum_exp, labels)``) and its Triton CrossEntropyLoss alike, both over the
    logits autocast left in 16 bits; Transformer Engine's parallel_cross_entropy (Megatron-Core's
    cross_entropy_fusion_impl te) writes the gradient into the 16-bit logits in its forward and saves that. The fp32
    log-sum-exp, one value a row, is left out (4 bytes against e x vocab).
    """
    e = shard.activation_bytes_per_element
    norm_input = residual_bytes(shard) * shard.tokens * model.hidden / shard.sp_divisor
    logits_input = e * shard.tokens * model.hidden / (1 if logits_memory in TORCH_LOGITS else shard.sp_divisor)
    per_logit = e if shard.cross_entropy == "fused" else torch_logit_bytes(shard, logits_memory)
    # under autocast_fp32_params F.linear saves the output weight's 16-bit copy from autocast's cast cache
    weight_copy = e * math.ceil(model.vocab / shard.tp) * model.hidden if shard.autocast_fp32_params else 0.0
    return norm_input + logits_input + per_logit * logits_per_rank(model, shard) + weight_copy


def torch_logit_bytes(shard: Shard, logits_memory: str) -> float:
    """Bytes of one logit in the loss's saved log-softmax and its backward's tensors: fp32 for Megatron's softmax
    and torchtitan's fp32 logits; the 16-bit activation dtype for ``torch_16bit`` (NeMo AutoModel's
    MaskedCrossEntropy with ``fp32_upcast: false`` calls F.cross_entropy on the 16-bit logits, whose log_softmax
    saves its output, and the gradients, in their dtype)."""
    return shard.activation_bytes_per_element if logits_memory == "torch_16bit" else LOGITS_SOFTMAX_BYTES_PER_ELEMENT


def logits_per_rank(model: TransformerSpec, shard: Shard) -> int:
    """Elements of one microbatch's logits on one rank: local tokens x vocab/tp (vocab-parallel)."""
    return shard.tokens * math.ceil(model.vocab / shard.tp)


def loss_transient_bytes(model: TransformerSpec, shard: Shard, logits_memory: str = "megatron") -> float:
    """What the output layer holds beyond its saved tensors at its widest moment, per microbatch: Megatron's
    16-bit logits beside their fp32 copy (and in the backward the 16-bit gradient beside the fp32 one); torchtitan's
    fp32 tensors of the cross entropy's backward (``TORCH_LOSS_BACKWARD_FP32_TENSORS``). The fused loss's backward
    writes the 16-bit logit gradient beside the saved logits, the same e bytes a logit (llm-foundry's; with
    flash-attention's ``inplace_backward: True`` and Transformer Engine's it overwrites the logits instead: an upper
    bound there)."""
    if logits_memory in TORCH_LOGITS:
        tensors = TORCH_LOSS_BACKWARD_FP32_TENSORS["loss_parallel" if shard.tp > 1 else "single"]
        return tensors * torch_logit_bytes(shard, logits_memory) * logits_per_rank(model, shard)
    return shard.activation_bytes_per_element * logits_per_rank(model, shard)


def pipeline_output_bytes(model: TransformerSpec, shard: Shard, logits_memory: str, pp: int,
                          microbatches: int) -> float:
    """The last stage's outputs a pipeline schedule keeps for the whole step: torch.distributed.pipelining's
    forward_one_chunk appends each microbatch's output to ``output_chunks`` (merged when the step ends), which with
    torchtitan's fp32 logits is every microbatch's [tokens, vocab/tp] in fp32 by the last backward (16-bit with
    ``torch_16bit``: NeMo AutoModel's DeepSeek-V3 returns ``self.lm_head(hidden_states)`` uncast). Megatron's
    schedule keeps only the loss (none)."""
    if pp == 1 or logits_memory not in TORCH_LOGITS:
        return 0.0
    return microbatches * torch_logit_bytes(shard, logits_memory) * logits_per_rank(model, shard)


def deferred_output_wgrads(scenario: Scenario) -> int:
    """How many microbatches of a step leave their output-layer weight-gradient GEMM to the pipeline flush
    (``parallelism.defer_embedding_wgrad``, Megatron-Core's defer_embedding_wgrad_compute, r0.7-r0.11), for the step's
    time (parallel/plan.py, engine/agents.py) and its memory alike.

    On the last pipeline stage the output layer's forward keeps its input in ``embedding_activation_buffer`` and its
    backward its output gradient in ``grad_output_buffer`` while either holds fewer than ``wgrad_deferral_limit``
    (0: no limit), and skips the wgrad GEMM for them (tensor_parallel/layers.py); buffers are drained once per step,
    so the deferred ones are the step's first ``limit`` microbatches. After the schedule's last backward and the
    launch of the remaining gradient reductions, finish_embedding_wgrad_compute runs their GEMMs back to back on
    the compute stream, each sequence-parallel input all-gathered while the previous GEMM runs
    (core/utils.py drain_embedding_wgrad_compute), before finalize_model_grads. Megatron-Core refuses it without
    pipeline parallelism or gradient accumulation fusion (ModelParallelConfig.__post_init__).

    The buffers hold a 16-bit [tokens, vocab/tp] gradient per deferred microbatch (``deferred_wgrad_buffer_bytes``),
    1 GiB at a 256K vocabulary over tp 2 and 4096 tokens. Left unset, the option is the framework default; NeMo sets
    it per recipe, and its 1.x launcher does not set it (default off) for Nemotron-3 22B on 8 GPUs
    (conf/training/nemotron/nemotron_22b.yaml), where 22 of them would need 92 GiB on the last stage. So, an inference
    from that recipe, a defaulted deferral whose buffers would not fit the GPU is off (0; ``with_fitting_deferral``
    resolves the scenario so). Set explicitly, it is counted and may be refused (``check_fits``)."""
    requested = _requested_deferrals(scenario)
    p = scenario.parallelism
    if not requested or "defer_embedding_wgrad" not in p._resolved:
        return requested
    last = _stage_memory(scenario, p.pp - 1, requested)
    return requested if last.total_bytes <= scenario.cluster.gpu.hbm_capacity else 0


def with_fitting_deferral(scenario: Scenario) -> Scenario:
    """The scenario as it runs: a defaulted ``defer_embedding_wgrad`` whose buffers would not fit the last stage
    (``deferred_output_wgrads``) resolved off, so its dumps, reports and comparisons show what was simulated (and a
    dump reloads to the same run); otherwise the scenario itself."""
    if not _requested_deferrals(scenario) or deferred_output_wgrads(scenario):
        return scenario
    p = scenario.parallelism.model_copy(update={"defer_embedding_wgrad": False})
    p._resolved = {**scenario.parallelism._resolved, "defer_embedding_wgrad": False}
    return scenario.model_copy(update={"parallelism": p})


def dropped_deferral_note(scenario: Scenario, effective: Scenario) -> str | None:
    """One line saying that the default deferral was turned off for memory (None if it was not)."""
    if scenario.parallelism.defer_embedding_wgrad == effective.parallelism.defer_embedding_wgrad:
        return None
    need = _stage_memory(scenario, scenario.parallelism.pp - 1, _requested_deferrals(scenario)).total_bytes
    return (f"defer_embedding_wgrad (default) is off: the last stage would need {units.fmt(need, units.BYTES, 3)} "
            f"with {_requested_deferrals(scenario)} microbatches' deferred output-layer wgrad buffers, over the "
            f"{units.fmt(scenario.cluster.gpu.hbm_capacity, units.BYTES, 3)} of {scenario.cluster.gpu.name}")


def _requested_deferrals(scenario: Scenario) -> int:
    """``deferred_output_wgrads`` as the scenario's options ask, whether or not the buffers fit."""
    p = scenario.parallelism
    if not p.defer_embedding_wgrad or p.pp == 1 or p.pipeline_engine != "megatron":
        return 0
    limit = p.wgrad_deferral_limit or 0
    return scenario.microbatches if limit == 0 else min(limit, scenario.microbatches)


def deferred_wgrad_buffer_bytes(model: TransformerSpec, shard: Shard) -> tuple[float, float]:
    """(output gradient, input) one deferred microbatch leaves in the output layer's buffers until the flush.

    Megatron-Core, tensor_parallel/layers.py: ColumnParallelLinear.forward appends ``input_parallel`` to
    ``embedding_activation_buffer`` (with sequence parallelism the local sequence shard, [s/t, b, h]; the same tensor
    the GEMM saves, ``output_activation_bytes``' logits input) and LinearWithGradAccumulationAndAsyncCommunication.
    backward appends ``grad_output`` to ``grad_output_buffer``: the logits' gradient, [s, b, vocab/t] over the
    gathered sequence, in the logits' 16-bit dtype (the fused cross entropy returns it in ``ctx.logits_dtype``,
    fusions/fused_cross_entropy.py; the autograd engine casts the unfused one's fp32 gradient to the input's dtype).
    Both stay referenced until drain_embedding_wgrad_compute pops them at the flush (core/utils.py)."""
    e = shard.activation_bytes_per_element
    return e * logits_per_rank(model, shard), e * shard.tokens * model.hidden / shard.sp_divisor


def deferred_wgrad_peak(peak: float, in_flight: int, units: int, pp: int, virtual_stages: int, deferred: int,
                        grad_bytes: float, input_bytes: float) -> float:
    """The last stage's activations at their peak with ``deferred`` microbatches' output-layer buffers
    (``deferred_wgrad_buffer_bytes``), given its activations ``peak`` with ``in_flight`` model-chunk microbatches held
    (``in_flight_chunks``) out of ``units`` (= microbatches x virtual stages) a step runs.

    The buffers fill as the last chunk's backwards run, while the schedule keeps its in-flight set: through the 1F1B
    steady state (backward k for k <= units - in_flight) the last rank holds ``in_flight`` chunks before each
    backward, in the cool-down units - k. Megatron's interleaved order runs backwards in groups of pp microbatches
    per chunk, last chunk first, so the j-th microbatch's last-chunk backward is unit (j // pp)*pp*v + j % pp. The
    peak is the largest, over the deferring backwards, of the chunks held then (at the peak's bytes per chunk: the
    last rank's chunks are alike) plus the buffers: at the j-th one's output layer j + 1 gradients and j inputs (its
    own input is among its activations), and after the last one all of them. The drain frees them one by one after
    the last backward, when no activations are held."""
    if not deferred:
        return peak

    def held(unit: int) -> int:
        return in_flight if unit <= units - in_flight else max(units - unit, 0)

    def backward_unit(j: int) -> int:
        group, rank = divmod(j, pp)
        return min(group * pp * virtual_stages + rank, units - 1)

    per_chunk = peak / in_flight
    best = peak
    for j in range(deferred):
        best = max(best, per_chunk * held(backward_unit(j)) + (j + 1) * grad_bytes + j * input_bytes)
    return max(best, per_chunk * held(backward_unit(deferred - 1) + 1) + deferred * (grad_bytes + input_bytes))


def in_flight_chunks(schedule: str, pp: int, virtual_stages: int, microbatches: int, stage: int) -> list[int]:
    """Model chunk (0..v-1) of every microbatch whose activations pipeline rank ``stage`` holds at its peak.

    GPipe: all m microbatches. 1F1B (PipeDream-Flush, Narayanan et al. 2021): min(pp - stage, m). Interleaved
    1F1B (Megatron-LM): the warm-up forwards 2*(pp - stage - 1) + (v - 1)*pp plus one, which cycle through the
    chunks in groups of pp microbatches (chunk of the k-th forward = (k // pp) % v).
    """
    if schedule == "gpipe":
        return [c for c in range(virtual_stages) for _ in range(microbatches)]
    if virtual_stages == 1:
        return [0] * min(pp - stage, microbatches)
    units = microbatches * virtual_stages
    # with exactly pp microbatches Megatron-LM runs every forward before the first backward
    units_in_flight = units if microbatches == pp else min(2 * (pp - stage - 1) + (virtual_stages - 1) * pp + 1,
                                                             units)
    return [(k // pp) % virtual_stages for k in range(units_in_flight)]


def stage_activation_bytes(model: TransformerSpec, shard: Shard, schedule: str, pp: int,
                           virtual_stages: int, microbatches: int, stage: int,
                           layers_per_stage: list[int] | None = None, per_moe_layer: float = 0.0,
                           offload_layers: int = 0, logits_memory: str = "megatron") -> float:
    """Activations held by pipeline rank ``stage`` at its peak: all in-flight microbatches of its chunks
    (``per_moe_layer``: what one MoE layer keeps, ``moe_layer_activation_bytes``), less what activation
    offloading keeps in host memory (``offloaded_activation_bytes``), and on the last stage what the schedule keeps
    of every microbatch's output (``pipeline_output_bytes``)."""
    layers, moe = chunk_layers(model, pp, virtual_stages, layers_per_stage)
    per_layer = layer_activation_bytes(model, shard)
    chunks = in_flight_chunks(schedule, pp, virtual_stages, microbatches, stage)
    total = sum((layers[c * pp + stage] - moe[c * pp + stage]) * per_layer + moe[c * pp + stage] * per_moe_layer
                for c in chunks)
    if offload_layers:
        assert pp == 1 and virtual_stages == 1 and shard.recompute == "none", "validated in config"
        total -= len(chunks) * offloaded_activation_bytes(model, offload_layers, per_layer, per_moe_layer)
    if stage == 0:       # chunk 0 carries the embedding
        total += chunks.count(0) * embedding_activation_bytes(model, shard)
    if stage == pp - 1:  # the last chunk carries the output layer (and the MTP modules' heads and projections)
        total += chunks.count(virtual_stages - 1) * (output_activation_bytes(model, shard, logits_memory)
                                                     + mtp_activation_bytes(model, shard))
        total += pipeline_output_bytes(model, shard, logits_memory, pp, microbatches)
    return total


def mtp_activation_bytes(model: TransformerSpec, shard: Shard) -> float:
    """What the multi-token-prediction modules keep beyond their transformer layers (``workload.mtp``), per
    microbatch: per module its output head's (``output_activation_bytes``) and the eh_proj input, the two normed
    h-wide halves (a stored GEMM input, as ``layer_activation_bytes`` counts them)."""
    if not model.mtp_layers:
        return 0.0
    g = BYTES_PER_ELEMENT["fp8"] if shard.precision == "fp8" else shard.activation_bytes_per_element
    eh_input = g * 2 * shard.tokens * model.hidden / shard.sp_divisor
    return model.mtp_layers * (output_activation_bytes(model, shard) + eh_input)


def offloaded_activation_bytes(model: TransformerSpec, offload_layers: int, per_layer: float,
                               per_moe_layer: float) -> float:
    """What activation offloading takes off the GPU at the peak, per in-flight microbatch: the saved activations of
    the model's first ``offload_layers`` layers.

    Megatron-Core's CPU offloading (cpu_offloading_num_layers, through Transformer Engine's
    get_cpu_offload_context) copies each of those layers' saved tensors to pinned host memory once its forward is
    done and copies them back one layer ahead of its backward. The peak of a step comes at the start of the
    backward, when every layer's forward is done and none of its backward: the offloaded layers are then on the
    host, the last ``layers - offload_layers`` layers on the GPU. A layer brought back for its backward arrives
    after the backward has freed at least one resident layer, so the transfers add nothing to the peak (stated
    assumption: the copy engine keeps one layer ahead, no more). Megatron-Core allows offloading only with pp = 1
    and no recompute (TransformerConfig checks; config refuses the rest).
    """
    moe = sum(model.is_moe_layer(i) for i in range(offload_layers))
    return (offload_layers - moe) * per_layer + moe * per_moe_layer


def backward_working_bytes(model: TransformerSpec, shard: Shard) -> float:
    """Gradient tensors live at once inside one layer's backward, beyond the stored activations.

    The widest moment is the MLP's: the down projection's input gradient [T, ffn/t] and the activation's input
    gradient [T, up width/t] (gate and up for SwiGLU) exist together before the up projection's dgrad; weight
    gradients are accumulated straight into the gradient buffer (Megatron-LM's gradient-accumulation fusion), so
    they add nothing here. The attention backward's dQ, dK, dV and dO are smaller for every catalog model.
    """
    e = shard.activation_bytes_per_element
    ffn_local = model.ffn / shard.tp
    up_width = ffn_local * (2 if model.mlp == "swiglu" else 1)
    mlp = e * shard.tokens * (ffn_local + up_width)
    attention = e * shard.tokens * (2 * model.hidden / shard.tp + 2 * local_kv_hidden(model, shard.tp))
    return max(mlp, attention)


def workspace_bytes(model: TransformerSpec, shard: Shard, last_stage: bool = False,
                    logits_memory: str = "megatron") -> float:
    """Margin for what is alive only transiently: the fixed runtime overhead plus the largest transient set.

    Full recompute rebuilds one layer's activations before its backward: that layer's activations without
    recompute are live on top of the stored inputs. Without it (or with selective recompute, which rebuilds only
    the attention core) the transient set is one layer's backward working set (``backward_working_bytes``), and
    on the last stage the output layer's (``loss_transient_bytes``), whichever is larger.
    """
    full = Shard(seq_len=shard.seq_len, micro_batch=shard.micro_batch, tp=shard.tp, cp=shard.cp,
                 sequence_parallel=shard.sequence_parallel, attention=shard.attention, precision=shard.precision,
                 recompute="none", residual_in_fp32=shard.residual_in_fp32,
                 autocast_fp32_params=shard.autocast_fp32_params, norm_kernels=shard.norm_kernels,
                 mlp_activation=shard.mlp_activation, kv_expansion=shard.kv_expansion)
    if shard.recompute == "full":
        transient = layer_activation_bytes(model, full)
    else:
        transient = backward_working_bytes(model, shard)
        if shard.recompute == "selective":
            transient += layer_activation_bytes(model, full) - layer_activation_bytes(model, shard)
        else:   # a checkpointed dense MLP rebuilt before its backward (in the difference above with selective)
            transient += mlp_checkpoint_bytes(model, shard)
    if last_stage:
        transient = max(transient, loss_transient_bytes(model, shard, logits_memory))
    return WORKSPACE_FIXED_BYTES + transient


# ---- per GPU -----------------------------------------------------------------------------------------------

def zero3_gathered_bytes(model: TransformerSpec, tp: int, precision: str, grad_bytes: int | None,
                         root_matrices: int = 0) -> float:
    """What ZeRO-3/FSDP materialises beyond the shards: the full parameters of the unit in use and of the next
    one (prefetched), and the full gradient of one unit before it is reduce-scattered.

    The unit is one transformer layer, or the embedding or output projection where larger (FSDP wraps each
    block: Zhao et al. 2023, PyTorch FSDP, section 3.2; ZeRO-3 gathers per module: Rajbhandari et al. 2020).
    ``root_matrices``: vocab x hidden matrices of a root unit that stays gathered from its forward to the end of
    the backward (``fsdp_runtime.keeps_root``: FSDP1's root holds the tied embedding, torchtitan's FSDP2 root the
    embedding and the output projection): whole beside the two transformer layers in flight, and so is its
    unsharded gradient at the parameter dtype, made by the output projection's (or tied embedding's) backward at
    the backward's start and reduce-scattered with the root's post-backward at its end (FSDP1 ``_post_backward_hook``
    per flat parameter; FSDP2 ``FSDPParamGroup.post_backward``); the one unit being reduced is then a layer.
    """
    states = state_bytes_per_param(precision)
    layer = layer_params_per_rank(model, tp)
    embedding = math.ceil(model.vocab / tp) * model.hidden
    grad = grad_bytes or states["gradients"]
    if root_matrices:  # the root's weights and gradient, two layers in flight, one layer's gradient reduced
        return (2 * root_matrices * embedding + 2 * layer) * states["weights"] + layer * grad
    unit = max(layer, embedding)
    return 2 * unit * states["weights"] + unit * grad


def fsdp_float8_saved_bytes(scenario: Scenario, stage: int) -> float:
    """What FSDP2's float8 all-gather saves on one GPU of pipeline rank ``stage`` (``torchao_float8``): the unsharded
    float8-linear weights held at 1 byte instead of the 16-bit gather dtype, the two transformer layers in flight
    (``zero3_gathered_bytes``) without pipelining, every layer of the stage when FSDP2 keeps them gathered through
    the step (``fsdp_runtime.gathers_once_per_step``, and zero_stage 1 as the torchtitan 405B scenario models it,
    whose 16-bit weights are then float8). The embedding, norms and output layer stay 16-bit."""
    m, p, t = scenario.model, scenario.parallelism, scenario.training
    saved = state_bytes_per_param(state_precision(t))["weights"] - torchao_float8.GATHER_BYTES
    if p.zero_stage == 3 and not fsdp_runtime.gathers_once_per_step(scenario):
        return 2 * layer_gemm_weights_per_rank(m, p.tp) * saved
    return stage_gemm_weights(m, p.tp, p.pp, stage, p.ep, p.etp, p.virtual_stages, p.layers_per_stage) * saved


def fsdp_float8_backward_copy_bytes(model: TransformerSpec, tp: int) -> float:
    """The backward's transient column-major copy of a gathered float8 weight (torchao ``preprocess_addmm``:
    ``b_data.t().contiguous().t()``, made for one ``torch._scaled_mm`` and dropped after it): one weight at a time,
    the largest float8-linear weight of a layer on one rank at 1 byte an element (``torchao_float8``), live at the
    backward's widest moment (``backward_working_bytes``: the MLP's, whose up projections' dgrad takes the copy)."""
    h = model.hidden
    largest = max(h * model.q_hidden / tp, h * local_kv_hidden(model, tp), h * model.ffn / tp)
    return torchao_float8.COLUMN_MAJOR_COPY_HELD_BYTES * largest


def zero3_units(model: TransformerSpec, layers: int, first: bool, last: bool, pp: int,
                merged_root: bool = False) -> int:
    """ZeRO-3/FSDP units of a model chunk, the granularity ``zero3_gathered_bytes`` counts and the engine gathers
    at: one per transformer layer, plus the word embedding on the first chunk and the output projection on the last
    (unless tied to the embedding in the same chunk, as ``chunk_params`` counts it, or ``merged_root``: in one root
    unit with the embedding, ``fsdp_runtime.root_holds_output``)."""
    output = last and (not model.tied_embeddings or pp > 1) and not (merged_root and first)
    return max(1, layers + int(first) + int(output))


def _stage_memory(scenario: Scenario, stage: int, deferred: int = 0) -> MemoryBreakdown:
    """One pipeline rank's peak, the last one's with ``deferred`` microbatches' output-layer buffers."""
    m, p, t = scenario.model, scenario.parallelism, scenario.training
    assert 0 <= stage < p.pp, stage
    shard = shard_for(scenario)
    params = stage_params(m, p.tp, p.pp, stage, p.virtual_stages, p.layers_per_stage)
    states = state_precision(t)
    grad_bytes = gradient_bytes_per_param(scenario)
    weights, gradients, optimizer = _state_bytes(params, states, p.zero_stage, p.dp * p.cp, grad_bytes,
                                                 t.optimizer, t.adam_moments_dtype, t.master_weights)
    # the unsharded gradients ZeRO-3/FSDP holds before (or, under pipelining, across microbatches until) the
    # reduce-scatter: at the reduce dtype (FSDP2 FSDPParam.to_accumulated_grad_if_needed upcasts to reduce_dtype)
    unsharded_grad_bytes = grad_bytes if t.master_weights else BYTES_PER_ELEMENT[p.grad_reduce_dtype]
    per_moe_layer = 0.0
    # with every microbatch deferred the loss's transient 16-bit gradient is the buffers' newest entry
    # (deferred_wgrad_peak); with a limit below the microbatches the later ones still make it beside full buffers
    workspace = workspace_bytes(m, shard, last_stage=stage == p.pp - 1 and deferred < scenario.microbatches,
                                logits_memory=t.logits_memory)
    if m.moe is not None:
        # routed experts: sharded by ep (and etp); their gradients and optimizer states over the expert data-parallel
        # group (Megatron-Core's distributed optimizer shards expert parameters over expert-DP ranks)
        experts = stage_expert_params(m, p.pp, stage, p.ep, p.etp, p.virtual_stages, p.layers_per_stage)
        expert_states = _state_bytes(experts, states, p.zero_stage, scenario.expert_data_parallel, grad_bytes,
                                     t.optimizer, t.adam_moments_dtype, t.master_weights)
        weights, gradients, optimizer = (a + b for a, b in zip((weights, gradients, optimizer), expert_states,
                                                                strict=True))
        load = step_load(m, shard, p.ep, p.etp)
        per_moe_layer = moe_layer_activation_bytes(m, shard, p.ep, p.etp, load)
        # one layer's backward at a time: a rebuilt MoE layer or a rebuilt dense MLP (workspace_bytes holds the
        # latter, mlp_checkpoint_bytes), whichever is larger
        workspace += dispatch_buffer_bytes(m, shard, load) + max(
            0.0, moe_checkpoint_rebuilt_bytes(m, shard, p.ep, p.etp, load) - mlp_checkpoint_bytes(m, shard))
    activations = stage_activation_bytes(m, shard, p.schedule, p.pp, p.virtual_stages, scenario.microbatches,
                                         stage, p.layers_per_stage, per_moe_layer, t.activation_offload_layers,
                                         t.logits_memory)
    if deferred and stage == p.pp - 1:
        in_flight = len(in_flight_chunks(p.schedule, p.pp, p.virtual_stages, scenario.microbatches, stage))
        activations = deferred_wgrad_peak(activations, in_flight, scenario.microbatches * p.virtual_stages, p.pp,
                                          p.virtual_stages, deferred, *deferred_wgrad_buffer_bytes(m, shard))
    if p.zero_stage == 3 and p.dp * p.cp > 1 and fsdp_runtime.gathers_once_per_step(scenario):
        # FSDP2 under pipelining: the stage's units stay gathered through the step, their unsharded gradients
        # accumulated at the reduce dtype (FSDPParam.to_accumulated_grad_if_needed) until the last backward
        held = state_bytes_per_param(states)
        workspace += params * (held["weights"] + (unsharded_grad_bytes or held["gradients"]))
    elif p.zero_stage == 3 and p.dp * p.cp > 1:
        # the root holds what no block holds: the embedding, and the output projection where it is the root's
        # (torchtitan; llm-foundry wraps an untied lm_head as a unit of its own)
        root = 1 + int(not m.tied_embeddings and fsdp_runtime.root_holds_output(scenario)) \
            if fsdp_runtime.keeps_root(scenario) else 0
        workspace += zero3_gathered_bytes(m, p.tp, states, unsharded_grad_bytes, root)
    if torchao_float8.fsdp_float8_all_gather(t, p):   # FSDP2's float8 all-gather: the unsharded float8 weights
        if p.zero_stage == 3:   # gathered units (workspace)
            workspace -= fsdp_float8_saved_bytes(scenario, stage)
        else:                   # zero_stage 1 (FSDP2 under pipelining): the unsharded weights are the held ones
            weights -= fsdp_float8_saved_bytes(scenario, stage)
        workspace += fsdp_float8_backward_copy_bytes(m, p.tp)   # the backward's column-major copy, one weight
    if fp8_params.enabled(t) or fp8_params.mxfp8_params(t):   # GEMM weights held quantized instead of 16-bit
        fp8_weights = stage_gemm_weights(m, p.tp, p.pp, stage, p.ep, p.etp, p.virtual_stages, p.layers_per_stage)
        held = (fp8_params.MXFP8_WEIGHT_BYTES if fp8_params.mxfp8_params(t)
                else fp8_params.weight_bytes_per_param(scenario.cluster.gpu.name))
        saved = state_bytes_per_param(t.precision)["weights"] - held
        if p.zero_stage >= 3:  # sharded: dense weights over dp x cp, routed experts over their expert-DP group
            experts = stage_expert_params(m, p.pp, stage, p.ep, p.etp, p.virtual_stages, p.layers_per_stage)
            weights -= (fp8_weights - experts) * saved / (p.dp * p.cp) + experts * saved / scenario.expert_data_parallel
        else:
            weights -= fp8_weights * saved
    elif t.precision == "fp8":   # Transformer Engine's cached fp8 copies of the 16-bit weights (ZeRO 3 without fp8
        # parameters, which drops them, is refused: spec.config ``_check_precision_options``)
        workspace += stage_gemm_weights(m, p.tp, p.pp, stage, p.ep, p.etp, p.virtual_stages, p.layers_per_stage) \
            * fp8_params.weight_workspace_bytes_per_param(t.fp8_recipe, scenario.cluster.gpu.name)
    return MemoryBreakdown(weights, gradients, optimizer, activations, workspace, stage)


def per_gpu_memory(scenario: Scenario, stage: int | None = None) -> MemoryBreakdown:
    """Peak bytes on one GPU of pipeline rank ``stage``; None gives the stage with the largest total."""
    deferred = deferred_output_wgrads(scenario)
    if stage is not None:
        return _stage_memory(scenario, stage, deferred)
    stages = (_stage_memory(scenario, s, deferred) for s in range(scenario.parallelism.pp))
    return max(stages, key=lambda b: b.total_bytes)


def check_fits(scenario: Scenario) -> MemoryBreakdown:
    """The worst stage's breakdown, or OutOfMemoryError naming the layout and the breakdown."""
    worst = per_gpu_memory(scenario)
    gpu = scenario.cluster.gpu
    if worst.total_bytes > gpu.hbm_capacity:
        p, t = scenario.parallelism, scenario.training
        layout = (f"tp={p.tp} pp={p.pp} dp={p.dp} cp={p.cp} zero_stage={p.zero_stage} "
                  f"micro_batch_size={t.micro_batch_size} activation_recompute={t.activation_recompute}")
        capacity = (f"{units.fmt(gpu.hbm_capacity, units.BYTES, binary=False)} = "
                    f"{units.fmt(gpu.hbm_capacity, units.BYTES)}")
        deferred = deferred_output_wgrads(scenario) if worst.stage == p.pp - 1 else 0
        hint = (f" (its activations hold {deferred} microbatches' deferred output-layer wgrad buffers: a lower "
                f"wgrad_deferral_limit or defer_embedding_wgrad: false frees them)" if deferred else "")
        raise OutOfMemoryError("parallelism", (
            f"{scenario.model.name} does not fit on {gpu.name} ({capacity} HBM) "
            f"with {layout}: pipeline stage {worst.stage} needs {worst.describe()}{hint}; "
            f"use more tp/pp, a higher zero_stage or activation_recompute"))
    return worst
