"""Kernels eager PyTorch launches for a GPT layer where fused stacks fold the work into other kernels:
llm-foundry's MPT and the 2021-22 Megatron stacks (``training.layer_backward: eager``), the wrapper of MPT's Triton
FlashAttention (``training.attention: flash_triton``), the 2021-22 Megatron layer's own (``megatron_2021``
below), and under ``layer_backward: fused`` the bias reductions Megatron's later stacks still run
(``megatron_autograd_biases``: Megatron-Core adds the biases of its ``skip_bias_add`` linears itself, so their
gradients are autograd reductions, not Transformer Engine's GEMM epilogue). Per rank and microbatch, bandwidth-bound,
each its own kernel.

``autograd_kernels`` (``layer_backward: eager``): PyTorch autograd of ``nn.Linear`` and ``F.layer_norm``.
- Linear biases. MPT's linears are ``nn.Linear`` with biases in llm-foundry's benchmark runs (MPTConfig ``no_bias``
  False; the benchmark table's NumParams count them: MPT-7B at sequence 2048, 6,658,859,008 = 12 L d^2 + V d + the
  2048 x d learned position table + 9 d L linear biases + 4 d L + 2 d layernorm weights and biases, exactly;
  mosaicml/llm-foundry scripts/train/benchmarking/README.md). ``F.linear`` of a contiguous 3-D input runs
  ``addmm(bias, x, W^T)`` (ATen Linear.cpp ``_flatten_3d_linear``; the forward bias rides cuBLASLt's epilogue), and
  addmm's derivative passes the output gradient to the bias, which autograd reduces to its shape (``sum_to``): one
  reduction kernel per linear reading the [tokens, out] gradient (``BIAS_GRAD_READS``). Transformer Engine and
  Megatron-Core compute it in the wgrad GEMM's epilogue (cuBLASLt BGRADB) or the fp8 cast (the default, fused).
  With sequence parallelism (tp > 1) the row-parallel linears (attention output, MLP down: ``ROW_PARALLEL``) add
  their bias after the reduce-scatter, on the rank's tokens/tp (Megatron-Core RowParallelLinear.forward:
  ``output_ = reduce_scatter_to_sequence_parallel_region(output_parallel)``, then ``output_ + self.bias``,
  megatron/core/tensor_parallel/layers.py), so their gradient reduces tokens/tp rows; the column-parallel ones
  (QKV, MLP up) see the all-gathered tokens. The MLP biases are the dense MLP's (``model.ffn``): MoE experts' are
  not modelled (config refuses ``layer_backward: eager`` for an MoE model with biases).
- LayerNorm weight and bias. ATen's ``layer_norm_backward_cuda`` computes dx in one kernel and dgamma/dbeta in
  another (``GammaBetaBackwardCUDAKernel``, PyTorch 2.0-2.6, aten/src/ATen/native/cuda/layer_norm_kernel.cu;
  pytorch/pytorch#87814, #148605) reading dy and x again (``NORM_WEIGHT_GRAD_READS``). Transformer Engine's norm
  backward and apex contrib's persistent ``FastLayerNorm`` accumulate them inside the dx kernel (a small finalize
  over per-block partials). apex's ``FusedLayerNorm`` does not: ``HostLayerNormGradient`` (apex
  csrc/layer_norm_cuda_kernel.cu, 2019-2021, and Megatron-LM's copy, megatron/fused_kernels/
  layer_norm_cuda_kernel.cu) launches ``cuComputePartGradGammaBeta(dout, input, ...)`` (dy and x read, fp32
  partials of ``part_size = 16`` row blocks written), ``cuComputeGradGammaBeta`` (the partials summed into dgamma and
  dbeta) and then ``cuComputeGradInput(dout, input, ...)``, which reads dy and x again and writes dx only.

``megatron_2021`` (``layer_backward: eager`` with ``attention: naive``: the 2021-22 Megatron layer, Megatron-LM
and its Megatron-DeepSpeed forks under PyTorch 1.x, unfused attention and apex's FusedLayerNorm), on top of the above:
- the norm's weight pass is apex's two kernels, the partial sums and their finalize (``APEX_PART_SIZE`` rows of fp32
  partials of dgamma and dbeta written, read back);
- the QKV bias is added by a forward kernel of its own. The attention's ``query_key_value`` is a
  ``ColumnParallelLinear`` built without ``skip_bias_add`` (megatron/model/transformer.py ``ParallelAttention``;
  the dense and MLP linears skip it, their bias fused into bias-gelu and bias-dropout-add), whose forward calls
  ``F.linear(input_parallel, self.weight, bias)`` (megatron/mpu/layers.py, 2020-2022) on the 3-D [s, b, h] input.
  PyTorch 1.x's ``linear`` fuses the bias into the GEMM (``addmm``) only for a 2-D input; otherwise
  ``output = at::matmul(input, weight.t()); output.add_(*bias)`` (aten/src/ATen/native/Linear.cpp; the Python
  ``F.linear`` before it: ``output = input.matmul(weight.t()); output += bias``): an elementwise kernel reading and
  writing the [tokens, 3h/tp] output. PyTorch 2.x flattens a contiguous 3-D input into ``addmm``
  (``_flatten_3d_linear``), the bias in cuBLASLt's epilogue, as llm-foundry's MPT runs it: not charged there.
  It runs in every forward, the full recompute's too. Keyed on ``training.qkv_bias_add`` (``separate_qkv_bias_add``),
  which defaults to this layer's rule; Megatron-LM's 2022 code (Korthikanti et al. 2022, ``layer_backward: fused``)
  adds it the same way: ``LinearWithGradAccumulationAndAsyncCommunication.forward`` runs ``output =
  torch.matmul(total_input, weight.t())`` then ``output = output + bias`` (megatron/mpu/layers.py, 2022), a separate
  kernel under any PyTorch; of a GPT layer's linears only ``query_key_value`` passes its bias there (the attention
  ``dense`` and both MLP linears are built with ``skip_bias_add=True``, megatron/model/transformer.py), so those
  scenarios set ``qkv_bias_add: separate``.

``triton_attention_kernels`` (``attention: flash_triton``): llm-foundry's ``triton_flash_attn_fn``
(llmfoundry/models/layers/attention.py) splits the Wqkv output with ``qkv.chunk(3, dim=2)`` and calls
``flash_attn_func(query, key, value, ...)``; the backward of its ``FlashAttnFunc`` (flash_attn_triton.py, vendored
in llmfoundry/models/layers, commit 0227d9f7b9c792e275e018bfac3a21dea4739323) runs, besides the kernel itself:
``init_to_zero('DQ')``, the autotune pre-hook zeroing the fp32 dq accumulator (write 4 B per query element);
``_bwd_preprocess_do_o_dot`` (read O and dO); ``dq.copy_(dq_accum)`` (read 4 B, write the 16-bit dq); and it returns
dq, dk, dv as three tensors, which the chunk's backward (``SplitBackward0``: ``cat``) copies into one [tokens, q + 2
kv] gradient for Wqkv's dgrad (read and write). The dq read-modify-writes inside the kernel grow with the sequence
and belong to the kernel's measured time (efficiency.yaml attention.flash_triton); these do not.
"""

