"""The q/k/v layout copies around Transformer Engine's attention under Megatron-Core (round 27; made Megatron-Core's
own, release by release, in "Round 27: Megatron-Core's own q/k/v layout copies under rope fusion, release by release").

Megatron-Core's queries, keys and values are [s, b, h, d]: q and k come out of the rotary kernel (rope models), v (and
q, k without rotary positions) is a view into the QKV GEMM's output (``SplitAlongDim`` / ``torch.split``), q made
contiguous by ``reshape`` when the rank holds several key/value groups of several query heads each. Who converts:

- ``bshd`` (``MCORE_QKV_FORMAT``): with ``apply_rope_fusion`` on (``training.rope_fusion``), Megatron-Core 0.5-0.13's
  ``TEDotProductAttention.forward`` sets ``self.qkv_format = 'bshd'`` and runs ``x.transpose(0, 1).contiguous()`` on q,
  k and v itself, then returns ``core_attn_out.transpose(0, 1)`` (data/mcore_versions.yaml ``mcore_bshd_copies``,
  [wheel-rope]; 0.14 on has neither). It runs whatever the positions and on every GPU and backend (TE then finds
  bshd tensors already contiguous and copies nothing). ``.contiguous()`` copies only a tensor that is not already
  [b, s, h, d] in memory: Apex's RoPE (0.5-0.12, ``transpose_output_memory=True``) writes q and k in bshd memory (no
  copy); TE's RoPE (0.13, ``te_rope``) writes contiguous sbhd, whose transpose is contiguous at b = 1 (a size-1
  dimension's stride does not count); the reshaped q likewise; a view into the QKV output never is. Backward, the
  gradients come back as transposed views into Megatron-Core's split backward or the RoPE backward (which reads
  strides): no transpose copy (the split's own concatenation is below).
- ``sbhd`` (rope fusion off, or Megatron-Core 0.14 on), and only in TE's FlashAttention backend, which takes this
  path on Ampere (TE: "Disabling FlashAttention to give FusedAttention preference on Hopper+"; cuDNN's fused attention
  reads sbhd strides directly): TE 1.x ``FlashAttention.forward`` (``transformer_engine/pytorch/attention.py``) runs,
  for Megatron-Core's interleaved multi-head layout (``sbh3d``: no RoPE has split it) at head dim 128 and s x b >=
  512, one ``_PrepareQKVForFA`` kernel (``tex.fa_prepare_fwd``, backward ``tex.fa_prepare_bwd``), otherwise
  ``transpose(0, 1).contiguous()`` per tensor (a contiguous one not copied at b = 1, as above) with nothing backward.
  Which GPUs run the flash kernel as FlashAttention-2 is the data file's list (``efficiency.yaml
  attention.flash2_head_dim_tiles.flash_gpus``).

Either way, with micro batch b > 1 the [b, s] output is copied back to [s, b] once (TE's
``output.view(b, s, -1).transpose(0, 1).contiguous()`` for sbhd; Megatron-Core's transposed view made contiguous by the
output projection for bshd) and its gradient once backward. Each copy reads and writes its elements once. Runs
through Megatron-Core's TE attention only (``Scenario.megatron_core``, attention flash / flash2): flash-attention's
own GPT and llm-foundry hand the kernel [b, s, h, d]. Multi-latent attention (its q and k concatenations) is not
modelled here.

The QKV split's backward (round 32, ``split_backward_copies``). Megatron-Core 0.5 on splits the [s, b, ng, (np/ng + 2)
hn] QKV output by TE's ``SplitAlongDim`` (``torch.split`` without TE; megatron/core/transformer/attention.py
``get_query_key_value_tensors``). ``_SplitAlongDim.backward`` (TE 1.x and 2.x) returns a view of the gradients only
when they are views of one storage with the first one's strides at offsets 0, np/ng hn, (np/ng + 1) hn; otherwise
``torch.cat``: one kernel reading dq, dk, dv and writing the [s, b, (np + 2 ng) hn] gradient (``split_concat``).
They arrive so only for the interleaved multi-head QKV handed to TE untouched (``gradients_packed``): TE's
``fused_attn_bwd`` allocates one dQKV for the sbh3d layout and returns dq, dk, dv as its slices, and
``_PrepareQKVForFA.backward`` writes one dqkv (``tex.fa_prepare_bwd``) and splits it. Every other path allocates
apart: the RoPE backward a fresh tensor (TE ``fused_rope_backward``: ``at::empty``; the eager
rotation's arithmetic), the GQA query's reshape (dQ apart from dKV, TE's ``sbhd_sbh2d`` / ``HD_H2D`` group), q/k norms,
Megatron-Core's bshd copies (TE sees three separate tensors) and flash-attn (``torch.empty_like`` each). It runs once
a layer and microbatch in the backward, outside TEDotProductAttention (not recomputed). Not modelled: Megatron-Core's
opt-in ``fused_single_qkv_rope`` (TE's ``fused_qkv_rope`` writes one dQKV), and context parallelism's
attention backward, read as cuDNN's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simcluster.core import catalog
from simcluster.spec import config

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario
    from simcluster.spec.model import TransformerSpec

# _PrepareQKVForFA's conditions (TE FlashAttention.forward, sbhd only): head dim 128 and at least 512 rows of s x b
PREPARE_HEAD_DIM = 128
PREPARE_MIN_ROWS = 512
# what Megatron-Core's TEDotProductAttention passes TE with apply_rope_fusion on, 0.5-0.13 (module doc)
MCORE_QKV_FORMAT = "bshd"
QKV_FORMATS = ("sbhd", "bshd")
# how the rotated q and k leave the RoPE kernel: Apex's bshd memory, TE's contiguous sbhd, or no RoPE (module doc)
ROPE_OUTPUTS = ("apex", "te", "none")
TE_ATTENTION = ("flash", "flash2")  # the attention settings that run TE's DotProductAttention under Megatron-Core
OP_NAME = "te_flash_layout"
SPLIT_OP_NAME = "qkv_split_backward"   # the split's backward concatenation (split_concat)
Kernel = tuple[str, float, float]


def te_attention(scenario: Scenario) -> bool:
    """Whether the run's attention is Megatron-Core's TEDotProductAttention over a fused QKV split (``attention``
    flash / flash2 on Megatron-Core; multi-latent attention not modelled here)."""
    return (scenario.megatron_core and scenario.training.attention in TE_ATTENTION
            and scenario.model.mla is None)


def layout(scenario: Scenario) -> tuple[str, str] | None:
    """What this run's attention copies by: (``qkv_format`` handed to TE, how the RoPE kernel leaves q and k), or
    None where nothing is copied. bshd where Megatron-Core's release overrides the format under rope fusion
    (``mcore_bshd_copies``), on any GPU; sbhd where TE's FlashAttention backend converts (``attention: flash`` on a
    FlashAttention-2 GPU, the override off)."""
    t, m = scenario.training, scenario.model
    if not te_attention(scenario):
        return None
    data = catalog.load("mcore_versions")
    rope = "none" if m.position != "rope" else (
        "te" if config.mcore_release(t.mcore_version) >= config.mcore_release(data["te_rope"]) else "apex")
    if t.rope_fusion and config.release_in(t.mcore_version, "mcore_bshd_copies"):
        return MCORE_QKV_FORMAT, rope
    flash_gpus = catalog.load("efficiency")["attention"]["flash2_head_dim_tiles"]["flash_gpus"]
    if t.attention == "flash" and scenario.cluster.gpu.name in flash_gpus:
        return "sbhd", rope
    return None


def runs(scenario: Scenario) -> bool:
    """Whether the run's attention runs layout copies at all (``layout``)."""
    return layout(scenario) is not None


