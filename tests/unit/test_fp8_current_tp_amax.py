"""Current scaling's tensor-parallel amax all-reduce (fp8_recipes.tp_amax_reductions, plan.tp_amax_all_reduces),
against what Transformer Engine 2.x runs (sources in fp8_recipes' docstring, "Current scaling's tensor-parallel amax
all-reduce"):

- with sequence parallelism the current-scaling quantizer of each column-parallel input and each row-parallel output
  gradient reduces its amax over the tensor-parallel group (``with_amax_reduction``, ``amax_reduction_group =
  tp_group``), one fp32 MAX all-reduce that the cast waits for (``allreduce(...)->wait()`` in quantizer.cpp);
- so per layer and microbatch: forward one per column-parallel input (QKV's, fc1's: 2 in a dense layer, 1 in an MoE
  layer without shared experts), backward one per row-parallel output gradient (2 / 1), plus full recompute's inputs;
- none under delayed scaling (its region-wide reduction instead), MXFP8 or BF16, without sequence parallelism, at tp 1;
- MLA (Megatron-Core's TE spec, megatron-core 0.14.0 wheel: down-projections TELinear "duplicated", up-projections
  column-parallel on the sequence-parallel latents) gathers two inputs in its attention where a dense attention
  gathers one, and ``recompute_modules: [mla_up_proj]`` re-runs both up-projections (CheckpointWithoutOutput with
  fp8) before the backward (round 27 review).
"""

import pytest

from simcluster.parallel import plan as plan_module
from simcluster.spec import config
from simcluster.workload import fp8_recipes

DENSE = "nemo2511-llama3-405b-128-b200-fp8"   # current scaling, tp 4, sequence parallel, 1 layer a chunk
MOE = "nemo2511-qwen3-235b-256-h100-fp8"      # current scaling, tp 2, sequence parallel, no shared experts, 2 a chunk
ONE_GPU_TP = "nemo2511-llama3-8b-8-b200-fp8"  # current scaling at tp 1
MLA = "nemo2509-deepseek-v3-1024-h100-fp8"     # current scaling, tp 2, sequence parallel, MLA, 1 shared expert,
                                               # recompute_modules [mla_up_proj, mlp] (mlp: the dense layers only)
WAIT_S = 1e-3                                  # a marker time for a 4-byte all-reduce, far from any other


def _plan(scenario):
    """The plan with every collective free except 4-byte all-reduces (one amax), which take ``WAIT_S``; the plan
    and the groups of those calls."""
    groups = []

    def collective_time_s(op, group, size_bytes):
        if op == "allreduce" and size_bytes == fp8_recipes.AMAX_BYTES:
            groups.append(tuple(group))
            return WAIT_S
        return 0.0

    return plan_module.plan(scenario, collective_time_s), groups


