"""Current scaling's sequence-parallel tensors on Hopper, as Transformer Engine 2.x quantizes them (round 28;
workload/fp8_recipes.py, "Gathered tensors").

A per-tensor fp8 tensor is all-gathered as its rowwise data only (``Float8CurrentScalingQuantizer.
supports_only_rowwise_all_gather`` is True; layernorm_linear.py / layernorm_mlp.py set the norm output's quantizer
``columnwise=False`` under sequence parallelism, base.py's ``grad_output_preprocess`` the gathered output
gradient's), and the weight gradient's TN GEMM makes the transpose from the gathered data (``update_usage(
columnwise_usage=True)`` -> ``tex.fp8_transpose``). So for each of a dense layer's four gathered tensors (QKV's and
fc1's inputs, the projection's and fc2's output gradients) the shard's cast reads 2 bytes and writes 1 an element,
and the backward runs one transpose reading and writing 1 byte an element of the gathered tensor (tp x the shard).
By hand for Llama 3 70B at tp 4, sequence 8192, micro batch 1: shard S = 2048 x 8192 elements, gathered 4 S.
"""

import pytest

from simcluster.spec import config
from simcluster.workload import fp8_recipes, ops

ROW = "nemo2511-llama3-70b-64-h100-fp8"   # current scaling, tp 4, sequence parallel, H100
SHARD = 8192 // 4 * 8192
FP8_OPS = (fp8_recipes.AMAX_OP, fp8_recipes.CAST_OP, fp8_recipes.TRANSPOSE_OP)


def _layer(gpu="h100-sxm", recipe="current", sequence_parallel=True, tp=4, mla=False):
    scenario = config.load(ROW)
    data = scenario.model_dump(mode="json")
    data["cluster"]["gpu"] = gpu
    data["training"]["fp8_recipe"] = recipe
    data["parallelism"]["tp"] = tp
    data["parallelism"]["dp"] = 2 * 4 // tp
    data["parallelism"]["sequence_parallel"] = sequence_parallel
    data["parallelism"]["tp_comm_overlap"] = sequence_parallel and tp > 1
    scenario = config.Scenario.model_validate(data)
    layer = ops.layer_ops(scenario.model, ops.shard_for(scenario))
    return {phase: [op for op in layer[phase] if op.name in FP8_OPS] for phase in ("forward", "backward_input")}


def test_four_transposes_of_the_gathered_tensors_in_the_backward():
    layer = _layer()
    transposes = [op for op in layer["backward_input"] if op.name == fp8_recipes.TRANSPOSE_OP]
    assert len(transposes) == 4
    for op in transposes:   # tex.fp8_transpose on the gathered tensor: 1 byte read, 1 written, 4 S elements
        assert op.flop == pytest.approx(4 * SHARD)
        assert op.hbm_bytes == pytest.approx(2 * 4 * SHARD)
    assert not [op for op in layer["forward"] if op.name == fp8_recipes.TRANSPOSE_OP]


def test_the_gathered_casts_write_rowwise_only_and_the_others_keep_their_transpose():
    """Forward: QKV's and fc1's norm-fed shards cast 2 + 1 (no amax pass, the norm computed it); the projection's
    input (8192 x 2048 = S elements too, not gathered: an amax pass before it) and fc2's keep the cast-transpose,
    2 + 1 + 1. Backward: the projection's and fc2's output-gradient shards 2 + 1 after their amax passes; QKV's and
    fc1's (full sequence, not gathered) 2 + 1 + 1. Per rank: 16 query heads and 2 of 8 KV heads of 128, ffn 7168
    (SwiGLU's fc1 2 x 7168 wide)."""
    layer = _layer()
    forward = [op for op in layer["forward"] if op.name == fp8_recipes.CAST_OP]
    backward = [op for op in layer["backward_input"] if op.name == fp8_recipes.CAST_OP]
    rowwise = [op for op in forward + backward if op.hbm_bytes == pytest.approx(3 * op.flop)]
    both = [op for op in forward + backward if op.hbm_bytes == pytest.approx(4 * op.flop)]
    assert len(rowwise) == 4 and all(op.flop == pytest.approx(SHARD) for op in rowwise)
    assert len(both) == 4
    assert sorted(op.flop for op in both) == pytest.approx(sorted(
        [SHARD, 8192 * 7168, 8192 * (2048 + 2 * 256), 8192 * 2 * 7168]))


def test_the_layer_bytes_by_hand():
    """Per layer and microbatch beyond the shard casts of round 27 (4 bytes an element everywhere): -1 byte on each
    of the 4 gathered shards, +2 x 4 S for each of their 4 transposes: +28 S bytes (470 MB)."""
    def total(layer):
        return sum(op.hbm_bytes for phase in layer.values() for op in phase)
    hopper = total(_layer())
    casts = [op for phase in _layer().values() for op in phase if op.name != fp8_recipes.TRANSPOSE_OP]
    as_before = sum(op.hbm_bytes if op.name == fp8_recipes.AMAX_OP else 4 * op.flop for op in casts)
    assert hopper - as_before == pytest.approx(4 * (-1 * SHARD) + 4 * 2 * 4 * SHARD)


@pytest.mark.parametrize(("kwargs", "why"), [
    (dict(gpu="b200"), "Blackwell's fp8 GEMMs take either layout: no transpose (efficiency.yaml gemm.fp8_any_layout)"),
    (dict(recipe="mxfp8", gpu="b200"), "MXFP8 gathers its columnwise copy"),
    (dict(sequence_parallel=False), "no all-gather without sequence parallelism"),
    (dict(tp=1, sequence_parallel=False), "tp 1: nothing gathered"),
])
def test_no_transpose_where_nothing_is_gathered_rowwise(kwargs, why):
    layer = _layer(**kwargs)
    assert not [op for phase in layer.values() for op in phase if op.name == fp8_recipes.TRANSPOSE_OP], why


def test_delayed_scaling_keeps_its_fused_op():
    """Delayed scaling on Hopper is Transformer Engine 1.x's layer to the letter (megatron_te_cast_bytes, which has
    the transposes after the gather already): one cast op a phase, no separate transpose kernels."""
    layer = _layer(recipe="delayed")
    assert [op.name for op in layer["forward"]] == [fp8_recipes.CAST_OP]
    assert [op.name for op in layer["backward_input"]] == [fp8_recipes.CAST_OP]


# MLA's gathered tensors (its output projection's gradient and its two latents): tests/unit/test_mla_fp8_casts.py
