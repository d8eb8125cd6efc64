"""Delayed scaling's amax reduction per fp8 autocast region (fp8_recipes.amax_reduction, plan.amax_region), against
what Transformer Engine 1.x and Megatron-Core r0.8-r0.10 run (sources in fp8_recipes' docstring):

- one region per model chunk and microbatch (Megatron-Core wraps TransformerBlock.forward in fp8_autocast), reduced
  once forward (fp8_autocast_exit) and once backward (the region's first module's backward);
- a MAX all-reduce of 4-byte amaxes, 3 per GEMM forward and 2 backward (TE's scaling_fwd / scaling_bwd), over the
  tensor-, context- and data-parallel ranks of one pipeline stage (get_amax_reduction_group(with_context_parallel=
  True)), which the compute stream waits for;
- two kernels on the compute stream (torch.cat, fused_amax_and_scale_update_after_reduction);
- nothing for BF16, current scaling or MXFP8.
"""

import pytest

from simcluster.parallel import plan as plan_module
from simcluster.spec import config
from simcluster.workload import fp8_recipes, kernels

GPT3_FP8 = "nemo2407-gpt3-175b-128-h100-fp8"   # tp 4, pp 8, dp 4, 6 virtual stages: 2 layers (8 GEMMs) a chunk
AMAX_WAIT_S = 1e-3                              # a marker time for the amax all-reduce, far from any other


def _plan(scenario):
    """The plan with every collective free except all-reduces of at most 1 KB (the amaxes), which take
    ``AMAX_WAIT_S``; returns the plan and the (op, group, bytes) of each such call."""
    calls = []

    def collective_time_s(op, group, size_bytes):
        if op == "allreduce" and size_bytes <= 1024:
            calls.append((op, tuple(group), size_bytes))
            return AMAX_WAIT_S
        return 0.0

    return plan_module.plan(scenario, collective_time_s), calls


def _with_recipe(scenario, recipe):
    return scenario.model_copy(update={"training": scenario.training.model_copy(update={"fp8_recipe": recipe})})


def _region_kernels_s(scenario, direction, gemms):
    _size, reduction = fp8_recipes.amax_reduction("delayed", gemms, direction)
    return sum(kernels.op_time_s(kernels.Op(name, "memory", 0.0, size), scenario.cluster.gpu, "fp8")
               for name, _n, size in reduction)


def test_the_group_is_one_stages_tensor_and_data_parallel_ranks_and_the_amaxes_are_per_gemm():
    """16 ranks (tp 4 x dp 4) sharing one pipeline coordinate; 8 GEMMs a chunk: 24 amaxes forward, 16 backward."""
    scenario = config.load(GPT3_FP8)
    step_plan, calls = _plan(scenario)
    layout = step_plan.layout
    groups = {group for _op, group, _size in calls}
    assert len(groups) == 1
    (group,) = groups
    assert len(group) == layout.tp * layout.cp * layout.dp == 16
    assert {layout.coords(rank)["pp"] for rank in group} == {0}
    assert {layout.coords(rank)["tp"] for rank in group} == set(range(4))
    assert {layout.coords(rank)["dp"] for rank in group} == set(range(4))
    assert {size for _op, _group, size in calls} == {4 * 3 * 8, 4 * 2 * 8}


def test_each_chunk_waits_once_per_direction_for_the_reduction_and_runs_its_two_kernels(monkeypatch):
    """Per chunk and microbatch, forward and backward each take the all-reduce's time plus the two kernels' (gap and
    roofline) more than the same plan without the region, and launch two kernels more."""
    scenario = config.load(GPT3_FP8)
    step_plan, _calls = _plan(scenario)
    region_kernels_s = {direction: _region_kernels_s(scenario, direction, 8) for direction in ("forward", "backward")}
    monkeypatch.setattr(fp8_recipes, "amax_reduction", lambda *args, **kwargs: (0.0, []))
    without, no_calls = _plan(scenario)
    assert no_calls == []
    assert len(step_plan.chunks) == 48
    for chunk, base in zip(step_plan.chunks, without.chunks, strict=True):
        assert chunk.layers == 2
        for direction, phase in (("forward", "forward"), ("backward", "backward")):
            extra_s = AMAX_WAIT_S + region_kernels_s[direction]
            added_s = getattr(chunk, f"{phase}_compute_s") - getattr(base, f"{phase}_compute_s")
            assert added_s == pytest.approx(extra_s, rel=1e-9)
            assert getattr(chunk, f"{phase}_stream").kernels - getattr(base, f"{phase}_stream").kernels == 2


@pytest.mark.parametrize("recipe", ["current", "mxfp8"])
def test_recipes_without_a_region_reduction_wait_for_none(recipe):
    scenario = _with_recipe(config.load("nemo2511-llama3-8b-8-b200-fp8"), recipe)
    _step_plan, calls = _plan(scenario)
    assert calls == []


def test_bf16_waits_for_none():
    _step_plan, calls = _plan(config.load("nemo2409-gpt3-175b-128-h100-bf16"))
    assert calls == []


def test_the_reduction_is_a_few_hundred_bytes_and_the_update_reads_and_writes_the_histories():
    size, reduction = fp8_recipes.amax_reduction("delayed", 8, "forward", history_len=1024)
    assert size == 4 * 24
    (concat, _n, concat_bytes), (update, _m, update_bytes) = reduction
    assert (concat, update) == (fp8_recipes.AMAX_CONCAT_OP, fp8_recipes.SCALE_UPDATE_OP)
    assert concat_bytes == 2 * 4 * 24
    assert update_bytes == pytest.approx((2 * 1024 + 4) * 4 * 24)
    assert fp8_recipes.amax_reduction("current", 8, "forward") == (0.0, [])
    assert fp8_recipes.amax_reduction("delayed", 0, "backward") == (0.0, [])
