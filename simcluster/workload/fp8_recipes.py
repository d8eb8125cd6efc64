"""What Transformer Engine's fp8 recipes cost beyond the fp8 GEMMs themselves: the HBM bytes of quantizing a GEMM
operand (``training.fp8_recipe``), per element of the 16-bit tensor quantized, and the kernels they run as
(``quantize_kernels``: one fused op per layer and phase for delayed scaling, kernels per tensor for current scaling
and MXFP8, below).

- ``delayed`` (per-tensor delayed scaling, Transformer Engine's default and NeMo's fp8 until 2025): the scale comes
  from the amax history, so one cast-transpose kernel reads the 2-byte tensor and writes the fp8 tensor and its
  transpose, 1 byte each (Hopper fp8 GEMMs take only the TN layout): 4 bytes.
- ``current`` (per-tensor current scaling, Megatron-Bridge's "FP8-CS", bf16_with_fp8_current_scaling_mixed): the
  scale comes from this tensor's own amax, so the tensor is read once more before the cast:
  Float8CurrentScalingQuantizer::quantize_impl runs nvte_compute_amax (reads the input), an amax all-reduce when the
  quantizer has a group, nvte_compute_scale_from_amax (one float) and only then nvte_quantize_v2 (reads it again,
  writes fp8 and its transpose): NVIDIA/TransformerEngine transformer_engine/pytorch/csrc/quantizer.cpp. 6 bytes
  (``cast_bytes_per_element``; as kernels, a tensor a norm wrote skips the amax pass: 4 bytes, "Kernels" below).
- ``mxfp8`` (MXFP8 block scaling, "FP8-MX", bf16_with_mxfp8_mixed; Blackwell): one quantize kernel computes each
  32-element block's E8M0 scale (1 byte) itself, no amax pass, and writes the rowwise copy (scales along rows) and
  the columnwise copy (scales along columns) the backward GEMMs need (MXFP8Quantizer with rowwise and columnwise
  usage; OCP Microscaling Formats MX v1.0, block size 32, E8M0 scale): 2 + 2 x (1 + 1/32) bytes. cuBLASLt also
  wants the scales in its tile layout, and Transformer Engine 2.x swizzles them inside every GEMM call, one kernel
  per operand: gemm() runs swizzle_scaling_factors on A and on B, te_general_grouped_gemm one
  multi_tensor_swizzle_scaling_factors per operand list (transformer_engine/pytorch/csrc/extensions/gemm.cpp, the
  2025 versions; later ones quantize straight into the swizzled layout). Those swizzles belong to the GEMM call, not
  to the quantize: the MXFP8 GEMM's time (efficiency.yaml gemm.block_scaled_slowdown) is TE's benchmark_gemm timing
  the whole pre-quantized tex.generic_gemm loop with CUDA events, swizzles included where that TE runs them, so the
  cast counts the quantize kernel's bytes only (counting the swizzles here too would charge them twice; they were
  2 x 2/32 bytes an element of the cast, about 3% of it, until round 17's review). Checked against the benchmark's
  source (NVIDIA/TransformerEngine benchmarks/gemm/benchmark_gemm.py of PR 2863, 2026, the TE tree it ships in:
  ``te.autocast``, ``with_gemm_swizzled_scales`` present): ``benchmark_fp8_prequantized`` builds
  ``te.MXFP8Quantizer(tex.DType.kFloat8E4M3)`` and never sets ``optimize_for_gemm``, which the base ``Quantizer``
  initialises False (quantized_tensor.py), so its operands carry compact scales (``with_gemm_swizzled_scales=
  self.optimize_for_gemm``, mxfp8_tensor.py ``make_empty``) and every timed ``tex.generic_gemm`` call swizzles them:
  the benchmark does not quantize into the swizzled layout, the swizzles are in its GEMM time, and the cast stays
  without them. (That TE's own modules set ``input_quantizer.optimize_for_gemm = True``, linear.py, and quantize
  straight into the swizzled layout, the same scale bytes written in another order: no swizzle kernel in training
  there, so the benchmark's GEMM time is if anything an upper bound for it.)

On Blackwell the per-tensor recipes write no transpose: its fp8 GEMMs take any operand layout, so Transformer
Engine creates the columnwise copy only where they do not (``create_transpose = columnwise_usage &&
!nvte_is_non_tn_fp8_gemm_supported()``, quantizer.cpp; true from compute capability 10.0, transformer_engine.cpp)
and the backward GEMMs read the rowwise data transposed: delayed 2 + 1 bytes, current 2 + 2 + 1 there
(``transposes``, efficiency.yaml gemm.fp8_any_layout). MXFP8 writes both copies on every GPU.

Weights are quantized once per step in every recipe (Transformer Engine caches them across microbatches), so not in
``ops``' per-microbatch layer: Megatron-Core's ``forward_step`` calls ``set_is_first_microbatch`` on each model
chunk's first microbatch and TE casts and transposes the weights only then (4 bytes a parameter once a step on
Hopper, 0.1-0.3% of the NeMo 24.07 H100 steps); with fp8 parameters (``training.fp8_param_gather``) the optimizer
writes the fp8 weights and TE 1.6-1.10 and 2.x transpose them once after it (2 bytes a parameter). Both are charged
once a step in each chunk's first-microbatch forward (workload/fp8_params.py ``weight_quantize_kernels``, which also
says what is not settled for TE 1.11-1.13); the cached copies' memory is
``fp8_params.weight_workspace_bytes_per_param``.

Delayed scaling on Hopper in Megatron-Core's Transformer Engine layer, to the letter (``megatron_te_cast_bytes``;
TE 1.6-1.13, Megatron-Core r0.8-r0.10). The layer is TELayerNormColumnParallelLinear (QKV), TERowParallelLinear
(attention projection), TELayerNormColumnParallelLinear (fc1), Megatron's own 16-bit activation and
TERowParallelLinear (fc2) (gpt_layer_specs.py: ``MLPSubmodules(linear_fc1=TELayerNormColumnParallelLinear,
linear_fc2=TERowParallelLinear)``; TE's LayerNormMLP, which fuses the activation with the cast, is not used). So:
- the two norm-fed inputs (QKV's, fc1's) are written in fp8 by the norm itself (``layernorm_fwd_fp8``: 1 byte an
  element written instead of 2, no cast kernel) and, for the weight gradient, transposed in the backward after the
  all-gather, at the gathered size (``ln_out_total_t = tex.fp8_transpose(ln_out_total, ...)``, layernorm_linear.py:
  1 read + 1 written);
- the projection's and fc2's inputs are cast-transposed (``fp8_cast_transpose_fused``: 2 + 1 + 1) without sequence
  parallelism; with it (TP > 1) ``_Linear.forward`` only casts them (``cast_to_fp8``: 2 + 1; its cast-transpose
  branch requires ``not sequence_parallel``) and ``_Linear.backward`` transposes the fp8 input for the weight
  gradient (``inputmat_t_total = tex.fp8_transpose(inputmat_total, ...)``: 1 + 1), TE 1.6-1.13 linear.py alike;
- the row-parallel layers' output gradients, with sequence parallelism, are cast on the shard, all-gathered in fp8
  and transposed after the gather (``grad_output_preprocess``, base.py, "FP8 case with gather: unfused bgrad, cast,
  transpose for efficient gather": ``grad_output.sum(dim=0)`` for the bias gradient, 2 bytes on the shard where the
  layer has biases, ``cast_to_fp8`` 2 + 1 on the shard, ``tex.fp8_transpose`` 1 + 1 gathered); without it one
  fused cast-transpose (with the bias gradient) 2 + 1 + 1;
- the column-parallel layers' output gradients (QKV's, fc1's): one cast-transpose with the bias gradient fused,
  2 + 1 + 1.
Counted as the bytes of the layer's one cast op per phase (the norms' saving on their own op); the kernels stay one
per phase. TE launches, per layer and microbatch beyond the bf16 layer's kernels: forward 2 (the projection's and
fc2's input casts); backward at tp 1 6 (two output-gradient cast-transposes of the row-parallel layers, two of the
column-parallel ones, two norm-output transposes), with sequence parallelism 10 (each row-parallel output gradient
cast and transposed after its gather, each row-parallel input transposed, the four of tp 1 otherwise) plus the two
bias sums where the layers have biases: 12 (docs/calibration/rounds-10-14.md, "Transformer Engine 1.x fp8, kernel by
kernel").

Kernels (``quantize_kernels``). Delayed scaling stays one fused op per layer and phase (the convention the fitted
per-kernel gap was fitted with on the Hopper rows). Current scaling runs as Transformer Engine 2.x launches
it, kernel by kernel per quantized tensor (``Float8CurrentScalingQuantizer::quantize_impl``, csrc/quantizer.cpp):
``nvte_compute_amax`` (reads the 16-bit tensor: ``AMAX_OP``), ``nvte_compute_scale_from_amax`` (one float), then
``nvte_quantize_v2`` (the cast, ``CAST_OP``: the cast-transpose bytes of delayed scaling). Where a Transformer
Engine norm wrote the tensor (the LayerNormLinear inputs: QKV and fc1) the norm kernel computes the amax itself
(csrc/extensions/normalization.cpp, ``Impl::FUSED_NORM_AMAX_FP8``: the norm writes its 16-bit output and the amax,
then ``quantize_with_amax``), so that tensor has no amax pass: its bytes are delayed scaling's. fc2's input and
fc1's output gradient keep theirs: Megatron-Core's MLP runs its own ``bias_swiglu`` (16-bit out, and back), and
Transformer Engine 2.7's fused activation amax (PR 2004, ``FUSED_ACTIVATION_AMAX_FP8`` in csrc/extensions/
activation.cpp; the Megatron-Bridge 25.09 changelog's "Fusion of activation and cast") runs only where TE's own
activation is handed the next GEMM's quantizer: its LayerNormMLP and the te.ops Sequential of Megatron-Core's
``TEFusedMLP`` (``use_te_op_fuser``), neither on the Megatron-Bridge Llama recipes' path (docs/calibration/round-29.md,
"Round 29: the fused activation and cast"). Counted as kernels:
the amax passes and the casts, which each move the whole tensor like every elementwise kernel of ``ops``; and, since
round 31, the two one-element kernels of each quantization as launches (``AMAX_ZERO_OP``, ``SCALE_OP``: zero work):
the amax's zeroing (``cudaMemsetAsync`` in the amax launcher of 2025, ``zero_amax_kernel<<<1, 1>>>`` later;
``amax.zero_()`` before a fused norm, ``create_unquantized_tensor_with_amax``) and the scale kernel
(``nvte_compute_scale_from_amax``), each ~2-4 us of device time: where the C++ of the quantizing call queues one
behind its call's first launch, the stream pays it the measured queued-launch latency (``NO_WORK_OPS``,
``Op.no_work``, efficiency.yaml ``launch_overhead_s``), not the fitted gap (round 32; a zeroing that is its Python
call's first launch keeps the gap). Round 29 left them out because charging
them for current scaling alone turned the published FP8-CS / FP8-MX pairs around; they are charged together with
MXFP8's per-GEMM scale swizzles (workload/mxfp8_swizzles.py), the same kind of launch queued by the C++ of one call
(docs/calibration/round-29.md, "Round 29: FP8 current scaling's cost, kernel by kernel against Transformer Engine 2.x"
and "Round 31: MXFP8's per-GEMM scale swizzles as launches, by Transformer Engine release").

Gathered tensors (round 28). With sequence parallelism at tp > 1 four tensors of a dense layer are quantized on their
shard and then all-gathered: QKV's and fc1's norm-fed inputs forward, the projection's and fc2's output gradients
backward. A per-tensor fp8 tensor can be all-gathered only as its rowwise data
(``Float8CurrentScalingQuantizer.supports_only_rowwise_all_gather`` returns True, as ``Float8Quantizer``'s does), so
Transformer Engine 2.x quantizes them rowwise only (layernorm_linear.py / layernorm_mlp.py: "All-gather is not
supported with FP8 column-wise data", ``input_quantizer.set_usage(columnwise=False)``; base.py
``grad_output_preprocess`` for the gathered output gradient) and the weight-gradient GEMM, which on Hopper takes
only the TN layout, makes the transpose from the gathered rowwise data (``ln_out_total.update_usage(columnwise_usage=
True)``, ``grad_output.update_usage(columnwise_usage=True)`` -> ``Float8TensorStorage._create_transpose`` ->
``tex.fp8_transpose``): the shard's cast writes 1 byte an element, not 2, and each gathered tensor costs one
transpose kernel in the backward reading and writing 1 byte an element of the gathered tensor, tp x the shard
(``quantize_kernels``, ``gathered_transposes``; read in NVIDIA/TransformerEngine's stored layernorm_linear.py,
layernorm_mlp.py, linear.py and float8_tensor.py, from the QuantizedTensorBase releases of 2025 to the
QuantizedTensorStorage ones of 2026, all alike). The same structure Transformer Engine 1.x runs for delayed scaling
(``megatron_te_cast_bytes``: "transpose after the gather"). Current scaling only: MXFP8 all-gathers its columnwise
copy (no transpose), Blackwell's fp8 GEMMs take either layout, and delayed scaling is one fused op a phase (above).
One transpose per gathered tensor whichever way it is gathered (review, round 28): NCCL's ``_all_gather_fp8``
(distributed.py) casts the shard rowwise and, for the output gradient whose quantizer keeps columnwise usage, runs
``_create_transpose`` once right after the gather (the wgrad's ``update_usage`` then finds it); the re-gathered norm
output of the backward (``ln_out_needs_gather``, quantizer set rowwise only) is transposed by the wgrad's
``update_usage``. Userbuffers (``tp_comm_overlap``) gathers the same rowwise data:
``fill_userbuffers_buffer_for_all_gather`` (base.py) sets a per-tensor quantizer rowwise only, wraps the buffer as a
rowwise ``Float8TensorBase``, and under ``ub_overlap_ag`` the output gradient's quantizer is set ``columnwise=False``
("Userbuffers only supports communication for one tensor usage at a time"), so the wgrad transposes it; no
columnwise data goes through the buffer (MXFP8 alone gathers its columnwise copy separately). Not counted: TE 2.x
copies the quantized shard into the userbuffer (``comm.copy_into_buffer(local_tensor._data, local_chunk=True)``,
1 + 1 bytes of the shard; TE 1.x cast into the buffer directly). Counted for the dense layer's four tensors
(``ops.layer_ops``) and for MLA's three (its output projection's output gradient and its two norm-fed latents, the
up-projections' inputs; MLA's tensors are its own since round 28, ``workload.mla_casts``: its h-wide input feeds the
duplicated down-projections on the shard, not gathered). Not split out: an MoE layer's shared experts, whose casts
are lumped (a cast-transpose on the shard). Until round 28 every current-scaling cast wrote its transpose on the
shard.

Current scaling's tensor-parallel amax all-reduce (``tp_amax_reductions``, round 27). With sequence parallelism each
rank quantizes its shard of a tensor that is then all-gathered, so the shards must share one scale: TE 2.x sets
``with_amax_reduction = True`` and ``amax_reduction_group = self.tp_group`` on the current-scaling quantizer of every
column-parallel input and every row-parallel output gradient when ``sequence_parallel`` (``_customize_quantizers_
float8_current_scaling`` in module/linear.py, layernorm_linear.py and layernorm_mlp.py: fc1's input, fc2's output
gradient), and ``Float8CurrentScalingQuantizer::quantize_impl`` (csrc/quantizer.cpp; ``quantize_with_amax`` for the
norm-fed inputs alike) runs, between the amax and the cast, ``amax_reduction_group->allreduce(...)->wait()``: a MAX
all-reduce of one fp32 amax over the tensor-parallel ranks that the cast waits for. That is one all-reduce per
sequence-parallel all-gather of a quantized tensor: forward per column-parallel input (QKV's, fc1's; a dense layer 2,
an MoE layer 1 for its attention plus 1 with shared experts, the routed experts taking dispatched tokens), backward
per row-parallel output gradient (the projection's, fc2's), and full recompute's forward again. MLA's attention
gathers two inputs (its query and key/value up-projections; ``mla.SEQUENCE_PARALLEL_GATHERED_PROJECTIONS``), and
``recompute_modules: [mla_up_proj]`` quantizes both again before the backward (round 27 review). The routed
experts' GroupedLinear sets no amax reduction (its ``_customize_quantizers_float8_current_scaling`` sets epsilon and
power-of-2 scales only). Not modelled: Megatron-Core's ``moe_shared_expert_overlap`` hands the shared experts' TE
linears ``parallel_mode = None`` (its own bf16 gather, no TE all-reduce); 0.14 allows it only with the alltoall
dispatcher and without the expert-parallel all-to-all overlap (transformer_config.py), so the one bundled row it could
touch (DeepSeek-V3 on H100: flex dispatcher, ep_overlap) runs without it. Per microbatch and layer, as TE runs it;
none without sequence parallelism, at tp 1, nor under delayed scaling (one region-wide reduction, below) or MXFP8
(per-block scales, no amax). Until round 27 it was left out.

MXFP8 kernels (round 18). MXFP8 runs kernel by kernel per quantized tensor too, as current scaling does, but one
kernel each: the module calls its quantizer on each GEMM operand (``input_quantizer(inputmat)``,
``grad_output_quantizer`` in ``grad_output_preprocess``, TE 2.x linear.py / base.py), and
``MXFP8Quantizer`` quantizes with one ``nvte_quantize_v2`` that computes each 32-element block's scale and writes
the rowwise and columnwise copies (no amax pass, no scale kernel; csrc/quantizer.cpp). The norm-fed inputs get a
kernel of their own as well: ``layernorm_fwd`` / ``rmsnorm_fwd`` set ``force_unfused_kernel`` for an MXFP8 quantizer
unless ``NVTE_NORM_FWD_USE_CUDNN`` (csrc/extensions/normalization.cpp), writing the norm's 16-bit output and then
quantizing it. So a dense Megatron-Core layer runs 4 MXFP8 quantizes forward (QKV's and fc1's norm outputs, the
projection's and fc2's inputs) and 4 backward (the four output gradients; bias-free Llama, with biases TE's
``bgrad_quantize`` fuses the bias gradient into the same kernel), against current scaling's 6 and 8 (with the
amax passes). Until round 18 MXFP8 was one fused op per phase: the same bytes, but 6 kernels fewer than it runs,
which the fitted per-kernel gap charged it nothing for. Not counted here: the scale swizzles (their time in the
GEMM's measured time, above; their launches per GEMM call, by TE release, in workload/mxfp8_swizzles.py); the
weights' quantization once a step (bf16 into both MXFP8 copies, 2 + 2 x
(1 + 1/32) bytes a weight: TE's first-microbatch cache, or, with ``fp8_param_gather`` and Megatron-Core's
``reuse_grad_buf_for_mxfp8_param_ag``, ``finish_param_sync`` casting the all-gathered bf16 weights into the MXFP8
parameters, "The parameters are cast from bf16 to MXFP8 during copy", distributed/param_and_grad_buffer.py):
0.1-0.2% of the NeMo 25.11 Llama steps (docs/calibration/round-18.md, round 18, "MXFP8 against current scaling").

Delayed scaling's amax reduction and scale update, per autocast region (``amax_reduction``). Transformer Engine 1.x
(the NeMo 24.07-24.12 containers, TE 1.6-1.13; TE 2.x's fp8.py keeps the same structure) does not update scales per
module: each module registers its amaxes
in a global buffer (``prepare_forward`` -> ``FP8GlobalStateManager.add_fp8_tensors_to_global_buffer``) and the
region's exit does the work once, ``reduce_and_update_fp8_tensors`` (transformer_engine/pytorch/fp8.py): it
concatenates the amaxes (``torch.cat``, one kernel: PyTorch batches up to 128 inputs per launch), all-reduces them
with ``ReduceOp.MAX`` over the autocast's ``fp8_group`` (``torch.distributed.all_reduce(..., async_op=False)``: the
compute stream waits for it) and runs ``tex.fused_amax_and_scale_update_after_reduction`` (one kernel for up to
~1000 modules, ``AMAX_PARAMS_LIMIT`` in common/recipe/delayed_scaling.cu) which rolls every amax history and writes
each scale and its inverse. Forward: at ``fp8_autocast_exit`` when grad is enabled (``reduce_and_update_fp8_tensors
(forward=True, ...)``); backward: once, at the end of the backward of the region's first fp8 module
(``ctx.reduce_and_update_bwd_fp8_tensors = FP8GlobalStateManager.is_first_fp8_module()`` in each module's forward,
``reduce_and_update_fp8_tensors(forward=False)`` in its backward; linear.py, layernorm_linear.py, layernorm_mlp.py).
Megatron-Core r0.8-r0.10 opens the region around ``TransformerBlock.forward`` (transformer_block.py: ``fp8_autocast(
enabled=True, fp8_recipe=..., fp8_group=parallel_state.get_amax_reduction_group(with_context_parallel=True))``),
so there is one region per model chunk and microbatch and direction, and the group is
``_TENSOR_AND_DATA_PARALLEL_GROUP_WITH_CP``: the tensor-, context- and data-parallel ranks of a pipeline stage
(parallel_state.py). Each GEMM carries 3 fp8 tensors forward (input, weight, output) and 2 backward (output
gradient, input gradient): ``fp8_meta["scaling_fwd"]``/``["scaling_bwd"]`` of ``num_gemms * 3`` / ``* 2`` amaxes
(base.py ``init_fp8_meta_tensors``). Current scaling and MXFP8 (TE 2.x) have no such region-wide reduction.
To the letter a region reduces more than its chunk's amaxes: each module adds its amaxes to the global buffer once
("Every module must call this function exactly once since the amax tensors are static",
``add_fp8_tensors_to_global_buffer``), keyed by recipe and group, which every chunk of a stage shares, so each exit
reduces and updates the whole stage's. ``amax_reduction`` is given the chunk's GEMMs (parallel/plan.py): v times
fewer bytes, a few KB all-reduced (latency-bound either way) and at most ~2 MB of history traffic (< 1 us of HBM).
Later Megatron-Core keeps one region around the block for delayed scaling (transformer_block.py with
``Fp8Recipe``: "If fp8_recipe is delayed, wrap the entire pass with get_fp8_context()"; per-layer contexts for the
other recipes, whose enter and exit are free).
"""

