"""scripts/kineto_host_calls.py: a sync's return after the GPU's last activity, and the host time of c10d calls."""

from scripts_loader import load_script

module = load_script("kineto_host_calls")


def test_a_sync_that_waited_returns_after_the_last_gpu_end_inside_it():
    # the GPU ends at 5, 12 and 40; the first call (10-20) waited for the end at 12 and returned 8 later; the second
    # (20-25) had nothing to wait for (no end inside it); the third (30-46) waited for the end at 40
    assert module.sync_returns([(10.0, 10.0), (20.0, 5.0), (30.0, 16.0)], [40.0, 5.0, 12.0]) == [8.0, 6.0]


def test_only_c10d_and_nccl_host_ops_are_collectives():
    ops = [("c10d::alltoall_base_", 83.0), ("nccl:all_to_all", 61.0), ("aten::mm", 12.0),
           ("c10d::alltoall_base_", 70.0), ("record_param_comms", 21.0)]
    assert module.collective_host_times(ops) == {"c10d::alltoall_base_": [83.0, 70.0], "nccl:all_to_all": [61.0]}
