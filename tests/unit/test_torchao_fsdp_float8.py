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
import functools

import pytest

from simcluster.collectives import timing
from simcluster.core.errors import ScenarioError
from simcluster.fabric import topology
from simcluster.parallel import fsdp_runtime, memory, plan
from simcluster.parallel.layout import Layout
from simcluster.spec import config
from simcluster.spec.model import TransformerSpec
from simcluster.workload import async_tp, kernels, torchao_float8
from simcluster.workload.ops import Shard, layer_ops, shard_for

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
    return _chunk_list(scenario)[0]


def _chunk_list(scenario):
    return plan.plan(scenario, functools.partial(timing.isolated_time_s, topology.from_scenario(scenario))).chunks


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
    # two units' float8 weights at 1 B instead of 2, less the backward's column-major copy of the largest weight
    # (w1 / w3: hidden x FFN / tp at 1 B), live for its one mm
    assert off.workspace_bytes - on.workspace_bytes == pytest.approx(
        2 * LAYER_WEIGHTS_70B / 8 * (2 - 1) - H70 * FFN70 / 8 * 1, rel=1e-12)
    assert (off.weights_bytes, off.activations_bytes) == (on.weights_bytes, on.activations_bytes)
    # 405B, zero_stage 1 (FSDP2 under pipelining keeps the stage gathered): 126 layers over 8 stages, the last
    # holds 15 (memory.chunk_layers); its float8-linear weights held at 1 B
    off, on = (memory.per_gpu_memory(s, stage=7) for s in (config.load(TT405), _with(TT405, fp8_param_gather=True)))
    h, kv, ffn = 16384, 8 * 128, 53248
    layer = 2 * h * h + 2 * h * kv + 3 * h * ffn
    p405 = config.load(TT405).parallelism
    layers = memory.chunk_layers(config.load(TT405).model, 8, 1, p405.layers_per_stage)[0][7]
    assert off.weights_bytes - on.weights_bytes == pytest.approx(layers * layer / 8 * (2 - 1), rel=1e-12)
    assert on.workspace_bytes - off.workspace_bytes == pytest.approx(h * ffn / 8 * 1, rel=1e-12)


def test_the_option_is_refused_where_torchao_does_not_gather_in_float8():
    with pytest.raises(ScenarioError, match="training.fp8_param_gather"):
        _with(TT70, fp8_param_gather=True, optimizer="decoupled_adamw")
    with pytest.raises(ScenarioError, match="training.fp8_param_gather"):
        _with(TT70, fp8_param_gather=True, fp8_recipe="delayed")
    with pytest.raises(ScenarioError, match="training.fp8_param_gather"):
        _with(TT70, fp8_param_gather=True, precision="bf16", fp8_recipe="delayed")
    # the bundled torchtitan scenarios leave it off (the December 2024 setting is not stated)
    assert not torchao_float8.fsdp_float8_all_gather(config.load(TT70).training, config.load(TT70).parallelism)


# ---- the shard-side casts charged (round 23, "charged in full") ------------------------------------------------

TT8 = "torchtitan-llama31-8b-8-h100-fp8-32k"


def _copy_in(scenario):
    collective_time_s = functools.partial(timing.isolated_time_s, topology.from_scenario(scenario))
    layer = layer_ops(scenario.model, shard_for(scenario))
    if scenario.parallelism.tp_comm_overlap_impl == "async_tp" and scenario.parallelism.tp_comm_overlap:
        layer = async_tp.apply(layer, scenario.parallelism.tp, scenario.training.precision)   # as the plan's layer
    return plan._float8_copy_in(scenario, Layout.of(scenario.parallelism), layer, collective_time_s), \
        collective_time_s


