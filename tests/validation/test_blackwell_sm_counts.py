"""The SM counts of the NVL72 Blackwell parts (efficiency.yaml gemm.sms): GB200 and GB300 run 152 SMs, not the 148
(B200) and 160 (the Blackwell Ultra die) of the architecture briefs.

Independent truths (efficiency.yaml gemm.sms_source):
- FP32 datasheet peaks are SMs x 128 cores x 2 FLOP x boost clock: HGX B200 75 TFLOP/s per GPU (600 / 8) at
  1965 MHz, GB200 NVL72 80 TFLOP/s per GPU (5,760 / 72) at 2062 MHz (ByteDance-Seed/VeOmni#986). Within 2%, which
  148 SMs for GB200 misses (148 x 256 x 2062 MHz = 78.1 TFLOP/s, -2.4%).
- The MAMF table's best GB200 bf16 shape, 4096 x 9728 (stas00/ml-engineering, compute/accelerator/README.md), found
  by a sweep: its 256x128 output tiles fill whole waves of the SMs only with 152 (1216 tiles = 8 x 152).
- cuBLASLt 13.1 on a GB300 caps occupancy at 9728 outputs = SMs x 2048 threads / 32 lanes, "the same as GB200's"
  (facebookexperimental/triton#2768).
"""

import math

import pytest

from simcluster.workload import kernels

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
