"""Which kernels of the model's lists the host issues from Python and which the C++ of one call queues behind the
kernel before it: the tag behind efficiency.yaml host_overhead ``gap_per`` (``kernels.HostModel``).

The fitted per-kernel gap (host_overhead ``kernel_gap_s``) stands for the stream's idle while the host is behind it.
Physically the host falls behind between Python-level calls (module code, autograd, the dispatcher), not between
the kernels one C++ extension call launches back to back; those pay the measured latency of a queued launch
(efficiency.yaml ``launch_overhead_s``), as the optimizer's multi_tensor_apply launches already do
(workload/optimizer_step.py). Under ``gap_per: kernel`` (in use) every kernel pays the fitted gap and the tag is
unused; under ``gap_per: call`` a kernel tagged ``Op.queued`` pays the queued-launch latency instead
(``scripts/fit_host_overheads.py --structure call``; docs/calibration/round-29.md "Round 29: the fitted gap per Python
call"). Under either, a queued launch with no work of its own (``Op.no_work``: current scaling's one-element amax
zeroing and scale kernels, here, per expert in ``moe.host_launches`` and per weight, ``queued_weight_quantizes``) pays
the queued-launch latency, and MXFP8's scale swizzles, whose device time and queued latency are both inside the
measured block-scaled GEMM-call time (``Op.in_measured_call``), no gap (round-32 review): the fitted gap stands for
the host falling behind between Python calls and for per-kernel time the roofline misses, and such a launch has
neither (round 32, docs/calibration/round-32.md "Round 32: what a launch queued inside one C++ call costs"; the Kineto
traces, scripts/kineto_call_launches.py). Queued kernels that do work the model prices by a roofline (casts, amax
passes, the userbuffers reduce, the per-expert GEMMs and quantizes whose work is in the batched ops) keep the fitted
gap.

Tagged queued, each from Transformer Engine 2.x source (NVIDIA/TransformerEngine, transformer_engine/pytorch):

- current scaling's amax pass, scale kernel and cast behind the amax's zeroing: ``Float8CurrentScalingQuantizer::
  quantize_impl`` (csrc/quantizer.cpp) launches ``nvte_compute_amax`` (whose launcher zeroes the amax first),
  ``nvte_compute_scale_from_amax`` and ``nvte_quantize_v2`` in one call; a norm-fed tensor's zeroing, scale kernel
  and cast in its norm's call: the norm extension (csrc/extensions/normalization.cpp, ``FUSED_NORM_AMAX_FP8``) zeroes
  the amax, runs the norm, which writes it, and then ``quantize_with_amax`` in the same call (the norm is the op
  before the layer's quantize kernels in the list, ``ops.layer_ops`` gathers them at the phase's end; the tag is per
  kernel, so its position does not matter); one call's first launch stays unqueued (round 31);
- MXFP8's per-GEMM scale swizzles (``workload.mxfp8_swizzles``): launched by the C++ of the GEMM's own call before
  its GEMM;
- MXFP8's quantize of a norm-fed tensor: the same norm extension runs the unfused norm and then the MXFP8 quantizer
  in one call (``fp8_recipes`` "MXFP8 kernels"); a tensor that is not norm-fed is quantized by its own Python-level
  ``quantizer(tensor)`` call (``tex.quantize``: one kernel), not queued;
- delayed scaling's one fused cast op a phase stands for several calls (``fp8_recipes`` module docstring): not
  queued (the convention the gap was fitted with);
- a GEMM weight's quantize on a chunk's first microbatch (``parallel/plan.py`` ``chunk_weight_quantize_s``, round-32
  review): TE 2.x's ``get_weight_workspace`` (module/base.py) runs ``quantizer(weight)`` or ``quantize_`` ->
  ``tex.quantize``, one Python-level call per weight whose C++ (``quantize_impl``) launches the tensor's kernels, so
  they are queued as an activation's that no norm wrote (``queued_weight_quantizes``); an fp8 parameter's
  transpose is a call of its own;
- the reduce after a ring-exchange reduce-scatter (``userbuffers.ring_reduce``, ``ub_reduce``): launched by
  ``CommOverlapP2P::split_overlap_rs`` (csrc/comm_gemm_overlap.cpp, TE common) after its last chunk GEMM, in the
  GEMM's call; the userbuffer copies (``ub_copy``) are Python-level calls of their own (base.py
  ``fill_userbuffers_buffer_for_all_gather`` -> ``copy_into_buffer``; ``get_buffer(...).clone()``): not queued;
- an MoE grouped GEMM's kernels beyond its first (``moe.host_launches``' "grouped GEMMs"): GroupedLinear calls
  ``general_grouped_gemm`` (cpp_extensions/gemm.py), one ``tex.te_general_grouped_gemm`` call whose C++ loop
  launches every local expert's GEMM (multi_stream_cublas_gemm); the kernels beyond the first quantize of each
  quantized operand (``moe.host_launches``' "fp8 quantizes"): one ``tex.split_quantize`` call quantizes every
  expert's split (csrc/extensions/cast.cpp).

Not queued (each a Python-level call, or not known otherwise): GEMMs (``general_gemm``: one cuBLASLt kernel a call),
fused attention, norms, activations, residual adds, RoPE, the cross-entropy kernels, fp8 transposes
(``_create_transpose`` from Python), the router's launches and the layer's small NCCL collectives (torch.distributed
calls), the optimizer's first launch of each multi_tensor_apply call (its others are charged apart, parallel/plan.py).
"""

from __future__ import annotations

from simcluster.workload.fp8_recipes import AMAX_ZERO_OP, CAST_OP, quantize_kernels


def queued_quantizes(recipe: str, kernels: list[tuple], tensors: list[tuple]) -> list[bool]:
    """Per kernel of ``fp8_recipes.quantize_kernels(recipe, transpose, tensors)`` (``kernels``), whether its call
    queues it behind the kernel before it (module docstring): current scaling's kernels but a tensor's first (its
    amax zeroing, where no norm call launched it), MXFP8's casts of norm-fed tensors; delayed scaling's fused op
    is not."""
    if recipe == "current":   # each tensor's kernels start with its amax zeroing (fp8_recipes.quantize_kernels)
        norm_fed = iter(bool(tensor[1]) for tensor in tensors)
        return [next(norm_fed) if name == AMAX_ZERO_OP else True for name, *_ in kernels]
    if recipe != "mxfp8":
        return [False] * len(kernels)
    casts = iter(bool(tensor[1]) for tensor in tensors)   # one quantize kernel per tensor, no amax pass
    return [next(casts) if name == CAST_OP else False for name, *_ in kernels]


def queued_weight_quantizes(recipe: str, kernels: list[tuple]) -> list[bool]:
    """Per kernel of ``fp8_params.weight_quantize_kernels(recipe, ...)`` (``kernels``), whether its call queues it
    (module docstring): each weight is quantized by a call of its own that no norm launched (``queued_quantizes`` of
    tensors not norm-fed: current scaling's kernels beyond each weight's zeroing); an fp8 parameter's transpose, a
    kernel ``fp8_recipes.quantize_kernels`` does not make, is its call's only one."""
    if not kernels:
        return []
    made = {name for name, *_ in quantize_kernels(recipe, True, [(1.0, False)])}
    zeroings = sum(name == AMAX_ZERO_OP for name, *_ in kernels)
    casts = sum(name == CAST_OP for name, *_ in kernels)
    tensors = [(0.0, False)] * (zeroings if recipe == "current" else casts)
    return [tag and kernel[0] in made
            for kernel, tag in zip(kernels, queued_quantizes(recipe, kernels, tensors), strict=True)]
