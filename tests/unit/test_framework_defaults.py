"""Options a scenario leaves unset resolve to what NeMo's and Megatron-Core's performance recipes run (the stack of
the calibration's modern series), and to the older frameworks' behaviour where the scenario names one."""

import pytest

from simcluster.spec import config, model


def _parallelism(training=None, **parallelism):
    tp, dp, cp = parallelism.get("tp", 1), parallelism.get("dp", 1), parallelism.get("cp", 1)
    gpus = tp * dp * cp
    return config.from_dict({
        "name": "defaults", "cluster": {"gpu": "h100-sxm", "gpus_per_node": min(gpus, 8), "nodes": max(gpus // 8, 1)},
        "model": {"layers": 4, "hidden": 1024, "heads": 16, "vocab": 32000},
        "training": {"seq_len": 2048, "global_batch_size": 4 * dp, "micro_batch_size": 1, **(training or {})},
        "parallelism": parallelism}).parallelism


# Megatron-LM's local DDP of 2020-21 ran with its fp16 optimizer wrapper, without ZeRO, reducing after the backward
MEGATRON_2021 = {"training": {"precision": "fp16", "optimizer": "megatron2021"}, "zero_stage": 0,
                 "local_ddp": "contiguous", "overlap_grad_reduce": False}


def test_tensor_parallel_overlap_follows_sequence_parallelism():
    assert _parallelism(tp=4, dp=2).tp_comm_overlap is True
    assert _parallelism(tp=1, dp=8).tp_comm_overlap is False
    # without sequence parallelism TE's userbuffers have nothing to overlap: off, not refused
    assert _parallelism(tp=4, dp=2, sequence_parallel=False).tp_comm_overlap is False
    # what a scenario states wins
    assert _parallelism(tp=4, dp=2, tp_comm_overlap=False).tp_comm_overlap is False


def test_parameter_gather_overlaps_with_the_distributed_optimizer_only():
    assert _parallelism(dp=8).overlap_param_gather is True
    assert _parallelism(dp=8, zero_stage=2).overlap_param_gather is True
    assert _parallelism(dp=8, zero_stage=0).overlap_param_gather is False
    assert _parallelism(dp=8, zero_stage=3).overlap_param_gather is False


def test_parameter_gather_overlaps_only_with_the_gradient_reduction_overlapped():
    """Megatron-LM's arguments.py: --overlap-param-gather needs --overlap-grad-reduce; without it Megatron-Core's DDP
    does not bucket (bucket_size None): one bucket per chunk."""
    plain = _parallelism(dp=8, overlap_grad_reduce=False)
    assert plain.overlap_param_gather is False
    assert plain.grad_bucket_size == float("inf")


def test_other_stacks_on_megatrons_engine_keep_their_own_behaviour():
    """torchtitan (its AdamW, torch's fp32 logits) and Megatron-LM's 2020-21 fp16 wrapper are not Megatron-Core:
    no userbuffers, no fused Megatron loss, fp32 gradients, PyTorch DDP's buckets."""
    torchtitan = config.from_dict({
        "name": "titan", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1}, "model": "llama3-8b",
        "training": {"seq_len": 2048, "global_batch_size": 8, "precision": "fp8", "optimizer": "torch_adamw",
                     "logits_memory": "torch_fp32"},
        "parallelism": {"tp": 4, "dp": 2}})
    p, t = torchtitan.parallelism, torchtitan.training
    assert (p.tp_comm_overlap, p.overlap_param_gather, p.grad_reduce_dtype, p.grad_bucket_size) == (
        False, False, "fp32", 25e6)
    assert t.cross_entropy == "unfused"


def test_a_value_set_after_validation_is_not_taken_for_the_default():
    scenario = config.load("gpt3-175b-1024-h100")
    stated = scenario.model_copy(update={"parallelism": scenario.parallelism.model_copy(
        update={"tp_comm_overlap": False})})
    assert config.rebuildable(stated)["parallelism"]["tp_comm_overlap"] is False
    assert config.rebuildable(scenario)["parallelism"]["tp_comm_overlap"] is None


def test_older_frameworks_turn_the_overlaps_off():
    deepspeed = _parallelism(tp=4, dp=2, sequence_parallel=False, pipeline_engine="deepspeed",
                             overlap_grad_reduce=False)
    assert (deepspeed.tp_comm_overlap, deepspeed.overlap_param_gather) == (False, False)
    assert _parallelism(tp=4, dp=2, **MEGATRON_2021).tp_comm_overlap is False


@pytest.mark.parametrize(("dp", "cp", "dtype", "expected"), [
    (8, 1, "fp32", 40e6 * 4),       # the 40M-parameter floor
    (96, 1, "fp32", 96e6 * 4),      # 1M parameters per data-parallel rank above 40
    (48, 2, "fp32", 48e6 * 4),      # DistributedDataParallel counts the data-parallel ranks without cp
    (128, 1, "bf16", 128e6 * 2),    # at the reduction's width
])
def test_gradient_buckets_follow_megatron_core(dp, cp, dtype, expected):
    """megatron/core/distributed: bucket_size = max(40000000, 1000000 * dp_size) parameters when unset."""
    assert _parallelism(dp=dp, cp=cp, grad_reduce_dtype=dtype).grad_bucket_size == expected


def test_pytorch_ddp_bucket_without_megatron_core():
    assert _parallelism(dp=8, **MEGATRON_2021).grad_bucket_size == 25e6
    assert _parallelism(dp=8, grad_bucket_size="220 MiB").grad_bucket_size == 220 * 2**20


def test_fp8_reduces_gradients_in_bf16_unless_stated():
    """NeMo 2.x performance scripts: grad_reduce_in_fp32 False with fp8; Megatron-LM: fp32 with --bf16."""
    assert _parallelism(dp=8, training={"precision": "fp8"}).grad_reduce_dtype == "bf16"
    assert _parallelism(dp=8, training={"precision": "fp8"}).grad_bucket_size == 40e6 * 2
    assert _parallelism(dp=8).grad_reduce_dtype == "fp32"
    assert _parallelism(dp=8, grad_reduce_dtype="fp32", training={"precision": "fp8"}).grad_reduce_dtype == "fp32"


def test_a_dumped_scenario_resolves_its_defaults_again_for_another_layout():
    """compare and sweep rebuild grid points from the dump: a default resolved for one layout must not stick."""
    scenario = config.load("gpt3-175b-1024-h100")   # tp 8, dp 16, bf16, nothing of these stated
    assert scenario.model_dump(mode="json")["parallelism"]["tp_comm_overlap"] is True   # outputs show what ran
    data = config.rebuildable(scenario)
    assert data["parallelism"]["grad_bucket_size"] is None and data["parallelism"]["tp_comm_overlap"] is None
    data["parallelism"].update(tp=1, dp=128)
    data["training"].update(precision="fp8", global_batch_size=128 * 96)
    moved = config.from_dict(data).parallelism
    assert moved.tp_comm_overlap is False
    assert moved.grad_reduce_dtype == "bf16" and moved.grad_bucket_size == 128e6 * 2


def test_a_scenario_without_overlapped_reduction_dumps_and_rebuilds():
    """Megatron-Core without overlap_grad_reduce reduces one bucket per chunk: its resolved bucket is infinite. The
    dump that sweep and compare rebuild from raised a serialisation traceback on it (round 20); now the dump writes
    it as it is and the rebuild resolves it anew."""
    scenario = config.from_dict({
        "name": "no-overlap", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 4},
        "model": {"layers": 16, "hidden": 2048, "heads": 16, "vocab": 32000},
        "training": {"seq_len": 2048, "global_batch_size": 32, "micro_batch_size": 1},
        "parallelism": {"tp": 2, "pp": 4, "dp": 4, "overlap_grad_reduce": False}})
    assert scenario.parallelism.grad_bucket_size == float("inf")
    assert scenario.model_dump(mode="json")["parallelism"]["grad_bucket_size"] == "inf B"
    data = config.rebuildable(scenario)
    assert data["parallelism"]["grad_bucket_size"] is None
    assert config.from_dict(data).parallelism.grad_bucket_size == float("inf")


