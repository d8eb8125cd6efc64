"""Weight-gradient accumulation outside the wgrad GEMM (``training.gradient_accumulation_fusion: false``).

Megatron-Core fuses the accumulation into the weight-gradient GEMM by default: Transformer Engine's wgrad GEMM adds
into the parameter's ``main_grad`` buffer in its epilogue (``gradient_accumulation_fusion``, TE ``fuse_wgrad_
accumulation``), counted as the GEMM's output: for every linear (dense and grouped expert wgrads) a read
and a write of the main gradient at its width (``ops.wgrad_output_bytes``). Without it the GEMM writes a fresh
16-bit ``weight.grad`` and the data-parallel wrapper's backward hook adds it to the main gradient,
``param.main_grad.add_(param.grad)``
(megatron/core/distributed/distributed_data_parallel.py and Megatron-FSDP's param-and-grad buffer hooks): one more
elementwise kernel per microbatch that reads the 16-bit gradient and the main gradient and writes the main gradient,
whose dtype is the reduction's (fp32 with grad_reduce_in_fp32, else the parameters' bf16). Megatron-Bridge's NeMo 25.11
performance scripts turn the fusion off for every Megatron-FSDP run ("Disabled to avoid functional errors",
scripts/performance/configs/llama/llama3_llm_pretrain.py).

**Kernels.** Both hooks add one parameter's gradient at a time: one elementwise kernel per parameter tensor and
microbatch, the layer's weights, biases and norm parameters alike (``tensor_params``). Where that is charged
(``per_tensor``): Megatron-LM's 2020-2021 stack, whose fp16 optimizer wrappers (``training.optimizer: megatron2020`` /
``megatron2021``, workload/megatron_fp16_step.py) it ran with:
- 2021, ``--DDP-impl local`` with contiguous buffers (megatron/model/distributed.py ``DistributedDataParallel``):
  ``_make_param_hook`` registers, for every parameter with ``requires_grad``, a hook on its gradient accumulator
  that runs ``param.main_grad.add_(param.grad.data)`` and frees ``param.grad``; the weight-gradient GEMMs of that
  code (megatron/mpu/layers.py ``F.linear`` under autograd) write a fresh ``param.grad``, there is no fusion yet
  (``--gradient-accumulation-fusion`` came with Megatron-LM's 2022 ``LinearWithGradAccumulationAndAsyncCommunication``).
- 2020 (megatron/fp16/fp16.py ``FP16_Optimizer``, whose ``zero_grad()`` keeps the fp16 gradients), and PyTorch DDP in
  2021: autograd's ``AccumulateGrad`` adds each new gradient into the parameter's existing ``.grad``, an in-place add
  per tensor (torch/csrc/autograd/functions/accumulate_grad.h: ``variable_grad += new_grad``).
The bytes are those of one kernel over the layer's weights plus the biases' and norms' few (an HBM-bound kernel's time
is linear in its bytes); each kernel pays the stream's per-kernel time.

**Microbatches charged** (``charged_share``). Megatron's hooks (Megatron-Core's, and the 2021 local DDP's
``main_grad.add_``, ``parallelism.local_ddp`` not ``none``) and the 2020 ``FP16_Optimizer`` (which keeps ``.grad``,
``KEEPS_GRAD``) add on every microbatch, the first included. With ``zero_grad(set_to_none=True)`` (PyTorch DDP under
the 2021 wrapper, ``local_ddp: none``) the first microbatch's ``AccumulateGrad`` only takes the gradient over (no
kernel): a step of m microbatches runs m - 1 adds, charged exactly as (m - 1)/m of the per-microbatch bytes on each
microbatch (0 at m = 1). FSDP2's unsharded accumulation under pipelining is charged every microbatch (its first is a
cast into the reduce dtype, 6 of the add's 10 B per parameter, left at the add's bytes).
Megatron-Core's own hook has the same per-tensor structure but is left as one kernel a layer here (its rows run with
the fusion). Megatron-FSDP with sharded gradients copies instead of adding (``copies_into_sharded_buffer``): 2 + w
bytes a parameter (w the main gradient's width), one kernel per parameter tensor as ``_grad_acc`` runs it for each
parameter of the unit (``tensor_params``; ops.py ``grad_accumulation_per_tensor``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.spec.model import TransformerSpec
from simcluster.workload import autocast_params, optimizer_step
from simcluster.workload.megatron_fp16_step import OPTIMIZER_PASSES

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario

OP_NAME = "grad_accumulate"                     # the op ``ops.layer_ops`` adds
# optimizers whose zero_grad() zeroes .grad in place instead of freeing it, so that autograd adds into it even on the
# first microbatch: Megatron-LM 2020's FP16_Optimizer (megatron/fp16/fp16.py, module docstring)
KEEPS_GRAD = frozenset({"megatron2020"})
WEIGHT_GRAD_BYTES = BYTES_PER_ELEMENT["bf16"]   # the wgrad GEMM's output (Transformer Engine: the parameters' dtype)


def charged_share(scenario: Scenario, fused: bool) -> float:
    """Share of the per-microbatch accumulation bytes this module charges on each microbatch (0 = no separate kernel).
    ``fused``: the GEMM accumulates into Megatron's ``main_grad`` itself (``ops.main_grad_bytes`` > 0, which needs
    Megatron-Core's stack; ``training.gradient_accumulation_fusion`` means nothing elsewhere): 0. Otherwise, per stack:
    - DeepSpeed's engine (``pipeline_engine: deepspeed``): 0, ``parallel.deepspeed_pipeline`` charges its own
      (BF16_Optimizer's ``hp_grad`` add, or autograd's 16-bit ``.grad`` add).
    - PyTorch FSDP with its gradients sharded every microbatch (``zero_stage: 3`` off Megatron-Core: llm-foundry's
      FSDP1, torchtitan's FSDP2 without pipelining): 0, the reduce-scatter runs each microbatch and the add is the
      shard's, 1/dp of the gradient (``parallel.fsdp_runtime``, ``_accumulate_sharded_grad``; not charged).
    - 1, every microbatch the first included: Megatron-Core without the fusion (``main_grad.add_(grad)``);
      Megatron-LM 2021's local DDP (``local_ddp`` not ``none``: its hook runs ``param.main_grad.add_(param.grad.data)``
      every microbatch); Megatron-LM 2020's ``FP16_Optimizer`` (``KEEPS_GRAD``: autograd adds into the kept
      ``.grad``); torchtitan's FSDP2 under pipelining (``zero_stage`` 1 with pp > 1:
      torch.distributed.pipelining's stage turns gradient sync off until the last microbatch,
      ``set_requires_gradient_sync(False)``, and FSDP2 adds each microbatch's unsharded gradient into
      ``unsharded_accumulated_grad`` in the reduce dtype,
      torch/distributed/fsdp/_fully_shard/_fsdp_param.py ``accumulate_unsharded_grad_if_needed``).
    - (m - 1)/m: PyTorch DDP with ``zero_grad(set_to_none=True)`` (the 2021 wrapper's, ``local_ddp: none``):
      autograd's ``AccumulateGrad`` takes the first microbatch's gradient over and adds the other m - 1
      (``variable_grad += new_grad``: read the new 16-bit gradient, read and write ``.grad``), so the step's m - 1
      adds are spread exactly over its m microbatches (0 at m = 1: Narayanan et al. 2021's small Table 1 rows).
    The add's width is ``parallelism.grad_reduce_dtype``'s (``bytes_per_param``)."""
    if fused:
        return 0.0
    p = scenario.parallelism
    if scenario.megatron_core:
        return 1.0
    if p.pipeline_engine == "deepspeed" or p.zero_stage == 3:
        return 0.0
    if scenario.training.optimizer in KEEPS_GRAD or p.local_ddp != "none" or p.zero_stage > 0:
        return 1.0
    m = scenario.microbatches
    return (m - 1) / m


def bytes_per_param(fused: bool, main_grad_dtype: str, new_grad_bytes: float = WEIGHT_GRAD_BYTES) -> float:
    """HBM bytes of the separate accumulation per parameter and add: 0 when fused into the wgrad GEMM, else
    read the new gradient (16-bit, or fp32 once autograd has cast it to fp32 parameters: workload.autocast_params),
    read and write the main gradient."""
    return 0.0 if fused else new_grad_bytes + 2 * BYTES_PER_ELEMENT[main_grad_dtype]


def copies_into_sharded_buffer(scenario: Scenario) -> bool:
    """Megatron-FSDP with its gradients sharded (ZeRO-3 on Megatron-Core, ``optim_grads_params``): its gradient hook
    (megatron_fsdp.py ``_grad_acc``, 2025 versions) takes a fresh main-gradient bucket each microbatch for a
    data-distributed gradient buffer and ``param.main_grad.copy_(param.grad)``: the bucket is reduce-scattered and
    only its shard accumulated, so it reads the 16-bit gradient and writes the main gradient, no read of it."""
    return scenario.megatron_core and scenario.parallelism.zero_stage == 3


def charged_bytes_per_param(scenario: Scenario, fused: bool) -> float:
    """HBM bytes charged per parameter and microbatch: ``bytes_per_param`` at the reduction's width times
    ``charged_share``; Megatron-FSDP's copy (``copies_into_sharded_buffer``) one main-gradient pass less."""
    share = charged_share(scenario, fused)
    autocast = scenario.training.autocast_fp32_params   # .grad takes the fp32 parameter's dtype (autocast_params)
    width = autocast_params.GRAD_DTYPE if autocast else scenario.parallelism.grad_reduce_dtype
    if share and copies_into_sharded_buffer(scenario):
        return share * (bytes_per_param(False, width) - BYTES_PER_ELEMENT[width])
    new_grad = autocast_params.NEW_GRAD_BYTES if autocast else WEIGHT_GRAD_BYTES
    return share * bytes_per_param(share == 0.0, width, new_grad)


def accumulated_params(backward_weight: list) -> float:
    """Parameters whose gradients the weight-gradient GEMMs of ``backward_weight`` produce (each GEMM's in x out
    output, times its batch of experts); other ops (embedding scatter-adds) accumulate in place."""
    return sum(op.m * op.n * op.batch for op in backward_weight if op.kind == "gemm")


def per_tensor(optimizer: str) -> bool:
    """Whether the separate accumulation runs one kernel per parameter tensor: Megatron-LM's 2020-2021 stack, named
    by its fp16 optimizer wrapper (module docstring); Megatron-FSDP's copy too (``copies_into_sharded_buffer``)."""
    return optimizer in OPTIMIZER_PASSES


def tensor_params(model: TransformerSpec, backward_weight: list) -> list[float]:
    """Parameters of each tensor of one layer whose gradients the accumulation adds, one entry a kernel: each
    weight-gradient GEMM's weight (in x out) and, where the model has biases, its bias (out: the column-parallel
    linears' split width, the row-parallel ones' full width), then the two norms' weights (and biases, LayerNorm)
    and, with ``qk_layernorm``, the query and key norms' (head_dim each). The norms follow
    ``optimizer_step``'s per-norm rule, so a dense layer without qk_layernorm has
    ``optimizer_step.parameter_tensors_per_layer`` tensors."""
    tensors = linear_tensor_params(model, backward_weight)
    per_norm = optimizer_step.tensors_per_norm(model.norm)
    tensors += [float(model.hidden)] * optimizer_step.LAYER_NORMS * per_norm
    if model.qk_layernorm:
        tensors += [float(model.d_head)] * 2 * per_norm
    return tensors


def linear_tensor_params(model: TransformerSpec, backward_weight: list) -> list[float]:
    """Parameters of each linear tensor of one layer: each weight-gradient GEMM's weight (in x out) and, where the
    model has biases, its bias (out), one entry a tensor (``tensor_params`` without the norms)."""
    gemms = [op for op in backward_weight if op.kind == "gemm"]
    tensors = [float(op.m * op.n * op.batch) for op in gemms]
    if model.linear_biases:
        tensors += [float(op.n * op.batch) for op in gemms]
    return tensors
