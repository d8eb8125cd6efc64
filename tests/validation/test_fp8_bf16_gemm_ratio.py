"""The FP8/BF16 speed ratio of one GEMM on H100, per accumulation mode, against measurements of the same shape.

Issue 15 asks BF16 and FP8 of the same model to land within 5 points of each other; the GEMMs are the only kernels
whose time the precision changes (attention and elementwise kernels stay 16-bit in Transformer Engine's fp8 recipe,
the casts are added). This checks the ratio the model gives a GEMM, not each ceiling alone (those have their own
tests: test_gemm_fp8_ceiling.py, test_gemm_fp8_cublas.py), at the one shape measured in all three modes, 8192^3, in
short benchmarks (full clock, ``sustained=False``):

- bf16, PyTorch (cuBLAS) on an H100 SXM: 798 TFLOP/s (shared/reference/hardware.yaml, measured_fractions);
- fp8 with fast accumulation (what Transformer Engine runs for the forward GEMM, _2X_ACC_FPROP = False): tilelang
  on an H800 (H100's SMs and fp8 peak), 1507 TFLOP/s (xwhzz/tilelang, benchmark/matmul_fp8/README.md, 2025);
- fp8 with the split accumulator (TE's dgrad and wgrad, _2X_ACC_DGRAD = _2X_ACC_WGRAD = True): cuBLAS through
  torch._scaled_mm with use_fast_accum False, H100, 1304.5 TFLOP/s (pytorch/pytorch#143465, 2024).

Measured ratios: 1.888 (fast) and 1.635 (split). The model gives 1.914 and 1.665 (within 2%); tolerance 3%, as the
three come from three machines. Fails if the split accumulator's slowdown is dropped (ratio 1.91 against 1.635) or
if fp8 took bf16's ceiling (1.96 against 1.888).
"""

import dataclasses

import pytest

from simcluster.spec import hardware
from simcluster.workload import kernels
from simcluster.workload.ops import Shard, _gemm

H100 = hardware.gpu("h100-sxm")
SHAPE = (8192, 8192, 8192)
BF16_MEASURED = 798.0          # TFLOP/s, PyTorch bf16 matmul, H100 SXM
FP8_MEASURED = {False: 1507.0,  # fast accumulation, tilelang, H800
                True: 1304.5}   # split accumulator, cuBLAS via torch._scaled_mm, H100


def _tflops(precision: str, split: bool = False) -> float:
    op = _gemm("gemm", *SHAPE, Shard(seq_len=2048, micro_batch=1, precision=precision))
    if split:
        op = dataclasses.replace(op, split_accumulator=True)
    return kernels.achieved_flop_per_s(op, H100, precision) / 1e12


@pytest.mark.parametrize("split", [False, True], ids=["fast_accumulation", "split_accumulator"])
def test_fp8_over_bf16_gemm_speed_matches_measurements(split):
    measured = FP8_MEASURED[split] / BF16_MEASURED
    simulated = _tflops("fp8", split) / _tflops("bf16")
    assert simulated == pytest.approx(measured, rel=0.03)
