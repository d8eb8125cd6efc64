"""What PyTorch FSDP1 (``torch.distributed.fsdp.FullyShardedDataParallel`` of torch 2.0/2.1, as Composer wraps
llm-foundry's MPT for ``training.optimizer: decoupled_adamw`` with ``zero_stage: 3``) runs per FSDP unit and
microbatch beyond the all-gathers and reduce-scatters the engine already times (engine/data_parallel.py
``GatherBeforeUse`` / ``ReduceBucketsDuringBackward``).

llm-foundry's yamls (scripts/train/yamls/pretrain/mpt-*.yaml, ``fsdp_config``): FULL_SHARD, mixed_precision PURE
(param, reduce and buffer dtype bf16; Composer composer/trainer/mosaic_fsdp_utils.py ``get_mixed_precision``),
limit_all_gathers true, activation_checkpointing per row; Composer 2023's defaults otherwise (mosaic_fsdp_utils.py:
``backward_prefetch`` BACKWARD_POST unless set, ``forward_prefetch`` False). BACKWARD_PRE issues unit u-1's
all-gather in unit u's pre-backward hook, BACKWARD_POST in its post-backward hook after resharding it, before u's
reduce-scatter: either way one unit ahead, while unit u computes, as ``GatherBeforeUse`` orders it. With
``use_orig_params`` either way the forward runs on tensor views of the flat parameter (``_use_unsharded_views(
as_params=False)``). Per unit and microbatch, from torch 2.0/2.1 source (torch/distributed/fsdp/_runtime_utils.py,
flat_param.py, _limiter_utils.py):

Forward (``_runtime_utils._pre_forward`` -> ``_unshard``), all on the unshard stream or the host:
- ``FlatParamHandle.pre_unshard`` -> ``_use_low_precision_shard``: ``_mp_shard.copy_(_local_shard)`` casts the fp32
  shard to bf16 (6 B a shard parameter: 1/dp of the unit), then ``all_gather_into_tensor`` straight into the
  padded unsharded flat parameter (no copy-out), ``_use_unsharded_views``: ``torch.split`` + ``view`` (no kernels).
- ``_limiter_utils._FreeEventQueue`` (limit_all_gathers): at most 2 all-gathers in flight, the host
  ``event.synchronize()``s on the free event of the unit two back: the host runs at most two units ahead.
- no forward prefetch: the next unit's all-gather is issued at its own pre-forward, which the host reaches while the
  current unit computes: one unit of lookahead, as ``GatherBeforeUse`` models.
Backward (``_pre_backward_hook``: unshard again, FULL_SHARD freed it after forward; BACKWARD_PRE prefetches the
previous unit's all-gather) and ``_post_backward_hook``:
- the module's parameters are ``split`` views of the flat parameter, so autograd's ``SplitWithSizesBackward``
  (torch/csrc/autograd/FunctionsManual.cpp ``split_with_sizes_backward``: ``at::cat`` of the views' gradients,
  zeros for the padding) writes the unit's whole unsharded gradient once more: read 2 B + write 2 B a parameter
  (bf16, PURE) -- ``BACKWARD_KERNELS``. Not on the compute stream: ``_runtime_utils._unshard`` runs
  ``handle.unshard()`` under ``state._device_handle.stream(unshard_stream)`` (torch 2.0/2.1), and ``unshard`` ->
  ``_use_unsharded_views`` records the ``split`` there; autograd runs a backward op on its forward op's stream
  ("each backward CUDA op runs on the same stream that was used for its corresponding forward op", PyTorch docs,
  CUDA semantics, "Stream semantics of backward passes"). So the cat runs on the unshard stream beside the
  compute: it delays only the compute's HBM-bound kernels, by its HBM time times their share of the backward
  (``backward_interference_s``, the proportional share of ``workload.interference``), with no kernel gap.
- on the post-backward stream (after ``wait_stream`` on the compute stream), ``_post_backward_hook``: if the
  gradient's dtype is not ``handle._reduce_dtype``, ``flat_param.grad.to(reduce_dtype)`` (the unsharded gradient:
  read 2 B, write the reduce dtype's width a parameter); ``_reduce_grad``: ``_div_if_needed`` pre-divide of the
  padded unsharded gradient by ``_gradient_predivide_factor`` (``predivide_factor``: 1 doubled while world % f == 0
  and world / f > f, so > 1 for every world of 2 or more: 2 at 2 ranks, 4 at 8 and 16, 8 at 32 and 64), in place,
  read + write at the reduce dtype -- ``POST_BACKWARD_KERNELS``, charged as the cat is (``backward_interference_s``:
  they run beside the next unit's backward); then ``reduce_scatter_tensor``, the post-divide of the shard,
  ``_cast_grad_to_param_dtype`` (the shard back to fp32) and, from the second microbatch,
  ``_accumulate_sharded_grad``'s add: shard-sized (1/dp of the unit), not charged.
  The reduce dtype: Composer's ``get_mixed_precision`` (composer/trainer/mosaic_fsdp_utils.py) sets PURE's
  param, reduce and buffer dtypes to the precision's and DEFAULT's param and buffer dtypes only (before
  composer#2628, 2023-10-10), and FSDP1 then reduces in the parameter dtype (flat_param.py
  ``_init_param_reduce_dtypes``: "Special case: infer gradient reduction mixed precision"): bf16 either way for the
  2023 MPT tables, so no cast kernel there (``parallelism.grad_reduce_dtype: bf16`` in scenarios/mpt-*.yaml).
- ``_reduce_grad`` -> ``_get_reduce_scatter_tensors`` (torch 2.x, the stored versions read): the unsharded gradient is
  the *unpadded* flat parameter's (``_use_unsharded_flat_param`` sets ``flat_param.data`` to
  ``padded[:_unpadded_unsharded_size]``), and ``numel_to_pad = world_size * chunks[0].numel() -
  unsharded_grad.numel()``: a unit whose parameter count is not a multiple of the world gets ``F.pad(unsharded_grad,
  [0, numel_to_pad])``, a new padded tensor (read the gradient, write it padded, at the reduce dtype), on the
  post-backward stream before the pre-divide -- ``PAD_KERNEL``, ``pad_ops``. A multiple of the world pads nothing (the
  MPT units at power-of-two worlds; fms-fsdp's Llama 2 units on 128 ranks), otherwise one pad a unit (the same units
  on 96 ranks: 96 = 3 x 32).
- ``_post_backward_final_callback``: the compute stream waits for the post-backward stream once per backward (the
  last reduce-scatter exposed, as the engine waits for it).

IBM's fms-fsdp (``parallelism.fsdp: fsdp1`` with torch's AdamW, the pretraining layout of early 2024) runs the same
code: ``FullyShardedDataParallel(model, auto_wrap_policy=<LLaMABlock>, mixed_precision=bfSixteen,
sharding_strategy=FULL_SHARD, use_orig_params=cfg.use_torch_compile (False: no compile), limit_all_gathers=True)``
and FSDP1's default BACKWARD_PRE (main_training.py of the period, find_string id 21259409200);
``bfSixteen = MixedPrecision(param_dtype, reduce_dtype, buffer_dtype = torch.bfloat16)``
(pretraining/policies/mixed_precision.py @ 2e76f991): bf16 reduction, no cast kernel. Its torch: the README asks for
"the latest PyTorch nightlies", requirements.txt pins ``torch>=2.2.0`` (@ 37821d34): 2.2/2.3, whose
``_runtime_utils._unshard`` still runs ``handle.unshard()`` (so the forward's ``split`` views) under the unshard
stream and whose ``_post_backward_hook`` / ``_reduce_grad`` / ``_get_reduce_scatter_tensors`` are the above. With
``use_orig_params=False`` the forward still runs on ``split`` views (``_use_unsharded_flat_param``: ``elif in_forward:
self._use_unsharded_views(as_params=False)``), so autograd's cat is the same; the flat parameter has no alignment
padding (``align_addresses`` follows ``use_orig_params``), so the unit's parameter count is its modules' own. The
root unit holds what no ``LLaMABlock`` does (embedding, final norm, output: ``units_kept_after_forward``), one unit
(``memory.zero3_units`` with ``merged_root``), as MPT's root holds the tied embedding and the final norm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from simcluster.spec.config import Scenario
from simcluster.spec.hardware import GpuSpec
from simcluster.workload import kernels, torchao_float8
from simcluster.workload.ops import Op

# (kernel, elements read, elements written) per unsharded parameter, per unit and microbatch, on the unshard stream,
# at the parameter dtype
BACKWARD_KERNELS = (("fsdp1 SplitWithSizesBackward cat", 1, 1),)
# the same on the post-backward stream, at the reduce dtype (``_reduce_grad``: the in-place pre-divide)
POST_BACKWARD_KERNELS = (("fsdp1 _div_if_needed pre-divide", 1, 1),)
# ``_post_backward_hook``'s cast of the unsharded gradient when the reduce dtype differs from the parameter dtype:
# read at the parameter dtype, write at the reduce dtype
REDUCE_CAST_KERNEL = "fsdp1 grad.to(reduce_dtype)"
# ``_get_reduce_scatter_tensors``' ``F.pad`` of a unit's unsharded gradient to a multiple of the world, on the
# post-backward stream at the reduce dtype: reads the unit's elements, writes them padded
PAD_KERNEL = "fsdp1 F.pad (reduce-scatter input)"


def applies(scenario: Scenario) -> bool:
    """Whether the scenario runs Composer's PyTorch FSDP1: ZeRO-3 (FULL_SHARD) or ZeRO-2 (SHARD_GRAD_OP, the same
    flat-parameter code, parameters kept gathered after the forward) with Composer's optimizer (llm-foundry)."""
    return scenario.parallelism.zero_stage >= 2 and scenario.training.optimizer == "decoupled_adamw"


