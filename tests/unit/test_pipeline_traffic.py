"""Pipeline traffic on the engine's network against closed forms: the tied-embedding gradient all-reduce, the
gradient-norm all-reduce, Megatron's scatter/gather of pipeline messages without sequence parallelism, and
blocking pipeline sends (parallelism.p2p).

Closed forms are the collectives timed alone on the fabric (``timing.isolated_time_s``, analytic model, which the
engine never calls while it runs); byte counts are written out from the model's shape.
"""

from __future__ import annotations

import pytest
from scenario_data import with_changes

from simcluster.collectives import timing
from simcluster.core.errors import ScenarioError
from simcluster.engine import Simulation, simulate
from simcluster.parallel import plan as step_plan
from simcluster.parallel.plan import GRAD_NORM_BYTES
from simcluster.parallel.schedules import batches_next_receive, p2p_blocks, pipeline_order
from simcluster.spec import config

# a small GPT on one 8-GPU H100 node: tp2 pp4, one microbatch group of 8
BASE = {
    "name": "pipeline-traffic",
    "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "nic": "connectx-7", "topology": "rail-fat-tree"},
    "model": {"layers": 8, "hidden": 2048, "heads": 16, "vocab": 32000},
    "training": {"seq_len": 2048, "global_batch_size": 8, "micro_batch_size": 1},
    "parallelism": {"tp": 2, "pp": 4, "dp": 1, "order": "tp-cp-pp-dp"},  # the ranks the tests name
}


def scenario(**changes) -> config.Scenario:
    """BASE with ``section__key=value`` changes."""
    return with_changes(BASE, **changes)


def exposed(summary: dict, parallelism: str) -> float:
    return summary["exposed_comm_by_parallelism_s"][parallelism]


# ---- 1. tied word embeddings ------------------------------------------------------------------------------------

def test_tied_embedding_gradient_is_vocab_over_tp_times_hidden_in_the_gradient_precision():
    assert step_plan.embedding_grad_bytes(scenario()) == 32000 / 2 * 2048 * 4  # fp32 gradient buffer
    assert step_plan.embedding_grad_bytes(scenario(parallelism__grad_reduce_dtype="bf16")) == 32000 / 2 * 2048 * 2
    assert step_plan.embedding_grad_bytes(scenario(model__tied_embeddings=False)) == 0.0
    no_pipeline = scenario(parallelism__pp=1, parallelism__dp=4)
    assert step_plan.embedding_grad_bytes(no_pipeline) == 0.0


def test_tied_embedding_allreduce_adds_its_time_alone_between_first_and_last_stage():
    """Tying changes nothing else in the plan (the last stage keeps its own copy of the embedding either way), so
    the step grows by the all-reduce over {first, last} stage alone on the NVSwitch, and the pipeline share by that
    time on the half of the GPUs (stages 0 and 3 of 4) that take part."""
    tied_sim = Simulation(scenario())
    tied = tied_sim.run()
    plain = simulate(scenario(model__tied_embeddings=False)).summary
    # layout tp-cp-pp-dp: rank = tp + 2 * stage, so the embedding groups are (0, 6) and (1, 7)
    allreduce_s = timing.isolated_time_s(tied_sim.fabric, "allreduce", (0, 6), 32000 / 2 * 2048 * 4)
    assert allreduce_s > 0
    assert tied.summary["step_time_s"] - plain["step_time_s"] == pytest.approx(allreduce_s, rel=1e-9)
    assert exposed(tied.summary, "pp") - exposed(plain, "pp") == pytest.approx(allreduce_s * 2 / 4, rel=1e-9)
    rows = tied.events[tied.events["name"] == "embedding allreduce"]
    assert len(rows) == 1 and rows["stream"].iloc[0] == "pp"
    assert rows["end_s"].iloc[0] - rows["start_s"].iloc[0] == pytest.approx(allreduce_s, rel=1e-9)


# ---- 2. the gradient norm ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("zero_stage", "group"), [(1, tuple(range(16))), (0, (0, 1, 2, 3))])
def test_gradient_norm_allreduce_takes_its_time_alone_over_the_distributed_optimizer_or_model_parallel_group(
        zero_stage, group):
    """4 bytes all-reduced before the optimizer: over every rank with the distributed optimizer (ZeRO >= 1), over
    the tp x pp model-parallel group otherwise (Megatron-LM get_grad_stats_parallel_group). Across two nodes its
    latency (alpha terms over the NICs and switches) is what it costs; it adds exactly its time alone."""
    spec = scenario(cluster__nodes=2, parallelism__pp=2, parallelism__dp=4, parallelism__zero_stage=zero_stage,
                    training__global_batch_size=16)
    with_norm = Simulation(spec)
    summary = with_norm.run().summary
    without = Simulation(spec)
    without.plan.grad_norm_axes = ()
    reference = without.run().summary
    norm_s = timing.isolated_time_s(with_norm.fabric, "allreduce", group, GRAD_NORM_BYTES)
    one_node_s = timing.isolated_time_s(with_norm.fabric, "allreduce", tuple(range(8)), GRAD_NORM_BYTES)
    assert norm_s > 0
    if zero_stage == 1:
        assert norm_s > one_node_s  # crossing the fabric costs latency
    assert summary["step_time_s"] - reference["step_time_s"] == pytest.approx(norm_s, rel=1e-9)
    assert exposed(summary, "dp") - exposed(reference, "dp") == pytest.approx(norm_s, rel=1e-9)


