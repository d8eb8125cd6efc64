"""Transformer Engine's FlashAttention backend copies Megatron-Core's [s, b, h, d] tensors to flash-attn's [b, s, h, d]
and back (workload/te_flash_layout.py; docs/calibration.md, "Round 27"). Independent truth: the element counts of
TE's ``FlashAttention.forward`` read from source (``_PrepareQKVForFA``: ``tex.fa_prepare_fwd`` / ``fa_prepare_bwd``
over the interleaved q, k, v at head dim 128; ``transpose(0, 1).contiguous()`` per tensor otherwise; the output's
transpose back, a copy only when b > 1), counted here by hand, and TE's backend choice (FlashAttention on Ampere,
cuDNN's fused attention preferred on Hopper)."""

import pytest

from simcluster.spec import config
from simcluster.workload import kernels, ops, te_flash_layout

FP16 = 2


def layout_ops(name: str) -> dict[str, list[ops.Op]]:
    scenario = config.load(name)
    phases = ops.layer_ops(scenario.model, ops.shard_for(scenario))
    return {phase: [op for op in phase_ops if op.name == te_flash_layout.OP_NAME]
            for phase, phase_ops in phases.items()}


def test_the_vocabpar_layer_copies_q_k_v_once_each_way():
    """4B, 24 heads of 128, micro batch 1, 4096 tokens: _PrepareQKVForFA reads and writes q, k and v (3 x 4096 x
    3072 16-bit elements) forward, fa_prepare_bwd the same backward; the output's transpose is a view at b = 1 (no
    kernel)."""
    found = layout_ops("vocabpar2024-1f1b-4b-8-a100-s4096-v32k")
    qkv_bytes = 2 * 3 * 4096 * 3072 * FP16
    assert [op.hbm_bytes for op in found["forward"]] == [qkv_bytes]
    assert [op.hbm_bytes for op in found["backward_input"]] == [qkv_bytes]
    assert found["backward_weight"] == [] and found["recompute"] == []


def test_micro_batch_above_one_adds_the_output_transpose_each_way():
    """Llama 2 7B (planning scenario, Megatron-Core on A100, micro batch 2, 4096 tokens): the output and its gradient
    are copied too, 2 x 4096 x 4096 16-bit elements each; selective recompute re-runs the forward's copies with the
    attention core they belong to (TE's DotProductAttention)."""
    scenario = config.load("llama2-7b-64-a100")
    shard = ops.shard_for(scenario)
    tokens, q_width = shard.micro_batch * shard.seq_len, scenario.model.heads * scenario.model.d_head // shard.tp
    found = layout_ops("llama2-7b-64-a100")
    out = 2 * tokens * q_width * FP16
    assert sorted(op.hbm_bytes for op in found["forward"]) == sorted([3 * out, out])
    assert sorted(op.hbm_bytes for op in found["backward_input"]) == sorted([3 * out, out])
    assert shard.recompute == "selective" and len(found["recompute"]) == 2


def test_grouped_query_attention_copies_each_tensor():
    """Not the interleaved MHA layout (8 key/value heads for 32 query heads): one transpose copy per tensor forward
    (q, k, v at their own widths), none backward besides the output's."""
    model = config.load("vocabpar2024-1f1b-4b-8-a100-s4096-v32k").model
    before, after, before_bwd, after_bwd = te_flash_layout.kernels(model, 2, 4096, 24, 8, FP16)
    q, kv = 2 * 4096 * 24 * 128 * FP16, 2 * 4096 * 8 * 128 * FP16
    assert [bytes_ for _, _, bytes_ in before] == [2 * q, 2 * kv, 2 * kv]
    assert [bytes_ for _, _, bytes_ in after] == [2 * q] and [bytes_ for _, _, bytes_ in before_bwd] == [2 * q]
    assert after_bwd == []


def test_head_dim_off_128_or_few_rows_takes_the_transpose_path():
    model = config.load("vocabpar2024-1f1b-4b-8-a100-s4096-v32k").model
    assert len(te_flash_layout.kernels(model.model_copy(update={"head_dim": 80}), 1, 4096, 24, 24, FP16)[0]) == 3
    assert len(te_flash_layout.kernels(model, 1, 256, 24, 24, FP16)[0]) == 3   # s x b = 256 < 512
    assert len(te_flash_layout.kernels(model, 1, 512, 24, 24, FP16)[0]) == 1


@pytest.mark.parametrize(("name", "copies"), [
    ("vocabpar2024-1f1b-4b-8-a100-s2048-v32k", True),    # Megatron-Core + TE, flash on A100
    ("dao2023-gpt3-1.3b-2k-8-a100", False),              # flash-attention's own GPT: [b, s, h, d] throughout
    ("narayanan2021-1.7b-a100", False),                  # Megatron-LM 2021, unfused attention
    ("mpt-7b-8-a100-80gb", False),                       # llm-foundry's Triton kernel
    ("megatron-1.7b-h100", False),                       # Hopper: TE prefers cuDNN's fused attention (sbhd strides)
])
def test_which_runs_take_the_copies(name, copies):
    assert te_flash_layout.runs(config.load(name)) is copies


def test_the_copies_cost_what_their_bytes_do():
    """Closed form: one copy of 151 MB at the A100 80GB's HBM rate (0.85 x 2.039 TB/s) plus the stream's gap a kernel;
    at 4096 tokens the pair is 1.5% of the model's 4B layer, at 2048 1.9%: linear in the tokens, so it narrows the
    layer's deficit at both lengths alike (docs/calibration.md, "Round 27")."""
    scenario = config.load("vocabpar2024-1f1b-4b-8-a100-s4096-v32k")
    gpu = scenario.cluster.gpu
    (copy,) = layout_ops(scenario.name)["forward"]
    expected = copy.hbm_bytes / (gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)) + kernels.host_model().kernel_gap_s
    assert kernels.op_time_s(copy, gpu, "fp16") == pytest.approx(expected, rel=1e-9)
    shard = ops.shard_for(scenario)
    layer = sum(kernels.op_time_s(op, gpu, "fp16") for phase in ops.layer_ops(scenario.model, shard).values()
                for op in phase)
    assert 2 * kernels.op_time_s(copy, gpu, "fp16") / layer == pytest.approx(0.015, abs=0.003)
