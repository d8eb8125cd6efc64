"""fms's RMSNorm and RoPE as eager fp32 PyTorch ops (``training.norm_kernels`` / ``rope_kernels: eager_fp32``;
workload/eager_norm_rope.py) against a count by hand from their source (docs/calibration/round-34.md "Round 34: norms
and RoPE as eager PyTorch ops"), in bf16 (2 B) and fp32 (4 B):

RMSNorm forward, ``LayerNormParameterized`` with use_high_precision_pow, per normalised element: x.float() 2 + 4,
pow 4 + 4, mean 4 (one fp32 a row out), xf * r 4 + 4, type_as 4 + 2, weight * x 2 + 2: 36 B in 6 kernels, plus
+ eps and rsqrt on the [rows, 1] fp32 statistic (4 + 4 a row each): 8 launches. Backward, autograd of that graph:
grad * weight 2 + 2, grad * x_normed 2 + 2 + 2, its sum over the tokens 2, the cast to fp32 2 + 4, grad * r 4 + 4,
grad * xf 4 + 4 + 4, its sum over the row 4, the mean's expand-divide 4 (written), pow's backward self.pow(1) copy
4 + 4, times 2 4 + 4, times grad 4 + 4 + 4, the two xf gradients summed 4 + 4 + 4, the cast back 4 + 2: 92 B in 13
kernels, plus rsqrt's backward on the rows (-0.5 * grad 8, result.pow(3) 8, their product 12): 16 launches.
RoPE (``adjusted_qk``, real form) per rotated element of q and of k: cast 2 + 4, the 2 x 2 product 4 + 8, the pair
sum 8 + 4, the cast back 4 + 2: 36 B in 4 kernels each way; per call 4 launches of no work and the frequency gather,
2 fp32 a token x head_dim read and written (16 B). Fails if a kernel or a byte is dropped or double counted, if the
weight gradient is charged twice, if the fused default moves, or if bad input passes.
"""

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.workload import eager_norm_rope
from simcluster.workload.ops import layer_ops, output_ops, shard_for

SCENARIO = "fmsfsdp-llama2-34b-96-h100"   # eager norms and RoPE stated; tp 1, micro batch 2, sequence 4096
NORM_FORWARD_ELEMENT_BYTES = (2 + 4) + (4 + 4) + 4 + (4 + 4) + (4 + 2) + (2 + 2)
NORM_FORWARD_ROW_BYTES = (4 + 4) + (4 + 4)
NORM_BACKWARD_ELEMENT_BYTES = ((2 + 2) + (2 + 2 + 2) + 2 + (2 + 4) + (4 + 4) + (4 + 4 + 4) + 4 + 4 + (4 + 4)
                               + (4 + 4) + (4 + 4 + 4) + (4 + 4 + 4) + (4 + 2))
NORM_BACKWARD_ROW_BYTES = 8 + 8 + 12
ROPE_ELEMENT_BYTES = (2 + 4) + (4 + 8) + (8 + 4) + (4 + 2)
ROPE_GATHER_BYTES = 2 * 2 * 4
# torchtitan's complex apply_rotary_emb per rotated element: cast 2 + 4, the complex64 multiply 4 + 4 (the
# frequencies a broadcast buffer), the cast back 4 + 2; backward the same three
COMPLEX_ROPE_ELEMENT_BYTES = (2 + 4) + (4 + 4) + (4 + 2)
TITAN = "torchtitan-llama31-405b-128-h100-bf16"   # tp 8 with sequence parallelism, micro batch 1, sequence 8192


def _data(**training):
    data = config.load(SCENARIO).model_dump(mode="json", exclude_none=True)
    data["training"].update(training)
    return data


def _named(ops, prefix):
    return [op for op in ops if op.name.startswith(prefix)]