def test_gradient_norm_needs_no_collective_when_its_group_is_one_rank():
    """ZeRO-0 without model parallelism: Megatron's model-parallel group is the rank itself."""
    spec = scenario(parallelism__tp=1, parallelism__pp=1, parallelism__dp=8, parallelism__zero_stage=0)
    result = simulate(spec)
    assert "grad norm allreduce" not in set(result.events["name"])


# ---- 3. scatter/gather of pipeline messages ---------------------------------------------------------------------

ACTIVATION_BYTES = 2048 * 1 * 2048 * 2  # seq x micro-batch x hidden, 16-bit


@pytest.mark.parametrize(("sequence_parallel", "scatter_gather", "p2p_bytes", "gather_bytes"), [
    (True, True, ACTIVATION_BYTES / 8, 0.0),  # already 1/tp per rank
    (False, True, ACTIVATION_BYTES / 8, ACTIVATION_BYTES),  # Megatron-LM's scatter/gather
    (False, False, ACTIVATION_BYTES, 0.0),  # Megatron-Core: every TP rank sends the whole activation
])
def test_pipeline_message_bytes(sequence_parallel, scatter_gather, p2p_bytes, gather_bytes):
    spec = scenario(cluster__nodes=2, parallelism__tp=8, parallelism__pp=2,
                    parallelism__sequence_parallel=sequence_parallel, parallelism__p2p_scatter_gather=scatter_gather)
    assert step_plan.pipeline_messages(spec, ACTIVATION_BYTES) == (p2p_bytes, gather_bytes)
    plan = Simulation(spec).plan
    assert (plan.p2p_bytes, plan.p2p_gather_bytes) == (p2p_bytes, gather_bytes)


def two_stage_single_microbatch(**changes) -> config.Scenario:
    """tp8 on each of two nodes, one stage per node, one microbatch, untied: the only pipeline traffic is one
    forward and one backward message, each alone on the fabric."""
    return config.from_dict({**BASE, "model": {**BASE["model"], "tied_embeddings": False},
                             "cluster": {**BASE["cluster"], "nodes": 2},
                             "training": {**BASE["training"], "global_batch_size": 1},
                             "parallelism": {"tp": 8, "pp": 2, "dp": 1, "sequence_parallel": False,
                                             "p2p": "async", **changes}})


def test_scattered_message_costs_its_nic_transfer_then_an_nvlink_all_gather():
    """Each GPU receives one message (stage 1 the activation, stage 0 its gradient): 1/tp of it over its own NIC
    (rail to rail, the TP ranks' pieces in parallel), then the all-gather of the whole over its node's NVSwitch."""
    sim = Simulation(two_stage_single_microbatch())
    summary = sim.run().summary
    wire_s = timing.isolated_time_s(sim.fabric, "sendrecv_ring", (0, 8), ACTIVATION_BYTES / 8)
    gather_s = timing.isolated_time_s(sim.fabric, "all_gather", tuple(range(8)), ACTIVATION_BYTES)
    assert exposed(summary, "pp") == pytest.approx(wire_s + gather_s, rel=1e-9)
    whole = Simulation(two_stage_single_microbatch(p2p_scatter_gather=False))
    whole_summary = whole.run().summary
    whole_s = timing.isolated_time_s(sim.fabric, "sendrecv_ring", (0, 8), ACTIVATION_BYTES)
    assert exposed(whole_summary, "pp") == pytest.approx(whole_s, rel=1e-9)
    assert exposed(summary, "pp") < exposed(whole_summary, "pp")  # NVLink gathers faster than the NIC carries
    gathers = sim.recorder.table().frame().query("stream == 'pp' and name.str.startswith('gather')")
    assert len(gathers) == 2 and (gathers["bytes"] == ACTIVATION_BYTES).all()


# ---- 4. blocking pipeline sends ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("p2p", "schedule", "virtual_stages", "blocks"), [
    ("auto", "1f1b", 1, True), ("auto", "1f1b", 2, False), ("auto", "gpipe", 1, False),
    ("async", "1f1b", 1, False),
])
def test_auto_blocks_where_megatron_blocks(p2p, schedule, virtual_stages, blocks):
    assert p2p_blocks(p2p, schedule, virtual_stages) is blocks


