"""torchao's float8 all-gather for FSDP2 (``training.fp8_param_gather: true`` with ``fp8_recipe: torchao_tensorwise``
on torchtitan's FSDP2, ``optimizer: torch_adamw``; workload/torchao_float8.py), against closed forms written out
from torchao's source (pytorch/ao torchao/float8/fsdp_utils.py ``WeightWithDynamicFloat8CastTensor``,
float8_linear.py, float8_ops.py ``preprocess_addmm``, float8_utils.py of late 2024):

- the all-gather moves 1 byte per float8-linear weight element (``fsdp_pre_all_gather`` returns the uint8 data),
  the embedding, norms and output layer 2;
- the forward casts no weight (the gathered tensor is a Float8Tensor), a full recompute neither; the backward's
  data-gradient GEMM copies the gathered weight column-major (1 byte read, 1 written);
- per weight and gather on the fp32 shard, eagerly: abs (4 + 4), max (4), 4 scalar scale kernels and one amax
  all-reduce, then mul (4 + 4), clamp (4 + 4), .to(float8) (4 + 1); with precompute only the last three, plus one
  foreach norm, 3 small kernels and one all-reduce a step;
- the unsharded float8 weights held at 1 byte: two layers in flight at zero_stage 3 (pp 1), every weight of the
  stage at zero_stage 1 (the 405B scenario's FSDP2 under pipelining).
"""

from __future__ import annotations

import copy

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.parallel import memory, plan
from simcluster.spec import config
from simcluster.spec.model import TransformerSpec
from simcluster.workload import torchao_float8
from simcluster.workload.ops import Shard, layer_ops

MODEL = TransformerSpec(layers=2, hidden=4096, heads=32, kv_heads=8, ffn_hidden=14336, vocab=128256, mlp="swiglu",
                        norm="rmsnorm", position="rope", dropout=False)
# Llama 3 70B: hidden 8192, 8 KV heads of 128, FFN 28672; wq, wk, wv, wo, w1, w2, w3 per layer
H70, KV70, FFN70 = 8192, 8 * 128, 28672
LAYER_WEIGHTS_70B = H70 * H70 + 2 * H70 * KV70 + H70 * H70 + 3 * H70 * FFN70
TT70 = "torchtitan-llama31-70b-256-h100-fp8"
TT405 = "torchtitan-llama31-405b-512-h100-fp8"


def _with(name: str, **training):
    d = copy.deepcopy(config.load(name).model_dump(mode="json"))
    d["training"].update(training)
    return config.from_dict(d)


def _chunk(scenario):
    return plan.plan(scenario, lambda op, group, size: 0.0).chunks[0]


def _cast(shard: Shard, phase: str) -> float:
    (cast,) = [op for op in layer_ops(MODEL, shard)[phase] if op.name == "fp8_cast"]
    return cast.hbm_bytes


def test_gathered_float8_weights_skip_the_forward_cast_and_copy_column_major_in_the_backward():
    assert torchao_float8.weight_cast_bytes(1.0, gathered=True) == (0.0, 1 + 1)
    kw = {"seq_len": 8192, "micro_batch": 1, "precision": "fp8", "fp8_recipe": "torchao_tensorwise"}
    cast_only, gathered = Shard(**kw), Shard(**kw, fp8_gathered_weights=True)
    h, q, kv, ffn = 4096, 4096, 1024, 14336
    weights = h * (q + 2 * kv) + q * h + h * 2 * ffn + ffn * h
    assert _cast(cast_only, "forward") - _cast(gathered, "forward") == pytest.approx(5 * weights)   # 2 + (2 + 1)
    assert _cast(cast_only, "backward_input") - _cast(gathered, "backward_input") == pytest.approx(
        (2 + 1 - 2) * weights)
    full = Shard(**kw, fp8_gathered_weights=True, recompute="full")
    (recast,) = [op for op in layer_ops(MODEL, full)["recompute"] if op.name == "fp8_cast"]
    assert recast.hbm_bytes == _cast(gathered, "forward")