from __future__ import annotations

from functools import cache

from simcluster.spec import hardware
from simcluster.spec.hardware import BYTES_PER_ELEMENT

FP8_RECIPES = ("delayed", "current", "mxfp8")
# recipes whose quantizations run as kernels per tensor (``quantize_kernels``); delayed scaling is one fused op
PER_TENSOR_RECIPES = ("current", "mxfp8")
# recipes with an amax pass before the cast (current scaling's nvte_compute_amax); MXFP8's quantize kernel computes
# each block's scale itself
AMAX_PASS_RECIPES = ("current",)
AMAX_OP = "fp8_amax"
# current scaling's one-element launches per quantization, zero work (module docstring, "Kernels")
AMAX_ZERO_OP = "fp8_amax_zero"
SCALE_OP = "fp8_scale"
# the kernels of a quantization with no work of their own (``Op.no_work``: queued, the queued-launch latency)
NO_WORK_OPS = (AMAX_ZERO_OP, SCALE_OP)
CAST_OP = "fp8_cast"
TRANSPOSE_OP = "fp8_transpose"
# per-tensor recipes whose sequence-parallel all-gather carries the rowwise fp8 data only, so that the transpose the
# weight gradient needs is made after the gather (Float8CurrentScalingQuantizer.supports_only_rowwise_all_gather;
# MXFP8 gathers its columnwise copy: module docstring, "Gathered tensors")
ROWWISE_GATHER_RECIPES = ("current",)
BF16_BYTES = BYTES_PER_ELEMENT["bf16"]
FP8_BYTES = BYTES_PER_ELEMENT["fp8"]
MX_BLOCK = 32                 # elements sharing one scale (OCP MX v1.0, MXFP8 E4M3)
MX_SCALE_BYTES = 1            # E8M0 scale