def test_each_norm_runs_its_eager_ops_with_the_bytes_counted_by_hand():
    scenario = config.load(SCENARIO)
    shard = shard_for(scenario)
    m = scenario.model
    rows = 2 * 4096
    elements = rows * m.hidden
    layer = layer_ops(m, shard)
    for name in ("attn_norm", "mlp_norm"):
        forward, backward = _named(layer["forward"], name), _named(layer["backward_input"], name)
        assert len(forward) == 8 and len(backward) == 16
        assert sum(op.hbm_bytes for op in forward) == pytest.approx(
            NORM_FORWARD_ELEMENT_BYTES * elements + NORM_FORWARD_ROW_BYTES * rows)
        assert sum(op.hbm_bytes for op in backward) == pytest.approx(
            NORM_BACKWARD_ELEMENT_BYTES * elements + NORM_BACKWARD_ROW_BYTES * rows)
    # the weight gradients are among the norm's own kernels: eager_backward's second pass over dy and x is not added
    assert not [op for op in layer["backward_input"] if op.name.endswith("_weight_grad")]
    # full recompute re-runs the eager forward too; the final norm is the same class (fms's dec_norm)
    assert len(_named(layer["recompute"], "attn_norm")) == 8
    out = output_ops(m, shard)
    assert sum(op.hbm_bytes for op in _named(out["forward"], "final_norm")) == pytest.approx(
        NORM_FORWARD_ELEMENT_BYTES * elements + NORM_FORWARD_ROW_BYTES * rows)


def test_rope_runs_its_eager_ops_per_tensor_with_the_bytes_counted_by_hand():
    scenario = config.load(SCENARIO)
    m = scenario.model
    tokens = 2 * 4096
    q, k = tokens * m.heads * m.d_head, tokens * m.kv_heads * m.d_head   # GQA: k is 8 of 64 heads wide
    layer = layer_ops(m, shard_for(scenario))
    forward, backward = _named(layer["forward"], "rope"), _named(layer["backward_input"], "rope")
    assert len(forward) == 5 + 2 * 4 and len(backward) == 2 * 4
    assert sum(op.hbm_bytes for op in forward) == pytest.approx(
        ROPE_ELEMENT_BYTES * (q + k) + ROPE_GATHER_BYTES * tokens * m.d_head)
    assert sum(op.hbm_bytes for op in backward) == pytest.approx(ROPE_ELEMENT_BYTES * (q + k))


def test_the_fused_default_is_one_kernel_a_phase_and_unchanged():
    scenario = config.from_dict(_data(norm_kernels="fused", rope_kernels="fused"))
    assert config.from_dict(_data()).training.norm_kernels == "eager_fp32"
    m = scenario.model
    tokens = 2 * 4096
    layer = layer_ops(m, shard_for(scenario))
    for name in ("attn_norm", "mlp_norm"):
        (forward,), (backward,) = ([op for op in layer[phase] if op.name == name]
                                   for phase in ("forward", "backward_input"))
        assert forward.name == name and forward.hbm_bytes == pytest.approx(2 * 2 * tokens * m.hidden)
        assert backward.hbm_bytes == pytest.approx(3 * 2 * tokens * m.hidden)
    weight_grads = [op for op in layer["backward_input"] if op.name.endswith("_weight_grad")]
    assert len(weight_grads) == 2    # layer_backward eager: ATen's dgamma pass, one a norm
    (rope,) = _named(layer["forward"], "rope")
    assert rope.hbm_bytes == pytest.approx(2 * tokens * (m.heads + m.kv_heads) * m.d_head * 2)
    unset = _data()
    del unset["training"]["norm_kernels"], unset["training"]["rope_kernels"]
    assert (shard_for(config.from_dict(unset)).norm_kernels, shard_for(config.from_dict(unset)).rope_kernels) == (
        "fused", "fused")


