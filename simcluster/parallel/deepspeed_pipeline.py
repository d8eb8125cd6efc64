"""DeepSpeed's PipelineEngine (``parallelism.pipeline_engine: deepspeed``): how Megatron-DeepSpeed runs a pipelined
step, as in DeepSpeed 0.5-0.7 (2021-2022, MT-NLG 530B and BLOOM 176B), where it differs from Megatron-LM's schedule.

What the engine keeps from the Megatron model: the order of the passes (``TrainSchedule``, deepspeed/runtime/pipe/
schedule.py, is 1F1B without interleaving: stage s runs pp - s forwards before its first backward, then alternates,
the same order as ``schedules.pipeline_order``), blocking sends (``p2p.send``/``p2p.recv`` are ``dist.broadcast``
within a two-rank group, async_op=False), the activations split over the tensor-parallel ranks and all-gathered on
the receiver (``is_pipe_partitioned = is_grad_partitioned = is_model_parallel``: ``PartitionedTensor``, the
``p2p_scatter_gather`` path), gradients reduced after the last microbatch (the schedule's ``ReduceTiedGrads``,
``ReduceGrads``, ``OptimizerStep`` at its last step: nothing overlaps them, ``overlap_grad_reduce: false``).

What this module adds to the plan (``apply``):

- Exchanges one after the other. A backward step of ``TrainSchedule.steps`` sends the output of the forward just run,
  then receives the gradient of its backward (``SendActivation``, ``RecvGrad``); a forward step receives the
  activation, then sends the gradient of the backward just run (``RecvActivation``, ``SendGrad``); each a blocking
  send or receive (torch >= 1.8: ``dist.send``/``dist.recv``, older: a broadcast in a two-rank group; p2p.py). Both
  neighbours wait for both transfers, one after the other, where Megatron-LM posts the two as one batched
  isend/irecv that runs both ways at once. Modelled as the gradient first, then the activation (``Agent._send``
  waits for the gradient before sending: ``StepPlan.p2p_sequential``): the same two transfers in series.
- The sender's output gathered again before its backward: ``_exec_forward_pass`` replaces the sent output's data by
  a one-element tensor (``first_output.data = torch.zeros(1)``) and ``_exec_backward_pass`` rebuilds it with
  ``PartitionedTensor.full()``, an all-gather over the TP group, on every stage but the last
  (``OUTPUT_REGATHERS``).
- The gradients' own accumulation each microbatch, over every parameter of the stage (Megatron-DeepSpeed has no
  gradient-accumulation fusion: its parameters have no ``main_grad``). bf16 with fp32 gradients is DeepSpeed's
  ``BF16_Optimizer`` (bf16 + ZeRO stage 0 in the DeepSpeed config, "it implements its own zero stage 1 equivalent",
  bigscience tr11-176B-ml.slurm): ``_exec_backward_pass`` calls ``clear_lp_grads`` (the bf16 ``.grad`` set to None)
  before the backward and ``update_hp_grads`` after it, ``hp_grad.add_(lp.grad.to(float32))``
  (``BF16_OPTIMIZER_BYTES_PER_PARAM``). 16-bit gradients stay in the parameters' ``.grad``, which autograd's
  AccumulateGrad adds each new gradient into (``AUTOGRAD_ACCUMULATE_BYTES_PER_PARAM``).
- The data-parallel reduction: ``BF16_Optimizer`` all-reduces the fp32 gradients (``_exec_reduce_grads`` ->
  ``_bf16_reduce_grads`` -> ``buffered_allreduce_fallback(grads=optimizer.get_grads_for_reduction())``), then each
  rank updates its shard and all-gathers the bf16 parameters (``all_gather_dp_groups``): an all-reduce where
  Megatron's distributed optimizer reduce-scatters. ZeRO-1 with 16-bit gradients reduces each rank's partition to
  it (``average_tensor``: one ``dist.reduce`` per partition, the bytes of a reduce-scatter), as ZeRO-0 all-reduces.

Not modelled (each well under 1% of these runs' steps): the ``PartitionedTensor`` meta tensor sent before each
message (a blocking broadcast of a few int64), the host synchronisation of ``from_meta`` (``meta.tolist()``),
``buffered_allreduce_fallback``'s flatten and copy-back of the gradients once per step, ``clear_hp_grads``' zeroing;
the tied-embedding all-reduce runs before the data-parallel one in DeepSpeed (after it here: the same sum on the
stages that run both). ``update_hp_grads`` loops over the parameter tensors (two kernels each): charged as one
memory-bound kernel per chunk, without a stream gap per tensor (docs/calibration.md, "Issue 15: DeepSpeed's
PipelineEngine").
"""