@pytest.mark.parametrize("precompute, kernels_per_weight, bytes_per_element", [(False, 9, 33), (True, 3, 21)])
def test_copy_in_kernels_and_bytes_per_gather(precompute, kernels_per_weight, bytes_per_element):
    """One unit's gather: 7 float8 linears (wq, wk, wv, wo, w1, w2, w3), 9 eager kernels each without precompute
    (abs, max, 4 scalar scale kernels, mul, clamp, .to), 3 with it; 33 or 21 HBM bytes a shard element."""
    shard = 1.0e6
    ops = fsdp_runtime.float8_copy_in_ops(shard, 7, precompute)
    assert len(ops) == 7 * kernels_per_weight
    assert sum(op.hbm_bytes for op in ops) == pytest.approx(bytes_per_element * shard, rel=1e-12)
    # the per-step counts of shard_cast_kernels are these per-gather ops times the gathers (all-reduces aside)
    counted = torchao_float8.shard_cast_kernels(7, 63, precompute, foreach_launches=1)
    once = (1 + torchao_float8.PRECOMPUTE_KERNELS) if precompute else 0
    assert counted["kernels"] - once == len(ops) * 63
    assert counted["all_reduces"] == (1 if precompute else 7 * 63)


def test_copy_in_charge_is_hbm_interference_plus_host_launches():
    """The compute stream pays the copy-in kernels' HBM time times its HBM-bound share (no kernel gap: they run on
    FSDP2's copy-in stream) and one host dispatch per launch, kernels and amax all-reduces alike."""
    s = config.load(TT8)
    gpu, shard, share = s.cluster.gpu, 2.0e7, 0.25
    ops = fsdp_runtime.float8_copy_in_ops(shard, 7, precompute=False)
    charge = fsdp_runtime.float8_copy_in_charge(ops, 7, share, gpu, "fp8")
    assert charge.kernels == 0
    assert charge.device_s == pytest.approx(share * 33 * shard / (gpu.hbm_bandwidth * kernels.hbm_fraction()),
                                            rel=1e-9)
    host = kernels.host_model()
    assert charge.host_bound_s() == pytest.approx((7 * 9 + 7) * host.dispatch_s * kernels.host_cpu_ratio(gpu.name))
    pre = fsdp_runtime.float8_copy_in_charge(fsdp_runtime.float8_copy_in_ops(shard, 7, True), 0, share, gpu, "fp8")
    assert pre.device_s / charge.device_s == pytest.approx(21 / 33, rel=1e-9)


def test_chain_ahead_of_a_gather_is_exposed_only_where_it_outlasts_the_compute():
    chain, gather = 2e-3, 1e-3
    # hidden: chain + gather under the unit's compute; the first gather of the block is waited for whole
    assert fsdp_runtime.float8_gather_exposed_s(chain, gather, 10e-3, 32, first_exposed=True) == chain
    assert fsdp_runtime.float8_gather_exposed_s(chain, gather, 10e-3, 31, first_exposed=False) == 0.0
    # partly hidden: what chain + gather outlast the compute, less the gather's own exposure
    assert fsdp_runtime.float8_gather_exposed_s(chain, gather, 2.5e-3, 4, first_exposed=False) == pytest.approx(
        4 * (chain + gather - 2.5e-3))
    # the gather alone already exposed: every chain adds whole
    assert fsdp_runtime.float8_gather_exposed_s(chain, 5e-3, 1e-3, 4, first_exposed=False) == pytest.approx(4 * chain)
    assert fsdp_runtime.float8_gather_exposed_s(chain, gather, 1e-3, 0, first_exposed=True) == 0.0


def test_chain_is_the_kernels_then_one_latency_bound_all_reduce_per_weight():
    s = _with(TT8, fp8_param_gather=True)
    copy_in, collective_time_s = _copy_in(s)
    group = tuple(range(8))   # FSDP over the 8 GPUs of the node (dp 8, cp 1)
    ops = fsdp_runtime.float8_copy_in_ops(memory.layer_gemm_weights_per_rank(s.model, 1) / 8, 7, False)
    assert copy_in.chain_s == pytest.approx(kernels.stream_time(ops, s.cluster.gpu, "fp8").elapsed_s()
                                            + 7 * collective_time_s("allreduce", group, 4))
    pre, _ = _copy_in(_with(TT8, fp8_param_gather=True, fp8_precompute_scale=True))
    assert pre.chain_s < copy_in.chain_s


