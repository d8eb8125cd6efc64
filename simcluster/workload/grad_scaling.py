"""Megatron's scaling of the gradient buffer before the data-parallel reduction: one memory-bound pass a step.

Megatron-Core's DistributedDataParallel multiplies each bucket's gradients by the bucket's
``gradient_scaling_factor`` on the compute stream just before starting its collective
(``bucket.grad_data *= bucket.gradient_scaling_factor`` in ``start_grad_sync``), so that a summing reduce-scatter
or all-reduce yields the data-parallel mean. Megatron-LM's own DDP before it did the same to the whole contiguous
buffer before its all-reduce (``buffer_.data /= world_size``, 2021-2023; its distributed optimizer
``gbuf.data /= data_parallel_world_size``). The pass reads and writes every element of the scaled buffer in the
gradient buffer's dtype (``parallelism.grad_reduce_dtype``: fp32 main gradients, or bf16 with grad_reduce_in_bf16):
2 x grad_bytes of HBM traffic, one kernel per bucket.

When it runs, release by release (``training.mcore_version``; data/mcore_versions.yaml ``grad_scaling`` and its
sources [wheel-scale], [NeMo-avg]):

- the factor is 1/(dp x cp) (0.8: 1/dp) for the dense and the expert buffers; with ``average_in_collective``
  (``parallelism.average_in_collective``, 0.8 on) the collective averages (``ReduceOp.AVG``, which NCCL applies
  inside its reduction kernel: no pass), the dense factor is 1 and the expert buffers' 1/ep (0.8-0.11) or
  edp/(dp x cp) (0.12 on), so a MoE run still scales its expert buffers unless that ratio is 1;
- before 0.7 (and Megatron-LM's own DDP, stated as the earliest release) the multiply runs whatever the factor,
  one data-parallel rank included; from 0.7 it is skipped when the factor is 1.0.

The NaN check that ``check_for_nan_in_grad`` adds before the multiply (a norm per bucket and its host reads) is
``workload.nan_check``. Left out: ``calculate_per_token_loss`` (factor 1.0; off in Megatron-LM, NeMo and
Megatron-Bridge by default), Megatron-FSDP (ZeRO 3, its own pre-scale on its reduce-scatter stream), Apex's
distributed Adam (``grad_buckets: apex``: ``ReduceOp.AVG`` with ``average_grad_sync``, its default; no pass), and
PyTorch DDP (the division is fused into its bucket copy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simcluster.core import catalog
from simcluster.spec.config import grad_scaling_at_least
from simcluster.workload import kernels
from simcluster.workload.ops import Op

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario

# read + write of each scaled element (``grad_data *= factor``)
ELEMENTS_PER_GRAD = 2
KERNEL_NAME = "grad_data *= gradient_scaling_factor"


def applies(scenario: Scenario) -> bool:
    """Whether the run reduces through Megatron-Core's (or Megatron-LM's own 2021-23) contiguous gradient buffers:
    Megatron-Core with its own buckets (``grad_buckets: megatron_core``) and a release."""
    return (scenario.megatron_core and scenario.parallelism.grad_buckets == "megatron_core"
            and scenario.training.mcore_version is not None)


def factors(scenario: Scenario) -> tuple[float, float]:
    """(dense, expert) gradient scaling factors of Megatron-Core's DDP for this run (module docstring)."""
    p, version = scenario.parallelism, scenario.training.mcore_version
    without_cp = version in catalog.load("mcore_versions")["grad_scaling"]["factor_without_cp"]
    mean = 1.0 / (p.dp * (1 if without_cp else p.cp))
    if not p.average_in_collective:
        return mean, mean
    if grad_scaling_at_least(version, "expert_factor_edp"):
        return 1.0, scenario.expert_data_parallel / (p.dp * p.cp)
    return 1.0, 1.0 / p.ep


def scaled(scenario: Scenario) -> tuple[bool, bool]:
    """Whether the dense and the expert gradient buffers are multiplied before their reduction: where the pass
    ``applies``, always before 0.7, else when their factor is not 1."""
    if not applies(scenario):
        return False, False
    if not grad_scaling_at_least(scenario.training.mcore_version, "skips_unit_factor"):
        return True, True
    dense, expert = factors(scenario)
    return dense != 1.0, expert != 1.0


def kernel_s(hbm_bytes: float, gpu, precision: str) -> float:
    """One scaling kernel of ``hbm_bytes``, memory-bound at the achievable HBM bandwidth, with the stream's gap."""
    return kernels.op_time_s(Op(name=KERNEL_NAME, kind="memory", flop=0.0, hbm_bytes=hbm_bytes), gpu, precision)


def serial_s(scenario: Scenario, chunk_grads: list[tuple[float, float]]) -> float:
    """The pass where it is not overlapped with the backward (one data-parallel rank, or ``overlap_grad_reduce``
    off: each chunk's buffer in one bucket, scaled after the backward before its collective): one kernel per scaled
    buffer of each of a stage's chunks, ``chunk_grads`` their (dense, expert) gradient bytes; 0 where the engine
    scales the buckets in the backward (``in_backward``)."""
    which = scaled(scenario)
    if not any(which) or in_backward(scenario):
        return 0.0
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    return sum(kernel_s(ELEMENTS_PER_GRAD * size, gpu, precision)
               for dense, expert in chunk_grads
               for size, on in ((dense, which[0]), (expert, which[1])) if on and size > 0)


def in_backward(scenario: Scenario) -> bool:
    """Whether the buckets are scaled as the backward makes them (the engine's ``ReduceBucketsDuringBackward``):
    more than one data-parallel rank and the reduction overlapped."""
    p = scenario.parallelism
    return p.dp * p.cp > 1 and p.overlap_grad_reduce
