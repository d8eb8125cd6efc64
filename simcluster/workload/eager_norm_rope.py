"""RMSNorm and RoPE as eager PyTorch ops with an fp32 upcast (``training.norm_kernels`` / ``training.rope_kernels``:
``eager_fp32``), in place of the one fused kernel a phase ``ops`` charges for each: foundation-model-stack's
``LayerNormParameterized`` (RMSNorm mode, ``use_high_precision_pow``) and ``RotaryEmbedding.adjusted_qk`` as
IBM's fms-fsdp ran them without torch.compile (torchtitan's ``RMSNorm`` runs the same ops); ``eager_fp32_complex``:
torchtitan's complex-number ``apply_rotary_emb`` without torch.compile. Each op is its own HBM-bound kernel paying
the launch gap like every kernel; the op sequences, their dtypes and bytes are read from source in
``data/eager_norm_rope.yaml``.

Memory: autograd keeps, per norm, the fp32 upcast (``pow`` and the rsqrt multiply save it) and the 16-bit
normalised tensor (the weight multiply saves it), where the fused norm keeps its 16-bit input
(``saved_bytes_per_element``); the RoPE keeps nothing but its [tokens, head_dim] fp32 rotation matrices.
"""

from __future__ import annotations

from functools import cache

from simcluster.core import catalog

EAGER = "eager_fp32"
EAGER_COMPLEX = "eager_fp32_complex"   # RoPE only: torchtitan's complex form (data table rope_complex)
KERNELS = ("fused", EAGER)
ROPE_TABLES = {EAGER: "rope", EAGER_COMPLEX: "rope_complex"}
FP32_BYTES = 4
# what autograd keeps per normalised element of one eager norm: the fp32 xf (pow and the rsqrt multiply save it)
# and the 16-bit normalised x (the weight multiply saves it); the fused norm keeps its 16-bit input
SAVED_FP32_TENSORS, SAVED_16BIT_TENSORS = 1, 1

Kernel = tuple[str, float, float]   # (name, FLOP, HBM bytes): a memory op for ops.layer_ops


@cache
def _table() -> dict:
    return catalog.load("eager_norm_rope")


def _kernels(rows: list, units: dict[str, float], e: int) -> list[Kernel]:
    """Kernels of a table's ``rows`` ([name, 16-bit bytes, fp32 bytes, FLOP, size] per unit), scaled by the count
    of each size in ``units`` ("launch": no work)."""
    kernels = []
    for name, n16, n32, flop, size in rows:
        count = units.get(size, 0.0)
        kernels.append((name, flop * count, (n16 * e + n32 * FP32_BYTES) * count))
    return kernels


def norm_kernels(elements: float, rows: float, e: int) -> tuple[list[Kernel], list[Kernel]]:
    """(forward, backward) kernels of one eager fp32 RMSNorm over ``elements`` normalised elements in ``rows``
    token rows, 16-bit activations of ``e`` bytes (the weight gradient included)."""
    table = _table()["rmsnorm"]
    units = {"element": elements, "row": rows}
    return _kernels(table["forward"], units, e), _kernels(table["backward"], units, e)


def rope_kernels(tensor_elements: list[float], freqs_units: float, e: int, form: str = EAGER
                 ) -> tuple[list[Kernel], list[Kernel]]:
    """(forward, backward) kernels of one eager fp32 RoPE call of ``form`` (``ROPE_TABLES``): fms's ``adjusted_qk``,
    its per-call launches and frequency gather (``freqs_units``: tokens x head_dim), then per rotated tensor
    (``tensor_elements``: q's and k's elements) the cast, the 2 x 2 multiply, the pair sum and the cast back;
    torchtitan's ``apply_rotary_emb``, per tensor the cast, the complex multiply and the cast back, nothing per call;
    backward the reverse per tensor."""
    table = _table()[ROPE_TABLES[form]]
    forward = _kernels(table["call_forward"], {"call": freqs_units}, e)
    backward: list[Kernel] = []
    for elements in tensor_elements:
        forward += _kernels(table["tensor_forward"], {"element": elements}, e)
        backward += _kernels(table["tensor_backward"], {"element": elements}, e)
    return forward, backward


def saved_bytes_per_element(e: int) -> int:
    """Bytes autograd keeps per normalised element of one eager fp32 norm (``SAVED_*``)."""
    return SAVED_FP32_TENSORS * FP32_BYTES + SAVED_16BIT_TENSORS * e