def fsdp2_applies(scenario: Scenario) -> bool:
    """Whether the scenario runs PyTorch FSDP2 (``fully_shard``) as torchtitan applies it: ZeRO-3 with torch's
    AdamW (``optimizer: torch_adamw``, the torchtitan rows; Composer's FSDP1 is ``decoupled_adamw``)."""
    return scenario.parallelism.zero_stage == 3 and scenario.training.optimizer == "torch_adamw"


def runs_fsdp1(scenario: Scenario) -> bool:
    """Whether the scenario runs PyTorch FSDP1's flat-parameter code (``FullyShardedDataParallel``): Composer's
    (``applies``) or a stated ``parallelism.fsdp: fsdp1`` (``stated_fsdp1``, fms-fsdp). Both pay FSDP1's side-stream
    gradient kernels (``backward_ops``) and keep the root gathered (``units_kept_after_forward``); Composer's
    optimizer loop (``optimizer_tensors``) stays ``applies``'."""
    return applies(scenario) or stated_fsdp1(scenario)


def stated_fsdp1(scenario: Scenario) -> bool:
    """Whether a ZeRO-3 run with torch's AdamW states ``parallelism.fsdp: fsdp1`` (``FullyShardedDataParallel``,
    IBM's fms-fsdp): FSDP1's kept-units rule (``units_kept_after_forward``) and no FSDP2 copies (``copies_out``)."""
    return fsdp2_applies(scenario) and scenario.parallelism.fsdp == "fsdp1"