def test_memory_keeps_the_fp32_upcast_and_the_normalised_tensor():
    """Without recompute each layer keeps 4 B + 2 B an element per norm where the fused norm keeps 2 B: 2 x 4 B x
    T x h more; full recompute keeps the layer input only, and the rebuilt layer (the workspace) grows by as much."""
    m = config.load(SCENARIO).model
    e, th = 2, 2 * 4096 * m.hidden
    assert eager_norm_rope.saved_bytes_per_element(e) == 4 + 2
    shards = {kernels: shard_for(config.from_dict(_data(norm_kernels=kernels, activation_recompute="none")))
              for kernels in ("fused", "eager_fp32")}
    assert (memory.layer_activation_bytes(m, shards["eager_fp32"]) - memory.layer_activation_bytes(m, shards["fused"])
            == pytest.approx(2 * 4 * th))
    full = {kernels: shard_for(config.from_dict(_data(norm_kernels=kernels))) for kernels in ("fused", "eager_fp32")}
    assert memory.layer_activation_bytes(m, full["eager_fp32"]) == memory.layer_activation_bytes(m, full["fused"])
    assert (memory.workspace_bytes(m, full["eager_fp32"]) - memory.workspace_bytes(m, full["fused"])
            == pytest.approx(2 * 4 * th))


@pytest.mark.parametrize(("key", "change", "field"), [
    ("norm_kernels", {"model": {"norm": "layernorm"}}, "training.norm_kernels"),
    ("norm_kernels", {"parallelism": {"tp": 2, "dp": 48, "sequence_parallel": True, "tp_comm_overlap": True,
                                      "tp_comm_overlap_impl": "async_tp"}}, "training.norm_kernels"),
    ("rope_kernels", {"parallelism": {"tp": 2, "dp": 48, "sequence_parallel": True, "tp_comm_overlap": True,
                                      "tp_comm_overlap_impl": "async_tp"}}, "training.rope_kernels"),
    ("rope_kernels", {"training": {"precision": "fp32", "logits_memory": "torch_fp32"}}, "training.rope_kernels"),
    ("rope_kernels", {"model": {"position": "learned"}}, "training.rope_kernels"),
])
def test_bad_input_names_the_key(key, change, field):
    data = _data(norm_kernels="fused", rope_kernels="fused")
    for section, values in change.items():
        data[section].update(values)
    config.from_dict(data)   # valid with fused kernels: the key is what fails
    data["training"][key] = "eager_fp32"
    with pytest.raises(ScenarioError, match=field.replace(".", r"\.")):
        config.from_dict(data)


def test_tensor_parallel_norms_run_on_the_sequence_shard_and_the_complex_rope_on_the_local_heads():
    """torchtitan's 405B BF16 row (tp 8, sequence parallel, micro batch 1: PR #481's config, round 36): each norm's
    eager ops over a rank's 8192 / 8 token rows, the RoPE over its 128 / 8 query heads
    and 8 / 8 key heads at 20 B an element each way, no per-call kernel."""
    scenario = config.load(TITAN)
    m, shard = scenario.model, shard_for(scenario)
    assert (scenario.parallelism.tp, scenario.parallelism.sequence_parallel) == (8, True)
    assert scenario.training.micro_batch_size == 1
    rows = 8192 // 8
    layer = layer_ops(m, shard)
    forward = _named(layer["forward"], "attn_norm")
    assert len(forward) == 8 and sum(op.hbm_bytes for op in forward) == pytest.approx(
        NORM_FORWARD_ELEMENT_BYTES * rows * m.hidden + NORM_FORWARD_ROW_BYTES * rows)
    tokens = 8192
    q, k = tokens * (m.heads // 8) * m.d_head, tokens * (m.kv_heads // 8) * m.d_head
    rope_forward, rope_backward = _named(layer["forward"], "rope"), _named(layer["backward_input"], "rope")
    assert len(rope_forward) == len(rope_backward) == 2 * 3
    for ops in (rope_forward, rope_backward):
        assert sum(op.hbm_bytes for op in ops) == pytest.approx(COMPLEX_ROPE_ELEMENT_BYTES * (q + k))
