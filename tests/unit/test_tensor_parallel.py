"""Tensor-parallel collectives run on the engine's network: alone they take their closed-form (analytic) time, across
nodes they load the NICs, and an oversubscribed fabric slows them."""

from __future__ import annotations

import pytest
from scenario_data import sequence_parallel_grads_s, with_changes

from simcluster.collectives import timing
from simcluster.engine import Simulation, simulate
from simcluster.engine.overlap import Slowdowns
from simcluster.parallel.plan import GRAD_NORM_BYTES
from simcluster.spec import config
from simcluster.workload import async_backward, kernels, ops

# one 8-GPU H100 node running tensor parallelism only (conftest's small scenario, moved)
ONE_NODE_TP = {"cluster__nodes": 1, "parallelism__tp": 8, "parallelism__pp": 1, "parallelism__dp": 1,
               "parallelism__tp_comm_overlap": False,  # the TP collectives blocking, each its isolated time
               "training__global_batch_size": 4}


@pytest.fixture
def scenario(small_scenario):
    """The one-node TP scenario with ``section__key=value`` changes applied."""

    def make(**changes):
        return with_changes(small_scenario, **{**ONE_NODE_TP, **changes})

    return make


@pytest.mark.parametrize("sequence_parallel", [True, False])
def test_tp_collectives_alone_on_an_nvswitch_take_their_isolated_time(scenario, sequence_parallel):
    """One node, no other traffic: the engine's TP time is the sum over blocks of each blocking collective timed
    alone with the analytic model (collectives.run), which the engine never calls while it runs, plus what each of
    the backward's async collectives (c alone) outlasts of the GEMM it runs beside (g, its gap included) slowed by
    the NCCL ring (f): max(0, c / f - g) per pair (workload.async_backward). Since round 32's refit (kernel gap
    25 -> 21 us) the no-sequence-parallel case shows it: each dgrad all-reduce (55.8 us alone, 37.2 us at f 1.5)
    outlasts its wgrad GEMM (40.2 -> 36.2 us) by 1.0 us, two pairs a layer, 24 layers: 48 us a microbatch."""
    spec = scenario(parallelism__sequence_parallel=sequence_parallel)
    sim = Simulation(spec)
    summary = sim.run().summary
    group = tuple(range(8))
    gpu, precision = spec.cluster.gpu, spec.training.precision
    layer = ops.layer_ops(spec.model, ops.shard_for(spec))
    column_linears = 2  # a dense layer's QKV and fc1
    f = async_backward.slowdown(layer, column_linears, sequence_parallel, gpu, precision)
    expected = 0.0
    for chunk in sim.plan.chunks:
        assert chunk.tp_async_backward  # the backward's async collectives run beside its GEMMs
        for calls in (chunk.tp_collectives["forward"], chunk.tp_blocking["backward"]):
            expected += sum(count * timing.isolated_time_s(sim.fabric, op, group, chunk.tp_bytes)
                            for op, count in calls)
        pairs = async_backward.beside_ops(layer, column_linears, sequence_parallel)
        assert len(pairs) == column_linears * (2 if sequence_parallel else 1) and all(gemms for _, gemms in pairs)
        expected += chunk.layers * sum(
            max(0.0, timing.isolated_time_s(sim.fabric, op, group, chunk.tp_bytes) / f
                - sum(kernels.op_time_s(gemm, gpu, precision) for gemm in gemms))
            for op, gemms in pairs)
    expected *= sim.plan.microbatches
    assert expected > 0
    expected += sequence_parallel_grads_s(sim, group)   # the norms' gradients, once a step with sequence parallelism
    assert (sim.plan.sequence_parallel_grad_bytes[0] > 0) == sequence_parallel
    assert summary["exposed_comm_by_parallelism_s"]["tp"] == pytest.approx(expected, rel=1e-9)
    # nothing else communicates but the gradient norm's all-reduce over the node (distributed optimizer)
    norm_s = timing.isolated_time_s(sim.fabric, "allreduce", group, GRAD_NORM_BYTES)
    assert summary["exposed_comm_by_parallelism_s"]["dp"] == pytest.approx(norm_s, rel=1e-9)
    assert summary["exposed_comm_s"] == pytest.approx(expected + norm_s, rel=1e-9)


def test_tp_across_nodes_loads_the_nics(scenario):
    """tp 16 on 8-GPU nodes without data or pipeline parallelism: every NIC byte is tensor-parallel traffic."""
    sim = Simulation(scenario(cluster__nodes=2, parallelism__tp=16))
    result = sim.run()
    nic_bytes = result.links[result.links["kind"] == "nic"]["bytes"].sum()
    assert nic_bytes > 0
    assert result.summary["exposed_comm_by_parallelism_s"]["tp"] > 0
    # no data-parallel traffic but the gradient norm's all-reduce (4 bytes), which takes its time alone
    assert result.summary["exposed_comm_by_parallelism_s"]["dp"] == pytest.approx(
        timing.isolated_time_s(sim.fabric, "allreduce", tuple(range(16)), GRAD_NORM_BYTES), rel=1e-9)


