"""The later passes of an expanded run (``engine.run_expanded``): the classes the merged pass found holding a part
back are kept apart (by rate) or merged by path latency only (by latency), the rest stay merged, and the pass the
network model proves exact stands. The reference is every call its own class (``NO_MERGE``): a pass that stands must
give its step time, and the model must name the classes it flags by the reason it flags them."""

from __future__ import annotations

import numpy as np
import pytest
from test_symmetry import scenario as symmetry_scenario

from simcluster.engine.merge import NO_MERGE, SYMMETRIC, SplitKeys
from simcluster.engine.simulation import Simulation, run_expanded
from simcluster.fabric import topology
from simcluster.network.base import TransferClass, class_load
from simcluster.network.flow import FlowNetwork
from simcluster.spec import config, hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")


def scenario(nodes, tp, pp, dp, topology_name="rail-fat-tree", options=None, layers=8, hidden=2048):
    """test_symmetry's small H100 scenario (the same builder, so the two files test one fabric family)."""
    return symmetry_scenario(topology_name, options, nodes, tp, pp, dp, layers=layers, hidden=hidden)


def run_counting_passes(spec):
    """``run_expanded``'s summary and the policies of its passes, in order."""
    policies = []

    def build(merge):
        policies.append(merge)
        return Simulation(spec, expand=True, merge=merge)

    return run_expanded(build).summary, policies


def test_a_class_held_back_by_rate_is_named_by_its_label_and_size():
    # pair (0, 8) shares GPU 0's NIC with a long background transfer, pair (1, 9) has its own: merged, the second is
    # held back by its rate (the closed form is test_symmetry's); its key is the class's label and size
    fabric = topology.build("rail-fat-tree", gpus=16, gpus_per_node=8, gpu=H100, nic=CX7)
    model = FlowNetwork(fabric)
    model.start(TransferClass([[0, 8]], 1e10, "background"), 0.0)
    merged = model.start(TransferClass([[0, 8], [1, 9]], 1e8, "pp 0->1", parts=[0, 1]), 0.0)
    while merged not in model.advance(model.next_completion_s()):
        pass
    assert model.held_back.keys == {("pp 0->1", 1e8)} and model.held_back.latency_keys == set()


def test_a_class_held_back_by_path_latency_alone_is_named_apart():
    # 48 nodes: a leaf group of the rail-optimised tree holds 32, so (0, 192) stays under one leaf, (80, 272) crosses
    # the spine; on an idle fabric both run at their NICs' rate, and only the latency differs
    fabric = topology.build("rail-fat-tree", gpus=384, gpus_per_node=8, gpu=H100, nic=CX7)
    pairs = np.array([[0, 192], [80, 272]])
    near_s, far_s = fabric.pair_latencies_s(pairs)
    assert far_s > near_s
    model = FlowNetwork(fabric)
    model.start(TransferClass(pairs, 1e6, "pp 0->1", parts=[0, 1]), 0.0)
    assert model.held_back_s == pytest.approx(far_s - near_s, rel=1e-12)
    assert model.held_back.latency_keys == {("pp 0->1", 1e6)} and model.held_back.keys == set()


def test_split_keys_keep_split_calls_apart_and_merge_the_others_by_latency_or_as_before():
    fabric = topology.build("rail-fat-tree", gpus=384, gpus_per_node=8, gpu=H100, nic=CX7)
    near = TransferClass([[0, 192]], 1e6, "pp 0->1")
    near_too = TransferClass([[1, 193]], 1e6, "pp 0->1")
    far = TransferClass([[80, 272]], 1e6, "pp 0->1")
    ring = TransferClass([[0, 8]], 5e6, "ring network")
    policy = SplitKeys(frozenset({("ring network", 5e6)}), frozenset({("pp 0->1", 1e6)})).bind(fabric)
    assert policy.key(ring) != policy.key(ring)   # every call its own class
    assert policy.key(near) == policy.key(near_too) != policy.key(far)   # merged only with equal latency
    assert policy.key(near)[2] == class_load(fabric, near)[2]
    other = TransferClass([[2, 194]], 2e6, "pp 1->0")
    assert policy.key(other) == SYMMETRIC.key(other)   # not flagged: merged as the first pass did


@pytest.mark.parametrize(("spec", "passes"), [
    # the pipeline sends of 24 replicas under one leaf and across the spine: merged by latency in the second pass
    (scenario(nodes=48, tp=8, pp=2, dp=24, layers=2, hidden=1024), 2),
    # a 4:1 hash-ECMP leaf-spine holds ring steps back by rate: apart in the second pass, more in the third
    (scenario(nodes=8, tp=2, pp=4, dp=8, topology_name="leaf-spine",
              options={"oversubscription": 4, "hosts_per_leaf": 8}), 3),
], ids=["latency", "rate"])
def test_the_pass_that_stands_gives_the_reference_step(spec, passes):
    summary, policies = run_counting_passes(spec)
    reference = Simulation(spec, expand=True, merge=NO_MERGE).run().summary
    assert len(policies) == passes and policies[0] is SYMMETRIC
    assert all(isinstance(policy, SplitKeys) for policy in policies[1:])   # no NO_MERGE pass was needed
    assert summary["symmetry"]["exact"] is True
    assert summary["step_time_s"] == pytest.approx(reference["step_time_s"], rel=1e-9)
    # the summary names what ran: the passes' policies in order, the last the one that stood
    assert summary["symmetry"]["passes"] == ["label-and-size"] + ["split"] * (passes - 1)
    assert summary["symmetry"]["merge"] == "split" and "split policy" in summary["symmetry"]["note"]
    assert reference["symmetry"]["merge"] == "none" and "its own class" in reference["symmetry"]["note"]


def test_a_flagged_run_that_does_not_settle_falls_back_to_the_reference(monkeypatch):
    # no split pass allowed: the flagged merged pass is dropped and NO_MERGE runs, and the summary says so
    monkeypatch.setattr("simcluster.engine.simulation.SPLIT_PASSES", 0)
    spec = scenario(nodes=8, tp=2, pp=4, dp=8, topology_name="leaf-spine",
                    options={"oversubscription": 4, "hosts_per_leaf": 8})
    summary, policies = run_counting_passes(spec)
    assert policies == [SYMMETRIC, NO_MERGE]
    assert summary["symmetry"]["passes"] == ["label-and-size", "none"] and summary["symmetry"]["merge"] == "none"
    reference = Simulation(spec, expand=True, merge=NO_MERGE).run().summary
    assert summary["step_time_s"] == reference["step_time_s"]


def test_a_model_that_does_not_check_runs_the_reference_at_once():
    # the chunk model checks no merged class (exact None): a merged pass could not stand, so none is run
    spec = config.from_dict({
        "name": "split-merge-chunk", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2},
        "model": {"layers": 2, "hidden": 512, "heads": 8, "vocab": 32000},
        "training": {"seq_len": 512, "global_batch_size": 8, "micro_batch_size": 1},
        "parallelism": {"tp": 2, "dp": 8}, "network": "chunk"})
    summary, _policies = run_counting_passes(spec)
    assert summary["symmetry"]["passes"] == ["none"] and summary["symmetry"]["exact"] is None
