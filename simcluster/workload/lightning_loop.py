"""PyTorch Lightning 1.8's training loop as flash-attention's own training script runs it (``training.trainer:
lightning``; Dao-AILab/flash-attention ``training/``, the stack of the FlashAttention-2 paper's GPT rows; docs/
calibration/round-33.md "Round 33: what flash-attention's training script runs beyond the layers").

**What runs each microbatch beyond the model** (Lightning's ``batch`` is one microbatch under
``accumulate_grad_batches``). ``training/src/tasks/seq.py`` ``SequenceLMModel.shared_step``, after the loss:

1. ``metrics(output, targets, loss=loss)``: the ``MetricCollection`` of ``metrics: [perplexity, num-tokens]``
   (experiment/pile/base.yaml). torchmetrics 0.10.3 (the training Dockerfile's pin) runs ``Perplexity``
   (``full_state_update = False``) through ``_forward_reduce_state_update``: ``reset()`` clones both states'
   defaults, ``update`` (``training/src/metrics/perplexity.py``: ``loss.double() * count`` added into
   ``total_log_probs``, ``count`` added into ``count``), ``compute`` (``torch.exp(total_log_probs / count)``), and
   ``_reduce_states`` adds the saved global states back (``dist_reduce_fx="sum"``): 2 + 4 + 2 + 2 kernels.
   ``NumTokens`` overrides that method: ``self.count += target.numel()``, one kernel. The loss is passed in: no
   second cross entropy (unlike Composer's metrics, workload/composer_train_metrics.py).
2. ``self.log("train/loss", loss, on_step=True, on_epoch=True, sync_dist=True)`` (``eval.log_on_step: True``):
   Lightning 1.8.6's ``_ResultMetric.update`` runs ``self._forward_cache = self.meta.sync(value.clone())``, and
   ``_sync_ddp`` is ``torch.distributed.barrier(group)`` then ``all_reduce`` and ``/ world_size``. An NCCL barrier
   is a one-element all-reduce whose ``wait()`` calls ``cudaDeviceSynchronize`` (ProcessGroupNCCL ``WorkNCCL::
   synchronizeInternal`` with ``barrierTensors_``): **the host waits for the forward to finish** (``HOST_SYNC``).
   Then the epoch mean's ``value + value * batch_size`` and ``cumulated_batch_size + batch_size``: the clone, two
   one-element NCCL kernels, the division, three accumulation kernels.
3. ``self.log_dict(metrics, ..., prog_bar=True, sync_dist=True)``: Metric objects, logged by reference (no kernel;
   Lightning does not sync Metric objects on step).
4. Lightning's closure: ``closure_loss / accumulate_grad_batches`` and ``closure_loss.detach().clone()`` (two
   kernels), then ``loss.backward()``.
5. ``on_train_batch_end``: the default ``TQDMProgressBar`` (refresh rate 1, rank 0) reads the progress-bar metrics
   (``convert_tensors_to_scalars``: ``.item()``), **a second drain, after the backward** (``HOST_SYNC``); the next
   microbatch's forward starts from an empty stream. The other ranks meet rank 0 at the next barrier. Charged at
   the head of the microbatch's list (``microbatch_ops``): the race after it is then run over the metric kernels,
   not the forward's first ones; both are device-bound, so the idle is the first launch's dispatch either way.

18 one-element kernels, 2 NCCL kernels, 2 drains a microbatch. Each kernel is charged its launch (the stream's gap);
each drain the stream's idle while the host issues what follows (``kernels.synced_stall_s``: the first launch's
dispatch). What the model cannot charge: the Python Lightning runs between a drain and the next launch (callbacks,
the loop, the data fetch), unmeasured for this stack; Lightning's own CI lets its loop cost up to 5 ms a batch more
than plain PyTorch (tests/parity_pytorch ``ParityModuleRNN``: 0.05 s an epoch of 10 batches), an upper bound only.

**Per step** (``clip_over``): Lightning clips with ``torch.nn.utils.clip_grad_norm_`` over
``optimizer.param_groups``' parameters (``PrecisionPlugin.clip_grad_by_norm`` -> ``main_params``), and
``ZeroRedundancyOptimizer`` keeps every parameter in its ``param_groups`` (its local shard is ``optim``): the norm
and the scaling run over the whole local gradient, not the rank's optimizer shard (``optimizer_step.Pass.over``
``buffer``). Not charged (the PyTorch of the paper's runs is not stated): torch AdamW's foreach path (2.0's default)
against the fused kernel modelled, and a per-tensor clip loop (1.13) against a foreach one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simcluster.workload import kernels
from simcluster.workload.ops import Op

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario

SCALAR = 8.0   # bytes a one-element kernel moves at most (an fp64 read and write): no roofline to speak of

# In issue order (module docstring, steps 1-5); the first drain stands for the previous microbatch's progress bar
_SEQUENCE: tuple[str, ...] = (
    kernels.HOST_SYNC,                                            # 5. progress bar .item() (previous microbatch)
    "Perplexity reset: total_log_probs default clone", "Perplexity reset: count default clone",     # 1.
    "Perplexity update: loss.double()", "Perplexity update: * count", "Perplexity update: total_log_probs +=",
    "Perplexity update: count +=",
    "Perplexity compute: total_log_probs / count", "Perplexity compute: exp",
    "Perplexity _reduce_states: total_log_probs", "Perplexity _reduce_states: count",
    "NumTokens update: count +=",
    "log train/loss: value.clone()", "barrier: NCCL one-element all-reduce",                          # 2.
    kernels.HOST_SYNC,                                            # barrier's wait(): cudaDeviceSynchronize
    "sync_dist: NCCL all_reduce", "sync_dist: / world_size",
    "epoch mean: value * batch_size", "epoch mean: value +", "epoch mean: cumulated_batch_size +",
    "closure: loss / accumulate_grad_batches", "closure: loss.detach().clone()",                       # 4.
)
KERNELS = sum(name != kernels.HOST_SYNC for name in _SEQUENCE)
DRAINS = sum(name == kernels.HOST_SYNC for name in _SEQUENCE)


def applies(scenario: Scenario) -> bool:
    """Whether the scenario runs flash-attention's Lightning training loop (``training.trainer: lightning``)."""
    return scenario.training.trainer == "lightning"


def microbatch_ops() -> list[Op]:
    """The loop's kernels and drains of one microbatch, in issue order (module docstring): one-element
    memory-bound kernels and ``kernels.HOST_SYNC`` markers."""
    return [Op(name, "memory", 0.0, 0.0) if name == kernels.HOST_SYNC else Op(name, "memory", 1.0, SCALAR)
            for name in _SEQUENCE]


def clip_over(scenario: Scenario) -> str:
    """What the gradient clipping runs over (``optimizer_step.Pass.over``): Lightning clips every parameter of the
    optimizer's ``param_groups`` (``buffer``); other stacks the rank's optimizer shard."""
    return "buffer" if applies(scenario) else "shard"
