"""scripts/dp_phase_charges.py against closed forms (docs/calibration/round-32.md, "Round 32: the exposed data-parallel
phase across families"): on a row whose data-parallel phase runs alone after the backward (FlagPerf's 440-GPU Llama 3
8B, Megatron-LM 0.6 without overlap: one reduce-scatter and one all-gather a step), the model prices its ring of four
GPUs a node at four NICs' measured busbw, and stretching every data-parallel collective by F adds exactly (F - 1) x
the phase to the step."""

from __future__ import annotations

import pytest
from scripts_loader import load_script

from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.studies import validation

dp_phase_charges = load_script("dp_phase_charges")

ROW = "flagperf-llama3-8b-440-h100-bf16"
NIC_BUSBW = 47e9  # nccl.yaml measured.per_nic_busbw: "46-48GB/s per NIC" (AddyLaddy, NVIDIA/nccl-tests#290)


@pytest.fixture(scope="module")
def row():
    scenario = config.load(ROW)
    return scenario, simulate(scenario, check_memory=False, link_windows=False)


def _phase_s(events) -> float:
    """The data-parallel phase's time: its gradient and parameter collectives' events, summed."""
    return sum(end - start for name, start, end in zip(events["name"], events["start_s"], events["end_s"],
                                                       strict=True) if name.startswith(("grad ", "param ")))


def test_a_ring_of_four_gpus_a_node_is_priced_at_four_nics(row):
    scenario, result = row
    assert dp_phase_charges.group_layout(scenario) == (220, 55, 4)
    rows = {op: (size, count, engine_s) for op, size, count, engine_s, *_ in
            dp_phase_charges.collective_rows(scenario, result.events)}
    assert set(rows) == {"reduce_scatter", "all_gather"}
    size, count, engine_s = rows["reduce_scatter"]
    assert count == 1
    # 4 B fp32 gradients of the 8B model's TP-2 shard: the buffer is at least 14 GB
    assert size > 14e9
    closed_form_s = size * 219 / 220 / (4 * NIC_BUSBW)
    assert engine_s == pytest.approx(closed_form_s, rel=0.01)
    # one NIC's worth would be four times as long: the assumption the section questions is what is tested here
    assert engine_s < 0.3 * size * 219 / 220 / NIC_BUSBW


def test_stretching_an_unoverlapped_phase_adds_it_again(row):
    scenario, result = row
    phase_s = _phase_s(result.events)
    with dp_phase_charges.stretched(2.0):
        stretched = simulate(scenario, check_memory=False, link_windows=False).summary["step_time_s"]
    assert stretched - result.summary["step_time_s"] == pytest.approx(phase_s, rel=0.01)
    # and the patch is undone on leaving
    again = simulate(scenario, check_memory=False, link_windows=False).summary["step_time_s"]
    assert again == pytest.approx(result.summary["step_time_s"], rel=1e-12)


def test_the_closing_stretch_is_the_closed_form_on_a_phase_that_runs_alone(row):
    """Where the phase runs alone, step(F) = step(1) + (F - 1) x phase, so the stretch that puts the step at a
    published figure is 1 + (published - step) / phase exactly; a row already slow has none, nor one past F_MAX."""
    scenario, result = row
    phase_s = _phase_s(result.events)
    case = {c["scenario"]: c for c in validation.held_out_cases()}[ROW]
    step_s = result.summary["step_time_s"]
    published_s = step_s + 1.7 * phase_s
    assert dp_phase_charges.closing_stretch(case, published_s) == pytest.approx(2.7, rel=2e-3)
    assert dp_phase_charges.closing_stretch(case, 0.95 * step_s) is None
    assert dp_phase_charges.closing_stretch(case, step_s + 1.5 * phase_s, f_max=2.0) is None
