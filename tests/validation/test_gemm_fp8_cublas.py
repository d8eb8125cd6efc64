"""The fp8 GEMM model with Transformer Engine's backward setting (split accumulator) against cuBLAS on H100.

Source: pytorch/pytorch#143465 (2024): torch._scaled_mm, per-tensor scales, bf16 output, on an H100 (variant not
stated; DGX-class SXM assumed), triton.testing.do_bench (a short benchmark: full clock, ``sustained=False``),
five training-sized shapes. torch._scaled_mm calls cuBLASLt, the library Transformer Engine calls; its
``use_fast_accum`` defaults to False and the report's script does not show it set, so these are read as
cuBLAS's split accumulator (partial sums promoted to fp32), what TE requests for its dgrad and wgrad GEMMs
(conf R: the flag is inferred from the default).

What it checks: the fp8 ceiling (set on the median of a body of Hopper fp8 measurements that includes these deep
shapes, tests/validation/test_gemm_fp8_ceiling.py) divided by
efficiency.yaml gemm.split_accumulator_slowdown (1.15 on H100, from pytorch/ao#2377's 1.1-1.2x) reproduces cuBLAS
within 5% where the reduction is deep (k >= 7168) and within 12% at k = 1280 (the k-depth term is one constant,
as in the tilelang test). Why 5%: one do_bench figure a shape from one report, clock unstated (a short benchmark, as
XLA's table in test_gemm_shapes.py, 6%), and the ceiling is the median of a body whose points scatter by more
(test_gemm_fp8_ceiling.py); the model is -2.3% to +2.3% at the deep shapes today and -8.2% at k = 1280. Without
the slowdown the model is 12-18% above every deep shape (the test fails).
"""

import dataclasses

import pytest

from simcluster.spec import hardware
from simcluster.workload import kernels
from simcluster.workload.ops import Shard, _gemm

H100 = hardware.gpu("h100-sxm")
FP8 = Shard(seq_len=2048, micro_batch=1, precision="fp8")

# (m, n, k): (measured TFLOP/s, tolerance)
MEASURED = {(16384, 8192, 1280): (1239.4, 0.12), (16384, 1024, 8192): (1347.1, 0.05),
            (16384, 8192, 7168): (1332.3, 0.05), (16384, 3584, 8192): (1309.4, 0.05),
            (8192, 8192, 8192): (1304.5, 0.05)}


@pytest.mark.parametrize(("shape", "measured"), MEASURED.items())
def test_fp8_gemm_with_split_accumulator_matches_cublas_on_h100(shape, measured):
    tflop_per_s, tolerance = measured
    op = dataclasses.replace(_gemm("gemm", *shape, FP8), split_accumulator=True)
    simulated = kernels.achieved_flop_per_s(op, H100, "fp8") / 1e12
    assert simulated == pytest.approx(tflop_per_s, rel=tolerance)
