"""A SwiGLU run as PyTorch eager ops (``training.mlp_activation: eager``: fms's GatedLinearUnit, torchtitan's
FeedForward without torch.compile) against a count by hand from autograd's formulas, per ffn-wide element in bf16:

forward ``silu(gate)`` reads gate and writes s (2 + 2), ``s * up`` reads both and writes the product (2 + 2 + 2): 10 B
in 2 kernels, where the fused kernel reads gate and up and writes once (6 B in 1). Backward ``mul.Tensor``'s
``grad * up`` and ``grad * s`` (2 + 2 + 2 each) and ``silu_backward(ds, gate)`` (2 + 2 + 2): 18 B in 3 kernels (fused:
gate, up, dy read, two gradients written, 10 B in 1). Autograd keeps gate, s and up where the fused kernel keeps gate
and up: one ffn-wide tensor more, e x tokens x ffn a layer without recompute, in the rebuilt layer with full recompute.
Fails if a kernel or a byte is dropped, if the kept tensor is not counted, or if a GELU model passes.
"""

import pytest
from scenario_data import bundled_with_training

from simcluster.core.errors import ScenarioError
from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.workload.ops import layer_ops, shard_for

SCENARIO = "fmsfsdp-llama2-34b-96-h100"   # dense SwiGLU, tp 1, micro batch 2, sequence 4096, full recompute
E = 2
EAGER_FORWARD_BYTES = (E + E) + (E + E + E)
EAGER_BACKWARD_BYTES = 3 * (E + E + E)
FUSED_FORWARD_BYTES, FUSED_BACKWARD_BYTES = 3 * E, 5 * E


def _scenario(**training):
    return bundled_with_training(SCENARIO, **training)


def _act(ops):
    return [op for op in ops if op.name.startswith("mlp_act")]


def test_eager_swiglu_kernels_and_bytes_against_the_hand_count():
    eager, fused = _scenario(mlp_activation="eager"), _scenario(mlp_activation="separate")
    m = eager.model
    elements = 2 * 4096 * m.ffn
    layers = {name: layer_ops(m, shard_for(s)) for name, s in (("eager", eager), ("fused", fused))}
    forward, backward = _act(layers["eager"]["forward"]), _act(layers["eager"]["backward_input"])
    assert len(forward) == 2 and len(backward) == 3
    assert sum(op.hbm_bytes for op in forward) == pytest.approx(EAGER_FORWARD_BYTES * elements)
    assert sum(op.hbm_bytes for op in backward) == pytest.approx(EAGER_BACKWARD_BYTES * elements)
    (fused_forward,), (fused_backward,) = _act(layers["fused"]["forward"]), _act(layers["fused"]["backward_input"])
    assert fused_forward.hbm_bytes == pytest.approx(FUSED_FORWARD_BYTES * elements)
    assert fused_backward.hbm_bytes == pytest.approx(FUSED_BACKWARD_BYTES * elements)
    assert len(_act(layers["eager"]["recompute"])) == 2   # full recompute re-runs both forward kernels


def test_autograd_keeps_one_ffn_wide_tensor_more():
    per_layer = E * 2 * 4096 * _scenario().model.ffn
    none = {kind: shard_for(_scenario(mlp_activation=kind, activation_recompute="none"))
            for kind in ("separate", "eager")}
    m = _scenario().model
    assert (memory.layer_activation_bytes(m, none["eager"]) - memory.layer_activation_bytes(m, none["separate"])
            == pytest.approx(per_layer))
    full = {kind: shard_for(_scenario(mlp_activation=kind)) for kind in ("separate", "eager")}
    assert memory.workspace_bytes(m, full["eager"]) - memory.workspace_bytes(m, full["separate"]) == pytest.approx(
        per_layer)


def test_a_gelu_model_is_refused_naming_the_key():
    data = config.load("torchtitan-llama31-405b-128-h100-fp8").model_dump(mode="json", exclude_none=True)
    data["model"] = {**config.load("megatron-1.7b-h100").model.model_dump(mode="json", exclude_none=True)}
    assert config.from_dict(data).model.mlp == "gelu"   # valid with the fused kernel: the key is what fails
    data["training"]["mlp_activation"] = "eager"
    with pytest.raises(ScenarioError, match=r"training\.mlp_activation"):
        config.from_dict(data)