def _without(scenario, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(fp8_recipes, "tp_amax_reductions", lambda recipe, gathered: 0)
        return _plan(scenario)[0]


def _update(scenario, section, **values):
    part = getattr(scenario, section)
    return scenario.model_copy(update={section: part.model_copy(update=values)})


def _added_per_layer(scenario, monkeypatch):
    """{(phase): seconds} each chunk's blocks gain per layer from the tensor-parallel amax all-reduces (the same for
    every chunk, asserted)."""
    step_plan, groups = _plan(scenario)
    base = _without(scenario, monkeypatch)
    added = set()
    for chunk, before in zip(step_plan.chunks, base.chunks, strict=True):
        added.add(tuple(round((getattr(chunk, f"{phase}_compute_s") - getattr(before, f"{phase}_compute_s"))
                              / chunk.layers, 12) for phase in ("forward", "backward")))
    assert len(added) == 1
    return dict(zip(("forward", "backward"), added.pop(), strict=True)), groups, step_plan


def test_a_dense_layer_waits_for_two_amax_all_reduces_each_way_over_its_tensor_parallel_group(monkeypatch):
    added, groups, step_plan = _added_per_layer(config.load(DENSE), monkeypatch)
    assert added == {"forward": pytest.approx(2 * WAIT_S, rel=1e-9), "backward": pytest.approx(2 * WAIT_S, rel=1e-9)}
    layout = step_plan.layout
    assert set(groups) == {tuple(layout.group(0, "tp"))}
    (group,) = set(groups)
    assert len(group) == 4
    assert len({(layout.coords(rank)["pp"], layout.coords(rank)["dp"], layout.coords(rank)["cp"])
                for rank in group}) == 1


def test_an_moe_layer_without_shared_experts_waits_for_its_attentions_one_per_layer_not_per_chunk(monkeypatch):
    scenario = config.load(MOE)
    assert scenario.model.moe.shared_experts == 0
    added, _groups, step_plan = _added_per_layer(scenario, monkeypatch)
    assert {chunk.layers for chunk in step_plan.chunks} == {2, 3}   # a per-chunk count would differ by chunk
    assert added == {"forward": pytest.approx(WAIT_S, rel=1e-9), "backward": pytest.approx(WAIT_S, rel=1e-9)}


def test_full_recompute_quantizes_the_inputs_again_in_the_backward(monkeypatch):
    scenario = _update(config.load(DENSE), "training", activation_recompute="full")
    added, _groups, _plan_ = _added_per_layer(scenario, monkeypatch)
    assert added == {"forward": pytest.approx(2 * WAIT_S, rel=1e-9), "backward": pytest.approx(4 * WAIT_S, rel=1e-9)}


def test_mla_gathers_both_up_projection_inputs_and_its_up_projection_recompute_gathers_them_again(monkeypatch):
    scenario = config.load(MLA)
    assert scenario.model.mla is not None and scenario.model.moe.shared_experts == 1
    assert "mla_up_proj" in scenario.training.recompute_modules and scenario.training.activation_recompute == "none"
    # the MLA checkpoint alone (the row also lists mlp, which re-runs the 3 dense layers' MLPs, round 36)
    scenario = _update(scenario, "training", recompute_modules=("mla_up_proj",))
    # forward: the query and key/value up-projections' inputs + the shared expert's fc1 input = 3; backward: the
    # output projection's and the shared expert's fc2 output gradients (2) + the two up-projections recomputed (2)
    added, _groups, _plan_ = _added_per_layer(scenario, monkeypatch)
    assert added == {"forward": pytest.approx(3 * WAIT_S, rel=1e-9), "backward": pytest.approx(4 * WAIT_S, rel=1e-9)}
    without = _update(scenario, "training", recompute_modules=())
    added, _groups, _plan_ = _added_per_layer(without, monkeypatch)
    assert added == {"forward": pytest.approx(3 * WAIT_S, rel=1e-9), "backward": pytest.approx(2 * WAIT_S, rel=1e-9)}
    # a full recompute re-runs the whole forward (3) once, the mla_up_proj checkpoint no more
    full = _update(scenario, "training", activation_recompute="full")
    added, _groups, _plan_ = _added_per_layer(full, monkeypatch)
    assert added == {"forward": pytest.approx(3 * WAIT_S, rel=1e-9), "backward": pytest.approx(5 * WAIT_S, rel=1e-9)}


@pytest.mark.parametrize("change", [
    ("training", {"fp8_recipe": "delayed"}),
    ("training", {"fp8_recipe": "mxfp8"}),
    ("training", {"precision": "bf16"}),
    ("parallelism", {"sequence_parallel": False, "tp_comm_overlap": False}),
])
def test_nothing_without_current_scaling_and_sequence_parallelism(change):
    section, values = change
    _step_plan, groups = _plan(_update(config.load(DENSE), section, **values))
    assert groups == []


def test_nothing_at_tensor_parallel_one():
    scenario = config.load(ONE_GPU_TP)
    assert scenario.training.fp8_recipe == "current" and scenario.parallelism.tp == 1
    assert _plan(scenario)[1] == []