def copies_out(scenario: Scenario) -> bool:
    """Whether each all-gather is copied out of its gather buffer (``copy_out_ops``) and each unit's gradients into
    the reduce-scatter input on the compute stream (``reduce_scatter_copy_in_ops``): FSDP2, unless the scenario
    states ``parallelism.fsdp: fsdp1`` (FSDP1 gathers straight into the padded flat parameter: module docstring)."""
    return fsdp2_applies(scenario) and not stated_fsdp1(scenario)


def root_holds_output(scenario: Scenario) -> bool:
    """Whether one FSDP unit, the root, holds the word embedding, final norm and output projection together:
    torchtitan's ``apply_fsdp`` (torchtitan/parallelisms/parallelize_llama.py, Dec 2024) wraps each
    ``TransformerBlock`` and then ``fully_shard(model)``, whose direct parameters are ``tok_embeddings``, ``norm``
    and ``output``. With pipelining each stage's model part is its own root (the embedding on the first, norm and
    output on the last), so the units stay as ``memory.zero3_units`` counts them."""
    return fsdp2_applies(scenario) and scenario.parallelism.pp == 1


def gathers_once_per_step(scenario: Scenario) -> bool:
    """Whether FSDP2 keeps a pipeline stage's units gathered across its microbatches: torchtitan under pipelining
    (``reshard_after_forward=False`` on every block and the root) and torch's pipelining stage
    (torch/distributed/pipelining/stage.py ``backward_maybe_with_nosync``, 2024-25 versions:
    ``set_reshard_after_backward(False)`` and ``set_requires_gradient_sync(False)`` on every backward,
    ``post_backward`` with both True only after the last one). Each unit is all-gathered on the chunk's first
    forward of the step, its unsharded gradient accumulated and reduce-scattered after the last backward."""
    return fsdp2_applies(scenario) and scenario.parallelism.pp > 1


