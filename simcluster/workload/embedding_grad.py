"""The word embedding's dense weight gradient: PyTorch writes the whole table gradient every microbatch.

Every PyTorch stack in the catalog looks the tokens up with ``F.embedding(..., sparse=False)`` (Megatron's
``VocabParallelEmbedding`` on its vocabulary slice, torchtitan's and llm-foundry's ``nn.Embedding``). Its backward,
``embedding_dense_backward`` (aten/src/ATen/native/cuda/Embedding.cu ``embedding_dense_backward_cuda`` up to 3,072
indices, EmbeddingBackwardKernel.cu ``embedding_backward_cuda_kernel`` beyond), starts from
``at::zeros({num_weights, grad.size(-1)})``: the whole [vocab/tp, hidden] gradient is written with zeros (one fill
kernel) before the used rows are index-added (``ops.embedding_ops``' scatter-add, which touches the tokens' rows
only). The gradient has the weight's dtype: the 16-bit parameters' (Megatron's Float16Module, FSDP's param_dtype),
fp32 where the parameters stay fp32 (``autocast_fp32_params``: autocast leaves ``embedding`` in the weight's dtype).

That dense ``.grad`` is then added to the main gradient as a whole tensor. Megatron-Core's gradient-accumulation
fusion is a property of the wgrad GEMM (Transformer Engine's ``fuse_wgrad_accumulation``, Megatron's
``LinearWithGradAccumulationAndAsyncCommunication``); the embedding is no GEMM, so its hook runs
``param.main_grad.add_(param.grad.data)`` over the whole table (megatron/core/distributed/distributed_data_parallel.py
``_make_backward_post_hook``) every microbatch. On the other stacks the add is autograd's ``AccumulateGrad`` or the
stack's own (``grad_accumulation.charged_share`` says which microbatches pay it: the same rule as the layers').

Both are HBM-bound kernels over the table, priced like every other memory op (``kernels.ops_time_s``); no constant
of their own. Per microbatch and embedding lookup: zero fill ``V/tp x h x g`` bytes (g the gradient's width) and
the add ``V/tp x h x grad_accumulation.charged_bytes_per_param``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from simcluster.workload import autocast_params, grad_accumulation

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario

ZERO_OP = "embedding_grad_zero"              # at::zeros of the table gradient
ACCUMULATE_OP = "embedding_grad_accumulate"  # the dense .grad added to the main gradient


def table_params(vocab: int, hidden: int, tp: int) -> float:
    """Parameters of one rank's vocabulary slice (Megatron pads the vocabulary to a multiple of tp: ceil)."""
    return float(math.ceil(vocab / tp) * hidden)


def grad_bytes_per_element(activation_bytes: int, autocast_fp32_params: bool) -> int:
    """Width of the table gradient ``at::zeros`` writes: the weight's dtype."""
    return autocast_params.NEW_GRAD_BYTES if autocast_fp32_params else activation_bytes


def accumulation_bytes_per_param(scenario: Scenario) -> float:
    """Bytes per table parameter and microbatch of the main-gradient add: never fused (no GEMM), so the layers'
    separate-accumulation charge (``grad_accumulation.charged_bytes_per_param`` with ``fused=False``)."""
    return grad_accumulation.charged_bytes_per_param(scenario, fused=False)


def kernels(params: float, grad_bytes: int, accumulation_bytes: float) -> list[tuple[str, float, float]]:
    """(name, flop, HBM bytes) of the dense-gradient kernels of one embedding lookup's backward over ``params``
    table parameters: the zero fill, then the add into the main gradient where the stack charges one."""
    out = [(ZERO_OP, 0.0, params * grad_bytes)]
    if accumulation_bytes:
        out.append((ACCUMULATE_OP, params, params * accumulation_bytes))
    return out
