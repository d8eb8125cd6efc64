"""Fused attention on Hopper at long sequences, and context parallelism's ring of kernels (round 27).

1. cuDNN's fused attention (the kernel Transformer Engine runs on H100: ``test_cudnn_attention_hopper.py``) at the
   Llama 3.1 70B attention shape, 2k-32k keys. Source: NVIDIA/cudnn-frontend, benchmark/sdpa_benchmark_training/
   results/h200_919_only_cudnn/llama3.1_20260227_034703.csv (commit df73764a): cuDNN 9.19.1 on one H200, bf16,
   batch 1, 64 query and 8 key/value heads of 128, ``top_left`` (causal) and ``no_mask``; TFLOP/s as flash-attention
   counts them (4 b s^2 h d forward, halved with the mask; backward 2.5x): the 32k causal forward's 25.566 ms gives
   4 x 32768^2 x 64 x 128 / 2 / 25.566 ms = 688 TFLOP/s, the file's figure. The H200 has the H100's SMs, clock and
   700 W (hardware.yaml); attention is compute-bound, so it stands for the H100 (its HBM does not enter). The same
   kernel two years earlier (cuDNN of July 2024, H100, 16 heads of 128: Shah et al. 2024, FlashAttention-3, arXiv
   2407.08608, Figure 5) ran the causal forward at 529 / 539 TFLOP/s at 8k / 16k; the containers of NeMo 24.07-25.02
   shipped cuDNN releases between the two. The model has one curve (fitted on FlashAttention-3's unmasked kernel,
   causal as half the tiles; round 28: times cuDNN 2024's causal loss, attention.causal_loss); asserted: below cuDNN
   9.19's causal kernel by 5-20% from 4k to 32k (the release gap; within 10% before round 28), between the two
   cuDNN releases at 8k and 16k, and
   its dependence on the key length that of cuDNN 9.19's unmasked kernel (the shape the ring's steps run) to 1.5%.
2. Transformer Engine's p2p ring (``AttnFuncWithCP`` / ``AttnFuncWithCPAndKVP2P``, TE 1.x, read in
   docs/calibration/rounds-1-9.md "Round 8" and "Round 20"): causal load balancing in 2 cp chunks, rank r holding chunks
   r and 2cp-1-r; step 0 causal over the rank's own keys, step i > 0 non-causal on the whole query block over half a
   key block (i <= r) or on the query block's second half over the whole key block (i > r). Enumerated here rank by
   rank and step by step and timed with the model's curve at each step kernel's key length; the model's one kernel
   (``kernels.ring_key_length``: s / (2cp - 1) keys) must take the slowest rank's time, and the executed work must
   be the causal half of the full attention.
"""

import pytest
from test_flash2_hopper import benchmark_tflop_per_s

from simcluster.spec import hardware
from simcluster.spec.model import TransformerSpec
from simcluster.workload import kernels
from simcluster.workload.ops import Shard, attention_core

H100 = hardware.gpu("h100-sxm")
LLAMA70B_HEADS = 64
SEQS = (2048, 4096, 8192, 16384, 32768)
# cuDNN 9.19.1 on H200, Llama 3.1 70B heads (64 query, 8 key/value, head dim 128), batch 1, bf16, TFLOP/s
CAUSAL_FORWARD = dict(zip(SEQS, (484, 591, 644, 673, 688), strict=True))
CAUSAL_BACKWARD = dict(zip(SEQS, (370, 474, 541, 579, 581), strict=True))
NO_MASK_FORWARD = dict(zip(SEQS, (633, 671, 691, 702, 693), strict=True))
# cuDNN of July 2024 on H100 (FlashAttention-3 paper, Figure 5, 16 heads of 128, batch x sequence = 16k), causal
CUDNN_2024_CAUSAL_FORWARD = {8192: 529, 16384: 539}
RELEASE_GAP = (0.05, 0.20)   # model below cuDNN 9.19's causal kernel, fraction, at 4k-32k
SHAPE_TOLERANCE = 0.015


def llama70b_tflop_per_s(seq: int) -> tuple[float, float]:
    return benchmark_tflop_per_s("flash", seq, batch=1, heads=LLAMA70B_HEADS)


@pytest.mark.parametrize("seq", [s for s in SEQS if s >= 4096])
def test_flash_curve_below_cudnn_919_causal_by_the_release_gap(seq):
    """Round 28: the causal kernel is modelled as cuDNN's of 2024 (efficiency.yaml attention.causal_loss); cuDNN
    9.19 is faster, unmasked by 10-14% over the curve and causal with a smaller loss (test_cudnn_causal_hopper.py),
    so the model's causal kernel runs 8-17% below it at 4k-32k (before round 28 it was within 10%)."""
    forward, backward = llama70b_tflop_per_s(seq)
    low, high = RELEASE_GAP
    assert low <= 1 - forward / CAUSAL_FORWARD[seq] <= high
    assert low <= 1 - backward / CAUSAL_BACKWARD[seq] <= high


