"""An eager Megatron-Core MoE step on H100 against the same step with the router and EP preprocess in CUDA graphs
(docs/calibration/round-30.md, "Round 30: the eager MoE layer's host time per layer, from published step times").

Independent truth: Megatron-Bridge, skills/mbridge-perf-cuda-graphs/SKILL.md, pitfall 13 (measured 2026-05-18, the
experiment of NVIDIA-NeMo/Megatron-Bridge PR 3868): Qwen3-30B-A3B pretraining, H100, BF16, the performance
harness's config variant v1 (scripts/performance/configs/qwen/qwen3_workload_base_configs.py,
``QWEN3_30B_A3B_PRETRAIN_CONFIG_H100_BF16_V1``: 16 GPUs, EP 16, ETP 1, global batch 1024, micro batch 1,
``moe_a2a_overlap False``), 2 nodes of 8, TP 1, PP 1, CP 1, the all-to-all dispatcher forced
(``--moe_flex_dispatcher_backend None``), 8 steps. Eager: iterations 5-8 average **41.36 s**; Transformer Engine
scoped graphs of ``attn, moe_router, moe_preprocess`` (48 graphable layers, capture ~6.9 s on rank 0): **42.00 s**.
Graphing the router and preprocess (and attention) did not make that step faster.

The eager run is the held-out row bridge3868-qwen3-30b-a3b-16-h100-bf16 (docs/calibration/round-30.md "Round 30: new
held-out run (Megatron-Bridge PR 3868's eager Qwen3-30B-A3B)"); its scenario states the assumptions (sequence 4096,
balanced routing, the router fused, no recompute) with their reasons, and both tests here run that scenario. The graphed
run is not a row: Transformer Engine's attention-scope graphs are not modelled.
"""

from __future__ import annotations

import pytest

from simcluster.core import inputs
from simcluster.engine import simulate
from simcluster.spec import config, model
from simcluster.studies import validation

EAGER_S = 41.36    # SKILL.md pitfall 13, eager, iterations 5-8
GRAPHED_S = 42.00  # same, TE-scoped graphs of attn, moe_router, moe_preprocess
# Step-time tolerance of the eager row: the 10% bound on a single published run.
STEP_TOLERANCE = 0.10
# What graphing may save in the model and still agree: the measured change (-1.5%, graphs slower) plus 3.5 points for
# the noise of two 4-iteration means and for the graph replay's own cost (static-buffer copies), which the model has
# not; attention graphs, which the model does not build, would only add to its saving.
GRAPH_SAVING_BOUND = (EAGER_S - GRAPHED_S) / EAGER_S + 0.035

# the held-out row's scenario (data/scenarios, its header: source, assumptions) and the published step it is scored by
NAME = "bridge3868-qwen3-30b-a3b-16-h100-bf16"
# Hugging Face Qwen/Qwen3-30B-A3B config.json, as printed there: the preset must be this model
HF_CONFIG = {"num_hidden_layers": 48, "hidden_size": 2048, "num_attention_heads": 32, "num_key_value_heads": 4,
             "head_dim": 128, "vocab_size": 151936, "num_experts": 128, "num_experts_per_tok": 8,
             "moe_intermediate_size": 768, "tie_word_embeddings": False}


def _step_s(cuda_graphs: bool) -> float:
    path = config.resolve_path(NAME)
    data = inputs.load_yaml(path, inputs.MAX_SCENARIO_BYTES, "scenario file")
    data["training"]["moe_cuda_graphs"] = cuda_graphs
    return simulate(config.from_dict(data), check_memory=False).summary["step_time_s"]


def test_the_row_is_the_published_eager_step_of_this_scenario():
    case = next(c for c in validation.held_out_cases() if c["scenario"] == NAME)
    assert case["step_time_s"] == EAGER_S
    scenario = config.load(NAME)
    t, p = scenario.training, scenario.parallelism
    # the harness's v1 layout (SKILL.md pitfall 13) and the assumptions the header states
    assert (scenario.cluster.gpus, p.tp, p.pp, p.cp, p.ep, p.etp) == (16, 1, 1, 1, 16, 1)
    assert (t.global_batch_size, t.micro_batch_size, t.seq_len, t.moe_cuda_graphs) == (1024, 1, 4096, False)
    assert (t.moe_router, t.activation_recompute, scenario.model.moe.load) == ("fused", "none", "balanced")


def test_the_scenarios_model_is_the_qwen3_30b_a3b_preset_as_hugging_face_prints_it():
    m, preset = config.load(NAME).model, model.preset("qwen3-30b-a3b")
    # the inline model states the routing only: everything else is the preset
    assert m.model_dump(exclude={"moe", "source"}) == preset.model_dump(exclude={"moe", "source"})
    assert m.moe.model_dump(exclude={"load"}) == preset.moe.model_dump(exclude={"load"})
    assert (m.layers, m.hidden, m.heads, m.n_kv_heads, m.d_head, m.vocab, m.moe.experts, m.moe.top_k,
            m.moe.ffn_hidden, m.tied_embeddings) == tuple(HF_CONFIG.values())


def test_eager_step_is_within_tolerance_of_the_published_one():
    assert _step_s(False) == pytest.approx(EAGER_S, rel=STEP_TOLERANCE)


@pytest.mark.xfail(strict=True, reason="the model charges every eager router/preprocess launch the fitted 25 us "
                                       "device gap, so graphing them saves 6.9% of this step where the measured "
                                       "change is -1.5%; docs/calibration/round-30.md, round 30")
def test_graphing_the_router_saves_no_more_than_measured():
    eager, graphed = _step_s(False), _step_s(True)
    assert (eager - graphed) / eager <= GRAPH_SAVING_BOUND
