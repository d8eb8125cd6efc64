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
    # under autocast (fp32 parameters) FusedDenseFunc saves its weight's bf16 copy beside x, and FusedMLPFunc
    # weight1 and weight2: Wqkv 3h^2, out_proj h^2, fc1 and fc2 4h^2 each, 2 bytes, once a layer and microbatch
    weight_copies = 2 * 12 * m.hidden**2
    assert memory.layer_activation_bytes(m, shard) == counted * shard.tokens + weight_copies
    assert left_out / counted < 0.002    # the statistics the model leaves out: 144 bytes a token against 97 KB


def test_the_fused_loss_saves_the_16_bit_logits_not_an_fp32_softmax():
    # training/src/losses/cross_entropy_apex.py: save_for_backward(logits, max_log_sum_exp, labels), bf16 logits;
    # the final norm (the last block's dropout_add_layer_norm) saves the fp32 residual and the lm_head its bf16 input
    s = config.load(SCENARIO)
    shard, m = shard_for(s), s.model
    expected = shard.tokens * (4 * m.hidden + 2 * m.hidden + 2 * m.vocab)
    # ... and F.linear under autocast the tied fp32 weight's bf16 copy (autocast's cast cache), vocab x h
    assert memory.output_activation_bytes(m, shard) == expected + 2 * m.vocab * m.hidden


def test_fp32_parameters_hold_fp32_states_and_no_master_copy():
    """autocast_fp32_params: 4-byte parameters, 4-byte .grad and AdamW's two fp32 moments sharded by ZeRO-1 over
    dp = 8, 4 + 4 + 8/8 bytes a parameter, against 2 + 4 + 12/8 for a 16-bit model with fp32 master weights."""
    def states(flag):
        data = config.load(SCENARIO).model_dump(mode="json")
        data["training"]["autocast_fp32_params"] = flag
        b = memory.per_gpu_memory(config.from_dict(data))
        return b.weights_bytes, b.gradients_bytes, b.optimizer_bytes

    (w32, g32, o32), (w16, g16, o16) = states(True), states(False)
    params = w16 / 2
    assert (w32, g32, o32) == pytest.approx((4 * params, 4 * params, 8 * params / 8), rel=1e-12)
    assert (w16, g16, o16) == pytest.approx((2 * params, 4 * params, 12 * params / 8), rel=1e-12)
