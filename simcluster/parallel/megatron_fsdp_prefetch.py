"""Megatron-FSDP's parameter all-gather prefetch: whether a unit's gather runs ahead, beside the previous unit's
compute, or at the unit's own hook with the compute waiting for it.

What Megatron-FSDP does, release by release (the megatron-core wheels 0.11.0-0.16.0, read file by file;
data/mcore_versions.yaml ``megatron_fsdp`` and ``fsdp_prefetch_counts_current_unit``):
- the pre-forward hook of an FSDP unit (``_pre_forward_param_unshard``) and its pre-backward hook (``_pre_backward``,
  a multi-grad hook on the unit's outputs) gather the unit's buckets with ``prefetch=True`` and the compute stream
  then waits for them (``wait_bucket_ready``);
- 0.12 and 0.13 (``custom_fsdp``): ``AllGatherPipeline.all_gather_params`` sums the buckets already requested, the
  current unit's included, and stops before adding the next unit once the sum reaches ``suggested_AG_prefetch_size``
  = ``suggested_communication_unit_size`` itself. A stated size no larger than one unit prefetches nothing; left
  unset the size is twice the mean FSDP unit, and the next (equal) layer is prefetched;
- 0.14 on (``megatron_fsdp``): the loop subtracts the current unit's buckets (``base_all_gather_size``), so its
  first pass adds the next unit whenever the budget (half the size) is not 0; the budget only bounds how many more
  follow, and ``fsdp_double_buffer`` caps the units in flight at two. The engine prefetches one unit ahead.

So only 0.12-0.13 with a stated size of at most one unit, or a size of 1 from 0.14, run without prefetch.
Megatron-Bridge's Llama 3 70B Blackwell recipes state 800,000,000 under a 855.7 M-element layer, on Megatron-Core
0.15 (NeMo 25.11): prefetched.
"""

from __future__ import annotations

from simcluster.parallel.memory import layer_params_per_rank
from simcluster.spec.config import release_in

# From 0.14: suggested_AG_prefetch_size = suggested_communication_unit_size // 2 (megatron_fsdp.py, the 0.14.0-0.16.0
# wheels); the loop breaks when what it added beyond the current unit reaches it, so a budget of 0 (a size of 1)
# prefetches nothing and any other adds the next unit
BUDGET_DIVISOR = 2


def unit_elements(scenario) -> float:
    """Elements of one FSDP unit (a transformer layer) in a tensor-parallel rank's buffers: the layer's parameters
    on that rank (``memory.layer_params_per_rank``), what ``bucket_index.size`` sums over the unit's buckets."""
    return layer_params_per_rank(scenario.model, scenario.parallelism.tp)


def prefetches_next_unit(scenario) -> bool:
    """Whether the next FSDP unit's all-gather is issued while the current one computes: always, except on
    Megatron-FSDP (ZeRO-3 on Megatron-Core) with ``parallelism.suggested_communication_unit_size`` stated at most
    one unit in a release whose prefetch loop counts the current unit (0.12-0.13), or at 1 (a budget of 0) later."""
    p = scenario.parallelism
    size = p.suggested_communication_unit_size
    if size is None or not (p.zero_stage == 3 and scenario.megatron_core):
        return True
    if release_in(scenario.training.mcore_version, "fsdp_prefetch_counts_current_unit"):
        return unit_elements(scenario) < size
    return size // BUDGET_DIVISOR > 0