def keeps_root(scenario: Scenario) -> bool:
    """Whether the root unit stays gathered from its forward through the backward (``units_kept_after_forward``),
    beside the two units in flight (``memory.zero3_gathered_bytes``)."""
    return units_kept_after_forward(scenario, 2) > 0


def units_kept_after_forward(scenario: Scenario, units: int) -> int:
    """Of a chunk's ``units`` FSDP units, those whose gathered parameters stay whole from the forward into the
    backward, which therefore need no all-gather there: the backward's first ones.

    FSDP1 (Composer, llm-foundry): the root unit under FULL_SHARD (torch 2.0-2.3
    torch/distributed/fsdp/_runtime_utils.py ``_post_forward_reshard``: ``free_unsharded_flat_param = not
    state._is_root and handle._sharding_strategy in RESHARD_AFTER_FORWARD_HANDLE_STRATEGIES``, "with the intention
    that they are immediately used for backward computation"; ``_pre_backward_hook`` -> ``_unshard`` ->
    ``FlatParamHandle.needs_unshard`` finds the padded unsharded flat parameter still allocated and issues no
    all-gather). llm-foundry's MPT wraps each ``MPTBlock`` (``fsdp_wrap_fn``), so the root holds the rest: the tied
    word embedding and the final norm, the embedding unit of ``memory.zero3_units``. SHARD_GRAD_OP (zero_stage 2)
    never gathers in the backward. One chunk only (Composer runs no pipeline).

    FSDP2 (torchtitan): the root and the last block without pipelining, 2: torch
    torch/distributed/_composable/fsdp/_fsdp_state.py ``_lazy_init`` ("For the root, do not reshard after forward":
    ``post_forward_mesh_info = None``) and torchtitan's ``apply_fsdp`` ``reshard_after_forward = int(layer_id) <
    len(model.layers) - 1`` ("do not reshard after forward for the last transformer block since FSDP would prefetch
    it immediately"); with pipelining ``reshard_after_forward = False`` for every block and the root: every unit.
    A run with torch's AdamW that states ``parallelism.fsdp: fsdp1`` (fms-fsdp's ``FullyShardedDataParallel``, the
    same ``_post_forward_reshard``) keeps FSDP1's root only. 0 elsewhere."""
    p = scenario.parallelism
    if fsdp2_applies(scenario) and not stated_fsdp1(scenario):
        return min(2, units) if p.pp == 1 else units
    return min(int(runs_fsdp1(scenario) and p.zero_stage == 3 and p.pp == 1), units)


def predivide_factor(world: int) -> int:
    """FSDP1's pre-divide factor (torch 2.0/2.1 ``_init_utils`` takes torch/distributed/algorithms/_comm_hooks/
    default_hooks.py ``DefaultState._get_gradient_predivide_factor(world_size)``):
    doubled from 1 while world % f == 0 and world / f > f; the post-divide factor is world / f."""
    factor = 1
    while world % factor == 0 and world / factor > factor:
        factor *= 2
    return factor


def unit_numels(layer_params: float, layers: int, params: float) -> list[int]:
    """FSDP1's units of a chunk of ``params`` parameters (unsharded, per rank) whose ``layers`` transformer layers of
    ``layer_params`` each are wrapped one a unit and the rest (embedding, final norm, output) is the root's."""
    root = round(params - layers * layer_params)
    return [round(layer_params)] * layers + ([root] if root > 0 else [])


