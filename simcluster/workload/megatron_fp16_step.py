"""The passes over parameters and gradients that Megatron-LM's 2020 and 2021 fp16 step makes outside the model:
its fp16 optimizer wrapper (``training.optimizer: megatron2020`` / ``megatron2021``) and its own data-parallel
wrapper, ``--DDP-impl local`` (``parallelism.local_ddp``). Every pass is a memory-bound elementwise kernel; bytes are
per parameter (optimizer) or per gradient element (DDP), reads + writes.

**Optimizer.** The default ``adam`` is Megatron-Core's step (workload/optimizer_step.py: 38 B per shard parameter
in several kernels and the zeroed gradient buffer), fp16 loss scaling's unscale on top (parallel/plan.py); these
wrappers are one op each, as before. Megatron's wrappers run apex FusedAdam
(``multi_tensor_adam``: reads the fp32 weight, gradient and both moments, writes the weight and both moments, 28 B,
no 16-bit write) and around it:

- 2021, ``megatron/optimizer/optimizer.py`` ``FP16OptimizerWithFP16Params.step`` (NVIDIA/Megatron-LM, early 2021):
  ``_copy_model_grads_to_main_grads`` and ``_unscale_main_grads_and_check_for_nan`` (counted by plan.py), then
  ``clip_grad_norm`` (``megatron/optimizer/clip_grads.py`` ``clip_grad_norm_fp32``: ``amp_C.multi_tensor_l2norm``
  over the fp32 main gradients, 4 B read), ``self.optimizer.step()`` (FusedAdam) and
  ``_copy_main_params_to_model_params`` (``amp_C.multi_tensor_scale`` by 1.0: read fp32 4 B, write fp16 2 B).
- 2020, ``megatron/fp16/fp16.py`` ``FP16_Optimizer`` (the README's DGX-A100 table, on the README by October 2020):
  ``zero_grad()`` with ``set_grads_to_None=False`` zeroes the fp32 master gradients and the fp16 model gradients
  (write 4 + 2 B); ``update_master_grads`` checks for overflow first (dynamic loss scaling, Megatron's default
  without ``--loss-scale``; ``megatron/fp16/loss_scaler.py``
  ``DynamicLossScaler._has_inf_or_nan``: ``float(x.float().sum())`` per fp16 gradient, a cast (read 2, write 4) and
  a sum (read 4)), then copies and downscales (counted by plan.py); ``clip_master_grads`` (``megatron/mpu/grads.py``
  ``clip_grad_norm``: ``p.grad.data.norm(2)`` per fp32 master gradient, 4 B read); ``step``: FusedAdam and
  ``_master_params_to_model_params`` (``copy_``: read 4, write 2 B).

Left out: clipping's rescale (``multi_tensor_scale`` by the clip coefficient, 8 B, only on steps whose norm exceeds
``--clip-grad``), and the host synchronisations of 2020's per-tensor ``.item()`` / ``float()`` calls (host time).

**Local DDP** (``megatron/model/distributed.py``, after the whole backward, before the optimizer; Megatron-LM's
``train_step`` calls it whatever the data-parallel size, one rank included):

- ``flattened`` (2020, ``allreduce_params``; 2021's path without contiguous buffers): ``_flatten_dense_tensors``
  (a copy: read + write), ``coalesced /= world_size`` (read + write), the all-reduce, then ``buf.copy_(synced)`` for
  every gradient from ``_unflatten_dense_tensors``' views (read + write): 6 elements;
- ``contiguous`` (2021's ``use_contiguous_buffers_in_ddp``, gradients accumulated into one buffer by the backward
  hook): ``zero_grad_buffer`` at the step's start (write) and ``buffer_.data /= world_size`` (read + write): 3.
"""

from __future__ import annotations

FP32_BYTES, FP16_BYTES = 4, 2
FUSED_ADAM = ("apex FusedAdam (multi_tensor_adam)", 4 * FP32_BYTES, 3 * FP32_BYTES)
# (pass, bytes read, bytes written) per parameter, in the wrapper's order
OPTIMIZER_PASSES = {
    "megatron2021": (
        ("clip_grad_norm_fp32: multi_tensor_l2norm of the main gradients", FP32_BYTES, 0),
        FUSED_ADAM,
        ("_copy_main_params_to_model_params", FP32_BYTES, FP16_BYTES),
    ),
    "megatron2020": (
        ("zero_grad: master and model gradients", 0, FP32_BYTES + FP16_BYTES),
        ("_has_inf_or_nan: x.float().sum() per model gradient", FP16_BYTES + FP32_BYTES, FP32_BYTES),
        ("clip_grad_norm: norm(2) per master gradient", FP32_BYTES, 0),
        FUSED_ADAM,
        ("_master_params_to_model_params", FP32_BYTES, FP16_BYTES),
    ),
}
# (pass, elements read, elements written) per gradient element
LOCAL_DDP_PASSES = {
    "none": (),
    "flattened": (("_flatten_dense_tensors", 1, 1), ("coalesced /= world_size", 1, 1), ("buf.copy_(synced)", 1, 1)),
    "contiguous": (("zero_grad_buffer", 0, 1), ("buffer_.data /= world_size", 1, 1)),
}


def optimizer_bytes_per_param(optimizer: str) -> float:
    """HBM bytes per parameter of Megatron's fp16 wrapper ``optimizer`` around and including its fused Adam (the
    loss-scaling copy and unscale excluded)."""
    return float(sum(reads + writes for _, reads, writes in OPTIMIZER_PASSES[optimizer]))


def local_ddp_elements_per_grad(local_ddp: str) -> int:
    """Elements read + written per gradient element by the local DDP's passes around its all-reduce."""
    return sum(reads + writes for _, reads, writes in LOCAL_DDP_PASSES[local_ddp])
