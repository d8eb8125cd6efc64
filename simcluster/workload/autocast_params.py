"""fp32 parameters cast to 16 bits at every use (``training.autocast_fp32_params``): torch.autocast over fp32
weights without a 16-bit model copy, as PyTorch Lightning's ``precision: bf16`` runs it (flash-attention's
training/ scripts, whose GPT rows Dao 2023 published; docs/calibration/round-19.md, "Round 19").

**Forward.** flash-attention's ``FusedDenseFunc`` and ``FusedMLPFunc`` (flash_attn/ops/fused_dense.py) call
``weight.to(dtype=torch.get_autocast_gpu_dtype())`` and the same for the bias inside the autograd Function's forward
when autocast is enabled: an explicit copy, outside autocast's per-region weight cache, so every microbatch's forward
casts every Linear's weight and bias, one elementwise kernel per tensor that reads 4 bytes and writes 2 an element.
The tied output layer (``nn.Linear`` under autocast) casts its weight once per forward as well (autocast's cache
lives for the autocast region, one microbatch's forward). The norms are not cast (``dropout_add_layer_norm`` takes
fp32 weights with 16-bit inputs).

**Backward.** The Functions return 16-bit weight and bias gradients for fp32 inputs; autograd's engine casts each
gradient to its input's dtype before accumulating it (torch/csrc/autograd/engine.cpp ``validate_outputs``:
``grad.to(metadata dtype)`` when the dtypes differ): one kernel per tensor reading 2 bytes and writing 4 an element.
The gradient the accumulation then adds is that fp32 tensor (``NEW_GRAD_BYTES``), not the GEMM's 16-bit output.

**States and memory** (parallel/memory.py ``state_precision``): fp32 parameters, fp32 gradients and the optimizer's
two fp32 moments; a sharded optimizer gathers the fp32 parameters (ZeroRedundancyOptimizer's broadcasts from each
owner rank, parallel/plan.py). Each Linear's 16-bit copy is saved for its backward (``autocast_weight_copy_bytes``).
"""

from __future__ import annotations

from simcluster.spec.hardware import BYTES_PER_ELEMENT

# a cast between the fp32 parameter (or gradient) and its 16-bit copy: read one, write the other
CAST_BYTES_PER_ELEMENT = BYTES_PER_ELEMENT["fp32"] + BYTES_PER_ELEMENT["bf16"]
# the dtype of ``.grad``, the fp32 parameter's, whatever width the gradient reduction puts on the wire (a DDP
# compression hook casts a copy), and of the weight gradient autograd adds into it once the engine has cast it
GRAD_DTYPE = "fp32"
NEW_GRAD_BYTES = BYTES_PER_ELEMENT[GRAD_DTYPE]
FORWARD_OP = "autocast_weight_cast"
BACKWARD_OP = "autocast_grad_cast"


def cast_kernels(name: str, tensors: list[float]) -> list[tuple[str, float, float]]:
    """(name, FLOP, HBM bytes) of one cast kernel per tensor of ``tensors`` elements (one FLOP an element)."""
    return [(name, float(elements), CAST_BYTES_PER_ELEMENT * elements) for elements in tensors if elements > 0]
