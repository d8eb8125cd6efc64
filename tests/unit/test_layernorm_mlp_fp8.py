"""Transformer Engine 1.x's LayerNormMLP under delayed scaling (``training.mlp_activation: layernorm_mlp``; TE's own
TransformerLayer, which NeMo's ``megatron_gpt_full_te_layer_autocast`` spec runs: MLPerf Training's GPT-3). Counted by
hand from TE 1.x's kernels against Megatron-Core's dense TE layer (fp8_recipes' docstring):

- forward: the GELU writes fc2's fp8 input itself (``activation_func(fc1_out, fp8_meta, GEMM2_INPUT, ...)``: read 2,
  write 1, where Megatron's bias_gelu writes 2) and fc2's input cast (``cast_to_fp8``, 2 + 1 with sequence
  parallelism) is not run;
- backward: ``fp8_cast_transpose_bgrad_dgelu_fused(fc2_dgrad, fc1_out)`` writes fc1's fp8 output gradient and its
  transpose (1 + 1 where dgelu wrote 2: the same bytes) and fc1's output-gradient cast-transpose (2 + 1 + 1) is not
  run; fc2's weight gradient still transposes the fp8 GELU output (``gelu_out_t``, 1 + 1);
- fc1's bias gradient stays inside LayerNormMLP in every precision (fp8: the same fused cast-transpose-bgrad-dgelu;
  16 bits: ``bgrad_dgelu_fused`` or the fc1 wgrad GEMM's ``use_bias`` epilogue, transformer_engine/pytorch/module/
  layernorm_mlp.py, TE 1.x ``_LayerNormMLP.backward``), where Megatron-Core's ``bias_gelu_impl`` leaves it to
  autograd's own reduction kernel (``eager_backward.MLP_BIAS_REDUCTIONS``): that kernel, reading fc1's [tokens,
  ffn/tp] output gradient once in bf16 and writing the bias, leaves the backward.
"""

import pytest

from simcluster.spec import config
from simcluster.spec.config import ScenarioError
from simcluster.workload import fp8_recipes, ops

ROW = "nemo2407-gpt3-175b-128-h100-fp8"  # GPT-3 175B, tp 4, sequence 2048, micro batch 1, sequence parallel
FC1_BIAS_GRAD = "mlp_up_bias_grad"  # Megatron-Core's autograd reduction of fc1's bias gradient (eager_backward)


def _fc1_bias_grad_bytes(tokens, width):
    """Closed form of the fc1 bias reduction: the [tokens, width] bf16 output gradient read once, the bias written
    (2 bytes an element; fp8 runs keep their gradients between GEMMs in bf16)."""
    return 2 * tokens * width + 2 * width


def _scenario(name=ROW, te_version=None, **training):
    data = config.load(name).model_dump(mode="json")
    data["training"].update(training)
    if te_version:
        data["parallelism"]["te_version"] = te_version
    return config.from_dict(data)


def _bytes(scenario, names):
    layer = ops.layer_ops(scenario.model, ops.shard_for(scenario))
    return {
        phase: sum(op.hbm_bytes for op in layer[phase] if op.name in names)
        for phase in ("forward", "backward_input", "backward_weight")
    }