@pytest.mark.parametrize("seq", sorted(CUDNN_2024_CAUSAL_FORWARD))
def test_flash_curve_between_the_2024_and_2026_cudnn(seq):
    """NeMo 24.07-25.02 ran a cuDNN between these two; the model's causal forward lies between them."""
    forward, _ = llama70b_tflop_per_s(seq)
    assert CUDNN_2024_CAUSAL_FORWARD[seq] < forward < CAUSAL_FORWARD[seq]


@pytest.mark.parametrize("seq", [s for s in SEQS if s < 16384])
def test_key_length_dependence_matches_cudnn_unmasked(seq):
    """The saturation in the key length (attention.kv_tokens_half, fitted on FlashAttention-3) is cuDNN 9.19's
    unmasked kernel's: the speed at seq over the speed at 16k, model against measured. The ring's later steps are
    unmasked kernels on 1/(2cp) of the keys, so this is the term ``ring_key_length`` feeds."""
    spec = TransformerSpec(layers=1, hidden=128 * LLAMA70B_HEADS, heads=LLAMA70B_HEADS, kv_heads=8, vocab=32000,
                           dropout=False, max_seq_len=seq)

    def fraction(n):
        (forward,), _ = attention_core(spec, Shard(seq_len=n, micro_batch=1, precision="bf16"))
        half = kernels._table()["attention"]["default"]["kv_tokens_half"]
        # the unmasked curve: without round 28's causal share
        return kernels.attention_efficiency(forward, "h100-sxm")[0] / kernels.causal_share(forward, "h100-sxm", half)

    model_ratio = fraction(seq) / fraction(16384)
    measured_ratio = NO_MASK_FORWARD[seq] / NO_MASK_FORWARD[16384]
    assert model_ratio == pytest.approx(measured_ratio, rel=SHAPE_TOLERANCE)


