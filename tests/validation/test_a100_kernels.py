"""A100 kernel classes against published A100 measurements, and the A100 the Megatron-LM 2021 README ran on.

The A100 calibration runs (Megatron-LM README, DGX-A100 table) spend about 60% of a step in GEMMs and a quarter in
HBM-bound kernels (one A100, 1.2B model, fp16, unfused attention). Each class is held here to an A100 measurement:

- GEMMs: the GEMM model borrows H100's measured ceiling (efficiency.yaml gemm.ceiling) with A100's 108 SMs and
  ``ceiling_ratio`` 1 for A100. Maximum Achievable Matmul FLOPS (MAMF) on A100 SXM, bf16 (S. Bekman,
  stas00/ml-engineering, compute/accelerator/README.md, "Maximum Achievable Matmul FLOPS comparison table"): 271.2
  TFLOP/s at 1024x10240x5120 (torch 2.6.0+cu126, mean of 100 iterations after 50 warm-up, caches reset) and 267.9
  TFLOP/s at 6912x2048x16384 (the table's v1, CUDA 12.1). Measured over model (a short benchmark at the full clock,
  ``kernels.achieved_flop_per_s``) is what ``ceiling_ratio`` stands for, as for Blackwell
  (test_blackwell_gemm_ceiling.py). MAMF is the best shape of a search, so it sits at or above the model; the model
  must not be faster than it: A100 GEMMs are not what made the A100 runs simulate too fast.
- HBM-bound kernels: the A100 40GB at 0.87 of the datasheet bandwidth (efficiency.yaml bandwidth_fraction, round
  27: the mean of four copy-like measurements on the part, 0.843-0.888; each GPU's sources are held in
  test_hbm_fraction_sources.py). A100 40GB device-to-device copy measured at 1,355 GB/s, read and write counted, of
  1,555 GB/s (0.871; PTsolvers/gpu-workshop-JuliaCon23 issue #7, the workshop's measured memcopy reference for A100
  40GB).
  A100 80GB SXM: 0.85 (round 26), from one benchmark run by one author on both parts (te42kyfo/gpu-benches, the
  stream kernel scale A[i] = B[i] * c, one double a thread, 1 GiB arrays, at 100% occupancy, read and write bytes
  counted): 1,732 GB/s on the 80GB part (cuda-stream/a100_80.txt), 1,381 GB/s on the 40GB one
  (gpu-stream/a100_40.txt); triad 1,759 and 1,360. The same author's pointer chase puts both parts' DRAM latency at
  the same ~572-575 cycles at 1,410 MHz (cuda-latency/a100_40.txt, a100_80.txt): the same SMs must keep 31% more
  bytes in flight on the 80GB part, which a copy-like stream does not.
- Unfused attention on A100 40GB: tests/validation/test_naive_attention_megatron.py (Dao et al. 2022, Tables 15-16).

Tolerances: GEMMs 10% per point and 6% for the mean of the two (the shape model errs by up to 7% either way,
test_blackwell_gemm_ceiling.py); the copy 5% (the spread of the part's four copy measurements, 0.843-0.888); the
gpu-benches scale kernel on each A100 3% and their 80GB / 40GB ratio 3% (one run each: the curves' last three
occupancy steps spread 1.5% on the 80GB part, 0.3% on the 40GB one; triad, the other read+write stream, sits 1.6%
above scale on the 80GB part and 1.5% below it on the 40GB one).
"""

import pytest

from simcluster.spec import config, hardware
from simcluster.workload import kernels
from simcluster.workload.ops import Op

A100_MAMF_BF16 = [((1024, 10240, 5120), 271.2), ((6912, 2048, 16384), 267.9)]   # TFLOP/s
A100_40GB_COPY_GB_PER_S = 1355.0   # read + write bytes over time
# gpu-benches scale kernel (A[i] = B[i] * c), read + write bytes over time, at 100% occupancy, GB/s
GPU_BENCHES_SCALE_GB_PER_S = {"a100-40gb-sxm": 1381.0, "a100-80gb-sxm": 1732.0}


def _measured_over_model(gpu_name: str, shape: tuple[int, int, int], tflop_per_s: float) -> float:
    m, n, k = shape
    op = Op("gemm", "gemm", 2.0 * m * n * k, 0.0, m, n, k)
    return tflop_per_s * 1e12 / kernels.achieved_flop_per_s(op, hardware.gpu(gpu_name), "bf16")


@pytest.mark.parametrize("gpu_name", ["a100-40gb-sxm", "a100-80gb-sxm"])
@pytest.mark.parametrize(("shape", "tflop_per_s"), A100_MAMF_BF16)
def test_a100_gemm_model_agrees_with_measured_maximum_achievable_matmul_flops(gpu_name, shape, tflop_per_s):
    assert _measured_over_model(gpu_name, shape, tflop_per_s) == pytest.approx(kernels.ceiling_ratio(gpu_name),
                                                                               rel=0.10)


