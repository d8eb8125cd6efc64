"""DeepSpeed's PipelineEngine (``parallelism.pipeline_engine: deepspeed``): how Megatron-DeepSpeed runs a pipelined
step, as in DeepSpeed 0.5-0.7 (2021-2022, MT-NLG 530B and BLOOM 176B), where it differs from Megatron-LM's schedule.

What the engine keeps from the Megatron model: the order of the passes (``TrainSchedule``, deepspeed/runtime/pipe/
schedule.py, is 1F1B without interleaving: stage s runs pp - s forwards before its first backward, then alternates, the
same order as ``schedules.pipeline_order``; checked against a replay of TrainSchedule (scripts/deepspeed_replay.py,
tests/unit/test_deepspeed_schedule.py), which the engine does not run and equals only with pipeline messages and the
end-of-step tail off: no bubble beyond 1F1B's), blocking sends (``p2p.send``/``p2p.recv``, async_op=False: from
torch 1.8 ``dist.send``/``dist.recv``, as the py-spy traces of BLOOM's run in bigscience tr11-176B-ml/chronicles.md
show, ``dist.broadcast`` within a two-rank group before; both one NCCL transfer each way), the activations split over
the tensor-parallel ranks and all-gathered on the receiver (``is_pipe_partitioned = is_grad_partitioned =
is_model_parallel``: ``PartitionedTensor``, the ``p2p_scatter_gather`` path), gradients reduced after the last
microbatch (the schedule's ``ReduceTiedGrads``, ``ReduceGrads``, ``OptimizerStep`` at its last step: nothing overlaps
them, ``overlap_grad_reduce: false``).

What this module adds to the plan (``apply``):

- Exchanges one after the other. A backward step of ``TrainSchedule.steps`` sends the output of the forward just run,
  then receives the gradient of its backward (``SendActivation``, ``RecvGrad``); a forward step receives the
  activation, then sends the gradient of the backward just run (``RecvActivation``, ``SendGrad``); each a blocking
  send or receive (torch >= 1.8: ``dist.send``/``dist.recv``, older: a broadcast in a two-rank group; p2p.py). Both
  neighbours wait for both transfers, one after the other, where Megatron-LM posts the two as one batched
  isend/irecv that runs both ways at once. Modelled as the gradient first, then the activation (``Agent._send``
  waits for the gradient before sending: ``StepPlan.p2p_sequential``): the same two transfers in series.
  Any number of microbatches m >= 1: a step whose microbatch lies outside [0, m) computes nothing but still sends
  what the step before produced (``TrainSchedule.steps`` checks each instruction's microbatch on its own). With
  m <= pp - s - 1 every forward of stage s is a warm-up one, and the backward step after the last has no RecvGrad: its
  SendActivation goes alone (``schedules.batches_next_receive``, as Megatron's warm-up ``send_forward``).
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
  ``_bf16_reduce_grads`` -> ``buffered_allreduce_fallback(grads=optimizer.get_grads_for_reduction())``) as bf16:
  ``allreduce_bucket`` casts them to the engine's ``communication_data_type``, bf16 by default for a bf16 run at
  ZeRO stage 0 in the DeepSpeed of 2022 (``BF16_OPTIMIZER_COMM_DTYPE``), and copies the reduced copy back; then each
  rank updates its shard and all-gathers the bf16 parameters (``all_gather_dp_groups``): an all-reduce where
  Megatron's distributed optimizer reduce-scatters. The tied embedding's all-reduce (``_exec_reduce_tied_grads``:
  ``dist.all_reduce(weight._hp_grad)``) does not go through ``allreduce_bucket`` and stays fp32. ZeRO-1 with 16-bit
  gradients reduces each rank's partition to it (``average_tensor``: one ``dist.reduce`` per partition, the bytes of
  a reduce-scatter), as ZeRO-0 all-reduces.

- The host round trips of the partitioned messages (DeepSpeed before the CPU meta cache of microsoft/DeepSpeed#4360,
  2023: "PartitionedTensor.from_meta will cause device to host synchronization when reading the meta tensor"). Each
  stops the host until the compute stream has drained, and the GPU then idles until the host has issued the next
  work: ``PartitionedTensor.to_meta`` builds its meta on the host and copies it to the GPU (``torch.LongTensor(...)
  .to(device)``: a blocking copy, which torch ends with a stream synchronisation) and ``from_meta`` reads it back
  (``meta.tolist()``). Megatron's step has one such drain (its p2p's ``torch.cuda.synchronize()``), charged as the
  fitted host time of a pipeline step (efficiency.yaml ``pipeline_step_s``) on every block; DeepSpeed's steps have
  more (``partition_syncs``): after the forward the output's ``to_meta`` (every stage but the last), in the backward
  the gradient's ``from_meta`` after the output's all-gather (every stage but the last) and, after it, the input
  gradient's ``to_meta`` in ``SendGrad`` (every stage but the first). Each is charged the same host time
  (assumption: the Python between a drain and the next launch costs what a drained Megatron pipeline step does).
  ``PartitionedTensor.full()`` zero-fills the whole message, copies the rank's own part into its slice
  (``buf.copy_(self.local_data)``), all-gathers into its tp slices with a list ``dist.all_gather`` (which PyTorch
  1.x's ProcessGroupNCCL runs into a flattened buffer of its own and copies out, part by part) and returns a clone
  (``flat_tensor.view(...).clone().detach()``): 5 + 2/tp B of HBM traffic per message byte (``full_bytes_per_byte``)
  in four kernels (``full_ops``; the tp copy-outs folded into one) for each rebuilt message (the received activation,
  the re-gathered output, the received gradient); the 1/tp parts are cloned too, with their meta (``partition_clones``:
  the sender's partitioning of its output and of its input gradient, the receiver's two clones of a received
  activation).
- The BF16_Optimizer's passes over the stage's fp32 gradients once per step: ``allreduce_bucket``'s cast to bf16,
  post-scaling (``mul_`` by 1/dp after the all-reduce) and copy back (``allreduce_bucket_bytes_per_param``),
  ``get_global_norm_of_tensors`` over every gradient, ``clear_hp_grads``' ``zero_`` (``BF16_STEP_BYTES_PER_PARAM``);
  and ``all_gather_dp_groups``' copy-out of the gathered bf16 parameters (``BF16_PARAM_GATHER_COPY_BYTES_PER_PARAM``);
  added to the optimizer's time.

- BigScience's ``--layernorm-tp-auto-sync`` where a scenario states it (``parallelism.layernorm_tp_auto_sync``: BLOOM
  176B from March 24, 2022): two blocking all-reduces of a norm's weight and bias over the TP group before every
  LayerNorm forward, the recompute's included (``layernorm_syncs``, ``layernorm_sync_stream``;
  docs/calibration/round-29.md, "Round 29: the BLOOM run's layer-norm syncs and the old A100 stacks").

No synchronisation of the instruction loop itself: ``_exec_forward_pass`` starts ``tput_timer``, whose
``ThroughputTimer.start`` synchronises only once ``total_step_count`` reaches ``start_step``, a count only
``DeepSpeedEngine.step()`` advances (through ``tput_timer.stop``), which the PipelineEngine disables; its other timers
run under ``wall_clock_breakdown`` (false in BLOOM's ds_config) but ``train_batch``'s, once a step
(docs/calibration/round-16.md, "Session 16: DeepSpeed's PipelineEngine re-audited").

Not modelled (each well under 1% of these runs' steps): the shapes sent before the first message only
(``_send_tensor_meta``), the PartitionedTensor's meta sent with every message (a few int64: one more transfer's
latency), the gradient clipping's ``mul_`` (it runs only when the norm exceeds the threshold), the
norm's per-tensor ``.item()`` (one host round trip per parameter tensor, once per step); the tied-embedding
all-reduce runs before the data-parallel one in DeepSpeed (after it here: the same sum on the stages that run both).
``update_hp_grads`` loops over the parameter tensors, two kernels each (the cast to fp32, the add): charged as
two HBM-bound kernels per tensor of the chunk's layers, each with the stream's per-kernel time like every kernel of
the model (autograd's 16-bit accumulation: one per tensor); the embedding and final-norm tensors of the first and
last stages (two to four) are left out (docs/calibration/round-15.md, "Round 15: the A100 runs of 2021-22").
"""

