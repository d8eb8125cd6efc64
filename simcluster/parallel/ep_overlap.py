"""Megatron-Core's combined 1F1B expert-parallel all-to-all overlap (``parallelism.ep_overlap``,
--overlap-moe-expert-parallel-comm; docs.nvidia.com/megatron/moe/moe-a2a-overlap).

In the steady state of the pipeline schedule Megatron-Core merges one microbatch's forward with another's backward
(combined_1f1b.py, schedules.py ``combined_1f1b_schedule_for_interleaved`` / ``..._no_pipelining``) and runs them
layer by layer on two streams, each layer split into attention, dispatch, MLP (experts) and combine
(``TransformerLayerSchedulePlan.run``, megatron/core/models/common/model_chunk_schedule_plan.py):

    communication:  combine_B     | dispatch_F   dispatch_B  | combine_F
    compute:        attention_F   | mlp_B        mlp_F       | attention_B

so each all-to-all hides under ONE compute sub-stage of the other microbatch: per layer and phase one all-to-all
under the partner's attention, one under its MLP, exposed ``max(0, a2a - sub-stage)`` each. Layers of the longer
chunk beyond the shorter one's run alone (``schedule_chunk_1f1b``), and so do the warm-up forwards and cool-down
backwards, which have no partner: their all-to-alls stay blocking. While an all-to-all runs beside the compute its
kernels hold SMs (DeepEP's ``--moe-deepep-num-sms``, NCCL's CTAs) and slow it (``workload.interference``).
Constants: data/moe.yaml ``ep_overlap``, data/interference.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

from simcluster.core import catalog
from simcluster.workload import interference

PHASES = ("forward", "backward")


@dataclass(frozen=True)
class EpOverlap:
    """What the engine needs to run ``ep_overlap``: per pipeline stage, each paired work's partner chunk (key
    (phase, chunk, microbatch)); per phase the compute's slowdown beside the all-to-all kernels, and the all-to-alls
    one MoE layer runs (dispatch and combine, ``plan.expert_parallel_per_layer``)."""

    partners: list[dict[tuple[str, int, int], int]]
    slowdown: dict[str, float]
    calls_per_layer: dict[str, int]


def partners(order, extra_warmup: bool = False) -> dict[tuple[str, int, int], int]:
    """The works of one stage's ``order`` that run merged with another (key (phase, chunk, microbatch)) and the
    chunk of the other: consecutive works of opposite phases on different (chunk, microbatch) pair, left to right,
    as Megatron-Core merges each steady-state forward with the next backward (1F1B: F_{i+w} with B_i; without
    pipelining B_i with F_{i+1}). A forward and the backward of its own microbatch cannot merge (one needs the
    other's output), so the first forward and the last backward of 1F1B without warm-up run alone.

    ``extra_warmup``: the interleaved schedule runs one more warm-up forward with the overlap ("we schedule one extra
    micro-batch forward step before the 1f1b stages ... to ensure the forward and backward computations are
    independent in all 1f1b steps", Megatron-LM megatron/core/pipeline_parallel/schedules.py, interleaved warm-up
    count): pairing starts at the first backward, B_i with F_{i+w+1}, and the last steady-state backward joins the
    cool-down."""
    out: dict[tuple[str, int, int], int] = {}
    index = 0
    if extra_warmup:
        index = next((i for i, work in enumerate(order) if work.phase == "backward"), len(order))
    while index + 1 < len(order):
        a, b = order[index], order[index + 1]
        if a.phase != b.phase and (a.chunk, a.microbatch) != (b.chunk, b.microbatch):
            out[(a.phase, a.chunk, a.microbatch)] = b.chunk
            out[(b.phase, b.chunk, b.microbatch)] = a.chunk
            index += 2
        else:
            index += 1
    return out


def exposed_s(a2a_s: float, calls: int, layers: int, partner_layers: int, partner_attention_s: float,
              partner_mlp_s: float) -> float:
    """Exposed time of a paired block's ``calls`` all-to-alls taking ``a2a_s`` in all (equal shares): in each of
    the ``min(layers, partner_layers)`` merged layers one hides under the partner's attention sub-stage and one
    under its MLP sub-stage (per-layer times), the rest (unmerged layers, a full recompute's extra pair) run
    alone."""
    if calls <= 0:
        return 0.0
    each_s = a2a_s / calls
    merged = min(layers, partner_layers, calls // 2)
    return (merged * (max(0.0, each_s - partner_attention_s) + max(0.0, each_s - partner_mlp_s))
            + (calls - 2 * merged) * each_s)


def comm_kernel(scenario, spans_nodes: bool) -> interference.CommKernel:
    """The all-to-all's kernel beside the compute: DeepEP's (flex dispatcher) on ``deepep_sms`` SMs, else NCCL's
    across nodes or inside one (interference.yaml ctas); its HBM traffic at the line rate of the NIC (across nodes)
    or NVLink (inside one), an upper bound of the achieved rate."""
    gpu, nic = scenario.cluster.gpu, scenario.cluster.nic
    rate = nic.rate if spans_nodes else gpu.nvlink_bandwidth
    if scenario.parallelism.moe_dispatcher == "flex":
        return interference.CommKernel(catalog.load("moe")["ep_overlap"]["deepep_sms"], rate)
    return interference.comm_kernel("network" if spans_nodes else "nvlink", rate, gpu)


def build(scenario, orders, memory_shares: dict[str, float], spans_nodes: bool,
          calls_per_layer: dict[str, int]) -> EpOverlap:
    kernel = comm_kernel(scenario, spans_nodes)
    gpu = scenario.cluster.gpu
    p = scenario.parallelism
    extra_warmup = p.pp > 1 and p.virtual_stages > 1
    return EpOverlap(partners=[partners(order, extra_warmup) for order in orders],
                     slowdown={phase: interference.slowdown(gpu, kernel, memory_shares[phase]) for phase in PHASES},
                     calls_per_layer=calls_per_layer)
