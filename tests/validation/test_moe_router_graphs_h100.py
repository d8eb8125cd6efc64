"""An eager Megatron-Core MoE step on H100 against the same step with the router and EP preprocess in CUDA graphs
(docs/calibration.md, "Round 30: the eager MoE layer's host time per layer, from published step times").

Independent truth: Megatron-Bridge, skills/mbridge-perf-cuda-graphs/SKILL.md, pitfall 13 (measured 2026-05-18, the
experiment of NVIDIA-NeMo/Megatron-Bridge PR 3868): Qwen3-30B-A3B pretraining, H100, BF16, the performance
harness's config variant v1 (scripts/performance/configs/qwen/qwen3_workload_base_configs.py,
``QWEN3_30B_A3B_PRETRAIN_CONFIG_H100_BF16_V1``: 16 GPUs, EP 16, ETP 1, global batch 1024, micro batch 1,
``moe_a2a_overlap False``), 2 nodes of 8, TP 1, PP 1, CP 1, the all-to-all dispatcher forced
(``--moe_flex_dispatcher_backend None``), 8 steps. Eager: iterations 5-8 average **41.36 s**; Transformer Engine
scoped graphs of ``attn, moe_router, moe_preprocess`` (48 graphable layers, capture ~6.9 s on rank 0): **42.00 s**.
Graphing the router and preprocess (and attention) did not make that step faster.

Assumed, not stated by the source: sequence 4096 (the Qwen3 pretraining recipes' default), balanced routing (the
performance harness forces load balancing), the router fused (the harness's ``moe_router_fusion``), no recompute.
"""

from __future__ import annotations

import pytest

from simcluster.engine import simulate
from simcluster.spec import config

EAGER_S = 41.36    # SKILL.md pitfall 13, eager, iterations 5-8
GRAPHED_S = 42.00  # same, TE-scoped graphs of attn, moe_router, moe_preprocess
# Step-time tolerance of the eager row: the 10% bound on a single published run.
STEP_TOLERANCE = 0.10
# What graphing may save in the model and still agree: the measured change (-1.5%, graphs slower) plus 3.5 points for
# the noise of two 4-iteration means and for the graph replay's own cost (static-buffer copies), which the model has
# not; attention graphs, which the model does not build, would only add to its saving.
GRAPH_SAVING_BOUND = (EAGER_S - GRAPHED_S) / EAGER_S + 0.035

QWEN3_30B_A3B = {"name": "qwen3-30b-a3b", "layers": 48, "hidden": 2048, "heads": 32, "kv_heads": 4, "head_dim": 128,
                 "ffn_hidden": 6144, "vocab": 151936, "mlp": "swiglu", "tied_embeddings": False, "norm": "rmsnorm",
                 "qk_layernorm": True, "position": "rope", "dropout": False, "max_seq_len": 40960,
                 "moe": {"experts": 128, "top_k": 8, "ffn_hidden": 768, "load": "balanced"}}


def _step_s(cuda_graphs: bool) -> float:
    scenario = config.from_dict({
        "name": f"bridge3868-qwen3-30b-16-h100-bf16-{'graphs' if cuda_graphs else 'eager'}",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "model": QWEN3_30B_A3B,
        "training": {"mcore_version": "0.15", "moe_router": "fused", "seq_len": 4096, "global_batch_size": 1024,
                     "micro_batch_size": 1, "precision": "bf16", "activation_recompute": "none",
                     "cross_entropy": "fused", "moe_cuda_graphs": cuda_graphs},
        "parallelism": {"tp": 1, "pp": 1, "dp": 16, "cp": 1, "ep": 16, "etp": 1, "sequence_parallel": False,
                        "zero_stage": 1, "overlap_param_gather": True, "tp_comm_overlap": False,
                        "grad_reduce_dtype": "bf16"},
    })
    return simulate(scenario, check_memory=False).summary["step_time_s"]


def test_eager_step_is_within_tolerance_of_the_published_one():
    assert _step_s(False) == pytest.approx(EAGER_S, rel=STEP_TOLERANCE)


@pytest.mark.xfail(strict=True, reason="the model charges every eager router/preprocess launch the fitted 25 us "
                                       "device gap, so graphing them saves 6.9% of this step where the measured "
                                       "change is -1.5%; docs/calibration.md, round 30")
def test_graphing_the_router_saves_no_more_than_measured():
    eager, graphed = _step_s(False), _step_s(True)
    assert (eager - graphed) / eager <= GRAPH_SAVING_BOUND
