"""CUDA graphs where a scenario states them (training.cuda_graph_scope, efficiency.yaml host_overhead.cuda_graphs,
round 30): a graphed kernel pays the in-graph node latency instead of the stream's gap, and no host dispatch; with
the switch off every block is as before."""

import contextlib

import numpy as np
import pytest
import yaml
from scripts_loader import load_script

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError
from simcluster.engine.simulation import Simulation
from simcluster.spec import config, hardware
from simcluster.workload import kernels
from simcluster.workload.ops import Op, _memory

fit_script = load_script("fit_host_overheads")


def scenario(scope: str = "none", pp: int = 1):
    return config.from_dict({
        "name": "t",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "model": {"layers": 8, "hidden": 2048, "heads": 16, "vocab": 32000, "max_seq_len": 2048},
        "training": {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1, "cuda_graph_scope": scope},
        "parallelism": {"tp": 1, "pp": pp, "dp": 8 // pp},
        "network": "analytic",
    })


@contextlib.contextmanager
def switch(on: bool):
    """efficiency.yaml host_overhead.cuda_graphs set in the loaded table the simulator reads, restored after."""
    table = catalog.load("efficiency")["host_overhead"]
    saved = table.get("cuda_graphs", False)
    table["cuda_graphs"] = on
    try:
        yield kernels.host_model()
    finally:
        table["cuda_graphs"] = saved


def test_the_switch_is_off_in_the_data():
    assert kernels.host_model().cuda_graphs is False   # a structure study; the lead decides
    assert 0.0 < kernels.host_model().graph_node_s < kernels.launch_overhead_s()   # cheaper than a queued launch


def test_a_graphed_block_of_n_kernels_costs_its_device_time_plus_n_node_latencies_and_no_dispatch():
    gpu = hardware.gpu("b200")
    n, each_s = 40, 3e-6     # short copies: eager, the host's dispatch (13.5 us) binds over 3 us + the gap
    ops = [_memory("copy", 0.0, each_s * gpu.hbm_bandwidth * kernels.hbm_fraction())] * n
    eager = kernels.stream_time(ops, gpu, "bf16")
    assert eager.device_s == pytest.approx(n * each_s, rel=1e-12)
    with switch(True) as host:
        graphed = kernels.graphed(eager, host)
        assert graphed.graphed_kernels == n
        assert graphed.host_bound_s(host) == 0.0
        assert graphed.elapsed_s(host) == pytest.approx(n * (each_s + host.graph_node_s), rel=1e-12)
        # the same block eager: the slower of n x (time + gap) and n x dispatch
        assert eager.elapsed_s(host) == pytest.approx(
            max(n * (each_s + host.kernel_gap_s), n * host.dispatch_s + eager.host_extra_s), rel=1e-12)
        # blocks add up and repeat with their graphed kernels
        assert (3 * graphed + eager).elapsed_s(host) == pytest.approx(
            max(3 * n * (each_s + host.graph_node_s) + n * (each_s + host.kernel_gap_s),
                n * host.dispatch_s + eager.host_extra_s), rel=1e-12)


def test_switch_off_graphing_is_the_identity_and_a_stated_scope_leaves_every_step_identical():
    stream = kernels.StreamTime(device_s=1e-3, kernels=10.0, host_extra_s=2e-4, queued_kernels=3.0)
    assert kernels.graphed(stream) is stream
    plain, scoped = Simulation(scenario()), Simulation(scenario("full_iteration"))
    assert scoped.plan.chunks == plain.plan.chunks
    assert scoped.run().summary["step_time_s"] == plain.run().summary["step_time_s"]


@pytest.mark.parametrize("pp", [1, 2])
def test_switch_on_a_full_iteration_scope_graphs_every_block_and_the_pipeline_step(pp):
    with switch(True) as host:
        plain, scoped = Simulation(scenario(pp=pp)).plan, Simulation(scenario("full_iteration", pp)).plan
        step_s = host.pipeline_step_s if pp > 1 else 0.0
        for eager, graphed in zip(plain.chunks, scoped.chunks, strict=True):
            for phase in ("forward", "backward"):
                stream = getattr(eager, f"{phase}_stream")
                # eager: the fitted gap before every kernel (queued ones: the same in the "kernel" structure)
                assert getattr(eager, f"{phase}_compute_s") == pytest.approx(
                    max(stream.device_s + stream.kernels * host.kernel_gap_s + stream.stall_s,
                        stream.host_bound_s(host)) + step_s, rel=1e-12)
                # graphed: device time plus one node latency a kernel; no dispatch, no pipeline step
                assert getattr(graphed, f"{phase}_compute_s") == pytest.approx(
                    stream.device_s + stream.kernels * host.graph_node_s + stream.stall_s, rel=1e-12)


def test_an_unmodelled_scope_is_refused_naming_the_field():
    with pytest.raises(ScenarioError, match="cuda_graph_scope"):
        scenario("attn")


def test_the_fit_estimate_charges_graphed_kernels_what_the_stream_charges():
    # Run.block_s (the refit's estimate) against StreamTime.elapsed_s, one eager and one graphed block
    device, count = np.array([[2e-3, 4e-3]]), np.array([[40.0, 90.0]])
    graphed = np.array([[0.0, 90.0]])
    run = fit_script.Run({"source": "s"}, device, count, np.zeros((1, 2)), False, 4, np.zeros((1, 2)),
                         graphed=graphed)
    with switch(True) as host:
        streams = [kernels.StreamTime(device_s=d, kernels=n, graphed_kernels=g)
                   for d, n, g in zip(device[0], count[0], graphed[0], strict=True)]
        expected = sum(stream.elapsed_s(host) for stream in streams)
        assert run.block_s(host.kernel_gap_s, 0.0, host.dispatch_s, 0.0) == pytest.approx(expected, rel=1e-12)
        assert expected == pytest.approx(2e-3 + 40 * host.kernel_gap_s + 4e-3 + 90 * host.graph_node_s, rel=1e-12)


def _graph_scoped_bundled_scenarios():
    for path in sorted(config.bundled_dir().glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if (data.get("training") or {}).get("cuda_graph_scope", "none") != "none":
            yield path.stem


def test_every_bundled_graphed_scenario_is_capturable_no_host_sync_in_its_blocks():
    # graphed() keeps a stream's stall_s, the idle after a host sync (kernels.synced_stall_s); a captured graph holds
    # no host sync, so a scenario stating a scope must have none in its forward and backward blocks (round 30 review)
    names = list(_graph_scoped_bundled_scenarios())
    assert len(names) >= 6   # the Llama 3 8B Blackwell presets, FP8-CS and MXFP8 (docs/calibration.md round 30)
    for name in names:
        for chunk in Simulation(config.load(name)).plan.chunks:
            assert chunk.forward_stream.stall_s == 0.0 and chunk.backward_stream.stall_s == 0.0, name


def test_a_host_sync_in_a_block_shows_as_stall_that_graphing_would_keep():
    # the guard above can fail: a HOST_SYNC op in a stream gives it a stall, which graphed() leaves in place
    gpu = hardware.gpu("b200")
    copy = _memory("copy", 0.0, 1e-6 * gpu.hbm_bandwidth * kernels.hbm_fraction())
    sync = Op(name=kernels.HOST_SYNC, kind="memory", flop=0.0, hbm_bytes=0.0)
    synced = kernels.stream_time([copy] * 20 + [sync] + [copy] * 20, gpu, "bf16")
    assert synced.stall_s > 0.0
    with switch(True) as host:
        assert kernels.graphed(synced, host).stall_s == synced.stall_s
