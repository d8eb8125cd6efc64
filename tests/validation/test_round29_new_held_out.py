"""Round 29's held-out row against its source (docs/calibration/round-29.md "Round 29: new held-out runs").

Section title in full: "Round 29: new held-out runs (Megatron-Bridge 26.06)"; its second source is this row's.

NeMo AutoModel's performance summary (NVIDIA-NeMo/Automodel docs/performance-summary.md @ 01926a5c, "Last Updated:
2025-10-02"), pre-training on DGX-H100 in BF16: "DeepSeek V3 671B | 256 | 512 | 1 | 8 | 1 | 4096 | 1 | 4 | 1 | 64 | 8 |
64 | TE + DeepEP | 8.18 | 250 | 1,002" (#GPUs, GBS, MBS, LBS, GA, sequence, TP, PP, CP, EP, VP, FSDP, kernels, time per
global step in s, model TFLOP/s per GPU, tokens/s per GPU). The page's own figures must agree with one another and with
the scenario: the step with the tokens/s (global batch x sequence / (tokens/s x GPUs), within the rounding of the
3-4 digit figures), the TFLOP/s with Megatron-Bridge's DeepSeek-V3 FLOP count without a multi-token-prediction layer
(causal attention halved; the count test_nemo2511_flop_convention.py holds the Megatron-Bridge pages to), and the
scenario's layout with the row's columns. A changed shape, batch, layout or conversion fails here.
"""

import pytest

from simcluster.spec import config
from simcluster.studies import validation
from tests.validation.test_nemo2511_flop_convention import TOLERANCE, nemo_flop_per_token

NAME = "automodel-deepseek-v3-256-h100-bf16"
# the row's columns as printed
ROW = {"gpus": 256, "gbs": 512, "mbs": 1, "lbs": 8, "ga": 1, "seq": 4096, "tp": 1, "pp": 4, "cp": 1, "ep": 64, "vp": 8,
       "fsdp": 64, "step_s": 8.18, "tflops": 250, "tokens": 1002}


@pytest.fixture(scope="module")
def scenario():
    return config.load(NAME)


def test_the_stated_step_is_the_rows_tokens_per_second(scenario):
    step = ROW["gbs"] * ROW["seq"] / (ROW["tokens"] * ROW["gpus"])
    assert step == pytest.approx(ROW["step_s"], rel=0.001)   # 8.1756 s against the printed 8.18
    case = next(c for c in validation.held_out_cases() if c["scenario"] == NAME)
    assert case["step_time_s"] == ROW["step_s"]


def test_the_pages_flop_per_token_is_deepseek_v3_without_its_mtp_layer(scenario):
    published = ROW["tflops"] * 1e12 / ROW["tokens"]
    assert published == pytest.approx(nemo_flop_per_token(scenario, 0), rel=TOLERANCE)
    assert published != pytest.approx(nemo_flop_per_token(scenario, 1), rel=0.03)
    assert scenario.model.mtp_layers == 0


def test_the_scenario_is_the_rows_layout(scenario):
    p, t = scenario.parallelism, scenario.training
    assert scenario.cluster.gpus == ROW["gpus"]
    assert (t.global_batch_size, t.micro_batch_size, t.seq_len) == (ROW["gbs"], ROW["mbs"], ROW["seq"])
    assert (p.tp, p.pp, p.cp, p.ep, p.virtual_stages) == (ROW["tp"], ROW["pp"], ROW["cp"], ROW["ep"], ROW["vp"])
    # FSDP over every data-parallel rank of a stage, one local batch of 8 a step (GA 1: one pipeline schedule)
    assert (p.zero_stage, p.dp) == (3, ROW["fsdp"])
    assert t.global_batch_size // (p.dp * ROW["lbs"]) == ROW["ga"]
    assert scenario.microbatches == ROW["lbs"] // ROW["mbs"]
    assert sum(p.layers_per_stage) == scenario.model.layers and len(p.layers_per_stage) == ROW["pp"] * ROW["vp"]
    assert scenario.model.moe.load == "round_robin"   # the page's "Fake balanced gate" (AutoModel's FakeBalancedGate)


# torchtitan docs/performance.md (the version with the "Llama 3.1 performance numbers" section): Llama 3.1 405B on 128
# H100, FSDP2 16 x TP 8, local batch 2 (global 32): WPS (tokens/s per GPU), MFU as printed, and the local batch of the
# run behind the figure: the BF16 figure is pytorch/torchtitan PR #481's "with current config (TP=8, FSDP=16)", whose
# llama3_405b.toml sets batch_size 1 (round 36, docs/calibration/round-36.md "Round 36: torchtitan's BF16 405B batch and
# FSDP2's copy-out"): global 16
TORCHTITAN_405B = {
    "torchtitan-llama31-405b-128-h100-bf16": (109, 0.290, "bf16", 1),
    "torchtitan-llama31-405b-128-h100-fp8": (177, 0.2346, "fp8", 2),
    "torchtitan-llama31-405b-128-h100-fp8-asynctp": (185, 0.2452, "fp8", 2),
}
# torchtitan's MFU divides by the H100 SXM's dense peak ("we use the peak number of SXM directly", the page's footnote),
# 989 TFLOP/s in bf16, twice that for Float8 (its footnote: the float8 MFU is over the fp8 peak)
H100_SXM_BF16_PEAK = 989e12


def torchtitan_flop_per_token(m, seq_len: int) -> float:
    """torchtitan's count of the time: 6 x the parameters without the token embedding, plus 12 x layers x heads x
    head dim x sequence for attention (causal not halved)."""
    h, kv = m.hidden, m.n_kv_heads * m.d_head
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * m.ffn_hidden + 2 * h
    params = m.layers * per_layer + h * m.vocab + h   # the output layer and the final norm; no embedding
    return 6 * params + 12 * m.layers * m.heads * m.d_head * seq_len


@pytest.mark.parametrize("name", sorted(TORCHTITAN_405B))
def test_torchtitan_405b_rows_are_the_pages_wps_at_sequence_8192(name):
    wps, mfu, precision, local = TORCHTITAN_405B[name]
    scenario = config.load(name)
    t, p = scenario.training, scenario.parallelism
    assert (scenario.cluster.gpus, p.dp, p.tp, t.global_batch_size, t.micro_batch_size) == (128, 16, 8, 16 * local,
                                                                                            local)
    assert (t.precision, t.activation_recompute, t.seq_len) == (precision, "full", 8192)
    case = next(c for c in validation.held_out_cases() if c["scenario"] == name)
    assert case["step_time_s"] == pytest.approx(16 * local * 8192 / (wps * 128), rel=1e-4)
    peak = H100_SXM_BF16_PEAK * (2 if precision == "fp8" else 1)
    # the printed MFU at 8192 tokens a sequence (within the page's rounding), not at Llama 2's 4096
    assert wps * torchtitan_flop_per_token(scenario.model, 8192) / peak == pytest.approx(mfu, rel=0.003)
    assert wps * torchtitan_flop_per_token(scenario.model, 4096) / peak != pytest.approx(mfu, rel=0.02)
