"""The layout copies around the flash-attn kernel when Transformer Engine's FlashAttention backend runs under
Megatron-Core (round 27; the layout Megatron-Core hands over corrected in the round-27 review).

The flash-attn package takes [b, s, h, d]; Megatron-Core's queries, keys and values are [s, b, h, d] views into the
QKV GEMM's output. Who converts depends on the ``qkv_format`` Megatron-Core passes:

- ``bshd`` (``MCORE_QKV_FORMAT``): Megatron-Core's ``TEDotProductAttention.forward`` sets ``self.qkv_format = 'bshd'``
  whenever ``config.apply_rope_fusion`` is on and converts itself, ``x.transpose(0, 1).contiguous()`` for each of q, k
  and v (three copies; the views are not contiguous, at b = 1 either), then returns the output as
  ``core_attn_out.transpose(0, 1)`` (NVIDIA/Megatron-LM
  ``megatron/core/transformer/custom_layers/transformer_engine.py``, the 2024 file of the ``_te_version`` era, and
  ``megatron/core/extensions/transformer_engine.py``, "WAR for peak memory usage": the same override).
  ``apply_rope_fusion`` is Megatron-LM's default (``--no-rope-fusion`` is ``store_false``) and nothing clears it for
  learned positions in the vocabpar fork's ``validate_args`` (arguments.py @ 4dca7d2: no ``position_embedding_type !=
  'rope'`` reset), so the Megatron-Core runs this module reaches take this path. TE's FlashAttention then finds
  bshd tensors already contiguous and copies nothing. Backward, the three gradients come back as transposed views
  into Megatron-Core's split backward (a concatenation every backend runs, charged on none): no copy kernel.
- ``sbhd`` (``--no-rope-fusion``): TE converts (``transformer_engine/pytorch/attention.py`` ``FlashAttention.forward``,
  TE 1.x): for Megatron-Core's interleaved multi-head layout (``sbh3d``) at head dim 128 and s x b >= 512, one
  ``_PrepareQKVForFA`` kernel (``tex.fa_prepare_fwd``, backward ``tex.fa_prepare_bwd`` writing the interleaved
  gradient), otherwise ``transpose(0, 1).contiguous()`` per tensor with nothing backward.

Either way, with micro batch b > 1 the [b, s] output is copied back to [s, b] once (TE's
``output.view(b, s, -1).transpose(0, 1).contiguous()`` for sbhd; Megatron-Core's transposed view made contiguous by the
output projection for bshd) and its gradient once backward; at b = 1 the transposed view is already contiguous (a
size-1 dimension's stride does not count) and no kernel runs. Each copy reads and writes its elements once.

TE takes this backend on Ampere; on Hopper it gives cuDNN's fused attention the preference ("Disabling FlashAttention
to give FusedAttention preference on Hopper+"), which reads sbhd strides directly, so nothing here runs there. Which
GPUs run the flash kernel as FlashAttention-2 is the data file's list (``efficiency.yaml
attention.flash2_head_dim_tiles.flash_gpus``). Runs through Megatron-Core only (``Scenario.megatron_core``):
flash-attention's own GPT and llm-foundry hand the kernel [b, s, h, d].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simcluster.core import catalog

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario
    from simcluster.spec.model import TransformerSpec

# _PrepareQKVForFA's conditions (TE FlashAttention.forward, sbhd only): head dim 128 and at least 512 rows of s x b
PREPARE_HEAD_DIM = 128
PREPARE_MIN_ROWS = 512
# what Megatron-Core's TEDotProductAttention passes TE with apply_rope_fusion on (Megatron-LM's default; module doc)
MCORE_QKV_FORMAT = "bshd"
QKV_FORMATS = ("sbhd", "bshd")
OP_NAME = "te_flash_layout"
Kernel = tuple[str, float, float]


def runs(scenario: Scenario) -> bool:
    """Whether the run's attention goes through TE's FlashAttention backend with Megatron-Core's tensors:
    Megatron-Core, ``attention: flash`` and a GPU whose flash kernel is FlashAttention-2 (Ampere)."""
    flash_gpus = catalog.load("efficiency")["attention"]["flash2_head_dim_tiles"]["flash_gpus"]
    return (scenario.megatron_core and scenario.training.attention == "flash"
            and scenario.cluster.gpu.name in flash_gpus)


def kernels(model: TransformerSpec, micro_batch: int, s_local: int, heads: int, kv_heads: int, e: int,
            qkv_format: str = MCORE_QKV_FORMAT) -> tuple[list[Kernel], list[Kernel], list[Kernel], list[Kernel]]:
    """Copy kernels of one rank's attention, each (name, FLOP, HBM bytes): before and after the flash kernel
    forward, then before and after it backward. ``heads`` query and ``kv_heads`` key/value heads of ``model.d_head``
    on the rank, ``s_local`` of its tokens a sequence, ``e`` bytes an element, ``qkv_format`` what Megatron-Core
    hands TE (module doc)."""
    if qkv_format not in QKV_FORMATS:
        raise ValueError(f"qkv_format: {qkv_format!r} is not one of {', '.join(QKV_FORMATS)}")
    d, rows = model.d_head, micro_batch * s_local
    q = rows * heads * d * e
    kv = rows * kv_heads * d * e
    prepare = (qkv_format == "sbhd" and heads == kv_heads and d == PREPARE_HEAD_DIM and rows >= PREPARE_MIN_ROWS)
    forward_in = [(OP_NAME, 0.0, 2 * (q + 2 * kv))] if prepare else [(OP_NAME, 0.0, 2 * size) for size in (q, kv, kv)]
    backward_out = [(OP_NAME, 0.0, 2 * (q + 2 * kv))] if prepare else []
    # the output's transpose back to sbhd and its gradient's: copies only when b > 1
    out = [(OP_NAME, 0.0, 2 * q)] if micro_batch > 1 else []
    return forward_in, out, list(out), backward_out
