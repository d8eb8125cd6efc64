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

A tied table used twice on one stage (``tied_embeddings`` at pp 1: the lookup and the output layer's GEMM share the
weight) reaches ``AccumulateGrad`` as the sum of two dense [V/tp, h] gradients where the output layer's wgrad GEMM
writes a fresh gradient (no fused accumulation: ``ops.main_grad_bytes`` 0): autograd's input buffer adds them
(torch/csrc/autograd/input_buffer.cpp ``InputBuffer::add``, in place: read two, write one, 3 x g bytes) before the
stack's single add into the main gradient, which therefore stays one. With the fused accumulation the GEMM adds into
``main_grad`` itself and the gradient it hands autograd depends on the release: Megatron-LM 2022's
``LinearWithGradAccumulationAndAsyncCommunication`` returns None (nothing to sum: the catalog's one such row,
korthikanti2022-22b), while Megatron-Core's later releases return a dummy, ``torch.zeros`` of the table at pp 1
(``setup_embeddings_and_output_layer`` sets ``zero_out_wgrad``, language_module.py), which autograd sums too (a 2-byte
fill and the 3 x g sum); the release that brought it is not pinned here, so nothing is charged there (docs/
calibration/round-25.md, "Round 25: review of the dense embedding gradient"). With pp > 1 the last stage's copy has no
lookup (its dummy is ``torch.empty``, no kernel): nothing of this there.

Megatron pads the vocabulary to a multiple of ``make_vocab_size_divisible_by`` x tp (128 x tp by default); the
catalog's models state the unpadded vocabulary and every vocabulary-sized op takes ``ceil(V/tp)`` rows (also the
output layer's, ``engine.data_parallel``), so the table here does the same (GPT-3's 50,257 at tp 8: 6,283 rows a
rank against Megatron's 6,400, 1.8% fewer). Padding every vocabulary op moves no bundled row's step by more than
0.02% (docs/calibration/round-26.md, "Round 26: Megatron-Core's vocabulary padding, interleaved parameter gathers and
gradient zeroing"), so it is left out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from simcluster.workload import autocast_params, fp32_embedding_grads, grad_accumulation

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario

ZERO_OP = "embedding_grad_zero"              # at::zeros of the table gradient
ACCUMULATE_OP = "embedding_grad_accumulate"  # the dense .grad added to the main gradient
TIED_SUM_OP = "embedding_grad_tied_sum"      # autograd's sum of the lookup's and the output layer's gradient


def table_params(vocab: int, hidden: int, tp: int) -> float:
    """Parameters of one rank's vocabulary slice, ``ceil(V/tp)`` rows (the catalog's convention; module docstring)."""
    return float(math.ceil(vocab / tp) * hidden)


def grad_bytes_per_element(activation_bytes: int, autocast_fp32_params: bool) -> int:
    """Width of the table gradient ``at::zeros`` writes: the weight's dtype."""
    return autocast_params.NEW_GRAD_BYTES if autocast_fp32_params else activation_bytes


def accumulation_bytes_per_param(scenario: Scenario) -> float:
    """Bytes per table parameter and microbatch of the main-gradient add: never fused (no GEMM), so the layers'
    separate-accumulation charge (``grad_accumulation.charged_bytes_per_param`` with ``fused=False``); into an fp32
    buffer where NeMo keeps the word embedding's gradient in fp32 under Apex's distributed Adam
    (``fp32_embedding_grads``: Apex's ``_grad_copy`` adds the 16-bit ``.grad`` into the fp32 bucket, 2 + 2 x 4)."""
    if fp32_embedding_grads.applies(scenario):
        return (grad_accumulation.charged_share(scenario, fused=False)
                * grad_accumulation.bytes_per_param(False, fp32_embedding_grads.GRAD_DTYPE))
    return grad_accumulation.charged_bytes_per_param(scenario, fused=False)


def sums_tied_gradients(tied_embeddings: bool, pp: int, fused_main_grad: bool) -> bool:
    """Whether autograd sums the lookup's and the output layer's dense gradients of one tied table: both on the
    lookup's stage (pp 1) and the output layer's wgrad a fresh gradient (no fused accumulation; module docstring)."""
    return tied_embeddings and pp == 1 and not fused_main_grad


def kernels(params: float, grad_bytes: int, accumulation_bytes: float,
            tied_sum: bool = False) -> list[tuple[str, float, float]]:
    """(name, flop, HBM bytes) of the dense-gradient kernels of one embedding lookup's backward over ``params``
    table parameters: the zero fill; with ``tied_sum`` (``sums_tied_gradients``) autograd's sum of the lookup's and
    the output layer's gradients; then the add into the main gradient where the stack charges one."""
    out = [(ZERO_OP, 0.0, params * grad_bytes)]
    if tied_sum:
        out.append((TIED_SUM_OP, params, params * 3 * grad_bytes))
    if accumulation_bytes:
        out.append((ACCUMULATE_OP, params, params * accumulation_bytes))
    return out
