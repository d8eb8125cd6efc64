"""The clock of a power-capped GPU without a reading of its own: the cube law on the dynamic power, and what bounds it
(efficiency.yaml power_capped_clock_source, blackwell_clock_source; docs/calibration.md, "Round 36: the clock of a
power-capped GPU").

Independent truths:
- CMOS dynamic power P = C V^2 f, with the voltage never falling as the clock rises (monotone DVFS tables; Weste and
  Harris, CMOS VLSI Design, ch. 5): between V ~ f (P ~ f^3) and V flat at its floor (P ~ f). The board's idle power
  (hardware.yaml idle_power) does not scale with the SM clock, so the power that does is tdp - idle_power, the same
  dynamic power as power_clock's energy balance.
- Readings: H100 at its 700 W cap 1575 MHz of the 1980 MHz boost (deepseek-ai/DeepGEMM#120); B200 at 1000 W 1580 MHz
  (flashinfer-ai/flashinfer#2899), its saturated GEMMs 1399-1443 MHz and B300's 1455 MHz at 1100 W (mamf-finder MSMF,
  scripts/blackwell_kernels.py); a GB300 capped at 500 W of 1400 W ran cuBLAS GEMMs at ~617 TFLOP/s against
  ~1600-2174 at 1400 W, the clock locked at its 2070 MHz maximum (facebookexperimental/triton#2023, 2026). A GEMM's
  work per clock does not fall as the clock falls (B300 NVFP4: 22% above linear at 1005 of 2032 MHz, ademeure/
  QuickRunCUDA b300_clean/NVFP4_CUTEDSL_THROTTLE_DEEP_DIVE.md), so a throughput ratio bounds the clock ratio from above.

- The 500 W H100's own GEMMs (pytorch/FBGEMM#2546, 2024, "H100 500W", Meta's power-capped part): bf16 and
  fast-accumulation fp8 at 8192^3, 65536 x 8192 x 7168 and 65536 x 3584 x 8192, 1-13 ms a call (the longest well
  past the power controller's window): 0.67-0.73 of the model's GEMM at the full clock, median 0.714.

Tolerances: 0.006 on a clock_ratio (the 0.01 grid it is given on); 3% on B300's GEMM clock (round 23's tolerance for
the law between two parts' readings); 5% on the median of the 500 W H100's six GEMM readings over the model at its
clock_ratio (the model's error on one deep H100 shape, a few percent; the fp8 / bf16 pair of the same readings holds
3%: test_fp8_dense_layer_gemms.py). Fails with the 500 W H100 at the whole-TDP cube law (0.71), at n = 1 (0.54) or at
round 35's 0.65 (1.10), with GB200 or GB300 moved by 0.01, or were the deep-cap GB300 reading within the cube law's
reach.
"""

import math
import statistics

import pytest
from scripts_loader import load_script

from simcluster.spec import hardware
from simcluster.workload import kernels, power_clock
from tests.validation.test_fp8_dense_layer_gemms import FBGEMM_PAIRS
from tests.validation.test_fp8_gemm_shapes import _op

bk = load_script("blackwell_kernels")

H100_CAPPED_MHZ, H100_BOOST_MHZ = 1575.0, 1980.0     # DeepGEMM#120 at 700 W; H100 SXM boost
B200_MHZ, B200_PEAK_MHZ = 1580.0, 1965.0             # flashinfer#2899 at 1000 W; B200 boost
GB300_DEEP_CAP_W = 500.0                             # facebookexperimental/triton#2023
GB300_DEEP_CAP_TFLOPS, GB300_RATED_TFLOPS = 617.0, (1600.0, 2174.0)
GRID = 0.006


def _dynamic_w(gpu_name: str) -> float:
    gpu = hardware.gpu(gpu_name)
    return gpu.tdp - gpu.idle_power


def _law_mhz(gpu_name: str, reference: str, reference_mhz: float, n: float = 3.0) -> float:
    """The clock at the cap from a reading of the same SM design: dynamic power per SM ~ f^n."""
    power = _dynamic_w(gpu_name) / kernels.sm_count(gpu_name)
    reference_power = _dynamic_w(reference) / kernels.sm_count(reference)
    return reference_mhz * (power / reference_power) ** (1.0 / n)


