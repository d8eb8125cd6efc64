"""What PyTorch-native training stacks run that Megatron-LM / Transformer Engine do not, against closed forms from
their source:

- torchao's dynamic tensorwise float8 (workload.torchao_float8): torchao's roofline (torchao/testing/float8/
  roofline_utils.py, "tensorwise") counts an abs-max read (2 B) and a cast reading 2 B and writing both float8
  layouts (1 + 1 B) per input or output-gradient element, and per weight element 2 + (2 + 1) in the forward and
  2 + 1 in the backward, every call;
- torchtitan's separate projections (training.projections: separate): wq/wk/wv and w1/w3 one GEMM each, FLOP
  unchanged, their input gradients summed by a kernel reading each partial and writing the sum;
- Composer's DecoupledAdamW (training.optimizer: decoupled_adamw): eight unfused fp32 passes, 80 B a parameter.
"""

from __future__ import annotations

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.parallel.plan import optimizer_time_s
from simcluster.spec import config, hardware
from simcluster.spec.model import TransformerSpec
from simcluster.workload import composer_adamw, kernels, torchao_float8
from simcluster.workload.ops import Shard, layer_ops

MODEL = TransformerSpec(layers=2, hidden=4096, heads=32, kv_heads=8, ffn_hidden=14336, vocab=128256, mlp="swiglu",
                        norm="rmsnorm", position="rope", dropout=False)
H100 = hardware.gpu("h100-sxm")


def _shard(**kw) -> Shard:
    return Shard(seq_len=8192, micro_batch=1, **{"precision": "fp8", **kw})


def _cast(shard: Shard, phase: str) -> float:
    (cast,) = [op for op in layer_ops(MODEL, shard)[phase] if op.name == "fp8_cast"]
    return cast.hbm_bytes


def test_torchao_tensorwise_counts_torchaos_roofline_bytes():
    assert torchao_float8.cast_bytes_per_element("torchao_tensorwise") == 2 + (2 + 1 + 1)
    assert torchao_float8.weight_cast_bytes(1.0) == (2 + (2 + 1), 2 + 1)
    delayed, torchao = _shard(), _shard(fp8_recipe="torchao_tensorwise")
    h, q, kv, ffn = 4096, 4096, 1024, 14336
    weights = h * (q + 2 * kv) + q * h + h * 2 * ffn + ffn * h
    for phase, weight_bytes in (("forward", 5 * weights), ("backward_input", 3 * weights)):
        # the elements cast (the op's flop count; delayed scaling's bytes on Hopper are counted to the letter)
        (elements,) = [op.flop for op in layer_ops(MODEL, delayed)[phase] if op.name == "fp8_cast"]
        assert _cast(torchao, phase) == pytest.approx(6 * elements + weight_bytes)
    # a full recompute repeats the forward's casts, weights included
    full = _shard(fp8_recipe="torchao_tensorwise", recompute="full")
    (recast,) = [op for op in layer_ops(MODEL, full)["recompute"] if op.name == "fp8_cast"]
    assert recast.hbm_bytes == _cast(torchao, "forward")


def test_separate_projections_keep_flop_and_add_the_gradient_sums():
    fused, separate = (layer_ops(MODEL, Shard(seq_len=8192, micro_batch=1, projections=p))
                       for p in ("fused", "separate"))
    for phase in fused:
        assert sum(op.flop for op in separate[phase] if op.kind == "gemm") == pytest.approx(
            sum(op.flop for op in fused[phase] if op.kind == "gemm"))
    assert sum(op.name == "qkv" for op in separate["forward"]) == 3
    assert sum(op.name == "mlp_up" for op in separate["backward_weight"]) == 2
    tokens_h_bytes = 8192 * 4096 * 2
    # (the residual stream's two sums a layer run either way: ops.residual_gradient_sum)
    sums = {op.name: op.hbm_bytes for op in separate["backward_input"]
            if op.name.endswith("_grad_sum") and "residual" not in op.name}
    assert sums == {"qkv_grad_sum": 4 * tokens_h_bytes, "mlp_up_grad_sum": 3 * tokens_h_bytes}
    assert not any(op.name.endswith("_grad_sum") and "residual" not in op.name
                   for ops in fused.values() for op in ops)


def test_decoupled_adamw_is_eight_unfused_fp32_passes():
    clip = 4 * (1 + 2)   # clip_grad_norm_'s vector_norm (read) and grad.mul_ (read, write), fp32
    adam = 4 * (2 + 3 + 2 + 3 + 2 + 2 + 2 + 4)   # 80: the eight Adam kernels' fp32 reads and writes
    assert sum(op.hbm_bytes for op in composer_adamw.step_ops(1.0, 1, 0.0)) == adam + clip
    assert sum(op.hbm_bytes for op in composer_adamw.step_ops(1.0, 1, 0.0, weight_decay=True)) == 88 + clip
    params = 1e9  # memory-bound: 80 B a parameter and FSDP's clipping, 12 (norm read 4, rescale read + write 8)
    unfused = optimizer_time_s(params, H100, "bf16", optimizer="decoupled_adamw")
    # one tensor: 8 Adam kernels and clipping's 2, each with the stream's gap (parallel.fsdp_runtime's pieces)
    assert unfused == pytest.approx((80 + 12) * params / (H100.hbm_bandwidth * kernels.hbm_fraction())
                                    + 10 * kernels.host_model().kernel_gap_s, rel=1e-9)
    pieces = optimizer_time_s(params, H100, "bf16", optimizer="decoupled_adamw", tensors=100)
    assert pieces - unfused == pytest.approx(99 * 10 * kernels.host_model().kernel_gap_s, rel=1e-6)


def test_scenarios_run_their_stack():
    titan = config.load("torchtitan-llama31-70b-256-h100-fp8").training
    assert (titan.fp8_recipe, titan.projections) == ("torchao_tensorwise", "separate")
    assert config.load("mpt-7b-8-h100").training.optimizer == "decoupled_adamw"
    megatron = config.load("megatron-177b-h100").training
    assert (megatron.fp8_recipe, megatron.projections, megatron.optimizer) == ("delayed", "fused", "adam")


@pytest.mark.parametrize(("training", "field"), [({"projections": "split"}, "projections"),
                                                 ({"optimizer": "sgd"}, "optimizer"),
                                                 ({"fp8_recipe": "torchao_tensorwise"}, "fp8_recipe")])
def test_bad_options_are_refused_naming_the_field(training, field):
    data = {"name": "x", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1},
            "model": {"layers": 2, "hidden": 1024, "heads": 8, "vocab": 50368},
            "training": {"global_batch_size": 8, **training}, "parallelism": {"dp": 8}}
    with pytest.raises(ScenarioError, match=field):
        config.from_dict(data)


def test_torchao_float8_is_refused_on_moe_layers():
    data = {"name": "x", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1}, "model": "mixtral-8x7b",
            "training": {"global_batch_size": 8, "precision": "fp8", "fp8_recipe": "torchao_tensorwise"},
            "parallelism": {"dp": 8}}
    with pytest.raises(ScenarioError, match="grouped experts"):
        config.from_dict(data)
