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
    # (the regime of small models and MoE launches). The fitted gap (efficiency.yaml, 39 us) exceeds the measured
    # dispatch: with it every block is device-bound; with round 9's measured 4 us gap a block turns host-bound below
    # about 9.5 us of device time per kernel, and no calibration block does.
    host = kernels.HostModel(kernel_gap_s=4e-6, dispatch_s=20e-6, pipeline_step_s=0.0)
    wide = Simulation(scenario()).plan.chunks[0].forward_stream
    narrow = Simulation(scenario(seq_len=64, hidden=256)).plan.chunks[0].forward_stream
    assert wide.elapsed_s(host) == pytest.approx(wide.device_s + wide.kernels * 4e-6, rel=1e-12)
    assert wide.device_bound_s(host) > 1.5 * wide.host_bound_s(host)
    # host side: every kernel's dispatch plus the Transformer Engine module calls' excess (workload.host_dispatch)
    assert narrow.elapsed_s(host) == pytest.approx(narrow.kernels * 20e-6 + narrow.host_extra_s, rel=1e-12)
    assert narrow.host_bound_s(host) > 2 * narrow.device_bound_s(host)


def _zero(name: str):
    from simcluster.workload.ops import _memory
    return _memory(name, 0.0, 0.0)


def _copy(seconds: float, gpu):
    """An HBM-bound copy of ``seconds`` on ``gpu`` at the modelled bandwidth."""
    from simcluster.workload.ops import _memory
    return _memory("copy", 0.0, seconds * gpu.hbm_bandwidth * kernels.hbm_fraction())


def test_after_a_host_sync_the_segment_is_a_race_of_host_launches_and_stream_in_order():
    """A device-to-host sync drains the stream, so the host has no lead after it: each launch costs the host its
    dispatch and a kernel starts when it is launched and the stream is free (closed forms below); before the sync,
    and without one, only the block's max counts. Host-only launches (other streams) add dispatch, no kernel."""
    from simcluster.spec import hardware
    gpu = hardware.gpu("b200")   # an x86 host (cpu ratio 1)
    host = kernels.host_model()
    d = host.dispatch_s
    long = [_copy(2e-3, gpu)]                       # 2 ms of device work: the host runs far ahead of it
    short = [_copy(1e-6, gpu)] * 10 + [_zero(kernels.HOST_ONLY_LAUNCH)] * 30
    busy = 1e-6 + host.kernel_gap_s + 0.0           # a short copy on the stream (no fill: memory-bound)
    assert busy > d, "closed forms below assume a short copy outlasts a launch (gap structure)"
    plain = kernels.stream_time(long + short, gpu, "bf16")
    synced = kernels.stream_time(long + [_zero(kernels.HOST_SYNC)] + short, gpu, "bf16")
    assert plain.stall_s == 0.0
    assert synced.kernels == plain.kernels == 11     # the sync and the host-only launches are no kernels
    assert synced.host_bound_s(host) == pytest.approx(41 * d, rel=1e-12)
    # the copies run back to back from the first launch; the host then issues 30 more launches: it ends last
    assert synced.stall_s == pytest.approx(40 * d - 10 * busy, rel=1e-9)
    assert synced.elapsed_s(host) == pytest.approx(plain.elapsed_s(host) + synced.stall_s, rel=1e-12)
    # a long kernel right after the sync runs while the host issues the rest: only its own launch is exposed
    first = kernels.stream_time([_zero(kernels.HOST_SYNC)] + long + short, gpu, "bf16")
    assert first.stall_s == pytest.approx(d, rel=1e-9)
    # after the short ones it waits for all 41 launches: the stream idles for what the host is behind
    last = kernels.stream_time([_zero(kernels.HOST_SYNC)] + short + long, gpu, "bf16")
    assert last.stall_s == pytest.approx(41 * d - 10 * busy, rel=1e-9)


def test_a_grace_host_takes_its_measured_cpu_time_per_launch():
    """TransformerEngine#2053: the same torch.nn.Linear forward costs 13.48 us of CPU on a Xeon 8480C and 37.08 us
    on GB200's Grace: host time per launch 2.75x on GB200, the device side unchanged."""
    from simcluster.spec import hardware
    ops = [_copy(1e-6, hardware.gpu("b200"))] * 5
    x86, grace = (kernels.stream_time(ops, hardware.gpu(name), "bf16") for name in ("b200", "gb200"))
    host = kernels.host_model()
    assert x86.host_bound_s(host) == pytest.approx(5 * host.dispatch_s, rel=1e-12)
    assert grace.host_bound_s(host) / x86.host_bound_s(host) == pytest.approx(37.08 / 13.48, rel=2e-3)
    assert grace.kernels == x86.kernels == 5
