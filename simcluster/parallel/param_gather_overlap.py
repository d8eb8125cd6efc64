"""Megatron-Core's ``overlap_param_gather_with_optimizer_step``: each pipeline rank's first model chunk has an
optimizer of its own, and that chunk's parameter all-gather is dispatched as soon as it is stepped, under the rest of
the optimizer step (``parallelism.overlap_param_gather_with_optimizer_step``).

What the framework does (NVIDIA/Megatron-LM, megatron/core; the release-0.15 to 0.17 era the NeMo 25.11 / 26.02 /
26.04 rows state, read in the stored files of that era and their forks, docs/calibration/round-37.md "Round 37:
Megatron-Core's parameter gather overlapped with the optimizer step"):

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

With routed experts a third optimizer, over every chunk's expert parameters, follows the second
(``get_megatron_optimizer`` appends it after the dense ones), so all of them are stepped after the dispatch; the
dispatch itself covers the first chunk's expert buckets too (``bucket_groups + expert_parallel_bucket_groups``).
The gradient norm is one over all the optimizers (``ChainedOptimizer.get_grad_norm``: the distributed optimizers
share their statistics group, one ``get_grad_norm_fp32`` and one ``.item()``; 0.15.0-0.17.0 wheels), and the
clipping of each runs before the first update. The option first ships in 0.9.0 (data/mcore_versions.yaml
``param_gather_with_optimizer_step``).

In the engine (one simulated step stands for the steady state): the part of each stage's optimizer step that
follows its first chunk's update (``optimizer_tail_s``: the update, weight copy and fp8 cast of the later
optimizers' shard, ``later_share``, and the zeroing of every gradient buffer, ``plan.optimizer_time_s(tail_share=
...)``) runs at the step's start, after the first chunk's gathers were queued and before the first forward, which
waits for them (``engine/data_parallel.py`` ``GatherDuringForward``): exposed is what of the gather outlasts that
tail. The head (the gradient copy and norm over the whole shard, then the first chunk's update) stays at the step's
end. Each part is priced as its own block with its own calls, so the step counts the later optimizers' own
launches (a second ``multi_tensor_adam`` call, with fp8 parameters a second set of scale-update kernels).
``train_step`` then reduces over the model-parallel group (``logical_and_across_model_parallel_group``,
``reduce_max_stat_across_model_parallel_group``: an all-reduce and ``.item()`` each; Megatron-LM training.py and
Megatron-Bridge train.py) before the next step zeroes the buffers and its schedule dispatches chunk 1: no stage
starts its schedule before every stage's tail has ended. The engine runs what of each tail its step barrier did not
already cover (``visible_tails_s``) and then holds the stages at ``Simulation.model_parallel_sync``; the
reductions' own time is not charged, and the zeroing runs before them (in the tail), not after.
"""

from __future__ import annotations


def later_share(chunk_dense: list[float], chunk_experts: list[float], shards: float, expert_shards: float) -> float:
    """The share of a pipeline rank's optimizer shard stepped after its first model chunk's gather is dispatched:
    the other chunks' dense parameters (the second optimizer) and every chunk's routed experts (the expert-parallel
    optimizer, which ``get_megatron_optimizer`` appends after the dense ones over all the rank's chunks). Per model
    chunk, in order: its dense and routed-expert parameters on the rank, sharded over ``shards`` and
    ``expert_shards`` ranks by the distributed optimizer."""
    dense, experts = sum(chunk_dense) / shards, sum(chunk_experts) / expert_shards
    total = dense + experts
    return (total - chunk_dense[0] / shards) / total if total > 0 else 0.0


def disables_bucketing(scenario) -> bool:
    """Whether every model chunk is one bucket (``disable_bucketing`` ... ``or
    overlap_param_gather_with_optimizer_step``)."""
    return bool(scenario.parallelism.overlap_param_gather_with_optimizer_step)


def visible_tails_s(optimizer_s: list[float], tails_s: list[float]) -> list[float]:
    """Of each pipeline stage's optimizer tail (``tails_s``, a part of its step ``optimizer_s``), what runs after the
    barrier that ends a simulated step. Every stage starts its head together (the gradient norm's all-reduce over
    the whole job) and goes straight on into its tail, so a stage whose head (step less tail) is shorter than the
    longest ran that much of its tail while the engine's barrier holds it; what is left runs at the next step's
    start. The model-parallel reductions after ``optimizer.step()`` then release every stage together, at the
    longest head + tail less the longest head."""
    heads = [whole - tail for whole, tail in zip(optimizer_s, tails_s, strict=True)]
    longest = max(heads)
    return [max(0.0, tail - (longest - head)) for head, tail in zip(heads, tails_s, strict=True)]