@pytest.mark.parametrize("size", ["8b", "70b", "405b"])
def test_llama31_presets_are_the_llama3_shapes(size):
    """Llama 3 Herd of Models, Table 3: the 3.1 models keep Llama 3's layers; only the context grows (128k)."""
    llama3, llama31 = model.preset(f"llama3-{size}"), model.preset(f"llama3.1-{size}")
    assert llama31.params == llama3.params and llama31.layers == llama3.layers
    assert llama31.max_seq_len == 131072


def test_nemotron3_22b_preset_has_22_billion_parameters():
    """NeMo-Framework-Launcher's nemotron_22b.yaml (run name nemotron3-22B): about 22 billion parameters."""
    assert 21e9 < model.preset("nemotron3-22b").params < 22.5e9


def test_megatron_core_fuses_the_loss_by_default():
    """NeMo 2.x GPTConfig: cross_entropy_loss_fusion True; DeepSpeed's engine of 2021-22 had no such fusion."""
    data = {"name": "loss", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1},
            "model": "gpt3-1.3b", "training": {"global_batch_size": 16, "precision": "bf16"},
            "parallelism": {"tp": 2, "dp": 4}}
    assert config.from_dict(data).training.cross_entropy == "megatron_fused"
    deepspeed = {**data, "parallelism": {"tp": 2, "dp": 4, "sequence_parallel": False, "pipeline_engine": "deepspeed",
                                         "overlap_grad_reduce": False}}
    assert config.from_dict(deepspeed).training.cross_entropy == "unfused"
    stated = {**data, "training": {**data["training"], "cross_entropy": "unfused"}}
    assert config.from_dict(stated).training.cross_entropy == "unfused"