@cache
def transposes(gpu_name: str) -> bool:
    """Whether Transformer Engine's per-tensor fp8 casts write a transposed copy on ``gpu_name``: only where fp8
    GEMMs are TN only (Hopper; efficiency.yaml gemm.fp8_any_layout)."""
    return hardware.fp8_gemms_tn_only(gpu_name)


def cast_bytes_per_element(recipe: str, transpose: bool = True) -> float:
    """HBM bytes per element of one 16-bit GEMM operand quantized to fp8 for both orientations under ``recipe``:
    with ``transpose`` (Hopper) the per-tensor recipes write the fp8 data and its transpose, without it (Blackwell,
    ``transposes``) the fp8 data once; MXFP8 writes its rowwise and columnwise copies either way."""
    assert recipe in FP8_RECIPES, recipe
    write_both = (2 if transpose else 1) * FP8_BYTES
    if recipe == "delayed":
        return BF16_BYTES + write_both
    if recipe == "current":
        return BF16_BYTES + BF16_BYTES + write_both          # the amax pass, then the cast-transpose
    return BF16_BYTES + 2 * FP8_BYTES + 2 * MX_SCALE_BYTES / MX_BLOCK   # the scale swizzles: the GEMM's


def _rowwise_gather(recipe: str, transpose: bool, tensor: tuple) -> bool:
    """Whether ``tensor`` ((elements, norm_fed[, gathered])) is quantized for a sequence-parallel all-gather that
    carries its rowwise fp8 data only, its transpose made after the gather (module docstring, "Gathered tensors")."""
    return recipe in ROWWISE_GATHER_RECIPES and transpose and len(tensor) > 2 and bool(tensor[2])


