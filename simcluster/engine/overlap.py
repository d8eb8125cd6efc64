"""How much one simulation's compute slows while its communication kernels run beside it (``workload.interference``).

Two places overlap communication with compute in the engine, each with its own kernel:
- the data-parallel stream (gradient reduce-scatter/all-reduce during the backward, parameter all-gathers during
  the forward, ZeRO-3 prefetches): NCCL rings, over NVLink when a data-parallel group fits in one node, else across
  nodes, at the ring's achieved wire rate;
- ``tp_comm_overlap``: Transformer Engine's userbuffers kernels on their SMs, at NVLink's achieved rate.
The memory-bound share of a phase is that of one transformer layer (the bulk of every chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

from simcluster.collectives import nccl
from simcluster.parallel.plan import BACKWARD_PHASES
from simcluster.workload import interference
from simcluster.workload.ops import layer_ops, shard_for

PHASES = {"forward": ("forward",), "backward": BACKWARD_PHASES}


@dataclass(frozen=True)
class Slowdowns:
    """Factors (>= 1) by which a phase's compute runs longer beside the data-parallel stream (``dp``) or the
    overlapped tensor-parallel collectives (``tp``), per phase."""

    dp: dict[str, float]
    tp: dict[str, float]


def slowdowns(scenario, layout) -> Slowdowns:
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    layer = layer_ops(scenario.model, shard_for(scenario))
    share = {phase: interference.memory_bound_share([op for part in parts for op in layer[part]], gpu, precision)
             for phase, parts in PHASES.items()}
    per_node = scenario.cluster.gpus_per_node
    replicas = {r for d in layout.group(0, "dp") for r in layout.group(d, "cp")}
    if len({r // per_node for r in replicas}) > 1:
        dp = interference.comm_kernel(
            "network", scenario.cluster.nic.rate * nccl.efficiency("ring", "Simple", "network"))
    else:
        dp = interference.comm_kernel("nvlink", gpu.nvlink_bandwidth * nccl.efficiency("ring", "Simple", "nvlink", gpu))
    tp = interference.comm_kernel("userbuffers",
                                  gpu.nvlink_bandwidth * nccl.efficiency("ring", "Simple", "nvlink", gpu))
    return Slowdowns(dp={phase: interference.slowdown(gpu, dp, m) for phase, m in share.items()},
                     tp={phase: interference.slowdown(gpu, tp, m) for phase, m in share.items()})
