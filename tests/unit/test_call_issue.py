"""workload.call_issue and host_overhead gap_per: which kernels a call's C++ queues (Transformer Engine source facts),
what each structure charges them, and scripts/fit_host_overheads.py --structure call."""

from types import SimpleNamespace

import numpy as np
import pytest
from scripts_loader import load_script

from simcluster.core import catalog
from simcluster.workload import call_issue, fp8_recipes, kernels, moe, userbuffers
from simcluster.workload.ops import Op

fit_script = load_script("fit_host_overheads")

NORM_FED, OWN = (4096.0, True), (4096.0, False)


def tags(recipe, tensors, transpose=True):
    found = fp8_recipes.quantize_kernels(recipe, transpose, tensors)
    return [(name, tag) for (name, *_), tag in zip(found, call_issue.queued_quantizes(recipe, found, tensors),
                                                    strict=True)]


def test_current_scaling_queues_all_but_the_first_launch_of_its_call():
    # Float8CurrentScalingQuantizer::quantize_impl launches the amax (its launcher zeroes it first), the scale and the
    # cast in one call; a norm-fed tensor's norm extension (FUSED_NORM_AMAX_FP8) zeroes the amax, runs the norm (the
    # call's first launch, a norm op of its own) and scales and casts in the norm's call
    assert tags("current", [OWN]) == [("fp8_amax_zero", False), ("fp8_amax", True), ("fp8_scale", True),
                                      ("fp8_cast", True)]
    assert tags("current", [NORM_FED]) == [("fp8_amax_zero", True), ("fp8_scale", True), ("fp8_cast", True)]
    assert tags("current", [OWN, NORM_FED])[4:] == tags("current", [NORM_FED])


def test_mxfp8_queues_only_a_norm_fed_quantize_and_delayed_scaling_nothing():
    # MXFP8: the unfused norm and its quantize in one call; a tensor of its own is quantized by its own Python call
    assert tags("mxfp8", [NORM_FED, OWN]) == [("fp8_cast", True), ("fp8_cast", False)]
    # delayed scaling's one fused op a phase stands for several Python-level calls
    assert tags("delayed", [NORM_FED, OWN]) == [("fp8_cast", False)]


def test_userbuffers_reduce_is_queued_its_copies_are_not():
    # split_overlap_rs_p2p launches reduce_bf16 after its last chunk GEMM; copy_into_buffer is a call of its own
    gemm = Op("attn_out", "gemm", 1.0, 1.0, m=8192, n=8192, k=2048)
    assert userbuffers.ring_reduce(gemm, 4, 2).queued
    assert not userbuffers.buffer_copy(gemm, "forward", 4, 2).queued


@pytest.mark.parametrize("quantizes", [0, 1, 6])
def test_moe_launches_queue_the_grouped_gemms_and_quantizes_beyond_the_first(quantizes):
    # one te_general_grouped_gemm call launches every local expert's GEMM; one split_quantize call every split
    counts = moe.launch_counts(8, fp8_quantizes=quantizes)
    for phase, ops in moe.host_launches(8, fp8_quantizes=quantizes).items():
        count = counts[phase]
        operands = min(count["fp8 quantizes"], moe.FP8_QUANTIZED_GROUPED_GEMMS.get(phase, 0))
        assert call_issue.queued_count(ops) == count["grouped GEMMs"] + count["fp8 quantizes"] - operands
        python = [op for op in ops if op.name == "moe_launch" and not op.queued]
        assert len(python) == count["router"] + count["collectives"] + operands


def host(gap_per):
    return kernels.HostModel(25e-6, 13.5e-6, 450e-6, 0.0, gap_per)


