"""Activation offload (Transformer Engine's OffloadSynchronizer schedule) and Megatron-FSDP's gradient copy,
against closed forms and published measurements (docs/calibration/round-18.md, "Round 18: Megatron-FSDP and the
activation offload on Grace")."""

import pytest

from simcluster.engine.simulation import Simulation
from simcluster.parallel import activation_offload
from simcluster.spec import config
from simcluster.workload import grad_accumulation

GB = 1e9


@pytest.mark.parametrize("layers,offloaded,layer_s,copy_s", [
    (4, 2, 1.0, 10.0), (80, 40, 0.013, 0.05), (80, 20, 0.024, 0.2), (10, 5, 1.0, 1.0), (80, 40, 0.013, 0.016)])
@pytest.mark.parametrize("backward", [False, True])
def test_stall_matches_the_queue_closed_form(layers, offloaded, layer_s, copy_s, backward):
    """With n <= L/2 every copy is issued before the first wait; copies at least as long as a layer keep the one
    offload stream busy, so the last copy ends at layer_s + n copy_s while the last waiting layer would start at
    (L - 1) layer_s: the compute waits max(0, n copy_s - (L - 2) layer_s) in all, either direction."""
    expected = max(0.0, offloaded * copy_s - (layers - 2) * layer_s)
    got = activation_offload.stall_s(layers, offloaded, layer_s, copy_s, backward)
    assert got == pytest.approx(expected, abs=1e-12)


def test_fast_copies_never_stall_and_nothing_offloaded_is_free():
    assert activation_offload.stall_s(80, 40, 0.013, 0.001, False) == 0.0
    assert activation_offload.stall_s(80, 40, 0.026, 0.001, True) == 0.0
    assert activation_offload.stall_s(80, 0, 0.013, 10.0, False) == 0.0
    with pytest.raises(ValueError):
        activation_offload.stall_s(4, 4, 1.0, 1.0, False)


def test_grace_host_link_is_the_measured_c2c_within_the_shared_lpddr5x():
    """GH200 measured (Schieffer et al. 2024): C2C 375 GB/s H2D, 297 GB/s D2H, Grace STREAM 486 GB/s; two Blackwell
    GPUs share one Grace on GB200 / GB300 (36 Grace CPUs to 72 GPUs), so 243 GB/s a GPU binds both ways."""
    for gpu in ("gb200", "gb300"):
        assert activation_offload.host_link_bandwidth(gpu, "d2h") == pytest.approx(243 * GB)
        assert activation_offload.host_link_bandwidth(gpu, "h2d") == pytest.approx(243 * GB)
    assert activation_offload.host_link_bandwidth("b200", "d2h") == pytest.approx(64 * GB)  # PCIe 5.0 x16


@pytest.mark.parametrize("name", ["nemo2511-llama3-70b-64-gb200-fp8", "nemo2511-llama3-70b-64-gb300-fp8"])
def test_the_70b_recipes_offload_hides_by_a_wide_margin(name):
    """40 (GB200) / 20 (GB300) layers of 3.9 GB: TE's schedule needs about n x 3.9 GB over (L - 2) layers of
    compute, 160 / 83 GB/s a GPU forward, half that backward, against 243 GB/s: no wait; the copies would have to
    be 1.5x (GB200) / 2.9x (GB300) slower than measured before the forward waited. The layer's forward is the plan's
    (its one chunk's forward stream over its layers, the embedding and loss included: within about 1%), and the
    plan charges no stall."""
    from simcluster.parallel import memory
    from simcluster.parallel.plan import shard_for
    s = config.load(name)
    n, layers = s.training.activation_offload_layers, s.model.layers
    layer_bytes = memory.layer_activation_bytes(s.model, shard_for(s))
    assert layer_bytes == pytest.approx(3.89 * GB, rel=0.01)
    (chunk,) = Simulation(s).plan.chunks
    assert chunk.forward_stream.stall_s == 0.0 and chunk.backward_stream.stall_s == 0.0
    fwd_s = chunk.forward_stream.elapsed_s() / layers
    assert 0.010 < fwd_s < 0.015  # about 12-13 ms on these parts (docs/calibration/round-15.md round 15)
    needed = n * layer_bytes / ((layers - 2) * fwd_s)
    assert needed < activation_offload.host_link_bandwidth(s.cluster.gpu.name, "d2h") / 1.5
    assert activation_offload.microbatch_stalls_s(s.cluster.gpu.name, layers, n, fwd_s, 2 * fwd_s, layer_bytes) == (
        0.0, 0.0)


def test_megatron_fsdp_copies_the_gradient_instead_of_adding():
    """Megatron-FSDP's ``_grad_acc`` with a sharded gradient buffer: ``main_grad.copy_(grad)``, read 2 B and write
    the main gradient's 2 B (bf16 reduction); Megatron-Core's DDP hook ``main_grad.add_(grad)`` also reads it."""
    fsdp = config.load("nemo2511-llama3-70b-64-gb200-fp8")
    assert grad_accumulation.copies_into_sharded_buffer(fsdp)
    assert grad_accumulation.charged_bytes_per_param(fsdp, fused=False) == 4.0
    ddp = config.from_dict({**fsdp.model_dump(mode="json"), "parallelism": {
        **fsdp.parallelism.model_dump(mode="json"), "zero_stage": 1, "overlap_param_gather": False,
        "suggested_communication_unit_size": None}})  # Megatron-FSDP's key, refused at ZeRO-1
    assert not grad_accumulation.copies_into_sharded_buffer(ddp)
    assert grad_accumulation.charged_bytes_per_param(ddp, fused=False) == 6.0


@pytest.mark.parametrize("link", ["nvlink-c2c-h2d", "nvlink-c2c-d2h", "grace-lpddr5x"])
def test_grace_links_are_no_nic_host_link(link):
    """The Grace parts' links live in hardware.yaml host_links, read by the offload model only: a NIC's host link
    (the pcie catalog) refuses them, and the offload reads them."""
    from pydantic import ValidationError

    from simcluster.spec import hardware
    with pytest.raises(ValidationError, match="host"):
        hardware.NicSpec(rate="400 Gb/s", host=link)
    assert hardware.host_link(link).bandwidth > 0
    assert hardware.NicSpec(rate="400 Gb/s", host="pcie-gen5").host == "pcie-gen5"
