"""interference.slowdown's per-kernel waves (kernels.tensor_core_waves) against closed forms: a GEMM launched on
the SMs a kernel leaves (set_sm_margin) loses no wave, flash attention quantises its row blocks, CUDA-core kernels
keep the proportional share, and a mix weighs each kernel by its time alone."""

from __future__ import annotations

import dataclasses

import pytest

from simcluster.spec import hardware
from simcluster.workload import interference, kernels
from simcluster.workload.ops import Op

H100 = hardware.gpu("h100-sxm")
SMS = kernels.sm_count(H100.name)  # 132


def _gemm(m: int, n: int, k: int = 8192) -> Op:
    return Op("gemm", "gemm", 2.0 * m * n * k, 2.0 * (m * k + k * n + m * n), m=m, n=n, k=k)


def _factor(ops: list[Op], ctas: int) -> float:
    return interference.slowdown(H100, interference.CommKernel(ctas, 0.0),
                                 interference.memory_bound_share(ops, H100, "bf16"))


def test_a_gemm_launched_on_the_sms_left_loses_no_wave():
    one_wave = _gemm(11 * 256, 12 * 128)  # 132 tiles of 256 x 128
    assert _factor([one_wave], 16) == pytest.approx(2.0)
    margin = dataclasses.replace(one_wave, sms=SMS - 16)  # TE set_sm_margin: cuBLAS targets 116 SMs
    assert _factor([margin], 16) == pytest.approx(1.0)


def test_flash_attention_quantises_its_row_blocks():
    # batch x heads 66, 256 query rows: 132 blocks of 128 rows, one wave; beside 24 CTAs two
    op = Op("attention_forward", "attention", 1e12, 1e6, m=256, n=256, k=128, batch=66, kernel="flash")
    assert kernels.tensor_core_waves(op, H100.name, SMS - 24) == (1, 2)
    assert _factor([op], 24) == pytest.approx(2.0)


def test_cuda_core_and_mixed_kernels_weigh_by_their_time_alone():
    elementwise = Op("bias", "memory", 1e3, 1e9)  # HBM-bound; no wire traffic: factor 1
    assert _factor([elementwise], 24) == pytest.approx(1.0)
    gemm = _gemm(4096, 4096)  # 512 tiles of 128 x 256: 4 waves on 132 SMs, 5 on 108
    t_gemm = max(kernels.roofline_s(gemm, H100, "bf16"))
    t_mem = max(kernels.roofline_s(elementwise, H100, "bf16"))
    launched, left = kernels.tensor_core_waves(gemm, H100.name, SMS - 24)
    assert (launched, left) == (4, 5)
    assert (t_gemm * left / launched + t_mem) / (t_gemm + t_mem) == pytest.approx(_factor([gemm, elementwise], 24))


def test_async_tp_runs_no_kernel_beside_its_matmuls_so_a_one_wave_gemm_keeps_its_wave():
    """PyTorch's async TP copies on copy engines and barriers before and after its steps: no SM beside the matmuls
    (async_tp.comm_sms); a one-wave GEMM beside its (here wire-free) communication is not pushed into a second
    wave, where one spinning CTA would double it (TE's ring exchange flag kernel)."""
    from simcluster.workload import async_tp

    one_wave = _gemm(11 * 256, 12 * 128)  # 132 tiles
    assert _factor([one_wave], async_tp.comm_sms()) == pytest.approx(1.0)
    assert _factor([one_wave], 1) == pytest.approx(2.0)


def test_a_compute_mix_survives_deepcopy_and_pickle_with_its_kernels():
    import copy
    import pickle

    mix = interference.memory_bound_share([_gemm(4096, 4096), Op("bias", "memory", 1e3, 1e9)], H100, "bf16")
    kernel = interference.CommKernel(16, 50e9)
    for other in (copy.deepcopy(mix), pickle.loads(pickle.dumps(mix))):
        assert isinstance(other, interference.ComputeMix) and float(other) == float(mix)
        assert other.kernels == mix.kernels and other.gpu_name == mix.gpu_name
        assert interference.slowdown(H100, kernel, other) == interference.slowdown(H100, kernel, mix)


def test_many_waves_tend_to_the_sms_left():
    """The model's closed form (not a measurement; moved from tests/validation/): a GEMM of w full waves on S SMs
    beside c CTAs runs ceil(w S / (S - c)) waves, which over w tends to S / (S - c)."""
    sms = SMS
    kernel = interference.CommKernel(24, 0.0)
    for waves in (1, 4, 40):
        op = _gemm(waves * 11 * 256, 12 * 128)  # waves x 132 tiles of 256 x 128
        modelled = interference.slowdown(H100, kernel, interference.memory_bound_share([op], H100, "bf16"))
        assert modelled == pytest.approx(-(-waves * sms // (sms - 24)) / waves)
    assert modelled == pytest.approx(sms / (sms - 24), rel=0.03)
