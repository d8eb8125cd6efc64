"""FSDP2 (torchtitan) keeps its root unit and its last block gathered from the forward into the backward, and the
kept root is whole beside the two units in flight (docs/calibration.md, "Round 19: FSDP2's kept units and the root
in memory").

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


def test_fsdp2_with_pipelining_gathers_only_in_the_forward():
    # torchtitan with PP: reshard_after_forward False for every block and for the root: nothing is freed after the
    # forward, so the backward gathers nothing; the engine's units are per stage (embedding first, output last)
    scenario = _short(config.load(LLAMA31_8B), pp=2, dp=4)
    assert fsdp_runtime.fsdp2_applies(scenario) and not fsdp_runtime.root_holds_output(scenario)
    gathers = _gathers(scenario)  # the first stage: 16 layers and the embedding
    assert len(gathers[gathers["name"].str.contains("backward")]) == 0
    assert len(gathers) == (scenario.model.layers // 2 + 1) * scenario.microbatches


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
    # flight, and the gradient of the largest unit
    expected = 2 * (2 * embedding + 2 * layer) + 4 * embedding
    assert memory.zero3_gathered_bytes(model, 1, "bf16", 4, root_matrices=2) == pytest.approx(expected, rel=1e-12)
    # without a kept root: two units of the larger of layer and embedding, as before
    assert memory.zero3_gathered_bytes(model, 1, "bf16", 4) == pytest.approx(2 * 2 * embedding + 4 * embedding,
                                                                            rel=1e-12)
    # tensor parallelism splits the vocabulary rows of both matrices
    assert memory.zero3_gathered_bytes(model, 8, "bf16", 4, root_matrices=2) == pytest.approx(
        2 * (2 * math.ceil(128256 / 8) * 4096 + 2 * memory.layer_params_per_rank(model, 8))
        + 4 * math.ceil(128256 / 8) * 4096, rel=1e-12)


def test_the_kept_root_adds_two_layers_over_two_embeddings_to_the_8b_rows_peak(monkeypatch):
    # the row's peak with the kept root (embedding + output + two layers) minus without (two embeddings): 2 B x 2
    # layers, the root's own two matrices replacing the two embedding-sized units counted before
    scenario = config.load(LLAMA31_8B)
    kept = memory.per_gpu_memory(scenario).total_bytes
    monkeypatch.setattr(fsdp_runtime, "keeps_root", lambda _: False)
    assert kept - memory.per_gpu_memory(scenario).total_bytes == pytest.approx(2 * 2 * 218_112_000, rel=1e-9)
