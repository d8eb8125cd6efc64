"""The optimizer step as each framework runs it (``training.optimizer``): its kernels, their HBM bytes per element,
what they run over (the rank's optimizer shard or its whole gradient buffer), how many launches they take, and
where the host waits for the device.

Every pass is a memory-bound elementwise kernel (the few FLOP per element never bind); bytes are reads + writes per
element. ``over``: ``shard``, the parameters whose optimizer state this rank holds (all local ones without the
distributed optimizer, 1/(dp x cp) of them with it); ``buffer``, every element of the rank's gradient buffer (all
local parameters, or the shard with ZeRO >= 2). ``launch``: how the host issues it:

- ``multi_tensor``: one ``multi_tensor_apply`` call over a tensor list (Apex / Transformer Engine
  ``multi_tensor_adam``, ``multi_tensor_l2norm``, ``multi_tensor_scale``; PyTorch's ``_foreach_*`` and
  ``_fused_adamw_`` use the same scheme): the list is cut into chunks of ``MULTI_TENSOR_CHUNK`` elements
  (``MultiTensorApply(2048*32)``, apex/multi_tensor_apply/__init__.py, TE transformer_engine/pytorch/optimizers/
  multi_tensor_apply.py) and a kernel is launched every ``MULTI_TENSOR_MAX_BLOCKS`` chunks (``depth_to_max_blocks``,
  320 for every depth, csrc/multi_tensor_apply.cuh): ceil(elements / (65536 x 320)) launches. The per-launch tensor
  limit (``depth_to_max_tensors``, 110 for one list down to 30 for five) is left out: it adds a launch per 30-110
  tensors and the tensor count is not in the scenario. The call is one kernel of the stream as Python issues it
  (the stream's gap before it, ``kernels.HostModel.kernel_gap_s``); its C++ loop queues the other launches back to
  back, each the measured latency of a queued launch (efficiency.yaml ``launch_overhead_s``; Kineto traces: 1-3 us
  median before queued memory-bound kernels, efficiency.yaml host_overhead_source), not the fitted gap;
- ``per_tensor``: a Python loop issuing one kernel per parameter tensor of the shard (``tensors`` below);
- ``flat``: one kernel over one contiguous buffer;
- ``per_buffer``: one kernel over each of the rank's gradient buffers (``buffers``).

``sync_after``: the host reads the pass's result (``.item()``) before issuing the next kernel, so the stream drains
and idles while the host issues what follows (``kernels.HOST_SYNC``).

**Megatron-Core** (``adam``, the default: Megatron-Core core_r0.5-0.9 as Megatron-LM 2024 and NeMo 2.0 24.09 run
it, with Transformer Engine's or Apex's FusedAdam; megatron/core/optimizer/optimizer.py ``MixedPrecisionOptimizer
.step``, distrib_optimizer.py, clip_grads.py; megatron/core/distributed/param_and_grad_buffer.py; megatron/training/
training.py ``train_step``):

1. ``prepare_grads`` -> ``_copy_model_grads_to_main_grads``: ``shard_main_param.grad = shard_model_grad.float()``
   per shard tensor: a view when the gradient buffer is fp32 (``grad_reduce_in_fp32``, the bf16 default), a cast
   (read 2, write 4) when it is 16-bit. fp16 loss scaling's unscale pass is ``plan.py``'s (it was already there).
2. ``clip_grad_norm`` -> ``get_grad_norm_fp32``: ``multi_tensor_l2norm`` over the fp32 main gradients (read 4), the
   squared norm all-reduced (the engine's ``grad_norm_axes``), then ``total_norm.item()``: a host sync. The rescale
   (``multi_tensor_scale`` by max_norm/norm) runs only on steps whose norm exceeds ``clip_grad``: left out.
3. ``self.optimizer.step()``: FusedAdam's ``multi_tensor_adam`` over the fp32 shard: read weight, gradient, two
   moments (16), write weight and moments (12): 28 B.
4. ``_copy_main_params_to_model_params``: with the distributed optimizer ``shard_model_param.data.copy_(
   shard_main_param)`` per shard tensor (read 4, write 2); without it (``Float16OptimizerWithFloat16Params``)
   ``_multi_tensor_copy_this_to_that`` (``multi_tensor_scale`` by 1.0), the same bytes in multi-tensor launches.
   With fp8 parameters (``training.fp8_param_gather``) the copy is ``.to(bf16)`` and then ``cast_to_fp8`` into the
   fp8 buffer, and the scales are updated (``fp8_cast_passes``, workload/fp8_params.py).
5. ``train_step``: ``model_chunk.zero_grad_buffer()`` before the next forward: ``grad_data.zero_()`` over the whole
   gradient buffer (write 4 fp32, 2 for 16-bit reduction), one kernel per buffer (``launch="per_buffer"``): every
   model chunk's DDP holds its own buffers, a dense one and, with experts, an expert-parallel one
   (megatron-core 0.9.0 distributed/distributed_data_parallel.py l. 429-439 ``for buffer in self.buffers +
   self.expert_parallel_buffers: buffer.reset()``, param_and_grad_buffer.py l. 646-650 ``self.grad_data.zero_()``;
   0.8.0 l. 274-283 alike), so an interleaved stage of v chunks launches v (dense) kernels; the shard's main
   gradients are set to None (``zero_grad(set_to_none=True)``, no kernel).

38 B per shard parameter (30 were counted before: Adam plus a fused 16-bit write) plus 4 B per gradient-buffer
element.

**Megatron-Core with** ``use_precision_aware_optimizer`` and Transformer Engine keeping the master weights
(``adam_precision_aware``; Megatron-Bridge's performance scripts set the flag for bf16 runs, ``if compute_dtype ==
"bf16": ...use_precision_aware_optimizer = True``, but there the optimizer config's ``fp8_recipe`` is "tensorwise" and
Megatron-Core keeps the master: ``adam``, see "Adam's moments in bf16" below): Transformer Engine's FusedAdam with
``master_weights`` and ``store_param_remainders`` (OptimizerConfig default True) updates the 16-bit weight in place
and keeps only the low 16 bits of the fp32 master weight: read the gradient (the buffer's, ``decoupled_grad``, no
cast), the 16-bit weight, its 16-bit remainder and both fp32 moments, write all but the gradient: 4 + 2 + 2 + 8 read,
2 + 2 + 8 written (28 B with fp32 gradients); no copy pass (``_copy_main_params_to_model_params`` returns early). The
norm and the zeroed buffer as above. Optimizer state: 2 + 4 + 4 = 10 B per parameter (``STATE_BYTES``).

**torchtitan** (``torch_adamw``: FSDP2, fp32 sharded parameters and gradients; torchtitan/components/optimizer.py
AdamW ``implementation: fused``, torchtitan/distributed/utils.py ``clip_grad_norm_``): ``get_total_norm(foreach=
True)`` (``_foreach_norm``, read 4; the DTensor's ``full_tensor()`` all-reduces it, no host sync),
``clip_grads_with_norm_`` (``_foreach_mul_`` by the clamped coefficient on every step, read 4, write 4),
``torch._fused_adamw_`` (28 B); ``zero_grad`` sets the gradients to None. 40 B per shard parameter; the bf16 cast
happens in FSDP's all-gather, outside the step.

**Composer** (``decoupled_adamw``, llm-foundry): workload/composer_adamw.py, plus its gradient clipping.

**Adam's moments in bf16** (``training.adam_moments_dtype: bf16``; round 28, its review): Megatron-Core's
OptimizerConfig ``exp_avg_dtype`` / ``exp_avg_sq_dtype``, honoured only with ``use_precision_aware_optimizer``, which
hands them to Transformer Engine's FusedAdam (megatron/core/optimizer/__init__.py: ``kwargs.update({"exp_avg_dtype":
..., "exp_avg_sq_dtype": ...})`` whenever ``config.use_precision_aware_optimizer``). Who keeps the master weight depends
on the run (OptimizerConfig.__post_init__ ``use_precision_aware_optimizer_no_fp8_or_ds_fp8``: precision-aware and (main
params not fp32, or the optimizer config's ``fp8_recipe`` None or delayed)): a bf16 run whose optimizer config has no
fp8 recipe (or fp8 delayed scaling) passes ``master_weights=True`` to TE, the ``adam_precision_aware`` passes above; an
fp8 run with current scaling or MXFP8 and fp32 main params keeps Megatron-Core's own fp32 master shards, and so does a
Megatron-Bridge bf16 run (round 28: ``MixedPrecisionConfig.setup`` copies every field the OptimizerConfig shares,
``fp8_recipe`` included, whose default is "tensorwise", and ``runtime_config_update`` runs it before
``ConfigContainer.validate`` re-runs the optimizer config's ``__post_init__``; Megatron-Bridge
src/megatron/bridge/training/mixed_precision.py @ 05097809 and config.py, docs/calibration.md)
(``shard_fp32_from_float16_groups``, the gradient cast ``.float()``, the copy back into the model weights), the ``adam``
passes, "because we want to use fp8 primary weight with precision aware optimizer". The state is 4 B a parameter less
(``adam`` 12 -> 8, ``adam_precision_aware`` 10 -> 6), but the step moves more, not less: TE's FusedAdam has no kernel
reading 16-bit moments. ``step()`` unscales each non-fp32 state of every parameter first (``get_unscaled_state``:
``state[name] .float()``, a new fp32 tensor: read 2, write 4), runs ``multi_tensor_adam`` /
``multi_tensor_adam_param_remainder`` on those fp32 copies (the kernel's bytes as with fp32 moments), then writes each
back (``_apply_scale``: ``scaled_state.copy_(unscaled_state.bfloat16())``, a cast, read 4 write 2, and a copy, read 2
write 2): ``BF16_MOMENT_PASSES``, 3 kernels a moment and parameter tensor issued from Python (``launch="per_tensor"``),
16 B a moment and shard parameter more, 32 B for the two (TransformerEngine transformer_engine/pytorch/optimizers/
fused_adam.py ``step`` / ``get_unscaled_state`` / ``_apply_scale``, the stored version @ 04912bf0; the containers' own
TE releases not read). The fp32 copies of a parameter group's moments live until ``del unscaled_lists``, 8 B a shard
parameter at the step (not in the memory model). Megatron-Bridge's DeepSeek-V3 recipe sets bf16 moments (bf16 main
gradients, fp32 main parameters; src/megatron/bridge/recipes/deepseek/deepseek_v3.py, both stored versions).

Memory (``STATE_BYTES``): fp32 master weight and two moments, 12 B per shard parameter (ZeRO, Rajbhandari et al.
2020, section 3.1), except the precision-aware optimizer's 10; bf16 moments 4 B less (above).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.workload import fp8_params

# apex/multi_tensor_apply MultiTensorApply(2048*32); csrc/multi_tensor_apply.cuh depth_to_max_blocks (320 each)
MULTI_TENSOR_CHUNK = 2048 * 32
MULTI_TENSOR_MAX_BLOCKS = 320
FP32, BF16 = BYTES_PER_ELEMENT["fp32"], BYTES_PER_ELEMENT["bf16"]
FUSED_ADAM_READ, FUSED_ADAM_WRITTEN = 4 * FP32, 3 * FP32   # fp32 weight, gradient, moments in; weight, moments out


@dataclass(frozen=True)
class Pass:
    """One kernel pass of the optimizer step: bytes per element read and written, over ``shard`` or ``buffer``
    elements, issued as ``multi_tensor`` launches, one ``per_tensor`` or one ``flat`` kernel; ``sync_after``: the
    host reads its result before going on."""

    name: str
    read: float
    written: float
    over: str = "shard"
    launch: str = "multi_tensor"
    sync_after: bool = False
    tensor_share: float = 1.0   # per_tensor passes: the share of the shard's tensors they run over

    @property
    def bytes(self) -> float:
        return self.read + self.written


def passes(optimizer: str, grad_dtype: str = "fp32", distributed: bool = True, precision: str = "bf16",
           wrapper_passes: bool = True, fp8: fp8_params.Fp8Shard | None = None,
           moments: str = "fp32", clip_over: str = "shard") -> tuple[Pass, ...]:
    """The passes of ``optimizer``'s step (module docstring) with a gradient buffer of ``grad_dtype``;
    ``distributed``: Megatron-Core's distributed optimizer (per-tensor copies of the updated shard) or not;
    ``precision`` fp32/tf32: no 16-bit model weights to copy into (Megatron-Core's FP32Optimizer);
    ``wrapper_passes`` False: Adam and the weight copy only, where another framework's wrapper counts its own
    gradient norm and zeroing (DeepSpeed's BF16_Optimizer, ``deepspeed_pipeline.BF16_STEP_BYTES_PER_PARAM``);
    ``fp8``: the shard's fp8 parameters, cast after the copy and their scales updated (``fp8_cast_passes``);
    ``moments``: the dtype of Adam's two moments (``MOMENT_DTYPES``; bf16 only for the Megatron-Core optimizers);
    ``clip_over``: what ``torch_adamw``'s gradient norm and clipping run over, ``shard`` (torchtitan's FSDP2 shards)
    or ``buffer`` (Lightning clipping ZeroRedundancyOptimizer's every parameter: workload.lightning_loop)."""
    grad = BYTES_PER_ELEMENT[grad_dtype]
    assert moments in MOMENT_DTYPES and (moments == "fp32" or optimizer in BF16_MOMENT_OPTIMIZERS), moments
    # 16-bit moments: unscaled to fp32 copies before the kernel and written back after it (module docstring)
    unscale, rescale = (BF16_MOMENT_PASSES if moments != "fp32" else ((), ()))
    if optimizer == "adam":
        cast = (Pass("_copy_model_grads_to_main_grads: .float()", grad, FP32, launch="per_tensor"),) \
            if grad != FP32 else ()
        norm = (Pass("get_grad_norm_fp32: multi_tensor_l2norm", FP32, 0, sync_after=True),)
        adam = (*unscale, Pass("FusedAdam: multi_tensor_adam", FUSED_ADAM_READ, FUSED_ADAM_WRITTEN), *rescale)
        copy = () if precision in FP32_PRECISIONS else (
            Pass("_copy_main_params_to_model_params", FP32, BF16,
                 launch="per_tensor" if distributed else "multi_tensor"),)
        zero = (Pass("zero_grad_buffer: grad_data.zero_()", 0, grad, over="buffer", launch="per_buffer"),)
        if fp8 is not None and copy:
            copy += fp8_cast_passes(fp8)
        if not wrapper_passes:
            return adam + copy
        return cast + norm + adam + copy + zero
    if optimizer == "adam_precision_aware":
        return (
            Pass("get_grad_norm_fp32: multi_tensor_l2norm", grad, 0, sync_after=True),
            *unscale,
            Pass("TE FusedAdam: master weights as 16-bit remainders", grad + BF16 + BF16 + 2 * FP32,
                 BF16 + BF16 + 2 * FP32),
            *rescale,
            Pass("zero_grad_buffer: grad_data.zero_()", 0, grad, over="buffer", launch="per_buffer"),
        )
    if optimizer == "torch_adamw":
        return (
            Pass("get_total_norm: _foreach_norm", FP32, 0, over=clip_over),
            Pass("clip_grads_with_norm_: _foreach_mul_", FP32, FP32, over=clip_over),
            Pass("torch._fused_adamw_", FUSED_ADAM_READ, FUSED_ADAM_WRITTEN),
        )
    raise KeyError(optimizer)


def fp8_cast_passes(fp8: fp8_params.Fp8Shard) -> tuple[Pass, ...]:
    """Megatron-Core's extra passes for fp8 parameters after ``_copy_main_params_to_model_params``'s ``.to(bf16)``
    (workload.fp8_params): current scaling's amax of each fp32 shard, ``cast_to_fp8`` of the 16-bit shard into the
    fp8 buffer, one kernel per fp8 tensor, over the fp8 share of the shard's elements; then the scale update's small
    kernels (no bytes to speak of)."""
    amax = (Pass("quantize_param_shard: amax of the fp32 shard", fp8_params.CURRENT_AMAX_READ * fp8.elements, 0,
                 launch="per_tensor", tensor_share=fp8.tensors),) if fp8.recipe == "current" else ()
    cast = Pass("cast_to_fp8: fp8 parameter shard", fp8_params.CAST_READ * fp8.elements,
                fp8_params.CAST_WRITTEN * fp8.elements, launch="per_tensor", tensor_share=fp8.tensors)
    scales = tuple(Pass(f"fp8 parameter scales {i}", 0, 0, launch="flat")
                   for i in range(fp8_params.SCALE_UPDATE_KERNELS))
    return (*amax, cast, *scales)


OPTIMIZERS = ("adam", "adam_precision_aware", "torch_adamw")
# Adam's moment dtypes (Megatron-Core exp_avg_dtype / exp_avg_sq_dtype; module docstring, "Adam's moments in bf16")
MOMENT_DTYPES = ("fp32", "bf16")
BF16_MOMENT_OPTIMIZERS = ("adam", "adam_precision_aware")
# TE FusedAdam's passes around its kernel for 16-bit moments, per moment and parameter tensor (module docstring):
# before, get_unscaled_state's .float(); after, _apply_scale's .bfloat16() and copy_ back into the state
BF16_MOMENT_PASSES = (
    tuple(Pass(f"TE FusedAdam get_unscaled_state: {m}.float()", BF16, FP32, launch="per_tensor")
          for m in ("exp_avg", "exp_avg_sq")),
    tuple(p for m in ("exp_avg", "exp_avg_sq")
          for p in (Pass(f"TE FusedAdam _apply_scale: {m} .bfloat16()", FP32, BF16, launch="per_tensor"),
                    Pass(f"TE FusedAdam _apply_scale: {m} copy_", BF16, BF16, launch="per_tensor"))),
)
# training precisions whose model weights are the fp32 master weights themselves (no 16-bit copy to update)
FP32_PRECISIONS = ("fp32", "tf32")
# Optimizer state bytes per shard parameter (beyond the 16-bit weight and the gradient buffer)
STATE_BYTES = {"adam_precision_aware": BF16 + 2 * FP32}
DEFAULT_STATE_BYTES = 3 * FP32


def state_bytes_per_param(optimizer: str, moments: str = "fp32") -> float:
    """Optimizer state per shard parameter: fp32 master weight and moments (12 B), or the precision-aware
    optimizer's 16-bit remainder and moments (10 B); with bf16 ``moments`` 4 B less."""
    assert moments in MOMENT_DTYPES and (moments == "fp32" or optimizer in BF16_MOMENT_OPTIMIZERS), moments
    return float(STATE_BYTES.get(optimizer, DEFAULT_STATE_BYTES)) - 2 * (FP32 - BYTES_PER_ELEMENT[moments])


def bytes_per_shard_param(optimizer: str, grad_dtype: str = "fp32", moments: str = "fp32") -> float:
    """HBM bytes per shard parameter of the passes over the shard."""
    return float(sum(p.bytes for p in passes(optimizer, grad_dtype, moments=moments) if p.over == "shard"))


def bytes_per_buffer_element(optimizer: str, grad_dtype: str = "fp32", moments: str = "fp32") -> float:
    """HBM bytes per gradient-buffer element of the passes over the whole buffer."""
    return float(sum(p.bytes for p in passes(optimizer, grad_dtype, moments=moments) if p.over == "buffer"))


def multi_tensor_launches(elements: float) -> int:
    """Kernels one ``multi_tensor_apply`` call launches over ``elements`` (chunks of 65,536, 320 chunks a launch)."""
    return max(1, math.ceil(elements / (MULTI_TENSOR_CHUNK * MULTI_TENSOR_MAX_BLOCKS)))


def launches(step_pass: Pass, elements: float, tensors: float, buffers: int = 1) -> int:
    """Kernels ``step_pass`` launches over ``elements`` held in ``tensors`` parameter tensors and ``buffers``
    gradient buffers."""
    if step_pass.launch == "multi_tensor":
        return multi_tensor_launches(elements)
    if step_pass.launch == "per_tensor":
        return max(1, math.ceil(tensors * step_pass.tensor_share))
    if step_pass.launch == "per_buffer":
        return max(1, buffers)
    return 1


LAYER_LINEARS = 4   # QKV, attention output, FC1, FC2 (a gated MLP's gate lives in FC1)
LAYER_NORMS = 2     # the pre-attention and pre-MLP norms


def tensors_per_norm(norm: str) -> int:
    """Parameter tensors of one norm: its weight, and LayerNorm's bias."""
    return 2 if norm == "layernorm" else 1


def parameter_tensors_per_layer(norm: str, linear_biases: bool) -> int:
    """Parameter tensors of one Megatron-Core (Transformer Engine) transformer layer: the QKV, output, FC1 and FC2
    weights and the two norm weights fused into the QKV and FC1 modules; LayerNorm adds the two norms' biases, and
    linear biases (Megatron's add_bias_linear: GPT-style models; Llama recipes and Nemotron-4 turn them off) the
    four linears' biases. Left out: MoE experts and routers, MLA's extra projections, embeddings, qk_layernorm's
    query and key norms (grad_accumulation.tensor_params adds those, on the same per-norm rule)."""
    return LAYER_LINEARS * (2 if linear_biases else 1) + LAYER_NORMS * tensors_per_norm(norm)


def shard_tensors(layer_tensors: float, shards: int) -> float:
    """Parameter tensors a rank's shard touches: all local ones without sharding; with the distributed optimizer each
    rank holds 1/shards of every bucket, so about layer_tensors / shards of them, at least one."""
    return max(1.0, layer_tensors / max(shards, 1))
