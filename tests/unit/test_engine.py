"""The training engine against hand composition of its parts (analytic network: no contention)."""

from __future__ import annotations

import dataclasses
import gzip
import json
from types import SimpleNamespace

import numpy as np
import pytest

from simcluster import collectives, network
from simcluster.collectives.timing import engine_schedule
from simcluster.engine import Simulation, simulate
from simcluster.fabric import topology
from simcluster.network.base import TransferClass
from simcluster.spec import config


def scenario(**overrides):
    data = {
        "name": "t",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "model": {"layers": 8, "hidden": 2048, "heads": 16, "vocab": 32000},
        "training": {"seq_len": 2048, "global_batch_size": 8, "micro_batch_size": 1},
        "parallelism": {"tp": 1, "pp": 1, "dp": 8},
        "network": "analytic",
    }
    for path, value in overrides.items():
        *parents, leaf = path.split("__")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config.from_dict(data)


def test_pure_data_parallel_step_is_compute_plus_exposed_allreduce():
    # one microbatch per replica, one gradient bucket: nothing can overlap the all-reduce
    spec = scenario(parallelism__grad_bucket_size="100 GB", parallelism__zero_stage=0)
    sim = Simulation(spec)
    result = sim.run()
    plan = sim.plan
    (chunk,) = plan.chunks
    fabric = topology.from_scenario(spec)
    steps = engine_schedule(fabric, "allreduce", list(range(8)), chunk.grad_bytes)
    allreduce_s = collectives.simulate(steps, network.make("analytic", collectives.calibrated(fabric)))
    by_hand = chunk.forward_compute_s + chunk.backward_compute_s + allreduce_s + plan.optimizer_s[0]
    assert result.summary["step_time_s"] == pytest.approx(by_hand, rel=1e-9)
    assert result.summary["exposed_comm_s"] == pytest.approx(allreduce_s, rel=1e-9)


def test_gradient_buckets_hide_all_but_the_last_bucket():
    one = simulate(scenario(parallelism__grad_bucket_size="100 GB", parallelism__zero_stage=0))
    many = simulate(scenario(parallelism__grad_bucket_size="10 MB", parallelism__zero_stage=0))
    assert many.summary["step_time_s"] < one.summary["step_time_s"]
    assert many.summary["exposed_comm_s"] < 0.5 * one.summary["exposed_comm_s"]


@pytest.mark.parametrize("schedule", ["1f1b", "gpipe"])
def test_pipeline_bubble_matches_closed_form(schedule):
    pp, m = 4, 8
    spec = scenario(cluster__gpus_per_node=4, parallelism__pp=pp, parallelism__dp=1, parallelism__schedule=schedule,
                    training__global_batch_size=m)
    sim = Simulation(spec)
    # the closed form assumes identical stages (no embedding/logits) and free pipeline messages
    middle = sim.plan.chunks[1]
    sim.plan.chunks = [dataclasses.replace(middle, chunk=c.chunk, stage=c.stage) for c in sim.plan.chunks]
    sim.plan.deferred_wgrads = 0  # no output layer, no deferred wgrad (test_deferred_output_wgrad)
    with_messages_s = Simulation(spec).run().summary["step_time_s"]
    sim.plan.p2p_bytes = 0.0
    # nor the all-reduces between the backward and the optimizer (test_pipeline_traffic times them)
    sim.plan.embedding_grad_bytes, sim.plan.grad_norm_axes = 0.0, ()
    step = sim.run().summary["step_time_s"] - sim.plan.optimizer_s[0]  # stage 0 finishes last
    t_f, t_b = middle.forward_compute_s, middle.backward_compute_s
    # Narayanan et al. 2021: m + pp - 1 slots of t_f + t_b; the bubble is (pp-1)/(m+pp-1) of the step
    assert step == pytest.approx((m + pp - 1) * (t_f + t_b), rel=1e-9)
    assert (step - m * (t_f + t_b)) / step == pytest.approx((pp - 1) / (m + pp - 1), rel=1e-9)
    assert with_messages_s > step  # real messages only add time


def test_collapsed_and_expanded_give_the_same_step_time_at_256_gpus():
    spec = scenario(cluster__nodes=32, parallelism__tp=4, parallelism__pp=4, parallelism__dp=16,
                    training__global_batch_size=64, network="flow",
                    model={"layers": 16, "hidden": 2048, "heads": 16, "vocab": 32000})
    collapsed = simulate(spec)
    expanded = simulate(spec, expand=True)
    assert collapsed.summary["agents"] == 4 and expanded.summary["agents"] == 256
    assert expanded.summary["step_time_s"] == pytest.approx(collapsed.summary["step_time_s"], rel=1e-9)


