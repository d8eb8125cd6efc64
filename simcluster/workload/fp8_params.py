"""Megatron-Core's fp8 parameters (``training.fp8_param_gather``): ``--fp8-param-gather`` in Megatron-LM, NeMo 2.x's
``fp8_param_gather`` (its performance scripts set ``recipe.trainer.plugins = bf16_with_fp8_mixed()`` with fp8,
scripts/llm/performance/gpt3_175b.py, and nemo/collections/llm/recipes/precision/mixed_precision.py
``bf16_with_fp8_mixed`` sets ``cfg.fp8_param_gather = True``), NeMo 1.x's ``model.fp8_params`` (dgxc-benchmarking
24.09 passes ``+model.fp8_params=$FP8_ENABLED``) and Megatron-Bridge's mixed-precision presets (``bf16_with_fp8_mixed``
and ``bf16_with_fp8_current_scaling_mixed`` set ``fp8_param_gather = True``).

What it is, from source (Megatron-Core core_r0.8-r0.11, Transformer Engine 1.x-2.x):

- The model is built under Transformer Engine's ``fp8_model_init`` (megatron/training pretrain_gpt.py
  ``model_provider``: ``build_model_context = fp8_model_init`` when ``args.fp8_param_gather``): every Transformer
  Engine module's GEMM weight (``param_init_meta[name].fp8_meta_index`` set: the linear weights, not the norms'
  weights nor the biases) is created as a ``Float8Tensor`` (TE ``TransformerEngineBaseModule.reset_parameters``: ``if
  self.primary_weights_in_fp8 and fp8_meta_index is not None: param = Float8Tensor.to_float8(param, ...)``, TE 2.x
  ``param = quantizer(param)``). Megatron's own embedding and output layer (``VocabParallelEmbedding``,
  ``ColumnParallelLinear``) and the router stay 16-bit: ``gemm_weight_params``.
- Memory (``weight_bytes_per_param``): 1 byte per fp8 weight instead of 2. Where fp8 GEMMs take only the TN layout
  (Hopper: ``fp8_recipes.transposes``) the backward's data-gradient GEMM needs the weight transposed: Transformer Engine
  2.x keeps it beside the weight (``get_weight_workspace``: "Make sure weights have required usages, but do not destroy
  unnecessary usages since they may be used later"; ``Float8Tensor.update_usage(columnwise_usage=True)`` makes the
  transpose once after the optimizer invalidates it, ``_reset_caches``), 1 byte more: 2 bytes on Hopper, 1 on Blackwell.
  TE 1.6-1.10 (NeMo 24.05-24.09) cache it too: ``_Linear.backward`` with fp8 weights calls
  ``weight.transpose_2d(cache=ctx.is_first_microbatch is not None, noop_flag=skip_fp8_weight_update)`` (TE 1.6-1.7
  linear.py), later the modules fill the cache on a chunk's first microbatch (``transpose_2d(fill_cache=True)`` when
  ``is_first_microbatch``, the stored 1.8-1.10 layernorm_mlp.py and grouped_linear.py, whose non-fp8 weights also keep
  theirs: ``get_fp8_workspace(..., with_transpose=...)``; that line's linear.py is not stored), and
  ``Float8Tensor.transpose_2d`` runs ``fp8_transpose_noalloc`` only while ``_transpose`` is missing or
  ``_transpose_invalid`` (float8_tensor.py), which ``_reset_caches()`` sets after each optimizer step (Megatron-Core's
  fp8 parameter update, "Reset transpose cache"; NeMo's DistributedFusedAdam after its parameter copy, "Update transpose
  caches"). Megatron-Core's TE wrappers pass ``is_first_microbatch`` (True on a chunk's first microbatch, then False),
  None only with ``disable_parameter_transpose_cache`` (default False); ``skip_fp8_weight_update`` is a tensor only
  under TE's CUDA-graph weight caching (``make_graphed_callables(fp8_weight_caching=True)``), which launches the
  transpose kernel every call as a no-op. So the transpose runs once a step, as in TE 2.x, not per microbatch. Not
  settled for TE 1.11-1.13 (1.14 unread): ``get_fp8_workspace`` lost its ``with_transpose`` argument in 1.11
  (Lightning-AI/lightning-thunder transformer_engineex.py, ``TE_VERSION_1_11_PLUS``), and the stored Linear of that line
  takes ``weight_fp8.transpose_2d()`` in the dgrad and refreshes the cache in the forward only "if present". That
  line's ``tensor/float8_tensor.py`` (stored) caches whatever transpose buffer the tensor carries: ``to_float8(...,
  with_transpose_cache=True)`` allocates one, ``quantize_`` then writes data and transpose in one
  ``fp8_cast_transpose_fused`` and marks it valid, ``transpose_2d()`` returns it while valid and otherwise, without
  ``fill_cache``, transposes into a fresh buffer on every call; its fusible ``te.ops`` Linear creates fp8 weights
  ``with_transpose_cache=torch.is_grad_enabled()``. Whether the modules' own weights and workspaces get one is in that
  line's module/base.py, not stored. Were it not, each microbatch would transpose every weight (2 bytes a weight, +1.4%
  to +4% of the NeMo 24.07 H100 steps; docs/calibration/rounds-10-14.md, "Transformer Engine 1.x fp8, kernel by
  kernel"). No bundled or hidden-set container runs that line: NeMo 24.07 shipped TE 1.8.0.dev0, 24.09 TE 1.10 (NeMo
  user guide 24.09, "Software Component Versions"); 25.02's is unread (TE 1.14 or 2.x). Exceptions, not modelled:
  Megatron-FSDP drops the cache after each module's use unless ``keep_fp8_transpose_cache``, and torch FSDP2 deletes
  it ("transposing fp8 weights at each micro-batch"): a Transformer Engine recipe at ZeRO 3 without fp8 parameters
  would re-quantize every microbatch and hold no cache, so it is refused (spec.config ``_check_precision_options``).
- The distributed optimizer's parameter all-gather moves the fp8 bytes (``gather_bytes_per_param``): the
  param-and-grad buffer of fp8 parameters is ``torch.uint8`` (Megatron-Core distributed_data_parallel.py groups
  parameters by ``param_dtype = torch.uint8 if is_float8tensor(param)``), 1 byte an element instead of 2.
- The optimizer's copy into the model (``distrib_optimizer._copy_main_params_to_model_params``): for a Float8Tensor,
  ``shard_main_param = shard_main_param.to(model_param.dtype)`` (the same read 4 / write 2 as the 16-bit copy), then
  ``cast_to_fp8(shard_main_param.view(1, -1), model_param._fp8_meta['scaling_fwd'], ..., out=shard_model_param)``
  (later ``quantize_param_fragment`` / ``quantize_param_shard``): one more per-tensor kernel reading 2 and writing 1
  (``CAST_READ``, ``CAST_WRITTEN``). Current scaling (``quantize_param_shard`` with a current-scaling quantizer)
  first takes each shard's amax (reads the fp32 shard, ``CURRENT_AMAX_READ``) and all-reduces them.
- Then the scales (Megatron-Core fp8_utils ``post_all_gather_processing`` / ``_update_fp8_scale_inv_and_amax``; TE
  ``cast_master_weights_to_fp8``): each fp8 parameter's transpose cache is reset, the scales are packed
  (``_multi_tensor_copy_this_to_that``), inverted (``torch.reciprocal``) and copied to the ``scale_inv``s, the amaxes
  packed, all-reduced with ``ReduceOp.MAX`` over the data-parallel group and copied back: ``SCALE_UPDATE_KERNELS``
  small kernels, each one launch of the stream (the all-reduce of 4 bytes per fp8 tensor, a few KB, left out).
- What it replaces: without fp8 parameters Transformer Engine casts and transposes each weight once a step (first
  microbatch, ``is_first_microbatch``), 4 bytes a parameter on Hopper; with them the forward reads the fp8 weight
  and, on Hopper, transposes it once after each optimizer step (2 bytes, one kernel per GEMM weight). Both are
  charged once a step (``weight_quantize_kernels``, below; docs/calibration/round-18.md "Round 18: what an FP8 step does
  beyond its GEMMs").

The weights' quantization once a step (``weight_quantize_kernels``), from source. TE 1.8 (NeMo 24.07): each
module's forward takes its fp8 weight from ``get_fp8_workspace(tensor=weight, fp8_meta_forward=True,
fp8_meta_index=..._WEIGHT, cache_name=(None if is_first_microbatch is None else "weight"), update_workspace=
is_first_microbatch is None or is_first_microbatch, with_transpose=is_grad_enabled)`` (module/base.py with
linear.py / layernorm_linear.py of 1.8-1.10): on a chunk's first microbatch one ``fp8_cast_transpose_fused`` per
weight writes the cached fp8 weight and its transpose (2 read, 1 + 1 written), later microbatches reuse them; with
fp8 parameters (``Float8Tensor`` weights) only the transpose is remade, once, after the optimizer invalidated it
(above). TE 2.x the same through ``get_weight_workspace`` and the weight quantizer (rowwise, and columnwise where
fp8 GEMMs are TN only: ``fp8_recipes.transposes``; current scaling's amax pass first, MXFP8's two block-scaled
copies): ``fp8_recipes.quantize_kernels`` of one weight tensor. Megatron-Core marks the first microbatch
(``forward_step``: ``if is_first_microbatch and hasattr(model, 'set_is_first_microbatch')``; NeMo 1.x wraps the
model in Megatron-Core's ``Float16Module``, a ``MegatronModule`` that has it; its TE wrappers pass
``is_first_microbatch`` and clear it after the call). Charged there: before each chunk's forward of a step's first
microbatch (``parallel/plan.py`` ``chunk_weight_quantize_s`` -> ``ChunkCost.first_forward_s``), so under pipelining
the fill path pays every stage's. One kernel set per weight tensor (TE quantizes each module weight, and each of a
``GroupedLinear``'s ``weight{i}``, on its own): ``parallel.memory.chunk_gemm_weight_tensors`` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

from simcluster.core.errors import ScenarioError
from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.workload import fp8_recipes

# recipes whose fp8 parameters are modelled: the per-tensor ones (MXFP8 parameters gather rowwise data and block
# scales, Megatron-Bridge's reuse_grad_buf_for_mxfp8_param_ag: not modelled)
FP8_PARAM_RECIPES = ("delayed", "current")
FP8, BF16, FP32 = BYTES_PER_ELEMENT["fp8"], BYTES_PER_ELEMENT["bf16"], BYTES_PER_ELEMENT["fp32"]
CAST_READ, CAST_WRITTEN = BF16, FP8        # cast_to_fp8 of the 16-bit shard into the fp8 buffer
CURRENT_AMAX_READ = FP32                   # current scaling: the fp32 main shard's amax before the cast
# kernels after the copy: pack the scales, reciprocal, copy to scale_inv, pack the amaxes, copy them back
SCALE_UPDATE_KERNELS = 5
# GEMM weights of a dense Megatron-Core Transformer Engine layer (QKV, attention projection, fc1, fc2): the fp8
# tensors of an optimizer shard (``Fp8Shard.tensors``); the weight quantize counts each model's tensors
# (``parallel.memory.chunk_gemm_weight_tensors``)
GEMM_WEIGHT_TENSORS_PER_LAYER = 4
WEIGHT_TRANSPOSE_OP = "fp8_weight_transpose"   # an fp8 parameter's transpose cache remade (Hopper)
# an MXFP8 weight: rowwise and columnwise fp8 copies, each with one E8M0 scale per 32 elements (OCP MX v1.0)
MXFP8_WEIGHT_BYTES = 2 * (FP8 + fp8_recipes.MX_SCALE_BYTES / fp8_recipes.MX_BLOCK)


@dataclass(frozen=True)
class Fp8Shard:
    """The fp8 parameters in a rank's optimizer shard: ``elements`` the share of its elements, ``tensors`` the share
    of its parameter tensors, under fp8 ``recipe``."""

    elements: float
    tensors: float
    recipe: str = "delayed"


def enabled(training) -> bool:
    """Whether a scenario's ``training`` runs fp8 parameters as modelled here: the resolved option, with fp8 precision
    and a per-tensor recipe (``FP8_PARAM_RECIPES``; MXFP8: see ``mxfp8_params``; with torchao's recipe on FSDP2 the
    option is torchao's float8 all-gather, ``torchao_float8.fsdp_float8_all_gather``, not these fp8 parameters)."""
    return bool(training.fp8_param_gather) and training.precision == "fp8" and training.fp8_recipe in FP8_PARAM_RECIPES


def refuse_sharded_transpose(training, zero_stage: int, gpu_name: str) -> None:
    """Refuse fp8 parameters at ZeRO 3 where fp8 GEMMs are TN only (Hopper): Megatron-FSDP without
    ``keep_fp8_transpose_cache`` (and FSDP2) drops the weight's transpose after each use, so Hopper remakes it every
    microbatch, while ``weight_quantize_kernels`` charges it once per chunk a step (no bundled run is affected: the
    ZeRO-3 fp8 rows run on Blackwell)."""
    if enabled(training) and zero_stage >= 3 and fp8_recipes.transposes(gpu_name):
        raise ScenarioError("training.fp8_param_gather", f"zero_stage 3 with fp8 on {gpu_name} (fp8 parameters) "
                            "remakes each weight's transpose every microbatch (Megatron-FSDP drops it after use): not "
                            "modelled (use zero_stage 1 or 2, or precision bf16)")


def mxfp8_params(training) -> bool:
    """Megatron-Core's MXFP8 parameters: ``fp8_param_gather`` with fp8 precision and the MXFP8 recipe. The model is
    built under ``fp8_model_init`` with the MXFP8 quantizer, so each GEMM weight is an ``MXFP8Tensor`` holding its
    rowwise and columnwise copies with their block scales (``MXFP8_WEIGHT_BYTES``) instead of the 16-bit weight, and
    Transformer Engine keeps no cached copy beside it (``get_weight_workspace`` returns the parameter itself when it
    is already quantized). Its gather (Megatron-Bridge's ``reuse_grad_buf_for_mxfp8_param_ag``) and the optimizer's
    MXFP8 quantize are not modelled: the once-a-step quantize stays charged as without (``weight_quantize_kernels``)."""
    return bool(training.fp8_param_gather) and training.precision == "fp8" and training.fp8_recipe == "mxfp8"


def weight_bytes_per_param(gpu_name: str) -> float:
    """HBM bytes an fp8 GEMM weight holds: the fp8 data, and its transpose where fp8 GEMMs are TN only (Hopper)."""
    return FP8 * (2 if fp8_recipes.transposes(gpu_name) else 1)


def gather_bytes_per_param() -> float:
    """Bytes of an fp8 weight in the distributed optimizer's parameter all-gather (its uint8 buffer)."""
    return float(FP8)


def weight_quantize_bytes_per_param(recipe: str, transpose: bool, fp8_param_gather: bool) -> float:
    """HBM bytes per GEMM weight of the once-a-step weight quantization (module docstring): without fp8 parameters
    the recipe's cast of a 16-bit operand (``fp8_recipes.cast_bytes_per_element``); with them the transpose of the
    fp8 weight where fp8 GEMMs are TN only (1 read + 1 written), else nothing (the optimizer wrote the fp8 weight:
    ``fp8_cast_passes`` of workload/optimizer_step.py)."""
    if fp8_param_gather:
        return 2.0 * FP8 if transpose else 0.0
    return fp8_recipes.cast_bytes_per_element(recipe, transpose)


def weight_quantize_kernels(recipe: str, transpose: bool, fp8_param_gather: bool,
                            tensors: list[tuple[float, int]]) -> list[tuple[str, float, float]]:
    """The kernels quantizing GEMM weight ``tensors`` ((elements, count): ``parallel.memory.
    chunk_gemm_weight_tensors``) on a chunk's first microbatch, as (name, elements, HBM bytes): one quantize per
    tensor (``fp8_recipes.quantize_kernels``: an amax pass first under current scaling), or one transpose per tensor
    with fp8 parameters on Hopper; none with fp8 parameters where GEMMs take any layout, nor for torchao's recipe (it
    casts the weights on every call: workload/torchao_float8.py)."""
    if recipe not in fp8_recipes.FP8_RECIPES:
        return []
    kernels: list[tuple[str, float, float]] = []
    per_element = weight_quantize_bytes_per_param(recipe, transpose, True)
    for elements, count in tensors:
        if fp8_param_gather and recipe in FP8_PARAM_RECIPES:
            kernels += [(WEIGHT_TRANSPOSE_OP, elements, per_element * elements)] * count if per_element else []
        else:
            kernels += fp8_recipes.quantize_kernels(recipe, transpose, [(elements, False)]) * count
    return kernels


def weight_workspace_bytes_per_param(recipe: str, gpu_name: str) -> float:
    """HBM bytes per GEMM weight Transformer Engine keeps, without fp8 parameters, as the cached fp8 copy of the
    16-bit weight (``get_fp8_workspace(..., cache_name="weight")`` in TE 1.x, ``get_weight_workspace`` in 2.x: the
    cache lives in the module's ``_fp8_workspaces`` across microbatches and steps, module docstring): the fp8 data
    and, where fp8 GEMMs are TN only, its transpose (``Float8Tensor.cast_transpose_`` fills both); MXFP8 its rowwise
    and columnwise copies with their E8M0 block scales. None for torchao's recipe (it casts on every call)."""
    if recipe not in fp8_recipes.FP8_RECIPES:
        return 0.0
    if recipe == "mxfp8":
        return MXFP8_WEIGHT_BYTES
    return weight_bytes_per_param(gpu_name)
