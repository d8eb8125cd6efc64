"""FSDP2 (torchtitan) keeps its root unit and its last block gathered from the forward into the backward, and the
kept root is whole beside the two units in flight (docs/calibration/round-19.md, "Round 19: FSDP2's kept units and the
root in memory").

Source: torch torch/distributed/_composable/fsdp/_fsdp_state.py ``_lazy_init`` ("For the root, do not reshard after
forward": ``post_forward_mesh_info = None``); torchtitan torchtitan/parallelisms/parallelize_llama.py ``apply_fsdp``
(Dec 2024): ``fully_shard`` on each ``TransformerBlock`` with ``reshard_after_forward = int(layer_id) <
len(model.layers) - 1`` without pipelining, ``False`` with it, then ``fully_shard(model)``: the root holds
``tok_embeddings``, ``norm`` and ``output``. Per microbatch without pipelining: layers + 1 units, all gathered in the
forward, all but the root and the last block in the backward: 2 x units - 2 = 2 x layers all-gathers.
"""

import math

import pytest

from simcluster.engine import simulate
from simcluster.parallel import fsdp_runtime, memory
from simcluster.spec import config

LLAMA31_8B = "torchtitan-llama31-8b-8-h100-fp8-32k"


def _gathers(scenario):
    events = simulate(scenario, check_memory=False).events
    dp = events[(events["rank"] == events["rank"].min()) & (events["stream"] == "dp")]
    return dp[dp["name"].str.contains("all_gather")]


def _short(scenario, **parallelism):
    """The row at a 4k sequence (a cheaper simulation; the collective count does not depend on it)."""
    return scenario.model_copy(update={
        "training": scenario.training.model_copy(update={"seq_len": 4096}),
        "parallelism": scenario.parallelism.model_copy(update=parallelism)})


def test_fsdp2_without_pipelining_gathers_every_unit_but_the_root_and_last_block_in_the_backward():
    scenario = _short(config.load(LLAMA31_8B))
    assert scenario.parallelism.pp == 1 and scenario.microbatches == 1
    layers = scenario.model.layers
    units = layers + 1  # each block, and the root: embedding, final norm and output together
    assert memory.zero3_units(scenario.model, layers, True, True, 1, fsdp_runtime.root_holds_output(scenario)) \
        == units
    gathers = _gathers(scenario)
    forward = gathers[gathers["name"].str.contains("forward")]
    backward = gathers[gathers["name"].str.contains("backward")]
    assert len(forward) == units
    assert len(backward) == units - 2
    assert len(gathers) == 2 * units - 2 == 2 * layers
    # equal unit shares: the backward gathers (units - 2) / units of the forward's bytes
    assert backward["bytes"].sum() == pytest.approx(forward["bytes"].sum() * (units - 2) / units, rel=1e-9)


def _dp_events(scenario):
    events = simulate(scenario, check_memory=False).events
    return events, events[events["stream"] == "dp"]


