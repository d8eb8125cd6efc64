"""GQA's keys and values expanded to the query heads before SDPA (``training.kv_expansion: copy``;
workload/kv_expansion.py) against a count by hand from the source that does it (docs/calibration/round-36.md "Round 36:
GQA's key/value expansion in PyTorch-native stacks").

torchtitan's ``repeat_kv`` (torchtitan/models/llama/model.py @ 0199cbc1): ``unsqueeze(x, 3).expand(bs, slen,
n_kv_heads, n_rep, head_dim).reshape(bs, slen, n_kv_heads * n_rep, head_dim)``, called on ``xk`` and ``xv`` after
``apply_rotary_emb``; the reshape of a stride-0 tensor copies: per tensor, one kernel reading tokens x kv_heads_local x
d_head and writing tokens x heads_local x d_head elements of 2 B. Its backward (expand's ``sum_to_size``) reads the
expanded gradient, writes the small one and adds (n_rep - 1) x small elements. Under full activation recompute the
forward copies run again. Llama 3.1 405B at TP 8: 128 / 8 = 16 query heads and 8 / 8 = 1 key/value head a rank,
head_dim 128, micro batch 1, sequence 8192. fms's 70B at TP 1: 64 query and 8 key/value heads, micro batch 2,
sequence 4096. Fails if a copy is dropped or doubled, if the bytes are the small or the expanded tensor alone, if
the sum's direction is swapped, if multi-head attention or a Megatron-Core row pays anything, or if bad input passes.
"""

import pytest
from scenario_data import bundled_with_training

from simcluster.core.errors import ScenarioError
from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.workload.ops import layer_ops, shard_for

TITAN = "torchtitan-llama31-405b-128-h100-bf16"    # tp 8, micro batch 1, sequence 8192, full recompute
FMS = "fmsfsdp-llama2-70b-96-h100"                 # tp 1, micro batch 2, sequence 4096, full recompute
MEGATRON = "nemo2409-llama31-8b-8-h100-bf16"        # Megatron-Core, GQA 32 / 8: TE attention reads the groups


def _expansion(ops):
    return [op for op in ops if op.name.startswith("kv_expand")]


@pytest.mark.parametrize("name, tokens, heads_local, kv_heads_local", [(TITAN, 1 * 8192, 16, 1),
                                                                      (FMS, 2 * 4096, 64, 8)])
def test_one_layer_copies_and_sums_keys_and_values_as_counted_by_hand(name, tokens, heads_local, kv_heads_local):
    layer = layer_ops(*(lambda s: (s.model, shard_for(s)))(bundled_with_training(name, kv_expansion="copy")))
    small, expanded = tokens * kv_heads_local * 128, tokens * heads_local * 128
    forward, backward = _expansion(layer["forward"]), _expansion(layer["backward_input"])
    assert [op.name for op in forward] == ["kv_expand_key", "kv_expand_value"]
    assert [op.name for op in backward] == ["kv_expand_key_sum", "kv_expand_value_sum"]
    for op in forward:    # read the kv heads, write the query heads' width, bf16
        assert (op.kind, op.flop, op.hbm_bytes) == ("memory", 0.0, 2 * (small + expanded))
    for op in backward:   # read the expanded gradient, write the small one, one add per repeated element
        assert (op.kind, op.flop, op.hbm_bytes) == ("memory", expanded - small, 2 * (expanded + small))
    # after the RoPE, right before the attention kernel; backward right after it, before the RoPE's backward
    names = [op.name for op in layer["forward"]]
    assert names.index("kv_expand_value") + 1 == names.index("attention")
    assert max(i for i, n in enumerate(names) if n.startswith("rope")) < names.index("kv_expand_key")
    bwd = [op.name for op in layer["backward_input"]]
    assert bwd.index("attention_backward") + 1 == bwd.index("kv_expand_key_sum")
    # full activation recompute re-runs the forward copies
    assert [op.name for op in _expansion(layer["recompute"])] == ["kv_expand_key", "kv_expand_value"]


def test_multi_head_attention_megatron_and_the_default_pay_nothing():
    mha = bundled_with_training(TITAN, kv_expansion="copy")
    mha_data = mha.model_dump(mode="json", exclude_none=True)
    mha_data["model"] = {**mha.model.model_dump(mode="json", exclude_none=True), "kv_heads": mha.model.heads}
    for scenario in (config.from_dict(mha_data),        # n_rep 1: repeat_kv returns x
                     bundled_with_training(TITAN, kv_expansion="none"), config.load(MEGATRON)):
        layer = layer_ops(scenario.model, shard_for(scenario))
        assert not any(_expansion(layer[phase]) for phase in layer)
    assert config.load(MEGATRON).training.kv_expansion == "none"


@pytest.mark.parametrize("name", [MEGATRON, "automodel-deepseek-v3-256-h100-bf16"])
def test_copy_is_refused_on_megatron_core_and_mla(name):
    with pytest.raises(ScenarioError, match=r"training\.kv_expansion"):
        bundled_with_training(name, kv_expansion="copy")


def test_sdpa_keeps_the_expanded_keys_and_values():
    """Without recompute a layer keeps the expanded key and value SDPA saved, 2 x tokens x (16 - 1) x 128 x 2 B more
    than the small ones; under full recompute the layer being rebuilt holds them (the workspace margin)."""
    extra = 2 * 8192 * (16 - 1) * 128 * 2
    kept = {mode: memory.layer_activation_bytes(s.model, shard_for(s)) for mode, s in
            ((mode, bundled_with_training(TITAN, kv_expansion=mode, activation_recompute="none"))
             for mode in ("none", "copy"))}
    assert kept["copy"] - kept["none"] == pytest.approx(extra)
    margin = {mode: memory.workspace_bytes(s.model, shard_for(s)) for mode, s in
              ((mode, bundled_with_training(TITAN, kv_expansion=mode)) for mode in ("none", "copy"))}
    assert margin["copy"] - margin["none"] == pytest.approx(extra)