def test_gap_per_kernel_ignores_the_tags_and_per_call_charges_queued_launches_the_measured_latency():
    python_op = Op("qkv", "memory", 0.0, 1e9)
    queued_op = Op("fp8_cast", "memory", 0.0, 1e9, queued=True)
    stream = kernels.StreamTime(device_s=1e-3, kernels=10, queued_kernels=4)
    assert stream.device_bound_s(host("kernel")) == pytest.approx(1e-3 + 10 * 25e-6)
    assert stream.device_bound_s(host("call")) == pytest.approx(1e-3 + 6 * 25e-6 + 4 * kernels.launch_overhead_s())
    assert host("kernel").gap_s(queued_op) == host("kernel").gap_s(python_op) == 25e-6
    assert host("call").gap_s(queued_op) == kernels.launch_overhead_s()
    assert host("call").gap_s(python_op) == 25e-6
    assert (2 * stream + stream).queued_kernels == 12   # kept through sums and layer counts


def test_call_structure_selects_gap_per_call_and_restores_it():
    table = catalog.load("efficiency")["host_overhead"]
    assert table["gap_per"] == "kernel"   # in use; the lead decides
    assert fit_script.STRUCTURES["call"].fixed_values() == {"fill_waves": 0.0, "gap_per": "call"}
    assert fit_script.STRUCTURES["gap"].fixed_values()["gap_per"] == "kernel"
    fit_script.STRUCTURE = fit_script.STRUCTURES["call"]
    try:
        with fit_script.host_values(30e-6, 400e-6):
            assert kernels.host_model() == kernels.HostModel(30e-6, table["dispatch_s"], 400e-6, 0.0, "call", False,
                                                             table["graph_node_s"])
        assert kernels.host_model().gap_per == "kernel"
    finally:
        fit_script.STRUCTURE = fit_script.STRUCTURES["gap"]


def test_the_fit_estimate_charges_what_the_stream_charges():
    # Run.block_s (the fit's estimate) against StreamTime.elapsed_s (the simulator) for device-bound blocks
    device = np.array([[2e-3, 4e-3]])
    count = np.array([[40.0, 90.0]])
    queued = np.array([[10.0, 30.0]])
    run = fit_script.Run({"source": "s"}, device, count, np.zeros((1, 2)), False, 4, np.zeros((1, 2)),
                         queued=queued)
    for gap_per in ("kernel", "call"):
        streams = [kernels.StreamTime(device_s=d, kernels=n, queued_kernels=q)
                   for d, n, q in zip(device[0], count[0], queued[0], strict=True)]
        expected = sum(stream.elapsed_s(host(gap_per)) for stream in streams)
        assert run.block_s(25e-6, 0.0, 13.5e-6, 0.0, gap_per=gap_per) == pytest.approx(expected)


def test_the_call_fit_recovers_the_gap_that_made_a_set():
    # a synthetic set made under gap_per "call" at a known gap: the "call" fit finds it, exactly
    rng = np.random.default_rng(3)
    runs, results = [], []
    for i in range(10):
        count = rng.uniform(200, 2000, (1, 2))
        run = fit_script.Run({"source": f"s{i % 3}"}, count * rng.uniform(200e-6, 900e-6, (1, 2)), count,
                             np.zeros((1, 2)), False, 8 + i, np.zeros((1, 2)),
                             queued=count * rng.uniform(0.0, 0.6, (1, 2)))
        simulated = run.critical_blocks * run.block_s(25e-6, 0.0, 13.5e-6, 0.0, gap_per="call")
        published = run.critical_blocks * run.block_s(40e-6, 0.0, 13.5e-6, 0.0, gap_per="call")
        runs.append(run)
        results.append(SimpleNamespace(step_time_s=simulated, error=published / simulated - 1.0))
    fit_script.STRUCTURE = fit_script.STRUCTURES["call"]
    try:
        (gap_s, step_s), errors = fit_script.grid_fit(runs, results, (25e-6, 0.0), np.ones(len(runs), bool))
    finally:
        fit_script.STRUCTURE = fit_script.STRUCTURES["gap"]
    assert gap_s == pytest.approx(40e-6) and step_s == 0.0
    assert np.abs(errors).max() < 1e-9