from __future__ import annotations

import dataclasses

from simcluster.parallel import memory
from simcluster.workload import kernels
from simcluster.workload.ops import Op

# BF16_Optimizer.update_hp_grads, per parameter and microbatch: lp.grad.to(float32) reads the bf16 gradient (2 B) and
# writes an fp32 copy (4 B); hp_grad.add_(copy) reads both (4 + 4 B) and writes the fp32 gradient (4 B).
# deepspeed/runtime/bf16_optimizer.py (DeepSpeed 0.6-0.7, 2022); the pipeline engine calls it after every
# microbatch's backward (deepspeed/runtime/pipe/engine.py, _exec_backward_pass: "manually call because we don't call
# optimizer.backward()").
BF16_OPTIMIZER_BYTES_PER_PARAM = 2 + 4 + 4 + 4 + 4
# autograd's AccumulateGrad adds a new 16-bit gradient into the existing .grad in place: read both, write one
# (torch/csrc/autograd/functions/accumulate_grad.h, "variable_grad += new_grad" when grad mode is off)
AUTOGRAD_ACCUMULATE_BYTES_PER_PARAM = 3 * 2
# PartitionedTensor.full() before each backward of a stage that sent its output (all but the last)
OUTPUT_REGATHERS = 1


def uses_bf16_optimizer(precision: str, grad_dtype: str) -> bool:
    """Whether DeepSpeed trains with its BF16_Optimizer: bf16 with fp32 gradients (its fp32 ``hp_grad``s)."""
    return precision == "bf16" and grad_dtype == "fp32"


def accumulation_bytes_per_param(precision: str, grad_dtype: str) -> float:
    """HBM bytes per parameter and microbatch of DeepSpeed's gradient accumulation."""
    if uses_bf16_optimizer(precision, grad_dtype):
        return BF16_OPTIMIZER_BYTES_PER_PARAM
    return AUTOGRAD_ACCUMULATE_BYTES_PER_PARAM


def dp_grad_op(precision: str, grad_dtype: str, zero_stage: int) -> str:
    """The data-parallel gradient collective: BF16_Optimizer and ZeRO-0 all-reduce, ZeRO-1 reduces partitions."""
    if uses_bf16_optimizer(precision, grad_dtype) or zero_stage == 0:
        return "allreduce"
    return "reduce_scatter"


def apply(step_plan, collective_time_s):
    """``step_plan`` (a ``plan.StepPlan`` built for Megatron's engine) as DeepSpeed's PipelineEngine runs it.
    ``collective_time_s`` times a collective alone on the fabric (``plan.CollectiveTime``)."""
    scenario = step_plan.scenario
    t, p = scenario.training, scenario.parallelism
    gpu, precision = scenario.cluster.gpu, t.precision
    weight_element = memory.state_bytes_per_param(precision)["weights"]
    per_param = accumulation_bytes_per_param(precision, p.grad_reduce_dtype)
    regather = step_plan.p2p_gather_bytes > 0
    tp_group = tuple(step_plan.layout.group(0, "tp"))
    gather_s = collective_time_s("all_gather", tp_group, step_plan.p2p_gather_bytes) if regather else 0.0
    chunks = []
    for cost in step_plan.chunks:
        params = cost.param_bytes / weight_element
        accumulate = Op("deepspeed_grad_accumulate", "memory", params, per_param * params)
        stream = cost.backward_stream + kernels.stream_time([accumulate], gpu, precision)
        backward_s = cost.backward_compute_s + stream.elapsed_s() - cost.backward_stream.elapsed_s()
        changes = {"backward_stream": stream, "backward_compute_s": backward_s}
        if regather and cost.chunk < step_plan.chunk_count - 1:
            calls = cost.tp_collectives.get("backward", ())
            changes["tp_collectives"] = {**cost.tp_collectives,
                                         "backward": (*calls, ("all_gather", OUTPUT_REGATHERS))}
            changes["backward_tp_comm_s"] = cost.backward_tp_comm_s + OUTPUT_REGATHERS * gather_s
        chunks.append(dataclasses.replace(cost, **changes))
    return dataclasses.replace(step_plan, chunks=chunks, p2p_sequential=True,
                               dp_grad_op=dp_grad_op(precision, p.grad_reduce_dtype, p.zero_stage))
