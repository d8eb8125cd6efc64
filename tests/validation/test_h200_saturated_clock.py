"""H200's clock in a saturated tensor-core stream, bracketed by its own power and clock readings (Round 27).

efficiency.yaml ``clock_ratio`` for ``h200-sxm`` (0.80, 1584 of 1980 MHz) is the Hopper value read on an H800
(deepseek-ai/DeepGEMM#120: fp8 GEMMs beside communication at 1575 MHz), not on an H200. No clock reading of an H200
GEMM stream at duty 1 was found (docs/calibration/round-27.md, "Round 27: the H200's clock under its power cap"). What
was found is S. Bekman's mamf-finder v4 on H200 SXM (stas00/ml-engineering, compute/accelerator/benchmarks/README.md
"How MAMF and MSMF are defined" and "The K walk", and compute/accelerator/README.md's MAMF/MSMF table): 1536x2816 GEMMs,
each after a 256 MiB L2-flush memset, timed with their clock and power:

- bf16 K = 4096: 722 TFLOP/s at the 1980 MHz ceiling, the board below its 700 W cap;
- bf16 K = 6144: 749 TFLOP/s at 1879 MHz and 685 W;
- bf16 K = 20480: 727 TFLOP/s (clock not published);
- bf16 K = 40960 (the MAMF shape, a burst): 850 TFLOP/s at 1980 MHz;
- fp8 K = 10240 (MSMF): 1354 TFLOP/s at 1767-1848 MHz and 683-689 W.

Energy balance over one GEMM + memset iteration (duty d = the GEMM's share of the time, idle power and TDP from
hardware.yaml, the memset's dynamic power B >= 0 unknown): board = idle + d * G + (1 - d) * B, with G the GEMM's
dynamic power at its clock f. A saturated stream draws TDP - idle in GEMMs, at the clock the cube law of
efficiency.yaml ``blackwell_clock_source`` gives from (f, G) (``power_clock.capped_clock``). Bounds:

- below: at K = 20480 the GEMM does no more work per clock than the same layout's K = 40960 burst (work per clock
  rises with K along the walk: 0.365, 0.399, 0.429 TFLOP/s per MHz at K = 4096, 6144, 40960), so f >= 727 / 850 x
  1980 = 1693 MHz; with the board at or below the cap and B >= 0, G <= (TDP - idle) / d;
- above: K = 4096 runs at the ceiling below the cap, which with K = 6144's reading bounds B (about 300 W) and so
  K = 6144's G from below.

The memset lasts 256 MiB over the HBM bandwidth: the datasheet's 4.8 TB/s (56 us, the shortest) or 60 us (the value
test_power_clock.py uses). Launch gaps (at idle power) would lower the duty: that lowers the lower bound and raises the
upper one, so the brackets here are the tighter ones.
"""

import pytest

from simcluster.spec import hardware
from simcluster.workload import kernels, power_clock

H200 = hardware.gpu("h200-sxm")
BOOST_MHZ = 1980.0
DYNAMIC_W = H200.tdp - H200.idle_power                       # a saturated tensor-core stream's, at the cap
LAYOUT = (1536, 2816)
MEMSET_S = [256 * 2 ** 20 / H200.hbm_bandwidth, 60e-6]       # datasheet speed; the estimate test_power_clock.py uses
DEEPGEMM_H800_FP8_MHZ = 1575.0                               # deepseek-ai/DeepGEMM#120 (H800: H100 silicon and cap)


def _duty(k: int, tflop_per_s: float, memset_s: float) -> float:
    gemm_s = 2.0 * LAYOUT[0] * LAYOUT[1] * k / (tflop_per_s * 1e12)
    return gemm_s / (gemm_s + memset_s)


def _saturated_mhz(clock_mhz: float, board_w: float, duty: float, memset_w: float) -> float:
    """The duty-1 clock from one GEMM / memset loop's reading: the GEMM's dynamic power at ``clock_mhz`` from the
    energy balance, then the cube law to the whole dynamic budget."""
    gemm_w = (board_w - H200.idle_power - (1.0 - duty) * memset_w) / duty
    return power_clock.capped_clock(clock_mhz, DYNAMIC_W, gemm_w)


def _memset_w_max(memset_s: float) -> float:
    """K = 4096 at 1980 MHz below the cap, with K = 6144's G(B): d4 G6(B) (1980 / 1879)^3 + (1 - d4) B < TDP - idle,
    linear in B."""
    d4, d6 = _duty(4096, 722.0, memset_s), _duty(6144, 749.0, memset_s)
    s = d4 / d6 * (BOOST_MHZ / 1879.0) ** 3
    slope = (1.0 - d4) - s * (1.0 - d6)
    assert slope > 0.0
    return (DYNAMIC_W - s * (685.0 - H200.idle_power)) / slope


def _bf16_bracket(memset_s: float) -> tuple[float, float]:
    f20 = 727.0 / 850.0 * BOOST_MHZ
    low = power_clock.capped_clock(f20, DYNAMIC_W, DYNAMIC_W / _duty(20480, 727.0, memset_s))
    high = _saturated_mhz(1879.0, 685.0, _duty(6144, 749.0, memset_s), _memset_w_max(memset_s))
    return low, high


def _fp8_bracket(memset_s: float) -> tuple[float, float]:
    d8 = _duty(10240, 1354.0, memset_s)
    return _saturated_mhz(1767.0, 683.0, d8, 0.0), _saturated_mhz(1848.0, 689.0, d8, _memset_w_max(memset_s))


@pytest.mark.parametrize("memset_s", MEMSET_S)
def test_memset_power_bound_is_physical(memset_s):
    """The memset's dynamic power bound is positive and below the tensor cores' whole budget (about 280-310 W)."""
    assert 0.0 < _memset_w_max(memset_s) < DYNAMIC_W


@pytest.mark.parametrize("memset_s", MEMSET_S)
@pytest.mark.parametrize("bracket", [_bf16_bracket, _fp8_bracket])
def test_h200_clock_ratio_lies_in_its_own_saturated_bracket(bracket, memset_s):
    """bf16 1574-1686 MHz (0.795-0.851), fp8 1433-1643 MHz (0.72-0.83) at 60 us: one ratio for both precisions lies
    in 0.795-0.83. Fails at 0.78, at 0.85, at the loop's MSMF / MAMF 0.888 and at 1.0."""
    low, high = bracket(memset_s)
    assert low < high
    assert low <= kernels.clock_ratio("h200-sxm") * BOOST_MHZ <= high


@pytest.mark.parametrize("memset_s", MEMSET_S)
def test_h800_fp8_reading_lies_in_h200s_fp8_bracket(memset_s):
    """The H100-silicon reading the catalog's Hopper ratio comes from agrees with H200's own fp8 bracket."""
    low, high = _fp8_bracket(memset_s)
    assert low <= DEEPGEMM_H800_FP8_MHZ <= high


def test_a_saturated_stream_holds_less_than_the_half_duty_loop():
    """No bracket reaches the duty-0.5 loop's own throughput ratio (MSMF / MAMF = 755 / 850 = 0.888): a GEMM loop
    alternating with memsets is not the saturated stream."""
    assert all(high < 755.0 / 850.0 * BOOST_MHZ for m in MEMSET_S for _, high in (_bf16_bracket(m), _fp8_bracket(m)))
