"""interference.slowdown's per-kernel waves (kernels.tensor_core_waves) against closed forms: a GEMM launched on
the SMs a kernel leaves (set_sm_margin) loses no wave, flash attention quantises its row blocks, CUDA-core kernels
keep the proportional share, and a mix weighs each kernel by its time alone. With the persistent-grid model on
(interference.yaml persistent_grid_model), an H100 GEMM runs a persistent grid with a static tile schedule: held SMs
delay whole CTAs, 2x for whole waves, less when the late CTAs hold a tile fewer; on A100 its waves either way."""

from __future__ import annotations

import dataclasses

import pytest

from simcluster.spec import hardware
from simcluster.workload import interference, kernels
from simcluster.workload.ops import Op

H100 = hardware.gpu("h100-sxm")
SMS = kernels.sm_count(H100.name)  # 132
A100 = hardware.gpu("a100-80gb-sxm")  # CUTLASS 2-style grids of one CTA per tile: the wave model


def _gemm(m: int, n: int, k: int = 8192) -> Op:
    return Op("gemm", "gemm", 2.0 * m * n * k, 2.0 * (m * k + k * n + m * n), m=m, n=n, k=k)


def _factor(ops: list[Op], ctas: int, gpu=H100) -> float:
    return interference.slowdown(gpu, interference.CommKernel(ctas, 0.0),
                                 interference.memory_bound_share(ops, gpu, "bf16"))


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


@pytest.fixture
def persistent_on(monkeypatch):
    monkeypatch.setitem(interference.constants(), "persistent_grid_model", True)


@pytest.fixture
def persistent_off(monkeypatch):
    monkeypatch.setitem(interference.constants(), "persistent_grid_model", False)


def test_cuda_core_and_mixed_kernels_weigh_by_their_time_alone(persistent_off):
    """The wave model (persistent grids off: H100 by its waves, 4 -> 5)."""
    elementwise = Op("bias", "memory", 1e3, 1e9)
    gemm = _gemm(4096, 4096)  # 512 tiles of 128 x 256: 4 waves on 132 SMs, 5 on 108
    t_gemm = max(kernels.roofline_s(gemm, H100, "bf16"))
    t_mem = max(kernels.roofline_s(elementwise, H100, "bf16"))
    assert kernels.tensor_core_waves(gemm, H100.name, SMS - 24) == (4, 5)
    assert (t_gemm * 5 / 4 + t_mem) / (t_gemm + t_mem) == pytest.approx(_factor([gemm, elementwise], 24))


def test_mixed_kernels_with_persistent_grids(persistent_on):
    elementwise = Op("bias", "memory", 1e3, 1e9)  # HBM-bound; no wire traffic: factor 1
    assert _factor([elementwise], 24) == pytest.approx(1.0)
    gemm = _gemm(4096, 4096)
    for gpu, gemm_factor in ((A100, None), (H100, 2.0)):  # A100: its waves; H100: the persistent grid's 2
        t_gemm = max(kernels.roofline_s(gemm, gpu, "bf16"))
        t_mem = max(kernels.roofline_s(elementwise, gpu, "bf16"))
        launched, left = kernels.tensor_core_waves(gemm, gpu.name, kernels.sm_count(gpu.name) - 24)
        assert left > launched > 1
        q = gemm_factor or left / launched
        assert (t_gemm * q + t_mem) / (t_gemm + t_mem) == pytest.approx(_factor([gemm, elementwise], 24, gpu))


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