def test_the_default_rank_order_puts_the_pipeline_outermost_as_megatron_core_does():
    """Megatron-Core's initialize_model_parallel(order="tp-cp-ep-dp-pp"): a stage's tp x cp x dp ranks are
    consecutive, so with 8 GPUs a node, tp 1, pp 4, dp 16, the first expert-parallel group of 8 is node 0's GPUs."""
    from simcluster.parallel.layout import Layout, expert_groups

    order = config.Parallelism().order
    assert order == "tp-cp-dp-pp"
    layout = Layout(tp=1, cp=1, pp=4, dp=16, order=tuple(order.split("-")))
    assert expert_groups(layout, 0, 8, 1)[0] == tuple(range(8))
    assert Layout().order == tuple(order.split("-"))      # the layout's own default is the scenario's


def test_gpt3_and_nemotron4_340b_reduce_bf16_gradients_in_bf16_as_their_nemo_recipes_do():
    """NeMo 2.x gpt3_175b.py / nemotron4_340b.py set grad_reduce_in_fp32 False for both precisions; llama3_70b.py
    does not, so a bf16 Llama 3 70B keeps fp32."""
    def dtype(model: str, precision: str) -> str:
        return config.Scenario.model_validate({
            "name": "x", "model": model,
            "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 16},
            "training": {"seq_len": 2048, "global_batch_size": 256, "micro_batch_size": 1, "precision": precision},
            "parallelism": {"tp": 8, "pp": 8, "dp": 2}}).parallelism.grad_reduce_dtype

    assert dtype("gpt3-175b", "bf16") == "bf16"
    assert dtype("nemotron4-340b", "bf16") == "bf16"
    assert dtype("llama3-70b", "bf16") == "fp32"
    assert dtype("llama3-70b", "fp8") == "bf16"
