"""workload.call_issue and host_overhead gap_per: which kernels a call's C++ queues (Transformer Engine source facts),
what each structure charges them, and scripts/fit_host_overheads.py --structure call."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from scripts_loader import load_script

from simcluster.core import catalog
from simcluster.spec import config
from simcluster.workload import call_issue, fp8_recipes, kernels, moe, userbuffers
from simcluster.workload.ops import Op, layer_ops, shard_for

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
        assert sum(op.queued for op in ops) == count["grouped GEMMs"] + count["fp8 quantizes"] - operands
        python = [op for op in ops if op.name == "moe_launch" and not op.queued]
        assert len(python) == count["router"] + count["collectives"] + operands


@pytest.mark.parametrize("experts", [4, 8, 16])
def test_moe_current_scaling_one_element_launches_are_no_work_beyond_each_operands_first(experts):
    # split_quantize under current scaling: per expert a zeroing, an amax pass, a scale kernel and a cast; the zeroing
    # and the scale kernel have no work; each operand's first launch (its zeroing) is issued from Python
    quantizes = moe.fp8_quantize_kernels(experts, "current")
    share = moe.fp8_no_work_share(quantizes, "current")
    assert share == 0.5
    for phase, ops in moe.host_launches(experts, fp8_quantizes=quantizes, fp8_no_work_share=share).items():
        operands = moe.FP8_QUANTIZED_GROUPED_GEMMS.get(phase, 0)
        no_work = [op for op in ops if op.no_work]
        assert len(no_work) == max(0, operands * quantizes // 2 - operands)
        assert all(op.queued for op in no_work)
    assert moe.fp8_no_work_share(moe.fp8_quantize_kernels(8, "mxfp8"), "mxfp8") == 0.0   # casts: work
    assert moe.fp8_no_work_share(1, "delayed") == 0.0


def test_an_moe_layer_passes_its_recipes_no_work_share_to_its_launches():
    # review (round 32): the MoE block built for a current-scaling scenario carries the per-expert one-element
    # launches as no-work (not only host_launches given the share by hand); MXFP8's per-expert casts have work
    for name, recipe in (("nemo2511-qwen3-235b-256-h100-fp8", "current"), ("nemo2511-qwen3-235b-64-b200-fp8", "mxfp8")):
        scenario = config.load(name)
        shard, p = shard_for(scenario), scenario.parallelism
        assert shard.fp8_recipe == recipe
        block = moe.moe_block(scenario.model, shard, ep=p.ep, etp=p.etp)
        quantizes = moe.fp8_quantize_kernels(scenario.model.moe.experts // p.ep, recipe, shard.fp8_transpose)
        for phase in ("forward", "backward_input"):
            operands = moe.FP8_QUANTIZED_GROUPED_GEMMS[phase]
            expected = operands * quantizes // 2 - operands if recipe == "current" else 0
            assert sum(op.no_work for op in getattr(block, phase) if op.name == "moe_launch") == expected
            if recipe == "current":
                assert expected > 0


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


@pytest.mark.parametrize("gap_per", ["kernel", "call"])
def test_a_queued_launch_with_no_work_pays_the_queued_latency_under_both_structures(gap_per):
    # round 32: no Python before it (queued) and no roofline for the gap's per-kernel remainder (no work)
    latency = kernels.launch_overhead_s()
    assert host(gap_per).gap_s(Op("mxfp8_swizzle", "memory", 0.0, 0.0, queued=True, no_work=True)) == latency
    # the same kernel as its Python call's first launch keeps the gap (the host may be behind before it)
    assert host(gap_per).gap_s(Op(fp8_recipes.AMAX_ZERO_OP, "memory", 0.0, 0.0, no_work=True)) == 25e-6
    stream = kernels.StreamTime(device_s=1e-3, kernels=10, queued_kernels=4, no_work_kernels=3)
    queued_gap = 25e-6 if gap_per == "kernel" else latency
    assert stream.device_bound_s(host(gap_per)) == pytest.approx(1e-3 + 6 * 25e-6 + queued_gap + 3 * latency)
    assert (2 * stream + stream).no_work_kernels == 9   # kept through sums and layer counts
    assert stream.host_bound_s(host(gap_per)) == pytest.approx(10 * 13.5e-6)   # a dispatch each on the host
    assert kernels.graphed(stream, replace(host(gap_per), cuda_graphs=True)).no_work_kernels == 0


def test_a_current_scaling_layer_marks_only_its_one_element_kernels_no_work():
    # the amax zeroing and the scale kernel (one element each); the amax passes and casts move the tensor (work)
    scenario = config.load("nemo2511-llama3-8b-8-b200-fp8")
    for phase, ops in layer_ops(scenario.model, shard_for(scenario)).items():
        one_element = [op for op in ops if op.name in fp8_recipes.NO_WORK_OPS]
        assert [op for op in ops if op.no_work] == one_element
        assert all(op.flop == 0 and op.hbm_bytes == 0 for op in one_element)
        if phase in ("forward", "backward_input"):   # the phases that quantize
            assert one_element and any(op.queued for op in one_element)


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
    no_work = np.array([[4.0, 20.0]])
    run = fit_script.Run({"source": "s"}, device, count, np.zeros((1, 2)), False, 4, np.zeros((1, 2)),
                         queued=queued, no_work=no_work)
    for gap_per in ("kernel", "call"):
        streams = [kernels.StreamTime(device_s=d, kernels=n, queued_kernels=q, no_work_kernels=w)
                   for d, n, q, w in zip(device[0], count[0], queued[0], no_work[0], strict=True)]
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
