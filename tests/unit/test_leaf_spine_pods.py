"""Leaf-spine with pods (``leaves_per_pod``, ``pod_oversubscription``): Meta's three-layer RoCE Clos of the Llama 3
paper (section 3.3.1), checked against hand counts and the closed-form rates of a tapered core."""

from __future__ import annotations

import numpy as np
import pytest

from simcluster.core.errors import ScenarioError
from simcluster.fabric import topology
from simcluster.network.base import TransferClass
from simcluster.network.flow import FlowNetwork
from simcluster.spec import config, hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")
PCIE5 = hardware.pcie("pcie-gen5")
ROCE_HOP_S = hardware.switch("ethernet-roce").latency
SIZE = 1e8


def build(gpus, **options):
    return topology.build("leaf-spine", gpus=gpus, gpus_per_node=8, gpu=H100, nic=CX7, options=options)


def transfer_s(fabric, pairs) -> float:
    """Time for every pair of ``pairs`` to send SIZE bytes at once on an idle fabric."""
    net = FlowNetwork(fabric)
    net.start(TransferClass(np.asarray(pairs, dtype=np.int64), SIZE), 0.0)
    return net.next_completion_s()


def pod_fabric(ratio=4.0, routing="adaptive"):
    # 4 GPUs a leaf, 4 leaves a pod (16 GPUs), 3 pods (the last one half full): 40 GPUs, 4 spines a pod
    return build(40, hosts_per_leaf=4, leaves_per_pod=4, pod_oversubscription=ratio, routing=routing)


def test_pods_count_their_switches_and_cables():
    fabric = pod_fabric()
    assert fabric.summary()["nodes"] == {"gpu": 40, "nvswitch": 5, "pcie": 40, "nic": 40, "leaf": 10,
                                         "spine": 12, "core": 4}
    classes = fabric.summary()["link_classes"]
    # every leaf cabled to each of its pod's 4 spines; spine s of each of the 3 pods to core s: both directions
    assert classes["leaf-spine"] == 2 * 10 * 4
    assert classes["spine-core"] == 2 * 3 * 4
    g = fabric.graph
    assert {g.nodes[f"spine/p2/{s}"]["pod"] for s in range(4)} == {2}
    assert {g.nodes[f"leaf/{j}"]["pod"] for j in range(8, 10)} == {2}


def test_a_spines_core_uplink_is_its_full_pod_down_capacity_over_the_ratio():
    fabric = pod_fabric(ratio=4.0)
    g = fabric.graph
    # a full pod's spine takes 4 leaves x 4 hosts x rate / 4 spines; the half-full last pod keeps the same uplink
    for pod in range(3):
        assert g.edges[f"spine/p{pod}/1", "core/1"]["bytes_per_s"] == pytest.approx(4 * CX7.rate / 4)
        assert g.edges["core/1", f"spine/p{pod}/1"]["bytes_per_s"] == pytest.approx(4 * CX7.rate / 4)


def test_within_a_pod_the_fabric_is_non_blocking_and_between_pods_the_ratio_tapers_it():
    fabric = pod_fabric(ratio=4.0)
    pod = np.arange(16)
    # every GPU of pod 0 to the GPU half a pod away: all traffic crosses the pod's spines, none its core
    inside = np.stack([pod, (pod + 8) % 16], axis=1)
    one_pod_s = 2 * PCIE5.latency + 2 * CX7.latency + 3 * ROCE_HOP_S
    assert transfer_s(fabric, inside) == pytest.approx(SIZE / CX7.rate + one_pod_s, rel=1e-9)
    # every GPU of pod 0 to its twin in pod 1: the 16 flows share pod 0's uplinks, 16 x rate / 4
    across = np.stack([pod, pod + 16], axis=1)
    two_pods_s = 2 * PCIE5.latency + 2 * CX7.latency + 5 * ROCE_HOP_S
    assert transfer_s(fabric, across) == pytest.approx(SIZE / (CX7.rate / 4) + two_pods_s, rel=1e-9)
    # a quarter of the pod fits the uplinks: full NIC rate again
    quarter = across[::4]
    assert transfer_s(fabric, quarter) == pytest.approx(SIZE / CX7.rate + two_pods_s, rel=1e-9)


def test_without_pods_or_with_one_pod_the_fabric_is_the_two_tier_one():
    two_tier = build(32, hosts_per_leaf=4)
    one_pod = build(32, hosts_per_leaf=4, leaves_per_pod=8, pod_oversubscription=7)
    assert one_pod.summary()["nodes"] == two_tier.summary()["nodes"]
    assert "core" not in two_tier.summary()["nodes"]
    np.testing.assert_array_equal(one_pod.link_bytes_per_s, two_tier.link_bytes_per_s)


@pytest.mark.parametrize(("key", "value"), [("pod_oversubscription", 0), ("leaves_per_pod", 0),
                                            ("pod_oversubscription", "7:1"), ("leaves_per_pod", 1.5)])