def quantize_kernels(recipe: str, transpose: bool, tensors: list[tuple]) -> list[tuple[str, float, float]]:
    """The kernels quantizing the 16-bit GEMM operands ``tensors`` of one layer phase under ``recipe``, as (name,
    elements, HBM bytes): ``tensors`` are (elements, norm_fed) pairs or (elements, norm_fed, gathered) triples,
    ``norm_fed`` where a Transformer Engine norm wrote the tensor, ``gathered`` where it is quantized on its
    sequence-parallel shard and then all-gathered. Current scaling: per tensor the amax's zeroing
    (``AMAX_ZERO_OP``, zero work), an amax pass (``AMAX_OP``, 16-bit read; none where the norm computed the amax),
    the scale kernel (``SCALE_OP``, zero work) and a cast (``CAST_OP``, delayed scaling's bytes; a gathered one on
    Hopper rowwise only, its transpose after the gather: ``gathered_transposes``); MXFP8: per tensor one quantize
    kernel (``CAST_OP`` at ``cast_bytes_per_element``: both copies and their scales, no amax pass; the norm-fed ones
    too, the MXFP8 norm being unfused: module docstring, "MXFP8 kernels"); delayed scaling one fused ``CAST_OP``
    over all elements."""
    assert recipe in FP8_RECIPES, recipe
    if recipe not in PER_TENSOR_RECIPES:
        elements = sum(tensor[0] for tensor in tensors)
        return [(CAST_OP, elements, cast_bytes_per_element(recipe, transpose) * elements)]
    cast = cast_bytes_per_element("delayed" if recipe in AMAX_PASS_RECIPES else recipe, transpose)
    kernels: list[tuple[str, float, float]] = []
    for tensor in tensors:
        elements, norm_fed = tensor[0], tensor[1]
        if recipe in AMAX_PASS_RECIPES:   # the amax zeroed, [its pass], the scale from it (one-element launches)
            kernels.append((AMAX_ZERO_OP, 0.0, 0.0))
            if not norm_fed:
                kernels.append((AMAX_OP, elements, BF16_BYTES * elements))
            kernels.append((SCALE_OP, 0.0, 0.0))
        rowwise_only = _rowwise_gather(recipe, transpose, tensor)
        kernels.append((CAST_OP, elements, (BF16_BYTES + FP8_BYTES if rowwise_only else cast) * elements))
    return kernels