def _transposed_copies(rows_per_sequence: int, micro_batch: int, contiguous_sbhd: bool) -> bool:
    """Whether ``x.transpose(0, 1).contiguous()`` copies an [s, b, h, d] tensor: always for a strided view, for a
    contiguous one only when both s and b exceed 1 (a size-1 dimension's stride does not count)."""
    return not contiguous_sbhd or (micro_batch > 1 and rows_per_sequence > 1)


def _prepares(qkv_format: str, interleaved: bool, d_head: int, rows: int) -> bool:
    """Whether TE's FlashAttention backend converts by ``_PrepareQKVForFA`` (sbhd, Megatron-Core's interleaved
    multi-head QKV, head dim 128, s x b >= 512: module doc)."""
    return qkv_format == "sbhd" and interleaved and d_head == PREPARE_HEAD_DIM and rows >= PREPARE_MIN_ROWS


def kernels(model: TransformerSpec, micro_batch: int, s_local: int, heads: int, kv_heads: int, e: int,
            qkv_format: str = MCORE_QKV_FORMAT, rope_output: str = "none",
            ) -> tuple[list[Kernel], list[Kernel], list[Kernel], list[Kernel]]:
    """Copy kernels of one rank's attention, each (name, FLOP, HBM bytes): before and after the attention kernel
    forward, then before and after it backward. ``heads`` query and ``kv_heads`` key/value heads of ``model.d_head``
    on the rank, ``s_local`` of its tokens a sequence, ``e`` bytes an element, ``qkv_format`` what Megatron-Core
    hands TE, ``rope_output`` how the RoPE kernel leaves q and k (module doc)."""
    if qkv_format not in QKV_FORMATS:
        raise ValueError(f"qkv_format: {qkv_format!r} is not one of {', '.join(QKV_FORMATS)}")
    if rope_output not in ROPE_OUTPUTS:
        raise ValueError(f"rope_output: {rope_output!r} is not one of {', '.join(ROPE_OUTPUTS)}")
    d, rows = model.d_head, micro_batch * s_local
    q = rows * heads * d * e
    kv = rows * kv_heads * d * e
    # the output's transpose back to sbhd and its gradient's: copies only when b > 1
    out = [(OP_NAME, 0.0, 2 * q)] if micro_batch > 1 else []
    # q and k as TE or Megatron-Core find them: a RoPE kernel's output (contiguous sbhd; Apex's under bshd already
    # bshd in memory), the reshape of a GQA rank's query groups (several groups of several heads: contiguous sbhd),
    # else views into the QKV output, as v always is
    q_reshaped = kv_heads > 1 and heads > kv_heads
    rotated = rope_output != "none"
    interleaved = not rotated and heads == kv_heads
    if _prepares(qkv_format, interleaved, d, rows):
        # Megatron-Core's interleaved multi-head QKV (sbh3d): TE's _PrepareQKVForFA, one kernel each way
        return [(OP_NAME, 0.0, 2 * (q + 2 * kv))], out, list(out), [(OP_NAME, 0.0, 2 * (q + 2 * kv))]
    in_bshd = qkv_format == "bshd" and rope_output == "apex"
    tensors = ((q, rotated or q_reshaped, in_bshd), (kv, rotated, in_bshd), (kv, False, False))
    copied = [size for size, contiguous_sbhd, already_bshd in tensors
              if not already_bshd and _transposed_copies(s_local, micro_batch, contiguous_sbhd)]
    return [(OP_NAME, 0.0, 2 * size) for size in copied], out, list(out), []