def test_bad_pod_options_name_their_field(key, value):
    with pytest.raises(ScenarioError) as err:
        build(64, hosts_per_leaf=4, **{key: value})
    assert err.value.field == f"cluster.topology_options.{key}"


def test_the_llama3_scenarios_run_on_metas_pods():
    # Llama 3 Herd of Models 2024, section 3.3.1: 16 GPUs a ToR, 192 racks (3,072 GPUs) a pod, 1:7 between pods
    for name, pods in (("llama3-405b-8k-h100-published", 3), ("llama3-405b-16k-h100-published", 6)):
        scenario = config.load(name)
        fabric = topology.from_scenario(scenario)
        nodes = fabric.summary()["nodes"]
        assert nodes["leaf"] == scenario.cluster.gpus // 16
        assert nodes["spine"] == pods * 16 and nodes["core"] == 16
        g = fabric.graph
        assert g.edges["spine/p0/0", "core/0"]["bytes_per_s"] == pytest.approx(3072 * CX7.rate / 16 / 7)


def test_hashed_flows_per_pair_split_a_pairs_bytes_over_that_many_paths():
    # a two-tier leaf-spine of 4 leaves and 4 spines: one pair between leaves puts its bytes on the spine uplinks
    single = build(16, hosts_per_leaf=4, routing="ecmp")
    many = build(16, hosts_per_leaf=4, routing="ecmp", flows_per_pair=16)
    pair = np.array([[0, 8]])
    uplinks = [k for k, c in enumerate(single.link_class) if c == "leaf-spine"]
    for fabric, flows in ((single, 1), (many, 16)):
        links, load = fabric.links_of(pair)
        on_spines = load[np.isin(links, uplinks)]
        # up to a spine and down from it: the loads of each tier sum to the one pair, in steps of 1/flows
        assert on_spines.sum() == pytest.approx(2.0)
        assert np.allclose(on_spines * flows, np.round(on_spines * flows))
    assert len(many.links_of(pair)[0]) > len(single.links_of(pair)[0])   # 16 hashed flows take several spines
    # the first flow of salt 0 is the single-flow route: the same hash
    assert set(single.links_of(pair)[0]) <= set(many.links_of(pair)[0])


def test_more_hashed_flows_collide_less_and_spraying_is_their_limit():
    # every GPU of a 32-GPU leaf-spine (8 leaves, 4 hosts each) sends to the GPU 4 leaves away: 32 leaf-crossing
    # flows on 4 uplinks per leaf, each uplink a NIC's rate
    ring = np.stack([np.arange(32), (np.arange(32) + 16) % 32], axis=1)
    times = {flows: transfer_s(build(32, hosts_per_leaf=4, routing="ecmp", flows_per_pair=flows), ring)
             for flows in (1, 4, 64)}
    sprayed = transfer_s(build(32, hosts_per_leaf=4, routing="adaptive"), ring)
    assert sprayed == pytest.approx(SIZE / CX7.rate + 2 * PCIE5.latency + 2 * CX7.latency + 3 * ROCE_HOP_S)
    assert times[1] >= times[4] >= times[64] >= sprayed * (1 - 1e-9)
    assert times[1] >= 2 * SIZE / CX7.rate   # one flow a pair: some uplink carries two of them
    assert times[64] < 1.5 * sprayed


@pytest.mark.parametrize("options", [{"flows_per_pair": 0}, {"flows_per_pair": 129},
                                     {"flows_per_pair": 4, "routing": "adaptive"}])
def test_flows_per_pair_is_a_bounded_integer_of_ecmp(options):
    with pytest.raises(ScenarioError) as err:
        build(16, hosts_per_leaf=4, **options)
    assert err.value.field == "cluster.topology_options.flows_per_pair"


def test_a_pod_ratio_needs_pods():
    with pytest.raises(ScenarioError) as err:
        build(64, hosts_per_leaf=4, pod_oversubscription=7)
    assert err.value.field == "cluster.topology_options.pod_oversubscription"


@pytest.mark.parametrize("name", ["llama3-405b-8k-h100-published", "llama3-405b-16k-h100-published"])
def test_the_llama3_scenarios_run_what_the_paper_states(name):
    from simcluster.parallel.layout import split_layers

    p = config.load(name).parallelism
    # section 3.3.2: [TP, CP, PP, DP]; FSDP sharding gradients (ZeRO-2), reduce-scatter in FP32; asynchronous p2p
    assert (p.order, p.zero_stage, p.grad_reduce_dtype, p.p2p) == ("tp-cp-pp-dp", 2, "fp32", "async")
    # "reduce one Transformer layer each from the first and the last stages": embedding and output chunks alone
    counts = split_layers(126, p.pp, p.virtual_stages, p.layers_per_stage)
    assert counts[0] == counts[-1] == 0 and set(counts[1:-1]) == {1}
