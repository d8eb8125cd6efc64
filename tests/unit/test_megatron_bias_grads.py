"""The bias gradients Megatron reduces by kernels of their own under ``layer_backward: fused``
(workload/eager_backward.py ``megatron_autograd_biases``; docs/calibration/round-32.md "Round 32: the A100 Megatron rows
of Sea AI Lab's papers"), against closed forms of the source's structure.

Megatron-Core builds the attention output projection and both MLP linears with ``skip_bias_add=True``
(megatron/core/transformer/mlp.py): Transformer Engine returns the bias and Megatron adds it in the bias-GELU and the
bias-dropout-add, whose autograd sums the [tokens, width] gradient to the bias: one reduction kernel each, reading the
output gradient once (2 B an element at 16 bits) and writing the bias. The QKV linear keeps its bias in the GEMM
(BGRADB). Megatron-LM's 2022-23 local layer also reduces the QKV bias (``grad_output.sum(dim=0)``). Per layer and
microbatch at tp 1 with hidden h, MLP 4h, MHA: Transformer Engine's layer reads tokens x (h + 4h + h) x 2 B, the
local layer tokens x (3h + h + 4h + h) x 2 B. The Megatron-DeepSpeed layer (``pipeline_engine: deepspeed``) reduces
the same four as the local layer, whatever the attention kernel (round 33; its source below).
"""

import pytest
import yaml

from simcluster.spec import config
from simcluster.workload import eager_backward, ops

E = 2   # 16-bit gradients


def _bias_ops(name):
    scenario = config.load(name)
    layer = ops.layer_ops(scenario.model, ops.shard_for(scenario))
    found = [op for op in layer["backward_input"] if op.name.endswith("_bias_grad")]
    # one kernel a bias: a reduction charged twice (here and in autograd_kernels) would hide in a dict
    assert len({op.name for op in found}) == len(found), [op.name for op in found]
    assert not [op for ops_ in (layer["forward"], layer["backward_weight"]) for op in ops_
                if op.name.endswith("_bias_grad")]   # in the activation-gradient pass only (Zero Bubble's B)
    return {op.name: op for op in found}, scenario


def _closed_form(scenario, widths):
    """Bytes of each named reduction: tokens x width x 2 B read (the row-parallel ones on the sequence-parallel
    share), the bias written."""
    t, p = scenario.training, scenario.parallelism
    tokens = t.seq_len * t.micro_batch_size
    sp_tokens = tokens / p.tp if p.sequence_parallel else tokens
    return {f"{name}_bias_grad": ((sp_tokens if name in ("attn_out", "mlp_down") else tokens) * width + width) * E
            for name, width in widths.items()}


def test_transformer_engine_layer_reduces_the_three_skip_bias_add_biases():
    # the vocabpar 4B layer: tp 1, hidden 3072, MLP 12288, 2048 tokens a microbatch
    found, scenario = _bias_ops("vocabpar2024-1f1b-4b-8-a100-s2048-v32k")
    h = scenario.model.hidden
    expected = _closed_form(scenario, {"attn_out": h, "mlp_up": 4 * h, "mlp_down": h})
    assert {name: op.hbm_bytes for name, op in found.items()} == pytest.approx(expected)
    assert sum(expected.values()) == pytest.approx((2048 * 6 * h + 6 * h) * E)   # 75.5 MB
    assert all(op.kind == "memory" for op in found.values())


def test_megatron_lm_2022_local_layer_reduces_the_qkv_bias_too():
    # Zero Bubble's 1.5B layer (Megatron-LM's legacy local layer, unfused attention): 6 x 1024 tokens, hidden 2304
    found, scenario = _bias_ops("zerobubble2024-1f1b-1.5b-8-a100-m24")
    h = scenario.model.hidden
    expected = _closed_form(scenario, {"qkv": 3 * h, "attn_out": h, "mlp_up": 4 * h, "mlp_down": h})
    assert {name: op.hbm_bytes for name, op in found.items()} == pytest.approx(expected)


