"""PyTorch's asynchronous tensor parallelism (``parallelism.tp_comm_overlap_impl: async_tp``): torchtitan's
``enable_async_tensor_parallel``, Inductor's micro-pipeline TP pass over SymmetricMemory ops, as opposed to
Transformer Engine's userbuffers (``workload.userbuffers``). Sources and constants: data/userbuffers.yaml
``async_tp``.

The pass rewrites two patterns of a compiled graph:

- an all-gather whose result is the first operand of matmuls -> ``fused_all_gather_(scaled_)matmul``: the local
  shard's matmul first, then one matmul per remote shard as it arrives (copy engines move the shards), the shard
  matmuls alternating on two streams, plus a copy of the local shard into the gathered output;
- a reduce-scatter of one matmul's output -> ``fused_(scaled_)matmul_reduce_scatter``: one matmul of tokens/tp rows
  per destination rank, the remote ranks pulling each chunk, then a sum over the tp stacked partials (16-bit) that
  the compute stream runs after the last chunk.

Everything else stays an NCCL collective between the GEMMs, blocking: in the backward the reduce-scatters of the
summed wq/wk/wv and w1/w3 input gradients (a sum of matmuls, not one matmul). In float8 training torchao casts
before every gather (forward input and backward output gradient), so the gathered tensors are float8 matmul
operands and fuse as in bf16.

Here a fused GEMM becomes ``tp`` chunk GEMMs of tokens/tp rows, each its own kernel (issued from the Python of
torch/distributed/_symmetric_memory, each after a stream wait: each pays the stream's gap), quantised alone (the
chunks in flight on two streams are not packed: a bound, the shapes here fill several waves each).
"""

from __future__ import annotations

import dataclasses
import math

from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.workload import userbuffers
from simcluster.workload.ops import Op

FORWARD_PHASES = ("forward", "recompute")  # full recompute re-runs the forward's fused ops


def constants() -> dict:
    return userbuffers.constants()["async_tp"]


def method(op_name: str, phase: str) -> str | None:
    """How the pass rewrites the layer GEMM ``op_name`` of ``phase``: "all_gather" (gather then chunk matmuls),
    "reduce_scatter" (chunk matmuls then the summed partials) or None (not fused)."""
    return constants()["fused"].get("forward" if phase in FORWARD_PHASES else phase, {}).get(op_name)


def chunk_ops(op: Op, how: str, tp: int, precision: str, copy: bool = True) -> list[Op]:
    """``op`` (a GEMM of the run's ``precision``) as the fused op runs it: ``tp`` chunk GEMMs of tokens/tp rows,
    FLOP kept, each reading its rows and the whole weight; an all-gather's copy of the local shard into the gathered
    output before them (``copy``: once per gathered input, which several projections may share); a reduce-scatter's
    sum of the tp stacked 16-bit partials (read) into the local shard (written) after them."""
    rows = math.ceil(op.m / tp)
    element = BYTES_PER_ELEMENT[op.precision or precision]
    output = max(element, BYTES_PER_ELEMENT["bf16"])
    chunk = dataclasses.replace(op, m=rows, flop=op.flop / tp,
                                hbm_bytes=userbuffers.chunk_bytes(op, rows, op.n, precision))
    chunks = [chunk] * tp
    if how == "all_gather":
        return [Op("async_tp_copy", "memory", 0.0, float(2 * rows * op.k * element))] * copy + chunks
    return [*chunks, Op("async_tp_reduce", "memory", float(op.m * op.n), float((op.m * op.n + rows * op.n) * output))]


def apply(ops: dict[str, list[Op]], tp: int, precision: str) -> dict[str, list[Op]]:
    """A layer's ops per phase as the micro-pipeline TP pass runs them (``chunk_ops`` for each fused GEMM; separate
    projections of one gathered input, ``training.projections: separate``, are one fused op with several weights:
    one copy of the local shard)."""
    out: dict[str, list[Op]] = {}
    for phase, phase_ops in ops.items():
        out[phase] = []
        gathered: set[str] = set()
        for op in phase_ops:
            how = method(op.name, phase) if op.kind == "gemm" and op.batch == 1 else None
            out[phase].extend(chunk_ops(op, how, tp, precision, op.name not in gathered) if how else [op])
            if how == "all_gather":
                gathered.add(op.name)
    return out


def blocking_backward() -> tuple[tuple[str, int], ...]:
    """The TP collectives of one layer's backward (its own, not the recompute's) the pass leaves to NCCL: the
    reduce-scatters of the summed input gradients."""
    return (("reduce_scatter", constants()["exposed_backward_reduce_scatters"]),)


def split(per_layer: dict[str, list[tuple[str, int]]]
          ) -> tuple[dict[str, list[tuple[str, int]]], dict[str, tuple[tuple[str, int], ...]]]:
    """A layer's TP collectives per phase (``plan.tp_collectives_per_layer``) as (overlapped, blocking): the
    blocking ones are ``blocking_backward``'s, taken from the backward's own collectives."""
    blocking = {"backward": blocking_backward()}
    overlapped = {phase: list(calls) for phase, calls in per_layer.items()}
    remaining = dict(blocking["backward"])
    backward = []
    for op, count in overlapped["backward"]:
        taken = min(count, remaining.get(op, 0))
        remaining[op] = remaining.get(op, 0) - taken
        backward.append((op, count - taken))
    overlapped["backward"] = backward
    return overlapped, blocking


def comm_sms() -> int:
    """SMs the pass's communication holds beside the compute GEMMs: 0 (copy engines move the data; the barriers run
    before and after the pipelined steps, data/userbuffers.yaml async_tp.comm_sms): HBM contention only."""
    return constants()["comm_sms"]
