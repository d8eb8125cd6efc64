"""The SM counts of the Blackwell parts (efficiency.yaml gemm.sms): GB200 and GB300 run 152 SMs, not the 148
(B200) and 160 (the Blackwell Ultra die) of the architecture briefs; B300 runs 148 (round 28, device readings).

Independent truths (efficiency.yaml gemm.sms_source):
- FP32 datasheet peaks are SMs x 128 cores x 2 FLOP x boost clock: HGX B200 75 TFLOP/s per GPU (600 / 8) at
  1965 MHz, GB200 NVL72 80 TFLOP/s per GPU (5,760 / 72) at 2062 MHz (ByteDance-Seed/VeOmni#986). Within 2%, which
  148 SMs for GB200 misses (148 x 256 x 2062 MHz = 78.1 TFLOP/s, -2.4%).
- The MAMF table's best GB200 bf16 shape, 4096 x 9728 (stas00/ml-engineering, compute/accelerator/README.md), found
  by a sweep: its 256x128 output tiles fill whole waves of the SMs only with 152 (1216 tiles = 8 x 152).
- cuBLASLt 13.1 on a GB300 caps occupancy at 9728 outputs = SMs x 2048 threads / 32 lanes, "the same as GB200's"
  (facebookexperimental/triton#2768).
- B300 (HGX, "NVIDIA B300 SXM6 AC"), read on the device (ademeure/QuickRunCUDA, b300_clean/B300_CANONICAL_REFERENCE.md
  section 2 and b300_clean/16_power_clock.md, 2026): cudaGetDeviceProperties multiProcessorCount 148; the SM clock
  under FFMA load 2031.4 MHz by %clock64 / %globaltimer (boost 2032 MHz, also sgl-project/sglang#28460); an FFMA
  kernel reaches 74.6 TFLOP/s. So (a) the count is 148, "a 148-SM B300" as bitsandbytes-foundation/bitsandbytes#2054
  measures on; (b) the FFMA peak is SMs x 256 FLOP x 2032 MHz = 76.96 TFLOP/s, of which the kernel reaches 0.97 (an
  FFMA loop reaches 0.95-1.0 of its SMs' rate: with 160 SMs it would be 0.90); (c) the clock the HGX B300 datasheet's
  tensor peaks assume at B200's work per SM per clock (test_blackwell_gemm_ceiling._clocks_mhz), 1965 MHz at 148 SMs,
  is within 4% of the device's 2032 MHz boost, as GB300's 2126 MHz is of its 2070 MHz maximum (at 160 SMs: 1818 MHz,
  -10.5%).
"""

import math

import pytest

from simcluster.workload import kernels
from tests.validation.test_blackwell_gemm_ceiling import _clocks_mhz

FP32_FLOP_PER_SM_PER_CLOCK = 128 * 2
# GPU -> (datasheet FP32 TFLOP/s per GPU, boost clock MHz)
FP32_PEAKS = {"b200": (75.0, 1965.0), "gb200": (80.0, 2062.0)}


@pytest.mark.parametrize("gpu_name", sorted(FP32_PEAKS))
def test_sm_count_reproduces_the_fp32_datasheet_peak(gpu_name):
    tflop_per_s, mhz = FP32_PEAKS[gpu_name]
    assert kernels.sm_count(gpu_name) * FP32_FLOP_PER_SM_PER_CLOCK * mhz * 1e6 / 1e12 == pytest.approx(
        tflop_per_s, rel=0.02)


def test_gb200_mamf_shape_fills_whole_waves():
    tiles = math.ceil(4096 / 256) * math.ceil(9728 / 128)
    assert tiles % kernels.sm_count("gb200") == 0


def test_gb300_occupancy_cap_is_152_sms():
    assert kernels.sm_count("gb300") * 2048 // 32 == 9728
    assert kernels.sm_count("gb300") == kernels.sm_count("gb200")


B300_BOOST_MHZ = 2032.0        # nvidia-smi / %clock64 under load (QuickRunCUDA 16_power_clock.md; sglang#28460)
B300_FFMA_TFLOPS = 74.6        # measured FFMA peak at that clock (QuickRunCUDA 16_power_clock.md)


def test_b300_sm_count_is_the_device_reading():
    """multiProcessorCount of an "NVIDIA B300 SXM6 AC": 148 (QuickRunCUDA B300_CANONICAL_REFERENCE.md section 2)."""
    assert kernels.sm_count("b300") == 148


def test_b300_ffma_peak_is_reached_on_its_sm_count():
    peak = kernels.sm_count("b300") * FP32_FLOP_PER_SM_PER_CLOCK * B300_BOOST_MHZ * 1e6 / 1e12
    assert 0.95 <= B300_FFMA_TFLOPS / peak <= 1.0


def test_b300_datasheet_clock_at_its_sm_count_is_its_boost():
    assert _clocks_mhz("b300")[1] == pytest.approx(B300_BOOST_MHZ, rel=0.04)
