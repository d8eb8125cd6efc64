"""Round 26's new held-out rows (docs/calibration/round-26.md, "Round 26: new held-out runs"), each step time checked
against the other figures its source printed, so that a wrong batch, GPU count or model shape cannot pass unseen:

- KempnerForge (KempnerInstitute/KempnerForge benchmark reports, 4-GPU H200 nodes): the 175B run
  (benchmarks/175b_360gpu/README.md: 154,523 tokens/s, "Step time 19.09 s", MFU 47.7%, "175.0B (171.8B in layers +
  3.15B embeddings)") and the MFU sweep's row 5 (benchmarks/mfu_scaling/mfu_scaling_2026-04-05.md: 7B on 4 H200, TP 4,
  25,135 tok/s, step 1.30 s, MFU 34.7%). The step is tokens a step / the job's tokens/s; the MFU, 6 N + 12 l h s FLOP
  a token at 989.5 TFLOP/s (the README's H200 peak), reproduces the 7B row's to the printed digit and the 175B's
  within 1% (separate back-half medians).
- FlagPerf (FlagOpen/FlagPerf, training/nvidia/llama3_8B-megatron and llama3_70B-megatron READMEs): token/p/s is
  512 x 8192 / (step x GPUs) (run_pretraining.py), and its MFU column is token/p/s x 6 x 8e9 (70e9) / 989 TFLOP/s
  (1979 TFLOP/s for the bf16+fp8 rows' lower bound): reproduced to the printed digit from each row's token/p/s, which
  checks the transcription of token/p/s (the MFU is per GPU: it does not check the GPU count). The GPU count and
  layout are checked against each row's "配置" (nodes x GPUs) and "parallel" (PPxDPyTPz) columns.
"""

import pytest

from simcluster.spec import config
from simcluster.studies import validation

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}

# KempnerForge: scenario -> (job tokens/s, printed step s, printed MFU %)
KEMPNERFORGE = {
    "kempnerforge-175b-360-h200": (154_523, 19.09, 47.7),
    "kempnerforge-7b-4-h200-tp4": (25_135, 1.30, 34.7),
}
H200_PEAK = 989.5e12  # the 175B README: "the standard H200 dense bf16 peak of 989.5 TFLOP/s"

# FlagPerf: scenario -> (token/p/s, printed MFU % or None for the bf16+fp8 rows' range, the MFU formula's parameters)
FLAGPERF = {
    "flagperf-llama3-8b-8-h100-bf16": (8103, 39.3, 8e9),
    "flagperf-llama3-8b-8-h100-fp8": (10486, None, 8e9),
    "flagperf-llama3-8b-16-h100-bf16": (7914, 38.4, 8e9),
    "flagperf-llama3-8b-16-h100-fp8": (10280, None, 8e9),
    "flagperf-llama3-70b-64-h100-bf16": (851, 36.1, 70e9),
    "flagperf-llama3-8b-440-h100-bf16": (7047, 34.2, 8e9),  # admitted by the round 26 review
}
FLAGPERF_PEAK = 989e12  # config_H100x*.py theoryflops
FLAGPERF_FP8_PEAK = 1979e12  # the READMEs' note: "fp8算力为1979TFLOPS", the bf16+fp8 MFU range's lower bound
# FlagPerf: scenario -> the row's "配置" GPU count and "parallel" column, (pp, dp, tp)
FLAGPERF_LAYOUT = {
    "flagperf-llama3-8b-8-h100-bf16": (8, (1, 4, 2)),  # H100单机8卡（1x8）, PP1DP4TP2
    "flagperf-llama3-8b-8-h100-fp8": (8, (1, 4, 2)),
    "flagperf-llama3-8b-16-h100-bf16": (16, (1, 8, 2)),  # H100二机16卡（2x8）, PP1DP8TP2
    "flagperf-llama3-8b-16-h100-fp8": (16, (1, 8, 2)),
    "flagperf-llama3-70b-64-h100-bf16": (64, (4, 2, 8)),  # H100八机64卡（8x8）, PP4DP2TP8
    "flagperf-llama3-8b-440-h100-bf16": (440, (1, 220, 2)),  # H100-55机440卡（55x8）, PP1DP220TP2
}
# The bf16+fp8 rows' printed MFU ranges: 8 GPUs "25.4%-50.6%", 16 GPUs "24.9%-49.9%". The lower bounds and the
# 16-GPU upper bound reproduce from token/p/s; the 8-GPU upper bound does not (10486 x 6 x 8e9 / 989e12 = 50.9%, not
# 50.6%): the README's two figures for that row disagree by 0.3 points, and its lower bound agrees with 10486.
FLAGPERF_FP8_MFU = {"flagperf-llama3-8b-8-h100-fp8": (25.4, None), "flagperf-llama3-8b-16-h100-fp8": (24.9, 49.9)}
FLAGPERF_TOKENS = 512 * 8192  # run_pretraining.py: whole_tps = 512 * 8192 / time_per_step
# The 440-GPU row's "fix_hp": gbs=1760. Read with run_pretraining.py's hard-coded 512, its 7047 token/p/s would be
# 7047 x 1760 / 512 = 24,224 tokens/s per GPU really run, an MFU of 118% at 989 TFLOP/s: so its token/p/s counts 1,760.
FLAGPERF_GBS = {"flagperf-llama3-8b-440-h100-bf16": 1760}