def test_gpt3_tp4_sequence_parallel_by_hand():
    """2048 tokens, ffn 49152 / 4 = 12288 on the rank: the GELU's output is 2048 x 12288 elements. Forward: fc2's
    input cast (3 bytes an element) and one byte of the GELU's write leave; backward: fc1's output-gradient
    cast-transpose (4 bytes) leaves, and so does fc1's bias reduction (2 x 2048 x 12288 + 2 x 12288 bytes, one
    kernel); nothing else in the layer moves."""
    n = 2048 * (4 * 12288 // 4)
    separate, fused = _scenario(), _scenario(mlp_activation="layernorm_mlp")
    every = {op.name for phase in ops.layer_ops(separate.model, ops.shard_for(separate)).values() for op in phase}
    cast_before, cast_after = _bytes(separate, {fp8_recipes.CAST_OP}), _bytes(fused, {fp8_recipes.CAST_OP})
    act_before, act_after = _bytes(separate, {"mlp_act"}), _bytes(fused, {"mlp_act"})
    assert cast_before["forward"] - cast_after["forward"] == pytest.approx(3 * n, rel=1e-12)
    assert cast_before["backward_input"] - cast_after["backward_input"] == pytest.approx(4 * n, rel=1e-12)
    assert act_before["forward"] - act_after["forward"] == pytest.approx(1 * n, rel=1e-12)
    assert act_before["backward_input"] == act_after["backward_input"]  # dgelu writes 1 + 1 for its 2
    bias_before, bias_after = _bytes(separate, {FC1_BIAS_GRAD}), _bytes(fused, {FC1_BIAS_GRAD})
    assert bias_before["backward_input"] == _fc1_bias_grad_bytes(2048, 12288)
    assert bias_after == {"forward": 0, "backward_input": 0, "backward_weight": 0}
    assert bias_before["forward"] == bias_before["backward_weight"] == 0
    others = every - {fp8_recipes.CAST_OP, "mlp_act", FC1_BIAS_GRAD}
    assert _bytes(separate, others) == _bytes(fused, others)


def test_without_sequence_parallelism_the_transpose_moves_to_the_backward():
    """tp 1 (no gather): Megatron-Core cast-transposes fc2's input in the forward (4 bytes); LayerNormMLP's GELU
    writes it in fp8 and the backward transposes it (1 + 1): forward -4, backward -4 + 2 per GELU element."""
    data = config.load(ROW).model_dump(mode="json")  # the GPT-3 row at tp 1, dp 16
    data["parallelism"].update(tp=1, dp=16, sequence_parallel=False, tp_comm_overlap=False)
    separate = config.from_dict(data)
    data["training"]["mlp_activation"] = "layernorm_mlp"
    fused = config.from_dict(data)
    shard = ops.shard_for(separate)
    n = shard.tokens * separate.model.ffn
    before, after = _bytes(separate, {fp8_recipes.CAST_OP}), _bytes(fused, {fp8_recipes.CAST_OP})
    assert before["forward"] - after["forward"] == pytest.approx(4 * n, rel=1e-12)
    assert before["backward_input"] - after["backward_input"] == pytest.approx(2 * n, rel=1e-12)


def test_bf16_and_other_recipes_run_as_separate_but_for_the_fc1_bias_reduction():
    """Outside delayed scaling on Hopper the GELU and the casts are Megatron's bytes (TE's bf16 gelu reads 2 and
    writes 1 like ``bias_gelu_impl``); the one difference is fc1's bias gradient, which LayerNormMLP computes inside
    the module in every precision, so Megatron-Core's separate reduction kernel (backward, activation-gradient pass)
    is absent: the layers differ by exactly that kernel and its closed-form bytes."""
    for change in ({"precision": "bf16"}, {"fp8_recipe": "current"}):
        a, b = _scenario(te_version=2, **change), _scenario(mlp_activation="layernorm_mlp", te_version=2, **change)
        shard = ops.shard_for(a)
        separate, fused = ops.layer_ops(a.model, shard), ops.layer_ops(b.model, ops.shard_for(b))
        reductions = [op for op in separate["backward_input"] if op.name == FC1_BIAS_GRAD]
        assert len(reductions) == 1
        assert reductions[0].hbm_bytes == _fc1_bias_grad_bytes(shard.tokens, a.model.ffn // 4)
        assert all(op.name != FC1_BIAS_GRAD for phase in fused.values() for op in phase)
        without = {phase: [op for op in ops_ if op.name != FC1_BIAS_GRAD] for phase, ops_ in separate.items()}
        assert without == fused


def test_the_layer_is_faster_and_the_mlperf_rows_state_it():
    from simcluster.workload import kernels

    separate, fused = _scenario(), _scenario(mlp_activation="layernorm_mlp")
    gpu = separate.cluster.gpu

    def total(s):
        layer = ops.layer_ops(s.model, ops.shard_for(s))
        return sum(kernels.ops_time_s(layer[p], gpu, "fp8") for p in ("forward", "backward_input"))

    assert total(fused) < total(separate)
    assert config.load("mlperf31-gpt3-175b-10752-h100-azure-fp8").training.mlp_activation == "layernorm_mlp"


def test_refused_without_a_dense_gelu_mlp_naming_the_field():
    with pytest.raises(ScenarioError) as err:
        _scenario("nemo2407-llama3-8b-8-h100-fp8", mlp_activation="layernorm_mlp")  # SwiGLU
    assert "training.mlp_activation" in str(err.value)