from __future__ import annotations

import dataclasses

from simcluster.parallel import memory
from simcluster.parallel.memory import uses_bf16_optimizer  # the memory model counts its states by it
from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.workload import kernels, optimizer_step
from simcluster.workload.ops import Op

# BF16_Optimizer.update_hp_grads, per parameter and microbatch: lp.grad.to(float32) reads the bf16 gradient (2 B) and
# writes an fp32 copy (4 B); hp_grad.add_(copy) reads both (4 + 4 B) and writes the fp32 gradient (4 B).
# deepspeed/runtime/bf16_optimizer.py (DeepSpeed 0.6-0.7, 2022); the pipeline engine calls it after every
# microbatch's backward (deepspeed/runtime/pipe/engine.py, _exec_backward_pass: "manually call because we don't call
# optimizer.backward()").
BF16_OPTIMIZER_BYTES_PER_PARAM = 2 + 4 + 4 + 4 + 4
# ... as two kernels per parameter tensor: update_hp_grads loops over the tensors in Python,
# ``hp_grad.data.add_(lp.grad.data.to(hp_grad.dtype).view(hp_grad.shape))``: the cast, then the add (same file)
BF16_OPTIMIZER_KERNELS_PER_TENSOR = 2
# autograd's AccumulateGrad adds a new 16-bit gradient into the existing .grad in place: read both, write one
# (torch/csrc/autograd/functions/accumulate_grad.h, "variable_grad += new_grad" when grad mode is off)
AUTOGRAD_ACCUMULATE_BYTES_PER_PARAM = 3 * 2
AUTOGRAD_ACCUMULATE_KERNELS_PER_TENSOR = 1   # AccumulateGrad runs per parameter tensor: one in-place add each
# PartitionedTensor.full() before each backward of a stage that sent its output (all but the last)
OUTPUT_REGATHERS = 1
# PartitionedTensor.full() (deepspeed/runtime/utils.py, 0.5-0.7, 2021-2022): torch.zeros of the whole message (1 B
# written per byte), the rank's own part copied into its slice (``if part_id == self.rank: buf.copy_(self.local_data)``:
# 1 B read and 1 B written per part byte, one kernel), dist.all_gather into its tp slices, then .clone() of it (1 B
# read, 1 B written)
FULL_ZERO_BYTES_PER_BYTE = 1
FULL_OWN_PART_COPY_BYTES_PER_PART_BYTE = 2
FULL_CLONE_BYTES_PER_BYTE = 2
# ... and the all_gather's copy-out: dist.all_gather with a list of output tensors is ProcessGroupNCCL::allgather
# (PyTorch 1.8-1.12, torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp), which gathers into a flattened buffer of its
# own (flatten_for_scatter_gather) and then, on the NCCL stream, copies each of the tp parts into the caller's
# tensors ("Copy the flattened output tensors to the outputs": outputTensors[i][j].copy_(outputFlattened[i][j])):
# one read and one write of the message, tp copy kernels, before the caller's stream may go on (work.wait())
ALLGATHER_COPY_OUT_BYTES_PER_BYTE = 2
# The partition's own copies, each a .clone() (read + write) of the rank's 1/tp of the message, one kernel each, and
# of its int64 meta (a few bytes, one kernel each) (deepspeed/runtime/pipe/engine.py and utils.py, 2021-2022):
# the sender's PartitionedTensor._partition_tensor (``.narrow(...).clone()``) of its output (forward, every stage but
# the last) and of its input gradient (SendGrad, every stage but the first); the receiver's
# ``recvd[idx] = buffer.clone().detach()`` of the meta and the part in _exec_recv_activations and again
# ``tuple(t.clone() for t in self.pipe_buffers['inputs'][buffer_id])`` in _exec_forward_pass (every stage but the
# first). The received gradient lands in grad_layer without a copy.
PARTITION_CLONE_BYTES_PER_PART_BYTE = 2
# BF16_Optimizer once per step over the stage's fp32 gradients, 4 B each (bf16_optimizer.py step:
# get_global_norm_of_tensors reads every gradient, clear_hp_grads zero_() writes every one)
BF16_STEP_BYTES_PER_PARAM = 4 + 4
# The dtype its data-parallel all-reduce runs in. _bf16_reduce_grads -> buffered_allreduce_fallback ->
# allreduce_no_retain -> allreduce_and_copy -> allreduce_bucket (deepspeed/runtime/engine.py, 2022) casts the flat
# fp32 gradient to the engine's communication_data_type when they differ (``tensor_to_allreduce =
# tensor.to(self.communication_data_type)``), all-reduces and post-scales that copy, and copies it back
# (``tensor.copy_(tensor_to_allreduce)``). The property's default for a bf16 run at ZeRO stage 0, with no
# "communication_data_type" in the config (BLOOM's ds_config has none), is bf16: ``elif self.fp16_enabled() or
# self.zero_optimization_stage(): return torch.float16 / elif self.bfloat16_enabled(): return torch.bfloat16``
# (engine.py of early 2022, the base of the BF16_Optimizer's microsoft/DeepSpeed#1801; at 9b70ce56, July 2022, #2071
# links engine.py L702-L711 for fp16 being used under ZeRO with bf16 on; #3370's thread: "in v0.6.0 ... the gradients
# were reduced as bfloat16"). The property came with #1487 (November 2021, which replaced ``fp32_allreduce``); its
# default changed later (#2145, #2970 "Make fp32 default communication data type for bf16/fp32 training" of March
# 2023, #3370). The BF16_Optimizer runs only at ZeRO stage 0 in the 2022 versions (``_exec_reduce_grads``: "only bf16
# + z1 are supported"), so its fp32 gradients (accumulated in fp32 by ``update_hp_grads``; ``get_grads_for_reduction``
# returns ``fp32_groups_gradients_flat``) travel as bf16. Round 24's review re-read this chain
# (docs/calibration/round-24.md, "Round 24: review of DeepSpeed's bf16 all-reduce").
BF16_OPTIMIZER_COMM_DTYPE = "bf16"


