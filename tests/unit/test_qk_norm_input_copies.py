"""qk_layernorm's input copies (workload/ops.py ``qk_norm_input_copies``) against the array semantics they rest on.

Megatron-Core splits its fused QKV output [s, b, ng, (np/ng + 2) hn] along the last dimension into views, reshapes
the query to [s, b, np, hn] and hands query and key to Transformer Engine's RMSNorm, whose forward starts with
``input_.contiguous()`` (NVIDIA/Megatron-LM megatron/core/transformer/attention.py get_query_key_value_tensors;
NVIDIA/TransformerEngine transformer_engine/pytorch/ops/basic/rmsnorm.py ``RMSNorm.op_forward``). Whether the
reshape copies and whether a norm input is contiguous are properties of strides alone: NumPy's ``reshape`` returns
a view whenever the strides allow it and its C-contiguity ignores the strides of size-1 dimensions, as PyTorch's
``reshape`` and ``is_contiguous`` do. So the truth here is the layout built in NumPy, not the model's rule, and the
bytes are the closed form of one read and one write of the copied tensor.
"""

import numpy as np
import pytest

from simcluster.spec.model import TransformerSpec
from simcluster.workload.ops import Shard, layer_ops, qk_norm_input_copies

HEAD_DIM = 8   # any head_dim: only the strides matter


def norm_inputs(groups: int, heads_per_group: int, batch: int, seq: int = 3):
    """The query and key Megatron-Core's two norms receive, as NumPy arrays over one fused buffer, and whether the
    query's reshape copied it."""
    fused = np.zeros((seq, batch, groups, (heads_per_group + 2) * HEAD_DIM), dtype=np.float16)
    query, key, _value = np.split(fused, [heads_per_group * HEAD_DIM, (heads_per_group + 1) * HEAD_DIM], axis=3)
    reshaped = query.reshape(seq, batch, -1, HEAD_DIM)
    return reshaped, key, not np.shares_memory(reshaped, fused)


def expected_copies(groups: int, heads_per_group: int, batch: int) -> tuple[str, ...]:
    query, key, _ = norm_inputs(groups, heads_per_group, batch)
    return tuple(name for name, x in (("q_norm", query), ("k_norm", key)) if not x.flags["C_CONTIGUOUS"])


# (heads, kv_heads, tp): Qwen3-235B-A22B (64 / 4) at tp 1, 2 and 4 (4, 2 and 1 KV groups a rank), Llama 3 70B's
# 64 / 8 at tp 8, multi-head attention (16 / 16), multi-query (16 / 1)
LAYOUTS = [(64, 4, 1), (64, 4, 2), (64, 4, 4), (64, 8, 8), (16, 16, 1), (16, 16, 2), (16, 1, 1)]


def spec(heads: int, kv_heads: int, qk: bool = True) -> TransformerSpec:
    return TransformerSpec(layers=2, hidden=heads * HEAD_DIM, heads=heads, kv_heads=kv_heads, head_dim=HEAD_DIM,
                           vocab=1024, mlp="swiglu", position="rope", dropout=False, norm="rmsnorm",
                           qk_layernorm=qk)


@pytest.mark.parametrize(("heads", "kv_heads", "tp"), LAYOUTS)
@pytest.mark.parametrize("batch", [1, 2])
def test_the_norms_that_copy_are_those_whose_input_is_not_contiguous(heads, kv_heads, tp, batch):
    groups = kv_heads // tp
    per_group = heads // kv_heads
    assert qk_norm_input_copies(spec(heads, kv_heads), tp) == expected_copies(groups, per_group, batch)


@pytest.mark.parametrize(("heads", "kv_heads", "tp"), LAYOUTS)
def test_the_key_is_always_copied_the_query_only_where_the_reshape_kept_a_view(heads, kv_heads, tp):
    """The key is a strided slice in every layout; the query is copied exactly once, by the reshape (not charged:
    it runs without qk_layernorm too) or by the norm (charged), never by both."""
    groups, per_group = kv_heads // tp, heads // kv_heads
    _, key, reshape_copied = norm_inputs(groups, per_group, 1)
    assert not key.flags["C_CONTIGUOUS"]
    assert ("q_norm" in qk_norm_input_copies(spec(heads, kv_heads), tp)) is not reshape_copied


def test_no_copies_without_qk_layernorm():
    assert qk_norm_input_copies(spec(64, 4, qk=False), 1) == ()
    names = [op.name for op in layer_ops(spec(64, 4, qk=False), Shard(seq_len=64, micro_batch=1))["forward"]]
    assert not [name for name in names if name.endswith("_input_copy")]


@pytest.mark.parametrize(("tp", "copied"), [(1, ("k_norm",)), (4, ("q_norm", "k_norm"))])
def test_qwen3_copy_bytes_and_place(tp, copied):
    """Qwen3-235B-A22B's attention (64 query heads, 4 KV heads): each copy reads and writes its tensor once (2
    bytes an element in bf16), runs just before its norm, in the forward only (the gradient of ``contiguous`` is
    the norm's own dx), and a full recompute re-runs it with the forward."""
    model = spec(64, 4)
    shard = Shard(seq_len=4096, micro_batch=1, tp=tp, sequence_parallel=tp > 1)
    widths = {"q_norm": 64 * HEAD_DIM // tp, "k_norm": 4 * HEAD_DIM // tp}
    phases = layer_ops(model, shard)
    names = [op.name for op in phases["forward"]]
    for norm in ("q_norm", "k_norm"):
        copies = [op for op in phases["forward"] if op.name == f"{norm}_input_copy"]
        if norm not in copied:
            assert not copies
            continue
        (copy,) = copies
        assert copy.kind == "memory" and copy.flop == 0
        assert copy.hbm_bytes == 2 * 2 * 4096 * widths[norm]
        assert names.index(f"{norm}_input_copy") == names.index(norm) - 1
    for phase in ("backward_input", "backward_weight", "recompute"):
        assert not [op for op in phases[phase] if op.name.endswith("_input_copy")], phase
    full = layer_ops(model, Shard(seq_len=4096, micro_batch=1, tp=tp, sequence_parallel=tp > 1,
                                  recompute="full"))["recompute"]
    assert len([op for op in full if op.name.endswith("_input_copy")]) == len(copied)
