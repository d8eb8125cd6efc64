"""The MoE layer's host work beyond one dispatch per launch, counted from Megatron-Core's and Transformer Engine's
source (data/moe.yaml ``host_python``; docs/calibration/round-22.md "Round 22: the MoE layer's host time from source").

Two terms, both small by count:

- each fused sort of the tokens by local expert (the alltoall dispatcher's ``moe_sort_chunks`` ops) is preceded in
  the forward by the kernel that builds its row map (Transformer Engine's Triton ``make_chunk_sort_map``), a short
  kernel like any other (``sort_map_ops``); the backward reuses the map (padded to capacity the dispatcher transposes
  instead of sorting: no map, ``moe.moe_block``);
- Transformer Engine's GroupedLinear hands every local expert's weight and bias to one autograd Function, whose
  ``apply`` costs the host per tensor argument (``grouped_linear_host_s``; the central value of the measured
  marginal price, its upper bound stated in data/moe.yaml), on top of the module excess that
  ``host_dispatch`` charges every Transformer Engine module call (measured on te.Linear: one weight, one bias).

Megatron-Core's own MoE Python has no loop over experts on the training path (TEGroupedMLP.forward, the alltoall
dispatcher's pre/postprocess): nothing per expert is added for it.
"""

from __future__ import annotations

from functools import cache

from simcluster.core import catalog
from simcluster.workload.ops import Op

SORT_MAP = "moe_sort_map"
# The grouped expert GEMMs (Transformer Engine GroupedLinear calls, ``Op.batch`` = local experts) and the phases in
# which their module call runs its forward (a full recompute re-runs it)
GROUPED_LINEAR_OPS = frozenset({"expert_up", "expert_down"})
FORWARD_PHASES = frozenset({"forward", "recompute"})


@cache
def _constants() -> dict:
    return catalog.load("moe")["host_python"]


def sort_map_ops(rows: float) -> list[Op]:
    """The row-map kernels of one fused chunk sort in the forward (data/moe.yaml ``chunk_sort_map_kernels``), each
    writing an int32 per one of the ``rows`` it sorts."""
    table = _constants()
    op = Op(SORT_MAP, "memory", 0.0, float(table["chunk_sort_map_bytes_per_row"] * rows))
    return [op] * table["chunk_sort_map_kernels"]


def grouped_linear_host_s(op: Op, phase: str) -> float:
    """CPU time (x86 host) of a grouped expert GEMM's module call beyond te.Linear's measured excess: the autograd
    Function's tensor arguments of the ``op.batch - 1`` local experts te.Linear does not have, in the phases that
    run the module's forward; 0 for other ops and phases. The backward's per-expert gradients have no measured price
    and are not counted."""
    if op.name not in GROUPED_LINEAR_OPS or phase not in FORWARD_PHASES:
        return 0.0
    table = _constants()
    return max(0, op.batch - 1) * table["grouped_linear_tensor_args_per_expert"] * table["function_tensor_arg_s"]
