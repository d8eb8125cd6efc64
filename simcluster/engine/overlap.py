"""How much one simulation's compute slows while its communication kernels run beside it (``workload.interference``).

Two places overlap communication with compute in the engine, each with its own kernel:
- the data-parallel stream (gradient reduce-scatter/all-reduce during the backward, parameter all-gathers during
  the forward, ZeRO-3 prefetches): NCCL rings, over NVLink when a data-parallel group fits in one node, else across
  nodes, at the ring's achieved wire rate;
- ``tp_comm_overlap``: Transformer Engine's userbuffers kernels on their SMs, at NVLink's achieved rate. With
  sequence parallelism the SMs are per overlapped GEMM (``workload.userbuffers.collective_sms``, TE's defaults or the
  NeMo configuration of the run's shape: a ring exchange moves its data on copy engines, pipeline and bulk overlaps
  hold num_sm, none where set_sm_margin launched their GEMM on the others), and a phase's factor mixes them by
  their share of the phase's communication time (bytes): the compute loses sum(t_i * (1 - 1/f_i)) beside kernels
  of factors f_i running t_i each (``interference.overlapped_s``), which one factor f does for sum(t_i) when
  1/f = mean(1/f_i);
- with ``tp_comm_overlap`` off, Megatron's and TE's async backward collectives (``workload.async_backward``): NCCL
  NVLink rings beside the column-parallel GEMMs, at those GEMMs' memory-bound share;
- asynchronous pipeline exchanges (the interleaved schedule's overlap_p2p_comm; not blocking ones): NCCL's p2p
  kernel to a peer on another node, NCCL_NCHANNELS_PER_NET_PEER CTAs (interference.yaml ``ctas.p2p_network``) at
  the NIC's achieved rate, beside the sender's and the receiver's compute while the message is on the wire
  (``Simulation.pipeline_busy_s``). Peers on one node are not charged (no sourced CTA count).
The memory-bound share of a phase is that of one transformer layer (the bulk of every chunk).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from simcluster.collectives import nccl
from simcluster.parallel.plan import BACKWARD_PHASES, tp_collective_bytes, tp_collectives_per_layer
from simcluster.workload import async_backward, async_tp, interference, launch_order, userbuffers
from simcluster.workload.ops import layer_ops, shard_for

PHASES = {"forward": ("forward",), "backward": BACKWARD_PHASES}


@dataclass(frozen=True)
class Slowdowns:
    """Factors (>= 1) by which a phase's compute runs longer beside the data-parallel stream (``dp``), the
    overlapped tensor-parallel collectives (``tp``) or a pipeline send/receive to another node (``pp``), per phase."""

    dp: dict[str, float]
    tp: dict[str, float]
    pp: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 1.0))


def slowdowns(scenario, layout) -> Slowdowns:
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    layer = layer_ops(scenario.model, shard_for(scenario))
    share = {phase: interference.memory_bound_share([op for part in parts for op in layer[part]], gpu, precision)
             for phase, parts in PHASES.items()}
    per_node = scenario.cluster.gpus_per_node
    replicas = {r for d in layout.group(0, "dp") for r in layout.group(d, "cp")}
    members = Counter(r // per_node for r in replicas)
    if len(members) > 1:  # a ring across nodes, one channel a member GPU's rail (NCCL: the fewest on any node)
        dp = interference.comm_kernel(
            "network", scenario.cluster.nic.rate * nccl.efficiency("ring", "Simple", "network"), gpu,
            ring=(min(members.values()), scenario.cluster.nic))
    else:
        dp = interference.comm_kernel("nvlink", gpu.nvlink_bandwidth * nccl.efficiency("ring", "Simple", "nvlink", gpu),
                                      gpu)
    tp_wire = gpu.nvlink_bandwidth * nccl.efficiency("ring", "Simple", "nvlink", gpu)
    p = scenario.parallelism
    if p.tp_comm_overlap_impl == "async_tp":  # copy engines move the data; barrier kernels hold a few SMs
        kernel = interference.CommKernel(async_tp.comm_sms(), tp_wire)
        tp = {phase: interference.slowdown(gpu, kernel, m) for phase, m in share.items()}
    elif async_backward.applies(scenario):  # overlap off: NCCL kernels beside the column-parallel GEMMs
        per_layer = tp_collectives_per_layer(scenario)
        backward = async_backward.slowdown(layer, async_backward.linears(per_layer), p.sequence_parallel, gpu,
                                           precision)  # at an NCCL NVLink ring's rate, tp_wire
        tp = {"forward": 1.0, "backward": backward}  # the forward's collectives are blocking
    elif p.sequence_parallel and p.tp > 1:
        tp = {phase: _userbuffers_slowdown(scenario, phase, tp_wire, m) for phase, m in share.items()}
    else:  # all-reduces: one kernel of TE's default num_sm
        tp = {phase: interference.slowdown(gpu, interference.comm_kernel("userbuffers", tp_wire, gpu), m)
              for phase, m in share.items()}
    pp = dict.fromkeys(PHASES, 1.0)
    if p.pp > 1:  # NCCL's p2p kernel to a peer across the network: its own rail, at the NIC's achieved rate
        kernel = interference.comm_kernel(
            "p2p_network", scenario.cluster.nic.rate * nccl.efficiency("ring", "Simple", "network"), gpu)
        pp = {phase: interference.slowdown(gpu, kernel, m) for phase, m in share.items()}
    return Slowdowns(dp={phase: interference.slowdown(gpu, dp, m) for phase, m in share.items()}, tp=tp, pp=pp)


def _userbuffers_slowdown(scenario, phase: str, wire_bytes_per_s: float, memory_share: float) -> float:
    """The factor of ``phase``'s compute beside its userbuffers overlaps: 1/f = sum(w_i / f_i) / sum(w_i) over the
    kernels of its collectives, w_i their bytes times the share of the collective they run (no kernel beside
    the compute, the pipeline's last reduce-scatter chunk: f_i = 1; one on SMs the GEMM leaves out: HBM only). A
    full recompute re-runs the forward's overlaps in the backward."""
    gpu = scenario.cluster.gpu
    forward = tp_collectives_per_layer(scenario)["forward"]
    parts = [(phase, forward)]
    if phase == "backward" and scenario.training.activation_recompute == "full":
        parts.append(("forward", forward))
    sizes = tp_collective_bytes(scenario, 1.0)
    settings = userbuffers.scenario_charged(scenario)  # TE defaults or NeMo configuration, as charged on the GPU
    weight = inverse = 0.0
    for methods_phase, collectives in parts:
        for collective, count in collectives:
            for time_share, sms in userbuffers.collective_sms(methods_phase, collective, settings):
                kernel = interference.CommKernel(sms, wire_bytes_per_s, persistent=False)  # settings as charged
                factor = interference.slowdown(gpu, kernel, memory_share) if sms is not None else 1.0
                w = count * sizes[collective] * time_share
                weight += w
                inverse += w / factor
    return weight / inverse


def launch_delays(scenario) -> dict[str, tuple[float, float]] | None:
    """Per phase, (first, after a collective kernel) mean waits of a data-parallel kernel launched during the
    phase's compute behind a resident persistent GEMM (``workload.launch_order``); None when it does not apply."""
    gpu = scenario.cluster.gpu
    if not launch_order.applies(gpu.name):
        return None
    layer = layer_ops(scenario.model, shard_for(scenario))
    mixes = {phase: interference.memory_bound_share([op for part in parts for op in layer[part]], gpu,
                                                    scenario.training.precision) for phase, parts in PHASES.items()}
    return {phase: (launch_order.start_delay_s(mix, False), launch_order.start_delay_s(mix, True))
            for phase, mix in mixes.items()}
