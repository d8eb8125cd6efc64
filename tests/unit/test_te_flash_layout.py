"""Megatron-Core's [s, b, h, d] queries, keys and values copied to flash-attn's [b, s, h, d] and back around TE's
FlashAttention backend (workload/te_flash_layout.py; docs/calibration/round-27.md, "Round 27" and its review).
Independent truth, counted here by hand from source: with ``apply_rope_fusion`` on (Megatron-LM's default)
Megatron-Core's ``TEDotProductAttention`` passes bshd and runs ``transpose(0, 1).contiguous()`` on each of q, k, v
itself, nothing backward; with sbhd TE's ``FlashAttention.forward`` runs ``_PrepareQKVForFA`` (``tex.fa_prepare_fwd`` /
``fa_prepare_bwd``) over the interleaved q, k, v at head dim 128, else one transpose copy per tensor; the output's
transpose back is a copy only when b > 1; and TE's backend choice (FlashAttention on Ampere, cuDNN's fused attention
preferred on Hopper)."""

import dataclasses

import pytest

from simcluster.spec import config
from simcluster.workload import kernels, ops, te_flash_layout

FP16 = 2


def layout_ops(name: str) -> dict[str, list[ops.Op]]:
    scenario = config.load(name)
    phases = ops.layer_ops(scenario.model, ops.shard_for(scenario))
    return {phase: [op for op in phase_ops if op.name == te_flash_layout.OP_NAME]
            for phase, phase_ops in phases.items()}


def test_the_vocabpar_layer_copies_q_k_v_forward_only():
    """4B, 24 heads of 128, micro batch 1, 4096 tokens, learned positions with Megatron-LM's default rope fusion on
    (the fork's validate_args does not reset it): Megatron-Core copies q, k and v to bshd, one kernel each of 4096 x
    3072 16-bit elements read and written; backward the gradients stay views (no kernel), and the output's transpose
    is a view at b = 1 (no kernel)."""
    found = layout_ops("vocabpar2024-1f1b-4b-8-a100-s4096-v32k")
    one = 2 * 4096 * 3072 * FP16
    assert [op.hbm_bytes for op in found["forward"]] == [one, one, one]
    assert found["backward_input"] == [] and found["backward_weight"] == [] and found["recompute"] == []


def test_sbhd_takes_tes_prepare_kernel_each_way():
    """With sbhd (``--no-rope-fusion``) TE's _PrepareQKVForFA reads and writes the interleaved q, k, v in one kernel
    forward and fa_prepare_bwd the same backward; an unknown format is refused by name."""
    model = config.load("vocabpar2024-1f1b-4b-8-a100-s4096-v32k").model
    before, after, before_bwd, after_bwd = te_flash_layout.kernels(model, 1, 4096, 24, 24, FP16, qkv_format="sbhd")
    qkv_bytes = 2 * 3 * 4096 * 3072 * FP16
    assert [b for _, _, b in before] == [qkv_bytes] and [b for _, _, b in after_bwd] == [qkv_bytes]
    assert after == [] and before_bwd == []
    with pytest.raises(ValueError, match="qkv_format"):
        te_flash_layout.kernels(model, 1, 4096, 24, 24, FP16, qkv_format="thd")


def test_micro_batch_above_one_adds_the_output_transpose_each_way():
    """Llama 2 7B (planning scenario, Megatron-Core 0.9 on A100, rotary positions, micro batch 2, 4096 tokens): Apex's
    RoPE wrote q and k in bshd memory, so Megatron-Core copies only v (a view into the QKV output), 2 x 4096 x 4096
    16-bit elements, and the output and its gradient are copied too; selective recompute re-runs the forward's copies
    with the attention core they belong to (TE's DotProductAttention)."""
    scenario = config.load("llama2-7b-64-a100")
    shard = ops.shard_for(scenario)
    tokens, q_width = shard.micro_batch * shard.seq_len, scenario.model.heads * scenario.model.d_head // shard.tp
    found = layout_ops("llama2-7b-64-a100")
    out = 2 * tokens * q_width * FP16
    assert scenario.model.kv_heads in (None, scenario.model.heads)             # multi-head: v as wide as q
    assert [op.hbm_bytes for op in found["forward"]] == [out, out]              # v in; the output back
    assert [op.hbm_bytes for op in found["backward_input"]] == [out]            # the output's gradient
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
    sbhd = {"qkv_format": "sbhd"}
    head_dim_80 = model.model_copy(update={"head_dim": 80})
    assert len(te_flash_layout.kernels(head_dim_80, 1, 4096, 24, 24, FP16, **sbhd)[0]) == 3
    assert len(te_flash_layout.kernels(model, 1, 256, 24, 24, FP16, **sbhd)[0]) == 3   # s x b = 256 < 512
    assert len(te_flash_layout.kernels(model, 1, 512, 24, 24, FP16, **sbhd)[0]) == 1
    assert len(te_flash_layout.kernels(model, 1, 512, 24, 24, FP16)[0]) == 3           # bshd: Megatron-Core's three