def gathered_transposes(recipe: str, transpose: bool, tensors: list[tuple], tp: int) -> list[tuple[str, float, float]]:
    """The fp8 transposes the backward runs on the all-gathered ``tensors`` ((elements, norm_fed, gathered) on
    one rank's shard) for their weight-gradient GEMMs, as (name, elements, HBM bytes): one ``TRANSPOSE_OP`` per
    gathered tensor of a recipe whose all-gather carries rowwise data only, on a GPU whose fp8 GEMMs are TN only
    (``tex.fp8_transpose`` on the gathered tensor, tp x the shard: 1 byte read, 1 written an element; module
    docstring, "Gathered tensors"); none otherwise."""
    return [(TRANSPOSE_OP, tp * tensor[0], 2 * FP8_BYTES * tp * tensor[0])
            for tensor in tensors if _rowwise_gather(recipe, transpose, tensor)]


# Delayed scaling's per-region amax reduction and scale update (module docstring)
AMAX_REDUCTION_RECIPES = ("delayed",)
AMAX_CONCAT_OP = "fp8_amax_concat"
SCALE_UPDATE_OP = "fp8_scale_update"
FP8_TENSORS_PER_GEMM = {"forward": 3, "backward": 2}   # TE base.py init_fp8_meta_tensors: num_gemms * 3 / * 2
AMAX_BYTES = 4                                          # fp32 amax, scale and inverse scale
# NeMo's fp8 configurations keep 1024 amaxes per tensor (fp8_amax_history_len: 1024, fp8_amax_compute_algo: max;
# NeMo-Framework-Launcher conf/training/gpt3/*.yaml); only the update kernel's few hundred KB of traffic depend on it
AMAX_HISTORY_LEN = 1024


