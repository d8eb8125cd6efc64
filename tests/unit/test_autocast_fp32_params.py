"""fp32 parameters under torch.autocast (``training.autocast_fp32_params``, workload/autocast_params.py): one cast
kernel per linear tensor and microbatch each way, counted by hand for a GPT-2 layer (four linears with biases:
flash-attention's Wqkv, out_proj, fc1, fc2)."""

import pytest

from simcluster.parallel import plan
from simcluster.spec import config
from simcluster.spec.config import ScenarioError
from simcluster.workload import autocast_params
from simcluster.workload.ops import layer_ops, output_ops, shard_for

SCENARIO = "dao2023-gpt3-1.3b-2k-8-a100"


def _scenario(**training):
    data = config.load(SCENARIO).model_dump(mode="json")
    data["training"].update(training)
    return config.from_dict(data)


def _named(ops, name):
    return [op for op in ops if op.name == name]


def test_each_linear_tensor_is_cast_forward_and_its_gradient_back():
    s = _scenario(autocast_fp32_params=True)
    h = s.model.hidden
    ops = layer_ops(s.model, shard_for(s))
    forward = _named(ops["forward"], autocast_params.FORWARD_OP)
    backward = _named(ops["backward_weight"], autocast_params.BACKWARD_OP)
    # weights 3h^2 + h^2 + 4h^2 + 4h^2, biases 3h + h + 4h + h; no norm parameter is cast
    elements = sorted([3 * h * h, h * h, 4 * h * h, 4 * h * h, 3 * h, h, 4 * h, h])
    for casts in (forward, backward):
        assert sorted(op.flop for op in casts) == elements
        assert sum(op.hbm_bytes for op in casts) == (4 + 2) * (12 * h * h + 9 * h)
    assert not _named(ops["backward_input"], autocast_params.BACKWARD_OP)


def test_without_the_key_nothing_is_cast():
    s = _scenario(autocast_fp32_params=False)
    ops = layer_ops(s.model, shard_for(s))
    names = {op.name for phase in ops.values() for op in phase}
    assert not names & {autocast_params.FORWARD_OP, autocast_params.BACKWARD_OP}
    out = output_ops(s.model, shard_for(s))
    assert not {op.name for phase in out.values() for op in phase} & {autocast_params.FORWARD_OP}


def test_the_output_layer_casts_its_tied_weight_once_each_way():
    s = _scenario(autocast_fp32_params=True)
    m = s.model
    out = output_ops(m, shard_for(s))
    for phase, name in (("forward", autocast_params.FORWARD_OP), ("backward_weight", autocast_params.BACKWARD_OP)):
        (cast,) = _named(out[phase], name)
        assert cast.hbm_bytes == 6 * m.hidden * m.vocab


def test_the_accumulation_reads_an_fp32_gradient():
    # zero_stage 1 (the ZeroRedundancyOptimizer rows): every microbatch adds; read the new gradient, read and write
    # the fp32 main gradient: 2 + 8 bytes a parameter, 4 + 8 once autograd has cast the gradient to fp32
    assert shard_for(_scenario(autocast_fp32_params=False)).grad_accumulation_bytes == 10.0
    assert shard_for(_scenario(autocast_fp32_params=True)).grad_accumulation_bytes == 12.0


def test_fp8_runs_are_refused():
    data = config.load(SCENARIO).model_dump(mode="json")
    data["cluster"]["gpu"] = "h100-sxm"   # on the scenario's A100 the GPU refuses fp8 first (training.precision)
    data["training"].update(autocast_fp32_params=True, precision="fp8")
    with pytest.raises(ScenarioError) as err:
        config.from_dict(data)
    assert "training.autocast_fp32_params" in str(err.value)


def test_the_sharded_optimizer_gathers_fp32_parameters():
    def chunk(flag):
        return plan.plan(_scenario(autocast_fp32_params=flag), lambda op, group, size: 0.0).chunks[0]

    assert chunk(True).param_bytes == pytest.approx(2 * chunk(False).param_bytes, rel=1e-12)   # 4 bytes, not 2


@pytest.mark.parametrize("optimizer", ["adam", "adam_precision_aware"])
def test_optimizers_with_a_16_bit_model_copy_are_refused(optimizer):
    # Megatron-Core's optimizers keep 16-bit model weights and fp32 masters and copy into the former: no fp32
    # parameters for autocast to cast
    with pytest.raises(ScenarioError) as err:
        _scenario(autocast_fp32_params=True, optimizer=optimizer)
    assert "training.autocast_fp32_params" in str(err.value)


def test_fp16_autocast_is_accepted():
    assert _scenario(autocast_fp32_params=True, precision="fp16").training.autocast_fp32_params


def test_the_accumulated_grad_is_fp32_whatever_the_reduction_width():
    # .grad has the fp32 parameter's dtype: a bf16 reduction on the wire does not make the add 2 + 2 x 2 bytes
    data = _scenario(autocast_fp32_params=True).model_dump(mode="json")
    data["parallelism"]["grad_reduce_dtype"] = "bf16"
    assert shard_for(config.from_dict(data)).grad_accumulation_bytes == 12.0


def test_a_checkpoint_holds_fp32_parameters_and_two_moments():
    from simcluster.outcomes import reliability
    s = _scenario(autocast_fp32_params=True)
    assert reliability.checkpoint_bytes(s) == pytest.approx((4 + 8) * s.model.params)        # no master copy
    assert reliability.checkpoint_bytes(_scenario(autocast_fp32_params=False)) == pytest.approx(14 * s.model.params)
