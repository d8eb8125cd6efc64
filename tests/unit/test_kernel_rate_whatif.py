"""scripts/kernel_rate_whatif.py against closed forms (docs/calibration/round-35.md "Round 35: Llama 3 8B on H100,
calibration against held out"): on FlagPerf's 8-GPU Llama 3 8B row (pp 1, one node, the attention kernels alone on the
compute stream) attention K times slower adds exactly (K - 1) x the layers' attention time (forward and backward, one
layer and microbatch from the kernel model, times 32 layers x 128 microbatches) to the step; the model's functions are
restored after the block, also after an error; bad factors and rows are one-line errors before any simulation."""

from __future__ import annotations

import pytest
from scripts_loader import load_script

from simcluster.core.errors import ScenarioError
from simcluster.core.script_entry import call
from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import kernels

whatif = load_script("kernel_rate_whatif")
fp8_pairs = load_script("fp8_pairs")

ROW = "flagperf-llama3-8b-8-h100-bf16"


def test_slower_attention_adds_its_own_time_and_nothing_else():
    case = next(c for c in validation.held_out_cases() if c["scenario"] == ROW)
    scenario = config.load(ROW)
    layer = fp8_pairs.layer_breakdown(scenario)
    attention_s = layer["attention forward"] + layer["attention backward"]
    blocks = scenario.model.layers * scenario.microbatches   # pp 1: every layer of every microbatch on each rank
    base = validation.run_case(case).step_time_s
    with whatif.rates(attention=1.5):
        slower = validation.run_case(case).step_time_s
    assert slower - base == pytest.approx(0.5 * attention_s * blocks, rel=2e-3)
    assert validation.run_case(case).step_time_s == base   # restored on leaving the block


def test_a_lower_clock_reaches_the_engine():
    """F = 0.8 slows the step, by at most 1 / F (the tensor-core time scales with the clock, HBM-bound kernels,
    the fitted gaps and communication do not); and by more than half of the way there, the row being compute-bound
    (one node, FlagPerf's 8B: tensor-core roofline most of the step)."""
    case = next(c for c in validation.held_out_cases() if c["scenario"] == ROW)
    base = validation.run_case(case).step_time_s
    with whatif.rates(clock=0.8):
        slower = validation.run_case(case).step_time_s
    assert base * (1 + 0.5 * 0.25) < slower <= base / 0.8 * (1 + 1e-9)


def test_the_clock_and_attention_factors_apply_and_are_restored_after_an_error():
    fraction, ratio = kernels.attention_efficiency, kernels.clock_ratio
    with pytest.raises(RuntimeError), whatif.rates(attention=2.0, clock=0.5):
        assert kernels.clock_ratio("h100-sxm") == pytest.approx(0.5 * ratio("h100-sxm"))
        raise RuntimeError
    assert (kernels.attention_efficiency, kernels.clock_ratio) == (fraction, ratio)


@pytest.mark.parametrize("argv, field", [
    (["--attention", "0.9", ROW], "--attention"),     # an attention kernel is not made faster
    (["--clock", "0", ROW], "--clock"),
    (["--clock", "1.1", ROW], "--clock"),
    (["--attention", "1,x", ROW], "--attention"),
    (["--attention=nan", ROW], "--attention"),
    (["--clock", "inf", ROW], "--clock"),
    (["--", "--clock"], "scenario"),                                   # after --, a word: not a row
    (["not-a-row"], "scenario"),
    ([ROW, ROW], "scenario"),
    ([], "scenario"),
])
def test_bad_input_is_refused_before_simulating(argv, field, monkeypatch):
    monkeypatch.setattr(validation, "run_case", lambda *_a, **_k: pytest.fail("simulated before checking"))
    with pytest.raises(ScenarioError) as refused:
        whatif.main(argv)
    assert refused.value.field == field


def test_command_line_errors_are_one_line_exit_2(capsys):
    """Through the script's entry (``script_entry.call``): a ScenarioError and argparse's own errors alike."""
    assert call(whatif.main, ["--attention", "0.5", ROW]) == 2
    with pytest.raises(SystemExit) as exited:   # the Parser exits by itself
        call(whatif.main, ["--bogus", ROW])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as twice:    # argparse would keep the last silently (script_entry.Parser)
        call(whatif.main, ["--attention", "1.2", "--attention=1.5", ROW])
    assert twice.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "--attention" in err[0] and "--bogus" in err[1]
    assert "--attention: given twice" in err[2]
