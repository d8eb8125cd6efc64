"""torchao's float8 training (``training.fp8_recipe: torchao_tensorwise``): what its dynamic tensorwise scaling costs
beyond the float8 GEMMs, in HBM bytes, as torchao's own roofline counts them (pytorch/ao
torchao/testing/float8/roofline_utils.py, get_tensor_memory_traffic_ovhd_s, "tensorwise"; the model
torchao's float8 benchmarks use to estimate the overhead of a torch.compile'd Float8Linear on Grand Teton H100s).

Every ``nn.Linear`` but the output layer is a ``Float8Linear`` whose operands are scaled from their own current
abs-max (dynamic scaling, torchao Float8LinearConfig's default), each cast as
    kernel 1: read the 16-bit tensor, partial abs-max;  kernel 2: the final max (a few bytes, not counted);
    kernel 3: read the 16-bit tensor again, write it in float8 row-major and column-major (for the other GEMM).
- input and output gradient: 2 + (2 + 1 + 1) = 6 bytes per element (``OPERAND_CAST_BYTES``); 4 when the abs-max
  fuses into the kernel that produced the tensor (roofline's fuse_with_prev, not assumed: the abs-max is a reduction
  over the whole tensor, the producer's (a norm's) a reduction over rows). Transformer Engine's delayed scaling,
  whose scale comes from the amax history, reads the tensor once: 4 (``workload.fp8_recipes``).
- weight: abs-max (2) and the forward's row-major cast (2 + 1) in every forward, the backward's column-major cast
  (2 + 1) in the backward: 5 + 3 bytes per element (``WEIGHT_FORWARD_CAST_BYTES``, ``WEIGHT_BACKWARD_CAST_BYTES``).
  torchao casts weights on every call (Transformer Engine caches them across microbatches), so a full recompute
  casts them again. With FSDP2's float8 all-gather the weight casts change (below).

FSDP2's float8 all-gather (``training.fp8_param_gather: true`` with this recipe on torchtitan's FSDP2, ``optimizer:
torch_adamw``; torchtitan ``--float8.enable_fsdp_float8_all_gather``, store_true, off by default, and honoured only
when the FSDP mesh has more than one rank: torchtitan/float8.py ``Float8Handler``, pytorch/torchtitan bd15a33,
``enable_fsdp_float8_all_gather = parallel_dims.dp_shard_enabled and ...``), from source (pytorch/ao
torchao/float8/fsdp_utils.py 0a4b91d, float8_linear.py 024fe94, float8_ops.py, float8_utils.py of late 2024; torch
distributed/_composable/fsdp/_fsdp_collectives.py ``foreach_all_gather``):
- Each float8 linear's weight is a ``WeightWithDynamicFloat8CastTensor`` wrapping FSDP2's sharded parameter (fp32:
  torchtitan's mixed precision keeps fp32 shards and gathers at ``param_dtype`` bf16). On every unshard, forward
  and the backward's re-gather alike (FSDP2 calls the hook on each all-gather), ``fsdp_pre_all_gather`` casts the
  rank's shard to float8 and hands FSDP ``float8_tensor._data`` (uint8): the all-gather moves 1 byte a float8-linear
  weight element (``GATHER_BYTES``); the embedding, norms and the output layer (excluded by torchtitan's
  ``module_filter_fn``) stay bf16, 2 bytes.
- The cast runs eagerly (outside the compiled blocks) on FSDP2's all-gather copy-in stream (``with
  device_handle.stream(all_gather_copy_in_stream): _get_param_all_gather_inputs``), beside the compute: per weight
  and gather, without precompute ``hp_tensor_to_float8_dynamic(..., reduce_amax=True)``: ``torch.max(torch.abs(x))``
  (abs reads and writes the fp32 shard, max reads it), ``dist.all_reduce(amax, MAX)`` over the FSDP group (one
  per weight and gather), ``amax_to_scale`` (``.to(float64)``, clamp, division, ``.to(float32)``: 4 scalar
  kernels), then ``hp_tensor_and_scale_to_float8``: ``tensor * scale``, ``to_fp8_saturated``'s clamp and
  ``.to(float8)``. With ``precompute_float8_dynamic_scale_for_fsdp`` (torchtitan
  ``--float8.precompute_float8_dynamic_scale_for_fsdp``, called after each optimizer step) the amax and scale come
  from one ``torch._foreach_norm(weights, inf)`` over all float8 weights, ``stack``, ``clamp`` (DTensor's single
  all-reduce), one division a step; each gather then runs the 3 cast kernels only (``shard_cast_kernels``,
  ``shard_cast_bytes_per_element``; the key ``training.fp8_precompute_scale``, ``precompute``). On 1/dp of the
  weights and off the compute stream: charged as FSDP's other side-stream kernels are (``parallel/fsdp_runtime.py``
  ``float8_copy_in_*``: their HBM time times the compute's HBM-bound share, every launch's host time, and the chain
  ahead of each gather -- kernels, one latency-bound amax all-reduce a weight -- where it outlasts the compute it
  hides behind); the precompute pass on the compute stream after the optimizer step (``parallel/plan.py``
  ``Float8CopyIn``; docs/calibration/round-23.md, "Round 23: torchao's float8 all-gather charged in full").
- ``fsdp_post_all_gather`` wraps the gathered bytes as a ``Float8Tensor`` (no copy), so the forward skips the weight
  cast (``get_weight_scale`` / ``cast_weight_to_float8_t`` return early when ``tensor_already_casted_to_fp8``) and
  a full recompute skips it again; the unsharded weight held is 1 byte an element. The backward's data-gradient GEMM
  takes the same float8 weight (``weight_fp8_t.t()``), row-major where ``torch._scaled_mm`` wants the second
  operand column-major: ``preprocess_addmm`` copies it, ``b_data.t().contiguous().t()``, 1 byte read and 1 written
  (``GATHERED_BACKWARD_BYTES``) in place of the 16-bit weight's backward cast; the copy lives for that one mm
  (``COLUMN_MAJOR_COPY_HELD_BYTES``, ``memory.fsdp_float8_backward_copy_bytes``).
- Tensorwise dynamic scaling only (``precompute_float8_dynamic_scale_for_fsdp`` raises on delayed scaling; rowwise
  recipes gather bf16): the only torchao recipe modelled (``RECIPES``).
"""

