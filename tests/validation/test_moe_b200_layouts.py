"""The NeMo 25.11 MoE rows on B200 against the presets they ran, and the layout / GPU split of their ratio to the
NVL72 twins (docs/calibration/round-19.md, "Round 19: MoE on B200 against NVL72").

Independent truths:
- Megatron-Bridge's B200 presets (scripts/performance/configs/deepseek/deepseek_v3_llm_pretrain.py and
  workload_base_configs.py, the stored versions with ``enable_deepep=False, layout=None``; Qwen3's
  qwen3/workload_base_configs.py and qwen3_llm_pretrain.py @ 0fa501ac): DeepSeek-V3 PP 16, VP none, EP 8, TP 1,
  global batch 2048, micro batch 1, ``recompute_modules ["mla_up_proj"]``, no ``cuda_graph_impl``,
  ``moe_a2a_overlap False``, the alltoall dispatcher, ``moe_router_force_load_balancing True``,
  ``grad_reduce_in_fp32 False``; Qwen3-235B-A22B PP 8, VP 2, EP 8, global batch 1024, ``recompute_granularity
  None``, no graphs, and the recipe's ``account_for_embedding_in_pipeline_split`` and
  ``account_for_loss_in_pipeline_split`` (96 units on 16 chunks: embedding + 5, 14 x 6, 5 + loss); its provider
  ``Qwen3MoEModelProvider`` (models/qwen/qwen_provider.py) sets no ``moe_router_dtype``, ``aux_loss`` and the
  alltoall dispatcher.
- The page's tokens/s per GPU (tests/validation/test_nemo2511_flop_convention.py): DeepSeek-V3 MXFP8 B200 2139,
  GB200 4018, so the published per-GPU ratio is 0.532 whatever FLOP count is used.
- ``split``: per-GPU throughput is tokens / (GPUs x step), so the simulated ratio is exactly the layout factor times
  the GPU-and-host factor (a closed form).
"""

import pytest
from scripts_loader import load_script

from simcluster.parallel.layout import split_layers
from simcluster.spec import config
from simcluster.studies import validation

moe_layout_split = load_script("moe_layout_split")

DSV3_B200 = "nemo2511-deepseek-v3-256-b200-fp8"
DSV3_GB200 = "nemo2511-deepseek-v3-256-gb200-fp8"
QWEN3_B200 = "nemo2511-qwen3-235b-64-b200-fp8"
PAGE_TOKENS_PER_GPU = {DSV3_B200: 2139, DSV3_GB200: 4018}


def test_deepseek_b200_row_is_the_b200_preset():
    s = config.load(DSV3_B200)
    p, t = s.parallelism, s.training
    assert (p.tp, p.pp, p.virtual_stages, p.ep, p.cp) == (1, 16, 1, 8, 1)
    assert (t.global_batch_size, t.micro_batch_size, t.seq_len) == (2048, 1, 4096)
    assert tuple(t.recompute_modules) == ("mla_up_proj",) and t.activation_recompute == "none"
    assert not t.moe_cuda_graphs and p.moe_dispatcher == "alltoall" and p.grad_reduce_dtype == "bf16"
    assert s.model.moe.load == "balanced" and s.model.mtp_layers == 1
    # layout (16, 1): embedding + 4, 14 x 4, 1 + MTP + loss; EP 8 inside one 8-GPU node
    assert p.layers_per_stage == [4] * 15 + [1]
    assert p.ep <= s.cluster.gpus_per_node


def test_qwen3_b200_row_is_the_b200_preset_with_the_recipes_pipeline_split():
    s = config.load(QWEN3_B200)
    p, t = s.parallelism, s.training
    assert (p.tp, p.pp, p.virtual_stages, p.ep) == (1, 8, 2, 8)
    assert (t.global_batch_size, t.micro_batch_size) == (1024, 1)
    assert t.activation_recompute == "none" and not t.recompute_modules and not t.moe_cuda_graphs
    # Qwen3MoEModelProvider: no moe_router_dtype (the model's), aux_loss, alltoall
    assert (t.moe_router_dtype, t.moe_load_balancing, p.moe_dispatcher) == ("model", "aux_loss", "alltoall")
    assert split_layers(s.model.layers, p.pp, p.virtual_stages, p.layers_per_stage) == [5] + [6] * 14 + [5]


def test_published_deepseek_ratio_is_the_pages_tokens_per_gpu():
    cases = {c["scenario"]: c for c in validation.held_out_cases()}
    tokens = {}
    for name in (DSV3_B200, DSV3_GB200):
        s = config.load(name)
        tokens[name] = moe_layout_split.per_gpu(s.tokens_per_step, s.cluster.gpus,
                                                validation.published_step_s(cases[name], s))
        assert tokens[name] == pytest.approx(PAGE_TOKENS_PER_GPU[name], rel=2e-3)
    assert tokens[DSV3_B200] / tokens[DSV3_GB200] == pytest.approx(2139 / 4018, rel=3e-3)


def test_split_is_layout_times_gpu_and_host():
    row, twin = (8.0e6, 256, 15.3, 13.0), (16.0e6, 256, 16.3, 17.0)
    r = moe_layout_split.split(row, twin, moved_step_s=13.3)
    assert r.layout * r.gpu_host == pytest.approx(r.simulated, rel=1e-12)
    assert r.simulated == pytest.approx((8.0e6 / 13.0) / (16.0e6 / 17.0))
    assert r.published == pytest.approx((8.0e6 / 15.3) / (16.0e6 / 16.3))
    assert r.gpu_host == pytest.approx(13.3 / 13.0) and r.ratio_error == pytest.approx(r.simulated / r.published - 1)


def test_moved_scenario_keeps_the_layout_and_takes_the_twins_cluster():
    moved = moe_layout_split.moved_scenario(DSV3_B200, DSV3_GB200)
    row, twin = config.load(DSV3_B200), config.load(DSV3_GB200)
    assert moved.cluster.gpu.name == twin.cluster.gpu.name and moved.cluster.gpus_per_node == 64
    assert moved.cluster.gpus == row.cluster.gpus and moved.parallelism == row.parallelism
    assert moved.training == row.training
