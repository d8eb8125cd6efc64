"""Megatron-Core's NaN/Inf check of each gradient bucket before its data-parallel collective
(``DistributedDataParallelConfig.check_for_nan_in_grad``; ``parallelism.check_for_nan_in_grad``).

What runs, read in the released megatron-core wheels 0.5.0-0.14.0 (data/mcore_versions.yaml ``nan_check`` and its
source [wheel-nan]): ``start_grad_sync`` first checks the bucket (or bucket group), on the compute stream, then scales
it (``workload.grad_scaling``) and starts its collective:

- ``grad_data.norm(p=2)``: one reduction kernel reading every element of the bucket's gradients at the gradient
  buffer's width (``parallelism.grad_reduce_dtype``), writing one scalar: memory-bound, priced at the achievable HBM
  bandwidth with the stream's gap like every kernel (``kernels.op_time_s``);
- ``torch.isnan`` of that scalar (one elementwise kernel) and a host read of the result (``assert not ...`` to 0.9,
  ``rerun_state_machine.validate_result``'s ``if rejection_func(result):`` from 0.10): the host waits for the stream
  to drain, so the next kernel starts only after the host has issued it again: one drain, priced at the measured
  ``schedule_host.drain_stall_s`` (one launch and one dispatch, 17.5 us on H100);
- from 0.12 (``check_grads``) the same again with ``torch.isinf``: a second kernel and a second drain.

0.6-0.8 check bucket by bucket; 0.9 norms every bucket of a group, ``logical_or_``s their isnan (one scalar kernel a
further bucket) and reads once a group; 0.10 on read once (twice from 0.12) a bucket. The engine's buckets are
Megatron-Core's bucket groups: one bucket a group, except where fp8 parameters merge every non-fp8 bucket into the
last fp8 group (``mcore_buckets.Bucket.buckets``), whose buckets are each checked (their norms together read the
group's bytes). A bucket holding dense and expert gradients (the engine's equal buckets of a MoE chunk) is two
buffers in Megatron-Core, each checked: a norm and its reads for each part present.

Where it runs: per bucket in the backward, before its scaling pass, when the reduction overlaps the backward
(``grad_scaling.in_backward``: the engine's ``reduce_bucket``); otherwise (one data-parallel rank, or
``overlap_grad_reduce`` off: each chunk's buffer one bucket) with the optimizer's block (``serial_s``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simcluster.spec.config import nan_check_group_read, nan_check_reads_isinf
from simcluster.workload import grad_scaling, kernels, schedule_host
from simcluster.workload.ops import Op

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario

NORM_KERNEL = "grad_data.norm(p=2)"
SCALAR_BYTES = 8.0   # a test of the fp32 norm: 4 bytes read, a bool written; next to nothing


def applies(scenario: Scenario) -> bool:
    """Whether the run checks its gradient buckets (``parallelism.check_for_nan_in_grad``, resolved)."""
    return bool(scenario.parallelism.check_for_nan_in_grad) and scenario.parallelism.grad_buckets == "megatron_core"


def reads(version: str | None) -> int:
    """Host reads (stream drains) of one bucket's check: isnan, and isinf from 0.12 (``nan_check_isinf``)."""
    return 2 if nan_check_reads_isinf(version) else 1


def bucket_ops(grad_bytes: float, version: str | None) -> list[Op]:
    """The kernels of one buffer's check: the norm over ``grad_bytes`` and the scalar tests, in issue order."""
    tests = [Op(name=f"torch.{name}", kind="memory", flop=0.0, hbm_bytes=SCALAR_BYTES)
             for name in ("isnan", "isinf")[:reads(version)]]
    return [Op(name=NORM_KERNEL, kind="memory", flop=0.0, hbm_bytes=grad_bytes), *tests]


def bucket_s(scenario: Scenario, grad_bytes: float, expert_grad_bytes: float = 0.0, buckets: int = 1) -> float:
    """The compute stream's time for the check of one bucket group of ``buckets`` Megatron-Core buckets holding
    ``grad_bytes`` dense and ``expert_grad_bytes`` expert gradients (each a buffer of its own): every kernel
    (``kernels.op_time_s``: roofline and gap; the norms memory-bound, so the group's bytes however they split) and
    the idle after every host read (``schedule_host.drain_stall_s``)."""
    gpu, precision, version = scenario.cluster.gpu, scenario.training.precision, scenario.training.mcore_version
    drain = schedule_host.drain_stall_s(gpu.name)
    seconds = 0.0
    for size in (grad_bytes, expert_grad_bytes):
        if size <= 0:
            continue
        norm, *tests = [kernels.op_time_s(op, gpu, precision) for op in bucket_ops(size / buckets, version)]
        if nan_check_group_read(version):   # 0.9: isnan each, logical_or_ the further ones, one read
            seconds += buckets * (norm + tests[0]) + (buckets - 1) * tests[0] + drain
        else:
            seconds += buckets * (norm + sum(tests) + reads(version) * drain)
    return seconds


def serial_s(scenario: Scenario, chunk_grads: list[tuple[float, float]]) -> float:
    """The check where the reduction does not overlap the backward (``grad_scaling.in_backward`` false): one bucket
    per chunk buffer, ``chunk_grads`` a stage's chunks' (dense, expert) gradient bytes, run with the optimizer's
    block; 0 where the engine checks the buckets in the backward or the run does not check."""
    if not applies(scenario) or grad_scaling.in_backward(scenario):
        return 0.0
    return sum(bucket_s(scenario, dense, expert) for dense, expert in chunk_grads)