def allreduce_bucket_bytes_per_param(grad_dtype: str, comm_dtype: str) -> float:
    """HBM bytes per parameter of ``allreduce_bucket`` around its all-reduce of a ``grad_dtype`` gradient in
    ``comm_dtype``: the cast (read g, write c) and the copy back (read c, write g) when the two differ, and the
    post-scaling ``mul_(predivide / dp)`` of the reduced copy (read and write c; gradient_predivide_factor 1)."""
    g, c = BYTES_PER_ELEMENT[grad_dtype], BYTES_PER_ELEMENT[comm_dtype]
    cast = (g + c) + (c + g) if c != g else 0.0
    return cast + 2 * c
# ... and over the stage's bf16 parameters, 2 B each: all_gather_dp_groups (deepspeed/runtime/utils.py, 2022) gathers
# the updated partitions with dist.all_gather into a list of shards, which ProcessGroupNCCL copies out of its own
# flattened buffer (ALLGATHER_COPY_OUT_BYTES_PER_BYTE): one read and one write of every parameter
BF16_PARAM_GATHER_COPY_BYTES_PER_PARAM = ALLGATHER_COPY_OUT_BYTES_PER_BYTE * 2


def accumulation_bytes_per_param(precision: str, grad_dtype: str) -> float:
    """HBM bytes per parameter and microbatch of DeepSpeed's gradient accumulation."""
    if uses_bf16_optimizer(precision, grad_dtype):
        return BF16_OPTIMIZER_BYTES_PER_PARAM
    return AUTOGRAD_ACCUMULATE_BYTES_PER_PARAM


