"""Memory model: ZeRO accounting, Korthikanti et al. 2022 activation equations, in-flight microbatches."""

import pytest

from simcluster.parallel import memory
from simcluster.spec import config, model
from simcluster.workload.ops import Shard


def scenario(model_name="gpt3-1.3b", gpus=1, tp=1, pp=1, dp=1, cp=1, batch=None, seq_len=2048,
             micro_batch=1, recompute="none", zero_stage=0, schedule="1f1b", virtual_stages=1,
             attention="flash", gpu="h100-sxm"):
    batch = batch or dp * micro_batch * 8
    return config.from_dict({
        "cluster": {"gpu": gpu, "gpus_per_node": gpus, "nodes": 1},
        "model": model_name,
        "training": {"seq_len": seq_len, "global_batch_size": batch, "micro_batch_size": micro_batch,
                     "activation_recompute": recompute, "attention": attention},
        "parallelism": {"tp": tp, "pp": pp, "dp": dp, "cp": cp, "zero_stage": zero_stage,
                        "schedule": schedule, "virtual_stages": virtual_stages},
    })


def test_model_states_are_2_4_12_bytes_per_parameter_without_sharding():
    # bf16 weights, fp32 main gradients (Megatron-LM reduces in fp32 by default), fp32 master + Adam moments
    s = scenario("gpt3-1.3b")
    params = s.model.params
    b = memory.per_gpu_memory(s)
    assert (b.weights_bytes, b.gradients_bytes, b.optimizer_bytes) == (2 * params, 4 * params, 12 * params)


def test_bf16_gradient_reduction_gives_zero_paper_2_2_12():
    data = scenario("gpt3-1.3b").model_dump(mode="json")
    data["parallelism"]["grad_reduce_dtype"] = "bf16"
    s = config.from_dict(data)
    b = memory.per_gpu_memory(s)
    assert b.gradients_bytes == 2 * s.model.params  # Rajbhandari et al. 2020


@pytest.mark.parametrize("stage, sharded", [(0, ()), (1, ("optimizer",)), (2, ("optimizer", "gradients")),
                                            (3, ("optimizer", "gradients", "weights"))])
def test_zero_stages_shard_states_over_data_parallel_ranks(stage, sharded):
    base = memory.per_gpu_memory(scenario(gpus=8, dp=8, zero_stage=0))
    b = memory.per_gpu_memory(scenario(gpus=8, dp=8, zero_stage=stage))
    for part in ("weights", "gradients", "optimizer"):
        expected = getattr(base, f"{part}_bytes") / (8 if part in sharded else 1)
        assert getattr(b, f"{part}_bytes") == pytest.approx(expected)


def test_pipeline_stages_hold_all_parameters_exactly_once_for_untied_embeddings():
    spec = model.preset("llama2-7b")
    total = sum(memory.stage_params(spec, tp=1, pp=4, stage=i) for i in range(4))
    assert total == spec.params


def test_tensor_parallel_ranks_hold_one_tp_th_of_the_matrices():
    spec = model.preset("gpt3-175b")
    h = spec.hidden
    per_rank = memory.layer_params_per_rank(spec, 8)
    assert per_rank == pytest.approx(12 * h * h / 8, rel=0.002)   # 12h^2 of matrices, biases/norms negligible


def _gpt(tp=1, sp=True, recompute="none", attention="naive", s=2048, b=1):
    return model.preset("gpt3-175b"), Shard(seq_len=s, micro_batch=b, tp=tp, sequence_parallel=sp,
                                             recompute=recompute, attention=attention)


def test_activations_without_parallelism_match_korthikanti_eq1():
    spec, shard = _gpt()
    s, b, h, a = 2048, 1, 12288, 96
    assert memory.layer_activation_bytes(spec, shard) == pytest.approx(s * b * h * (34 + 5 * a * s / h))


def test_activations_with_tensor_parallel_match_korthikanti_eq2():
    spec, shard = _gpt(tp=8, sp=False)
    s, b, h, a, t = 2048, 1, 12288, 96, 8
    expected = s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    assert memory.layer_activation_bytes(spec, shard) == pytest.approx(expected)


def test_activations_with_tensor_and_sequence_parallel_match_korthikanti_eq4():
    spec, shard = _gpt(tp=8, sp=True)
    s, b, h, a, t = 2048, 1, 12288, 96, 8
    assert memory.layer_activation_bytes(spec, shard) == pytest.approx(s * b * h / t * (34 + 5 * a * s / h))


def test_selective_recompute_and_flash_attention_drop_the_score_term():
    s, b, h, t = 2048, 2, 12288, 8
    for recompute, attention in (("selective", "naive"), ("none", "flash"), ("selective", "flash")):
        spec, shard = _gpt(tp=t, recompute=recompute, attention=attention, b=b)
        assert memory.layer_activation_bytes(spec, shard) == pytest.approx(34 * s * b * h / t)


