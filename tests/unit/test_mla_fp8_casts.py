"""The fp8 tensors multi-head latent attention quantizes, counted from Megatron-Core's MLASelfAttention under
Transformer Engine 2.x (round 28; workload/mla_casts.py). Numbers by hand from DeepSeek-V3's widths (Technical Report
section 4.2: hidden 7,168, 128 heads of 128 + 64 rotary, values 128, q_lora_rank 1,536, kv_lora_rank 512) and the
H100 row's layout (tp 2, sequence parallel, sequence 4,096, micro batch 1: T = 4,096 tokens, shard S = 2,048).

Current scaling on Hopper, per tensor (workload/fp8_recipes.py): an amax pass reading 2 bytes unless a norm wrote the
tensor, then a cast reading 2 and writing 1 + 1 (its transpose), or 1 when the tensor is all-gathered (rowwise only)
and transposed after the gather in the backward (1 read + 1 written on tp x the shard).

Forward: the TENorm'd h-wide shard quantized by each of the two duplicated down-projections (TELinear): 2 x (2 + 4)
S h; the two norm-fed latents (TE LayerNormColumnParallelLinear), gathered: 3 S (1,536 + 512); the output
projection's input, 64 heads x 128 on every token: 6 T 8,192. Backward: the projection's output gradient on the
shard, gathered: 5 S h; the up-projections' output gradients, 64 x 192 and 64 x 256 on every token: 6 T (12,288 +
16,384); the down-projections' on the shard, 1,536 and 512 + 64: 6 S 2,112; transposes of the three gathered
tensors, 2 T (1,536 + 512 + 7,168). The dense MLP of DeepSeek-V3's first layers (ffn 18,432, 9,216 a rank) adds
fc1's norm-fed gathered input (3 S h forward, its transpose 2 T h backward), fc2's input (6 T 9,216) and output
gradient (gathered: 5 S h, transpose 2 T h) and fc1's SwiGLU output gradient (6 T 18,432).
"""

import dataclasses

import pytest

from simcluster.spec import config
from simcluster.workload import fp8_recipes, mla, ops

ROW = "nemo2509-deepseek-v3-1024-h100-fp8"
T, S, H = 4096, 2048, 7168
FP8_OPS = (fp8_recipes.AMAX_OP, fp8_recipes.CAST_OP, fp8_recipes.TRANSPOSE_OP)


def _layer(gpu=None, recipe=None, sequence_parallel=True, tp=2):
    scenario = config.load(ROW)
    shard = dataclasses.replace(ops.shard_for(scenario), tp=tp, sequence_parallel=sequence_parallel)
    if recipe:
        shard = dataclasses.replace(shard, fp8_recipe=recipe)
    if gpu:
        shard = dataclasses.replace(shard, fp8_transpose=fp8_recipes.transposes(gpu))
    layer = mla.apply(scenario.model, shard, ops.layer_ops(scenario.model, shard))
    return {phase: [op for op in ops_ if op.name in FP8_OPS] for phase, ops_ in layer.items()}


def _bytes(ops_):
    return sum(op.hbm_bytes for op in ops_)


def test_forward_bytes_and_kernels_by_hand():
    forward = _layer()["forward"]
    attention = 2 * 6 * S * H + 3 * S * (1536 + 512) + 6 * T * 64 * 128
    mlp = 3 * S * H + 6 * T * 9216
    assert _bytes(forward) == pytest.approx(attention + mlp)
    # amax passes: the h-wide shard twice, the projection's input, fc2's input; casts: 5 attention + 2 MLP
    assert [op.name for op in forward].count(fp8_recipes.AMAX_OP) == 4
    assert [op.name for op in forward].count(fp8_recipes.CAST_OP) == 7


def test_backward_bytes_and_the_gathered_transposes_by_hand():
    backward = _layer()["backward_input"]
    transposes = sorted(op.flop for op in backward if op.name == fp8_recipes.TRANSPOSE_OP)
    # the two latents (q 1,536, kv 512), the projection's output gradient, fc1's input, fc2's output gradient
    assert transposes == pytest.approx(sorted([2 * S * 1536, 2 * S * 512, 2 * S * H, 2 * S * H, 2 * S * H]))
    attention = 5 * S * H + 6 * T * 64 * (192 + 256) + 6 * S * (1536 + 512 + 64) + 2 * T * (1536 + 512 + H)
    mlp = 5 * S * H + 6 * T * 2 * 9216 + 2 * T * H + 2 * T * H
    assert _bytes(backward) == pytest.approx(attention + mlp)


def test_mla_up_proj_recompute_quantizes_the_latents_again():
    """The up-projections re-run inside the checkpoint with their fused norms: two norm-fed gathered casts."""
    recompute = _layer()["recompute"]
    assert [op.name for op in recompute] == [fp8_recipes.CAST_OP] * 2
    assert _bytes(recompute) == pytest.approx(3 * S * (1536 + 512))


def test_without_sequence_parallelism_nothing_is_gathered():
    """tp 2 without sequence parallelism: every tensor on all T tokens, every cast with its transpose, none after."""
    layer = _layer(sequence_parallel=False)
    assert not [op for op in layer["backward_input"] if op.name == fp8_recipes.TRANSPOSE_OP]
    forward = 2 * 6 * T * H + 4 * T * (1536 + 512) + 6 * T * 64 * 128 + 4 * T * H + 6 * T * 9216
    assert _bytes(layer["forward"]) == pytest.approx(forward)


def test_mxfp8_on_blackwell_one_quantize_per_tensor():
    """MXFP8 (B200): one kernel a tensor, the norm-fed ones too, writing both copies and their scales (2 + 2 x (1 +
    1/32) bytes an element), no amax pass, no transpose: 5 + 2 forward, 5 + 2 backward, 2 recomputed."""
    layer = _layer(gpu="b200", recipe="mxfp8", sequence_parallel=False, tp=1)
    per_element = 2 + 2 * (1 + 1 / 32)
    assert [op.name for op in layer["forward"]] == [fp8_recipes.CAST_OP] * 7
    assert [op.name for op in layer["backward_input"]] == [fp8_recipes.CAST_OP] * 7
    assert len(layer["recompute"]) == 2
    forward = 2 * T * H + T * (1536 + 512) + T * 128 * 128 + T * H + T * 18432
    assert _bytes(layer["forward"]) == pytest.approx(per_element * forward)
    backward = T * H + T * 128 * (192 + 256) + T * (1536 + 576) + T * H + T * 2 * 18432
    assert _bytes(layer["backward_input"]) == pytest.approx(per_element * backward)
