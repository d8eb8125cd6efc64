"""The fitted Blackwell ceiling ratios against Blackwell GEMMs measured apart from any training run.

efficiency.yaml's `ceiling_ratio` (B200 0.82, GB200 0.76) is fitted on one Llama 3 8B training run per GPU. It
stands for what a Blackwell GEMM measurement would give relative to the Hopper-derived GEMM model, so such a
measurement is an independent check of it: measured TFLOP/s over what the model predicts for the same short
benchmark without the ratio (``kernels.achieved_flop_per_s``: ceilings as measured on H100, no training clock).

Sources:
- B200, bf16, torch.mm on square matrices: 1.41, 1.45 and 1.42 PFLOP/s at 4096, 6144 and 8192 (pytorch/ao pull
  request 2427, benchmarks/float8/bench_matmul.py output on "NVIDIA B200", 2025).
- GB200, MXFP8 grouped GEMM (multi-stream cuBLAS), K = 7168, N = 2048: 2,672 TFLOP/s with L2 flushed (Yao et al.
  2025, NVIDIA/Megatron-LM docs/discussions/deepseek-v3-gb200-optimization, section 1 item 3). The rows per expert
  are not stated; DeepSeek-V3 at EP 32, micro batch 1, sequence 4096 (the guide's layout) gives 32 x 4096 x 8 / 256
  = 4096 rows for each of 8 local experts, as used here. Block scaling (MXFP8) costs something the dense fp8 model
  does not have, so the measured ratio is expected at or below the fitted one.

Tolerance: 10% per point (the three B200 sizes give 0.77 to 0.88: the shape model errs by up to 7% either way).
"""

import pytest

from simcluster.spec import hardware
from simcluster.workload import kernels
from simcluster.workload.ops import Op


def _measured_ratio(gpu_name: str, precision: str, shape: tuple[int, int, int, int], tflop_per_s: float) -> float:
    m, n, k, batch = shape
    op = Op("gemm", "gemm", 2.0 * m * n * k * batch, 0.0, m, n, k, batch)
    return tflop_per_s * 1e12 / kernels.achieved_flop_per_s(op, hardware.gpu(gpu_name), precision)


@pytest.mark.parametrize(("size", "tflop_per_s"), [(4096, 1410.0), (6144, 1450.0), (8192, 1420.0)])
def test_b200_fitted_ceiling_ratio_agrees_with_measured_b200_bf16_gemms(size, tflop_per_s):
    measured = _measured_ratio("b200", "bf16", (size, size, size, 1), tflop_per_s)
    assert measured == pytest.approx(kernels.ceiling_ratio("b200"), rel=0.10)


def test_b200_measured_gemms_average_to_the_fitted_ratio():
    """Over the three sizes the shape model's errors cancel: their mean ratio is the fitted one within 2%."""
    ratios = [_measured_ratio("b200", "bf16", (s, s, s, 1), t) for s, t in [(4096, 1410.0), (6144, 1450.0),
                                                                            (8192, 1420.0)]]
    assert sum(ratios) / len(ratios) == pytest.approx(kernels.ceiling_ratio("b200"), rel=0.02)


def test_gb200_fitted_ceiling_ratio_bounds_the_measured_mxfp8_grouped_gemm():
    measured = _measured_ratio("gb200", "fp8", (4096, 2048, 7168, 8), 2672.0)
    assert measured <= kernels.ceiling_ratio("gb200")
    assert measured == pytest.approx(kernels.ceiling_ratio("gb200"), rel=0.10)