def test_the_500w_h100_runs_at_the_cube_law_on_its_dynamic_power():
    """1575 x (430 / 630)^(1/3) = 1387 MHz of 1980: 0.70 (the whole TDP, (500 / 700)^(1/3), gave 0.71)."""
    law = _law_mhz("h100-sxm-96gb-500w", "h100-sxm", H100_CAPPED_MHZ)
    assert law == pytest.approx(power_clock.capped_clock(H100_CAPPED_MHZ, 430.0, 630.0))
    assert kernels.clock_ratio("h100-sxm-96gb-500w") == pytest.approx(law / H100_BOOST_MHZ, abs=GRID)


def test_the_500w_h100_clock_lies_between_the_voltage_floor_and_the_cube_law():
    """n = 1: 1575 x 0.683 = 1075 MHz (0.54); n = 3: 0.70. The model takes the upper bound."""
    low = _law_mhz("h100-sxm-96gb-500w", "h100-sxm", H100_CAPPED_MHZ, n=1.0) / H100_BOOST_MHZ
    high = _law_mhz("h100-sxm-96gb-500w", "h100-sxm", H100_CAPPED_MHZ) / H100_BOOST_MHZ
    assert low == pytest.approx(0.543, abs=0.002)
    assert low < kernels.clock_ratio("h100-sxm-96gb-500w") <= high + GRID


def test_the_500w_h100s_own_gemms_run_at_its_clock_ratio():
    """FBGEMM#2546's six GEMMs on the 500 W H100 over the model at clock_ratio (GEMM sustained share 1 on Hopper):
    median 1.02 at 0.70 (0.954-1.049); 1.10 at 0.65, 1.32 at n = 1's 0.54. The clock is read, not only bounded."""
    gpu = hardware.gpu("h100-sxm-96gb-500w")
    ratio = kernels.clock_ratio("h100-sxm-96gb-500w")
    readings = [tflops * 1e12 / (kernels.achieved_flop_per_s(_op(shape), gpu, precision) * ratio)
                for shape, pair in FBGEMM_PAIRS.items()
                for precision, tflops in zip(("bf16", "fp8"), pair, strict=True)]
    assert statistics.median(readings) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("gpu_name", ["gb200", "gb300"])
def test_blackwell_parts_without_a_reading_follow_b200_by_the_same_law(gpu_name):
    peak_mhz = (B200_PEAK_MHZ * hardware.gpu(gpu_name).peak_flop_per_s("fp8")
                / hardware.gpu("b200").peak_flop_per_s("fp8") * kernels.sm_count("b200") / kernels.sm_count(gpu_name))
    law = _law_mhz(gpu_name, "b200", B200_MHZ)
    assert kernels.clock_ratio(gpu_name) == pytest.approx(law / peak_mhz, abs=GRID)


@pytest.mark.parametrize("n", [1.0, 3.0])
def test_b300s_reading_cannot_tell_the_two_limits_apart(n):
    """B200's 1399-1443 MHz GEMM clock carried to B300: 1415-1459 MHz at n = 3, 1447-1492 at n = 1; measured 1455."""
    low, high = (_law_mhz("b300", "b200", mhz, n=n) for mhz in bk.B200_GEMM_MHZ)
    assert (low + high) / 2 == pytest.approx(bk.B300_GEMM_MHZ, rel=0.03)


def test_a_deep_cap_lowers_the_clock_far_more_than_the_cube_law():
    """GB300 at 500 W of 1400 W: 0.28-0.39 of the throughput. The cube law on the dynamic power allows no less than
    (330 / 1230)^(1/3) = 0.645 (the cap binding at 1400 W; a lower anchor gives more): outside by far. P ~ f^n fits
    only for n <= 1.4, near the voltage floor's n = 1."""
    deep, rated = GB300_DEEP_CAP_W - hardware.gpu("gb300").idle_power, _dynamic_w("gb300")
    measured_high = GB300_DEEP_CAP_TFLOPS / min(GB300_RATED_TFLOPS)
    assert measured_high < 0.4
    assert measured_high < 0.62 * (deep / rated) ** (1 / 3)
    assert math.log(deep / rated) / math.log(measured_high) == pytest.approx(1.38, abs=0.05)
