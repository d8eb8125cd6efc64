"""MXFP8's scale swizzles inside Transformer Engine's GEMM calls, as kernel launches, by TE release.

cuBLASLt reads an MXFP8 operand's E8M0 scales in its own tiled ("swizzled") layout; Transformer Engine quantizes into
the compact layout and, where a tensor's scales are not already swizzled, swizzles them inside the GEMM call, one
kernel per operand, on the main stream before the GEMM (NVIDIA/TransformerEngine transformer_engine/pytorch/csrc/
extensions/gemm.cpp, the 2025 versions):

- a dense ``general_gemm`` call (``tex.generic_gemm`` -> ``gemm()``): ``swizzle_scaling_factors(A_tensor, transa)``
  and ``swizzle_scaling_factors(B_tensor, !transb)``, each one ``nvte_swizzle_scaling_factors`` kernel on the usage
  (rowwise or columnwise) that GEMM reads; the userbuffers path (``comm_overlap``) swizzles the same two operands
  once before its chunk loop, so a chunked GEMM is one call here;
- a grouped call (``te_general_grouped_gemm``, GroupedLinear's experts): one ``multi_tensor_swizzle_scaling_factors``
  call for the A list (all experts) and one for the B list, each one kernel per ``GROUPED_TENSORS_PER_KERNEL``
  experts (the kernel's argument struct holds at most 64 tensors: common/swizzle/swizzle.cu, ``kMaxTensorsPerKernel
  = 64``, a launch each time it fills), so one kernel per list up to 64 local experts.

The operands of one linear layer's three GEMMs (TE linear.py / grouped_linear.py: fprop ``general_gemm(weight,
inputmat)``, dgrad ``general_gemm(weight, grad_output)``, wgrad ``general_gemm(inputmat, grad_output)``):
forward (and a recompute's forward) the weight and the input, backward_input the weight and the output gradient,
backward_weight the input and the output gradient. Which of them the call still swizzles, by release
(data/mcore_versions.yaml ``mxfp8_gemm_swizzles``, with the sources):

- before ``activations_preswizzled`` (TE 2.12, PR 2486): every operand, 2 kernels a call: 24 a dense layer and
  microbatch (4 linears x 3 GEMMs x 2), 12 for an MoE block's two grouped GEMMs;
- from it: the weight (its cached quantized copy keeps compact scales), and an activation only where it was
  all-gathered for sequence parallelism (its quantizer keeps the compact layout for the communication): the
  column-parallel linears' inputs (``COLUMN_PARALLEL_GATHERED``) and the row-parallel ones' output gradients
  (``ROW_PARALLEL_GATHERED``), at tp > 1 with sequence parallelism;
- from ``cached_weights_preswizzled`` (TE 2.18, PR 3093) the cached weight neither, unless the weights are MXFP8
  primary weights (fp8 parameters), which stay compact (2.18.0 wheel, module/base.py ``_enable_weight_preswizzle``:
  ``if self.primary_weights_in_fp8: return False``; ``apply_for`` reads them from ``fp8_params.mxfp8_params``).

Their device time is not added: the block-scaled GEMM time (efficiency.yaml gemm.block_scaled_slowdown, TE's
benchmark_gemm of pre-quantized ``tex.generic_gemm`` calls with compact scales) was measured with both swizzles inside
(``fp8_recipes`` module docstring), so each is a zero-work op tagged queued (launched by the C++ of the GEMM's own
call, ``workload.call_issue``) with no work of its own (``Op.no_work``) whose whole stream time is inside that measured
call time (``Op.in_measured_call``): the benchmark's CUDA events timed the loop of calls, the swizzles' kernels and
their queued launches' latency with the GEMMs, so the stream pays it no gap at all and the host a dispatch (round-32
review; round 32 had charged the queued-launch latency, efficiency.yaml ``launch_overhead_s``, round 31 the fitted
gap: at the benchmark's shapes, 8 us a GEMM call over its 597 us, 1.3%, charged twice). Where fewer
swizzles run (TE 2.12 on) that device time is an upper bound, not re-measured. docs/calibration/round-31.md, "Round 31:
MXFP8's per-GEMM scale swizzles as launches, by Transformer Engine release".

Not counted: NVFP4 and FP8 block scaling's conversions (no scenario runs them); a zero-row expert (TE zeroes its
output instead of a GEMM, its scales still in the grouped swizzle); whether TE 2.12's ``split_quantize`` of the
experts' splits writes the swizzled layout (its C++ not read: taken as the per-tensor quantizer it dispatches to).
"""

from __future__ import annotations

from simcluster.core import catalog
from simcluster.spec.config import container_te, mcore_release, stated_mcore_version
from simcluster.workload import fp8_params
from simcluster.workload.ops import Op

