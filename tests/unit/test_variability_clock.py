"""A GPU's speed spread slows its clock-bound time only (engine.variability ``block_s``, kernels.StreamTime
``clock_s``), against an independent truth: the same kernel model run at a slower tensor-core clock (``clock_ratio``
x speed), where HBM-bound kernels, the per-kernel gap and the host's time do not change and compute-bound kernels
take 1 / speed as long."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from simcluster.engine import Simulation, simulate
from simcluster.parallel.layout import Layout
from simcluster.spec import config, hardware
from simcluster.workload import kernels
from simcluster.workload.ops import Op

sys.path.insert(0, str(Path(__file__).parent))
from test_variability import scenario  # noqa: E402
from test_variability_order import Stage, variability  # noqa: E402

SPEED = 0.9  # a GPU at 90% of the median's clock: its clock-bound time x 1 / 0.9
H100 = hardware.gpu("h100-sxm")


def _gemm(size: int) -> Op:
    return Op("gemm", "gemm", 2.0 * size ** 3, 3 * 2.0 * size * size, size, size, size)


def _copy(size_bytes: float) -> Op:
    return Op("copy", "memory", 0.0, size_bytes)


def _norm(elements: float) -> Op:
    return Op("norm", "memory", 8.0 * elements, 4.0 * elements)


HBM_ONLY = [_copy(2e9), _norm(5e8), _copy(1e9)]
GEMMS = [_gemm(8192), _gemm(16384), _gemm(8192)]


def _slower_clock(monkeypatch):
    ratio = kernels.clock_ratio
    monkeypatch.setattr(kernels, "clock_ratio", lambda name: ratio(name) * SPEED)


def _slow_gpu_block_s(ops) -> float:
    """``block_s`` of a one-GPU agent whose clock factor is 1 / SPEED, on the block ``ops`` at the median clock."""
    stream = kernels.stream_time(ops, H100, "bf16")
    v = variability({"gpu_speed_cv": 0.01}, Layout(tp=1), 0)
    v.clock[:] = 1.0 / SPEED
    return v.block_s(Stage([0]), stream.elapsed_s(), stream.clock_bound_s())


@pytest.mark.parametrize("ops, share", [(HBM_ONLY, 0.0), (GEMMS, 1.0), (HBM_ONLY + GEMMS, None)])
def test_a_slow_gpu_takes_the_block_the_kernel_model_gives_at_its_clock(monkeypatch, ops, share):
    median = kernels.stream_time(ops, H100, "bf16")
    slow_s = _slow_gpu_block_s(ops)
    _slower_clock(monkeypatch)
    truth_s = kernels.stream_time(ops, H100, "bf16").elapsed_s()
    assert slow_s == pytest.approx(truth_s, rel=1e-12)
    rest_s = median.elapsed_s() - median.clock_s
    if share == 0.0:  # only HBM-bound kernels: unaffected
        assert median.clock_s == 0.0 and slow_s == median.elapsed_s()
    elif share == 1.0:  # only large GEMMs: their roofline time x 1 / speed, the gaps before them not
        assert median.clock_s == median.device_s
        assert slow_s == pytest.approx(median.elapsed_s() / SPEED, rel=0.01)
    else:  # mixed: the closed form, clock-bound / speed + rest
        assert 0.0 < median.clock_s < median.device_s
        assert slow_s == pytest.approx(median.clock_s / SPEED + rest_s, rel=1e-12)


def test_a_host_bound_block_hides_a_slower_clock_under_the_host_lead():
    # GEMMs whose host spends more on each launch than the device on the kernel and its gap (a slow host CPU: host
    # time beyond the dispatch): the host's side sets the block, and a 10% slower clock stays under its lead
    gemms = kernels.stream_time(GEMMS, H100, "bf16")
    stream = gemms + kernels.StreamTime(host_extra_s=2.0 * gemms.device_bound_s())
    assert stream.host_bound_s() > gemms.device_bound_s() + gemms.clock_s * (1 / SPEED - 1) and stream.clock_s > 0
    assert stream.clock_bound_s() == 0.0 and gemms.clock_bound_s() == gemms.clock_s


def test_a_straggler_still_slows_the_whole_block_and_the_spread_its_clock_bound_time():
    v = variability({"gpu_speed_cv": 0.01, "stragglers": [{"ranks": [0], "slowdown": 1.5}]}, Layout(tp=1), 0)
    v.clock[:] = 1.0 / SPEED
    assert v.block_s(Stage([0]), 0.010, 0.006) == pytest.approx(1.5 * (0.004 + 0.006 / SPEED), rel=1e-12)
    assert v.speed_of(Stage([0])) == 1.5  # the optimizer step (HBM-bound): the straggler's slowdown only


def test_without_a_clock_share_the_block_scales_whole_as_before():
    v = variability({"gpu_speed_cv": 0.05}, Layout(tp=1, dp=8), 3)
    stage = Stage(list(range(8)))
    assert v.block_s(stage, 0.01) == pytest.approx(0.01 * v.speed.max(), rel=1e-12)


def test_a_single_stage_step_grows_as_if_every_gpu_ran_at_the_slowest_clock(monkeypatch):
    # pp = 1, tp = 1, gradients reduced after the backward: every replica waits for the slowest GPU at the gradient
    # all-reduce, so the step with the spread is the step with every GPU at the slowest GPU's clock, which the kernel
    # model gives by itself (clock_ratio / factor: compute-bound kernels slower, HBM-bound ones, gaps, host time,
    # the optimizer and the collectives not)
    spread = scenario({"gpu_speed_cv": 0.03, "gpu_speed_draw": "quantiles"}, tp=1, pp=1, dp=8, overlap=False)
    with_spread = simulate(spread).summary
    factor = with_spread["variability"]["slowest_gpu_factor"]
    plain = scenario(tp=1, pp=1, dp=8, overlap=False)
    base_s = simulate(plain).summary["step_time_s"]
    chunk = Simulation(plain).plan.chunks[0]
    clock_s = chunk.forward_clock_s + chunk.backward_clock_s
    assert 0.5 < clock_s / (chunk.forward_compute_s + chunk.backward_compute_s) < 1.0
    ratio = kernels.clock_ratio
    monkeypatch.setattr(kernels, "clock_ratio", lambda name: ratio(name) / factor)
    slow_clock_s = simulate(plain).summary["step_time_s"]
    # kernels near the ridge that the slower clock turns compute-bound are the only difference (stated: below 0.1%)
    assert with_spread["step_time_s"] == pytest.approx(slow_clock_s, rel=1e-3)
    microbatches = plain.microbatches
    assert with_spread["step_time_s"] == pytest.approx(base_s + (factor - 1) * microbatches * clock_s, rel=1e-9)
    assert with_spread["step_time_s"] < base_s * factor  # the old model's whole-block scaling overstated it



@pytest.mark.parametrize("name", ["nemo2409-gpt3-175b-128-h100-bf16",  # Megatron-Core, interleaved
                                  "bigscience-prequel-176b-h128-tp4-pp12-mbs2-a100"])  # DeepSpeed's pipeline
def test_every_block_carries_its_streams_clock_bound_time(name):
    # the plan hands the engine each block's clock-bound time as its kernels give it (DeepSpeed's added
    # accumulation and rebuild kernels included), a share of the block below 1 (gaps, HBM-bound kernels, host time)
    for chunk in Simulation(config.load(name)).plan.chunks:
        for phase in ("forward", "backward"):
            clock_s = getattr(chunk, f"{phase}_clock_s")
            assert clock_s == getattr(chunk, f"{phase}_stream").clock_bound_s()
            assert 0.5 < clock_s / getattr(chunk, f"{phase}_compute_s") < 0.95
