"""The GEMM efficiency model against independent H100 measurements of smaller shapes.

Source: XLA's matmul interpolation table for sm_90 (H100), bf16 in and out, batch 1
(tensorflow/tensorflow, third_party/xla/xla/service/gpu/model/matmul_interpolator_data.h, commit 372d578b).
Only the 8192^3 point of shared/reference/hardware.yaml was used to calibrate the ceiling; these shapes were not
used for anything. Tolerance 6%: the table does not say at what clock it was measured (confidence medium).
"""

import pytest

from simcluster.spec import hardware
from simcluster.workload import kernels
from simcluster.workload.ops import Shard, _gemm

H100 = hardware.gpu("h100-sxm")

MEASURED_TFLOP_PER_S = {
    (4096, 2048, 2048): 716.1,
    (2048, 2048, 2048): 632.0,
    (4096, 2048, 1024): 593.2,
    (4096, 4096, 4096): 783.3,
    (4096, 1024, 2048): 632.0,
}


@pytest.mark.parametrize(("shape", "measured"), MEASURED_TFLOP_PER_S.items())
def test_gemm_model_matches_measured_h100_throughput_of_smaller_shapes(shape, measured):
    m, n, k = shape
    op = _gemm("gemm", m, n, k, Shard(seq_len=2048, micro_batch=1, precision="bf16"))
    simulated = kernels.achieved_flop_per_s(op, H100, "bf16") / 1e12
    assert simulated == pytest.approx(measured, rel=0.06)
