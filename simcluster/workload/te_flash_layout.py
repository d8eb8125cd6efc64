"""The layout copies Transformer Engine's FlashAttention backend runs around the flash-attn kernel (round 27).

Megatron-Core hands Transformer Engine's ``DotProductAttention`` its queries, keys and values as [s, b, h, d] views
into the QKV GEMM's output (``qkv_format`` sbhd); the flash-attn package takes [b, s, h, d]. TE's ``FlashAttention``
backend converts before the kernel and back after it (``transformer_engine/pytorch/attention.py``, ``FlashAttention.
forward``, the same code in every TE 1.x read: the CP-era 1.x file and NVIDIA/TransformerEngine @ 001b736):

- forward, in: for the interleaved layout Megatron-Core's multi-head attention produces (``sbh3d``: q, k, v of one
  head adjacent) at head dim 128 and s x b >= 512, one kernel, ``_PrepareQKVForFA`` (``tex.fa_prepare_fwd``: reads
  the interleaved q, k, v, writes them as [3, b, s, h, d]); otherwise ``x.transpose(0, 1).contiguous()`` per tensor,
  a copy each (the views are not contiguous);
- forward, out: ``output.view(b, s, -1).transpose(0, 1).contiguous()``: a copy when b > 1 (at b = 1 the transposed
  view is already contiguous, a size-1 dimension's stride does not count, and no kernel runs);
- backward: the output gradient back through that view (autograd's reshape: a copy when b > 1), and for the
  ``_PrepareQKVForFA`` path its backward (``tex.fa_prepare_bwd(dq, dk, dv)``, one kernel writing the interleaved
  gradient); on the transpose path the gradients stay views and Megatron-Core's split backward (a concatenation every
  attention backend runs, not charged on any) reads them as they are.

Each copy reads and writes its elements once. TE takes this backend on Ampere; on Hopper it gives cuDNN's fused
attention the preference ("Disabling FlashAttention to give FusedAttention preference on Hopper+"), which reads sbhd
strides directly, so nothing here runs there. Which GPUs run the flash kernel as FlashAttention-2 is the data file's
list (``efficiency.yaml attention.flash2_head_dim_tiles.flash_gpus``). Runs through Megatron-Core only
(``Scenario.megatron_core``): flash-attention's own GPT and llm-foundry hand the kernel [b, s, h, d].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simcluster.core import catalog

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario
    from simcluster.spec.model import TransformerSpec

# _PrepareQKVForFA's conditions (TE FlashAttention.forward): head dim 128 and at least 512 rows of s x b
PREPARE_HEAD_DIM = 128
PREPARE_MIN_ROWS = 512
OP_NAME = "te_flash_layout"
Kernel = tuple[str, float, float]


def runs(scenario: Scenario) -> bool:
    """Whether the run's attention goes through TE's FlashAttention backend with Megatron-Core's sbhd tensors:
    Megatron-Core, ``attention: flash`` and a GPU whose flash kernel is FlashAttention-2 (Ampere)."""
    flash_gpus = catalog.load("efficiency")["attention"]["flash2_head_dim_tiles"]["flash_gpus"]
    return (scenario.megatron_core and scenario.training.attention == "flash"
            and scenario.cluster.gpu.name in flash_gpus)


def kernels(model: TransformerSpec, micro_batch: int, s_local: int, heads: int,
            kv_heads: int, e: int) -> tuple[list[Kernel], list[Kernel], list[Kernel], list[Kernel]]:
    """Copy kernels of one rank's attention, each (name, FLOP, HBM bytes): before and after the flash kernel
    forward, then before and after it backward. ``heads`` query and ``kv_heads`` key/value heads of ``model.d_head``
    on the rank, ``s_local`` of its tokens a sequence, ``e`` bytes an element."""
    d, rows = model.d_head, micro_batch * s_local
    q = rows * heads * d * e
    kv = rows * kv_heads * d * e
    prepare = heads == kv_heads and d == PREPARE_HEAD_DIM and rows >= PREPARE_MIN_ROWS
    forward_in = [(OP_NAME, 0.0, 2 * (q + 2 * kv))] if prepare else [(OP_NAME, 0.0, 2 * size) for size in (q, kv, kv)]
    backward_out = [(OP_NAME, 0.0, 2 * (q + 2 * kv))] if prepare else []
    # the output's transpose back to sbhd and its gradient's: copies only when b > 1
    out = [(OP_NAME, 0.0, 2 * q)] if micro_batch > 1 else []
    return forward_in, out, list(out), backward_out
