"""The Triton FlashAttention llm-foundry ran, on H100, against llm-foundry's own sequence-length sweeps.

Source: mosaicml/llm-foundry, scripts/train/benchmarking/README.md, table "H100 80GB BF16": MPT models on 8 H100,
FSDP FULL_SHARD, amp_bf16, the sequence swept from 512 to 32,768 at about 1M tokens a batch, rows without
activation checkpointing only (the checkpointed ones re-run the forward). Shapes from the same repository's
scripts/train/yamls/pretrain/mpt-{760m,1b,3b}.yaml (heads of 128, attn_impl: triton).

What it measures: the time per token grows linearly with the sequence (every point within 3% of one straight
line), and only attention's cost per token grows with it (12 * layers * d_model * s counted FLOP a
token, forward and backward; the GEMMs, norms and FSDP traffic per token do not depend on s). The least-squares
slope of seconds per token against s is therefore the attention kernels' time per counted FLOP, forward plus
backward, in training (sustained clock, FSDP beside it): no other constant of the model enters it. The held-out
MPT rows (sequence 2,048 on 8 and 64 GPUs, scenarios mpt-*-h100) are not used.

The model's slope is the same least squares over the kernel model's attention time (kernels.roofline_s of
ops.attention_core, flash_triton) at the same lengths. Tolerance 10%: the three models' measured slopes agree
within 3% of each other once divided by their FLOP per token (0.293-0.300 of the H100 bf16 peak per counted
FLOP); the model with the former Hopper share (0.19 forward) was 2.5x too slow on all three.
"""

import numpy as np
import pytest

from simcluster.spec import hardware
from simcluster.spec.model import TransformerSpec
from simcluster.workload import kernels
from simcluster.workload.ops import Shard, attention_core

H100 = hardware.gpu("h100-sxm")

# model: (layers, d_model, heads), {sequence: tokens per second per GPU}, rows without activation checkpointing.
SWEEPS = {
    "mpt-760m": ((24, 1536, 12), {512: 83749, 1024: 78581, 4096: 55459, 8192: 41825, 16384: 27815,
                                  32768: 16291}),
    "mpt-1b": ((24, 2048, 16), {512: 52275, 1024: 48910, 2048: 45455, 4096: 38535, 8192: 29157, 16384: 19649,
                                32768: 12025}),
    "mpt-3b": ((32, 2560, 20), {512: 27965, 1024: 27046, 4096: 20964, 8192: 16578, 16384: 11152}),
}
TOLERANCE = 0.10
LINEARITY = 0.03  # every point within 3% of the straight line (measured: 2.6% at most)


def _slope(seqs, seconds_per_token) -> float:
    return float(np.polyfit(np.asarray(seqs, float), np.asarray(seconds_per_token, float), 1)[0])


def _model(layers: int, hidden: int, heads: int) -> TransformerSpec:
    return TransformerSpec(layers=layers, hidden=hidden, heads=heads, vocab=50368, dropout=False,
                           max_seq_len=65536)


def simulated_attention_s_per_token(spec: TransformerSpec, seq: int) -> float:
    shard = Shard(seq_len=seq, micro_batch=1, attention="flash_triton", precision="bf16")
    forward, backward = attention_core(spec, shard)
    seconds = sum(max(kernels.roofline_s(op, H100, "bf16")) for op in forward + backward)
    return spec.layers * seconds / seq


@pytest.mark.parametrize("name", SWEEPS)
def test_time_per_token_is_linear_in_the_sequence(name):
    _, measured = SWEEPS[name]
    seqs = np.asarray(sorted(measured), float)
    t = np.asarray([1 / measured[s] for s in sorted(measured)])
    residual = (t - np.polyval(np.polyfit(seqs, t, 1), seqs)) / t
    assert np.abs(residual).max() <= LINEARITY


@pytest.mark.parametrize("name", SWEEPS)
def test_triton_attention_on_h100_matches_the_sweeps_slope(name):
    (layers, hidden, heads), measured = SWEEPS[name]
    seqs = sorted(measured)
    measured_slope = _slope(seqs, [1 / measured[s] for s in seqs])
    spec = _model(layers, hidden, heads)
    simulated_slope = _slope(seqs, [simulated_attention_s_per_token(spec, s) for s in seqs])
    assert simulated_slope == pytest.approx(measured_slope, rel=TOLERANCE)