@pytest.mark.parametrize("gpu_name", ["a100-40gb-sxm", "a100-80gb-sxm"])
def test_a100_gemm_model_is_not_faster_than_the_measured_maxima(gpu_name):
    """Mean over the two MAMF points: measured / model = 1.045 with ceiling_ratio 1 (the model 4.5% slower than the
    best shapes found), within 6% of the ratio the catalog uses and not below it: a slower A100 ceiling (e.g. one
    fitted to the 2021 runs' residual) fails here."""
    ratios = [_measured_over_model(gpu_name, shape, t) for shape, t in A100_MAMF_BF16]
    mean = sum(ratios) / len(ratios)
    assert mean == pytest.approx(kernels.ceiling_ratio(gpu_name), rel=0.06)
    assert mean >= kernels.ceiling_ratio(gpu_name)


def test_a100_40gb_copy_bandwidth_matches_measured_memcopy():
    gpu = hardware.gpu("a100-40gb-sxm")
    moved = 2.0 * 2**30                                   # a 1 GiB copy: read and written
    copy = Op("copy", "memory", 0.0, moved)
    seconds = max(kernels.roofline_s(copy, gpu, "fp16", sustained=False))
    assert moved / seconds / 1e9 == pytest.approx(A100_40GB_COPY_GB_PER_S, rel=0.05)


MEGATRON_2021_README_RUNS = [f"megatron-{size}-a100-{kind}" for size in ("1.2b", "2.5b", "4.2b", "8.3b")
                             for kind in ("node", "dp")]


@pytest.mark.parametrize("name", MEGATRON_2021_README_RUNS)
def test_megatron_2021_readme_runs_use_the_a100_of_2020(name):
    """The README's DGX-A100 table was online by 9 October 2020 (NVIDIA/Megatron-LM issue #48 quotes it), before the
    A100 80GB was announced (SC20, 16 November 2020): A100 40GB, HBM2 at 1,555 GB/s (NVIDIA A100 datasheet)."""
    gpu = config.load(name).cluster.gpu
    assert gpu.hbm_bandwidth == pytest.approx(1.555e12)
    assert gpu.hbm_capacity == 40960 * 2**20


def _copy_gb_per_s(gpu_name: str) -> float:
    """A 1 GiB copy-like stream (read once, written once) as the model runs it in a short benchmark."""
    moved = 2.0 * 2**30
    copy = Op("copy", "memory", 0.0, moved)
    return moved / max(kernels.roofline_s(copy, hardware.gpu(gpu_name), "fp16", sustained=False)) / 1e9


@pytest.mark.parametrize("gpu_name", sorted(GPU_BENCHES_SCALE_GB_PER_S))
def test_a100_copy_streams_match_gpu_benches_scale_kernel_on_each_part(gpu_name):
    """The model's copy-like stream on each A100 within 3% of gpu-benches' scale kernel on that part (40GB: 1,353
    against 1,381 GB/s; 80GB: 1,733 against 1,732). With the Hopper default 0.9 of the datasheet the 80GB part would
    copy at 1,835 GB/s, 6% above its measurement: this fails."""
    assert _copy_gb_per_s(gpu_name) == pytest.approx(GPU_BENCHES_SCALE_GB_PER_S[gpu_name], rel=0.03)


def test_a100_80gb_gains_less_copy_bandwidth_than_its_datasheet():
    """The 80GB part over the 40GB one for a copy-like stream: 1.254 measured by one benchmark on both (1,732 / 1,381
    GB/s), 1.311 by the datasheets (2,039 / 1,555 GB/s). The model's ratio (1.281 since round 27 gave the 40GB part
    its own 0.87; 1.238 before) within 3% of the measured one and below the datasheets'; the kernels that do not
    stream (GEMMs) keep the same ceiling on both parts; Hopper keeps the default."""
    measured = GPU_BENCHES_SCALE_GB_PER_S["a100-80gb-sxm"] / GPU_BENCHES_SCALE_GB_PER_S["a100-40gb-sxm"]
    model = _copy_gb_per_s("a100-80gb-sxm") / _copy_gb_per_s("a100-40gb-sxm")
    datasheets = hardware.gpu("a100-80gb-sxm").hbm_bandwidth / hardware.gpu("a100-40gb-sxm").hbm_bandwidth
    assert model == pytest.approx(measured, rel=0.03)
    assert model < datasheets
    assert kernels.hbm_fraction("h100-sxm") == kernels.hbm_fraction()