def test_many_waves_tend_to_the_sms_left_on_a100():
    """The wave model's closed form (not a measurement; moved from tests/validation/): a GEMM of w full waves on S
    SMs beside c CTAs runs ceil(w S / (S - c)) waves, which over w tends to S / (S - c)."""
    sms = kernels.sm_count(A100.name)  # 108
    for waves in (1, 4, 40):
        op = _gemm(waves * 9 * 256, 12 * 128)  # waves x 108 tiles of 256 x 128 if that tile is picked
        launched, left = kernels.tensor_core_waves(op, A100.name, sms - 24)
        assert launched == waves
        assert _factor([op], 24, A100) == pytest.approx(-(-waves * sms // (sms - 24)) / waves)
    assert _factor([op], 24, A100) == pytest.approx(sms / (sms - 24), rel=0.03)


def test_a_persistent_grid_gemm_waits_for_the_held_sms_whatever_its_waves(persistent_on):
    """H100 (persistent grid of min(tiles, SMs) CTAs, static tile schedule): the CTAs whose SMs a communication
    kernel holds run their whole share after the others, T + T, for one wave as for forty; a grid that fits the
    SMs left (few tiles, or cuBLAS's SM-count target from set_sm_margin) loses nothing."""
    for waves in (1, 4, 40):
        op = _gemm(waves * 11 * 256, 12 * 128)  # waves x 132 tiles
        assert _factor([op], 24) == pytest.approx(2.0)
        assert _factor([op], 1) == pytest.approx(2.0)
        assert _factor([op], 0) == pytest.approx(1.0)
        assert _factor([dataclasses.replace(op, sms=SMS - 24)], 24) == pytest.approx(1.0)
    few = _gemm(9 * 256, 12 * 128)  # 108 tiles: a grid of 108 CTAs, all resident beside 24 held SMs
    assert _factor([few], 24) == pytest.approx(1.0)
    assert _factor([few], 25) == pytest.approx(2.0)
    # the wave model (A100) of the same 40-wave GEMM stays near the proportional share
    assert _factor([_gemm(40 * 11 * 256, 12 * 128)], 24, A100) < 1.3


def _gemm_of_tiles(tiles: int) -> Op:
    """A GEMM whose picked tile (efficiency.yaml gemm.tiles) cuts it into exactly ``tiles`` tiles on H100."""
    for rows in range(int(tiles ** 0.5), 0, -1):
        for tile_m, tile_n, _ in kernels._table()["gemm"]["tiles"]:
            op = _gemm(rows * tile_m, tiles // rows * tile_n)
            if tiles % rows == 0 and kernels.gemm_tiles(op, H100.name) == tiles:
                return op
    raise AssertionError(f"no GEMM of {tiles} tiles")


def _static_schedule_s(tiles: int, sms: int, ctas: int) -> int:
    """Closed form of a persistent grid of ``sms`` CTAs (tiles > sms) beside ``ctas`` held SMs when the late CTAs
    hold one tile fewer than the resident ones and fewer of them than the resident short shares: tiles = k sms + r,
    0 < r <= sms - ctas - ctas; the late CTAs start at k (the short shares end) and take k; the long ones end at
    k + 1. In tile times."""
    k, r = divmod(tiles, sms)
    assert 0 < r <= sms - 2 * ctas
    return max(2 * k, k + 1)


def test_a_persistent_grid_of_waves_and_a_part_follows_its_static_schedule(persistent_on):
    """CTA j of a persistent grid works tiles j, j + g, ... (CUTLASS sm90 PersistentTileSchedulerSm90): with
    tiles = k SMs + r the first r CTAs hold k + 1 tiles, the last SMs - r hold k. Beside c held SMs the late CTAs
    (the last c) start when the first short share ends: k + k tile times against k + 1 alone."""
    for k, r in ((1, 68), (5, 60), (8, 84)):
        tiles = k * SMS + r
        op = _gemm_of_tiles(tiles)
        assert interference.persistent_gemm_factor(op, H100.name, 24) == pytest.approx(
            _static_schedule_s(tiles, SMS, 24) / (k + 1))
    # 200 tiles: CTAs 0..67 hold two tiles, 68..131 one; the 24 late ones (one tile each) start when 68..107 end
    # at 1 and end at 2 with the long ones: no loss
    two_waves = _gemm_of_tiles(200)
    assert interference.persistent_gemm_factor(two_waves, H100.name, 24) == pytest.approx(1.0)
    assert _factor([two_waves], 24) == pytest.approx(1.0)


def test_a_kernel_charged_elsewhere_keeps_the_wave_model(persistent_on):
    """A communication kernel whose cost to the persistent grid is charged elsewhere (TE's userbuffers kernels:
    userbuffers.charged) is timed by the wave model, as with the switch off."""
    op = _gemm(4 * 11 * 256, 12 * 128)  # 4 x 132 tiles: 4 waves, 5 on 108 SMs
    share = interference.memory_bound_share([op], H100, "bf16")
    charged = interference.slowdown(H100, interference.CommKernel(24, 0.0, persistent=False), share)
    assert charged == pytest.approx(5 / 4)
    assert interference.slowdown(H100, interference.CommKernel(24, 0.0), share) == pytest.approx(2.0)


def test_userbuffers_overlaps_are_not_charged_the_persistent_grid_twice(monkeypatch, persistent_off):
    """megatron-70b-h100 (TE 1.x at tp 8, sequence parallel, TP overlap): its userbuffers factors are the same with
    the persistent-grid model on or off -- the pipeline and bulk GEMMs are charged at the SM margin and the ring
    exchanges as configured (userbuffers.charged, data/userbuffers.yaml persistent_grid_methods) -- while its
    data-parallel factors move to the persistent grid's."""
    from simcluster.engine import overlap
    from simcluster.parallel.layout import Layout
    from simcluster.spec import config

    scenario = config.load("megatron-70b-h100")
    layout = Layout.of(scenario.parallelism)
    off = overlap.slowdowns(scenario, layout)
    monkeypatch.setitem(interference.constants(), "persistent_grid_model", True)
    on = overlap.slowdowns(scenario, layout)
    assert on.tp == pytest.approx(off.tp)
    assert all(on.dp[phase] > off.dp[phase] + 0.3 for phase in on.dp)


@pytest.mark.parametrize("k, r", [(2, 100), (5, 85), (1, 108)])
def test_late_ctas_beyond_the_short_shares_wait_for_the_long_ones(persistent_on, k, r):
    """Round 19 review: tiles = k SMs + r with SMs - 2c < r <= SMs - c (c = 24 held SMs): only SMs - c - r resident
    CTAs hold the short share k, fewer than the c late CTAs (each k tiles); the rest start when the long shares end at
    k + 1 and end at 2k + 1: (2k + 1) / (k + 1), not 2k / (k + 1)."""
    assert SMS - 2 * 24 < r <= SMS - 24
    op = _gemm_of_tiles(k * SMS + r)
    assert interference.persistent_gemm_factor(op, H100.name, 24) == pytest.approx((2 * k + 1) / (k + 1))
