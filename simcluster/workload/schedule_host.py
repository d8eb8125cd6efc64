"""Where Megatron's pipeline schedules drain the compute stream, per configuration, read from framework source, and
what a drain costs at the measured host constants (docs/calibration/round-16.md "Round 16: pipeline step attribution").
The engine does not charge these drains: measured here at 0.3-1.8% of the fitted pipeline step on the calibration runs
(``scripts/fit_host_overheads.py`` prints them), they are a check on that fitted step, not a term of the step time.
The counts are LOWER BOUNDS: Megatron-Core's 1F1B warm-up and cool-down call two exchanges per block (recv_forward
then send_forward; recv_backward then send_backward), each synchronizing, where one is counted; Megatron-LM 2021's
``_Timer.start``/``stop`` synchronize as well, which are not counted.

A drain is a host call that waits for the device (``torch.cuda.synchronize()``, a tensor read as a Python bool):
the stream empties, and the next kernel starts only once the host has issued it. At the measured host model the
stream idles for one launch (``efficiency.yaml`` ``launch_overhead_s``, 4 us) plus one dispatch
(``host_overhead.dispatch_s`` x ``cpu_ratio``, 13.5 us on x86); after that the device is the slower side again
(every kernel takes at least the stream gap, above the dispatch: ``kernels.synced_stall_s`` on an empty stream).

Drains per (model chunk, microbatch, phase), each with its source:

- Megatron-Core ``p2p_communication._communicate``: ``torch.cuda.synchronize()`` after every exchange when
  ``config.batch_p2p_comm and config.batch_p2p_sync`` (batch_p2p_sync defaults to True, "to protect against race
  condition when using batch_isend_irecv()"). NeMo 2 (``megatron_comm_overlap.py``), Megatron-Bridge and
  Megatron-LM (``batch_p2p_comm = not overlap_p2p_comm``) set batch_p2p_comm for non-interleaved pipelines (vp = 1),
  and ``overlap_p2p_comm`` (no batching, no synchronize: the schedule waits on the NCCL handles, a stream wait) for
  interleaved ones. Non-interleaved 1F1B calls one exchange per block (recv_forward / send_forward_recv_backward /
  send_backward_recv_forward / send_backward): one drain a block counted (two in warm-up and cool-down, where
  the receive and the send are separate calls). Interleaved with batch_p2p_comm (the Nemotron-4
  340B launcher conf, ``overlap_p2p_comm: False``): one exchange per forward-backward pair in the steady state
  (send_forward_backward_recv_forward_backward), one per block in warm-up and cool-down: ``BATCHED_INTERLEAVED``.
- Megatron-LM 2021 (``layer_backward: eager`` scenarios): ``_communicate`` waits on every request and calls
  ``torch.cuda.synchronize()`` unconditionally, and every ``_Timer.start``/``stop`` calls it too (forward-compute,
  the p2p timers): at least one drain before every block (one counted).
- Megatron-LM ``pretrain_gpt.loss_func`` with ``--check-for-nan-in-loss-and-grad`` (on by default): ``assert not
  loss[0].isnan()`` (r0.5-r0.9), ``rerun_state_machine.validate_result(..., torch.isnan)`` later: a host read of the
  loss once per microbatch on the last pipeline stage (the last model chunk's forward). NeMo's loss reductions
  (1.x ``MegatronGPTModel.loss_func``, 2.x ``MaskedTokenLossReduction``) read nothing at cp = 1; with cp > 1 NeMo 2's
  ``masked_token_loss_context_parallel`` evaluates ``num_valid_tokens_in_ub < 0.5``: one read a microbatch.

Not drains (stream waits or host-only work, hidden while the host is ahead): ``req.wait()`` on NCCL p2p handles
(``Work.wait`` makes the current stream wait on the NCCL stream's event; the host blocks only with
TORCH_NCCL_BLOCKING_WAIT), ``deallocate_output_tensor`` (``out.data = torch.empty((1,))``), ``set_is_first_microbatch``
and ``no_sync`` (Python attribute flips). Megatron-Core timers below the timing log level (default 0; the schedule's
are level 2) are dummies.

Synchronous collectives the compute stream waits on (``async_op=False``: ``Work.wait`` on the current stream), once a
microbatch: the reporting loss's all-reduce over the data-parallel group on the last stage, every framework
(``average_losses_across_data_parallel_group``, pretrain_gpt's ``all_reduce(reporting_loss, dp)``), and Megatron-LM
pretrain_gpt's ``get_batch_on_this_tp_rank`` broadcasts over TP on the first and last stage (NeMo loads on every
rank). Neither is modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from simcluster.workload import kernels

# Interleaved schedule with batch_p2p_comm: drains per block in the steady state (one batched exchange per forward-
# backward pair, forward_backward_pipelining_with_interleaving's send_forward_backward_recv_forward_backward).
BATCHED_INTERLEAVED = 0.5


@dataclass(frozen=True)
class Drains:
    """Stream drains of one pipeline configuration: per block (every model chunk, microbatch and phase) and per
    microbatch on the last stage only (the loss)."""

    per_block: float
    per_last_stage_microbatch: float


def drains(pp: int, virtual_stages: int, megatron2021: bool, overlap_p2p_comm: bool | None = None,
           loss_nan_check: bool = False, cp: int = 1, nemo2_loss: bool = False) -> Drains:
    """The drains of a configuration (module docstring for each source). ``overlap_p2p_comm`` None: what NeMo and
    Megatron-LM set, on exactly when interleaved. ``loss_nan_check``: Megatron-LM's pretrain_gpt loss (on by
    default there); ``nemo2_loss`` with cp > 1: NeMo 2's context-parallel token count read."""
    per_block = 0.0
    if pp > 1:
        overlap = virtual_stages > 1 if overlap_p2p_comm is None else overlap_p2p_comm
        if megatron2021 or virtual_stages == 1:
            per_block = 1.0
        elif not overlap:
            per_block = BATCHED_INTERLEAVED
    per_mb = float(loss_nan_check) + float(nemo2_loss and cp > 1)
    return Drains(per_block, per_mb)


def drain_stall_s(gpu_name: str) -> float:
    """The stream's idle after one drain: the first kernel's launch (launch_overhead_s) after its dispatch on the
    host CPU of ``gpu_name`` (dispatch_s x cpu_ratio); both measured (efficiency.yaml)."""
    return kernels.launch_overhead_s() + kernels.host_model().dispatch_s * kernels.host_cpu_ratio(gpu_name)


def drained_s_per_step(d: Drains, blocks_per_stage: int, microbatches: int, gpu_name: str) -> float:
    """The drains' idle on the last stage's critical path per step: every block's drains and the loss's."""
    return (d.per_block * blocks_per_stage + d.per_last_stage_microbatch * microbatches) * drain_stall_s(gpu_name)