def pad_ops(numels: Sequence[int], world: int, reduce_bytes: float) -> list[Op]:
    """``_get_reduce_scatter_tensors``' ``F.pad`` for each FSDP1 unit of ``numels`` elements whose count is not a
    multiple of ``world``: read n, write world * ceil(n / world) elements at ``reduce_bytes`` an element."""
    ops = []
    for n in numels:
        padded = world * math.ceil(n / world)
        if padded > n:
            ops.append(Op(PAD_KERNEL, "memory", 0.0, (n + padded) * reduce_bytes))
    return ops


def backward_ops(params: float, units: int, element_bytes: float, reduce_bytes: float | None = None,
                 world: int = 2, numels: Sequence[int] = ()) -> list[Op]:
    """The side-stream kernels FSDP1 adds to one microbatch's backward of a chunk of ``params`` parameters (per rank,
    unsharded) in ``units`` FSDP units of 16-bit ``element_bytes`` parameters, gradients reduced at
    ``reduce_bytes`` an element (None: the parameter dtype, FSDP1's inference when no reduce dtype is set): one
    kernel per unit and ``BACKWARD_KERNELS`` / ``POST_BACKWARD_KERNELS`` entry (and the cast when the dtypes
    differ), over the unit's share of the parameters. ``world``: the ranks the gradients are reduced over; the
    pre-divide runs when its factor is above 1 (``_div_if_needed``), at every world of 2 or more. ``numels``: the
    units' exact parameter counts (``unit_numels``), for the reduce-scatter input's pad (``pad_ops``); empty: none."""
    reduce_bytes = element_bytes if reduce_bytes is None else reduce_bytes
    divide = POST_BACKWARD_KERNELS if predivide_factor(world) > 1 else ()
    per_unit = params / units
    kinds = ([(name, (reads + writes) * element_bytes) for name, reads, writes in BACKWARD_KERNELS]
             + ([(REDUCE_CAST_KERNEL, element_bytes + reduce_bytes)] if reduce_bytes != element_bytes else [])
             + [(name, (reads + writes) * reduce_bytes) for name, reads, writes in divide])
    return ([Op(name, "memory", 0.0, per_param * per_unit) for name, per_param in kinds for _ in range(units)]
            + pad_ops(numels, world, reduce_bytes))


def backward_interference_s(params: float, units: int, element_bytes: float, memory_share: float, gpu: GpuSpec,
                            precision: str, reduce_bytes: float | None = None, world: int = 2,
                            numels: Sequence[int] = ()) -> float:
    """Compute-stream time one microbatch's backward loses to ``backward_ops`` running on the unshard and
    post-backward streams beside it: their HBM time (roofline) times ``memory_share``, the share of the backward's
    time in HBM-bound kernels (``interference.memory_bound_share``): the HBM-bound kernels wait for the bytes the
    side kernels move, the compute-bound ones do not."""
    return side_stream_interference_s(backward_ops(params, units, element_bytes, reduce_bytes, world, numels),
                                      memory_share, gpu, precision)


def side_stream_interference_s(ops: list[Op], memory_share: float, gpu: GpuSpec, precision: str) -> float:
    """Compute-stream time lost to ``ops`` running on a side stream beside it (FSDP's unshard/copy-in and
    post-backward streams): their HBM time (roofline) times ``memory_share``, the share of the compute's time in
    HBM-bound kernels (``interference.memory_bound_share``); no kernel gap on the compute stream."""
    return memory_share * kernels.stream_time(ops, gpu, precision).device_s


