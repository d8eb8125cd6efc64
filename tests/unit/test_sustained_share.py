"""efficiency.yaml sustained_share (workload/power_clock.py): what a stream of one tensor-core kernel kind keeps of
its burst throughput at the power cap, over clock_ratio. Read per GPU with a default; applied by kernels.roofline_s
to a compute-bound kernel's time in training only; a bad value is refused naming its key."""

from __future__ import annotations

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.spec import hardware
from simcluster.workload import kernels, power_clock
from simcluster.workload.ops import Op

GEMM = Op("gemm", "gemm", 2.0 * 8192 ** 3, 0.0, 8192, 8192, 8192)
COPY = Op("copy", "memory", 0.0, 4e9)


def _with_table(monkeypatch, shares: dict) -> None:
    table = dict(power_clock._table())
    table["sustained_share"] = shares
    monkeypatch.setattr(power_clock, "_table", lambda: table)


def test_gpus_not_listed_take_the_default_and_other_kinds_one():
    assert power_clock.sustained_share("h100-sxm", "gemm") == 1.0
    assert power_clock.sustained_share("b200", "memory") == 1.0


SHIPPED_B200_GEMM = power_clock.sustained_share("b200", "gemm")


def test_a_share_divides_a_compute_bound_kernels_time_in_training_only(monkeypatch):
    b200 = hardware.gpu("b200")
    before = kernels.roofline_s(GEMM, b200, "bf16")
    burst = kernels.roofline_s(GEMM, b200, "bf16", sustained=False)
    copy = kernels.roofline_s(COPY, b200, "bf16")
    _with_table(monkeypatch, {"default": {"gemm": 1.0, "attention": 1.0}, "b200": {"gemm": 0.5, "attention": 1.0}})
    after = kernels.roofline_s(GEMM, b200, "bf16")
    assert after[0] == pytest.approx(before[0] * SHIPPED_B200_GEMM / 0.5, rel=1e-12)
    assert kernels.roofline_s(GEMM, b200, "bf16", sustained=False) == burst
    assert kernels.roofline_s(COPY, b200, "bf16") == copy


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "fast", True])
def test_a_bad_share_is_refused_naming_its_key(monkeypatch, bad):
    _with_table(monkeypatch, {"default": {"gemm": 1.0}, "b200": {"gemm": bad}})
    with pytest.raises(ScenarioError, match="sustained_share.b200.gemm"):
        power_clock.sustained_share("b200", "gemm")


def test_a_bad_default_or_entry_is_refused_naming_its_key(monkeypatch):
    _with_table(monkeypatch, {"default": {"gemm": -1.0}})
    with pytest.raises(ScenarioError, match="sustained_share.default.gemm"):
        power_clock.sustained_share("h100-sxm", "gemm")
    _with_table(monkeypatch, {"default": {"gemm": 1.0}, "b200": 0.9})
    with pytest.raises(ScenarioError, match="sustained_share.b200"):
        power_clock.sustained_share("b200", "gemm")


def test_a_kinds_share_can_be_given_per_kernel(monkeypatch):
    """A mapping under a kind gives each named kernel its share and the rest ``default`` (1 when absent)."""
    _with_table(monkeypatch, {"default": {"gemm": 1.0, "attention": 1.0},
                              "b200": {"gemm": 0.9, "attention": {"flash": 0.5, "default": 0.8}},
                              "h100-sxm": {"attention": {"flash": 0.7}}})
    assert power_clock.sustained_share("b200", "attention", "flash") == 0.5
    assert power_clock.sustained_share("b200", "attention", "flash_triton") == 0.8
    assert power_clock.sustained_share("b200", "attention") == 0.8
    assert power_clock.sustained_share("b200", "gemm", "flash") == 0.9
    assert power_clock.sustained_share("h100-sxm", "attention", "naive") == 1.0
    b200 = hardware.gpu("b200")
    attention = Op("attention", "attention", 1e12, 0.0, m=2048, n=2048, k=128, batch=64, kernel="flash")
    shared = kernels.roofline_s(attention, b200, "bf16")[0]
    _with_table(monkeypatch, {"default": {"gemm": 1.0, "attention": 1.0}, "b200": {"gemm": 0.9, "attention": 0.8}})
    assert shared == pytest.approx(kernels.roofline_s(attention, b200, "bf16")[0] * 0.8 / 0.5, rel=1e-12)


def test_a_bad_per_kernel_share_is_refused_naming_its_key(monkeypatch):
    _with_table(monkeypatch, {"default": {"gemm": 1.0}, "b200": {"attention": {"flash": "fast"}}})
    with pytest.raises(ScenarioError, match="sustained_share.b200.attention.flash"):
        power_clock.sustained_share("b200", "attention", "flash")
    _with_table(monkeypatch, {"default": {"gemm": 1.0}, "b200": {"attention": {"default": 0.0}}})
    with pytest.raises(ScenarioError, match="sustained_share.b200.attention.default"):
        power_clock.sustained_share("b200", "attention", "naive")
