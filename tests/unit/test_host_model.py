"""The host side of a step plan: each block (model chunk, microbatch, phase) takes the longer of its device and host
time, plus the pipeline step's host time when pipelined (workload.kernels.StreamTime, efficiency.yaml
host_overhead)."""

import pytest

from simcluster.engine.simulation import Simulation
from simcluster.spec import config
from simcluster.workload import kernels


def scenario(pp: int = 1, seq_len: int = 2048, hidden: int = 2048):
    return config.from_dict({
        "name": "t",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "model": {"layers": 8, "hidden": hidden, "heads": 16, "vocab": 32000, "max_seq_len": 2048},
        "training": {"seq_len": seq_len, "global_batch_size": 8, "micro_batch_size": 1},
        "parallelism": {"tp": 1, "pp": pp, "dp": 8 // pp},
        "network": "analytic",
    })


@pytest.mark.parametrize("pp", [1, 2])
def test_chunk_compute_is_its_streams_longer_side_plus_the_pipeline_step_when_pipelined(pp):
    host = kernels.host_model()
    for chunk in Simulation(scenario(pp)).plan.chunks:
        step_s = host.pipeline_step_s if pp > 1 else 0.0
        for stream, compute_s in ((chunk.forward_stream, chunk.forward_compute_s),
                                  (chunk.backward_stream, chunk.backward_compute_s)):
            assert stream.kernels > 0
            assert compute_s == pytest.approx(max(stream.device_bound_s(host), stream.host_bound_s(host)) + step_s,
                                              rel=1e-12)


def test_a_2048_wide_layer_is_device_bound_and_a_short_narrow_one_host_bound_when_dispatch_exceeds_the_gap():
    # 2,048 tokens of a 2,048-wide layer: kernels of ~100 us; 64 tokens of a 256-wide layer: kernels of about 1 us.
    # With a 4 us gap (a benchmark's launch overhead) and a 20 us dispatch, the GPU waits on the host in the second
    # (the regime of small models and MoE launches). The fitted gap (efficiency.yaml, 41 us) exceeds the measured
    # dispatch: with it every block is device-bound; with round 9's measured 4 us gap a block turns host-bound below
    # about 9.5 us of device time per kernel, and no calibration block does.
    host = kernels.HostModel(kernel_gap_s=4e-6, dispatch_s=20e-6, pipeline_step_s=0.0)
    wide = Simulation(scenario()).plan.chunks[0].forward_stream
    narrow = Simulation(scenario(seq_len=64, hidden=256)).plan.chunks[0].forward_stream
    assert wide.elapsed_s(host) == pytest.approx(wide.device_s + wide.kernels * 4e-6, rel=1e-12)
    assert wide.device_bound_s(host) > 2 * wide.host_bound_s(host)
    assert narrow.elapsed_s(host) == pytest.approx(narrow.kernels * 20e-6, rel=1e-12)
    assert narrow.host_bound_s(host) > 2 * narrow.device_bound_s(host)
