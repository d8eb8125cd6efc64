"""What a data-parallel step exposes at one GPU per node: the chains at the NIC's rate against the compute they overlap.

Megatron-Core's distributed optimizer with overlapped gradient reduce-scatter and parameter all-gather (core_r0.5 to
r0.8, NeMo's Apex DistributedFusedAdam alike; docs/calibration/round-16.md, round 16, and "Round 18: data-parallel
scaling"):
- the all-gathers of the bf16 parameters run back to back on one communicator from the step's start (the first one
  dispatched in ``zero_grad``, each next one from the forward pre-hook that waits for the previous one), and only
  the first microbatch's forward waits for them;
- the reduce-scatters of the fp32 gradients start with the last microbatch's backward (the others run under
  ``no_sync``; ``finish_grad_sync`` waits for all of them before the optimizer).
So, with every ring running at the NIC's bus rate B and no latency, a step exposes at least
    max(0, P_bf16 (n-1)/n / B - forward) + max(0, P_fp32 (n-1)/n / B - backward),
P the rank's parameter bytes, and, on Megatron-Core's own unequal buckets (reverse walk, round 23), the closed-form
chains of those buckets within the rings' latency. The parameter count is computed here from Nemotron-4 15B's shape
(arXiv 2402.16819, Table 1: 32 layers, hidden 6,144, 48 heads, 8 KV heads, FFN 24,576 squared-ReLU without gate,
vocabulary 256,000, untied embeddings, LayerNorm with bias), not read from the simulator; B = 47 GB/s a 400 Gb/s NIC
(nccl-tests#290).
"""

from __future__ import annotations

import copy

import pytest
from scripts_loader import load_script

from simcluster.core import catalog
from simcluster.engine import simulate
from simcluster.parallel.mcore_buckets import megatron_core_buckets
from simcluster.parallel.plan import plan as step_plan
from simcluster.spec import config

dp_ring_scaling = load_script("dp_ring_scaling")   # the windows and the floor, one copy with the script's

NIC_BUSBW = 47e9  # NDR 400 Gb/s per NIC, NCCL_ALGO=RING: "46-48GB/s per NIC" (AddyLaddy, NVIDIA/nccl-tests#290)
TP = 8
BASE_S, STEP_S = 8.4e-6, 14.0e-6  # NCCL baseLat Ring Simple; hwLat NET Simple (tuning.cc, 2.19 and 2.23 alike)


def nemotron4_15b_params_per_rank() -> int:
    h, ffn, layers, vocab, kv = 6144, 24576, 32, 256_000, 8 * 128
    per_layer_split = h * (h + 2 * kv) + h * h + 2 * h * ffn   # QKV, projection, FC1, FC2: split over TP
    norms = layers * 2 * 2 * h + 2 * h                          # two LayerNorms a layer and the final one: replicated
    return (2 * vocab * h + layers * per_layer_split) // TP + norms


def _scenario(name: str, rule_buckets: bool = False):
    raw = copy.deepcopy(catalog.load(f"scenarios/{name}"))
    if rule_buckets:  # Megatron-Core's default since core_r0.7, max(40M, 1M x DP) parameters (the contract twin's)
        raw["parallelism"].pop("grad_bucket_size")
    return config.from_dict(raw)


def _run(name: str, rule_buckets: bool = False):
    return simulate(_scenario(name, rule_buckets))


def _windows(events):
    """Rank 0's first-microbatch forward and last-microbatch backward (the script's ``compute_windows``) and the
    number of gradient buckets it reduced."""
    comm = events[(events["rank"] == 0) & (events["kind"] == "comm")]
    buckets = int(comm["name"].str.startswith("grad reduce_scatter").sum())
    return (*dp_ring_scaling.compute_windows(events), buckets)


def _floor(ranks: int, forward_s: float, backward_s: float) -> float:
    """The zero-latency floor of the model's parameters counted here (2 B gathered, 4 B reduced a parameter)."""
    params = nemotron4_15b_params_per_rank()
    return dp_ring_scaling.exposure_floor(2 * params, 4 * params, ranks, NIC_BUSBW, forward_s, backward_s)


def test_the_reduced_bytes_are_the_models_parameters():
    """The engine reduces 4 B and gathers 2 B of every parameter of the rank, no more (the closed-form count)."""
    events = _run("nemotron4-15b-768-h100").events
    rank0 = events[(events["rank"] == 0) & (events["kind"] == "comm")]
    params = nemotron4_15b_params_per_rank()
    assert rank0[rank0["name"].str.startswith("grad reduce_scatter")]["bytes"].sum() == pytest.approx(4 * params,
                                                                                                       rel=1e-6)
    assert rank0[rank0["name"].str.startswith("param all_gather")]["bytes"].sum() == pytest.approx(2 * params,
                                                                                                    rel=1e-6)