def test_plan_charges_per_microbatch_at_zero3_and_once_a_step_under_pipelining():
    """8B, FSDP2 at zero_stage 3 (pp 1): every layer gathered forward, all but the kept last block re-gathered
    backward, each gather's charge on its phase's stream. 405B (pipelined, gathered once a step): the device's
    share on the first microbatch's forward (``first_forward_s``): 15 or 16 layers' HBM interference plus the first
    unit's chain (the others hide behind a layer's forward)."""
    s = _with(TT8, fp8_param_gather=True)
    copy_in, _ = _copy_in(s)
    assert copy_in.gathers(s, 32, True, True) == (32, 31)
    s405 = _with(TT405, fp8_param_gather=True)
    copy_in, _ = _copy_in(s405)
    assert copy_in.gathers(s405, 16, False, True) is None
    chunks = _chunk_list(s405)
    for chunk in chunks:
        assert chunk.first_forward_s == pytest.approx(chunk.layers * copy_in.charge_fwd.device_s + copy_in.chain_s,
                                                      rel=1e-9)
    assert all(chunk.first_forward_s == 0.0 for chunk in _chunk_list(config.load(TT405)))


def test_precompute_adds_one_fused_amax_pass_and_one_all_reduce_a_step():
    """``precompute_float8_dynamic_scale_for_fsdp`` after the optimizer: _foreach_norm reads every float8 shard
    (4 B an element), 3 small kernels and one all-reduce of the stage's amaxes (4 B a weight) on the FSDP group."""
    s = _with(TT8, fp8_param_gather=True, fp8_precompute_scale=True)
    copy_in, collective_time_s = _copy_in(s)
    shard = 32 * memory.layer_gemm_weights_per_rank(s.model, 1) / 8
    gpu, host = s.cluster.gpu, kernels.host_model()
    read_s = 4 * shard / (gpu.hbm_bandwidth * kernels.hbm_fraction())
    device_s = read_s + 4 * host.kernel_gap_s
    host_s = 5 * host.dispatch_s * kernels.host_cpu_ratio(gpu.name)
    assert copy_in.precompute_s(32) == pytest.approx(max(device_s, host_s) + collective_time_s(
        "allreduce", tuple(range(8)), 32 * 7 * 4), rel=1e-6)
    assert _copy_in(_with(TT8, fp8_param_gather=True))[0].precompute_s(32) == 0.0


def test_per_unit_gather_bytes_conserve_the_chunk():
    """The engine splits a chunk's gather bytes evenly over its units (engine.data_parallel.GatherBeforeUse); each
    unit's own bytes -- the bf16 root (embedding, final norm, output layer) and the layers (1 B a float8-linear
    weight, 2 B a norm weight) -- sum to the chunk's, whose even split docs/calibration.md bounds."""
    for name in (TT8, TT70):
        s = _with(name, fp8_param_gather=True)
        p, m = s.parallelism, s.model
        chunk = _chunk(s)
        gemm = memory.layer_gemm_weights_per_rank(m, p.tp)
        layer = gemm * 1 + (memory.layer_params_per_rank(m, p.tp) - gemm) * 2
        root = 2 * (2 * m.vocab * m.hidden / p.tp + m.hidden)   # untied embedding and output, final RMSNorm
        assert root + m.layers * layer == pytest.approx(chunk.param_bytes, rel=1e-12)


def test_precompute_key_is_a_bool_refused_without_the_float8_all_gather():
    with pytest.raises(ScenarioError, match="training.fp8_precompute_scale"):
        _with(TT70, fp8_precompute_scale=True)
    with pytest.raises(ScenarioError, match="training.fp8_precompute_scale"):
        _with(TT70, fp8_param_gather=True, fp8_precompute_scale="yes")
    assert not config.load(TT70).training.fp8_precompute_scale
