"""FlashAttention-2 on H100 (``training.attention: flash2``) against the FlashAttention-3 paper's measurements.

Source: Shah et al. 2024, "FlashAttention-3" (arXiv 2407.08608), Figures 5 and 6: attention on one H100 80GB SXM5 in
bf16, batch x sequence = 16k tokens, hidden 2048 (16 heads of 128), FlashAttention-2 beside FlashAttention-3 and
cuDNN, TFLOP/s counted as the flash-attention benchmarks count them (forward 4 b s^2 h d, halved with the causal
mask; backward 2.5x the forward). Head dim 128 is what the Llama models (and the torchtitan rows) run.

What the model computes: the kernel in a short benchmark (full clock, the benchmark's launch overhead:
``kernels.op_time_s(sustained=False)``) running ``ops.attention_core``'s flash2 op; its TFLOP/s are the executed
FLOP (counted x ``executed_flop_ratio``) over that time, the benchmark's convention. The model has one curve per
direction for both masks: it is fitted (efficiency.yaml attention.flash2) on the non-causal series, as the flash
curve was on FlashAttention-3's, and the causal forward series is held to a stated band (the model is faster than
FlashAttention-2's causal kernel, whose diagonal tiles and per-block imbalance it does not model).

Second source, PyTorch SDPA itself (what torchtitan called), December 2024: tritonbench's flash_attention operator
with ``--native-sdpa`` (SDPA's own backend choice), bf16, forward, no causal mask (the operator's default), batch 1,
24 heads of 128, sequence 4608 on H100: 329.483 TFLOP/s, beside cuDNN 631.3 and FlashAttention-3 631.8 on the same
GPU (meta-pytorch/tritonbench#97, 2024-12-05). Not fitted: the model is 11.7% faster than it (its one batch of 24
heads fills 864 query blocks, under 7 waves of 132 SMs, a tail the model does not count; SDPA's build of
FlashAttention-2 may also trail the paper's), held to 0 to +15%; the FlashAttention-3 curve is +79%.

Tolerances: 4% per non-causal point (the fit leaves 1.8% forward, 0.7% backward; the bar heights are read to the
TFLOP/s); causal forward: the model between 0 and 17% faster at 4k and longer (measured +12.4% to +15.8%; the
torchtitan rows run 8k and 32k). The FlashAttention-3 curve (``flash``) must miss the same points by far more than
the tolerance (it is 1.6-1.8x faster), so the test tells the two kernels apart.
"""

from contextlib import nullcontext
from unittest import mock

import pytest

from simcluster.spec import hardware
from simcluster.spec.model import TransformerSpec
from simcluster.workload import kernels
from simcluster.workload.ops import Shard, attention_core

H100 = hardware.gpu("h100-sxm")
TOKENS = 16384
SEQS = (512, 1024, 2048, 4096, 8192, 16384)
# FlashAttention-2, head dim 128, TFLOP/s (Shah et al. 2024, Figure 5 forward, Figure 6 backward)
FORWARD = dict(zip(SEQS, (309, 350, 362, 368, 370, 370), strict=True))
BACKWARD = dict(zip(SEQS, (214, 260, 291, 310, 318, 322), strict=True))
CAUSAL_FORWARD = dict(zip(SEQS, (191, 260, 298, 319, 333, 335), strict=True))
TOLERANCE = 0.04
CAUSAL_BAND = (0.0, 0.17)   # model over measured, minus 1, at sequence >= 4096


# tritonbench#97: (batch, heads, sequence, head dim) and PyTorch SDPA's forward TFLOP/s, no mask
SDPA_SHAPE, SDPA_TFLOP_PER_S = (1, 24, 4608, 128), 329.483
SDPA_BAND = (0.0, 0.15)


def benchmark_tflop_per_s(kernel: str, seq: int, gpu=H100, batch: int | None = None,
                          heads: int = 16, unmasked: bool = False) -> tuple[float, float]:
    """(forward, backward) TFLOP/s the model gives a benchmark's attention at ``seq`` (heads of 128; by default
    the FlashAttention-3 paper's shapes, batch x sequence = 16k). Every simcluster attention op is causal;
    ``unmasked`` times the unmasked kernel instead: the same curve without cuDNN's causal loss on Hopper
    (efficiency.yaml attention.causal_loss, round 28), which is 1 for every other kernel and GPU."""
    spec = TransformerSpec(layers=1, hidden=128 * heads, heads=heads, vocab=32000, dropout=False, max_seq_len=seq)
    shard = Shard(seq_len=seq, micro_batch=batch or TOKENS // seq, attention=kernel, precision="bf16")
    (forward,), (backward,) = attention_core(spec, shard)
    rates = []
    with mock.patch.object(kernels, "causal_share", lambda *_: 1.0) if unmasked else nullcontext():
        for op in (forward, backward):
            executed = op.flop * kernels.efficiency(op, gpu, "bf16").executed_flop_ratio
            rates.append(executed / kernels.op_time_s(op, gpu, "bf16", sustained=False) / 1e12)
    return rates[0], rates[1]


@pytest.mark.parametrize("seq", SEQS)
def test_flash2_reproduces_fa2_on_h100_without_mask(seq):
    forward, backward = benchmark_tflop_per_s("flash2", seq)
    assert forward == pytest.approx(FORWARD[seq], rel=TOLERANCE)
    assert backward == pytest.approx(BACKWARD[seq], rel=TOLERANCE)


@pytest.mark.parametrize("seq", [s for s in SEQS if s >= 4096])
def test_flash2_causal_forward_gap_is_as_stated(seq):
    forward, _ = benchmark_tflop_per_s("flash2", seq)
    low, high = CAUSAL_BAND
    assert low <= forward / CAUSAL_FORWARD[seq] - 1 <= high


def test_flash2_against_pytorch_sdpa_on_h100():
    batch, heads, seq, _ = SDPA_SHAPE
    forward, _ = benchmark_tflop_per_s("flash2", seq, batch=batch, heads=heads)
    low, high = SDPA_BAND
    assert low <= forward / SDPA_TFLOP_PER_S - 1 <= high
    fa3_forward, _ = benchmark_tflop_per_s("flash", seq, batch=batch, heads=heads, unmasked=True)
    assert fa3_forward / SDPA_TFLOP_PER_S - 1 > 4 * high


def test_the_fa3_curve_fails_these_points():
    """The flash kernel (FlashAttention-3's throughput on Hopper) is not FlashAttention-2: every point misses."""
    for seq in SEQS:
        forward, backward = benchmark_tflop_per_s("flash", seq, unmasked=True)
        assert forward / FORWARD[seq] - 1 > 3 * TOLERANCE
        assert backward / BACKWARD[seq] - 1 > 3 * TOLERANCE


@pytest.mark.parametrize("gpu_name", ["a100-40gb-sxm", "a100-80gb-sxm"])
def test_flash2_is_flash_on_a100(gpu_name):
    """On Ampere the flash kernel is FlashAttention-2 (Dao 2023: up to 73% of peak forward, 63% backward without
    the mask; the causal curve both take is held to the paper's causal series in test_flash2_a100_causal.py)."""
    gpu = hardware.gpu(gpu_name)
    for seq in SEQS:
        assert benchmark_tflop_per_s("flash2", seq, gpu) == pytest.approx(benchmark_tflop_per_s("flash", seq, gpu))
    forward, backward = benchmark_tflop_per_s("flash2", 16384, gpu)
    peak = gpu.peak_flop_per_s("bf16") / 1e12
    assert forward / peak < 0.73 and backward / peak < 0.63