def accumulation_kernels_per_tensor(precision: str, grad_dtype: str) -> int:
    """Kernels per parameter tensor and microbatch of DeepSpeed's gradient accumulation."""
    if uses_bf16_optimizer(precision, grad_dtype):
        return BF16_OPTIMIZER_KERNELS_PER_TENSOR
    return AUTOGRAD_ACCUMULATE_KERNELS_PER_TENSOR


def accumulation_ops(params: float, tensors: int, per_param: float, kernels_per_tensor: int) -> list[Op]:
    """The accumulation of ``params`` gradients held in ``tensors`` tensors: ``kernels_per_tensor`` HBM-bound kernels
    per tensor, the bytes shared among them (HBM-bound kernels' time is linear in their bytes, so the split does not
    change the device time; each kernel pays the stream's per-kernel time)."""
    count = max(1, tensors * kernels_per_tensor)
    return [Op("deepspeed_grad_accumulate", "memory", params / count, per_param * params / count)] * count


def partition_syncs(phase: str, first: bool, last: bool) -> int:
    """Host syncs of the partitioned messages in a block beyond Megatron's one per pipeline step: after the forward
    the output's ``to_meta`` (not on the last stage, which sends nothing); in the backward the received gradient's
    ``from_meta`` after the output's re-gather (not on the last stage, which receives none) and the input gradient's
    ``to_meta`` (``SendGrad``; not on the first stage). The forward's ``from_meta`` of the received input, and the
    backward's of the output, wait for the exchange: the drain Megatron's step has too."""
    if phase == "forward":
        return int(not last)
    return int(not last) + int(not first)


