"""GQA's key/value heads expanded to the query heads before ``F.scaled_dot_product_attention``
(``training.kv_expansion: copy``), as PyTorch-native Llama code does it for an SDPA that took no GQA:

- torchtitan ``repeat_kv`` (torchtitan/models/llama/model.py, stored @ 0199cbc1, id 17296010470):
  ``torch.unsqueeze(x, dim=3).expand(bs, slen, n_kv_heads, n_rep, head_dim).reshape(bs, slen, n_kv_heads * n_rep,
  head_dim)``; the reshape of the stride-0 expanded tensor cannot be a view, so it copies;
- foundation-model-stack ``MultiHeadAttention.forward`` (fms/modules/attention.py, id 16576323111, "Expand kv so
  black-box attn will work"): ``keys.unsqueeze(2).expand(-1, -1, expansion, -1, -1).flatten(1, 2)``, the same copy;
- KempnerForge ``Attention.forward`` (kempnerforge/model/attention.py, id 70572040109):
  ``k.repeat_interleave(self.n_rep, dim=1)``, whose int-repeats overload is ``unsqueeze``, ``expand``,
  ``clone(at::MemoryFormat::Contiguous)`` and ``flatten`` (aten/src/ATen/native/Repeat.cpp, id 55017506).

Per layer, microbatch and rank, for keys and for values each: the forward copy reads the small tensor (tokens x
local kv width) and writes the expanded one (tokens x local query heads x head_dim); its backward, expand's
``sum_to_size``, is a reduction over the repeated heads that reads the expanded gradient, writes the small one and
adds (expanded - small) elements. One HBM-bound kernel each, timed by the elementwise roofline like every memory op.
With torch.compile the copy stays: Inductor runs the flash SDPA as a fallback kernel whose inputs it realises in a
dense layout (torch/_inductor/lowering.py ``sdpa_constraint``, id 4466803), so the expanded tensor is written to
HBM; Inductor may fuse the keys' copy into the RoPE kernel before it (one launch and the small read fewer), which
simcluster, counting its own elementwise passes on compiled rows, does not model.

Memory: SDPA saves the expanded keys and values for its backward where it would save the small ones (the copy and
the expand save nothing): ``saved_extra_elements`` more a layer, kept without recompute, live for the layer being
rebuilt under full recompute.
"""

from __future__ import annotations

Kernel = tuple[str, float, float]   # (name, FLOP, HBM bytes): a memory op for ops.layer_ops

COPY = "copy"
TENSORS = ("key", "value")


def kernels(tokens: float, heads_local: int, kv_heads_local: int, d_head: int, e: int
            ) -> tuple[list[Kernel], list[Kernel]]:
    """(forward, backward) kernels of one layer's key and value expansion on a rank: ``tokens`` (micro_batch x local
    sequence), ``heads_local`` query heads and ``kv_heads_local`` key/value heads of ``d_head``, activations of ``e``
    bytes. Empty where there is nothing to expand (multi-head attention: torchtitan's ``if n_rep == 1: return x``)."""
    if kv_heads_local >= heads_local:
        return [], []
    small, expanded = tokens * kv_heads_local * d_head, tokens * heads_local * d_head
    forward = [(f"kv_expand_{name}", 0.0, (small + expanded) * e) for name in TENSORS]
    backward = [(f"kv_expand_{name}_sum", expanded - small, (expanded + small) * e) for name in TENSORS]
    return forward, backward


def saved_extra_elements(tokens: float, heads_local: int, kv_heads_local: int, d_head: int) -> float:
    """Elements autograd keeps beyond the small keys and values: SDPA's saved expanded key and value (0 without
    anything to expand)."""
    return 2 * tokens * max(0, heads_local - kv_heads_local) * d_head
