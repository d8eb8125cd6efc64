"""Round 26's new held-out rows (docs/calibration.md, "Round 26: new held-out runs"), each step time checked against
the other figures its source printed, so that a wrong batch, GPU count or model shape cannot pass unseen:

- KempnerForge (KempnerInstitute/KempnerForge benchmark reports, 4-GPU H200 nodes): the 175B run
  (benchmarks/175b_360gpu/README.md: 154,523 tokens/s, "Step time 19.09 s", MFU 47.7%, "175.0B (171.8B in layers +
  3.15B embeddings)") and the MFU sweep's row 5 (benchmarks/mfu_scaling/mfu_scaling_2026-04-05.md: 7B on 4 H200, TP 4,
  25,135 tok/s, step 1.30 s, MFU 34.7%). The step is tokens a step / the job's tokens/s; the MFU, 6 N + 12 l h s FLOP
  a token at 989.5 TFLOP/s (the README's H200 peak), reproduces the 7B row's to the printed digit and the 175B's
  within 1% (separate back-half medians).
- FlagPerf (FlagOpen/FlagPerf, training/nvidia/llama3_8B-megatron and llama3_70B-megatron READMEs): token/p/s is
  512 x 8192 / (step x GPUs) (run_pretraining.py), and its MFU column is token/p/s x 6 x 8e9 (70e9) / 989 TFLOP/s:
  reproduced to the printed digit from each row's token/p/s, which ties every row to its GPU count.
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
}
FLAGPERF_PEAK = 989e12  # config_H100x*.py theoryflops
FLAGPERF_TOKENS = 512 * 8192  # run_pretraining.py: whole_tps = 512 * 8192 / time_per_step


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
    assert scenario.training.global_batch_size * scenario.training.seq_len == FLAGPERF_TOKENS
    tpps, printed_mfu, params = FLAGPERF[name]
    assert HELD_OUT[name]["step_time_s"] == pytest.approx(FLAGPERF_TOKENS / (tpps * scenario.cluster.gpus), rel=1e-5)
    if printed_mfu is not None:
        assert 100 * tpps * 6 * params / FLAGPERF_PEAK == pytest.approx(printed_mfu, abs=0.05)


@pytest.mark.parametrize("gpus", [8, 16])
def test_flagperf_pairs_differ_only_in_precision(gpus):
    bf16 = config.load(f"flagperf-llama3-8b-{gpus}-h100-bf16")
    fp8 = config.load(f"flagperf-llama3-8b-{gpus}-h100-fp8")
    assert (bf16.training.precision, fp8.training.precision) == ("bf16", "fp8")
    assert fp8.training.fp8_recipe == "delayed"  # training_adapter_H100_fp8.sh: amax history 1024, max
    assert bf16.model == fp8.model and bf16.parallelism == fp8.parallelism and bf16.cluster == fp8.cluster