def test_full_recompute_keeps_only_the_layer_input():
    s, b, h = 2048, 1, 12288
    spec, shard = _gpt(tp=1, recompute="full")
    assert memory.layer_activation_bytes(spec, shard) == 2 * s * b * h
    spec, shard = _gpt(tp=8, sp=True, recompute="full")
    assert memory.layer_activation_bytes(spec, shard) == pytest.approx(2 * s * b * h / 8)


def test_context_parallel_divides_stored_activations_by_cp():
    spec = model.preset("llama3-8b")
    one = memory.layer_activation_bytes(spec, Shard(seq_len=32768, micro_batch=1, cp=1))
    four = memory.layer_activation_bytes(spec, Shard(seq_len=32768, micro_batch=1, cp=4))
    assert four == pytest.approx(one / 4)


def test_1f1b_stage_i_holds_pp_minus_i_microbatches_and_gpipe_all():
    assert [len(memory.in_flight_chunks("1f1b", 8, 1, 64, i)) for i in range(8)] == [8, 7, 6, 5, 4, 3, 2, 1]
    assert [len(memory.in_flight_chunks("1f1b", 8, 1, 3, i)) for i in (0, 6)] == [3, 2]
    assert len(memory.in_flight_chunks("gpipe", 8, 1, 64, 5)) == 64


def test_interleaved_first_stage_matches_korthikanti_interleaving_factor():
    # Korthikanti et al. 2022, section 4.2.3: the first stage of the interleaved schedule holds
    # L * (1 + (p - 1) / (p * m)) layers' activations, m = model chunks per rank
    spec = model.preset("gpt3-175b")
    shard = Shard(seq_len=2048, micro_batch=1, tp=8, recompute="selective")
    p, v, L = 8, 3, 96
    per_layer = 34 * 2048 * 12288 / 8
    held = memory.stage_activation_bytes(spec, shard, "1f1b", p, v, 64, stage=0)
    embedding_masks = memory.embedding_activation_bytes(spec, shard) * sum(
        1 for c in memory.in_flight_chunks("1f1b", p, v, 64, 0) if c == 0)
    assert held - embedding_masks == pytest.approx(L * (1 + (p - 1) / (p * v)) * per_layer)


def test_last_stage_carries_the_fp32_logits_of_one_microbatch():
    spec = model.preset("gpt3-1.3b")
    shard = Shard(seq_len=2048, micro_batch=1, tp=2)
    last = memory.stage_activation_bytes(spec, shard, "1f1b", 4, 1, 16, stage=3)
    layers = 24 // 4
    expected_logits = 4 * 2048 * 50257 / 2
    assert last - layers * memory.layer_activation_bytes(spec, shard) == pytest.approx(
        expected_logits, rel=0.15)   # plus the norm and projection inputs, 2 * 2 * s * h / t


def test_worst_stage_is_the_largest_and_rows_add_up_to_total():
    s = scenario("gpt3-2.7b", gpus=4, pp=4, batch=32)
    worst = memory.per_gpu_memory(s)
    stages = [memory.per_gpu_memory(s, i) for i in range(4)]
    assert worst.total_bytes == max(b.total_bytes for b in stages)
    assert sum(value for _, value in worst.rows()) == pytest.approx(worst.total_bytes)


def test_bundled_default_scenario_fits_on_h100():
    breakdown = memory.check_fits(config.load())
    assert breakdown.total_bytes < config.load().cluster.gpu.hbm_capacity


def test_zero3_materialises_two_layers_of_weights_and_one_of_gradients_whatever_the_depth():
    # FSDP gathers one unit (a transformer layer, or the embedding where larger) at a time and prefetches the next:
    # the transient full parameters do not grow with the number of layers. A GPT layer has 12 h^2 + 13 h
    # parameters; with a 1,000-token vocabulary the layer is the largest unit.
    def zero3_extra(layers):
        data = scenario("gpt3-1.3b", gpus=8, dp=8, zero_stage=3).model_dump(mode="json")
        data["model"] = {"layers": layers, "hidden": 1024, "heads": 16, "vocab": 1000}
        zero3 = config.from_dict(data)
        data["parallelism"]["zero_stage"] = 1
        zero1 = config.from_dict(data)
        return memory.per_gpu_memory(zero3).workspace_bytes - memory.per_gpu_memory(zero1).workspace_bytes

    h = 1024
    layer = 12 * h * h + 13 * h
    assert zero3_extra(8) == pytest.approx(layer * (2 + 2 + 4))   # two bf16 copies of the weights, one fp32 gradient
    assert zero3_extra(48) == zero3_extra(8)


