"""GB200's fp8 GEMMs at its power cap, against one GPU held there by Azure's benchmark, and against H200 on the same
benchmark (docs/calibration/round-33.md, "Round 33: the GB200's GEMMs at its power cap, against H200 on the same
benchmark").

Azure/AI-benchmarking-guide runs superbench's ``cublaslt_gemm`` (``Benchmarks/NVIDIA/GEMMCublasLt.py``: one process,
one GPU, fp8 e4m3, random inputs, 10,000 warm-up and 1,000 timed calls a shape) on ND GB200 v6 (NVIDIA GB200 185GB,
CUDA 12.8, driver 570.133.20; ``Azure_Results/ND_GB200_v6_results.md``) and ND H200 v5 (CUDA 12.6, driver 560.28.03;
``Azure_Results/ND_H200_v5_results.md``). Half a second to minutes of back-to-back GEMMs: each GPU at its power cap.
The shapes of at least 4096^3 are used (1024^3, 2048^3, 1024x2145x1024 and the 802816 x 192 rows are launch- and
HBM-bound).

The GB200's rate is flat over those shapes (2825.6-2906.9 TFLOP/s) where the model's burst curve rises 31%: the cap
sets it. efficiency.yaml ``sustained_gemm_ceiling_tflops`` takes the highest (2906.9) as the most a GB200's fp8 GEMM
sustains; before it the model ran the Llama 3.1 405B layer's deep GEMMs at up to 3060 (1.053 of it).
"""

import dataclasses

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.spec import hardware
from simcluster.workload import kernels, power_clock
from simcluster.workload.ops import Op
from tests.validation.test_blackwell_405b_gemms import layer_fp8_gemms, weighted_rate

GB200 = hardware.gpu("gb200")
H200 = hardware.gpu("h200-sxm")
CEILING = 2906.9e12  # the highest of AZURE_GB200_FP8: efficiency.yaml sustained_gemm_ceiling_tflops.gb200.fp8

# TFLOP/s after 10,000 warm-up calls, lone GPU, cuBLASLt fp8 e4m3 (M, N, K)
AZURE_GB200_FP8 = {(4096, 4096, 4096): 2834.6, (8192, 8192, 8192): 2876.6, (16384, 16384, 16384): 2906.9,
                   (32768, 32768, 32768): 2825.6, (6144, 12288, 12288): 2895.6}
AZURE_H200_FP8 = {(4096, 4096, 4096): 1249.1, (8192, 8192, 8192): 1300.6, (16384, 16384, 16384): 1366.3,
                  (32768, 32768, 32768): 1349.5, (6144, 12288, 12288): 1318.0}
MSMF_B200_FP8 = 2788.0  # TFLOP/s, B200 at its cap (efficiency.yaml sustained_share_source)
SCENARIO_GB200 = "mlperf50-llama31-405b-512-gb200-fp8"  # Tyche; the same layer shapes as the removed Carina 512 row
SCENARIO_H200 = "mlperf50-llama31-405b-512-h200-fp8"


def _op(m, n, k):
    # superbench sets CUBLASLT_MATMUL_DESC_FAST_ACCUM for fp8 (test_h100_gemm_inference_benchmarks.py)
    return dataclasses.replace(Op("gemm", "gemm", 2.0 * m * n * k, 0.0, m, n, k, 1), split_accumulator=False)


def _model_tflops(gpu, shape, sustained=True):
    """The model's fp8 GEMM timed as the benchmark loop times it: roofline plus the benchmark's launch overhead."""
    op = _op(*shape)
    compute_s, memory_s = kernels.roofline_s(op, gpu, "fp8", sustained=sustained)
    return op.flop / (max(compute_s, memory_s) + kernels.launch_overhead_s()) / 1e12


def test_the_gb200_rate_at_the_cap_is_flat_where_the_burst_model_rises():
    """The premise of a ceiling rather than a lower clock: measured highest / lowest 1.029 over a 512x range of FLOP;
    the short-benchmark model rises 1.31 over the same shapes (3139 to 4104), H200's measured curve 1.09."""
    measured = AZURE_GB200_FP8.values()
    assert max(measured) / min(measured) < 1.03
    burst = [_model_tflops(GB200, s, sustained=False) for s in AZURE_GB200_FP8]
    assert max(burst) / min(burst) > 1.25
    assert max(AZURE_H200_FP8.values()) / min(AZURE_H200_FP8.values()) > 1.08


def test_no_gemm_of_the_405b_layer_runs_above_the_gb200s_sustained_maximum():
    """Before the ceiling 7 of the 12 ran above it (mlp_up forward and mlp_down backward 3060 TFLOP/s, 1.053); now
    none does, and the deepest sit on it. Fails without efficiency.yaml's gb200 entry."""
    rates = {key: rate for key, (rate, _) in layer_fp8_gemms(SCENARIO_GB200).items()}
    assert len(rates) == 12
    assert max(rates.values()) <= CEILING * (1 + 1e-9)
    assert max(rates.values()) == pytest.approx(CEILING, rel=1e-6)


def test_the_ceiling_is_the_power_caps_not_a_short_benchmarks():
    """A short benchmark (boost clock) of 16384^3 still runs far above it (4066 TFLOP/s in the model, 1.40x): the
    ceiling holds only for GEMMs at the cap."""
    assert _model_tflops(GB200, (16384, 16384, 16384), sustained=False) > 1.3 * CEILING / 1e12