from __future__ import annotations

import math

from simcluster.spec.hardware import BYTES_PER_ELEMENT

RECIPES = ("torchao_tensorwise",)
BF16_BYTES = BYTES_PER_ELEMENT["bf16"]
FP8_BYTES = BYTES_PER_ELEMENT["fp8"]
AMAX_BYTES = BF16_BYTES                     # kernel 1 reads the 16-bit tensor
OPERAND_CAST_BYTES = AMAX_BYTES + BF16_BYTES + 2 * FP8_BYTES   # kernel 3 writes both layouts
WEIGHT_FORWARD_CAST_BYTES = AMAX_BYTES + BF16_BYTES + FP8_BYTES
WEIGHT_BACKWARD_CAST_BYTES = BF16_BYTES + FP8_BYTES
FP32_BYTES = BYTES_PER_ELEMENT["fp32"]

# FSDP2's float8 all-gather (module docstring)
FSDP2_OPTIMIZER = "torch_adamw"            # the optimizer that names torchtitan's FSDP2 (parallel/fsdp_runtime.py)
GATHER_BYTES = FP8_BYTES                   # all-gathered per float8-linear weight element (uint8 data)
GATHERED_BACKWARD_BYTES = 2 * FP8_BYTES    # preprocess_addmm's column-major copy of the gathered weight
SHARD_BYTES = FP32_BYTES                   # FSDP2's sharded parameter under torchtitan's mixed precision
# eager kernels on the shard, per weight and gather: (name, bytes per shard element)
AMAX_KERNELS = (("torch.abs", 2 * SHARD_BYTES), ("torch.max", SHARD_BYTES))
SCALE_KERNELS = 4                          # amax_to_scale: .to(float64), clamp, division, .to(float32) (scalars)
CAST_KERNELS = (("tensor * scale", 2 * SHARD_BYTES), ("to_fp8_saturated clamp", 2 * SHARD_BYTES),
                (".to(float8)", SHARD_BYTES + FP8_BYTES))
# precompute_float8_dynamic_scale_for_fsdp, once a step: _foreach_norm(inf) reads every shard once, then stack,
# clamp (with DTensor's one all-reduce) and the division: 3 scalar-sized kernels beside the foreach launches
PRECOMPUTE_READ_BYTES = SHARD_BYTES
PRECOMPUTE_KERNELS = 3
# torchtitan's Llama block: wq, wk, wv, wo and the MLP's matrices are Float8Linears (its output layer is filtered out)
ATTENTION_LINEARS = 4
AMAX_ALL_REDUCE_BYTES = FP32_BYTES         # tensor_to_amax's all-reduce: one fp32 amax (precompute: one a weight)
# preprocess_addmm's column-major copy (b_data.t().contiguous().t()) lives for its one backward mm: 1 byte held an
# element of the weight being multiplied, one weight at a time
COLUMN_MAJOR_COPY_HELD_BYTES = FP8_BYTES


