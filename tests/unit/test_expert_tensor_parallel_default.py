"""``parallelism.etp`` left unset: Megatron-Core's expert tensor parallelism.

Megatron-Core builds its expert groups with ``expert_tensor_parallel_size = tensor_model_parallel_size`` when none is
given (megatron/core/parallel_state.py, initialize_model_parallel), so NeMo 2.x's long-context Mixtral recipes
(mixtral_8x7b_16k.py: tp 4, cp 4, pp 2, ep 1 on 32 GPUs) hold a quarter of each expert per GPU. With expert
parallelism NeMo's recommended H100 configurations state ETP 1 (Mixtral 8x22B: TP4 EP8 ETP1), the default there.
The expected weights are counted here from the Mixtral 8x7B shape (Jiang et al. 2024, Table 1), not from simcluster.
"""

from __future__ import annotations

import pytest

from simcluster.parallel import memory
from simcluster.spec import config

GIB = 2**30


def mixtral(tp: int, cp: int, pp: int, dp: int, ep: int | None = None, etp: int | None = None,
            model: str = "mixtral-8x7b") -> dict:
    parallelism = {"tp": tp, "pp": pp, "dp": dp, "cp": cp, "sequence_parallel": tp > 1}
    if ep is not None:
        parallelism["ep"] = ep
    if etp is not None:
        parallelism["etp"] = etp
    return {"name": "etp-default", "model": model,
            "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": tp * cp * pp * dp // 8,
                        "nic": "connectx-7", "topology": "rail-fat-tree"},
            "training": {"seq_len": 16384, "global_batch_size": 64, "micro_batch_size": 1, "precision": "bf16",
                         "activation_recompute": "none"},
            "parallelism": parallelism}


def stage0_weight_params(tp: int, pp: int, etp: int) -> float:
    """Parameters on one GPU of Mixtral 8x7B's first pipeline stage: 32 layers of hidden 4096, 32 heads, 8 KV groups
    (head dim 128), 8 experts of swiglu ffn 14336, a router, two RMSNorms; the 32000 x 4096 embedding, split over tp."""
    h, kv, ffn, experts = 4096, 8 * 128, 14336, 8
    attention = (h * (h + 2 * kv) + h * h) / tp
    expert_weights = experts * 3 * h * ffn / etp
    layer = attention + expert_weights + h * experts + 2 * h
    return 32 // pp * layer + 32000 * h / tp


def test_unset_etp_is_tp_without_expert_parallelism_as_megatron_core_builds_it():
    scenario = config.from_dict(mixtral(tp=4, cp=4, pp=2, dp=1))
    assert scenario.parallelism.etp == 4
    weights = memory.per_gpu_memory(scenario).weights_bytes
    assert weights == pytest.approx(2 * stage0_weight_params(tp=4, pp=2, etp=4), rel=0.02)


def test_the_long_context_recipe_fits_the_h100_with_the_default_and_not_with_whole_experts():
    """mixtral_8x7b_16k at its default 4 nodes: 42 GiB of whole experts per GPU (etp 1) left it over HBM."""
    default = config.from_dict(mixtral(tp=4, cp=4, pp=2, dp=1))
    whole = config.from_dict(mixtral(tp=4, cp=4, pp=2, dp=1, etp=1))
    assert memory.per_gpu_memory(default).total_bytes <= default.cluster.gpu.hbm_capacity
    assert memory.per_gpu_memory(whole).total_bytes > whole.cluster.gpu.hbm_capacity
    assert memory.per_gpu_memory(whole).weights_bytes == pytest.approx(
        2 * stage0_weight_params(tp=4, pp=2, etp=1), rel=0.02)


@pytest.mark.parametrize(("layout", "etp"), [
    (dict(tp=4, cp=8, pp=4, dp=2, ep=8, model="mixtral-8x22b"), 1),  # NeMo 2.x csv: TP4 EP8 ETP1
    (dict(tp=2, cp=1, pp=1, dp=4, ep=8), 1),                          # ep x tp would not divide the stage
    (dict(tp=1, cp=1, pp=4, dp=16, ep=8), 1),                         # the 24.09 launcher's TP1 EP8
    (dict(tp=8, cp=1, pp=2, dp=1), 8),                                # the 24.09 launcher's 8x22B: TP8, no EP
    (dict(tp=4, cp=4, pp=2, dp=1, etp=1), 1),                         # stated: kept
])
def test_etp_default_per_layout(layout, etp):
    assert config.from_dict(mixtral(**layout)).parallelism.etp == etp


def test_dense_models_and_rebuilt_scenarios():
    dense = config.from_dict({**mixtral(tp=4, cp=1, pp=1, dp=2), "model": "llama3-8b"})
    assert dense.parallelism.etp == 1
    scenario = config.from_dict(mixtral(tp=4, cp=4, pp=2, dp=1))
    rebuilt = config.rebuildable(scenario)
    assert rebuilt["parallelism"]["etp"] is None           # a grid point resolves it for its own tp
    rebuilt["parallelism"].update(tp=2, dp=2)
    assert config.from_dict(rebuilt).parallelism.etp == 2