from __future__ import annotations

from simcluster.spec.model import TransformerSpec
from simcluster.workload import te_flash_layout

BIAS_GRAD_READS = 1          # the output gradient, once, per bias element of every token (the bias written: tiny)
NORM_WEIGHT_GRAD_READS = 2   # dy and x per normalised element (dgamma, dbeta written: tiny)
DQ_ACCUMULATOR_BYTES = 4     # fp32 (torch.empty_like(q, dtype=torch.float32))
ROW_STATISTIC_BYTES = 4      # the fp32 delta = rowsum(O * dO) per query row and head
REDUCTION_FLOP_PER_ELEMENT = 1
APEX_PART_SIZE = 16          # row blocks of apex's partial dgamma/dbeta (HostLayerNormGradient: part_size = 16)
APEX_PARTIAL_BYTES = 4       # the partials are fp32 for 16-bit input (part_grad_gamma dtype kFloat for kHalf)
BIAS_ADD_FLOP_PER_ELEMENT = 1
# The 2021-22 Megatron layer (``megatron_2021``): eager autograd around Megatron's unfused attention
MEGATRON_2021 = ("eager", "naive")   # (layer_backward, attention)

# Row-parallel linears: their bias added after the sequence-parallel reduce-scatter (module docstring)
ROW_PARALLEL = ("attn_out", "mlp_down")
# The dense MLP's biases Megatron's stacks reduce by kernels of their own under ``layer_backward: fused``, by
# ``training.mlp_activation`` (``megatron_autograd_biases``): Megatron's MLP adds both itself; TE's LayerNormMLP
# keeps fc1's and returns fc2's; flash-attention's FusedMLP keeps both in GEMM epilogues; an eager SwiGLU changes
# nothing in how the linears' biases are added
MLP_BIAS_REDUCTIONS = {"separate": ("mlp_up", "mlp_down"), "eager": ("mlp_up", "mlp_down"),
                       "layernorm_mlp": ("mlp_down",), "epilogue": ()}