@pytest.mark.parametrize(("name", "copies"), [
    ("vocabpar2024-1f1b-4b-8-a100-s2048-v32k", True),    # Megatron-Core + rope fusion (learned positions), A100
    ("flagperf-llama3-8b-8-h100-bf16", True),            # Megatron-Core 0.6 + rope fusion, Hopper's cuDNN attention
    ("nemo2407-llama3-8b-8-h100-fp8", True),             # NeMo 24.07's Llama conf: apply_rope_fusion true
    ("mcore09-mixtral-8x7b-64-h100", False),             # the release case's unfused RoPE: sbhd, cuDNN reads it
    ("nemo2511-llama3-70b-64-h100-fp8", False),          # Megatron-Core 0.15: no bshd override
    ("dao2023-gpt3-1.3b-2k-8-a100", False),              # flash-attention's own GPT: [b, s, h, d] throughout
    ("narayanan2021-1.7b-a100", False),                  # Megatron-LM 2021, unfused attention
    ("mpt-7b-8-a100-80gb", False),                       # llm-foundry's Triton kernel
    ("megatron-1.7b-h100", False),                       # learned positions, rope fusion off by default; Hopper
])
def test_which_runs_take_the_copies(name, copies):
    assert te_flash_layout.runs(config.load(name)) is copies


def _with_training(name: str, **training) -> config.Scenario:
    data = config.rebuildable(config.load(name))
    data["training"] = {**data["training"], **training}
    return config.from_dict(data)


def test_gqa_bytes_per_layer_microbatch_by_release():
    """Closed form, Llama 3 70B's attention at tp 4 (64 query heads, 8 key/value groups of 128: 16 and 2 on a rank),
    8192 tokens, 16-bit, on H100 (cuDNN attention, which copies nothing itself). Megatron-Core 0.9 (Apex's RoPE in bshd
    memory): v alone, 8192 x 2 x 128 x 2 B read and written = 8,388,608 B, nothing backward. 0.13 (TE's RoPE, contiguous
    sbhd): at micro batch 1 still v alone (a size-1 batch's transpose is contiguous); at micro batch 2 q, k and v, the
    output and its gradient. 0.14: nothing. Rope fusion off: nothing."""
    model = config.load("nemo2511-llama3-70b-64-h100-fp8").model
    assert (model.heads, model.kv_heads, model.d_head) == (64, 8, 128)
    q_one, kv_one = 8192 * 16 * 128 * FP16, 8192 * 2 * 128 * FP16
    apex = te_flash_layout.kernels(model, 1, 8192, 16, 2, FP16, "bshd", "apex")
    assert [b for _, _, b in apex[0]] == [2 * kv_one] == [8_388_608] and apex[1:] == ([], [], [])
    assert [b for _, _, b in te_flash_layout.kernels(model, 1, 8192, 16, 2, FP16, "bshd", "te")[0]] == [2 * kv_one]
    before, after, before_bwd, after_bwd = te_flash_layout.kernels(model, 2, 8192, 16, 2, FP16, "bshd", "te")
    assert [b for _, _, b in before] == [4 * q_one, 4 * kv_one, 4 * kv_one]
    assert [b for _, _, b in after] == [b for _, _, b in before_bwd] == [4 * q_one] and after_bwd == []
    with pytest.raises(ValueError, match="rope_output"):
        te_flash_layout.kernels(model, 1, 8192, 16, 2, FP16, "bshd", "triton")
    base = "llama3-70b-1024-h100-roce"
    assert te_flash_layout.layout(_with_training(base, mcore_version="0.9")) == ("bshd", "apex")
    assert te_flash_layout.layout(_with_training(base, mcore_version="0.13")) == ("bshd", "te")
    assert te_flash_layout.layout(_with_training(base, mcore_version="0.14")) is None
    assert te_flash_layout.layout(_with_training(base, mcore_version="0.9", rope_fusion=False)) is None