def test_trace_is_valid_chrome_trace_json(tmp_path):
    spec = scenario(cluster__gpus_per_node=4, parallelism__pp=2, parallelism__dp=2, training__global_batch_size=8)
    result = simulate(spec)
    result.write(tmp_path)
    with gzip.open(tmp_path / "trace.json.gz", "rt") as handle:
        trace = json.load(handle)
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    names = [e for e in trace["traceEvents"] if e["ph"] == "M"]
    assert spans and names
    assert {e["pid"] for e in spans} <= {e["pid"] for e in names if e["name"] == "process_name"}
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in spans)
    assert {e["tid"] for e in spans} >= {0, 2}  # compute and pipeline streams both visible
    assert json.loads((tmp_path / "summary.json").read_text())["step_time_s"] == result.summary["step_time_s"]


def test_summary_has_the_design_contract_keys():
    from simcluster.engine.results import SUMMARY_KEYS

    summary = simulate(scenario()).summary
    assert set(SUMMARY_KEYS) <= set(summary)
    assert 0 < summary["mfu"] <= summary["hfu"] < 1


@pytest.mark.parametrize(("gpus_per_node", "nodes", "size_bytes"), [(8, 1, 2**20), (8, 1, 2**30), (4, 4, 2**24)])
def test_engine_collective_on_an_idle_fabric_takes_what_the_collective_command_gives(gpus_per_node, nodes,
                                                                                       size_bytes):
    # the engine's one network carries ring/Simple efficiencies; protocols with less payload per wire byte
    # (LL, LL128, trees) must still cost what NCCL's calibration gives them
    import simpy

    from simcluster.engine.drivers import CollectiveDriver, NetworkDriver

    spec = scenario(cluster__gpus_per_node=gpus_per_node, cluster__nodes=nodes, parallelism__dp=gpus_per_node * nodes,
                    training__global_batch_size=gpus_per_node * nodes)
    fabric = topology.from_scenario(spec)
    group = tuple(range(gpus_per_node * nodes))
    env = simpy.Environment()
    driver = CollectiveDriver(env, fabric, NetworkDriver(env, network.make("flow", collectives.calibrated(fabric))))
    env.process(driver.run("reduce_scatter", [group], size_bytes))
    env.run()
    expected = collectives.run(collectives.Collective("reduce_scatter", group, size_bytes), fabric, "flow").time_s
    assert env.now == pytest.approx(expected, rel=1e-6)


def test_three_network_models_agree_within_their_resolution_on_a_small_3d_step():
    # 16 GPUs on 2 nodes: the flow model adds contention the analytic one ignores, the chunk model adds
    # store-and-forward delay (at most (hops - 1) / 64 of a transfer); on a step dominated by compute all three
    # agree within a few percent, and flow never beats analytic (contention only slows)
    steps = {}
    for name in ("analytic", "flow", "chunk"):
        spec = scenario(cluster__nodes=2, parallelism__tp=2, parallelism__pp=2, parallelism__dp=4,
                        training__global_batch_size=16, network=name)
        steps[name] = simulate(spec).summary["step_time_s"]
    assert steps["flow"] >= steps["analytic"] * (1 - 1e-9)
    assert steps["flow"] == pytest.approx(steps["analytic"], rel=0.05)
    assert steps["chunk"] == pytest.approx(steps["flow"], rel=0.05)


# ---- the merge policy of the network driver --------------------------------------------------------------------

def classes_started(model) -> list[int]:
    """The size of every class ``model`` is asked to start from now on, filled as the run goes."""
    sizes, start = [], model.start

    def counting_start(transfers, now_s):
        sizes.append(transfers.members)
        return start(transfers, now_s)

    model.start = counting_start
    return sizes


def test_merge_policies_key_transfers_as_documented():
    from simcluster.engine.merge import NO_MERGE, SYMMETRIC

    send = TransferClass(np.array([[0, 8]]), 1e6, label="pp 0->1")
    replica = TransferClass(np.array([[1, 9]]), 1e6, label="pp 0->1")
    assert SYMMETRIC.key(send) == SYMMETRIC.key(replica)  # the same step in another replica
    assert SYMMETRIC.key(send) != SYMMETRIC.key(TransferClass(send.pairs, 2e6, label="pp 0->1"))
    assert SYMMETRIC.key(send) != SYMMETRIC.key(TransferClass(send.pairs, 1e6, label="pp 1->2"))
    assert NO_MERGE.key(send) != NO_MERGE.key(send)  # every call its own class


@pytest.mark.parametrize(("policy", "classes"), [("SYMMETRIC", 1), ("NO_MERGE", 2)])
def test_network_driver_hands_the_model_the_classes_its_policy_makes(policy, classes):
    import simpy

    from simcluster.engine import merge
    from simcluster.engine.drivers import NetworkDriver

    fabric = topology.from_scenario(scenario(cluster__nodes=2, parallelism__dp=16, training__global_batch_size=16))
    model = network.make("analytic", collectives.calibrated(fabric))
    started = classes_started(model)
    env = simpy.Environment()
    driver = NetworkDriver(env, model, merge=getattr(merge, policy))
    events = [driver.transfer(TransferClass(np.array([[r, r + 8]]), 1e6, label="pp 0->1")) for r in (0, 1)]
    env.run()
    assert sorted(started) == ([2] if classes == 1 else [1, 1])
    assert all(event.triggered for event in events)
    assert (events[0] is events[1]) == (classes == 1)