def test_sequence_parallel_row_parallel_biases_reduce_the_local_tokens():
    # NeMo's GPT-3 175B (tp 4, sequence parallel): the projections' biases added after the reduce-scatter
    found, scenario = _bias_ops("nemo2409-gpt3-175b-128-h100-bf16")
    p, h = scenario.parallelism, scenario.model.hidden
    assert p.sequence_parallel and p.tp > 1
    expected = _closed_form(scenario, {"attn_out": h, "mlp_up": scenario.model.ffn // p.tp, "mlp_down": h})
    assert {name: op.hbm_bytes for name, op in found.items()} == pytest.approx(expected)


def test_swiglu_fc1_bias_is_both_halves_of_the_gated_output():
    # FlagPerf's Megatron-Core 0.6 run with Megatron-LM's default biases on a SwiGLU MLP (tp 2, sequence parallel):
    # fc1 is one column-parallel linear of 2 x ffn outputs (gate and up), split over tp, its [tokens, 2 ffn / tp]
    # gradient summed by bias_swiglu_impl's autograd (or the plain broadcast add with the fusion off)
    found, scenario = _bias_ops("flagperf-llama3-8b-8-h100-bf16")
    p, m = scenario.parallelism, scenario.model
    assert m.mlp == "swiglu" and p.tp == 2 and p.sequence_parallel
    expected = _closed_form(scenario, {"attn_out": m.hidden, "mlp_up": 2 * 14336 // 2, "mlp_down": m.hidden})
    assert {name: op.hbm_bytes for name, op in found.items()} == pytest.approx(expected)


@pytest.mark.parametrize("name", ["nemo2409-llama31-8b-8-h100-bf16",   # no biases
                                  "megatron-8.3b-a100-node"])          # eager: autograd_kernels has them already
def test_nothing_added_without_biases_or_beside_the_eager_set(name):
    scenario = config.load(name)
    t = scenario.training
    assert eager_backward.megatron_autograd_biases(scenario.model, scenario.megatron_core, t.layer_backward,
                                                   t.attention, t.mlp_activation) == ()
    found, _ = _bias_ops(name)
    eager = t.layer_backward == "eager" and scenario.model.linear_biases
    assert sorted(found) == (sorted(f"{n}_bias_grad" for n in ("qkv", "attn_out", "mlp_up", "mlp_down"))
                             if eager else [])


def test_the_mlp_biases_by_who_adds_them():
    """Megatron's MLP adds both biases itself (two reductions); TE's TransformerLayer keeps LayerNormMLP's fc1 bias
    in the module and gets fc2's back (``return_bias=not self.parallel_attention_mlp``) for its bias-dropout-add
    (one); flash-attention's FusedMLP computes both in GEMM epilogues (``DGELU_BGRAD``, ``linear_bias_wgrad``:
    none). Off Megatron's stacks nothing is added."""
    model = config.load("vocabpar2024-1f1b-4b-8-a100-s2048-v32k").model
    by_activation = {a: eager_backward.megatron_autograd_biases(model, True, "fused", "flash", a)
                     for a in ("separate", "layernorm_mlp", "epilogue")}
    assert by_activation == {"separate": ("attn_out", "mlp_up", "mlp_down"), "layernorm_mlp": ("attn_out", "mlp_down"),
                             "epilogue": ("attn_out",)}
    assert eager_backward.megatron_autograd_biases(model, False, "fused", "flash", "separate") == ()


def test_moe_experts_add_none_but_the_attention_projection_keeps_its_own():
    dense = config.load("vocabpar2024-1f1b-4b-8-a100-s2048-v32k").model
    moe = dense.model_copy(update={"moe": config.load("mcore-mixtral-8x7b-64-h100").model.moe})
    assert moe.linear_biases and moe.moe is not None
    assert eager_backward.megatron_autograd_biases(moe, True, "fused", "flash", "separate") == ("attn_out",)
    assert eager_backward.megatron_autograd_biases(moe, True, "fused", "naive", "separate") == ("qkv", "attn_out")


# The Megatron-DeepSpeed layer (MT-NLG 530B, BLOOM 176B and its prequel: ``pipeline_engine: deepspeed``). Source:
# megatron/model/transformer.py (bigscience-workshop/Megatron-DeepSpeed @ 06dc2d7f and 4989bcde): ``query_key_value``
# is a ColumnParallelLinear built without skip_bias_add; ``dense``, ``dense_h_to_4h`` and ``dense_4h_to_h`` with
# ``skip_bias_add=True``; the MLP adds fc1's bias in ``bias_gelu_impl`` (fused_bias_gelu.py, ``GeLUFunction.backward``
# returns ``tmp, tmp``: the full [s, b, ffn/tp] gradient for the bias) and the layer the projections' in
# ``bias_dropout_add_func(attention_output, attention_bias.expand_as(residual), residual, self.hidden_dropout)`` and
# the same with ``mlp_bias``: the expand's backward sums [s, b, h] to [h]. megatron/mpu/layers.py (@ 119a0d2d, and
# microsoft/Megatron-DeepSpeed @ 1619965d) ``ColumnParallelLinear.forward``: ``bias = self.bias if not
# self.skip_bias_add else None; output_parallel = F.linear(input_parallel, self.weight, bias)``; Microsoft's later
# layer (megatron/core/tensor_parallel/layers.py @ 1de4f542) ``output = output + bias`` and ``grad_bias =
# grad_output.sum(dim=0)``. So four reductions a layer, none inside a GEMM or the jit-scripted bias-dropout-add.
DEEPSPEED_ROWS = ["bigscience-bloom-176b-384-a100", "smith2022-mtnlg-530b-280-a100"]


@pytest.mark.parametrize("name", DEEPSPEED_ROWS)
def test_megatron_deepspeed_rows_reduce_all_four_biases_once(name):
    # the bundled rows run ``layer_backward: eager`` (apex's norm kernels), whose autograd_kernels charge the four
    found, scenario = _bias_ops(name)
    p, m = scenario.parallelism, scenario.model
    assert p.pipeline_engine == "deepspeed" and scenario.training.layer_backward == "eager" and not p.sequence_parallel
    expected = _closed_form(scenario, {"qkv": 3 * m.hidden // p.tp, "attn_out": m.hidden,
                                       "mlp_up": 4 * m.hidden // p.tp, "mlp_down": m.hidden})
    assert {name_: op.hbm_bytes for name_, op in found.items()} == pytest.approx(expected)


@pytest.mark.parametrize("attention", ["naive", "flash"])
def test_megatron_deepspeed_layer_keeps_the_four_under_fused_norms(attention):
    """With the norms' weight gradients fused (``layer_backward: fused``, the key's default) the Megatron-DeepSpeed
    layer still reduces its four biases, the QKV one too whatever the attention kernel (its ColumnParallelLinear adds
    the bias outside the GEMM); Megatron-Core's layer, under the same attention, three or (the local layer) four."""
    data = yaml.safe_load(config.resolve_path("bigscience-bloom-176b-384-a100").read_text())
    data["training"].update(layer_backward="fused", attention=attention)
    deepspeed = config.from_dict(data)
    eager, _ = _bias_ops("bigscience-bloom-176b-384-a100")
    layer = ops.layer_ops(deepspeed.model, ops.shard_for(deepspeed))
    fused = {op.name: op for op in layer["backward_input"] if op.name.endswith("_bias_grad")}
    assert len(fused) == 4 and not [op for op in layer["backward_input"] if "norm_weight_grad" in op.name]
    assert {n: op.hbm_bytes for n, op in fused.items()} == pytest.approx({n: op.hbm_bytes for n, op in eager.items()})
    t = deepspeed.training
    core = eager_backward.megatron_autograd_biases(deepspeed.model, True, "fused", attention, t.mlp_activation)
    assert len(core) == (4 if attention == "naive" else 3)