OP_NAME = "mxfp8_swizzle"
# the operands of each phase's GEMM call (module docstring)
PHASE_OPERANDS = {"forward": ("weight", "input"), "recompute": ("weight", "input"),
                  "backward_input": ("weight", "grad_output"), "backward_weight": ("input", "grad_output")}
# linears whose input Transformer Engine all-gathers for sequence parallelism (column-parallel: QKV, the MLPs' fc1,
# MLA's up-projections, workload.mla.COLUMN_PARALLEL; the MTP modules' eh_proj, a TEColumnParallelLinear,
# workload.mtp) and whose output gradient it all-gathers (row-parallel: the attention output, the MLPs' fc2), by op name
COLUMN_PARALLEL_GATHERED = ("qkv", "mlp_up", "shared_expert_up", "mla_q", "mla_q_up", "mla_kv_up", "mtp_eh_proj")
ROW_PARALLEL_GATHERED = ("attn_out", "mlp_down", "shared_expert_down")
# tensors one multi_tensor_swizzle_scaling_factors kernel takes (TE common/swizzle/swizzle.cu kMaxTensorsPerKernel)
GROUPED_TENSORS_PER_KERNEL = 64


def _boundary(name: str) -> tuple[int, int]:
    return mcore_release(catalog.load("mcore_versions")["mxfp8_gemm_swizzles"][name])


def swizzled_in_call(operand: str, release: str | None, gathered: bool, fp8_primary_weights: bool) -> bool:
    """Whether a GEMM call of Transformer Engine ``release`` ("major.minor"; None: not known, taken as the 2025
    releases before the pre-swizzled layouts) swizzles ``operand`` ("weight", "input" or "grad_output") of an MXFP8
    GEMM; ``gathered``: the activation was all-gathered for sequence parallelism (module docstring)."""
    assert operand in ("weight", "input", "grad_output"), operand
    version = mcore_release(release) if release is not None else None
    if operand == "weight":
        return fp8_primary_weights or version is None or version < _boundary("cached_weights_preswizzled")
    return gathered or version is None or version < _boundary("activations_preswizzled")


def _gathered(operand: str, gemm: str, sequence_parallel: bool) -> bool:
    if not sequence_parallel:
        return False
    return gemm in (COLUMN_PARALLEL_GATHERED if operand == "input" else
                    ROW_PARALLEL_GATHERED if operand == "grad_output" else ())


def call_swizzles(phase: str, gemm: str, release: str | None, sequence_parallel: bool,
                  fp8_primary_weights: bool, tensors: int = 1) -> int:
    """Swizzle kernels of one MXFP8 GEMM call (dense, or grouped over ``tensors`` local experts) named ``gemm`` in
    ``phase`` (module docstring)."""
    per_operand = -(-tensors // GROUPED_TENSORS_PER_KERNEL)
    return per_operand * sum(swizzled_in_call(operand, release, _gathered(operand, gemm, sequence_parallel),
                                              fp8_primary_weights) for operand in PHASE_OPERANDS[phase])


def apply(phases: dict[str, list], release: str | None, sequence_parallel: bool,
          fp8_primary_weights: bool) -> dict[str, list]:
    """A layer's ops per phase with each MXFP8 GEMM call's swizzle launches (zero-work queued ops named ``OP_NAME``)
    just before its GEMM; unchanged without block-scaled GEMMs. Apply before userbuffers splits GEMMs into chunks
    (one call each) and after MLA's rewrite (its linears' own GEMMs)."""
    launch = Op(OP_NAME, "memory", 0.0, 0.0, queued=True, no_work=True, in_measured_call=True)
    out: dict[str, list] = {}
    for phase, ops in phases.items():
        out[phase] = []
        for op in ops:
            if op.kind == "gemm" and op.block_scaled and phase in PHASE_OPERANDS:
                count = call_swizzles(phase, op.name, release, sequence_parallel, fp8_primary_weights, op.batch)
                out[phase] += [launch] * count
            out[phase].append(op)
    return out


def apply_for(scenario, phases: dict[str, list]) -> dict[str, list]:
    """``apply`` with a scenario's settings: the Transformer Engine release of the container of its stated
    Megatron-Core release (``config.container_te``; None for other stacks), sequence parallelism at tp > 1, and MXFP8
    primary weights (``fp8_params.mxfp8_params``: fp8_param_gather under the MXFP8 recipe, TE's
    ``primary_weights_in_fp8``, which 2.18's ``_enable_weight_preswizzle`` leaves compact)."""
    t, p = scenario.training, scenario.parallelism
    release = container_te(stated_mcore_version(t)) if scenario.megatron_core else None
    return apply(phases, release, p.sequence_parallel and p.tp > 1, fp8_params.mxfp8_params(t))


def count(phases: dict[str, list]) -> dict[str, int]:
    """The swizzle launches ``apply`` added, per phase."""
    return {phase: sum(op.name == OP_NAME for op in ops) for phase, ops in phases.items()}