def test_all_gather_moves_one_byte_per_float8_linear_weight_element():
    """70B, tp 8: each FSDP gather of the chunk carries 80 layers' float8-linear weights at 1 B instead of 2; the
    bytes a step are that per gather times the gathers (forward, and the backward's re-gathers but the root's and
    last block's, which stay gathered)."""
    off, on = _chunk(config.load(TT70)), _chunk(_with(TT70, fp8_param_gather=True))
    per_rank = 80 * LAYER_WEIGHTS_70B / 8
    assert off.param_bytes - on.param_bytes == pytest.approx((2 - 1) * per_rank, rel=1e-12)
    gathers = 2                                        # one forward gather and one backward re-gather per layer
    assert torchao_float8.gather_bytes(per_rank, gathers) == pytest.approx(1 * per_rank * gathers)
    assert _chunk(config.load(TT70)).param_bytes == off.param_bytes   # the bundled scenario is unchanged


def test_shard_cast_kernels_and_bytes_are_torchaos_eager_ops():
    weights, gathers = 7 * 80, 2 * 80 - 1
    calls = weights * gathers
    assert torchao_float8.shard_cast_kernels(weights, gathers, precompute=False) == {
        "kernels": (2 + 4 + 3) * calls, "all_reduces": calls}
    assert torchao_float8.shard_cast_kernels(weights, gathers, precompute=True, foreach_launches=5) == {
        "kernels": 3 * calls + 5 + 3, "all_reduces": 1}
    assert torchao_float8.shard_cast_bytes_per_element(precompute=False) == (4 + 4) + 4 + (4 + 4) + (4 + 4) + (4 + 1)
    assert torchao_float8.shard_cast_bytes_per_element(precompute=True) == (4 + 4) + (4 + 4) + (4 + 1)


def test_gathered_units_are_held_at_one_byte():
    off, on = (memory.per_gpu_memory(s) for s in (config.load(TT70), _with(TT70, fp8_param_gather=True)))
    assert off.workspace_bytes - on.workspace_bytes == pytest.approx(2 * LAYER_WEIGHTS_70B / 8 * (2 - 1), rel=1e-12)
    assert (off.weights_bytes, off.activations_bytes) == (on.weights_bytes, on.activations_bytes)
    # 405B, zero_stage 1 (FSDP2 under pipelining keeps the stage gathered): 126 layers over 8 stages, the last
    # holds 15 (memory.chunk_layers); its float8-linear weights held at 1 B
    off, on = (memory.per_gpu_memory(s, stage=7) for s in (config.load(TT405), _with(TT405, fp8_param_gather=True)))
    h, kv, ffn = 16384, 8 * 128, 53248
    layer = 2 * h * h + 2 * h * kv + 3 * h * ffn
    p405 = config.load(TT405).parallelism
    layers = memory.chunk_layers(config.load(TT405).model, 8, 1, p405.layers_per_stage)[0][7]
    assert off.weights_bytes - on.weights_bytes == pytest.approx(layers * layer / 8 * (2 - 1), rel=1e-12)


def test_the_option_is_refused_where_torchao_does_not_gather_in_float8():
    with pytest.raises(ScenarioError, match="training.fp8_param_gather"):
        _with(TT70, fp8_param_gather=True, optimizer="decoupled_adamw")
    with pytest.raises(ScenarioError, match="training.fp8_param_gather"):
        _with(TT70, fp8_param_gather=True, fp8_recipe="delayed")
    with pytest.raises(ScenarioError, match="training.fp8_param_gather"):
        _with(TT70, fp8_param_gather=True, precision="bf16", fp8_recipe="delayed")
    # the bundled torchtitan scenarios leave it off (the December 2024 setting is not stated)
    assert not torchao_float8.fsdp_float8_all_gather(config.load(TT70).training, config.load(TT70).parallelism)
