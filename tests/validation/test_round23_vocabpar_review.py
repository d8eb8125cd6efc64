"""Round 23's review of the vocabpar2024 held-out rows (docs/calibration/round-23.md, "Round 23: review of the
vocabpar2024 rows"): the stack the scenarios assume, checked against the fork's source, and the sequence-4096 gap
diagnosed against the authors' own re-run and independent kernel measurements. Nothing here moves a constant.

Sources (read with the project's index, stored under NVIDIA/Megatron-LM as the sail-sg/VocabularyParallelism fork):
- the fork's ``megatron/training/arguments.py`` at 4dca7d20 (the commit that also holds the fork's ``input_store.py``
  and a ``pretrain_gpt.sh`` with the same model flags as 4f7d3910's): Megatron-Core models by default
  (``--use-mcore-models`` "DEPRECATED ... mcore models are the default", ``--use-legacy-models`` store_true),
  ``--transformer-impl`` default ``transformer_engine``, ``--enable-layer-redistribution`` (the paper's Redis)
  asserted "only supported with MCore models"; gradient-accumulation fusion on, bias-GELU and bias-dropout fusion on,
  ``--cross-entropy-loss-fusion`` off, LayerNorm, learned absolute positions, biases on, sequence parallelism reset at
  tp 1, only bf16 forces fp32 gradient accumulation.
- the artifact's re-run of the 8-GPU Baseline in its stated environment (nvcr.io/nvidia/pytorch:24.03-py3, one
  8-A100 server): sail-sg/VocabularyParallelism ``artifact/README.md`` (6191c3bf) and
  ``artifact/example-results/full-exp.txt`` (71f07270), the same table in the fork's ``artifact/run_exp.md``
  (3d8a41ab). Its MFU uses Table 5's FLOP (``artifact/show_result_full_exp.py``, 3d8a41ab: the same formula, pp 8,
  312 TFLOP/s, iteration 10's time) and its memory is ``max reserved``; ``artifact/quick_exp.sh`` (4f7d3910), the
  script beside Table 5's quick case, reads ``max allocated``. Table 5's own MFU is over 320 TFLOP/s
  (test_round23_new_held_out.py: the artifact csv's throughput over 320 to the last printed digit), so the two MFUs
  are compared as steps, each through its own peak (docs/calibration/round-23.md, "Round 23: the vocabpar2024 steps at
  320 TFLOP/s (applied)").
- the artifact's per-stage passes (``artifact/exp_one_host.csv``, 4f7d3910), as in test_round23_new_held_out.py.
- FlashAttention-2 on A100, causal, head dim 128 (Dao 2023, Figures 4d/5d; tests/validation/test_flash2_a100_causal.py).
"""

import pytest
from test_flash2_a100_causal import CAUSAL_FORWARD, CAUSAL_FWD_BWD, SEQS, backward_from
from test_round23_new_held_out import ARTIFACT_PEAK, CSV_PASSES, TABLE_5, TABLE_5_PEAK, artifact_flop

from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.workload import kernels, ops

A100_PEAK = 312e12  # A100 SXM dense fp16 tensor peak (the hardware, not a conversion)
RERUN_PEAK = ARTIFACT_PEAK  # show_result_full_exp.py divides the re-run's FLOP by 312 TFLOP/s
# the artifact's re-run, Baseline, 8 GPUs: (sequence, vocabulary) -> (MFU %, peak memory GB = max reserved MiB / 1024)
RERUN = {(2048, 32000): (47.52, 16.01), (2048, 256000): (17.29, 35.56),
         (4096, 32000): (52.82, 22.23), (4096, 256000): (27.63, 33.86)}
# the re-run's 2048 / 256K Baseline is an outlier of its own table (0.69x Table 5's MFU, 1.39x its memory, more memory
# than its own 4096 / 256K run): left out of every comparison below
CONSISTENT = [(2048, 32000), (4096, 32000), (4096, 256000)]


def step_s(mfu_percent: float, s: int, v: int, peak: float) -> float:
    return artifact_flop(8, s, v) / (mfu_percent / 100 * 8 * peak)


