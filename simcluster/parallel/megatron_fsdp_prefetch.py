"""Megatron-FSDP's parameter all-gather prefetch: whether a unit's gather runs ahead, beside the previous unit's
compute, or at the unit's own hook with the compute waiting for it.

What Megatron-FSDP does (NVIDIA/Megatron-LM megatron/core/distributed/fsdp/src/megatron_fsdp/, read at 00caa53a and
in the earlier in-tree copy of ``param_and_grad_buffer.py``):
- the pre-forward hook of an FSDP unit (``_pre_forward_param_unshard``) and its pre-backward hook
  (``_pre_backward_param_unshard``) call ``all_gather_and_wait_parameters_ready`` with the unit's parameters: the
  unit's buckets are gathered on the all-gather stream and the compute stream then waits for them
  (``wait_bucket_ready``);
- ``AllGatherPipeline.all_gather_params`` adds the next bucket in pass order (forward or backward) only while the
  buckets already requested, the current unit's included, hold fewer than ``suggested_AG_prefetch_size`` elements:
  ``if all_gather_size >= suggested_AG_prefetch_size: break`` before the first next bucket is added; with
  ``fsdp_double_buffer`` it also stops at two units;
- ``MegatronFSDP._init_fsdp_param_and_grad_buffer`` sets ``suggested_AG_prefetch_size =
  suggested_communication_unit_size // 2`` (00caa53a; the earlier copy: the unit size itself); left unset, the
  unit size is twice the mean FSDP unit's elements ("This ensures we process the current FSDP module and attempt
  to prefetch the next FSDP module"), at least 1e9 in 00caa53a.

So a unit holding at least the budget (``PREFETCH_SHARE`` of the stated unit size) prefetches nothing: its gather is
issued at its own hook, after the previous unit's compute, and waited for at once. Megatron-Bridge's Llama 3 70B
Blackwell recipes state ``suggested_communication_unit_size = 800000000`` (scripts/performance/configs/llama/
llama3_llm_pretrain.py, every stored version read), below one 855.6 M-element Llama 3 70B layer: under either
copy's budget (400 M or 800 M) no unit is prefetched. The earlier copy's budget (the unit size) would prefetch a
unit of between half the size and the size; 00caa53a's does not: ``PREFETCH_SHARE`` follows 00caa53a.
"""

from __future__ import annotations

from simcluster.parallel.memory import layer_params_per_rank

# suggested_AG_prefetch_size = suggested_communication_unit_size // 2 (megatron_fsdp.py @ 00caa53a)
PREFETCH_SHARE = 0.5


def unit_elements(scenario) -> float:
    """Elements of one FSDP unit (a transformer layer) in a tensor-parallel rank's buffers: the layer's parameters
    on that rank (``memory.layer_params_per_rank``), what ``bucket_index.size`` sums over the unit's buckets."""
    return layer_params_per_rank(scenario.model, scenario.parallelism.tp)


def prefetches_next_unit(scenario) -> bool:
    """Whether the next FSDP unit's all-gather is issued while the current one computes: always, except on
    Megatron-FSDP (ZeRO-3 on Megatron-Core) with ``parallelism.suggested_communication_unit_size`` stated and a
    unit of at least ``PREFETCH_SHARE`` of it (the prefetch budget)."""
    p = scenario.parallelism
    size = p.suggested_communication_unit_size
    if size is None or not (p.zero_stage == 3 and scenario.megatron_core):
        return True
    return unit_elements(scenario) < PREFETCH_SHARE * size
