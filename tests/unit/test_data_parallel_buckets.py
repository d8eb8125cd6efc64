"""Data-parallel traffic as Megatron-Core and NCCL run it: the parameter all-gathers move the gradient buckets'
parameters, and a ring with one GPU of its group per node is chosen at NCCL 2.18-2.21's discounted LL128 rate and
runs at LL128's 120/128 (NCCL 2.23+'s model; data/nccl.yaml protocols, "WHAT THE RUN PAYS")."""

from __future__ import annotations

import pytest

from simcluster.collectives import nccl
from simcluster.engine import simulate
from simcluster.spec import config


def _scenario(nodes=2, **parallelism):
    return config.from_dict({
        "name": "t",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": nodes, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "model": {"layers": 8, "hidden": 2048, "heads": 16, "vocab": 32000},
        "training": {"seq_len": 2048, "global_batch_size": 32, "micro_batch_size": 1, "precision": "bf16"},
        "parallelism": {"tp": 1, "pp": 1, "dp": 16, "zero_stage": 1, "overlap_param_gather": True, **parallelism},
        "network": "analytic",
    })


def test_parameter_all_gathers_use_the_gradient_buckets():
    # fp32 gradients are twice the bf16 parameters' bytes: a bucket size between the two makes one bucket of the
    # parameters but several of the gradients; Megatron-Core gathers each of its param-and-grad buckets, so the
    # step's all-gathers are as many as its reduce-scatters, and gather the parameters in equal shares
    spec = _scenario(grad_bucket_size="600 MB", grad_reduce_dtype="fp32")
    events = simulate(spec).events
    rank0 = events[events["rank"] == 0]
    gathers = rank0[rank0["name"].str.startswith("param all_gather")]
    scatters = rank0[rank0["name"].str.startswith("grad reduce_scatter")]
    assert len(scatters) > 1
    assert len(gathers) == len(scatters)
    assert gathers["bytes"].sum() == pytest.approx(scatters["bytes"].sum() / 2, rel=1e-9)


def _ring_busbw(op, n, nodes, protocol, size_bytes=1e16):
    """busbw of NCCL's predicted time at a size where the latency does not count."""
    t = nccl.estimate_s(op, "ring", protocol, size_bytes, n=n, nodes=nodes, local=max(n // nodes, 1),
                        nvlink_bytes_per_s=450e9, network_bytes_per_s=50e9)
    return size_bytes * (n - 1) / n / t


@pytest.mark.parametrize("op", ["reduce_scatter", "all_gather"])
def test_one_gpu_per_node_ring_is_priced_at_0_7_of_simple_on_ll128(op):
    # NCCL tuning.cc (2.7 to 2.21): busBw * (ppn < 2 ? 0.7 : 0.92) for Ring/LL128; Simple unchanged (the choice)
    simple = _ring_busbw(op, 96, 96, "Simple")
    assert _ring_busbw(op, 96, 96, "LL128") == pytest.approx(0.7 * simple, rel=1e-6)
    assert simple == pytest.approx(47e9, rel=1e-6)   # one 400 Gb/s NIC per rank, nccl-tests#290


def test_two_gpus_per_node_ring_keeps_ll128_at_0_92():
    simple = _ring_busbw("reduce_scatter", 192, 96, "Simple")
    assert _ring_busbw("reduce_scatter", 192, 96, "LL128") == pytest.approx(0.92 * simple, rel=1e-6)


def test_a_running_ll128_ring_moves_120_of_128_bytes_whatever_its_gpus_per_node():
    # the engine's network is calibrated ring/Simple: an LL128 ring puts 1/0.92 wire bytes per byte on it at ppn 1 and
    # 2 alike (NCCL 2.23+: busBw * 0.92 whatever ppn); the 0.7 is the price NCCL 2.18-2.21 chooses by, not a rate
    # (wire_factor takes no ppn: a run's rates never depend on it; the ring's run at ppn 1 is _ring_busbw's)
    ring_simple, ll128 = (nccl.wire_factor("ring", p, "ring") for p in ("Simple", "LL128"))
    assert ring_simple == 1.0
    assert ll128 == pytest.approx(1 / 0.92, rel=1e-12)
    assert nccl.protocol_fraction("ring", "LL128", 1.0) == nccl.protocol_fraction("ring", "LL128", 2.0) == 0.92


@pytest.mark.parametrize("name", ["nemotron4-15b-768-h100", "nemotron4-15b-1536-h100", "nemotron4-15b-2304-h100"])
def test_nemotron4_15b_buckets_are_megatron_cores_default_of_early_2024(name):
    # Megatron-Core's DDP bucket of early 2024 (the report's time): a fixed 40M parameters of the gradient buffer's
    # dtype (fp32: Megatron-LM forces accumulate_allreduce_grads_in_fp32 with bf16); r0.8's max(40M, 1M x DP) came later
    p = config.load(name).parallelism
    assert p.grad_reduce_dtype == "fp32"
    assert p.grad_bucket_size == 40e6 * 4


def test_engine_schedule_of_a_one_per_node_ll128_ring_takes_its_isolated_time():
    # the engine runs every collective on one ring/Simple-calibrated network: a ppn = 1 ring that NCCL runs with
    # LL128 must take there what it takes alone on its own (LL128, ppn = 1) calibration
    from simcluster import network
    from simcluster.collectives import timing
    from simcluster.collectives.schedule import Collective, schedule
    from simcluster.fabric import topology

    fabric = topology.from_scenario(_scenario(nodes=16, dp=16, tp=8))
    group = tuple(range(0, 128, 8))     # one GPU on each of 16 nodes
    size = 4e6
    steps = schedule(Collective(op="reduce_scatter", group=group, size_bytes=size), fabric)
    assert (steps.algorithm, steps.protocol, steps.ppn) == ("ring", "LL128", 1.0)
    alone = timing.run(Collective(op="reduce_scatter", group=group, size_bytes=size), fabric, "analytic").time_s
    engine = timing.simulate(timing.engine_schedule(fabric, "reduce_scatter", group, size),
                             network.make("analytic", timing.calibrated_view(fabric)))
    assert engine == pytest.approx(alone, rel=1e-9)