# ---- FSDP2's all-gather copy-out ---------------------------------------------------------------------------------
#
# FSDP2 gathers a unit's shards into one flat buffer, rank-major (``foreach_all_gather``), and
# ``FSDPParamGroup.wait_for_unshard`` -> ``foreach_all_gather_copy_out`` then copies it into each parameter's own
# unsharded tensor: ``split_with_sizes_copy(all_gather_output.view(world_size, -1), all_gather_input_split_sizes,
# dim=1, out=out)``, after ``current_stream().wait_event(all_gather_event)``: on the current stream, the compute
# stream of the pre-forward hook and of the pre-backward hook (autograd runs it on its forward op's stream). Read in
# torch/distributed/_composable/fsdp/_fsdp_collectives.py (stored @ 01d66d21, the 2024 path torchtitan imported) and
# torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py (stored @ 010ae4a8, ``torch.ops.fsdp.split_with_sizes_copy``
# on ``device_handle.current_stream()``): the same copy in both. Its CUDA fast path (aten/src/ATen/native/cuda/
# TensorShape.cu ``split_with_sizes_copy_out_cuda_contiguous_no_cast``: contiguous, no cast) is one kernel reading the
# gathered buffer and writing the same bytes. Once per all-gather: the forward's, and the backward's re-gather of a
# unit resharded after the forward; full recompute re-gathers nothing (the pre-backward hook has unsharded the unit
# before the checkpointed forward reruns). The bytes are the gather's: bf16 (``param_dtype``), 1 byte a float8
# weight gathered as float8 (``fsdp_post_all_gather`` wraps the copied-out bytes, no further copy).

COPY_OUT_KERNEL = "fsdp2 split_with_sizes_copy (all-gather copy-out)"
COPY_OUT_READS_WRITES = 2  # the gathered buffer read once, the unsharded parameters written once


def copy_out_ops(gathered_bytes: float, gathers: int) -> list[Op]:
    """The compute-stream kernels of ``gathers`` FSDP2 all-gathers moving ``gathered_bytes`` between them (per rank,
    the units' unsharded bytes as gathered): one ``split_with_sizes_copy`` a gather, each an equal share."""
    if gathers <= 0:
        return []
    return [Op(COPY_OUT_KERNEL, "memory", 0.0, COPY_OUT_READS_WRITES * gathered_bytes / gathers)] * gathers


# ---- FSDP2's reduce-scatter copy-in ------------------------------------------------------------------------------
#
# Before each unit's reduce-scatter, ``foreach_reduce`` copies the unit's unsharded gradients (autograd's, at the
# parameter dtype: bf16) into one reduce-scatter input at the reduce dtype (``foreach_reduce_scatter_copy_in``:
# ``torch._chunk_cat`` into ``world_size`` chunks, padding and the widening cast fused, pytorch/pytorch PR #122888,
# 2024-03-28): one kernel reading the gradients and writing them at the reduce dtype. Where it runs: on the
# reduce-scatter stream in the first FSDP2 (torch/distributed/_composable/fsdp/_fsdp_collectives.py, stored
# @ 01d66d21: ``with torch.cuda.stream(reduce_scatter_stream)``); on the current (compute) stream since PR #129721
# ("[FSDP2] Ran reduce-scatter copy-in in default stream", 2024-06-27: the input, as large as the unsharded gradients,
# allocated in the default stream's pool; in PyTorch 2.5.0's release notes, not in 2.4.0), before
# ``reduce_scatter_stream.wait_stream(current_stream)``
# (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py, stored @ 010ae4a8). Every FSDP2 run modelled (torchtitan
# from July 2024 on nightlies, KempnerForge and NeMo AutoModel in 2025) is after that PR: in series with the backward,
# once a unit and reduce-scatter (every unit, the root and the last block included).

RS_COPY_IN_KERNEL = "fsdp2 _chunk_cat (reduce-scatter copy-in)"


def reduce_scatter_copy_in_ops(unsharded_params: float, units: int, grad_element: float,
                               reduce_element: float) -> list[Op]:
    """The compute-stream kernels of ``units`` FSDP2 reduce-scatters of ``unsharded_params`` gradient elements
    between them (per rank): one ``_chunk_cat`` a unit, reading ``grad_element`` and writing ``reduce_element``
    bytes an element, each an equal share."""
    if units <= 0:
        return []
    per_unit = unsharded_params * (grad_element + reduce_element) / units
    return [Op(RS_COPY_IN_KERNEL, "memory", 0.0, per_unit)] * units