def _closed_chains(ranks: int, bucket_size: float, forward_s: float, backward_s: float,
                   head_s: tuple[float, float]) -> float:
    """The chains' exposed time in closed form (the script's ``chain_exposed``) with zero-latency rings at the NIC's
    rate, over Megatron-Core's own buckets of the model counted here (``mcore_buckets``: the reverse walk, closed at
    ``bucket_size`` elements, padded to the ranks), each gathered before the forward of its lowest layer and reduced
    once that layer's backward ends; the output layer's forward last and its backward first (``head_s``: its
    seconds, the workload's ``ChunkCost.edge_s``; round 24)."""
    tensors = dp_ring_scaling.gpt_param_tensors(6144, 24576, 1024, 256_000, 32, TP, edge_units=True)
    assert sum(t.elements for t in tensors) == nemotron4_15b_params_per_rank()
    buckets = megatron_core_buckets(tensors, bucket_size, ranks)
    wire = (ranks - 1) / ranks / NIC_BUSBW
    gathers = dp_ring_scaling.per_layer_s(buckets, 32, [2 * n * wire for _, n in buckets], units=True)
    scatters = dp_ring_scaling.per_layer_s(buckets, 32, [4 * n * wire for _, n in buckets], units=True)
    return sum(dp_ring_scaling.chain_exposed(forward_s, backward_s, gathers, scatters, prefetch_one=False,
                                             head_s=head_s))


@pytest.mark.parametrize(("name", "ranks", "buckets"), [
    ("nemotron4-15b-768-h100", 96, 18),       # Megatron-Core's max(40M, 96M) parameters: 18 buckets
    ("nemotron4-15b-2304-h100", 288, 7),      # max(40M, 288M): 7 buckets of up to 1.2 GB
])
def test_simple_rings_expose_the_closed_form_chains_only(name, ranks, buckets):
    """Where every ring runs Simple with MB-size steps (c > L), the sliced steps hide the per-step latency: the
    exposed data-parallel time is the closed-form chains of the buckets with zero-latency rings, within at most one
    unhidden step (base + L + c) per collective, and above the zero-latency floor. (The bundled row's 40M-element
    buckets, 160-200 MB, are not all on Simple at 96 ranks: it exposes 32 ms more than its zero-latency chains, so it
    is not a case of this test; docs/calibration/round-23.md "Round 23".)"""
    result = _run(name, rule_buckets=True)
    forward_s, backward_s, reduced = _windows(result.events)
    assert reduced == buckets
    cost = step_plan(_scenario(name, rule_buckets=True), lambda *a, **k: 1e-3).chunks[0]   # pp 1: the one chunk
    head_s = (cost.edge_s["forward"][1], cost.edge_s["backward"][1])
    closed = _closed_chains(ranks, max(40e6, 1e6 * ranks), forward_s, backward_s, head_s)
    first_step = 4 * nemotron4_15b_params_per_rank() / buckets / ranks / NIC_BUSBW
    latency = 2 * buckets * (BASE_S + STEP_S + first_step)
    exposed = result.summary["exposed_comm_by_parallelism_s"]["dp"]
    assert _floor(ranks, forward_s, backward_s) < exposed
    assert closed - latency <= exposed <= closed + latency


def test_the_growth_with_dp_of_the_bundled_rows_is_ring_latency_not_bandwidth():
    """Same per-GPU work at 96 and 288 ranks: the floor moves by under 3 ms (only (n-1)/n), while the bundled rows'
    exposed time grows by far more: the 244/122 MB buckets' rings at 287 steps (LL128, NCCL 2.19's choice)."""
    low, high = _run("nemotron4-15b-768-h100"), _run("nemotron4-15b-2304-h100")
    floors = [_floor(ranks, *_windows(r.events)[:2]) for ranks, r in ((96, low), (288, high))]
    assert abs(floors[1] - floors[0]) < 3e-3
    growth = high.summary["exposed_comm_by_parallelism_s"]["dp"] - low.summary["exposed_comm_by_parallelism_s"]["dp"]
    assert growth > 0.1


def test_the_script_refuses_unknown_arguments():
    with pytest.raises(SystemExit) as refused:
        dp_ring_scaling.main(["--row"])   # not an abbreviation of --rows either
    assert refused.value.code == 2
