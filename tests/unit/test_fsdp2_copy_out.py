"""FSDP2's all-gather copy-out (parallel/fsdp_runtime.py ``copy_out_ops``): after each all-gather,
``foreach_all_gather_copy_out`` (torch/distributed/_composable/fsdp/_fsdp_collectives.py, stored @ 01d66d21) runs
``torch.split_with_sizes_copy(all_gather_output.view(world_size, -1), all_gather_input_split_sizes, dim=1, out=out)``
on the current (compute) stream: one kernel reading the gathered unit and writing it again. FSDP1 gathers into its
flat parameter and copies nothing out."""

from __future__ import annotations

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.parallel import fsdp_runtime, plan
from simcluster.spec import config
from simcluster.workload import kernels

TITAN = "torchtitan-llama31-405b-128-h100-bf16"   # FSDP2 16 x TP 8, pp 1, bf16 gathers
FMS = "fmsfsdp-llama2-34b-96-h100"               # FSDP1 (FullyShardedDataParallel) with torch's AdamW


def _llama3_405b_layer_params_per_rank(tp: int) -> int:
    """One Llama 3.1 405B layer on a tensor-parallel rank, by hand: hidden 16384, 128 query heads of 128, 8 key/value
    heads, SwiGLU ffn 53248; wq, wo split 1/tp, wk, wv over the local key/value heads, w1, w2, w3 1/tp, the two
    RMSNorm weights replicated."""
    hidden, kv, ffn = 16384, 8 * 128, 53248
    return (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * ffn) // tp + 2 * hidden


def _plan(scenario, monkeypatch=None, off: bool = False, drop: str | None = None):
    """The plan's one chunk; ``off``: neither FSDP2 copy charged; ``drop``: that one ``fsdp_runtime`` op list empty."""
    if off:
        monkeypatch.setattr(fsdp_runtime, "copies_out", lambda s: False)
    if drop:
        monkeypatch.setattr(fsdp_runtime, drop, lambda *args: [])
    return plan.plan(scenario, lambda op, group, size: 0.0).chunks[0]


def test_one_layers_copy_out_is_a_read_and_a_write_of_its_gathered_bf16_parameters_at_the_hbm_roofline():
    """One 405B layer at tp 8 gathered in bf16: 2 x 2 B x 398.5 M parameters, one kernel, HBM-bound at the GPU's
    achievable HBM bandwidth (``kernels.hbm_fraction``)."""
    scenario = config.load(TITAN)
    gpu = scenario.cluster.gpu
    layer_bytes = 2.0 * _llama3_405b_layer_params_per_rank(8)
    (op,) = fsdp_runtime.copy_out_ops(layer_bytes, 1)
    assert op.kind == "memory" and op.flop == 0.0
    assert op.hbm_bytes == pytest.approx(2 * 2 * 398_491_648)
    compute_s, memory_s = kernels.roofline_s(op, gpu, "bf16")
    assert compute_s == 0.0
    assert memory_s == pytest.approx(op.hbm_bytes / (gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)), rel=1e-9)
    assert 0.5e-3 < memory_s < 1.0e-3   # 1.59 GB at 2-3 TB/s