def test_round_26_rows_are_the_rules_rows_held_out_with_their_sources():
    by_source = {}
    for name, case in HELD_OUT.items():
        by_source.setdefault(case["source"], set()).add(name)
    assert by_source["kempnerforge_h200"] == set(KEMPNERFORGE)
    assert by_source["flagperf_mcore06_h100"] == set(FLAGPERF)
    assert {"kempnerforge_h200", "flagperf_mcore06_h100"} <= set(validation.sources())
    assert not any(c["scenario"] in KEMPNERFORGE.keys() | FLAGPERF.keys() for c in validation.cases())


@pytest.mark.parametrize("name", sorted(KEMPNERFORGE))
def test_kempnerforge_step_is_the_jobs_tokens_per_second_of_the_scenarios_batch(name):
    scenario = config.load(name)
    tokens = scenario.training.global_batch_size * scenario.training.seq_len
    tps, printed_step, _ = KEMPNERFORGE[name]
    assert HELD_OUT[name]["step_time_s"] == pytest.approx(tokens / tps, rel=1e-4)
    assert HELD_OUT[name]["step_time_s"] == pytest.approx(printed_step, abs=0.005)  # printed to 2 decimals


@pytest.mark.parametrize("name", sorted(KEMPNERFORGE))
def test_kempnerforge_mfu_is_6n_plus_attention_of_the_scenarios_model(name):
    scenario = config.load(name)
    m, t = scenario.model, scenario.training
    flop_per_token = 6 * m.params + 12 * m.layers * m.hidden * t.seq_len
    tps, _, printed_mfu = KEMPNERFORGE[name]
    mfu = 100 * flop_per_token * tps / scenario.cluster.gpus / H200_PEAK
    # the 7B row to the printed digit; the 175B within 1% (its MFU and tokens/s are separate back-half medians)
    assert mfu == pytest.approx(printed_mfu, abs=0.05 if name.endswith("tp4") else 0.01 * printed_mfu)


def test_kempnerforge_175b_is_the_readmes_parameter_count():
    m = config.load("kempnerforge-175b-360-h200").model
    assert m.non_embedding_params / 1e9 == pytest.approx(171.8, abs=0.05)
    assert m.embedding_params / 1e9 == pytest.approx(3.15, abs=0.005)


@pytest.mark.parametrize("name", sorted(FLAGPERF))
def test_flagperf_step_is_run_pretrainings_tokens_over_token_per_gpu_second(name):
    scenario = config.load(name)
    tokens = FLAGPERF_GBS.get(name, 512) * 8192
    assert scenario.training.global_batch_size * scenario.training.seq_len == tokens
    tpps, printed_mfu, params = FLAGPERF[name]
    assert HELD_OUT[name]["step_time_s"] == pytest.approx(tokens / (tpps * scenario.cluster.gpus), rel=1e-5)
    if printed_mfu is not None:
        assert 100 * tpps * 6 * params / FLAGPERF_PEAK == pytest.approx(printed_mfu, abs=0.05)


@pytest.mark.parametrize("gpus", [8, 16])
def test_flagperf_pairs_differ_only_in_precision(gpus):
    bf16 = config.load(f"flagperf-llama3-8b-{gpus}-h100-bf16")
    fp8 = config.load(f"flagperf-llama3-8b-{gpus}-h100-fp8")
    assert (bf16.training.precision, fp8.training.precision) == ("bf16", "fp8")
    assert fp8.training.fp8_recipe == "delayed"  # training_adapter_H100_fp8.sh: amax history 1024, max
    assert bf16.model == fp8.model and bf16.parallelism == fp8.parallelism and bf16.cluster == fp8.cluster


@pytest.mark.parametrize("name", sorted(FLAGPERF))
def test_flagperf_gpus_and_layout_are_the_rows_configuration_and_parallel_columns(name):
    scenario = config.load(name)
    gpus, layout = FLAGPERF_LAYOUT[name]
    p = scenario.parallelism
    assert scenario.cluster.gpus == gpus == p.pp * p.dp * p.tp
    assert (p.pp, p.dp, p.tp) == layout


@pytest.mark.parametrize("name", sorted(FLAGPERF_FP8_MFU))
def test_flagperf_fp8_rows_mfu_range_reproduces_from_their_token_per_gpu_second(name):
    tpps, _, params = FLAGPERF[name]
    lower, upper = FLAGPERF_FP8_MFU[name]
    assert 100 * tpps * 6 * params / FLAGPERF_FP8_PEAK == pytest.approx(lower, abs=0.05)
    if upper is not None:
        assert 100 * tpps * 6 * params / FLAGPERF_PEAK == pytest.approx(upper, abs=0.05)