# ---- torchao's float8 all-gather on FSDP2 (workload.torchao_float8) -------------------------------------------
#
# FSDP2's ``foreach_all_gather`` runs ``fsdp_pre_all_gather`` under ``all_gather_copy_in_stream``: each float8
# weight's shard is cast eagerly there, ahead of the unit's all-gather; without precompute each weight's amax is
# all-reduced over the FSDP group first (``tensor_to_amax``: ``dist.all_reduce`` on the FSDP mesh's group, the
# communicator FSDP2 gathers on, so in order with its collectives). What the compute stream pays: the side kernels'
# HBM time times its HBM-bound share (``side_stream_interference_s``, as FSDP1's copies above) and every launch's host
# time (kernels and NCCL calls alike, issued by the one Python thread: ``kernels.HOST_ONLY_LAUNCH``); and, ahead of
# each gather, the chain itself (cast kernels on the copy-in stream, all-reduces latency-bound on the group), exposed
# where it outlasts the compute it hides behind (``float8_gather_exposed_s``).

def float8_copy_in_ops(shard_elements: float, weights: int, precompute: bool) -> list[Op]:
    """The eager kernels one all-gather of ``weights`` float8-linear weights runs on FSDP2's copy-in stream, over
    ``shard_elements`` sharded elements (each weight an equal share), in issue order
    (``torchao_float8.shard_cast_kernel_bytes``)."""
    per_weight = shard_elements / weights if weights else 0.0
    return [Op(f"torchao fsdp {name}", "memory", 0.0, size * per_weight) for _ in range(weights)
            for name, size in torchao_float8.shard_cast_kernel_bytes(precompute)]


def float8_copy_in_charge(ops: list[Op], all_reduces: int, memory_share: float, gpu: GpuSpec,
                          precision: str) -> kernels.StreamTime:
    """What the compute stream pays for copy-in ``ops`` and ``all_reduces`` amax all-reduces beside it: the kernels'
    HBM interference (``side_stream_interference_s``) and the host time of every launch (no kernel in series)."""
    launches = [Op(kernels.HOST_ONLY_LAUNCH, "memory", 0.0, 0.0)] * (len(ops) + all_reduces)
    return (kernels.StreamTime(device_s=side_stream_interference_s(ops, memory_share, gpu, precision))
            + kernels.stream_time(launches, gpu, precision))


def float8_copy_in_chain_s(ops: list[Op], all_reduces: int, all_reduce_s: float, gpu: GpuSpec,
                           precision: str) -> float:
    """The copy-in chain ahead of one unit's all-gather on its own: the eager kernels back to back on the copy-in
    stream (``kernels.StreamTime.elapsed_s``: roofline, gaps, the host's dispatch) and the amax all-reduces, each
    ``all_reduce_s`` alone on the fabric (latency-bound: 4 bytes), each waited for by the next kernel."""
    return kernels.stream_time(ops, gpu, precision).elapsed_s() + all_reduces * all_reduce_s


def float8_gather_exposed_s(chain_s: float, gather_s: float, compute_s: float, gathers: int,
                            first_exposed: bool) -> float:
    """What ``gathers`` unit all-gathers, each behind a copy-in chain of ``chain_s``, add to the compute stream's
    waits beyond the gathers alone: a prefetched gather hides behind the previous unit's compute ``compute_s``, so
    its chain costs max(0, chain + gather - compute) - max(0, gather - compute); ``first_exposed``: the first gather
    of the block is waited for whole (``engine.data_parallel.GatherBeforeUse``), its chain with it."""
    if gathers <= 0:
        return 0.0
    steady = max(0.0, chain_s + gather_s - compute_s) - max(0.0, gather_s - compute_s)
    return (chain_s if first_exposed else steady) + (gathers - 1) * steady


def optimizer_tensors(layers: int, units: int, layer_tensors: int, shards: int) -> float:
    """Original-parameter pieces a rank's optimizer steps (``workload.composer_adamw``: Composer's
    ``use_orig_params``): FSDP1 shards each unit's flat parameter on its own into ``shards`` contiguous equal pieces,
    so a rank's piece of a unit of T tensors holds one tensor plus the tensor boundaries falling inside it, (T - 1) /
    shards of them on average. ``layers`` of the ``units`` are transformer layers of ``layer_tensors`` tensors; the
    others (embedding, output) one tensor each."""
    return layers * (1 + (layer_tensors - 1) / shards) + (units - layers)