def cast_bytes_per_element(recipe: str) -> float:
    """HBM bytes per element of one 16-bit input or output gradient cast to float8 (both layouts)."""
    assert recipe in RECIPES, recipe
    return OPERAND_CAST_BYTES


def weight_cast_bytes(weight_elements: float, gathered: bool = False) -> tuple[float, float]:
    """(forward, backward) HBM bytes of casting ``weight_elements`` of 16-bit weights, per call; ``gathered``: the
    weights arrive in float8 from FSDP2's float8 all-gather (no forward cast, the backward's column-major copy)."""
    if gathered:
        return 0.0, GATHERED_BACKWARD_BYTES * weight_elements
    return WEIGHT_FORWARD_CAST_BYTES * weight_elements, WEIGHT_BACKWARD_CAST_BYTES * weight_elements


def fsdp_float8_all_gather(training, parallelism) -> bool:
    """Whether FSDP2 all-gathers the float8 linears' weights in float8: ``fp8_param_gather`` with this recipe on
    torchtitan's FSDP2 (``optimizer: torch_adamw``, parameters sharded: ``zero_stage`` 1 under pipelining as the
    torchtitan scenarios model it, or 3) over more than one rank (torchtitan's ``dp_shard_enabled``)."""
    return (bool(training.fp8_param_gather) and training.precision == "fp8" and training.fp8_recipe in RECIPES
            and training.optimizer == FSDP2_OPTIMIZER and parallelism.zero_stage >= 1
            and parallelism.dp * parallelism.cp > 1)


def gather_bytes(float8_weight_elements: float, gathers: int) -> float:
    """Bytes a rank receives for the float8 linears' weights over ``gathers`` all-gathers of them (the unsharded
    elements each time): 1 byte an element."""
    return GATHER_BYTES * float8_weight_elements * gathers


def shard_cast_kernels(weights: int, gathers: int, precompute: bool, foreach_launches: int = 1) -> dict[str, int]:
    """Kernel launches and all-reduces of the shard-side casts for ``weights`` float8-linear weights all-gathered
    ``gathers`` times a step: {"kernels": ..., "all_reduces": ...}. Without precompute each weight and gather runs
    the amax (2), the scale (4) and the cast (3) kernels and one amax all-reduce; with it only the cast, plus once a
    step ``foreach_launches`` of ``_foreach_norm``, ``PRECOMPUTE_KERNELS`` and one all-reduce."""
    calls = weights * gathers
    if precompute:
        return {"kernels": len(CAST_KERNELS) * calls + foreach_launches + PRECOMPUTE_KERNELS, "all_reduces": 1}
    return {"kernels": (len(AMAX_KERNELS) + SCALE_KERNELS + len(CAST_KERNELS)) * calls, "all_reduces": calls}


def shard_cast_kernel_bytes(precompute: bool) -> tuple[tuple[str, float], ...]:
    """(kernel, HBM bytes per sharded weight element) of one weight's pre-all-gather cast, in issue order: amax (2),
    scale (4 scalar kernels, 0 bytes a shard element) and cast (3) without precompute; the cast alone with it."""
    if precompute:
        return CAST_KERNELS
    return AMAX_KERNELS + tuple(("amax_to_scale", 0.0) for _ in range(SCALE_KERNELS)) + CAST_KERNELS


def shard_cast_bytes_per_element(precompute: bool) -> float:
    """HBM bytes per sharded weight element of one pre-all-gather cast (eager): amax (without precompute) and cast."""
    return float(math.fsum(size for _name, size in shard_cast_kernel_bytes(precompute)))


def float8_linears_per_layer(mlp_matrices: int) -> int:
    """Float8Linear weights of one transformer block: the attention's four and the MLP's ``mlp_matrices``."""
    return ATTENTION_LINEARS + mlp_matrices


def precompute(training, parallelism) -> bool:
    """Whether the scales come from ``precompute_float8_dynamic_scale_for_fsdp`` once a step (torchtitan's
    ``--float8.precompute_float8_dynamic_scale_for_fsdp``: ``precompute_scale = enable_fsdp_float8_all_gather and
    ...``): ``training.fp8_precompute_scale`` with the float8 all-gather on."""
    return bool(training.fp8_precompute_scale) and fsdp_float8_all_gather(training, parallelism)