Kernel = tuple[str, float, float]  # (name, FLOP, HBM bytes) of one bandwidth-bound kernel; ``ops`` makes it an Op


def linear_output_widths(model: TransformerSpec, tp: int, q_local: int, kv_local: int) -> dict[str, int]:
    """Output width on one rank of each biased linear of a dense layer (fused QKV, attention output, MLP up and
    down; Megatron-style tensor parallelism: QKV and up split, the row-parallel outputs full width)."""
    up = model.ffn // tp * (2 if model.mlp == "swiglu" else 1)
    return {"qkv": q_local + 2 * kv_local, "attn_out": model.hidden, "mlp_up": up, "mlp_down": model.hidden}


def bias_grad_kernels(linears, tokens: float, sp_tokens: float, widths: dict[str, int], e: int) -> list[Kernel]:
    """One reduction kernel per named linear's bias (``linears``, keys of ``widths``): the [tokens, width] output
    gradient read once, the bias written; the row-parallel linears (``ROW_PARALLEL``) on ``sp_tokens``."""
    kernels = []
    for name in linears:
        width = widths[name]
        elements = (sp_tokens if name in ROW_PARALLEL else tokens) * width
        kernels.append((f"{name}_bias_grad", REDUCTION_FLOP_PER_ELEMENT * elements,
                        BIAS_GRAD_READS * elements * e + width * e))
    return kernels


def autograd_kernels(model: TransformerSpec, tokens: float, sp_tokens: float, widths: dict[str, int],
                     e: int, apex_norm: bool = False, norm_weights: bool = True) -> list[Kernel]:
    """The bias reductions (where the model has biases) and the two norms' weight-gradient passes of one layer's
    backward under eager PyTorch autograd (``layer_backward: eager``); ``sp_tokens``: the tokens the norms and the
    row-parallel biases see (the sequence-parallel share); ``apex_norm``: the norms are apex's FusedLayerNorm (two
    kernels each, ``apex_norm_weight_kernels``), else ATen's (one); ``norm_weights`` False: the norms' own kernels
    carry their weight gradients (eager fp32 norms, ``eager_norm_rope``)."""
    kernels = bias_grad_kernels(widths, tokens, sp_tokens, widths, e) if model.linear_biases else []
    if not norm_weights:
        return kernels
    if apex_norm:
        return kernels + apex_norm_weight_kernels(model, sp_tokens, e)
    norm_elements = sp_tokens * model.hidden
    params = (2 if model.norm == "layernorm" else 1) * model.hidden
    for name in ("mlp_norm", "attn_norm"):
        kernels.append((f"{name}_weight_grad", 2 * REDUCTION_FLOP_PER_ELEMENT * norm_elements,
                        NORM_WEIGHT_GRAD_READS * norm_elements * e + params * e))
    return kernels


def megatron_2021(layer_backward: str, attention: str) -> bool:
    """Whether a layer is the 2021-22 Megatron one (``MEGATRON_2021``): eager autograd with unfused attention."""
    return (layer_backward, attention) == MEGATRON_2021


def apex_norm_weight_kernels(model: TransformerSpec, sp_tokens: float, e: int) -> list[Kernel]:
    """The two norms' weight-gradient passes as apex's FusedLayerNorm launches them: per norm the partial sums
    (``cuComputePartGradGammaBeta``: dy and x read, ``APEX_PART_SIZE`` rows of fp32 partials written) and their
    finalize (``cuComputeGradGammaBeta``: the partials read, dgamma and dbeta written)."""
    norm_elements = sp_tokens * model.hidden
    params = (2 if model.norm == "layernorm" else 1) * model.hidden
    partials = APEX_PART_SIZE * params * APEX_PARTIAL_BYTES
    kernels = []
    for name in ("mlp_norm", "attn_norm"):
        kernels.append((f"{name}_weight_grad", 2 * REDUCTION_FLOP_PER_ELEMENT * norm_elements,
                        NORM_WEIGHT_GRAD_READS * norm_elements * e + partials))
        kernels.append((f"{name}_weight_grad_finalize", REDUCTION_FLOP_PER_ELEMENT * APEX_PART_SIZE * params,
                        partials + params * e))
    return kernels