def middle_stage_layer_s(s: int, v: int) -> float:
    """The artifact's forward + backward of one transformer layer on the middle stages (1-6, four layers each)."""
    forward, backward = CSV_PASSES[(s, v)]
    return sum(forward[1:7] + backward[1:7]) / 6 / 4 * 1e-6


def layer_time_by_kind(s: int, sustained: bool = True) -> dict[str, float]:
    scenario = config.load(f"vocabpar2024-1f1b-4b-8-a100-s{s}-v32k")
    times: dict[str, float] = {}
    for phase_ops in ops.layer_ops(scenario.model, ops.shard_for(scenario)).values():
        for op in phase_ops:
            times[op.kind] = times.get(op.kind, 0.0) + kernels.op_time_s(op, scenario.cluster.gpu, "fp16", sustained)
    return times


@pytest.mark.parametrize("key", CONSISTENT)
def test_rerun_memory_is_reserved_at_or_above_table_5s_allocated(key):
    """Source against source: max reserved (the re-run) >= max allocated (Table 5), within 8%; measured 1.04-1.08."""
    assert 1.0 <= RERUN[key][1] / TABLE_5[(8, *key)][1] < 1.08


def test_rerun_is_faster_than_table_5_at_sequence_4096_32k_only():
    """Source against source, as steps (Table 5's MFU over 320 TFLOP/s, the re-run's over 312): the authors' re-run in
    the stated container matches Table 5 within 1% except at sequence 4096 with 32K, where it is 9.5% faster (its MFUs
    alone, 52.82 against 47.05%, read 12.3%: the 312 reading of round 23's review)."""
    ratio = {key: step_s(TABLE_5[(8, *key)][0], *key, TABLE_5_PEAK) / step_s(RERUN[key][0], *key, RERUN_PEAK)
             for key in CONSISTENT}
    assert ratio[(2048, 32000)] == pytest.approx(1.0037, abs=0.0005)
    assert ratio[(4096, 256000)] == pytest.approx(1.0071, abs=0.0005)
    assert ratio[(4096, 32000)] == pytest.approx(1.0946, abs=0.0005)
    assert RERUN[(4096, 32000)][0] / TABLE_5[(8, 4096, 32000)][0] == pytest.approx(1.123, abs=0.001)


def test_table_5_grows_faster_with_sequence_than_the_rerun():
    """32K, 8 GPUs, 4096 over 2048: Table 5's step 2.154, the per-stage passes' layer 2.195, the re-run's step 1.975."""
    table_5 = (step_s(TABLE_5[(8, 4096, 32000)][0], 4096, 32000, TABLE_5_PEAK)
               / step_s(TABLE_5[(8, 2048, 32000)][0], 2048, 32000, TABLE_5_PEAK))
    rerun = (step_s(RERUN[(4096, 32000)][0], 4096, 32000, RERUN_PEAK)
             / step_s(RERUN[(2048, 32000)][0], 2048, 32000, RERUN_PEAK))
    passes = middle_stage_layer_s(4096, 32000) / middle_stage_layer_s(2048, 32000)
    assert table_5 == pytest.approx(2.154, abs=0.002)
    assert passes == pytest.approx(2.195, abs=0.002)
    assert rerun == pytest.approx(1.975, abs=0.002)


def test_simulated_sequence_growth_is_the_reruns():
    """The model's step grows 1.95x from 2048 to 4096 tokens (32K, 8 GPUs): within 3% of the re-run's 1.975, 9% under
    Table 5's 2.154. A diagnosis, not a fit: nothing was changed to make it hold."""
    sim = {s: simulate(config.load(f"vocabpar2024-1f1b-4b-8-a100-s{s}-v32k")).summary["step_time_s"]
           for s in (2048, 4096)}
    growth = sim[4096] / sim[2048]
    assert growth == pytest.approx(1.975, rel=0.03)
    assert growth < 2.154 * 0.93


