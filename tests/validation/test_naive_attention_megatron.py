"""Megatron-LM's unfused attention on A100 against its published measurement (round 5).

Dao et al. 2022 (FlashAttention, arXiv 2205.14135, appendix E) timed Megatron-LM's attention (fused scale-mask-softmax,
dropout 0.1, batched GEMMs; fp16) on one A100 40GB with 8 heads of 64 and batch 16: Tables 15 and 16, "with dropout"
(no padding mask, as in GPT's causal softmax), forward 1.88 / 6.56 ms and backward 2.94 / 10.80 ms at sequence 1024 /
2048. Its HBM traffic, counted as ``workload.ops.attention_core`` counts it (score GEMM output, softmax in/out,
dropout in/out/mask, the backward's mirror), is 4.5 / 17.6 GB: about 1.0 TB/s, 0.61-0.65 of the 1.555 TB/s datasheet,
where the kernel model runs other HBM-bound kernels at 0.9 of it. At 0.9 the model ran these kernels 1.4x too fast
(sum 3.25 vs 4.82 ms and 12.6 vs 17.4 ms), most of why the 2021-2022 A100 runs (Narayanan et al. 2021, Megatron-LM
README 2021, Korthikanti et al. 2022) were over-predicted; the naive kernels now take their own measured fraction
(efficiency.yaml attention.naive, 0.63: the middle of the four figures' 0.61-0.65, one number for four
measurements, each held here within the tables' own spread).
"""

import pytest

from simcluster.spec.hardware import gpu
from simcluster.spec.model import TransformerSpec
from simcluster.workload import kernels
from simcluster.workload.ops import Shard, attention_core

# seq -> (forward ms, backward ms): Dao et al. 2022, Tables 15 and 16, row "Megatron"
PUBLISHED = {1024: (1.88, 2.94), 2048: (6.56, 10.80)}
TOLERANCE = 0.15  # the tables' runs of the same kernel vary by ~10% between masking variants


def _times_ms(seq: int) -> tuple[float, float]:
    a100 = gpu("a100-40gb-sxm")
    model = TransformerSpec(name="flash-attention-benchmark", layers=1, hidden=8 * 64, heads=8, vocab=32000,
                            max_seq_len=seq)
    shard = Shard(seq_len=seq, micro_batch=16, sequence_parallel=False, attention="naive", precision="fp16")
    forward, backward = attention_core(model, shard)
    return tuple(1e3 * sum(kernels.op_time_s(op, a100, "fp16", sustained=False) for op in ops)
                 for ops in (forward, backward))


def test_the_model_runs_naive_attention_on_hbm_bound_kernels():
    # the premise of the gap: every naive attention kernel of this benchmark is HBM-bound in the model
    a100 = gpu("a100-40gb-sxm")
    model = TransformerSpec(name="b", layers=1, hidden=512, heads=8, vocab=32000, max_seq_len=2048)
    forward, backward = attention_core(model, Shard(seq_len=2048, micro_batch=16, sequence_parallel=False,
                                                    attention="naive", precision="fp16"))
    for op in forward + backward:
        compute_s, memory_s = kernels.roofline_s(op, a100, "fp16", sustained=False)
        assert memory_s >= compute_s, op.name


@pytest.mark.parametrize("seq", sorted(PUBLISHED))
def test_megatron_attention_matches_the_flash_attention_papers_measurement(seq):
    forward_ms, backward_ms = _times_ms(seq)
    published_forward, published_backward = PUBLISHED[seq]
    assert forward_ms == pytest.approx(published_forward, rel=TOLERANCE)
    assert backward_ms == pytest.approx(published_backward, rel=TOLERANCE)