def amax_reduction(recipe: str, gemms: int, direction: str,
                   history_len: int = AMAX_HISTORY_LEN) -> tuple[float, list[tuple[str, float, float]]]:
    """One autocast region's amax reduction under ``recipe`` for ``gemms`` fp8 GEMMs in ``direction`` ("forward"
    or "backward"): (bytes of the MAX all-reduce over the amax group, the kernels on the compute stream as (name,
    elements, HBM bytes)): the concatenation (reads and writes each amax) and the fused update (reads the amaxes, reads
    and writes each history of ``history_len``, reads the scale, writes it and its inverse). Nothing for the recipes
    without a region-wide reduction."""
    if recipe not in AMAX_REDUCTION_RECIPES or gemms <= 0:
        return 0.0, []
    tensors = FP8_TENSORS_PER_GEMM[direction] * gemms
    amax_bytes = AMAX_BYTES * tensors
    return amax_bytes, [(AMAX_CONCAT_OP, tensors, 2 * amax_bytes),
                        (SCALE_UPDATE_OP, tensors * history_len, (2 * history_len + 4) * amax_bytes)]


# Current scaling's tensor-parallel amax all-reduce before each sequence-parallel cast (module docstring)
TP_AMAX_REDUCTION_RECIPES = ("current",)


def tp_amax_reductions(recipe: str, gathered_quantizations: int) -> int:
    """MAX all-reduces of one fp32 amax (``AMAX_BYTES``) over the tensor-parallel group that one layer phase runs
    under ``recipe``, for ``gathered_quantizations`` tensors it quantizes on the sequence-parallel shard and then
    all-gathers (module docstring, "Current scaling's tensor-parallel amax all-reduce"): one each under current
    scaling, none otherwise."""
    return gathered_quantizations if recipe in TP_AMAX_REDUCTION_RECIPES else 0


