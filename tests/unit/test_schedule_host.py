"""workload.schedule_host: the stream drains of Megatron's pipeline schedules per configuration, against the source
reading in its docstring, and a drain's idle against the measured host constants."""

import pytest

from simcluster.workload import kernels, schedule_host


def test_a_drain_costs_one_launch_after_one_dispatch():
    launch, dispatch = kernels.launch_overhead_s(), kernels.host_model().dispatch_s
    assert kernels.host_cpu_ratio("h100-sxm") == 1.0     # x86 host: the measured dispatch itself
    assert schedule_host.drain_stall_s("h100-sxm") == pytest.approx(launch + dispatch)
    # a Grace host issues the same launch slower (cpu_ratio, TransformerEngine#2053)
    assert kernels.host_cpu_ratio("gb200") > 1.0
    assert schedule_host.drain_stall_s("gb200") == pytest.approx(launch + kernels.host_cpu_ratio("gb200") * dispatch)


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
    stall = kernels.launch_overhead_s() + kernels.host_model().dispatch_s * kernels.host_cpu_ratio("h100-sxm")
    assert schedule_host.drained_s_per_step(d, 70, 32, "h100-sxm") == pytest.approx(102 * stall)