def partition_fulls(phase: str, first: bool, last: bool) -> int:
    """Messages rebuilt with ``PartitionedTensor.full()`` in a block: the received input (forward, not on the first
    stage), the re-gathered output and the received gradient (backward, not on the last stage)."""
    if phase == "forward":
        return int(not first)
    return 2 * int(not last)


def full_bytes_per_byte(tp: int) -> float:
    """HBM bytes per message byte of one ``PartitionedTensor.full()`` over ``tp`` ranks: 5 + 2/tp."""
    return (FULL_ZERO_BYTES_PER_BYTE + FULL_OWN_PART_COPY_BYTES_PER_PART_BYTE / tp + ALLGATHER_COPY_OUT_BYTES_PER_BYTE
            + FULL_CLONE_BYTES_PER_BYTE)


def full_ops(message_bytes: float, tp: int) -> list[Op]:
    """One ``PartitionedTensor.full()`` of a ``message_bytes`` message over ``tp`` ranks, as the GPU runs it: the
    zero-fill, the copy of the rank's own part into its slice, ProcessGroupNCCL's copy-out of the tp parts, the clone
    (HBM-bound kernels; the all-gather itself is timed on the fabric).

    The tp copy-outs are one op of all tp parts' bytes: ProcessGroupNCCL issues them in a C++ loop inside the one
    Python ``dist.all_gather`` call, so they should pay the measured launch latency (efficiency.yaml
    ``launch_overhead_s``) each rather than the fitted per-kernel gap meant for Python-level ops, and the op model
    has one per-kernel cost for every op (``kernels.StreamTime``): folded, they pay one gap, the tp - 1 further
    launches' latency (4 us each) left out."""
    return [Op("deepspeed_partition_zeros", "memory", 0.0, FULL_ZERO_BYTES_PER_BYTE * message_bytes),
            Op("deepspeed_partition_own_copy", "memory", 0.0,
               FULL_OWN_PART_COPY_BYTES_PER_PART_BYTE * message_bytes / tp),
            Op("deepspeed_allgather_copy_out", "memory", 0.0, ALLGATHER_COPY_OUT_BYTES_PER_BYTE * message_bytes),
            Op("deepspeed_partition_clone", "memory", 0.0, FULL_CLONE_BYTES_PER_BYTE * message_bytes)]