def separate_qkv_bias_add(qkv_bias_add: str | None, layer_backward: str, attention: str) -> bool:
    """Whether the forward adds the QKV bias by a kernel of its own (``training.qkv_bias_add: separate``); unset:
    the 2021-22 Megatron layer's (``megatron_2021``) does, any other stack's GEMM epilogue adds it."""
    if qkv_bias_add is None:
        return megatron_2021(layer_backward, attention)
    return qkv_bias_add == "separate"


def forward_kernels(model: TransformerSpec, separate_bias_add: bool, tokens: float, widths: dict[str, int],
                    e: int) -> list[Kernel]:
    """Forward kernels of one layer outside its GEMMs that fused stacks do not launch: Megatron-LM 2020-22's QKV
    bias add (``separate_bias_add``: read and write the [tokens, qkv] output, read the bias); none otherwise."""
    if not (separate_bias_add and model.linear_biases):
        return []
    elements = tokens * widths["qkv"]
    return [("qkv_bias_add", BIAS_ADD_FLOP_PER_ELEMENT * elements, 2 * elements * e + widths["qkv"] * e)]


def triton_attention_kernels(tokens: float, q_local: int, kv_local: int, heads_local: int, e: int) -> list[Kernel]:
    """The backward kernels around the Triton FlashAttention kernel of one layer (``attention: flash_triton``), in
    the order they run."""
    q = tokens * q_local
    return [
        ("triton_dq_zero", 0.0, DQ_ACCUMULATOR_BYTES * q),
        ("triton_do_o_dot", 2 * q, 2 * q * e + tokens * heads_local * ROW_STATISTIC_BYTES),
        ("triton_dq_copy", 0.0, q * (DQ_ACCUMULATOR_BYTES + e)),
        te_flash_layout.split_concat(tokens, q_local, kv_local, e),
    ]


