"""Weight-gradient accumulation outside the wgrad GEMM (``training.gradient_accumulation_fusion: false``).

Megatron-Core fuses the accumulation into the weight-gradient GEMM by default: Transformer Engine's wgrad GEMM adds
into the parameter's ``main_grad`` buffer in its epilogue (``gradient_accumulation_fusion``, TE ``fuse_wgrad_
accumulation``), which ``ops`` counts as the GEMM's output. Without it the GEMM writes a fresh 16-bit ``weight.grad``
and the data-parallel wrapper's backward hook adds it to the main gradient, ``param.main_grad.add_(param.grad)``
(megatron/core/distributed/distributed_data_parallel.py and Megatron-FSDP's param-and-grad buffer hooks): one more
elementwise kernel per microbatch that reads the 16-bit gradient and the main gradient and writes the main gradient,
whose dtype is the reduction's (fp32 with grad_reduce_in_fp32, else the parameters' bf16). Megatron-Bridge's NeMo 25.11
performance scripts turn the fusion off for every Megatron-FSDP run ("Disabled to avoid functional errors",
scripts/performance/configs/llama/llama3_llm_pretrain.py).
"""

from __future__ import annotations

from simcluster.spec.hardware import BYTES_PER_ELEMENT

OP_NAME = "grad_accumulate"                     # the op ``ops.layer_ops`` adds
WEIGHT_GRAD_BYTES = BYTES_PER_ELEMENT["bf16"]   # the wgrad GEMM's output (Transformer Engine: the parameters' dtype)


def bytes_per_param(fused: bool, main_grad_dtype: str) -> float:
    """HBM bytes of the separate accumulation per parameter and microbatch: 0 when fused into the wgrad GEMM, else
    read the 16-bit gradient, read and write the main gradient."""
    return 0.0 if fused else WEIGHT_GRAD_BYTES + 2 * BYTES_PER_ELEMENT[main_grad_dtype]


def accumulated_params(backward_weight: list) -> float:
    """Parameters whose gradients the weight-gradient GEMMs of ``backward_weight`` produce (each GEMM's in x out
    output, times its batch of experts); other ops (embedding scatter-adds) accumulate in place."""
    return sum(op.m * op.n * op.batch for op in backward_weight if op.kind == "gemm")