def test_learned_positions_copy_views_not_the_reshaped_query():
    """FlagPerf's Llama 3 8B shape on Megatron-Core 0.6 (learned positions, rope fusion on, tp 2: 16 query heads in 4
    key/value groups on a rank, micro batch 1, 8192 tokens): no RoPE kernel, so k and v are views into the QKV output
    and are copied, 8192 x 4 x 128 x 2 B each read and written; q's reshape of 4 groups of 4 heads already made it
    contiguous sbhd, whose transpose at micro batch 1 is contiguous: no copy. A single group a rank (tp 8) leaves q a
    view: three copies."""
    found = layout_ops("flagperf-llama3-8b-8-h100-bf16")
    kv = 2 * 8192 * 4 * 128 * FP16
    assert [op.hbm_bytes for op in found["forward"]] == [kv, kv] == [16_777_216, 16_777_216]
    assert found["backward_input"] == [] and found["recompute"] == []
    model = config.load("flagperf-llama3-8b-8-h100-bf16").model
    one_group = te_flash_layout.kernels(model, 1, 8192, 4, 1, FP16, "bshd", "none")[0]
    assert [b for _, _, b in one_group] == [2 * 8192 * 4 * 128 * FP16, 2 * 8192 * 128 * FP16, 2 * 8192 * 128 * FP16]


def test_the_copies_cost_what_their_bytes_do():
    """Closed form: each of the three 50 MB copies at the A100 80GB's HBM rate plus the stream's gap a kernel (about
    29 + 17 us at round 34's fitted gap); at 4096 tokens the three are 0.9% of the model's 4B layer (1.1% at round
    27's 28 us gap; docs/calibration/round-27.md, "Round 27: review of the A100 layout copies, the new held-out rows and
    the MoE load")."""
    scenario = config.load("vocabpar2024-1f1b-4b-8-a100-s4096-v32k")
    gpu = scenario.cluster.gpu
    copies = layout_ops(scenario.name)["forward"]
    for copy in copies:
        expected = (copy.hbm_bytes / (gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name))
                    + kernels.host_model().kernel_gap_s)
        assert kernels.op_time_s(copy, gpu, "fp16") == pytest.approx(expected, rel=1e-9)
    shard = ops.shard_for(scenario)
    layer = sum(kernels.op_time_s(op, gpu, "fp16") for phase in ops.layer_ops(scenario.model, shard).values()
                for op in phase)
    # 0.00897 at 17 us a kernel (round 34's refit; 0.00933 at 19 us, 0.011 at round 27's 28 us): the gap is in
    # every kernel of the layer too, so the share moves little with it
    assert sum(kernels.op_time_s(copy, gpu, "fp16") for copy in copies) / layer == pytest.approx(0.009, abs=0.002)


# ---- the QKV split's backward concatenation (round 32) ---------------------------------------------------------
# Independent truth, read in source: Megatron-Core's get_query_key_value_tensors splits the [s, b, ng, (np/ng + 2) hn]
# QKV output by TE's _SplitAlongDim (torch.split without TE); its backward returns a view only when dq, dk, dv are
# adjacent views of one buffer, else torch.cat. TE's fused_attn_bwd allocates one dQKV for the sbh3d layout (the
# interleaved multi-head QKV handed over untouched) and _PrepareQKVForFA's backward one dqkv; every other path
# (RoPE backward's fresh tensor, the GQA query's reshape, q/k norms, the bshd transposes' contiguous copies,
# flash-attn's empty_like dq, dk, dv) hands the split separate buffers.