def test_no_merge_gives_the_default_step_time_on_a_symmetric_fabric():
    # expanded, every replica's send and every group's ring step is its own transfer() call: unmerged, each is its
    # own class, and on a non-blocking rail-optimised fat-tree each gets the rate the merged class gets
    from simcluster.engine.merge import NO_MERGE, SYMMETRIC

    spec = scenario(cluster__nodes=2, parallelism__tp=2, parallelism__pp=2, parallelism__dp=4,
                    training__global_batch_size=16, network="flow")
    merged = Simulation(spec, expand=True, merge=SYMMETRIC)
    unmerged = Simulation(spec, expand=True, merge=NO_MERGE)
    merged_classes, unmerged_classes = classes_started(merged.model), classes_started(unmerged.model)
    merged_s = merged.run().summary["step_time_s"]
    unmerged_s = unmerged.run().summary["step_time_s"]
    assert len(unmerged_classes) > len(merged_classes)  # the policy did split classes
    assert sum(unmerged_classes) == sum(merged_classes)  # the same transfers
    assert unmerged_s == pytest.approx(merged_s, rel=1e-9)


# ---- the parts of a step -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("zero_stage", "overlap_grad", "overlap_param", "gradients", "parameters"), [
    (0, True, False, "ReduceBucketsDuringBackward", "ParameterGathering"),
    (1, False, False, "ReduceAfterBackward", "GatherAfterOptimizer"),
    (2, True, True, "ReduceBucketsDuringBackward", "GatherDuringForward"),
    (3, True, True, "ReduceBucketsDuringBackward", "GatherBeforeUse"),
])
def test_data_parallel_strategies_follow_the_zero_stage_and_overlap_options(zero_stage, overlap_grad, overlap_param,
                                                                            gradients, parameters):
    spec = scenario(parallelism__zero_stage=zero_stage, parallelism__overlap_grad_reduce=overlap_grad,
                    parallelism__overlap_param_gather=overlap_param)
    agent = Simulation(spec).agents[0]
    assert type(agent.gradients).__name__ == gradients
    assert type(agent.parameters).__name__ == parameters
    assert getattr(agent.gradients, "every_microbatch", zero_stage >= 2) == (zero_stage >= 2)
    alone = Simulation(scenario(parallelism__dp=1, cluster__gpus_per_node=1, training__global_batch_size=1,
                                parallelism__zero_stage=zero_stage)).agents[0]
    assert (type(alone.gradients).__name__, type(alone.parameters).__name__) == ("GradientReduction",
                                                                                "ParameterGathering")


def test_summary_is_computed_from_the_run_record_alone():
    # two agents standing for 1 and 3 GPUs: per-GPU figures are means weighted by multiplicity, per step
    from simcluster.core.table import Table
    from simcluster.engine.record import AgentTally, FabricLinks, RunRecord, Tally
    from simcluster.engine.recorder import COLUMNS, DTYPES
    from simcluster.engine.results import summarize

    spec = scenario(parallelism__dp=4, cluster__gpus_per_node=4, training__global_batch_size=4)
    fabric = FabricLinks("two links", ["nvlink", "ib"], np.array([100.0, 50.0]), None)
    record = RunRecord(
        scenario=spec, steps=2, microbatches=1, layout={"tp": 1, "cp": 1, "pp": 1, "dp": 4},
        agents=(AgentTally(Tally(compute_s=4.0, dp_wait_s=2.0), 1), AgentTally(Tally(compute_s=8.0), 3)),
        events=Table.of_rows([], COLUMNS, DTYPES), link_bytes=np.array([0.0, 500.0]), fabric=fabric,
        network_model="analytic", end_s=10.0, wall_time_s=0.5, memory=SimpleNamespace(total_bytes=1.0),
        model_flop_per_step=1e15, hardware_flop_per_step=2e15)
    result = summarize(record)
    assert result.summary["step_time_s"] == 5.0
    assert result.summary["compute_s"] == pytest.approx((4.0 + 3 * 8.0) / 4 / 2)
    assert result.summary["exposed_comm_s"] == pytest.approx(2.0 / 4 / 2)
    assert result.summary["pipeline_bubble_s"] == pytest.approx(5.0 - 3.5 - 0.25)
    assert result.summary["agents"] == 2 and result.summary["topology"] == "two links"
    # a record without link classes names each link by its technology in both columns
    assert result.links.to_dict("list") == {"link_id": [1], "kind": ["ib"], "technology": ["ib"], "bytes": [500.0],
                                            "utilisation": [1.0]}
    assert result.summary["busiest_link_utilisation"] == 1.0
    assert result.summary["busiest_link_utilisation_by_kind"] == {"ib": 1.0}