def test_a_model_without_dropout_stores_no_dropout_masks():
    # Korthikanti's 34 sbh per layer holds two 1-byte masks (2 sbh) and the embedding one (sbh, first stage)
    data = scenario("llama2-7b", seq_len=1024).model_dump(mode="json")
    shard = Shard(seq_len=1024, micro_batch=1)
    spec = config.from_dict(data).model
    with_dropout = spec.model_copy(update={"dropout": True})
    tokens, h = 1024, spec.hidden
    assert memory.layer_activation_bytes(with_dropout, shard) - memory.layer_activation_bytes(spec, shard) \
        == 2 * tokens * h
    assert memory.embedding_activation_bytes(spec, shard) == 0
    assert memory.embedding_activation_bytes(with_dropout, shard) == tokens * h


def test_fp8_training_stores_gemm_inputs_in_one_byte():
    # GPT layer, no TP: bf16 keeps 34 sbh (Korthikanti eq. 1 without the scores); fp8 stores the QKV, MLP and
    # down-projection inputs in 1 byte (h + h + 4h elements per token saved one byte each) and adds a 1-byte
    # copy of the attention output (h): 34 - 6 + 1 = 29 bytes per token and hidden unit.
    spec = model.preset("gpt3-1.3b")
    tokens, h = 2048, spec.hidden
    bf16 = memory.layer_activation_bytes(spec, Shard(seq_len=2048, micro_batch=1, precision="bf16"))
    fp8 = memory.layer_activation_bytes(spec, Shard(seq_len=2048, micro_batch=1, precision="fp8"))
    assert bf16 == 34 * tokens * h
    assert fp8 == 29 * tokens * h


# ---- activation offloading (Megatron-Core cpu_offloading_num_layers) ----------------------------------------------

def _offloaded(layers: int, recompute="none", pp=1, gpus=8, dp=8, model_name="llama3-8b", virtual_stages=1):
    return config.from_dict({
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": gpus, "nodes": 1},
        "model": model_name,
        "training": {"seq_len": 8192, "global_batch_size": 16 * dp, "micro_batch_size": 1,
                     "activation_recompute": recompute, "activation_offload_layers": layers},
        "parallelism": {"tp": 1, "pp": pp, "dp": dp, "zero_stage": 3, "virtual_stages": virtual_stages},
    })


@pytest.mark.parametrize("offload", [1, 8, 16, 31])
def test_offloading_n_layers_removes_exactly_their_saved_activations(offload):
    # closed form: the peak keeps the last L - n layers' activations (the first n wait in host memory); model
    # states and workspace do not move
    base, off = memory.per_gpu_memory(_offloaded(0)), memory.per_gpu_memory(_offloaded(offload))
    s = _offloaded(offload)
    per_layer = memory.layer_activation_bytes(s.model, Shard(seq_len=8192, micro_batch=1))
    assert base.activations_bytes - off.activations_bytes == pytest.approx(offload * per_layer, rel=1e-12)
    assert (off.weights_bytes, off.gradients_bytes, off.optimizer_bytes, off.workspace_bytes) == (
        base.weights_bytes, base.gradients_bytes, base.optimizer_bytes, base.workspace_bytes)
    # what stays is the output layer's and the resident layers'
    assert off.activations_bytes > (32 - offload) * per_layer


