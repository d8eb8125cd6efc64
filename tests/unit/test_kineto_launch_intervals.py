"""scripts/kineto_launch_intervals.py: the host's launch-to-launch intervals, without the waits on the GPU."""

import numpy as np
from scripts_loader import load_script

module = load_script("kineto_launch_intervals")


def test_intervals_between_launches_only_where_the_host_did_not_wait():
    calls = [(0.0, "cudaLaunchKernel"), (10.0, "cudaLaunchKernel"), (12.0, "cudaMemcpyAsync"),
             (30.0, "cudaLaunchKernelExC"), (35.0, "cudaStreamSynchronize"), (100.0, "cudaLaunchKernel"),
             (104.0, "cudaMemcpy"), (150.0, "cudaGraphLaunch"), (160.0, "cudaLaunchKernel"),
             (2000.0, "cudaLaunchKernel")]
    # 0->10 and 10->30 (an asynchronous copy between is host work), 150->160; 30->100 and 100->150 held a blocking
    # call (the host waited on the GPU), 160->2000 is past 1 ms
    assert np.array_equal(module.intervals(calls), [10.0, 20.0, 10.0])


def test_calls_out_of_order_are_sorted_in_time():
    calls = [(20.0, "cudaLaunchKernel"), (0.0, "cudaLaunchKernel"), (5.0, "cudaLaunchKernel")]
    assert np.array_equal(module.intervals(calls), [5.0, 15.0])