# Transformer Engine 1.x's LayerNormMLP under delayed scaling (``training.mlp_activation: layernorm_mlp``)
LAYERNORM_MLP_ACTIVATION = "layernorm_mlp"


def layernorm_mlp_cast_saving(ffn_elements: float, sequence_parallel: bool) -> tuple[float, float]:
    """(forward, backward) HBM bytes of the delayed-scaling casts that ``megatron_te_cast_bytes`` counts for
    Megatron-Core's MLP and Transformer Engine 1.x's ``LayerNormMLP`` (inside TE's ``TransformerLayer``: NeMo's
    ``megatron_gpt_full_te_layer_autocast`` spec, MLPerf Training's GPT-3) does not run, for ``ffn_elements`` GELU
    outputs on this rank. Forward: the GELU writes fc2's fp8 input itself (``activation_func(fc1_out, fp8_meta,
    GEMM2_INPUT, ...)``), so fc2's input cast (2 + 1 bytes with sequence parallelism, the cast-transpose's 4 without)
    is not run; the backward still transposes that fp8 input for fc2's weight gradient (``gelu_out_t =
    tex.fp8_transpose(gelu_out)``), which without sequence parallelism Megatron-Core's cast-transpose had made in the
    forward (1 + 1 bytes more in the backward there). Backward: the GELU's gradient kernel writes fc1's fp8 output
    gradient and its transpose with the bias gradient (``fp8_cast_transpose_bgrad_dgelu_fused(fc2_dgrad, fc1_out,
    ...)``: the 16-bit gradient's 2 bytes written become 1 + 1), so fc1's output-gradient cast-transpose (4 bytes) is
    not run. The GELU's own forward write (1 byte, not 2) is the activation op's (``ops.mlp_block``). GELU only: other
    activations run their backward and the cast-transpose apart in TE 1.x (docs/calibration/rounds-1-9.md, "Round 4b"
    and "Round 31: GPT-3 175B in FP8 against its BF16 twin, per microbatch")."""
    fc2_input = (BF16_BYTES + FP8_BYTES) if sequence_parallel else cast_bytes_per_element("delayed")
    fc2_input_transpose = 0.0 if sequence_parallel else 2 * FP8_BYTES
    fc1_output_grad = cast_bytes_per_element("delayed")
    return fc2_input * ffn_elements, (fc1_output_grad - fc2_input_transpose) * ffn_elements


