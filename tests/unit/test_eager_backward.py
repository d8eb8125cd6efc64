"""Eager PyTorch backward kernels of llm-foundry's MPT layer (workload/eager_backward.py) against closed forms.

Per token and layer, with 16-bit activations (e = 2 bytes), hidden h, MHA (q = kv = h), MLP 4h, tp = 1:
- autograd (``layer_backward: eager``): the four bias reductions read the output gradient of Wqkv (3h), out_proj
  (h), up (4h) and down (h): 2 x 9h = 18h bytes; the two LayerNorm weight passes read dy and x: 2 x 2 x 2h = 8h.
- the Triton FlashAttention wrapper (``attention: flash_triton``): zero the fp32 dq accumulator (4h), read O and dO
  (4h), copy dq_accum into dq (4h read + 2h written), concatenate dq, dk, dv into dqkv (6h read + 6h written): 26h.
Together 52h bytes a token and layer, in 10 kernels; nothing for the fused stacks' defaults.
"""

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.spec import config
from simcluster.workload import eager_backward, ops
from simcluster.workload.kernels import hbm_fraction, stream_time

H, SEQ, MICRO = 2048, 2048, 4
TOKENS = SEQ * MICRO


def _scenario(parallelism=None, model=None, **training):
    return config.from_dict(_data(parallelism, model, **training))


def _data(parallelism=None, model=None, **training):
    return {
        "name": "mpt-1b-eager",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "nic": "connectx-7",
                    "topology": "nvswitch-node"},
        "model": {"name": "mpt-1b", "layers": 24, "hidden": H, "heads": 16, "ffn_hidden": 4 * H, "vocab": 50368,
                  "dropout": False, "max_seq_len": SEQ, **(model or {})},
        # llm-foundry's optimizer, so not Megatron-Core's stack: its fused default has no bias reductions of its own
        # (eager_backward.megatron_autograd_biases; tests/unit/test_megatron_bias_grads.py)
        "training": {"seq_len": SEQ, "global_batch_size": 8 * MICRO, "micro_batch_size": MICRO, "precision": "bf16",
                     "optimizer": "decoupled_adamw", **training},
        "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": 3, "sequence_parallel": False,
                        **(parallelism or {})},
    }


def _layer(parallelism=None, **training):
    scenario = _scenario(parallelism, **training)
    return ops.layer_ops(scenario.model, ops.shard_for(scenario)), scenario


def _added(**training):
    """The backward ops a setting adds over the fused defaults (by name), and the bytes they move."""
    base, _ = _layer()
    layer, _ = _layer(**training)
    names = {op.name for op in base["backward_input"]}
    added = [op for op in layer["backward_input"] if op.name not in names]
    return added, sum(op.hbm_bytes for op in added)


def test_autograd_kernels_move_26h_bytes_a_token():
    added, hbm = _added(layer_backward="eager")
    assert len(added) == 6
    small = 2 * (3 * H + H + 4 * H + H) + 2 * 2 * (2 * H)   # the biases and the norms' weights written, once
    assert hbm == pytest.approx(TOKENS * 26 * H + small)


def test_triton_wrapper_kernels_move_26h_bytes_a_token():
    added, hbm = _added(attention="flash_triton")
    assert [op.name for op in added] == ["triton_dq_zero", "triton_do_o_dot", "triton_dq_copy", "qkv_split_backward"]
    rows = TOKENS * 16 * eager_backward.ROW_STATISTIC_BYTES   # the fp32 delta per query row and head
    assert hbm == pytest.approx(TOKENS * 26 * H + rows)


def test_mpt_layer_gets_both_and_the_defaults_get_none():
    base, scenario = _layer()
    layer, _ = _layer(attention="flash_triton", layer_backward="eager")
    assert scenario.training.layer_backward == "fused"
    assert len(layer["backward_input"]) == len(base["backward_input"]) + 10
    extra = sum(op.hbm_bytes for op in layer["backward_input"]) - sum(op.hbm_bytes for op in base["backward_input"])
    assert extra / TOKENS == pytest.approx(52 * H, rel=0.01)
    for phase in ("forward", "backward_weight", "recompute"):   # backward-only kernels
        assert [op.name for op in layer[phase]] == [op.name for op in base[phase]]


def test_no_bias_kernels_without_biases_and_one_norm_weight_for_rmsnorm():
    model = _scenario().model.model_copy(update={"bias": False, "norm": "rmsnorm"})
    kernels = eager_backward.autograd_kernels(model, TOKENS, TOKENS, {"qkv": 3 * H}, 2)
    assert [name for name, _, _ in kernels] == ["mlp_norm_weight_grad", "attn_norm_weight_grad"]
    assert kernels[0][2] == pytest.approx(2 * TOKENS * H * 2 + H * 2)