def test_only_the_attention_grows_faster_than_the_tokens():
    """Closed form: GEMM FLOP and HBM bytes are linear in the tokens, attention FLOP quadratic (4x). The model's
    GEMMs and memory-bound kernels grow at most 2x (GEMM efficiency does not fall with more rows: A100 MAMF,
    tests/validation/test_a100_kernels.py), the attention 3-4x; so only the attention can carry a 2.19x layer."""
    t2, t4 = layer_time_by_kind(2048), layer_time_by_kind(4096)
    assert set(t2) == {"gemm", "memory", "attention"}
    assert t4["gemm"] / t2["gemm"] <= 2.0
    assert t4["memory"] / t2["memory"] <= 2.0
    assert 3.0 < t4["attention"] / t2["attention"] <= 4.0
    assert sum(t4.values()) / sum(t2.values()) < 2.05  # 2.011 (1.986 before round 33's sustained attention); csv 2.19


@pytest.mark.parametrize("s", [2048, 4096])
def test_layer_attention_is_flashattention_2s_measured_time(s):
    """The layer's attention (24 heads of 128, causal, fp16) in a short benchmark equals FlashAttention-2's paper rates
    on A100 (forward Figure 5d, backward from Figure 4d; executed FLOP: causal half, backward 2.5x) within 4%."""
    i = SEQS.index(s)
    forward_flop = 0.5 * 4 * s * s * 3072
    expected = forward_flop / (CAUSAL_FORWARD[i] * 1e12) + 2.5 * forward_flop / (
        backward_from(CAUSAL_FORWARD[i], CAUSAL_FWD_BWD[i]) * 1e12)
    assert layer_time_by_kind(s, sustained=False)["attention"] == pytest.approx(expected, rel=0.04)


def test_the_attention_table_5_would_need_is_flashattention_1_speed():
    """With every other kernel as simulated, the attention that reproduces the artifact's middle-stage layer at both
    lengths runs 0.24-0.25 of the A100 peak (executed FLOP): the bottom of FlashAttention-1's 25-40% (Dao 2023,
    abstract), half FlashAttention-2's measured causal rate (155 / 173 TFLOP/s forward + backward at 2k / 4k).
    Round 27 charges the layout copies around the flash kernel (workload/te_flash_layout.py; memory-bound, 0.13 /
    0.17 ms a layer as its review corrected them, three copies forward): the attention left to explain the csv is then
    0.27 / 0.25 of peak (0.29 / 0.25 before round 27's refit), about 0.55 / 0.45 of FA2's rate, no longer one rate at
    both lengths. Round 32 charges Megatron's bias-gradient reductions and the QKV split's backward concatenation
    (te_flash_layout.split_concat), both memory-bound and known: 0.33 / 0.26 of peak before the refit, still inside
    FlashAttention-1's 25-40%, 0.66 / 0.53 of FA2's rate (FA2 at least 1.4x / 2x faster). After round 34's merges
    and refit (17 us a kernel): 0.26 / 0.25 of peak, at FlashAttention-1's floor, one rate again at both lengths."""
    rates = {}
    for s in (2048, 4096):
        t = layer_time_by_kind(s)
        attention_s = middle_stage_layer_s(s, 32000) - t["gemm"] - t["memory"]
        rates[s] = 3.5 * 0.5 * 4 * s * s * 3072 / attention_s / A100_PEAK
    # 0.259, 0.249 after round 34's refit to 17 us a kernel (0.273, 0.252 at 19 us); 0.327, 0.262 (round 32, no
    # refit yet; 0.303, 0.255 without the split's concatenation; 0.270, 0.247 after round 27's refit to 25 us a
    # kernel; 0.290, 0.251 before it). The bounds: FlashAttention-1's 25-40% at its floor, the 4096 row's old band.
    assert 0.25 < rates[2048] < 0.34 and 0.23 < rates[4096] < 0.28
    assert CAUSAL_FWD_BWD[SEQS.index(2048)] * 1e12 / A100_PEAK > 1.4 * rates[2048]
    assert CAUSAL_FWD_BWD[SEQS.index(4096)] * 1e12 / A100_PEAK > 2.0 * rates[4096]
    # Removed in round 34: "rates[2048] / rates[4096] > 1.05, one attention rate no longer serves both lengths"
    # (1.16 round 27, 1.095 round 32, 1.085 before round 34's refit, 1.041 after it): one rate near FlashAttention-1's
    # floor again serves both lengths within 5%, round 23's finding; the ratio rests on the fitted gap, not on a
    # measurement, so no bound on it is asserted.
