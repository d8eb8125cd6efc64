"""Activation memory of flash-attention's own GPT (flash_attn.models.gpt with use_flash_attn, fused_bias_fc,
fused_mlp, fused_dropout_add_ln, residual_in_fp32; the FlashAttention-2 paper's training scripts), derived by hand
from the tensors its autograd functions save for the backward."""

import pytest

from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.workload.ops import shard_for

SCENARIO = "dao2023-gpt3-2.7b-8k-8-a100"


def _per_token_saved(h: int, heads: int, residual: int) -> tuple[int, int]:
    """(bytes a token one layer saves that the memory model counts, fp32 statistics it leaves out), bf16, dropout
    0.1, residual stream of ``residual`` bytes, from the saved-tensor lists of flash-attention 2.0 (2023):"""
    e, mask, fp32 = 2, 1, 4
    norm = residual * h + mask * h       # DropoutAddLayerNormFn: x (the residual sum, residual dtype), dmask (uint8)
    statistics = 2 * fp32                # ... and mu, rsigma, one fp32 each a row
    qkv_input = e * h                    # FusedDenseFunc (Wqkv): x, the norm's output
    attention = e * 3 * h + e * h        # FlashAttnQKVPackedFunc: q, k, v (views of the packed qkv), out
    lse = fp32 * heads                   # ... and softmax_lse, fp32 a head and row (dropout regenerated from rng_state)
    out_proj_input = 0                   # FusedDenseFunc (out_proj): x is the attention's out, the same storage
    mlp = e * h + e * 4 * h + e * 4 * h  # FusedMLPFunc, checkpoint_lvl 0: x, pre_act, output1 (gelu_approx)
    counted = 2 * norm + qkv_input + attention + out_proj_input + mlp
    return counted, 2 * statistics + lse


@pytest.mark.parametrize("residual_in_fp32, residual", [(True, 4), (False, 2)])
def test_a_flash_attn_gpt_layer_keeps_what_its_autograd_functions_save(residual_in_fp32, residual):
    s = config.load(SCENARIO)
    data = s.model_dump(mode="json")
    data["training"]["residual_in_fp32"] = residual_in_fp32
    s = config.from_dict(data)
    shard, m = shard_for(s), s.model
    counted, left_out = _per_token_saved(m.hidden, m.heads, residual)
    assert counted == (38 if residual_in_fp32 else 34) * m.hidden   # 34: Korthikanti et al. 2022 eq. 1, flash
    assert memory.layer_activation_bytes(m, shard) == counted * shard.tokens
    assert left_out / counted < 0.002    # the statistics the model leaves out: 144 bytes a token against 97 KB


def test_the_fused_loss_saves_the_16_bit_logits_not_an_fp32_softmax():
    # training/src/losses/cross_entropy_apex.py: save_for_backward(logits, max_log_sum_exp, labels), bf16 logits;
    # the final norm (the last block's dropout_add_layer_norm) saves the fp32 residual and the lm_head its bf16 input
    s = config.load(SCENARIO)
    shard, m = shard_for(s), s.model
    expected = shard.tokens * (4 * m.hidden + 2 * m.hidden + 2 * m.vocab)
    assert memory.output_activation_bytes(m, shard) == expected
