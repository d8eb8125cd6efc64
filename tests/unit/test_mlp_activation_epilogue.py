"""The GELU in the GEMM epilogues (``training.mlp_activation: epilogue``): flash-attention's FusedMLP
(flash_attn/ops/fused_dense.py FusedMLPFunc, heuristic 0): fc1 with cuBLASLt GELU_AUX_BIAS writes the GELU output and
the pre-activation, fc2's dgrad with DGELU_BGRAD reads the pre-activation and writes the GELU's input gradient. Counted
by hand against the separate GELU kernels (forward reads x and writes y, backward reads x and dy and writes dx)."""

import pytest

from simcluster.spec import config
from simcluster.spec.config import ScenarioError
from simcluster.workload.ops import layer_ops, shard_for

SCENARIO = "dao2023-gpt3-1.3b-2k-8-a100"


def _scenario(**training):
    data = config.load(SCENARIO).model_dump(mode="json")
    data["training"].update(training)
    return config.from_dict(data)


def _layer(activation):
    s = _scenario(mlp_activation=activation)
    return s, shard_for(s), layer_ops(s.model, shard_for(s))


def _named(ops, name):
    return [op for op in ops if op.name == name]


def test_no_activation_kernel_and_one_more_16_bit_tensor_in_each_gemm():
    s, shard, fused = _layer("epilogue")
    _, _, separate = _layer("separate")
    pre_act = shard.tokens * s.model.ffn * 2          # the [tokens, 4h] pre-activation in bf16
    for phase in ("forward", "backward_input", "backward_weight", "recompute"):
        assert not _named(fused[phase], "mlp_act")
    assert len(_named(separate["forward"], "mlp_act")) == len(_named(separate["backward_input"], "mlp_act")) == 1
    (up_fused,), (up_sep,) = _named(fused["forward"], "mlp_up"), _named(separate["forward"], "mlp_up")
    (down_fused,), (down_sep,) = _named(fused["backward_input"], "mlp_down"), _named(separate["backward_input"],
                                                                                       "mlp_down")
    assert up_fused.hbm_bytes - up_sep.hbm_bytes == pre_act                # fc1 writes the aux tensor too
    assert down_fused.hbm_bytes - down_sep.hbm_bytes == pre_act            # fc2's dgrad reads it back
    assert (up_fused.flop, down_fused.flop) == (up_sep.flop, down_sep.flop)
    # the layer moves 3 tensors of that size fewer: forward x read + y write (2) and backward x, dy read + dx write
    # (3) leave with the kernels, the two GEMMs add one each
    moved = {name: sum(op.hbm_bytes for phase in ops.values() for op in phase) for name, ops in
             (("fused", fused), ("separate", separate))}
    assert moved["separate"] - moved["fused"] == pytest.approx(3 * pre_act, rel=1e-12)


def test_the_epilogue_makes_the_layer_faster():
    from simcluster.workload import kernels
    s, _, fused = _layer("epilogue")
    _, _, separate = _layer("separate")
    gpu = s.cluster.gpu

    def total(ops):
        return sum(kernels.ops_time_s(ops[phase], gpu, "bf16") for phase in ("forward", "backward_input"))

    act = sum(kernels.op_time_s(op, gpu, "bf16") for phase in ("forward", "backward_input")
              for op in _named(separate[phase], "mlp_act"))
    # at most the activation kernels' time is saved (equal, to rounding, when the GEMMs stay compute-bound)
    assert 0 < total(separate) - total(fused) <= act * (1 + 1e-9)


@pytest.mark.parametrize("change", [{"model": {"mlp": "swiglu"}}, {"training": {"precision": "fp8"}}])
def test_refused_outside_a_16_or_32_bit_gelu_mlp(change):
    data = config.load(SCENARIO).model_dump(mode="json")
    data["training"]["mlp_activation"] = "epilogue"
    data["training"]["autocast_fp32_params"] = False
    for section, values in change.items():
        data[section].update(values)
    if change.get("training", {}).get("precision") == "fp8":
        data["cluster"]["gpu"] = "h100-sxm"
    with pytest.raises(ScenarioError) as err:
        config.from_dict(data)
    assert "training.mlp_activation" in str(err.value)


def test_the_default_keeps_the_separate_kernels():
    data = config.load(SCENARIO).model_dump(mode="json")
    del data["training"]["mlp_activation"]
    assert config.from_dict(data).training.mlp_activation == "separate"