def test_tp_across_nodes_is_slower_on_an_oversubscribed_leaf_spine(scenario):
    rail = simulate(scenario(cluster__nodes=16, parallelism__tp=16, parallelism__dp=8, training__global_batch_size=32))
    leaf = simulate(scenario(cluster__nodes=16, cluster__topology="leaf-spine",
                             cluster__topology_options={"oversubscription": 4}, parallelism__tp=16,
                             parallelism__dp=8, training__global_batch_size=32))
    tp_rail = rail.summary["exposed_comm_by_parallelism_s"]["tp"]
    tp_leaf = leaf.summary["exposed_comm_by_parallelism_s"]["tp"]
    assert tp_leaf > 1.01 * tp_rail
    assert leaf.summary["step_time_s"] > rail.summary["step_time_s"]


def test_tp_across_nodes_collapsed_equals_expanded(scenario):
    spec = scenario(cluster__nodes=4, parallelism__tp=16, parallelism__dp=2, training__global_batch_size=8)
    collapsed = simulate(spec).summary
    expanded = simulate(spec, expand=True).summary
    assert collapsed["step_time_s"] == pytest.approx(expanded["step_time_s"], rel=1e-9)
    assert collapsed["exposed_comm_by_parallelism_s"]["tp"] == pytest.approx(
        expanded["exposed_comm_by_parallelism_s"]["tp"], rel=1e-9)


def test_exposed_communication_is_the_sum_of_its_parts(small_scenario):
    summary = simulate(config.from_dict(small_scenario)).summary
    parts = summary["exposed_comm_by_parallelism_s"]
    assert set(parts) == {"tp", "cp", "pp", "dp", "ep"}
    assert sum(parts.values()) == pytest.approx(summary["exposed_comm_s"], rel=1e-12)
    assert summary["step_time_s"] == pytest.approx(
        summary["compute_s"] + summary["exposed_comm_s"] + summary["pipeline_bubble_s"], rel=1e-9)


@pytest.mark.parametrize("size_bytes", [64e6, 1e9])
def test_nvls_runs_in_the_engine_as_it_does_alone(size_bytes):
    """On an H100 NVSwitch node auto picks NVLink SHARP for large all-reduces (NCCL's default there); the engine
    runs it with NVLS's own NVLink efficiency, so alone it takes exactly the time collectives.run gives."""
    import simpy

    from simcluster import collectives, network
    from simcluster.engine.drivers import CollectiveDriver, NetworkDriver
    from simcluster.fabric import topology
    from simcluster.spec import hardware

    fabric = topology.build("nvswitch-node", gpus=8, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                            nic=hardware.nic("connectx-7"))
    alone = collectives.run(collectives.Collective("allreduce", range(8), size_bytes), fabric, "flow")
    assert alone.algorithm == "nvls"
    env = simpy.Environment()
    driver = CollectiveDriver(env, fabric, NetworkDriver(env, network.make("flow", collectives.calibrated(fabric))))
    env.process(driver.run("allreduce", [tuple(range(8))], size_bytes))
    env.run()
    assert env.now == pytest.approx(alone.time_s, rel=1e-12)


def test_cp_exchange_on_the_network_is_exposed_only_beyond_the_attention(scenario):
    """Context parallelism across two nodes (one GPU each): alone on the fabric, each block exposes its ring
    exchange (timed alone with the analytic model) minus the attention it hides behind, never less than 0. The
    gradients (reduced over dp x cp) wait for the end of the backward and the parameters are gathered after the
    optimizer, so nothing shares the NIC with the exchange;
    overlapping them makes the exchange slower (they contend)."""
    spec = scenario(cluster__gpus_per_node=1, cluster__nodes=2, parallelism__tp=1, parallelism__cp=2,
                    parallelism__overlap_grad_reduce=False, parallelism__overlap_param_gather=False,
                    training__seq_len=8192, training__global_batch_size=2)
    sim = Simulation(spec)
    summary = sim.run().summary
    expected = 0.0
    for chunk in sim.plan.chunks:
        for attention_s, steps, step_bytes in chunk.cp_exchange.values():
            exchange_s = steps * timing.isolated_time_s(sim.fabric, "sendrecv_ring", (0, 1), step_bytes)
            expected += max(0.0, exchange_s - attention_s)
    expected *= sim.plan.microbatches
    assert expected > 0
    assert summary["exposed_comm_by_parallelism_s"]["cp"] == pytest.approx(expected, rel=1e-9)
    expanded = simulate(spec, expand=True).summary
    assert expanded["step_time_s"] == pytest.approx(summary["step_time_s"], rel=1e-9)
    # (compute kept at full speed beside the gradient reduction, which would otherwise push the exchange past it)
    contended = Simulation(scenario(cluster__gpus_per_node=1, cluster__nodes=2, parallelism__tp=1, parallelism__cp=2,
                                    training__seq_len=8192, training__global_batch_size=2))
    contended.slowdowns = Slowdowns(dp={"forward": 1.0, "backward": 1.0}, tp={"forward": 1.0, "backward": 1.0})
    overlapped = contended.run().summary
    assert overlapped["exposed_comm_by_parallelism_s"]["cp"] > 1.01 * summary["exposed_comm_by_parallelism_s"]["cp"]