def te_ring_steps(seq: int, cp: int, rank: int) -> list[tuple[int, int, bool]]:
    """(queries, keys, causal) of each step kernel rank ``rank`` runs in Transformer Engine's p2p loop."""
    chunk = seq // cp
    steps = [(chunk, chunk, True)]
    for i in range(1, cp):
        steps.append((chunk, chunk // 2, False) if i <= rank else (chunk // 2, chunk, False))
    return steps


def executed(queries: int, keys: int, causal: bool) -> float:
    """Score elements a kernel computes (a causal kernel the lower half of its square)."""
    return queries * keys / (2 if causal else 1)


def causal_slowdown(keys: int, causal: bool, direction: str, gpu: str = "h100-sxm") -> float:
    """Time of a causal step kernel over an unmasked one's per executed FLOP at the same key length (round 28:
    cuDNN's causal kernel on Hopper, efficiency.yaml attention.causal_loss), 1 for unmasked steps and elsewhere."""
    table = kernels._table()["attention"]["causal_loss"]
    if not causal or gpu not in table["gpus"]:
        return 1.0
    loss = table[direction]
    return 1.0 + loss["constant"] + loss["diagonal_keys"] / keys


@pytest.mark.parametrize("cp", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("seq", [16384, 32768, 65536, 131072])
def test_one_kernel_takes_the_rings_time(seq, cp):
    spec = TransformerSpec(layers=1, hidden=4096, heads=32, kv_heads=8, vocab=32000, dropout=False,
                           max_seq_len=seq)
    shard = Shard(seq_len=seq, micro_batch=1, cp=cp, precision="bf16")
    for op in attention_core(spec, shard)[0] + attention_core(spec, shard)[1]:
        direction = "backward" if op.name.endswith("backward") else "forward"
        table = kernels._table()["attention"]
        half = table["default"]["kv_tokens_half"]
        fraction, _ = kernels.attention_efficiency(op, "h100-sxm")
        # the work: each rank's steps execute the causal half of its queries' rows, each step an equal share
        per_rank = [[executed(*step) for step in te_ring_steps(seq, cp, r)] for r in range(cp)]
        for works in per_rank:
            assert sum(works) == pytest.approx(seq / cp * seq / 2)
            assert max(works) == pytest.approx(min(works))
        # the model's one kernel: s/cp queries over all s keys, the causal half of its tiles executed
        assert op.m * op.n * table["executed_fraction"]["forward"] == pytest.approx(seq / cp * seq / 2)
        # the time: the slowest rank's steps, each at its own key length on the curve, against the one kernel
        ring = max(sum(executed(q, k, c) * (k + half) / k * causal_slowdown(k, c, direction)
                       for q, k, c in te_ring_steps(seq, cp, r))
                   for r in range(cp))
        one_kernel = seq / cp * seq / 2 / (fraction / table["default"][f"{direction}_max"])
        assert one_kernel == pytest.approx(ring, rel=1e-9)


def test_the_ring_costs_most_at_short_chunks():
    """At 16k over cp 8 (2k tokens a rank, 1k half blocks) the ring's kernels run 17% below one kernel on all 16k
    keys (s/15 = 1,092 keys against 16,384); at 128k over cp 8 (16k a rank), 2.5%. The model charged the long
    kernel before round 27. Round 28: those are the key lengths' terms (the unmasked curve, asserted here without the
    causal share); with cuDNN's causal loss (attention.causal_loss) only the ring's first step is causal, and at 2k
    chunks its 1/8 of the work on a 2k causal kernel (share 0.765 against 0.904 at 16k) leaves the ring at 0.89
    of the one kernel's speed; at 128k over cp 8 the ring is 4% faster (7/8 of its work unmasked)."""
    half = kernels._table()["attention"]["default"]["kv_tokens_half"]

    def speed(seq, cp, causal=False):
        spec = TransformerSpec(layers=1, hidden=4096, heads=32, kv_heads=8, vocab=32000, dropout=False,
                               max_seq_len=seq)
        (forward,), _ = attention_core(spec, Shard(seq_len=seq, micro_batch=1, cp=cp, precision="bf16"))
        share = 1.0 if causal else kernels.causal_share(forward, "h100-sxm", half)
        return kernels.attention_efficiency(forward, "h100-sxm")[0] / share

    assert speed(16384, 8) / speed(16384, 1) == pytest.approx((1092.3 / 1330.3) / (16384 / 16622), rel=1e-3)
    assert 0.83 < speed(16384, 8) / speed(16384, 1) < 0.84
    assert 0.97 < speed(131072, 8) / speed(131072, 1) < 0.98
    assert 0.88 < speed(16384, 8, causal=True) / speed(16384, 1, causal=True) < 0.90
    assert 1.03 < speed(131072, 8, causal=True) / speed(131072, 1, causal=True) < 1.05


def te_ring_backward_steps(seq: int, cp: int, rank: int) -> list[tuple[int, int, bool]]:
    """(queries, keys, causal) of each step kernel rank ``rank`` runs in Transformer Engine's p2p backward, by its own
    conditions (``AttnFuncWithCPAndKVP2P.backward``, the same in TE 1.x attention.py and 2.x
    dot_product_attention/context_parallel.py): the forward's steps in reverse, step i = cp - 1 the causal diagonal,
    i >= cp - rank - 1 the whole query block over the received block's first half of keys ("lower-triangle"), else
    the second half of the queries over all its keys ("upper-triangle")."""
    chunk = seq // cp
    steps = []
    for i in range(cp):
        if i == cp - 1:
            steps.append((chunk, chunk, True))
        elif i >= cp - rank - 1:
            steps.append((chunk, chunk // 2, False))
        else:
            steps.append((chunk // 2, chunk, False))
    return steps


@pytest.mark.parametrize("gpu", ["h100-sxm", "a100-80gb-sxm"])
@pytest.mark.parametrize("cp", [2, 4, 8, 16])
def test_backward_ring_is_the_forwards_kernels_reversed_and_takes_the_one_kernels_time(gpu, cp):
    """Round 27 review: the backward's kernels, enumerated by TE's backward conditions (not by the forward's), are
    each rank's forward kernels in reverse order; rank cp - 1 runs only the half-key kernels after the diagonal and
    is the slowest; the model's one backward kernel (``ring_key_length``) takes its time at the backward's own
    half-saturation length (A100: 560 keys backward against 260 forward, attention.a100-80gb-sxm)."""
    seq = 32768
    spec = TransformerSpec(layers=1, hidden=4096, heads=32, kv_heads=8, vocab=32000, dropout=False, max_seq_len=seq)
    (backward,) = attention_core(spec, Shard(seq_len=seq, micro_batch=1, cp=cp, precision="bf16"))[1]
    table = kernels._table()["attention"]
    curve = table.get(gpu, table["default"])
    half = curve["kv_tokens_half"]
    half = half["backward"] if isinstance(half, dict) else half
    times = []
    for rank in range(cp):
        steps = te_ring_backward_steps(seq, cp, rank)
        assert steps == list(reversed(te_ring_steps(seq, cp, rank)))
        times.append(sum(executed(q, k, c) * (k + half) / k * causal_slowdown(k, c, "backward", gpu)
                         for q, k, c in steps))
    assert max(times) == times[-1] and times[-1] > times[0]
    fraction, _ = kernels.attention_efficiency(backward, gpu)
    share = kernels.exponential_share(backward, gpu, table.get("executed_fraction"),
                                      "default" if gpu not in table else gpu)
    one_kernel = seq / cp * seq / 2 / (fraction / (curve["backward_max"] * share))
    assert one_kernel == pytest.approx(times[-1], rel=1e-9)
