"""Composer's ``DecoupledAdamW`` (``training.optimizer: decoupled_adamw``; llm-foundry's default optimizer,
``optimizer: name: decoupled_adamw`` in its MPT yamls): unfused, one elementwise kernel per tensor operation, each
a full pass over a parameter tensor's fp32 state, where the default ``adam`` (Megatron-Core's step,
workload/optimizer_step.py) runs one fused multi-tensor Adam pass of 28 bytes a parameter among its others.

mosaicml/composer composer/optim/decoupled_weight_decay.py, DecoupledAdamW.adamw, for each parameter:
    param.mul_(1 - decay_factor * weight_decay)          if weight_decay != 0 (llm-foundry's MPT yamls: 0.0)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)
FSDP keeps the sharded parameters and their gradients in fp32 (its MixedPrecision casts only the gathered copy),
so every tensor is 4 bytes an element. Bytes per parameter, reads + writes, per kernel (``KERNELS``): mul_ 4 + 4,
add_ 8 + 4, mul_ 4 + 4, addcmul_ 8 + 4 (the gradient twice is one read from HBM, the second from cache), sqrt 4 + 4,
division 4 + 4, add_ 4 + 4, addcdiv_ 12 + 4: 80 bytes, 8 kernels (weight decay 0); 88 with weight decay.

Kernels per tensor: Composer builds the optimizer's param group from ``model.parameters()`` after wrapping
(composer/trainer/dist_strategy.py ``prepare_fsdp_module``: ``optim.add_param_group({'params':
list(model.parameters())})``) with ``use_orig_params`` True by default on torch 2 (``fsdp_config.get(
'use_orig_params', True)``): the optimizer sees FSDP1's original parameters, each a view of the piece of it in the
rank's shard, and skips those with no piece there (``grad`` None). So each piece a rank holds costs the 8 kernels
(and clipping's 2), each with the stream's per-kernel gap (``step_ops``); the pieces are counted by
``parallel.fsdp_runtime.optimizer_tensors``.

Gradient clipping: llm-foundry's MPT yamls turn on Composer's ``gradient_clipping`` (``clipping_type: norm``,
``clipping_threshold: 1.0``); with FSDP it calls the root module's ``clip_grad_norm_``
(composer/algorithms/gradient_clipping/gradient_clipping.py), whose FSDP (torch.distributed.fsdp
FullyShardedDataParallel.clip_grad_norm_) reads every sharded fp32 gradient for its norm (4 B), all-reduces it,
and multiplies every gradient by the clamped coefficient on every step (``grad.mul_``: read 4, write 4):
``CLIPPING_KERNELS``, 12 B a parameter, timed with the optimizer. torch 2.0/2.1 loops over the gradients for
both (torch/distributed/fsdp/fully_sharded_data_parallel.py ``_get_grad_norm``: a ``vector_norm`` per gradient;
``clip_grad_norm_``: ``for grad in grads: grad.detach().mul_(clip_coef_clamped)``): 2 kernels per tensor.
"""

from __future__ import annotations

from simcluster.workload.ops import Op

FP32_BYTES = 4
# (kernel, elements read, elements written) per parameter, in DecoupledAdamW.adamw's order
WEIGHT_DECAY_KERNEL = ("param.mul_", 1, 1)
KERNELS = (("exp_avg.mul_", 1, 1), ("exp_avg.add_", 2, 1), ("exp_avg_sq.mul_", 1, 1),
           ("exp_avg_sq.addcmul_", 2, 1), ("sqrt", 1, 1), ("div", 1, 1), ("add_", 1, 1),
           ("param.addcdiv_", 3, 1))


CLIPPING_KERNELS = (("clip_grad_norm_: vector_norm", 1, 0), ("clip_grad_norm_: grad.mul_", 1, 1))


def step_ops(params: float, tensors: float, flop_per_param: float, weight_decay: bool = False) -> list[Op]:
    """The kernels of one clipped DecoupledAdamW step over ``params`` parameters held in ``tensors`` tensors (at least
    one): ``CLIPPING_KERNELS`` then ``KERNELS`` per tensor, each over an equal share of the parameters, the step's
    ``flop_per_param`` spread over the Adam kernels."""
    count = max(1, round(tensors))
    share = params / count
    adam = KERNELS + ((WEIGHT_DECAY_KERNEL,) if weight_decay else ())
    clip = [Op(name, "memory", 0.0, (reads + writes) * FP32_BYTES * share) for name, reads, writes in CLIPPING_KERNELS]
    step = [Op(name, "memory", flop_per_param * share / len(adam), (reads + writes) * FP32_BYTES * share)
            for name, reads, writes in adam]
    return (clip + step) * count
