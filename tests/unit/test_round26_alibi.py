"""Round 26: ALiBi as BLOOM's Megatron-DeepSpeed runs it under unfused attention (``model.position: alibi``;
workload/ops.py ``score_output_bytes``, ``alibi_bias_ops``; docs/calibration/round-26.md "Round 26: DeepSpeed's
Megatron-DeepSpeed rows simulated fast").

Source: bigscience-workshop/Megatron-DeepSpeed megatron/model/transformer.py (stored at 4989bcde),
``ParallelAttention.forward``: ``matmul_result = alibi[:b * np, :, :sk]`` and ``torch.baddbmm(matmul_result, q, k^T,
beta=0.0 if alibi is None else 1.0, ...)``; PyTorch 1.10-1.11 aten/src/ATen/native/cuda/Blas.cpp
``baddbmm_out_cuda_impl``: ``result.resize_as_(self); if (beta != 0) result.copy_(self)`` on the expanded bias, then
``bgemm`` with that beta. Independent truth: the bytes in closed form from those lines (the copy writes the
b x heads x s x s scores and reads the [b x heads, 1, s] bias; the GEMM's epilogue reads C once more), and the
BLOOM step's growth bounded by 1F1B's critical path, (m + pp - 1) slots of the busiest stage's layers.
"""

from __future__ import annotations

import pytest
import yaml

from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.spec.model import TransformerSpec
from simcluster.workload import kernels
from simcluster.workload.ops import Shard, attention_core, score_output_bytes, shard_for

SHAPE = {"layers": 4, "hidden": 1024, "heads": 16, "vocab": 32000, "max_seq_len": 2048}


def _model(position: str) -> TransformerSpec:
    return TransformerSpec(position=position, **SHAPE)


def _shard(attention: str) -> Shard:
    return Shard(seq_len=2048, micro_batch=2, tp=2, attention=attention)


def test_the_score_gemm_reads_the_bias_only_with_alibi():
    shard = _shard("naive")
    assert score_output_bytes(_model("learned"), shard) is None
    assert score_output_bytes(_model("rope"), shard) is None
    assert score_output_bytes(_model("alibi"), shard) == 2 * shard.activation_bytes_per_element


def test_naive_attention_with_alibi_adds_the_copy_and_the_gemms_read_of_it():
    """One copy kernel before the Q K^T GEMM: b x heads x s x s elements written, the [b x heads, 1, s] bias read;
    the GEMM's FLOP unchanged and its bytes grown by one read of the scores; nothing else, and the backward the
    same (the bias has no gradient; baddbmm's q and k gradients are bmm's)."""
    shard = _shard("naive")
    e = shard.activation_bytes_per_element
    batch = shard.micro_batch * SHAPE["heads"] // shard.tp
    scores = batch * 2048 * 2048
    fwd_a, bwd_a = attention_core(_model("alibi"), shard)
    fwd_l, bwd_l = attention_core(_model("learned"), shard)
    assert len(fwd_a) == len(fwd_l) + 1
    copy, rest = fwd_a[0], fwd_a[1:]
    assert copy.name == "alibi_bias_copy" and copy.kind == "memory" and copy.flop == 0
    assert copy.hbm_bytes == (scores + batch * 2048) * e
    for a, b in zip(rest, fwd_l, strict=True):
        assert a.flop == b.flop
        extra = scores * e if a.name == "attention_scores" else 0
        assert a.hbm_bytes == pytest.approx(b.hbm_bytes + extra)
    assert bwd_a == bwd_l


@pytest.mark.parametrize("attention", ["flash", "flash2", "flash_triton"])
def test_fused_attention_is_not_charged_for_the_bias(attention):
    shard = _shard(attention)
    assert attention_core(_model("alibi"), shard) == attention_core(_model("rope"), shard)


def test_alibi_has_no_position_parameters():
    assert _model("alibi").embedding_params == _model("rope").embedding_params == SHAPE["vocab"] * SHAPE["hidden"]
    assert _model("learned").embedding_params == (SHAPE["vocab"] + SHAPE["max_seq_len"]) * SHAPE["hidden"]


def test_an_unknown_position_is_refused_naming_the_field():
    d = yaml.safe_load(open(config.resolve_path("bigscience-bloom-176b-384-a100")))
    d["model"]["position"] = "sinusoidal"
    with pytest.raises(Exception, match=r"model\.position"):
        config.from_dict(d)


def test_bloom_step_grows_by_its_busiest_stages_share_of_the_copy():
    """The production BLOOM row (tp 4, pp 12, m = 128 microbatches of 2, stages of 5-6 layers, full recompute): each
    layer runs its attention forward twice a microbatch (forward and recompute), each ALiBi forward costing the
    stream delta d of the op lists above; 1F1B's step is (m + pp - 1) slots of its busiest stage, so the step grows by
    between (m + pp - 1) x 2 x 5 d and (m + pp - 1) x 2 x 6 d."""
    d = yaml.safe_load(open(config.resolve_path("bigscience-bloom-176b-384-a100")))
    assert d["model"]["position"] == "alibi"
    alibi = config.from_dict(d)
    d["model"]["position"] = "learned"
    learned = config.from_dict(d)
    shard = shard_for(alibi)
    gpu = alibi.cluster.gpu
    fwd_a, _ = attention_core(alibi.model, shard)
    fwd_l, _ = attention_core(learned.model, shard)
    delta = kernels.stream_time(fwd_a, gpu, "bf16").elapsed_s() - kernels.stream_time(fwd_l, gpu, "bf16").elapsed_s()
    slots = 2048 // (2 * 8) + 12 - 1
    grown = simulate(alibi).summary["step_time_s"] - simulate(learned).summary["step_time_s"]
    assert slots * 2 * 5 * delta <= grown <= slots * 2 * 6 * delta