def test_tensor_parallel_splits_the_column_parallel_biases_only():
    model = _scenario().model
    assert eager_backward.linear_output_widths(model, 4, 3 * H // 4 // 3, 3 * H // 4 // 3) == {
        "qkv": 3 * H // 4, "attn_out": H, "mlp_up": H, "mlp_down": H}


def test_they_are_bandwidth_bound_on_h100():
    layer, scenario = _layer(attention="flash_triton", layer_backward="eager")
    gpu = scenario.cluster.gpu
    eager = [op for op in layer["backward_input"]
             if op.name.endswith("_grad") or op.name.startswith(("triton_", "qkv_split"))]
    assert len(eager) == 10
    hbm_s = sum(op.hbm_bytes for op in eager) / (gpu.hbm_bandwidth * hbm_fraction())
    assert stream_time(eager, gpu, "bf16").device_s == pytest.approx(hbm_s, rel=1e-9)


# NumParams of llm-foundry's benchmark table (scripts/train/benchmarking/README.md, sequence 2048): they count the
# learned 2048 x d position table, 9 d biases a layer and the LayerNorm biases, which is what makes the bias
# reductions real in these runs.
PUBLISHED_NUM_PARAMS = {"mpt-1b-64-h100": 1_315_950_592, "mpt-7b-8-h100": 6_658_859_008,
                        "mpt-70b-64-h100": 64_862_437_376}


@pytest.mark.parametrize("name", PUBLISHED_NUM_PARAMS)
def test_mpt_scenarios_have_the_biases_the_published_parameter_count_has(name):
    scenario = config.load(name)
    assert scenario.training.layer_backward == "eager" and scenario.training.attention == "flash_triton"
    assert scenario.model.linear_biases
    assert scenario.model.params == PUBLISHED_NUM_PARAMS[name]
    without = scenario.model.model_copy(update={"bias": False})
    assert scenario.model.params - without.params == 9 * scenario.model.hidden * scenario.model.layers


def test_bad_layer_backward_is_refused_naming_the_field():
    with pytest.raises(ScenarioError, match="training.layer_backward"):
        _scenario(layer_backward="sometimes")


@pytest.mark.parametrize("sequence_parallel", [True, False])
def test_row_parallel_biases_reduce_the_sequence_parallel_tokens(sequence_parallel):
    """tp 4: the column-parallel biases (QKV 3h/4, MLP up h on a rank) reduce the gradient of all the tokens; the
    row-parallel ones (attention output, MLP down, h wide) are added after the reduce-scatter under sequence
    parallelism (Megatron-Core RowParallelLinear), so reduce tokens/4 rows; without it, after the all-reduce, all
    tokens. Bytes: rows x width x 2 read + width x 2 written."""
    layer, _ = _layer({"tp": 4, "dp": 2, "sequence_parallel": sequence_parallel}, layer_backward="eager")
    grads = {op.name: op.hbm_bytes for op in layer["backward_input"] if op.name.endswith("_bias_grad")}
    row_tokens = TOKENS / 4 if sequence_parallel else TOKENS
    assert grads == pytest.approx({
        "qkv_bias_grad": TOKENS * 3 * H // 4 * 2 + 3 * H // 4 * 2, "mlp_up_bias_grad": TOKENS * H * 2 + H * 2,
        "attn_out_bias_grad": row_tokens * H * 2 + H * 2, "mlp_down_bias_grad": row_tokens * H * 2 + H * 2}, rel=1e-12)


MOE = {"experts": 8, "top_k": 2, "ffn_hidden": 2 * H}


def test_eager_bias_gradients_of_an_moe_model_are_refused(cli, write_scenario):
    """The eager MLP bias kernels are the dense MLP's (model.ffn): an MoE model with biases is refused naming the
    field, in one line, exit 2; without biases (norm weights only) it is accepted."""
    with pytest.raises(ScenarioError, match=r"training\.layer_backward"):
        _scenario(model={"moe": MOE}, layer_backward="eager")
    assert _scenario(model={"moe": MOE, "bias": False}, layer_backward="eager").training.layer_backward == "eager"
    assert _scenario(model={"moe": MOE}).model.linear_biases
    code, out, err = cli("run", write_scenario(_data(model={"moe": MOE}, layer_backward="eager")))
    assert code == 2 and "training.layer_backward" in err and len(err.strip().splitlines()) == 1, err
