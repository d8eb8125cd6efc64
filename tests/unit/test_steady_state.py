"""The steady-state extrapolation of a pipelined step (studies/steady_state.py, round 26): the step it gives is the
full run's to float rounding, it is said in the validation row's note, and it stands back wherever the three steps
are not affine, not at the busiest stage's pace, or it does not apply."""

from __future__ import annotations

import types

import pytest

from simcluster import engine
from simcluster.engine import simulate
from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.studies import steady_state, validation


def _pipelined(microbatches: int, virtual_stages: int = 1, variability=None, defer: bool = False) -> config.Scenario:
    """Two H100 nodes, tp 2, pp 4, dp 2 (a 16-layer model): ``microbatches`` a pipeline; ``defer``: the output
    layer's wgrad deferred as Megatron-Core's default (here for 22 microbatches, ``memory.deferred_output_wgrads``)."""
    extra = {"variability": variability} if variability else {}
    return config.from_dict({**extra,
        "name": "steady-state",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2, "nic": "connectx-7"},
        "model": {"layers": 16, "hidden": 2048, "heads": 16, "vocab": 32000},
        "training": {"seq_len": 2048, "global_batch_size": 2 * microbatches, "micro_batch_size": 1},
        "parallelism": {"tp": 2, "pp": 4, "dp": 2, "virtual_stages": virtual_stages,
                        **({} if defer else {"defer_embedding_wgrad": False})},
    })


def test_the_extrapolated_step_is_the_full_runs():
    """Interleaved 1F1B (from 2 x pp: at pp every forward runs first) at 56 microbatches, whose last stage is busy
    all of its period: the line through the steps of 8, 12 and 16 microbatches, extended to 56, is the step of a run
    of all 56 (within the pinned results' 1e-9)."""
    scenario = _pipelined(56, 2)
    found = steady_state.step_s(scenario)
    assert found is not None and found.microbatches == (8, 12, 16)
    full = simulate(scenario).summary["step_time_s"]
    assert found.step_s == pytest.approx(full, rel=1e-9, abs=0)
    # the shorter runs are the scenario with fewer microbatches and nothing else changed
    assert found.steps_s[0] == simulate(steady_state.with_microbatches(scenario, 8)).summary["step_time_s"]


def test_plain_1f1b_is_paced_by_the_activations_trip_and_not_tried():
    """Plain 1F1B: the last stage waits for each activation from the stage before it (8.550 ms a microbatch against
    its 8.538 ms of work at 8 -> 12 microbatches), so no stage is saturated and check (2) would refuse it: not tried."""
    scenario = _pipelined(56, 1)
    (step_8, busy_8), (step_12, busy_12) = (steady_state.measure(steady_state.with_microbatches(scenario, m))
                                            for m in (8, 12))
    assert (step_12 - step_8) / 4 > max(b - a for a, b in zip(busy_8, busy_12, strict=True)) / 4 * (1 + 1e-6)
    assert not steady_state.applies(scenario) and steady_state.step_s(scenario) is None


def test_it_does_not_apply_without_pipelining_with_variability_or_with_few_microbatches():
    assert steady_state.applies(_pipelined(56, 2))
    assert not steady_state.applies(_pipelined(48, 2))   # the three runs (8 + 12 + 16) would cost over 2/3 of it
    assert not steady_state.applies(_pipelined(56, 2, variability={"gpu_speed_cv": 0.02, "seed": 1}))
    # the output layer's wgrad deferred for 22 of 56 microbatches: all of the shorter runs' would be, so their line
    # misses the full run's step (the plain-1F1B copy at 48: 4, 8, 12 microbatches take 0.0614, 0.0946, 0.1278 s, a
    # line to 0.4266 s; the full run takes 0.4331 s)
    assert not steady_state.applies(memory.with_fitting_deferral(_pipelined(56, 2, defer=True)))
    flat = _pipelined(56, 2)
    flat = flat.model_copy(update={"parallelism": flat.parallelism.model_copy(update={"pp": 1})})
    assert not steady_state.applies(flat)
    assert steady_state.step_s(_pipelined(48, 2)) is None


def _fake_simulate(step_of):
    """``engine.simulate`` stand-in: the step ``step_of(microbatches)`` (no engine run)."""
    def run(scenario, network=None, check_memory=True, link_windows=True):
        return types.SimpleNamespace(summary={"step_time_s": step_of(scenario.microbatches)})
    return run


def _fake_measure(step_of, busiest_of):
    """``steady_state.measure`` stand-in: the step and two stages' busy times (the other stage does half the work)."""
    return lambda scenario, network=None: (step_of(scenario.microbatches),
                                          [busiest_of(scenario.microbatches), 0.5 * busiest_of(scenario.microbatches)])


def test_steps_off_a_line_or_below_the_busiest_stages_work_are_not_extrapolated(monkeypatch):
    """A step with a term in 1 / microbatches (not affine), or one that grows by less a microbatch than the busiest
    stage works (the transient of nemo2511-llama3-405b-256-gb300-fp8: 0.276953 s against 0.277891 s): the check sees
    it and the caller runs every microbatch. On the line and at the busiest stage's pace: the line, exactly."""
    monkeypatch.setattr(steady_state, "measure", _fake_measure(lambda m: 10.0 + 0.5 * m + 1e-6 / m, lambda m: 0.5 * m))
    assert steady_state.step_s(_pipelined(56, 2)) is None
    monkeypatch.setattr(steady_state, "measure", _fake_measure(lambda m: 10.0 + 0.5 * m, lambda m: 0.501 * m))
    assert steady_state.step_s(_pipelined(56, 2)) is None
    monkeypatch.setattr(steady_state, "measure", _fake_measure(lambda m: 10.0 + 0.5 * m, lambda m: 1.0 + 0.5 * m))
    assert steady_state.step_s(_pipelined(56, 2)).step_s == 10.0 + 0.5 * 56


def test_a_validation_row_says_its_step_was_extrapolated_and_reads_the_full_runs_flop_and_memory(monkeypatch):
    """run_case with the shortcut: TFLOP/s of the full batch over the extrapolated step (as the engine's summary
    computes them) and the memory model's peak for the full run; by default it runs every microbatch."""
    case = next(c for c in validation.cases() if c["scenario"] == "megatron-177b-96-h100")
    scenario = config.load(case["scenario"])
    assert steady_state.applies(scenario)
    found = steady_state.Extrapolated(123.0, (6, 12, 18), (1.0, 2.0, 3.0))
    monkeypatch.setattr(steady_state, "step_s", lambda scenario, network=None: found)
    result = validation.run_case(case, extrapolate=True)
    assert result.step_time_s == 123.0 and "extrapolated to 576 microbatches" in result.note
    flop = validation.flop_per_step(case["metric"], scenario)
    assert result.simulated_tflops == flop / 123.0 / scenario.cluster.gpus / 1e12
    assert result.memory_bytes == memory.per_gpu_memory(memory.with_fitting_deferral(scenario)).total_bytes
    # by default the whole batch: the stand-in engine is asked for all 576 microbatches
    asked = []
    monkeypatch.setattr(engine, "simulate", _fake_simulate(lambda m: asked.append(m) or 100.0))
    with pytest.raises(KeyError):   # the stand-in's summary has no TFLOP/s, which the full run's path reads
        validation.run_case(case)
    assert asked == [576]
