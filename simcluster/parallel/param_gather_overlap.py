"""Megatron-Core's ``overlap_param_gather_with_optimizer_step``: each pipeline rank's first model chunk has an
optimizer of its own, and that chunk's parameter all-gather is dispatched as soon as it is stepped, under the rest of
the optimizer step (``parallelism.overlap_param_gather_with_optimizer_step``).

What the framework does (NVIDIA/Megatron-LM, megatron/core; the release-0.15 to 0.17 era the NeMo 25.11 / 26.02 /
26.04 rows state, read in the stored files of that era and their forks, docs/calibration.md "Round 37: Megatron-Core's
parameter gather overlapped with the optimizer step"):

- ``optimizer/__init__.py`` ``get_megatron_optimizer``: "Separate out first model chunk if overlapping param AG with
  optimizer step": ``all_dense_model_chunks = [[model_chunks[0]], model_chunks[1:]]`` with the flags ``[True,
  False]``, so two distributed optimizers, the first over the rank's first model chunk alone, and only that chunk's
  DDP gets ``overlap_param_gather_with_optimizer_step = True``.
- ``optimizer/optimizer.py`` ``ChainedOptimizer.step``: ``prepare_grads`` and the gradient norm (its ``.item()``)
  and clipping over both, then ``step_with_ready_grads``: for each optimizer in turn its update (Adam over its
  shard, the copy into the model weights, with fp8 parameters their cast), and right after the first one
  ``optimizer.model_chunks[0].start_param_sync(force_dispatch=True)``: the chunk's bucket groups' asynchronous
  all-gathers on the data-parallel communicator, while the host goes on to step the other chunks. The gradient
  buffers of every chunk are zeroed at the next ``train_step``'s start (``zero_grad_buffer``), also after it.
- ``distributed/distributed_data_parallel.py`` ``start_param_sync``: "If overlapping param AG with optimizer step,
  AG should not be dispatched again in forward_backward_step" (``if self.overlap_param_gather_with_optimizer_step
  and not force_dispatch: return``): the interleaved schedule's ``param_sync_func`` (``align_param_gather``) skips
  chunk 0 and still dispatches chunk 1 at the schedule's start and chunk c >= 2 at its forward; the forward
  pre-hooks only wait (``skip_next_bucket_dispatch``).
- Megatron-LM ``get_model`` and Megatron-Bridge ``provide_distributed_model``: ``disable_bucketing=(model_chunk_idx
  > 0) or overlap_param_gather_with_optimizer_step``: every chunk one bucket, the first stage's first too.
- ``arguments.py`` ``validate_args``: the flag needs ``use_distributed_optimizer``, ``overlap_param_gather`` and a
  virtual pipeline ("only supported with interleaved pipeline parallelism"); the config check refuses the rest.

In the engine (one simulated step stands for the steady state): the part of each stage's optimizer step that
follows its first chunk's update (``optimizer_tail_s``: the update, weight copy and fp8 cast of the other chunks'
shard and the zeroing of every gradient buffer, ``plan.optimizer_time_s(tail_share=...)``) runs at the step's
start, after the first chunk's gathers were queued and before the first forward, which waits for them
(``engine/data_parallel.py`` ``GatherDuringForward``): exposed is what of the gather outlasts that tail. The rest of
the optimizer step stays at the step's end. Left out: the second optimizer's own launches (a second
``multi_tensor_adam`` call and scale-update kernels, a few kernels a step).
"""

from __future__ import annotations


def later_chunks_share(chunk_params: list[float]) -> float:
    """The share of a pipeline rank's parameters (its model chunks' counts, in order) that the second optimizer
    steps: every chunk but the first."""
    total = sum(chunk_params)
    return (total - chunk_params[0]) / total if total > 0 else 0.0


def disables_bucketing(scenario) -> bool:
    """Whether every model chunk is one bucket (``disable_bucketing`` ... ``or
    overlap_param_gather_with_optimizer_step``)."""
    return bool(scenario.parallelism.overlap_param_gather_with_optimizer_step)