def partition_clones(phase: str, first: bool, last: bool) -> int:
    """Clones of a rank's part of a partitioned message in a block (each with its meta's): the received input's two
    (``_exec_recv_activations``, ``_exec_forward_pass``; not on the first stage) and the output's partitioning (not on
    the last stage) in the forward; the input gradient's partitioning (``SendGrad``; not on the first stage) in the
    backward."""
    if phase == "forward":
        return 2 * int(not first) + int(not last)
    return int(not first)


def clone_ops(clones: int, message_bytes: float, tp: int) -> list[Op]:
    """``clones`` copies of a rank's 1/tp part of a message, each with a second launch for the meta it travels with:
    the receiver's clones copy both tensors; the sender's partitioning clones the part and ``to_meta`` copies the
    meta from the host (a memcpy on the stream)."""
    part = Op("deepspeed_partition_part_clone", "memory", 0.0,
              PARTITION_CLONE_BYTES_PER_PART_BYTE * message_bytes / tp)
    meta = Op("deepspeed_partition_meta_clone", "memory", 0.0, 0.0)
    return [part, meta] * clones


# BigScience's Megatron-DeepSpeed --layernorm-tp-auto-sync (bigscience-workshop/Megatron-DeepSpeed PR #272, merged
# 2022-03-25; the AVG form from BLOOM's iteration 21,680; renamed --sync-tp-duplicated-parameters by PR #307 of
# 2022-07-07): ``MixedFusedLayerNorm.forward`` (megatron/model/fused_layer_norm.py) first runs
# ``torch.distributed.all_reduce(self.weight, op=ReduceOp.AVG, group=tensor_model_parallel_group)`` and the same for
# ``self.bias``: synchronous calls, so the compute stream waits for each (``work.wait()``). BLOOM 176B trained with it
# from March 24, 2022 (bigscience-workshop/bigscience train/tr11-176B-ml/chronicles.md, "2022-03-24 grad clip TP sync
# bug fixing" and "2022-03-30": the diff of the AVG form; the final tr11-176B-ml.slurm passes
# --sync-tp-duplicated-parameters). The norms of one transformer layer (input and post-attention) and the final norm
# (the last stage) are MixedFusedLayerNorm; GPTModelPipe checkpoints the transformer layers only, so a full
# recompute runs the layers' norms (and their all-reduces) again in the backward, not the final norm's.
LAYER_NORMS_PER_LAYER = 2


def layernorm_syncs(phase: str, layers: int, last: bool, recompute: str) -> int:
    """LayerNorm forwards of a block under ``layernorm_tp_auto_sync`` (each all-reduces its parameters): the layers'
    two norms and, on the last stage, the final norm in the forward; the layers' norms again in the backward's full
    recompute."""
    if phase == "forward":
        return LAYER_NORMS_PER_LAYER * layers + int(last)
    return LAYER_NORMS_PER_LAYER * layers if recompute == "full" else 0


