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
  casts them again. With FSDP2's float8 all-gather (``enable_fsdp_float8_all_gather``, off by default in
  torchtitan's config of December 2024) the forward cast would run on the parameter shard before the gather
  instead: not modelled.
"""

from __future__ import annotations

from simcluster.spec.hardware import BYTES_PER_ELEMENT

RECIPES = ("torchao_tensorwise",)
BF16_BYTES = BYTES_PER_ELEMENT["bf16"]
FP8_BYTES = BYTES_PER_ELEMENT["fp8"]
AMAX_BYTES = BF16_BYTES                     # kernel 1 reads the 16-bit tensor
OPERAND_CAST_BYTES = AMAX_BYTES + BF16_BYTES + 2 * FP8_BYTES   # kernel 3 writes both layouts
WEIGHT_FORWARD_CAST_BYTES = AMAX_BYTES + BF16_BYTES + FP8_BYTES
WEIGHT_BACKWARD_CAST_BYTES = BF16_BYTES + FP8_BYTES


def cast_bytes_per_element(recipe: str) -> float:
    """HBM bytes per element of one 16-bit input or output gradient cast to float8 (both layouts)."""
    assert recipe in RECIPES, recipe
    return OPERAND_CAST_BYTES


def weight_cast_bytes(weight_elements: float) -> tuple[float, float]:
    """(forward, backward) HBM bytes of casting ``weight_elements`` of 16-bit weights, per call."""
    return WEIGHT_FORWARD_CAST_BYTES * weight_elements, WEIGHT_BACKWARD_CAST_BYTES * weight_elements