def backward_kernels(model: TransformerSpec, layer_backward: str, attention: str, tokens: float, sp_tokens: float,
                     tp: int, q_local: int, kv_local: int, e: int, megatron_biases: tuple[str, ...] = (),
                     norm_weights: bool = True) -> list[Kernel]:
    """Everything this module adds to one layer's activation-gradient phase: the Triton wrapper's kernels with
    ``attention == "flash_triton"``, autograd's with ``layer_backward == "eager"``, and with ``layer_backward ==
    "fused"`` the reductions of the biases Megatron adds outside the GEMM (``megatron_biases``, from
    ``megatron_autograd_biases``); ``norm_weights``: as ``autograd_kernels``."""
    kernels = []
    widths = linear_output_widths(model, tp, q_local, kv_local)
    if attention == "flash_triton":
        kernels += triton_attention_kernels(tokens, q_local, kv_local, model.heads // tp, e)
    if layer_backward == "eager":
        kernels += autograd_kernels(model, tokens, sp_tokens, widths, e,
                                    apex_norm=megatron_2021(layer_backward, attention), norm_weights=norm_weights)
    elif megatron_biases:
        kernels += bias_grad_kernels(megatron_biases, tokens, sp_tokens, widths, e)
    return kernels


def megatron_autograd_biases(model: TransformerSpec, megatron: bool, layer_backward: str, attention: str,
                             mlp_activation: str, megatron_deepspeed: bool = False) -> tuple[str, ...]:
    """The linears of a Megatron layer whose bias gradient autograd reduces in a kernel of its own under
    ``layer_backward: fused`` (``megatron``: Megatron-Core or Megatron-LM 2022 on, ``Scenario.megatron_core``;
    ``megatron_deepspeed``: the Megatron-DeepSpeed layer under DeepSpeed's PipelineEngine, ``pipeline_engine:
    deepspeed``).

    Megatron-Core builds the attention output projection and both MLP linears with ``skip_bias_add=True``
    (megatron/core/transformer/mlp.py ``MLP.__init__``; attention.py ``linear_proj``): Transformer Engine's Linear
    then returns its bias (``return_bias``: ``apply_bias = bias and not return_bias``, so no bias in the GEMM and no
    BGRADB in its wgrad) and Megatron adds it itself, fc1's in ``bias_gelu_impl`` (fusions/fused_bias_gelu.py:
    ``GeLUFunction.backward`` returns ``tmp, tmp``, the full [tokens, ffn/tp] gradient for the bias, which autograd
    sums to its shape, ``validate_outputs`` / ``sum_to``) and the projections' in the bias-dropout-add
    (fusions/fused_bias_dropout.py: ``x = x + bias``, a broadcast add, its bias gradient a reduction over the
    tokens). Only the QKV linear (``TELayerNormColumnParallelLinear`` without ``skip_bias_add``) keeps its bias in
    the GEMM and its gradient in the epilogue. Megatron-LM's 2022-23 local layer (``attention: naive`` here: the
    rows of Korthikanti et al. 2022, MegaScale's baseline, Zero Bubble's) reduces the QKV bias too:
    ``LinearWithGradAccumulationAndAsyncCommunication.backward`` runs ``grad_bias = grad_output.sum(dim=0)``
    (megatron/core/tensor_parallel/layers.py), and its MLP and projection biases go through the same jit-fused
    bias-GELU and bias-dropout-add. The dense MLP's reductions only (``MLP_BIAS_REDUCTIONS``): with Transformer
    Engine's LayerNormMLP inside TE's own TransformerLayer (``layernorm_mlp``) fc1's bias and GELU stay inside the
    module, while fc2's is returned (``TransformerLayer`` builds it with ``return_bias=not
    self.parallel_attention_mlp``) and added by TE's bias-dropout-add; with flash-attention's FusedMLP
    (``epilogue``) neither: fc1's bias gradient is fc2-dgrad's ``DGELU_BGRAD`` epilogue and fc2's comes from its
    wgrad (``linear_bias_wgrad``). None for MoE experts, none for a model without biases, and none beyond
    ``autograd_kernels`` under ``layer_backward: eager``.

    Kernels of their own whatever the fuser: fc1's is the autograd engine's ``sum_to`` of the custom Function's
    full-size bias gradient, QKV's an explicit ``.sum(dim=0)``, and the local layer passes the projections' biases
    to the fused bias-dropout-add as ``bias.expand_as(residual)`` (NVIDIA/Megatron-LM megatron/model/transformer.py
    ``ParallelTransformerLayer.forward`` @ 00baee46; megatron/legacy/model/transformer.py in the Zero Bubble fork @
    1707211f), so their reduction is ``ExpandBackward``'s, outside the TorchScript graph nvFuser could fuse.
    Megatron-Core passes the bias itself, into a function its ``jit_fuser`` compiles, ``torch.compile`` from
    PyTorch 2.2 (megatron/core/jit.py); without dropout its backward is the reduction alone, with dropout
    Inductor's reduction over the tokens and the row-major mask multiply beside it are taken as two kernels (their
    loop orders differ, the limit pytorch/pytorch#165370 describes for the norm backward's two reductions; no
    kernel trace of it is stored).

    The Megatron-DeepSpeed layer (``megatron_deepspeed``; MT-NLG's and BLOOM's forks and Microsoft's later one) is
    Megatron's local layer whatever the attention kernel: ``query_key_value`` is a ``ColumnParallelLinear`` without
    ``skip_bias_add`` whose bias is added outside the GEMM, ``F.linear`` of the 3-D [s, b, h] input (megatron/mpu/
    layers.py, bigscience-workshop/Megatron-DeepSpeed @ 119a0d2d, microsoft/Megatron-DeepSpeed @ 1619965d), whose
    gradient autograd reduces to the bias's shape, or ``output + bias`` with ``grad_bias = grad_output.sum(dim=0)``
    (microsoft/Megatron-DeepSpeed megatron/core/tensor_parallel/layers.py @ 1de4f542); the attention ``dense`` and
    both MLP linears skip the add (megatron/model/transformer.py @ 06dc2d7f, 4989bcde: ``bias_gelu_impl``, whose
    ``GeLUFunction.backward`` returns ``tmp, tmp``, and ``bias_dropout_add_func(attention_output,
    attention_bias.expand_as(residual), residual, ...)``, the same for ``mlp_bias``). Four reductions a layer, as
    ``autograd_kernels`` charges them under ``layer_backward: eager``, the setting of the bundled MT-NLG and BLOOM
    rows."""
    if not ((megatron or megatron_deepspeed) and model.linear_biases and layer_backward == "fused"):
        return ()
    names = ("qkv", "attn_out") if attention == "naive" or megatron_deepspeed else ("attn_out",)
    if model.moe is None:
        names += MLP_BIAS_REDUCTIONS[mlp_activation]
    return names