def test_fsdp2_with_pipelining_gathers_and_reduces_each_stage_once_a_step():
    # torchtitan with PP: reshard_after_forward False for every block and the root, and torch's pipelining stage
    # (stage.py backward_maybe_with_nosync) sets reshard_after_backward and requires_gradient_sync False until the
    # last microbatch's backward: each unit is gathered on the stage's first forward and reduce-scattered once
    scenario = _short(config.load(LLAMA31_8B), pp=2, dp=4)
    assert scenario.microbatches == 2
    assert fsdp_runtime.fsdp2_applies(scenario) and fsdp_runtime.gathers_once_per_step(scenario)
    assert not fsdp_runtime.root_holds_output(scenario)
    events, dp = _dp_events(scenario)
    first = dp[dp["rank"] == dp["rank"].min()]
    gathers = first[first["name"].str.contains("all_gather")]
    reduces = first[first["name"].str.contains("reduce_scatter")]
    units = scenario.model.layers // 2 + 1  # the first stage: 16 layers and the embedding
    assert len(gathers) == len(reduces) == units
    assert gathers["name"].str.contains("forward c0").all()
    # conservation: one rank of each stage together gathers every parameter once a step, 2 B each (bf16)
    per_stage = dp[dp["name"].str.contains("all_gather")].groupby("rank")["bytes"].sum()
    stage_ranks = sorted(per_stage.index)[:: len(per_stage) // scenario.parallelism.pp]
    assert per_stage[stage_ranks].sum() == pytest.approx(2 * scenario.model.params, rel=1e-6)


def test_gathered_bytes_a_step_are_the_forward_and_the_backward_the_source_rule_gives():
    # independent of the engine's unit list: per microbatch the forward gathers all N parameters, the backward all
    # but the kept units; with equal unit shares FSDP2 at pp 1 keeps 2 of layers + 1, FSDP1 1 of layers + 1 (tied)
    for name, units, kept in ((LLAMA31_8B, 32 + 1, 2), ("mpt-7b-8-h100", 32 + 1, 1)):
        scenario = config.load(name)
        if name == LLAMA31_8B:
            scenario = _short(scenario)
        _, dp = _dp_events(scenario)
        mine = dp[dp["rank"] == dp["rank"].min()]
        gathered = mine[mine["name"].str.contains("all_gather")]["bytes"].sum()
        params = scenario.model.params
        assert gathered == pytest.approx(2 * params * (2 - kept / units) * scenario.microbatches, rel=1e-6), name


def test_the_first_backward_gather_starts_with_the_last_kept_unit():
    # FSDP2: the root's pre-backward prefetches the last block (already whole): nothing; the last block's
    # pre-backward prefetches the block before it. So the first backward gather starts with the second backward part
    scenario = _short(config.load(LLAMA31_8B))
    events, dp = _dp_events(scenario)
    rank = dp["rank"].min()
    gathers = dp[(dp["rank"] == rank) & dp["name"].str.contains("all_gather backward")]
    compute = events[(events["rank"] == rank) & (events["stream"] == "compute")
                     & events["name"].str.startswith("backward")].sort_values("start_s")
    # (issued there; the dp stream may still carry the first part's reduce-scatter)
    first = gathers.sort_values("start_s").iloc[0]
    assert first["name"].endswith(" u2")
    assert first["start_s"] >= compute["start_s"].iloc[1] - 1e-9


def test_units_kept_after_forward_by_framework():
    fsdp2 = config.load(LLAMA31_8B)
    assert fsdp_runtime.units_kept_after_forward(fsdp2, 33) == 2
    assert fsdp_runtime.units_kept_after_forward(fsdp2, 1) == 1
    piped = _short(fsdp2, pp=2, dp=4)
    assert fsdp_runtime.units_kept_after_forward(piped, 17) == 17
    assert fsdp_runtime.units_kept_after_forward(config.load("mpt-13b-8-h100"), 41) == 1
    # torchtitan's 405B row is pipelined and modelled as ZeRO-1 (parameters kept gathered): not a ZeRO-3 gather
    assert not fsdp_runtime.fsdp2_applies(config.load("torchtitan-llama31-405b-512-h100-fp8"))
    assert fsdp_runtime.keeps_root(fsdp2) and fsdp_runtime.keeps_root(config.load("mpt-13b-8-h100"))


def test_kept_root_is_whole_beside_two_layers_by_hand():
    # Llama 3.1 8B, tp 1: a layer is q, o 4096 x 4096, k, v 4096 x 1024, w1, w2, w3 4096 x 14336, two norms
    model = config.load(LLAMA31_8B).model
    layer = 4096 * (2 * 4096 + 2 * 1024) + 3 * 4096 * 14336 + 2 * 4096
    embedding = 128256 * 4096
    assert layer == 218_112_000 and embedding == 525_336_576
    # bf16 weights, fp32 gradient reduce (torchtitan's reduce_dtype): root (embedding + output) + two layers in
    # flight, the root's unsharded bf16 gradient held through the backward, and one layer's gradient reduced
    expected = 2 * (2 * embedding + 2 * layer) + 2 * 2 * embedding + 4 * layer
    assert memory.zero3_gathered_bytes(model, 1, "bf16", 4, root_matrices=2) == pytest.approx(expected, rel=1e-12)
    # without a kept root: two units of the larger of layer and embedding, as before
    assert memory.zero3_gathered_bytes(model, 1, "bf16", 4) == pytest.approx(2 * 2 * embedding + 4 * embedding,
                                                                            rel=1e-12)
    # tensor parallelism splits the vocabulary rows of both matrices
    assert memory.zero3_gathered_bytes(model, 8, "bf16", 4, root_matrices=2) == pytest.approx(
        2 * (2 * 2 * math.ceil(128256 / 8) * 4096 + 2 * memory.layer_params_per_rank(model, 8))
        + 4 * memory.layer_params_per_rank(model, 8), rel=1e-12)


def test_the_kept_root_adds_two_layers_over_two_embeddings_to_the_8b_rows_peak(monkeypatch):
    # the row's peak with the kept root minus without (two embedding-sized units, an embedding's fp32 gradient):
    # 2 B x 2 layers of weights and 4 B x 1 layer of gradient; the root's bf16 gradient (2 x 2 B x embedding)
    # takes the place of the embedding's fp32 one
    scenario = config.load(LLAMA31_8B)
    kept = memory.per_gpu_memory(scenario).total_bytes
    monkeypatch.setattr(fsdp_runtime, "keeps_root", lambda _: False)
    assert kept - memory.per_gpu_memory(scenario).total_bytes == pytest.approx((2 * 2 + 4) * 218_112_000, rel=1e-9)


def test_fsdp1_root_holds_only_the_embedding(monkeypatch):
    # llm-foundry wraps an untied lm_head as its own unit (``self.lm_head._fsdp_wrap = True``): FSDP1's root is
    # never merged with the output projection, so an untied MPT keeps one vocab x hidden matrix, and has layers + 2
    # units
    mpt = config.load("mpt-7b-8-h100")
    untied = mpt.model_copy(update={"model": mpt.model.model_copy(update={"tied_embeddings": False})})
    assert fsdp_runtime.keeps_root(untied) and not fsdp_runtime.root_holds_output(untied)
    model = untied.model
    assert memory.zero3_units(model, model.layers, True, True, 1, fsdp_runtime.root_holds_output(untied)) \
        == model.layers + 2
    kept = memory.per_gpu_memory(untied).total_bytes
    monkeypatch.setattr(fsdp_runtime, "keeps_root", lambda _: False)
    dropped = memory.per_gpu_memory(untied).total_bytes
    grad = 2  # bf16 reduce (scenarios/mpt-*.yaml)
    assert kept - dropped == pytest.approx(memory.zero3_gathered_bytes(model, 1, "bf16", grad, 1)
                                           - memory.zero3_gathered_bytes(model, 1, "bf16", grad), rel=1e-12)


def test_fsdp2_under_pipelining_holds_its_whole_stage_gathered(monkeypatch):
    # every parameter of the stage whole (bf16) beside its unsharded gradient accumulated at the reduce dtype
    # (fp32: FSDPParam.to_accumulated_grad_if_needed), instead of the kept root beside two units in flight
    piped = _short(config.load(LLAMA31_8B), pp=2, dp=4)
    stage = memory.per_gpu_memory(piped, 0).total_bytes
    monkeypatch.setattr(fsdp_runtime, "gathers_once_per_step", lambda _: False)
    units = memory.per_gpu_memory(piped, 0).total_bytes
    params = memory.stage_params(piped.model, 1, 2, 0)
    assert stage - units == pytest.approx(params * (2 + 4) - memory.zero3_gathered_bytes(piped.model, 1, "bf16", 4, 1),
                                          rel=1e-9)