def megatron_te_cast_bytes(norm_fed: float, gathered: float, other_forward: float, other_backward: float,
                           biases: bool) -> tuple[float, float]:
    """(forward, backward) HBM bytes of delayed scaling's casts and transposes in one Megatron-Core Transformer
    Engine layer on Hopper (module docstring), beyond the norms' own op: ``norm_fed`` elements of each norm output
    and of each row-parallel output gradient on this rank (the sequence-parallel shard), ``gathered`` the same
    tensor's elements after the tensor-parallel all-gather (equal without sequence parallelism), ``other_forward``
    the projection's and fc2's input elements, ``other_backward`` the column-parallel output gradients' (QKV's,
    fc1's), ``biases`` whether the linear layers have biases."""
    cast = cast_bytes_per_element("delayed")                     # cast-transpose: 2 read, 1 + 1 written
    cast_only = BF16_BYTES + FP8_BYTES                           # cast_to_fp8: 2 read, 1 written
    transpose = 2 * FP8_BYTES                                    # fp8_transpose: 1 read, 1 written
    if gathered > norm_fed:   # sequence parallel: bias sum and cast on the shard, transpose after the gather
        row_grad = (BF16_BYTES * biases + cast_only) * norm_fed + transpose * gathered
        # the projection's and fc2's inputs: cast forward, transposed in the backward for the weight gradient
        forward, input_transposes = cast_only * other_forward, transpose * other_forward
    else:
        row_grad = cast * norm_fed
        forward, input_transposes = cast * other_forward, 0.0
    backward = cast * other_backward + 2 * row_grad + 2 * transpose * gathered + input_transposes
    return forward, backward