def gradients_packed(qkv_format: str | None, rotated: bool, heads: int, kv_heads: int, d_head: int, rows: int,
                     qk_norm: bool = False) -> bool:
    """Whether dq, dk and dv reach the QKV split's backward as adjacent views of one [s, b, h, 3, d] buffer, which
    TE's ``_SplitAlongDim.backward`` returns as a view (no copy): only for Megatron-Core's interleaved multi-head
    QKV (``heads == kv_heads`` on the rank, no RoPE, no q/k norm: nothing between the split and TE allocates a
    gradient of its own) that TE takes as ``sbh3d``, by cuDNN's fused attention (``qkv_format`` None: TE reads
    Megatron-Core's sbhd strides, its ``fused_attn_bwd`` allocates one dQKV for the 3HD / H3D layout groups) or by
    ``_PrepareQKVForFA`` (whose backward ``tex.fa_prepare_bwd`` writes one dqkv, split into views). Every other path
    hands the split separate buffers (module doc)."""
    if rotated or qk_norm or heads != kv_heads:
        return False
    return qkv_format is None or _prepares(qkv_format, True, d_head, rows)


def split_backward_copies(scenario: Scenario) -> bool:
    """Whether the QKV split's backward concatenates dq, dk and dv by a copy kernel (``gradients_packed`` not)."""
    if not te_attention(scenario):
        return False
    m, t, p = scenario.model, scenario.training, scenario.parallelism
    fmt = layout(scenario)
    kv_heads = -(-m.n_kv_heads // p.tp)   # replicated when fewer than the ranks (ops.local_kv_hidden)
    return not gradients_packed(fmt[0] if fmt else None, m.position == "rope", m.heads // p.tp, kv_heads,
                                m.d_head, t.micro_batch_size * t.seq_len // p.cp, m.qk_layernorm)


def split_concat(tokens: float, q_width: int, kv_width: int, e: int) -> Kernel:
    """The QKV split's backward copy of one rank and microbatch: dq ([tokens, q_width]), dk and dv ([tokens,
    kv_width] each) read and the [tokens, q_width + 2 kv_width] QKV gradient written, ``e`` bytes an element."""
    return SPLIT_OP_NAME, 0.0, 2 * tokens * (q_width + 2 * kv_width) * e
