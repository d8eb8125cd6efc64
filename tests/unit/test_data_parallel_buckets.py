"""Data-parallel traffic as Megatron-Core and NCCL run it: the parameter all-gathers move the gradient buckets'
parameters, and a ring with one GPU of its group per node pays NCCL's Tree network latency per step."""

from __future__ import annotations

import pytest

from simcluster.collectives import nccl
from simcluster.engine import simulate
from simcluster.spec import config


def _scenario(**parallelism):
    return config.from_dict({
        "name": "t",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2, "nic": "connectx-7",
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


@pytest.mark.parametrize("protocol", ["LL", "LL128", "Simple"])
@pytest.mark.parametrize("op", ["allreduce", "reduce_scatter", "all_gather"])
def test_one_gpu_per_node_ring_steps_pay_the_tree_network_latency(op, protocol):
    # NCCL tuning.cc: with ppn = 1 every step is a network step, charged hwLat[NET][TREE][protocol]
    tree = {"LL": 5.0e-6, "LL128": 8.5e-6, "Simple": 14.0e-6}[protocol]
    base, per_step = nccl.ring_latency_s(op, 16, 16, protocol)
    assert per_step == pytest.approx(tree, rel=1e-12)
    assert base == pytest.approx(nccl.constants()["protocols"][protocol]["base_latency_s"], rel=1e-12)


def test_two_gpus_per_node_ring_keeps_the_ring_latencies():
    proto = nccl.constants()["protocols"]["LL128"]
    _, per_step = nccl.ring_latency_s("reduce_scatter", 32, 16, "LL128")
    inter, steps = 15, 31   # nNodes - 1 network steps of n - 1
    expected = ((steps - inter) * proto["nvlink_step_latency_s"] + inter * proto["network_step_latency_s"]) / steps
    assert per_step == pytest.approx(expected, rel=1e-12)


def test_broadcast_chain_is_not_a_ring_reduction():
    proto = nccl.constants()["protocols"]["Simple"]
    _, per_step = nccl.ring_latency_s("broadcast", 16, 16, "Simple")
    assert per_step == pytest.approx(proto["network_step_latency_s"], rel=1e-12)
