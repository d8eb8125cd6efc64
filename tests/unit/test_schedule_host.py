"""workload.schedule_host: the stream drains of Megatron's pipeline schedules per configuration, against the source
reading in its docstring, and a drain's idle against the measured host constants."""

import pytest

from simcluster.workload import kernels, schedule_host


def test_a_drain_costs_one_launch_after_one_dispatch():
    host = kernels.host_model()
    assert schedule_host.drain_stall_s("h100-sxm") == pytest.approx(kernels.launch_overhead_s() + host.dispatch_s)
    assert schedule_host.drain_stall_s("h100-sxm") == pytest.approx(17.5e-6)   # 4 us + 13.5 us (efficiency.yaml)
    # a Grace host issues the same launch 2.75x slower (TransformerEngine#2053)
    assert schedule_host.drain_stall_s("gb200") == pytest.approx(4e-6 + 2.75 * 13.5e-6)


@pytest.mark.parametrize(("pp", "vp", "eager", "overlap", "per_block"), [
    (1, 1, False, None, 0.0),     # no pipeline: no exchange
    (8, 12, False, None, 0.0),    # interleaved, overlap_p2p_comm (NeMo / Megatron-LM default): stream waits only
    (4, 1, False, None, 1.0),     # 1F1B: batch_p2p_comm + batch_p2p_sync, a synchronize after every exchange
    (8, 8, False, False, 0.5),    # interleaved with batch_p2p_comm (Nemotron-4 340B conf): one per F/B pair
    (8, 2, True, None, 1.0),      # Megatron-LM 2021: unconditional synchronize, timers
])
def test_drains_per_block_follow_the_p2p_mode(pp, vp, eager, overlap, per_block):
    assert schedule_host.drains(pp, vp, eager, overlap).per_block == per_block


def test_the_loss_reads_once_a_microbatch_where_the_source_reads_it():
    assert schedule_host.drains(8, 12, False, loss_nan_check=True).per_last_stage_microbatch == 1.0
    assert schedule_host.drains(8, 12, False).per_last_stage_microbatch == 0.0          # NeMo, cp 1
    assert schedule_host.drains(1, 1, False, cp=2, nemo2_loss=True).per_last_stage_microbatch == 1.0
    assert schedule_host.drains(1, 1, False, cp=1, nemo2_loss=True).per_last_stage_microbatch == 0.0


def test_drained_time_per_step_is_drains_times_the_stall():
    d = schedule_host.Drains(per_block=1.0, per_last_stage_microbatch=1.0)
    # 1F1B, 4 stages, 32 microbatches: 2 x (32 + 3) blocks on the critical path and 32 losses
    assert schedule_host.drained_s_per_step(d, 70, 32, "h100-sxm") == pytest.approx(102 * 17.5e-6)


def test_block_drains_are_stream_idle_only_where_the_schedule_synchronises():
    assert schedule_host.block_drains_stream(4, 1, False, "h100-sxm").device_s == pytest.approx(17.5e-6)
    assert schedule_host.block_drains_stream(8, 12, False, "h100-sxm").device_s == 0.0   # overlap_p2p_comm
    assert schedule_host.block_drains_stream(1, 1, True, "h100-sxm").device_s == 0.0     # no pipeline


def test_the_loss_report_is_one_small_allreduce_over_the_data_parallel_group_waited_by_the_stream():
    calls = []

    def collective_time_s(op, group, size_bytes):
        calls.append((op, group, size_bytes))
        return 40e-6

    stream = schedule_host.loss_report_stream((0, 8, 16, 24), collective_time_s, "h100-sxm")
    assert calls == [("allreduce", (0, 8, 16, 24), 4.0)]
    assert stream.device_s == pytest.approx(40e-6) and stream.kernels == 0
    assert stream.host_extra_s == pytest.approx(kernels.host_model().dispatch_s)   # its launch on the host
    assert schedule_host.loss_report_stream((3,), collective_time_s, "h100-sxm").device_s == 0.0
    assert len(calls) == 1    # one data-parallel rank: no all-reduce