def test_split_gradients_arrive_packed_only_for_the_untouched_multi_head_qkv():
    packed = te_flash_layout.gradients_packed
    assert packed(None, False, 24, 24, 128, 4096)                  # cuDNN, sbh3d: one dQKV
    assert packed("sbhd", False, 24, 24, 128, 512)                 # _PrepareQKVForFA: fa_prepare_bwd's dqkv
    assert not packed("sbhd", False, 24, 24, 128, 256)             # s x b < 512: a transpose copy per tensor
    assert not packed("sbhd", False, 24, 24, 80, 4096)             # head dim 80: the same
    assert not packed("bshd", False, 24, 24, 128, 4096)            # Megatron-Core's three contiguous copies
    assert not packed(None, True, 24, 24, 128, 4096)               # RoPE's backward writes fresh dq, dk
    assert not packed(None, False, 16, 4, 128, 4096)               # GQA: the query's reshape, dQ apart from dKV
    assert not packed(None, False, 4, 1, 128, 4096)                # one key/value group on the rank: sbhd_sbh2d
    assert not packed(None, False, 24, 24, 128, 4096, qk_norm=True)  # the q/k norms' own gradients


@pytest.mark.parametrize(("name", "copies"), [
    ("megatron-1.7b-h100", False),                 # GPT, learned positions, MHA, sbhd on Hopper: cuDNN's dQKV
    ("nemo2409-gpt3-175b-128-h100-bf16", False),   # the same at tp 4 (24 heads a rank, as many key/value heads)
    ("nemo2409-llama31-8b-8-h100-bf16", True),     # rope fusion under Megatron-Core 0.9: bshd, GQA, RoPE
    ("vocabpar2024-1f1b-4b-8-a100-s4096-v32k", True),  # bshd override with learned positions: three copies
    ("mcore09-mixtral-8x7b-64-h100", True),        # unfused RoPE, sbhd: rotated q and k are fresh tensors
    ("dao2023-gpt3-1.3b-2k-8-a100", False),        # flash-attention's own GPT: not Megatron-Core's split
    ("mpt-7b-8-a100-80gb", False),                 # llm-foundry: its chunk's cat is eager_backward's
])
def test_which_runs_concatenate_the_split_gradients(name, copies):
    assert te_flash_layout.split_backward_copies(config.load(name)) is copies


def test_split_concatenation_bytes_and_time_closed_form():
    """Llama 3.1 8B (32 query heads, 8 key/value heads of 128), micro batch 1, 8192 tokens over cp 2: dq [4096,
    4096], dk and dv [4096, 1024] read and the [4096, 6144] gradient written, 16-bit: 100,663,296 B, once a layer in
    the activation gradient's phase, never forward nor recomputed (full recompute re-runs forwards only); at tp 2
    half of it; its time the bytes at the HBM roofline plus a kernel's gap."""
    scenario = config.load("nemo2409-llama31-8b-8-h100-bf16")
    shard = ops.shard_for(scenario)
    assert (shard.tp, shard.cp, shard.micro_batch, shard.seq_len) == (1, 2, 1, 8192)

    def split_ops(shard):
        return {phase: [op for op in found if op.name == te_flash_layout.SPLIT_OP_NAME]
                for phase, found in ops.layer_ops(scenario.model, shard).items()}

    found = split_ops(shard)
    assert [op.hbm_bytes for op in found["backward_input"]] == [2 * 4096 * (4096 + 2 * 1024) * FP16] == [100_663_296]
    assert found["forward"] == found["recompute"] == found["backward_weight"] == []
    full = split_ops(dataclasses.replace(shard, recompute="full", tp=2))
    assert [op.hbm_bytes for op in full["backward_input"]] == [100_663_296 / 2] and full["recompute"] == []
    assert split_ops(dataclasses.replace(shard, qkv_split_copy=False))["backward_input"] == []
    gpu = scenario.cluster.gpu
    op = found["backward_input"][0]
    expected = op.hbm_bytes / (gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)) + kernels.host_model().kernel_gap_s
    assert kernels.op_time_s(op, gpu, "bf16") == pytest.approx(expected, rel=1e-9)
