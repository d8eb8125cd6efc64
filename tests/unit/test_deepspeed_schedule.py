"""DeepSpeed's TrainSchedule (scripts/deepspeed_replay.py, from deepspeed/runtime/pipe/schedule.py 0.5-0.7) against
closed forms, and the engine's DeepSpeed path against the replay of that schedule; the script's refusals."""

from __future__ import annotations

import pytest
from scripts_loader import load_script
from test_deepspeed_pipeline import scenario

from simcluster.engine import Simulation
from simcluster.parallel import schedules

deepspeed_replay = load_script("deepspeed_replay")

LAYOUTS = [(2, 1), (2, 5), (3, 2), (4, 8), (5, 3), (8, 8), (7, 20)]


@pytest.mark.parametrize(("pp", "m"), LAYOUTS)
def test_passes_sit_at_the_steps_of_the_schedule_docstring(pp, m):
    """TrainSchedule: stage s runs the forward of microbatch j at step 2j + s and its backward at 2j + 2pp - 1 - s,
    each once, in 2 (m + pp - 1) steps."""
    for s in range(pp):
        stream = deepspeed_replay.train_schedule(pp, m, s)
        forwards = {i.microbatch: i.step for i in stream if i.name == "ForwardPass"}
        backwards = {i.microbatch: i.step for i in stream if i.name == "BackwardPass"}
        assert forwards == {j: 2 * j + s for j in range(m)}
        assert backwards == {j: 2 * j + 2 * pp - 1 - s for j in range(m)}
        assert max(i.step for i in stream) < 2 * (m + pp - 1)


@pytest.mark.parametrize(("pp", "m"), LAYOUTS)
def test_the_passes_run_in_megatrons_1f1b_order(pp, m):
    """The order the engine runs for pipeline_engine: deepspeed (``schedules.pipeline_order('1f1b')``) is
    TrainSchedule's: pp - s forwards before the first backward, then one of each."""
    for s in range(pp):
        ours = [(w.phase, w.microbatch) for w in schedules.pipeline_order("1f1b", pp, s, m)]
        theirs = [("forward" if i.name == "ForwardPass" else "backward", i.microbatch)
                  for i in deepspeed_replay.train_schedule(pp, m, s) if i.name.endswith("Pass")]
        assert ours == theirs


@pytest.mark.parametrize(("pp", "m"), LAYOUTS)
def test_every_send_meets_its_receive_in_the_same_step(pp, m):
    """A blocking send pairs with the neighbour's receive of the same microbatch at the same schedule step
    (schedule.py: "must be paired ... to avoid deadlock"); a middle stage sends and receives 2m messages."""
    streams = [deepspeed_replay.train_schedule(pp, m, s) for s in range(pp)]
    for s, stream in enumerate(streams):
        for ins in stream:
            if ins.name in deepspeed_replay.PARTNER:
                name, offset = deepspeed_replay.PARTNER[ins.name]
                assert (name, ins.microbatch, ins.step) in {tuple(i) for i in streams[s + offset]}
        if 0 < s < pp - 1:
            assert sum(i.name in deepspeed_replay.PARTNER for i in stream) == 4 * m


@pytest.mark.parametrize(("pp", "m"), LAYOUTS)
def test_uniform_stages_have_the_1f1b_bubble_and_no_more(pp, m):
    """Uniform stages, free transfers: the step is (m + pp - 1)(t_f + t_b), every stage idle (pp - 1)(t_f + t_b):
    the alternating even/odd slots add no lock-step wait."""
    f, b = 1.0, 2.5
    r = deepspeed_replay.replay(pp, m, [f] * pp, [b] * pp)
    assert r.step_s == pytest.approx((m + pp - 1) * (f + b), rel=1e-12)
    for s in range(pp):
        assert r.idle_s(s) == pytest.approx((pp - 1) * (f + b), rel=1e-12)


def test_a_slower_last_stage_paces_every_microbatch():
    """The last stage slower by d per microbatch: the step grows by m d (the pipeline runs at its slowest stage)."""
    pp, m, f, b, d = 6, 12, 1.0, 3.0, 0.25
    r = deepspeed_replay.replay(pp, m, [f] * pp, [b] * (pp - 1) + [b + d])
    assert r.step_s == pytest.approx((m + pp - 1) * (f + b) + m * d, rel=1e-12)


def test_transfers_in_series_cost_a_middle_stage_both_messages_twice_per_microbatch():
    """Steady state: a middle stage takes part in four blocking transfers per microbatch (activation in and out,
    gradient in and out), one after the other: each added microbatch costs t_f + t_b + 2 (c_a + c_g)."""
    pp, f, b, ca, cg = 5, 1.0, 3.0, 0.1, 0.05
    steps = [deepspeed_replay.replay(pp, m, [f] * pp, [b] * pp, ca, cg).step_s for m in (30, 31)]
    assert steps[1] - steps[0] == pytest.approx(f + b + 2 * (ca + cg), rel=1e-9)


@pytest.mark.parametrize("pp", [2, 4])
def test_the_engine_runs_trainschedules_timeline(pp):
    """The engine on a DeepSpeed pipeline (pipeline messages, step collectives and optimizer off, so that the pass
    order and the stages' blocks alone decide) ends its step when the replay of TrainSchedule with the plan's
    blocks does: the first and last stages' extra work included."""
    sim = Simulation(scenario(cluster__nodes=pp, parallelism__pp=pp, training__global_batch_size=8))
    plan = sim.plan
    plan.p2p_bytes, plan.p2p_gather_bytes = 0.0, 0.0
    plan.embedding_grad_bytes, plan.grad_norm_axes = 0.0, ()
    plan.optimizer_s = [0.0] * len(plan.optimizer_s)
    step = float(sim.run(1).summary["step_time_s"])
    forward = [sum(c.forward_compute_s + c.forward_tp_comm_s for c in plan.chunks if c.stage == s)
               for s in range(pp)]
    backward = [sum(c.backward_compute_s + c.backward_tp_comm_s + c.tp_async_exposed_s
                    for c in plan.chunks if c.stage == s) for s in range(pp)]
    assert forward[-1] + backward[-1] > forward[0] + backward[0]  # the output layer and loss: the slowest stage
    assert step == pytest.approx(deepspeed_replay.replay(pp, plan.microbatches, forward, backward).step_s,
                                 rel=1e-9)


@pytest.mark.parametrize(("name", "field"), [("nosuchscenario", "SCENARIO"),
                                             ("megatron-177b-h100", "parallelism.pipeline_engine")])
def test_the_script_refuses_what_it_cannot_replay_in_one_line(name, field, capsys):
    """An unknown name, or a scenario DeepSpeed does not pipeline: one line naming the field, exit 2, nothing run."""
    assert deepspeed_replay.main([name]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and f"deepspeed_replay: {field}: " in err


def test_the_script_refuses_a_pipeline_without_a_middle_stage(monkeypatch, capsys):
    """pp 2: no stage takes part in four transfers per microbatch, so the transfer time has no middle stage to come
    from: refused (parallelism.pp), exit 2."""
    two = scenario(cluster__nodes=2, parallelism__pp=2, training__global_batch_size=8)
    assert two.parallelism.pipeline_engine == "deepspeed"
    monkeypatch.setattr(deepspeed_replay.config, "load", lambda name: two)
    assert deepspeed_replay.main(["pp2"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == "deepspeed_replay: parallelism.pp: pp2: 2; the replay's transfer time is a " \
        "middle stage's (pp >= 3)"
