"""Round 36's held-out rows against their source (docs/calibration/round-36.md "Round 36: held-out runs added (NeMo
25.04's long-sequence Llama 3 8B on DGX-B200)").

NVIDIA/NeMo docs/source/performance/performance_long_sequence.md, "LLAMA3-8B (FP8) - B200" (Container NeMo25.04.rc2,
System DGX-B200): per sequence length the batch, TP / PP / DP / CP and the TFLOP/s per GPU with CP, as printed. A row's
step is NeMo 2.x's llama3 model FLOP of the period (nemo/utils/flops_formulas.py @ 034b17b3, causal attention counted
whole) over the TFLOP/s times the GPUs. The closed form below is that formula, written here independently of the
simulator; the simulator's own model FLOP count must equal it (else the published step and the page's TFLOP/s would
not be one figure). A changed shape, batch, layout or conversion fails here; one row is simulated (0.2 s).
"""

import pytest

from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import moe

# the page's rows: SeqLen (K), batch size, TP, PP, DP, CP, TFLOP/s per GPU with CP
PAGE = [(8, 512, 1, 1, 2, 1, 1671), (16, 256, 1, 1, 4, 1, 1717), (32, 128, 1, 1, 4, 2, 1624),
        (64, 64, 1, 1, 4, 4, 1600), (128, 32, 2, 1, 4, 4, 1588), (256, 16, 4, 1, 4, 4, 1590),
        (512, 8, 4, 1, 4, 8, 1619), (1024, 4, 4, 1, 4, 16, 1608)]
# Llama 3 8B as NeMo's formula reads it: layers, hidden, heads, query groups, FFN, LLM_VOCAB_SIZE_MAP["llama3"]
L, H, A, G, F, V = 32, 4096, 32, 8, 14336, 128256


def nemo2504_flop(gbs: int, s: int) -> float:
    """NeMo 2.x flops_formulas.llama3 before the causal halving: attention's 12 s / h counted whole."""
    return gbs * s * L * H * H * (12 + 12 * G / A + 18 * F / H + 12 * s / H + 6 * V / (L * H))


def name(k: int, gpus: int) -> str:
    return f"nemo2504-llama3-8b-{k}k-{gpus}-b200-fp8"


ROWS = {name(k, tp * pp * dp * cp): (k * 1024, gbs, tp, pp, dp, cp, tflops)
        for k, gbs, tp, pp, dp, cp, tflops in PAGE}


def test_every_row_of_the_table_is_held_and_no_other():
    held = {c["scenario"] for c in validation.held_out_cases() if c["source"] == "nemo2504_long_sequence"}
    assert held == set(ROWS)
    assert "nemo2504_long_sequence" in validation.sources()


@pytest.mark.parametrize("row", sorted(ROWS))
def test_the_row_is_the_pages_layout_and_its_step_the_pages_tflops(row):
    seq, gbs, tp, pp, dp, cp, tflops = ROWS[row]
    scenario = config.load(row)
    t, p = scenario.training, scenario.parallelism
    gpus = tp * pp * dp * cp
    assert scenario.cluster.gpus == gpus and scenario.cluster.gpu.name.startswith("b200")
    assert (p.tp, p.pp, p.dp, p.cp) == (tp, pp, dp, cp)
    assert (t.seq_len, t.global_batch_size, t.precision) == (seq, gbs, "fp8")
    assert seq * gbs == 4 * 2**20   # every row is one 4,194,304-token step
    case = validation.named_case(row)
    step = nemo2504_flop(gbs, seq) / (tflops * 1e12 * gpus)
    assert case["step_time_s"] == pytest.approx(step, abs=5e-5)   # the row's four decimals
    # the simulator's model FLOP is NeMo 25.04's count (causal attention whole): the step gives back the page's figure
    assert moe.model_flop_per_step(scenario.model, seq, gbs) == pytest.approx(nemo2504_flop(gbs, seq), rel=1e-3)
    assert validation.published_tflops(case, scenario) == pytest.approx(tflops, rel=1e-4)


# B200's fused causal attention at its fastest, as NVIDIA measured it (NVIDIA/cudnn-frontend,
# benchmark/sdpa_benchmark_training/artifacts: sdpa_bf16_benchmark_results_NVIDIA_B200.csv, cuDNN 9.13 in NGC 25.09, and
# the bf16 and fp8 rows of sdpa_fp8_benchmark_results_NVIDIA_B200.csv, a later run; batch 1, 128 query and 8 key/value
# heads of 128, causal; both later cuDNN releases than the 25.04 container's): the highest forward and the highest
# backward TFLOP/s of either file over 16K-128K, the causal half counted as flash-attention counts it (forward
# 2 s^2 x heads x head_dim a sequence and layer, backward 2.5 times the forward).
B200_CAUSAL_TFLOPS = {"bf16": (1514.764e12, 1235.860e12), "fp8": (1829.603e12, 1626.615e12)}


def attention_kernel_floor(gbs: int, seq: int, gpus: int, dtype: str) -> float:
    """Seconds a GPU spends at least in its share of the step's causal attention kernels at the fastest measured
    rate: no context-parallel ring, no smaller kernels, every other kernel free."""
    forward = 2 * gbs * seq * seq * H * L / gpus
    fwd_rate, bwd_rate = B200_CAUSAL_TFLOPS[dtype]
    return forward / fwd_rate + 2.5 * forward / bwd_rate


@pytest.mark.parametrize("row", sorted(ROWS))
def test_the_steps_leave_room_for_the_attention_the_halved_count_does_not(row):
    """The whole count is the only one B200's attention kernels allow: every row's step is longer than its bf16 causal
    attention takes at the fastest measured rate; the step the halved count (NeMo's later formula) would give is
    shorter than that attention alone from 256K on, and than fp8 attention at its fastest from 512K on. Fails if the
    rows are converted with the halved count."""
    seq, gbs, tp, pp, dp, cp, tflops = ROWS[row]
    gpus = tp * pp * dp * cp
    assert validation.named_case(row)["step_time_s"] > attention_kernel_floor(gbs, seq, gpus, "bf16")
    halved = gbs * seq * L * H * H * (12 + 12 * G / A + 18 * F / H + 6 * seq / H + 6 * V / (L * H))
    halved_step = halved / (tflops * 1e12 * gpus)
    if seq >= 256 * 1024:
        assert halved_step < attention_kernel_floor(gbs, seq, gpus, "bf16")
    if seq >= 512 * 1024:
        assert halved_step < attention_kernel_floor(gbs, seq, gpus, "fp8")


def test_the_longest_row_runs_and_fits():
    result = validation.run_case(validation.named_case(name(1024, 256)))
    assert result.fits and result.step_time_s > 0
    assert abs(result.error) < 0.15