@pytest.mark.parametrize("shape", [(8192, 8192, 8192), (6144, 12288, 12288)])
def test_gb200_training_clock_matches_the_lone_gpu_where_the_ceiling_does_not_bind(shape, monkeypatch):
    """Where the model's curve sits below the plateau its clock (clock_ratio 0.78 by the cube law from B200, GEMM
    share 0.966; the ceiling taken out, so the clock alone is tested) is what one GB200 holds at the cap: measured /
    model 0.997 and 1.005. 2%: fails at clock_ratio 0.76 (1.023 / 1.032) and, at 8192^3, at 0.80 (0.972). Unlike
    Hopper, whose training clock sits 4-8% below the same benchmark's lone GPU (test_h100_gemm_inference_benchmarks.py;
    here H200 1.04-1.08)."""
    monkeypatch.setattr(power_clock, "sustained_gemm_ceiling", lambda gpu_name, precision: None)
    assert AZURE_GB200_FP8[shape] / _model_tflops(GB200, shape) == pytest.approx(1.0, abs=0.02)


def test_the_gb200_plateau_and_b200s_rate_at_its_cap_agree_by_the_model_clocks(monkeypatch):
    """Two benchmarks at the cap, two parts: the Azure GB200 plateau's highest (lone GPU, superbench cuBLASLt, first
    heuristic algorithm) over S. Bekman's B200 MSMF fp8 point (2788 TFLOP/s at 3072x18944x6144, 975-982 W, all 8 GPUs
    computing, torch's cuBLASLt) is 1.043; the model at that shape, ceiling taken out (clock_ratio 0.78 against 0.80,
    152 against 148 SMs, 5.0 against 4.5 PFLOP/s), 1.054: 0.989. A plateau from a poor kernel choice of that
    cuBLASLt would sit below B200's best shape by the model's clocks; it does not (round 33 review). 2%: fails at a
    GB200 clock_ratio of 0.80 (0.965); passes at 0.76 (1.015): it bounds the clock from above only."""
    monkeypatch.setattr(power_clock, "sustained_gemm_ceiling", lambda gpu_name, precision: None)
    shape = (3072, 18944, 6144)
    model = _model_tflops(GB200, shape) / _model_tflops(hardware.gpu("b200"), shape)
    assert (max(AZURE_GB200_FP8.values()) / MSMF_B200_FP8) / model == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("shape", sorted(AZURE_H200_FP8))
def test_h200_training_clock_sits_below_the_lone_gpu_on_the_same_benchmark(shape):
    """H200 measured / model at the training clock 1.040-1.079 (4096^3 1.079, 8192^3 1.059, 16384^3 1.074, 32768^3
    1.040, 6144x12288x12288 1.060): the Hopper training clock (0.80, a reading of fp8 GEMMs with communication
    beside them, DeepGEMM#120) under a lone GPU's, as for H100 (1.0-1.125 there)."""
    assert 1.0 <= AZURE_H200_FP8[shape] / _model_tflops(H200, shape) <= 1.125


@pytest.mark.xfail(strict=True, reason="open: at 4096^3 the model's GB200 GEMM is 0.85 of the lone GPU (2419 against "
                   "2835 TFLOP/s): its tiles quantise 4096^3 on 152 SMs where cuBLAS on Blackwell does not")
def test_gb200_training_clock_at_4096_cube_matches_the_lone_gpu():
    shape = (4096, 4096, 4096)
    assert AZURE_GB200_FP8[shape] / _model_tflops(GB200, shape) == pytest.approx(1.0, abs=0.05)


@pytest.mark.xfail(strict=True, reason="open: the model's 405B layer GEMMs run 2.57x faster on GB200 than on H200 "
                   "(2891 / 1125 TFLOP/s, FLOP-weighted); the same benchmark measures 2.09-2.27x at the deep shapes. "
                   "Part is H200's split-accumulated backward GEMMs (about 12% in the model), the rest the Hopper "
                   "training clock's communication share, which Blackwell's clock does not carry")
def test_the_405b_layers_gemm_ratio_gb200_over_h200_is_the_same_benchmarks():
    measured = max(AZURE_GB200_FP8[s] / AZURE_H200_FP8[s] for s in AZURE_GB200_FP8)
    assert weighted_rate(SCENARIO_GB200) / weighted_rate(SCENARIO_H200) <= measured * 1.05


@pytest.mark.parametrize(("table", "key"), [
    ({"gb200": {"fp8": "fast"}}, "sustained_gemm_ceiling_tflops.gb200.fp8"),
    ({"gb200": {"fp8": -1.0}}, "sustained_gemm_ceiling_tflops.gb200.fp8"),
    ({"gb200": {"fp8": 0}}, "sustained_gemm_ceiling_tflops.gb200.fp8"),
    ({"gb200": {"fp8": float("inf")}}, "sustained_gemm_ceiling_tflops.gb200.fp8"),
    ({"gb200": {"fp8": True}}, "sustained_gemm_ceiling_tflops.gb200.fp8"),
    ({"gb200": {"fp8": None}}, "sustained_gemm_ceiling_tflops.gb200.fp8"),
    ({"gb200": [2906.9]}, "sustained_gemm_ceiling_tflops.gb200"),
    ([2906.9], "sustained_gemm_ceiling_tflops"),
])
def test_a_bad_ceiling_is_refused_naming_its_key(monkeypatch, table, key):
    shipped = dict(power_clock._table())
    shipped["sustained_gemm_ceiling_tflops"] = table
    monkeypatch.setattr(power_clock, "_table", lambda: shipped)
    with pytest.raises(ScenarioError, match=key):
        kernels.roofline_s(_op(8192, 8192, 8192), GB200, "fp8")


def test_gpus_and_precisions_without_a_reading_have_no_ceiling():
    assert power_clock.sustained_gemm_ceiling("gb200", "bf16") is None
    assert power_clock.sustained_gemm_ceiling("b200", "fp8") is None
    assert power_clock.sustained_gemm_ceiling("gb200", "fp8") == CEILING