def test_the_405b_row_copies_out_every_gather_forward_and_backward_on_the_compute_stream(monkeypatch):
    """pp 1: the forward gathers the 126 layers and the root (embedding, final norm, output); the backward
    re-gathers the 125 layers resharded after the forward (the last block and the root stay gathered): 127 + 125
    kernels on the compute stream, their roofline the bytes of the gathered units read and written once."""
    scenario = config.load(TITAN)
    gpu = scenario.cluster.gpu
    on, off = _plan(scenario), _plan(scenario, monkeypatch, drop="copy_out_ops")
    layer = 2.0 * _llama3_405b_layer_params_per_rank(8)
    root = 2.0 * (2 * (128256 // 8) * 16384 + 16384)   # vocab-parallel embedding and output, final norm
    bandwidth = gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)
    forward = on.forward_stream.device_s - off.forward_stream.device_s
    backward = on.backward_stream.device_s - off.backward_stream.device_s
    assert on.forward_stream.kernels - off.forward_stream.kernels == 127
    assert on.backward_stream.kernels - off.backward_stream.kernels == 125
    assert forward == pytest.approx(2 * (126 * layer + root) / bandwidth, rel=1e-6)
    assert backward == pytest.approx(2 * 125 * layer / bandwidth, rel=1e-6)


def test_an_fsdp1_run_pays_no_copy_out(monkeypatch):
    """fms-fsdp's FullyShardedDataParallel (``fsdp: fsdp1``) and Composer's FSDP1 gather into the flat parameter: no
    copy-out, no compute-stream copy-in; the same fms row read as FSDP2 (the key dropped) pays one a gather and one a
    reduce-scatter."""
    fms = config.load(FMS)
    assert fms.parallelism.fsdp == "fsdp1" and not fsdp_runtime.copies_out(fms)
    mpt = [name for name in config.bundled_names() if name.startswith("mpt-")]
    assert mpt and not any(fsdp_runtime.copies_out(config.load(name)) for name in mpt)
    as_fsdp1, unpatched = _plan(fms), _plan(fms, monkeypatch, off=True)
    assert as_fsdp1.forward_stream == unpatched.forward_stream
    assert as_fsdp1.backward_stream == unpatched.backward_stream
    data = fms.model_dump(mode="json", exclude_none=True)
    del data["parallelism"]["fsdp"]
    monkeypatch.undo()
    as_fsdp2 = _plan(config.from_dict(data))
    assert as_fsdp2.forward_stream.kernels - as_fsdp1.forward_stream.kernels == 48 + 1   # 48 layers, the root
    # the backward: FSDP2's 47 copy-outs (root and last block kept) and 49 reduce-scatter copy-ins
    assert as_fsdp2.backward_stream.kernels - as_fsdp1.backward_stream.kernels == 47 + 49


def test_the_405b_row_copies_each_units_bf16_gradients_into_the_fp32_reduce_scatter_input_on_the_compute_stream(
        monkeypatch):
    """``foreach_reduce`` (pytorch PR #129721, June 2024: on the current stream): one ``_chunk_cat`` a unit and
    microbatch, the 126 layers and the root, reading the bf16 unsharded gradients (2 B) and writing them at
    torchtitan's fp32 reduce dtype (4 B): 127 backward kernels, none in the forward."""
    scenario = config.load(TITAN)
    assert scenario.parallelism.grad_reduce_dtype == "fp32"
    gpu = scenario.cluster.gpu
    layer = _llama3_405b_layer_params_per_rank(8)
    (op,) = fsdp_runtime.reduce_scatter_copy_in_ops(layer, 1, 2, 4)
    assert op.kind == "memory" and op.flop == 0.0 and op.hbm_bytes == 6 * 398_491_648
    on, off = _plan(scenario), _plan(scenario, monkeypatch, drop="reduce_scatter_copy_in_ops")
    root = 2 * (128256 // 8) * 16384 + 16384
    bandwidth = gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)
    assert on.forward_stream == off.forward_stream
    assert on.backward_stream.kernels - off.backward_stream.kernels == 127
    assert on.backward_stream.device_s - off.backward_stream.device_s == pytest.approx(
        (2 + 4) * (126 * layer + root) / bandwidth, rel=1e-6)


def test_fsdp1_stated_keeps_only_the_root_gathered_into_the_backward():
    """FSDP1's ``_post_forward_reshard`` frees every unit but the root; torchtitan's FSDP2 keeps the last block too."""
    fms = config.load(FMS)
    data = fms.model_dump(mode="json", exclude_none=True)
    del data["parallelism"]["fsdp"]
    units = 48 + 1
    assert fsdp_runtime.units_kept_after_forward(fms, units) == 1
    assert fsdp_runtime.units_kept_after_forward(config.from_dict(data), units) == 2


def test_fsdp_key_is_refused_outside_fsdp_with_torchs_adamw():
    data = config.load(FMS).model_dump(mode="json", exclude_none=True)
    config.from_dict(data)   # valid as stated: the key is what fails
    data["parallelism"]["zero_stage"] = 1
    with pytest.raises(ScenarioError, match=r"parallelism\.fsdp"):
        config.from_dict(data)