def layernorm_sync_stream(norms: int, tensors_per_norm: int, hidden: int, weight_element: float, tp_group,
                          collective_time_s, gpu, precision: str) -> kernels.StreamTime:
    """``norms`` LayerNorm forwards' parameter all-reduces over ``tp_group``: ``tensors_per_norm`` per norm (weight
    and bias), each of ``hidden`` 16-bit elements, an NCCL launch (host only) whose all-reduce the compute stream
    waits for, at its time alone on the fabric (latency-bound: a few tens of kB). Nothing at tp 1."""
    count = norms * tensors_per_norm
    if not count or len(tp_group) < 2:
        return kernels.StreamTime()
    launches = [Op(kernels.HOST_ONLY_LAUNCH, "memory", 0.0, 0.0)] * count
    wait_s = count * collective_time_s("allreduce", tuple(tp_group), hidden * weight_element)
    return kernels.stream_time(launches, gpu, precision) + kernels.StreamTime(device_s=wait_s)


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
    per_tensor = accumulation_kernels_per_tensor(precision, p.grad_reduce_dtype)
    # Megatron-DeepSpeed's ParallelTransformerLayer (megatron/model/transformer.py) holds the same tensors as a
    # Megatron-Core layer: four linear weights, their biases where the model has them, the two norms' parameters
    layer_tensors = optimizer_step.parameter_tensors_per_layer(scenario.model.norm, scenario.model.linear_biases)
    norm_tensors = optimizer_step.tensors_per_norm(scenario.model.norm)
    regather = step_plan.p2p_gather_bytes > 0
    tp_group = tuple(step_plan.layout.group(0, "tp"))
    gather_s = collective_time_s("all_gather", tp_group, step_plan.p2p_gather_bytes) if regather else 0.0
    sync_s = kernels.pipeline_step_overhead_s()
    full = full_ops(step_plan.p2p_gather_bytes, p.tp)
    bf16_optimizer = uses_bf16_optimizer(precision, p.grad_reduce_dtype)
    # the share of the gradient buffer's bytes the data-parallel all-reduce moves (BF16_OPTIMIZER_COMM_DTYPE)
    comm_share = (BYTES_PER_ELEMENT[BF16_OPTIMIZER_COMM_DTYPE] / BYTES_PER_ELEMENT[p.grad_reduce_dtype]
                  if bf16_optimizer else 1.0)
    chunks = []
    for cost in step_plan.chunks:
        first, last = cost.chunk == 0, cost.chunk == step_plan.chunk_count - 1
        params = cost.param_bytes / weight_element
        accumulate = accumulation_ops(params, cost.layers * layer_tensors, per_param, per_tensor)
        changes = {"grad_bytes": cost.grad_bytes * comm_share} if comm_share != 1.0 else {}
        for phase, extra in (("forward", []), ("backward", accumulate)):
            before = getattr(cost, f"{phase}_stream")
            syncs = 0
            if regather:  # the partitioned messages' rebuilds and host round trips
                extra = (full * partition_fulls(phase, first, last)
                         + clone_ops(partition_clones(phase, first, last), step_plan.p2p_gather_bytes, p.tp) + extra)
                syncs = partition_syncs(phase, first, last)
            norm_sync = (layernorm_sync_stream(layernorm_syncs(phase, cost.layers, last, t.activation_recompute),
                                               norm_tensors, scenario.model.hidden, weight_element, tp_group,
                                               collective_time_s, gpu, precision)
                         if p.layernorm_tp_auto_sync else kernels.StreamTime())
            if not extra and not syncs and not norm_sync.kernels:
                continue
            stream = before + kernels.stream_time(extra, gpu, precision) + norm_sync
            changes[f"{phase}_stream"] = stream
            changes[f"{phase}_clock_s"] = stream.clock_bound_s()
            changes[f"{phase}_compute_s"] = (getattr(cost, f"{phase}_compute_s") + stream.elapsed_s()
                                             - before.elapsed_s() + syncs * sync_s)
        if regather and not last:
            calls = cost.tp_collectives.get("backward", ())
            changes["tp_collectives"] = {**cost.tp_collectives,
                                         "backward": (*calls, ("all_gather", OUTPUT_REGATHERS))}
            changes["backward_tp_comm_s"] = cost.backward_tp_comm_s + OUTPUT_REGATHERS * gather_s
        chunks.append(dataclasses.replace(cost, **changes))
    optimizer_s = step_plan.optimizer_s
    if bf16_optimizer:
        step_bytes = (allreduce_bucket_bytes_per_param(p.grad_reduce_dtype, BF16_OPTIMIZER_COMM_DTYPE)
                      + BF16_STEP_BYTES_PER_PARAM + BF16_PARAM_GATHER_COPY_BYTES_PER_PARAM)
        optimizer_s = [seconds + kernels.op_time_s(Op("bf16_optimizer_step_passes", "memory", params,
                                                      step_bytes * params), gpu, precision)
                       for seconds, params in zip(optimizer_s, step_plan.stage_params, strict=True)]
    return dataclasses.replace(step_plan, chunks=chunks, p2p_sequential=True, optimizer_s=optimizer_s,
                               dp_grad_op=dp_grad_op(precision, p.grad_reduce_dtype, p.zero_stage))
