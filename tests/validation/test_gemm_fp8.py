"""The fp8 GEMM model against an independent Hopper fp8 GEMM sweep.

Source: xwhzz/tilelang, benchmark/matmul_fp8/README.md (2025): autotuned e4m3 GEMMs, M = N = 8192, on an H800
SXM (H100's 132 SMs and fp8 tensor-core peak, 1978.9 TFLOP/s dense). The fp8 ceiling (efficiency.yaml
gemm.ceiling.fp8) is set on the median of a body of Hopper fp8 measurements that includes this sweep's deep points
(tests/validation/test_gemm_fp8_ceiling.py; the model runs 1.8% above tilelang at k = 8192); the depths here check
the k-depth term, whose overhead is a fixed time per output tile and so twice as many fp8 elements as bf16 ones.
Tolerance 5% for k >= 2048 (one autotuned run a shape, clock unstated, as test_gemm_shapes.py's 6% for XLA's
table; the model is +1.0% to +3.2% there today), 12% at k = 1024 (the prologue model is one constant; the table's own
two runs differ by up to 6% at k <= 2048; the model is +8.7% there).
"""

import pytest

from simcluster.spec import hardware
from simcluster.workload import kernels
from simcluster.workload.ops import Shard, _gemm

H100 = hardware.gpu("h100-sxm")
FP8 = Shard(seq_len=2048, micro_batch=1, precision="fp8")

MEASURED_TFLOP_PER_S = {1024: (1129, 0.12), 2048: (1343, 0.05), 4096: (1467, 0.05), 8192: (1507, 0.05),
                        16384: (1541, 0.05)}


@pytest.mark.parametrize(("k", "measured"), MEASURED_TFLOP_PER_S.items())
def test_fp8_gemm_model_matches_measured_hopper_sweep_over_reduction_depth(k, measured):
    tflop_per_s, tolerance = measured
    op = _gemm("gemm", 8192, 8192, k, FP8)
    simulated = kernels.achieved_flop_per_s(op, H100, "fp8") / 1e12
    assert simulated == pytest.approx(tflop_per_s, rel=tolerance)