@pytest.mark.parametrize("stage", range(4))
def test_one_f_one_b_batches_megatrons_steady_state_exchanges(stage):
    """Non-interleaved 1F1B with w = pp - stage - 1 warm-up forwards: each of the m - w steady iterations pairs its
    forward's send with the next backward's receive, and all but the last its backward's send with the next
    forward's receive: 2 (m - w) - 1 batched exchanges; warm-up and cool-down sends go alone."""
    pp, m = 4, 8
    order = pipeline_order("1f1b", pp, stage, m)
    batched = sum(batches_next_receive(order, i) for i in range(len(order)))
    assert batched == 2 * (m - (pp - stage - 1)) - 1


@pytest.mark.parametrize("changes", [{"parallelism__p2p": "sometimes"},
                                     {"parallelism__p2p": "blocking", "parallelism__virtual_stages": 2}])
def test_bad_p2p_value_is_a_one_line_error_naming_the_field(changes):
    with pytest.raises(ScenarioError) as caught:
        scenario(**changes)
    assert caught.value.field == "parallelism.p2p"
    assert "\n" not in str(caught.value)


def test_blocking_sender_waits_for_its_message_on_the_wire():
    """pp2, one microbatch: stage 1 waits for the activation, stage 0 for its gradient, in both modes. Blocking,
    each sender also waits for its own message to arrive: the pipeline share doubles, the step does not change
    (each sender had nothing else to do)."""
    sim = Simulation(two_stage_single_microbatch(sequence_parallel=True))
    asynchronous = sim.run().summary
    blocking = simulate(two_stage_single_microbatch(sequence_parallel=True, p2p="blocking")).summary
    wire_s = timing.isolated_time_s(sim.fabric, "sendrecv_ring", (0, 8), ACTIVATION_BYTES / 8)
    assert exposed(asynchronous, "pp") == pytest.approx(wire_s, rel=1e-9)
    assert exposed(blocking, "pp") == pytest.approx(2 * wire_s, rel=1e-9)
    assert blocking["step_time_s"] == pytest.approx(asynchronous["step_time_s"], rel=1e-12)


def test_blocking_sender_waiting_for_its_receiver_is_bubble_not_communication():
    """Free messages on identical stages: blocking 1F1B keeps Narayanan et al.'s (m + pp - 1)(t_f + t_b) step and
    exposes no pipeline communication, though senders wait for their receivers to post."""
    import dataclasses

    spec = scenario(parallelism__tp=1, cluster__gpus_per_node=4, parallelism__p2p="blocking")
    sim = Simulation(spec)
    middle = sim.plan.chunks[1]
    sim.plan.chunks = [dataclasses.replace(middle, chunk=c.chunk, stage=c.stage) for c in sim.plan.chunks]
    sim.plan.p2p_bytes, sim.plan.embedding_grad_bytes, sim.plan.grad_norm_axes = 0.0, 0.0, ()
    sim.plan.deferred_wgrads = 0  # no output layer, no deferred wgrad (test_deferred_output_wgrad)
    summary = sim.run().summary
    pp, m = 4, 8
    assert summary["step_time_s"] - sim.plan.optimizer_s[0] == pytest.approx(
        (m + pp - 1) * (middle.forward_compute_s + middle.backward_compute_s), rel=1e-9)
    assert exposed(summary, "pp") == 0.0


@pytest.mark.parametrize(("p2p", "schedule", "virtual_stages"), [
    ("blocking", "1f1b", 1), ("auto", "1f1b", 2), ("blocking", "gpipe", 1), ("async", "1f1b", 1),
])
def test_every_schedule_finishes_and_blocking_never_beats_async(p2p, schedule, virtual_stages):
    """A deadlock would leave SimPy without events before the step ends (an error). Blocking only adds waits."""
    changes = {"parallelism__p2p": p2p, "parallelism__schedule": schedule,
               "parallelism__virtual_stages": virtual_stages}
    summary = simulate(scenario(**changes)).summary
    asynchronous = simulate(scenario(**{**changes, "parallelism__p2p": "async"})).summary
    assert summary["step_time_s"] >= asynchronous["step_time_s"] * (1 - 1e-12)


# ---- all of it, collapsed and expanded ------------------------------------------------------------------------

def test_collapsed_equals_expanded_with_all_the_new_traffic():
    """Tied embeddings, the gradient norm over every rank, scattered messages gathered over TP and blocking 1F1B
    across two nodes: one agent per stage gives the step time and shares of one agent per GPU."""
    spec = scenario(cluster__nodes=2, parallelism__dp=2, parallelism__sequence_parallel=False,
                    training__global_batch_size=16)
    collapsed = simulate(spec).summary
    expanded = simulate(spec, expand=True).summary
    assert collapsed["step_time_s"] == pytest.approx(expanded["step_time_s"], rel=1e-9)
    for parallelism in ("tp", "pp", "dp"):
        assert exposed(collapsed, parallelism) == pytest.approx(exposed(expanded, parallelism), rel=1e-9)