@pytest.mark.parametrize(("layers", "recompute", "pp", "virtual", "words"), [
    (32, "none", 1, 1, "fewer than the model's 32"),
    (4, "selective", 1, 1, "activation_recompute: none"),
    (4, "full", 1, 1, "activation_recompute: none"),
    (4, "none", 2, 1, "pp: 1"),
])
def test_offloading_outside_megatron_cores_limits_is_a_scenario_error(layers, recompute, pp, virtual, words):
    from simcluster.core.errors import ScenarioError
    with pytest.raises(ScenarioError) as caught:
        _offloaded(layers, recompute=recompute, pp=pp, dp=8 // pp, virtual_stages=virtual)
    assert caught.value.field == "training.activation_offload_layers"
    assert words in str(caught.value)


@pytest.mark.parametrize("value", [True, -1, "4", 2.5])
def test_offload_layers_must_be_a_non_negative_integer(value):
    from simcluster.core.errors import ScenarioError
    with pytest.raises(ScenarioError) as caught:
        _offloaded(value)
    assert caught.value.field == "training.activation_offload_layers"


def test_offloading_counts_dense_and_moe_layers_by_their_own_activations():
    # DeepSeek-V3's first 3 layers are dense, the rest MoE: offloading 3 layers removes 3 dense layers' worth,
    # offloading 5 removes those and 2 MoE layers' worth
    def peak(offload):
        return memory.per_gpu_memory(config.from_dict({
            "cluster": {"gpu": "b200", "gpus_per_node": 8, "nodes": 1}, "model": "deepseek-v3",
            "training": {"seq_len": 4096, "global_batch_size": 8, "micro_batch_size": 1,
                         "activation_offload_layers": offload},
            "parallelism": {"tp": 1, "pp": 1, "dp": 8, "ep": 8, "zero_stage": 3}})).activations_bytes
    from simcluster.workload.moe import busiest_rank_load
    spec = model.preset("deepseek-v3")
    shard = Shard(seq_len=4096, micro_batch=1)
    dense = memory.layer_activation_bytes(spec, shard)
    moe_layer = memory.moe_layer_activation_bytes(spec, shard, 8, 1, busiest_rank_load(spec.moe, 8, 8 * 4096))
    assert dense != pytest.approx(moe_layer, rel=0.01)
    assert peak(0) - peak(3) == pytest.approx(3 * dense, rel=1e-9)
    assert peak(0) - peak(5) == pytest.approx(3 * dense + 2 * moe_layer, rel=1e-9)


def _torchtitan(logits_memory="torch_fp32", tp=1, pp=1, dp=8, micro_batch=2, batch=32, cross_entropy="unfused"):
    return config.from_dict({
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": tp * pp * dp, "nodes": 1}, "model": "llama3-8b",
        "training": {"seq_len": 4096, "global_batch_size": batch, "micro_batch_size": micro_batch,
                     "activation_recompute": "full", "logits_memory": logits_memory, "cross_entropy": cross_entropy},
        # torchtitan keeps no deferred output-layer wgrads (a Megatron-Core option), nor its Megatron twin here
        "parallelism": {"tp": tp, "pp": pp, "dp": dp, "zero_stage": 3 if pp == 1 else 1,
                        "defer_embedding_wgrad": False}})


@pytest.mark.parametrize(("tp", "fp32_tensors"), [(1, 2), (2, 3), (8, 3)])
def test_torch_cross_entropy_backward_holds_two_or_three_more_fp32_logit_tensors(tp, fp32_tensors):
    # closed form: tp = 1, aten's nll_loss_backward (zeros) and log_softmax backward (result) beside the saved
    # log-softmax; tp > 1, DTensor's loss_parallel: zeros, exp(x) and their sum. Megatron: the 16-bit logits.
    spec = model.preset("llama3-8b")
    shard = Shard(seq_len=4096, micro_batch=2, tp=tp)
    n_logits = 2 * 4096 * 128256 / tp
    assert memory.loss_transient_bytes(spec, shard, "torch_fp32") == fp32_tensors * 4 * n_logits
    assert memory.loss_transient_bytes(spec, shard) == 2 * n_logits


def test_torch_fp32_logits_add_their_loss_backward_to_the_peak_and_nothing_else():
    torch_fp32, megatron = (memory.per_gpu_memory(_torchtitan(kind)) for kind in ("torch_fp32", "megatron"))
    n_logits = 2 * 4096 * 128256
    assert torch_fp32.workspace_bytes - megatron.workspace_bytes == pytest.approx((8 - 2) * n_logits)
    assert (torch_fp32.weights_bytes, torch_fp32.activations_bytes) == (megatron.weights_bytes,
                                                                         megatron.activations_bytes)


def test_torchtitans_output_projection_saves_its_input_gathered_over_sequence_parallel_ranks():
    spec = model.preset("llama3-8b")
    shard = Shard(seq_len=4096, micro_batch=2, tp=8)
    gathered_extra = 2 * (2 * 4096) * 4096 * (1 - 1 / 8)   # e * tokens * h, less the shard Megatron saves
    assert (memory.output_activation_bytes(spec, shard, "torch_fp32") - memory.output_activation_bytes(spec, shard)
            == pytest.approx(gathered_extra))


@pytest.mark.parametrize("pp", [2, 4])
def test_torch_pipelining_keeps_every_microbatchs_fp32_logits_on_the_last_stage(pp):
    # torch.distributed.pipelining's forward_one_chunk appends each output to output_chunks until the step ends
    microbatches = 8
    held = {kind: [memory.per_gpu_memory(_torchtitan(kind, pp=pp, dp=8 // pp, batch=2 * microbatches * 8 // pp),
                                         stage).activations_bytes for stage in (0, pp - 1)]
            for kind in ("torch_fp32", "megatron")}
    n_logits = 2 * 4096 * 128256    # tp = 1: the output projection's input is the same either way
    assert held["torch_fp32"][0] == held["megatron"][0]                        # only the last stage
    assert held["torch_fp32"][1] - held["megatron"][1] == pytest.approx(microbatches * 4 * n_logits)


def test_torch_fp32_logits_with_the_fused_loss_is_a_scenario_error():
    from simcluster.core.errors import ScenarioError
    with pytest.raises(ScenarioError) as caught:
        _torchtitan(cross_entropy="fused")
    assert caught.value.field == "training.logits_memory"
