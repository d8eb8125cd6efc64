"""FLOP and HBM bytes of every kernel of a transformer layer, per rank and microbatch, per training phase.

A layer is a list of ``Op`` per phase: ``forward``, ``backward_input`` (activation gradients, "dgrad"),
``backward_weight`` (weight gradients, "wgrad") and ``recompute`` (the forward work re-run before the backward
when activations were discarded). The engine turns the lists into durations with ``kernels.ops_time_s``.

FLOP conventions (Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using
Megatron-LM", section 5.1 / appendix): a GEMM of (m x k) by (k x n) is 2*m*n*k FLOP; the attention scores Q
K^T and the context P V are 2*b*s^2*h each in the forward pass, causal masking NOT halved; each backward GEMM
(dgrad and wgrad) costs as much as its forward GEMM, and the attention core's backward is twice its forward
with no weight gradient. Model FLOP (for MFU) and hardware FLOP (for HFU) count the matrix multiplications
only (``MATMUL_KINDS``), which gives exactly 72*B*s*l*h^2*(1 + s/(6h) + V/(12*l*h)) per step for GPT shapes;
elementwise kernels carry their (small) FLOP for the roofline but are left out of MFU, as in Megatron-LM and
PaLM (Chowdhery et al. 2022, app. B).

Sharding: tensor parallelism (Shoeybi et al. 2019) splits the GEMMs' head/ffn dimension by ``tp``; sequence
parallelism (Korthikanti et al. 2022) splits the norms, dropouts and residual adds over the sequence by
``tp``; context parallelism splits the sequence by ``cp`` (each rank's queries attend to all keys, so
attention FLOP per rank are 1/cp of the full causal attention). Communication is not an op here: the engine
adds it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from simcluster.spec.config import container_cudnn, container_te, stated_mcore_version
from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.spec.model import TransformerSpec
from simcluster.workload import (
    autocast_params,
    call_issue,
    cp_ring,
    eager_backward,
    eager_norm_rope,
    eager_rope,
    embedding_grad,
    fp8_recipes,
    grad_accumulation,
    kv_expansion,
    mla_casts,
    te_flash_layout,
    torchao_float8,
)

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario

PHASES = ("forward", "backward_input", "backward_weight", "recompute")
KINDS = ("gemm", "attention", "memory")
MATMUL_KINDS = ("gemm", "attention")
RECOMPUTE_MODES = ("none", "selective", "full")
# Megatron-Core's selective recompute modules (TransformerConfig.recompute_modules, --recompute-modules) that
# ``layer_ops`` re-runs: the attention core (what activation_recompute: selective does), the norms Megatron-Core runs
# as modules of their own (TransformerLayer recompute_input_layernorm / recompute_pre_mlp_layernorm), the routed
# experts' activation (TEGroupedMLP activation_recompute); workload.mla adds mla_up_proj. Whole-module checkpoints
# (tensor_parallel.checkpoint, te.distributed.checkpoint with fp8: the module's first forward runs without autograd,
# its input kept, the forward re-run before its backward): the dense MLP (TransformerLayer recompute_mlp, not an
# MoELayer), the MoE layer (MoELayer moe_layer_recompute: custom_forward, router to combine) and its shared experts
# (MoELayer shared_experts_recompute); Megatron-Core transformer_config.py, module_recompute
MLP, MOE, SHARED_EXPERTS = "mlp", "moe", "shared_experts"
CORE_ATTN, LAYERNORM, MOE_ACT = "core_attn", "layernorm", "moe_act"
# Attention kernels (``training.attention``): "flash" is FlashAttention-2/3 or cuDNN's fused kernel (Megatron-Core,
# NeMo); "flash_triton" the Triton FlashAttention of flash-attention's flash_attn_triton.py that MosaicML's
# llm-foundry ran (attn_impl: triton), same HBM traffic, its own speed (efficiency.yaml attention.flash_triton);
# "naive" materialises the score matrix (Megatron-LM before 2022).
FLASH_KERNELS = ("flash", "flash2", "flash_triton")  # flash2: FlashAttention-2 as PyTorch SDPA runs it
ATTENTION_KERNELS = (*FLASH_KERNELS, "naive")
# Loss kernels (``training.cross_entropy``): "unfused" is Megatron-LM's vocab-parallel cross entropy, pass by pass in
# fp32 (output_ops); "fused" one kernel over the 16-bit logits and one for their gradient, as flash-attention's
# CrossEntropyLoss (flash_attn/losses/cross_entropy.py; the xentropy CUDA kernel in 1.x, a Triton kernel in 2.x),
# llm-foundry's default (ComposerMPTCausalLM: loss_fn = om_model_config.get('loss_fn', 'fused_crossentropy'));
# "megatron_fused" Megatron-Core's fused_vocab_parallel_cross_entropy (cross_entropy_loss_fusion, output_ops).
CROSS_ENTROPY_KERNELS = ("unfused", "fused", "megatron_fused")
# How the input projections that read one tensor run (``training.projections``): one GEMM over their concatenated
# weights (Megatron-LM's QKV and gate/up linears, Transformer Engine) or one GEMM each (torchtitan's Llama: wq, wk,
# wv and w1, w3 are separate nn.Linear, torchtitan/models/llama/model.py), whose input gradients autograd then sums
# in a kernel of its own (read each partial, write the sum; torch.compile fuses the adds into one pointwise kernel
# but not into the GEMMs, whose outputs it does not own).
PROJECTIONS = ("fused", "separate")

# FLOP per element of the bandwidth-bound kernels: a counting convention (one FLOP per add, multiply, compare
# or transcendental), not a measurement. These ops are memory-bound on every GPU in the catalog, so the
# roofline time does not depend on the exact count; they are excluded from model FLOP (MFU) anyway.
LAYERNORM_FLOP_PER_ELEMENT = 8      # mean (1), variance (3), normalise (2), gain and bias (2)
RMSNORM_FLOP_PER_ELEMENT = 4        # square-accumulate (2), scale (1), gain (1)
GELU_FLOP_PER_ELEMENT = 8           # tanh approximation: x^3, scale, add, tanh, add, two multiplies
SWIGLU_FLOP_PER_ELEMENT = 5         # silu(gate) = gate * sigmoid(gate) (4), times up (1)
SQUARED_RELU_FLOP_PER_ELEMENT = 2   # relu(x)^2: max with 0 (1), square (1)
ROPE_FLOP_PER_ELEMENT = 3           # x*cos + rotate(x)*sin
SOFTMAX_FLOP_PER_ELEMENT = 5        # max, subtract, exp, sum, divide
DROPOUT_ADD_FLOP_PER_ELEMENT = 3    # mask compare, scale, residual add
CROSS_ENTROPY_FLOP_PER_ELEMENT = 5  # max, subtract, exp, sum, log/select
BACKWARD_ELEMENTWISE_FLOP_RATIO = 2  # an elementwise backward re-derives the forward, then the chain rule

# FP8 training (Transformer Engine): each GEMM input or output gradient is cast from bf16 in both orientations, at
# the bytes per element of the run's scaling recipe (workload.fp8_recipes; delayed scaling: 2 read, 1 + 1 written).
# Transformer Engine accumulates the backward fp8 GEMMs (dgrad, wgrad) with cuBLAS's split accumulator, which
# promotes partial sums to fp32 along the reduction, and the forward ones with fast accumulation
# (_2X_ACC_FPROP = False, _2X_ACC_DGRAD = _2X_ACC_WGRAD = True, transformer_engine/pytorch/module/base.py); the cost
# is per GPU (efficiency.yaml gemm.split_accumulator_slowdown).
SPLIT_ACCUMULATOR_PRECISIONS = ("fp8",)
# What runs in 16-bit even in fp8 training: attention and elementwise kernels (Transformer Engine's recipe) and
# Megatron-LM's output projection, a plain linear layer.
HIGH_PRECISION = {"fp8": "bf16"}

# Names of zero-work ops that mark host events rather than kernels of the stream (``kernels.stream_time``):
# the host waits for the stream to drain (a device-to-host copy of a few bytes it needs the value of; neither a
# kernel gap nor a launch is charged for it: simplification, its cost is the idle it causes, ``kernels.synced_stall_s``)
HOST_SYNC = "host_sync"
HOST_ONLY_LAUNCH = "host_launch"  # a launch the host issues onto another stream: host time, no kernel in series here
MASK_BYTES_PER_ELEMENT = 1          # dropout masks are stored as bytes (Korthikanti et al. 2022, section 4.1)
LOGITS_SOFTMAX_BYTES_PER_ELEMENT = 4  # Megatron's vocab-parallel cross entropy works in fp32
LSE_BYTES_PER_ELEMENT = 4           # flash attention's log-sum-exp per query row and head, fp32


@dataclass(frozen=True)
class Op:
    """One kernel (or a fused group) on one rank for one microbatch.

    For ``kind == "gemm"`` (m, n, k) is the shape of one product of (m x k) by (k x n), repeated ``batch``
    times (batched GEMMs of naive attention). For ``kind == "attention"`` (a fused flash kernel) m is the
    local query length, n the key/value length, k the head dimension and batch = micro_batch * local heads.
    """

    name: str
    kind: str
    flop: float
    hbm_bytes: float
    m: float = 0   # rows (fractional for the expert GEMMs: the busiest rank's mean rows an expert, moe.py)
    n: int = 0
    k: int = 0
    batch: int = 1
    precision: str | None = None  # a GEMM's own precision where it differs from the run's (fp8 runs' output layer)
    kernel: str = "flash"  # a fused attention op's implementation (``FLASH_KERNELS``); "naive" marks the kernels of
    # unfused attention (their own HBM fraction, efficiency.yaml attention.naive); unused by other kinds
    split_accumulator: bool = False  # a GEMM promoting its partial sums to fp32 (fp8 backward GEMMs)
    sms: int = 0  # SMs a GEMM is launched on (0: all of the GPU's; Transformer Engine's set_sm_margin, userbuffers.py)
    block_scaled: bool = False  # an MXFP8 kernel: a block-scaled GEMM or its quantize (efficiency.yaml gemm.block_*)
    row_nodes: tuple[float, ...] = (1.0,)  # a GEMM whose rows m spread (the expert GEMMs at the busiest rank's load,
    # moe.step_load_nodes): equally weighted multiples of m its compute time is the mean over (kernels.efficiency)
    cudnn_release: str | None = None  # a fused attention op's cuDNN release where the run's container names it
    # (kernels.causal_share; None: not known)
    ring_steps: int = 1  # a fused attention op run as context parallelism's ring of kernels, one a step (cp of
    # them, Transformer Engine's p2p loop): the keys each kernel sees are a share of n (kernels.ring_key_length)
    queued: bool = False  # launched by the C++ of the call that launched the kernel before it, no Python between
    # them (workload.call_issue): its gap is the queued-launch latency under host_overhead gap_per "call"
    no_work: bool = False  # a launch whose kernel has no work of its own to model: next to nothing (current scaling's
    # one-element kernels) or inside a measured time (MXFP8's scale swizzles in gemm.block_scaled_slowdown); queued,
    # it pays the queued-launch latency whatever gap_per (kernels.HostModel.gap_s, workload.call_issue)
    in_measured_call: bool = False  # of the no-work launches, one whose whole stream time (its kernel and its queued
    # launch's latency) is inside a measured call time charged elsewhere (MXFP8's scale swizzles, in the GEMM calls
    # gemm.block_scaled_slowdown timed whole): queued, no stream gap at all, a host dispatch still (round-32 review)


@dataclass(frozen=True)
class Shard:
    """What one rank computes for one microbatch: sequence and batch, and the parallel split applied."""

    seq_len: int
    micro_batch: int
    tp: int = 1
    cp: int = 1
    sequence_parallel: bool = True
    attention: str = "flash"      # one of ATTENTION_KERNELS
    precision: str = "bf16"
    recompute: str = "none"       # "none" | "selective" | "full"
    cross_entropy: str = "unfused"  # one of CROSS_ENTROPY_KERNELS
    fp8_recipe: str = "delayed"   # Transformer Engine's fp8 scaling (workload.fp8_recipes), with precision fp8
    projections: str = "fused"    # one of PROJECTIONS
    fp8_transpose: bool = True    # per-tensor fp8 casts also write a transpose (Hopper; fp8_recipes.transposes)
    fp8_gathered_weights: bool = False  # weights arrive in float8 (FSDP2's float8 all-gather, torchao_float8)
    # q/k/v layout copies around TE's attention (te_flash_layout.layout): (qkv_format, RoPE output) or None
    qkv_layout: tuple[str, str] | None = None
    qkv_split_copy: bool = False  # the QKV split's backward concatenates dq, dk, dv (te_flash_layout.split_concat)
    cp_ring_te: int = 0  # Transformer Engine major release whose p2p ring runs context parallelism (cp_ring); 0: none
    cp_ring_blackwell: bool = False  # that ring on Blackwell (compute capability 10: no batched p2p at cp 2, cp_ring)
    cp_ring_divisions: cp_ring.Divisions = cp_ring.NO_DIVISIONS  # its cu_seqlens divisions (cp_ring.seqlens_divisions)
    eager_rope: str | None = None  # release whose unfused RoPE runs eager kernels per q and k (eager_rope.release)
    norm_kernels: str = "fused"    # the norms: one fused kernel a phase, or eager fp32 ops (eager_norm_rope)
    rope_kernels: str = "fused"    # RoPE: one fused kernel a phase, or eager fp32 ops (eager_norm_rope)
    kv_expansion: bool = False     # GQA's keys and values copied to the query heads before SDPA (kv_expansion)
    recompute_modules: tuple[str, ...] = ()  # modules recomputed besides ``recompute`` (workload.mla: mla_up_proj)
    grad_accumulation_bytes: float = 0.0  # per parameter and microbatch outside the wgrad GEMM (grad_accumulation)
    grad_accumulation_per_tensor: bool = False  # that accumulation one kernel per parameter tensor (grad_accumulation)
    embedding_grad_accumulation_bytes: float = 0.0  # per table parameter: the dense .grad's add (embedding_grad)
    embedding_tied_sum: bool = False  # autograd sums the lookup's and the tied output layer's gradient (embedding_grad)
    layer_backward: str = "fused"  # bias and norm-weight gradients: fused, or eager autograd (eager_backward)
    qkv_bias_add: bool = False     # the forward adds the QKV bias by a kernel of its own (eager_backward)
    # linears whose bias gradient Megatron reduces by a kernel of its own under fused layer_backward (eager_backward)
    megatron_biases: tuple[str, ...] = ()
    residual_in_fp32: bool = False  # the residual stream in fp32: memory, and the fused kernels (dropout_add_norm_ops)
    dropout_add_norm: str = "separate"  # flash-attention's fused dropout-add-LayerNorm: "fused" (dropout_add_norm_ops)
    autocast_fp32_params: bool = False  # fp32 weights cast to 16 bits per Linear and microbatch (autocast_params)
    mlp_activation: str = "separate"  # the dense MLP's GELU: its own kernels, or in fc1's / fc2-dgrad's epilogues
    cudnn_release: str | None = None  # the container's cuDNN (config.container_cudnn), for the attention kernel
    main_grad_bytes: int = 0       # the main gradient's width a fused wgrad GEMM accumulates into; 0: it writes a
    # fresh 16-bit gradient (no fusion, or a stack without main_grad: ``main_grad_bytes``, ``wgrad_output_bytes``)

    def __post_init__(self):
        assert self.attention in ATTENTION_KERNELS, self.attention
        assert self.cross_entropy in CROSS_ENTROPY_KERNELS, self.cross_entropy
        assert self.projections in PROJECTIONS, self.projections
        assert self.recompute in RECOMPUTE_MODES, self.recompute
        assert self.precision in BYTES_PER_ELEMENT, self.precision
        assert self.seq_len % self.cp == 0, "validated in config"

    @property
    def tokens(self) -> int:
        """Tokens this rank's GEMMs see: the microbatch's local sequence (1/cp of it), TP-replicated."""
        return self.micro_batch * self.seq_len // self.cp

    @property
    def sp_divisor(self) -> int:
        """Split of the norms/dropouts/residuals: tp with sequence parallelism, else replicated (1)."""
        return self.tp if self.sequence_parallel else 1

    @property
    def gemm_bytes_per_element(self) -> int:
        return BYTES_PER_ELEMENT[self.precision]

    @property
    def activation_bytes_per_element(self) -> int:
        """Elementwise kernels and stored activations: 16-bit for bf16/fp16/fp8 training, 32-bit for
        fp32/tf32.

        FP8 training (Transformer Engine) keeps activations between GEMMs in bf16 and casts only GEMM inputs.
        """
        return 4 if self.precision in ("fp32", "tf32") else 2


def shard_for(scenario: Scenario) -> Shard:
    """The per-rank, per-microbatch work description of a scenario."""
    t, p = scenario.training, scenario.parallelism
    return Shard(seq_len=t.seq_len, micro_batch=t.micro_batch_size, tp=p.tp, cp=p.cp,
                 sequence_parallel=p.sequence_parallel, attention=t.attention, precision=t.precision,
                 recompute=recompute_mode(t.activation_recompute, t.recompute_modules),
                 cross_entropy=t.cross_entropy, fp8_recipe=t.fp8_recipe,
                 projections=t.projections,
                 fp8_transpose=fp8_recipes.transposes(scenario.cluster.gpu.name),
                 fp8_gathered_weights=torchao_float8.fsdp_float8_all_gather(t, p),
                 qkv_layout=te_flash_layout.layout(scenario),
                 qkv_split_copy=te_flash_layout.split_backward_copies(scenario),
                 cp_ring_te=p.te_version if (p.cp > 1 and scenario.megatron_core and t.attention != "naive"
                                                 and cp_ring.applied()) else 0,
                 cp_ring_blackwell="fp4" in scenario.cluster.gpu.peak,
                 cp_ring_divisions=cp_ring.seqlens_divisions(
                     p.te_version, container_te(stated_mcore_version(t)) if scenario.megatron_core else None),
                 eager_rope=eager_rope.release(scenario),
                 norm_kernels=t.norm_kernels, rope_kernels=t.rope_kernels,
                 kv_expansion=t.kv_expansion == kv_expansion.COPY,
                 recompute_modules=t.recompute_modules, layer_backward=t.layer_backward,
                 residual_in_fp32=t.residual_in_fp32, dropout_add_norm=t.dropout_add_norm,
                 autocast_fp32_params=t.autocast_fp32_params,
                 mlp_activation=t.mlp_activation,
                 cudnn_release=container_cudnn(stated_mcore_version(t)) if scenario.megatron_core else None,
                 qkv_bias_add=eager_backward.separate_qkv_bias_add(t.qkv_bias_add, t.layer_backward, t.attention),
                 megatron_biases=eager_backward.megatron_autograd_biases(
                     scenario.model, scenario.megatron_core, t.layer_backward, t.attention, t.mlp_activation,
                     megatron_deepspeed=scenario.parallelism.pipeline_engine == "deepspeed"),
                 grad_accumulation_bytes=grad_accumulation.charged_bytes_per_param(
                     scenario, fused=main_grad_bytes(scenario) > 0),
                 main_grad_bytes=main_grad_bytes(scenario),
                 embedding_grad_accumulation_bytes=embedding_grad.accumulation_bytes_per_param(scenario),
                 embedding_tied_sum=embedding_grad.sums_tied_gradients(scenario.model.tied_embeddings, p.pp,
                                                                       main_grad_bytes(scenario) > 0),
                 # MLA's layer rewrites its accumulation as one kernel (workload/mla.py); it never ran on those wrappers
                 grad_accumulation_per_tensor=(grad_accumulation.per_tensor(t.optimizer)
                                              or grad_accumulation.copies_into_sharded_buffer(scenario))
                 and scenario.model.mla is None)


def main_grad_bytes(scenario: Scenario) -> int:
    """Width of the main gradient a weight-gradient GEMM accumulates into (``wgrad_output_bytes``), 0 where it writes
    a fresh gradient: the fusion is Megatron's, so it needs ``training.gradient_accumulation_fusion`` on a stack whose
    parameters carry Megatron's ``main_grad`` buffer (``Scenario.megatron_core``: Megatron-Core's and Megatron-LM
    2022's DDP and optimizer). PyTorch FSDP/DDP stacks (torchtitan, llm-foundry, Megatron-LM 2021 with --DDP-impl
    torch) and DeepSpeed's engine have no ``main_grad``: their wgrad GEMM writes ``.grad`` (16-bit); the accumulation
    that follows is counted per stack by ``grad_accumulation.charged_share`` (PyTorch's autograd ``.grad`` add, FSDP2's
    unsharded accumulation under pipelining), ``parallel.fsdp_runtime`` (FSDP's shard-sized add, not charged) and
    ``parallel.deepspeed_pipeline`` (DeepSpeed's own), each once. The width is the gradient
    reduction's: Megatron-Core's DDP allocates main_grad in fp32 with grad_reduce_in_fp32, else in the parameters'
    dtype (``parallelism.grad_reduce_dtype``)."""
    fused = scenario.training.gradient_accumulation_fusion and scenario.megatron_core
    return BYTES_PER_ELEMENT[scenario.parallelism.grad_reduce_dtype] if fused else 0


def recompute_mode(activation_recompute: str, modules: tuple[str, ...]) -> str:
    """The layer recompute ``activation_recompute`` runs, with ``recompute_modules``' core_attn: the attention core's
    recompute, which is Megatron-Core's selective recompute (its default recompute_modules is [core_attn])."""
    return "selective" if activation_recompute == "none" and CORE_ATTN in modules else activation_recompute


def _gemm(name: str, m: int, n: int, k: int, shard: Shard, batch: int = 1, precision: str | None = None,
          output_bytes: float | None = None) -> Op:
    """C (m x n) = A (m x k) B (k x n): reads A and B, writes C (Narayanan et al. 2021 FLOP convention).

    FP8 GEMMs read fp8 operands but write a 16-bit result (Transformer Engine), hence the output's own width;
    ``output_bytes``: HBM bytes per output element where the output is not written once in 16 bits (a weight gradient
    accumulated into the main gradient, ``wgrad_output_bytes``).
    """
    bytes_per_element = BYTES_PER_ELEMENT[precision] if precision else shard.gemm_bytes_per_element
    if output_bytes is None:
        output_bytes = max(bytes_per_element, BYTES_PER_ELEMENT["bf16"])
    hbm = batch * ((m * k + k * n) * bytes_per_element + m * n * output_bytes)
    return Op(name, "gemm", 2.0 * batch * m * n * k, float(hbm), m, n, k, batch, precision,
              block_scaled=precision is None and _block_scaled(shard))


def wgrad_output_bytes(shard: Shard) -> float | None:
    """HBM bytes per weight element of a weight-gradient GEMM's output under gradient-accumulation fusion
    (``Shard.main_grad_bytes`` > 0; None without it: the 16-bit gradient written once, ``_gemm``'s default).

    The GEMM accumulates into the parameter's ``main_grad`` in place, D = C + A B with C = D = main_grad, so its
    epilogue READS and WRITES the main gradient at its width (fp32: 4 + 4 bytes an element) instead of writing a 16-bit
    output once. One rule for every linear Megatron builds (dense, MoE experts, MLA, MTP, the output layer):
    - Megatron's own linears (the output layer; every linear of Megatron-LM 2022): NVIDIA/Megatron-LM
      megatron/core/tensor_parallel/layers.py ``LinearWithGradAccumulationAndAsyncCommunication.backward`` (read at
      000c4ac): with ``ctx.gradient_accumulation_fusion``, ``fused_weight_gradient_mlp_cuda.wgrad_gemm_accum_fp32(
      total_input, grad_output, weight.main_grad)`` for an fp32 main_grad, ``wgrad_gemm_accum_fp16`` for bf16/fp16;
      NVIDIA/apex csrc/megatron/fused_weight_gradient_dense_cuda.cu (27017a4) ``wgrad_gemm_accum_fp32_cuda``:
      cublasGemmEx into the fp32 d_weight with ``alpha = 1.0, beta = 1.0``, on every call.
    - Transformer Engine's layers, which Megatron-Core builds with ``fuse_wgrad_accumulation=
      config.gradient_accumulation_fusion`` (megatron/core/extensions/transformer_engine.py: TELinear,
      TELayerNormColumnParallelLinear, TEGroupedLinear): transformer_engine/pytorch/module/linear.py (TE 2.x)
      ``_Linear.backward``: ``general_gemm(..., out_dtype=main_grad.dtype, accumulate=
      accumulate_wgrad_into_param_main_grad, layout="NT", out=main_grad)``; grouped_linear.py the same per expert
      (``wgrad_list = main_grads``, ``general_grouped_gemm``). TE overwrites instead (beta = 0, main_grad written once)
      for a weight marked ``overwrite_main_grad`` (Megatron-FSDP's: not told apart here, see docs) and when the
      forward was told ``is_first_microbatch=True`` (``accumulate = fuse_wgrad_accumulation and not
      ctx.is_first_microbatch``): Megatron-Core's schedule sets that flag at a step's first microbatch of each model
      chunk (schedules.py forward_step: ``model.set_is_first_microbatch()``), in recent Megatron-Core only with fp8 or
      fp4 (transformer/module.py MegatronModule.set_is_first_microbatch, read at 00c51e1; bf16 runs accumulate on
      every microbatch). Not modelled: one microbatch of the step's M per chunk writes main_grad once instead of
      reading and writing it, at most main_grad_bytes / M per weight element and microbatch on average, and only on a
      GEMM bound by its bytes (docs/calibration/round-17.md, "Round 17: the weight-gradient GEMM's fp32 accumulation").
    Megatron's DDP zeroes main_grad once per step (``zero_grad_buffer``), so accumulating microbatches all read it.

    The bytes are the weights' own, whatever the rows: with few rows (grouped expert GEMMs: 16 local experts of 512
    rows on a TP 4 rank) the wgrad GEMM is bound by them, not by its FLOP (fc1 of Qwen3-235B: 4096 x 3072 x 8 B =
    101 MB against 12.9 GFLOP, 30 us of HBM against 18 us of tensor cores on H100); the dense layers' GEMMs stay
    compute-bound at their token counts (thousands of rows a GEMM)."""
    return 2 * shard.main_grad_bytes if shard.main_grad_bytes else None


def _block_scaled(shard: Shard) -> bool:
    """Whether the run's fp8 GEMMs and quantizes are MXFP8's (fp8_recipe mxfp8; efficiency.yaml gemm.block_*)."""
    return shard.precision == "fp8" and shard.fp8_recipe == "mxfp8"


def _memory(name: str, flop: float, hbm_bytes: float) -> Op:
    return Op(name, "memory", float(flop), float(hbm_bytes))


def cp_ring_ops(ring: list[cp_ring.RingKernel]) -> list[Op]:
    """Context parallelism's ring kernels (``cp_ring``) as ops: one in series a memory-bound kernel with its gap; one
    the other stream's attention hides, a host launch only (``kernels.HOST_ONLY_LAUNCH``)."""
    return [Op(HOST_ONLY_LAUNCH, "memory", 0.0, 0.0) if kernel.hidden else _memory(kernel.name, 0.0, kernel.hbm_bytes)
            for kernel in ring]


def gradient_sum(name: str, parts: int, elements: float, e: int) -> Op:
    """Autograd's sum of the ``parts`` gradients a tensor of ``elements`` receives from its consumers, a kernel of its
    own (``InputBuffer::add``, torch/csrc/autograd/input_buffer.cpp: ``old_var.add_(var)`` or ``old_var + var`` as
    each gradient arrives): each partial read, the sum written."""
    return _memory(f"{name}_grad_sum", (parts - 1) * elements, (parts + 1) * elements * e)


def _quantize_ops(shard: Shard, tensors: list[tuple]) -> list[Op]:
    """The kernels quantizing ``tensors`` (``fp8_recipes.quantize_kernels`` under the shard's recipe), each tagged
    queued where its call's C++ launches it behind the kernel before it (``call_issue.queued_quantizes``)."""
    kernels = fp8_recipes.quantize_kernels(shard.fp8_recipe, shard.fp8_transpose, tensors)
    queued = call_issue.queued_quantizes(shard.fp8_recipe, kernels, tensors)
    return [dataclasses.replace(_memory(*kernel), block_scaled=_block_scaled(shard), queued=tag,
                                no_work=kernel[0] in fp8_recipes.NO_WORK_OPS)
            for kernel, tag in zip(kernels, queued, strict=True)]


@dataclass(frozen=True)
class _Linear:
    """A linear layer of one rank, remembered so dgrad and wgrad can be derived from its forward shape."""

    name: str
    tokens: float
    in_features: int
    out_features: int
    precision: str | None = None
    batch: int = 1  # a grouped GEMM: ``batch`` experts, ``tokens`` each
    main_grad: bool = True  # its wgrad GEMM accumulates into main_grad under the fusion (``wgrad_output_bytes``):
    # Megatron's and Transformer Engine's linears; False: a plain torch GEMM whose .grad a hook adds (the MoE router)
    row_nodes: tuple[float, ...] = (1.0,)  # the tokens' spread (``Op.row_nodes``), on the GEMMs whose rows they are;
    # a weight gradient reduces over them, its time linear in them (``kernels.gemm_efficiency``'s k/(k + k0)), so the
    # time at the mean tokens is already the mean time

    def forward(self, shard: Shard) -> Op:
        return dataclasses.replace(_gemm(self.name, self.tokens, self.out_features, self.in_features, shard,
                                         self.batch, self.precision), row_nodes=self.row_nodes)

    def dgrad(self, shard: Shard) -> Op:
        """dX (tokens x in) = dY (tokens x out) W^T."""
        return self._backward(dataclasses.replace(_gemm(self.name, self.tokens, self.in_features, self.out_features,
                                                        shard, self.batch, self.precision), row_nodes=self.row_nodes),
                              shard)

    def wgrad(self, shard: Shard) -> Op:
        """dW (in x out) = X^T (in x tokens) dY (tokens x out), its output accumulated into the main gradient under
        gradient-accumulation fusion (``wgrad_output_bytes``)."""
        output_bytes = wgrad_output_bytes(shard) if self.main_grad else None
        return self._backward(_gemm(self.name, self.in_features, self.out_features, self.tokens, shard, self.batch,
                                    self.precision, output_bytes), shard)

    def _backward(self, op: Op, shard: Shard) -> Op:
        """A backward GEMM, with the split accumulator where its precision takes one (SPLIT_ACCUMULATOR_PRECISIONS)."""
        split = (self.precision or shard.precision) in SPLIT_ACCUMULATOR_PRECISIONS
        return dataclasses.replace(op, split_accumulator=True) if split else op


def projections(name: str, tokens: int, in_features: int, widths: tuple[int, ...],
                shard: Shard) -> tuple[list[Op], list[Op], list[Op]]:
    """Forward, backward-input and backward-weight kernels of the column-parallel projections of output ``widths``
    that read one input (``PROJECTIONS``): one GEMM over all widths (fused), or one GEMM each and the sum of their
    input gradients (separate: read each partial input gradient, write their sum)."""
    if shard.projections == "fused" or len(widths) == 1:
        linear = _Linear(name, tokens, in_features, sum(widths))
        return [linear.forward(shard)], [linear.dgrad(shard)], [linear.wgrad(shard)]
    linears = [_Linear(name, tokens, in_features, width) for width in widths]
    grad_sum = gradient_sum(name, len(widths), tokens * in_features, shard.activation_bytes_per_element)
    return ([linear.forward(shard) for linear in linears], [*(linear.dgrad(shard) for linear in linears), grad_sum],
            [linear.wgrad(shard) for linear in linears])


def local_kv_hidden(model: TransformerSpec, tp: int) -> int:
    """Key (or value) width on one TP rank; KV heads are replicated when fewer of them than ranks."""
    return math.ceil(model.n_kv_heads / tp) * model.d_head


def _norm_ops(name: str, model: TransformerSpec, shard: Shard, fp8_output: bool = False) -> tuple[Op, Op]:
    """A layernorm/RMSnorm over the (sequence-parallel) tokens: forward and backward kernels; ``fp8_output``: the
    norm writes its output in fp8 (Transformer Engine's LayerNormLinear, fp8_recipes)."""
    elements = shard.tokens / shard.sp_divisor * model.hidden
    per_element = LAYERNORM_FLOP_PER_ELEMENT if model.norm == "layernorm" else RMSNORM_FLOP_PER_ELEMENT
    e = shard.activation_bytes_per_element
    written = BYTES_PER_ELEMENT["fp8"] if fp8_output else e
    forward = _memory(name, per_element * elements, elements * (e + written))         # read x, write y
    backward = _memory(name, BACKWARD_ELEMENTWISE_FLOP_RATIO * per_element * elements,
                       3 * elements * e)                                              # read x, dy; write dx
    return forward, backward


def norm_ops(name: str, model: TransformerSpec, shard: Shard, fp8_output: bool = False) -> tuple[list[Op], list[Op]]:
    """A norm's (forward, backward) kernels: the one fused kernel a phase (``_norm_ops``), or with
    ``training.norm_kernels: eager_fp32`` fms's RMSNorm op by op (``eager_norm_rope.norm_kernels``; its weight
    gradient among them)."""
    if shard.norm_kernels == eager_norm_rope.EAGER:
        rows = shard.tokens / shard.sp_divisor
        return tuple([_memory(f"{name}_{kernel}", flop, size) for kernel, flop, size in phase]
                     for phase in eager_norm_rope.norm_kernels(rows * model.hidden, rows,
                                                               shard.activation_bytes_per_element))
    forward, backward = _norm_ops(name, model, shard, fp8_output)
    return [forward], [backward]


def norm_statistics(model: TransformerSpec) -> int:
    """fp32 statistics a norm keeps per row for its backward: mean and 1/sigma for layernorm, 1/sigma for RMSnorm
    (Transformer Engine's LayerNorm/RMSNorm forward returns mu and rsigma, saved with the input)."""
    return 2 if model.norm == "layernorm" else 1


def qk_norm_ops(model: TransformerSpec, shard: Shard) -> tuple[list[Op], list[Op]]:
    """``qk_layernorm``: Megatron-Core's q_layernorm and k_layernorm (TENorm over each head's head_dim, between
    the QKV projection and RoPE, attention.py get_query_key_value_tensors), one kernel per tensor and phase over
    this rank's heads of all local tokens (the QKV output is split by heads, not by sequence). Forward: read x,
    write y and the fp32 statistics per row; backward: read x, dy and the statistics, write dx. Empty without it.

    Before each norm kernel the forward copies a strided input (``qk_norm_input_copies``): Transformer Engine's
    RMSNorm (a ``te.ops`` operation since TE 2.0) starts with ``input_.contiguous()``, and the key always reaches it
    as a strided view into the fused QKV output, the query only where ``reshape`` could keep it a view."""
    if not model.qk_layernorm:
        return [], []
    per_element = LAYERNORM_FLOP_PER_ELEMENT if model.norm == "layernorm" else RMSNORM_FLOP_PER_ELEMENT
    e, statistics = shard.activation_bytes_per_element, norm_statistics(model) * BYTES_PER_ELEMENT["fp32"]
    copies = qk_norm_input_copies(model, shard.tp)
    forward, backward = [], []
    for name, width in (("q_norm", model.q_hidden // shard.tp), ("k_norm", local_kv_hidden(model, shard.tp))):
        elements = shard.tokens * width
        rows = elements / model.d_head
        if name in copies:   # read the strided view, write it contiguous; its gradient needs no copy back
            forward.append(_memory(f"{name}_input_copy", 0.0, 2 * e * elements))
        forward.append(_memory(name, per_element * elements, 2 * e * elements + statistics * rows))
        backward.append(_memory(name, BACKWARD_ELEMENTWISE_FLOP_RATIO * per_element * elements,
                                3 * e * elements + statistics * rows))
    return forward, backward


def qk_norm_input_copies(model: TransformerSpec, tp: int) -> tuple[str, ...]:
    """Which of ``qk_layernorm``'s two norms ("q_norm", "k_norm") copy their input to a contiguous tensor first,
    per rank.

    Megatron-Core's QKV projection writes one [s, b, ng, (np/ng + 2) hn] tensor per rank (ng key/value groups, np
    query heads, hn = head_dim); ``get_query_key_value_tensors`` splits it along the last dimension (``torch.split``
    or TE's ``SplitAlongDim``: views), reshapes the query to [s, b, np, hn] and calls ``q_layernorm(query)`` and
    ``k_layernorm(key)`` (NVIDIA/Megatron-LM megatron/core/transformer/attention.py). TENorm is TE's RMSNorm, whose
    forward begins ``maybe_dequantize(input_.contiguous(), dtype).view((-1, inner_dim))``
    (NVIDIA/TransformerEngine transformer_engine/pytorch/ops/basic/rmsnorm.py, ``RMSNorm.op_forward``; the module
    ``te.pytorch.RMSNorm`` subclasses that operation). The key, [s, b, ng, hn] with a row stride of (np/ng + 2) hn,
    is never contiguous: always copied. The query's reshape must copy (so no copy in the norm) where it merges
    several groups of several query heads (ng > 1 and np/ng > 1); otherwise (one group on the rank, or one query
    head a group) it stays a strided view and the norm copies it. The reshape's own copy runs with or without
    ``qk_layernorm`` for every grouped-query model and is not charged here (docs/calibration/round-27.md, "Round 27:
    Megatron-Core's own q/k/v layout copies under rope fusion, release by release": open)."""
    if not model.qk_layernorm:
        return ()
    groups = local_kv_hidden(model, tp) // model.d_head
    query_heads_per_group = (model.heads // tp) // groups
    query_is_view = groups == 1 or query_heads_per_group == 1
    return ("q_norm", "k_norm") if query_is_view else ("k_norm",)


def _dropout_add_ops(name: str, model: TransformerSpec, shard: Shard) -> tuple[list[Op], list[Op], list[Op]]:
    """A residual branch point's kernels: the forward (bias-)dropout-residual-add, its backward at the add, and the
    sum of the residual stream's two gradients (``residual_gradient_sum``), which runs after the norm's backward.

    Without dropout (Llama) the forward is a plain residual add (read x and the residual, write y) and its backward
    launches nothing: ``residual + out`` passes dy to both (AddBackward0). With dropout (Megatron-LM's
    fusions/fused_bias_dropout.py: ``out = residual + dropout(x + bias)``) the forward also writes the mask and the
    backward multiplies dy by it (dy and the mask read, dx written); the residual's gradient is dy itself either way.
    None of the three under flash-attention's DropoutAddLayerNorm (``training.dropout_add_norm: fused``): the norm
    kernels run them (``dropout_add_norm_ops``).
    """
    if shard.dropout_add_norm == "fused":
        return [], [], []
    elements = shard.tokens / shard.sp_divisor * model.hidden
    e = shard.activation_bytes_per_element
    grad_sum = residual_gradient_sum(name, shard, elements)
    if not model.dropout:
        return [_memory(name, elements, 3 * e * elements)], [], grad_sum
    # forward reads x and the residual, writes y and the mask; backward reads dy and the mask, writes dx
    forward = _memory(name, DROPOUT_ADD_FLOP_PER_ELEMENT * elements,
                      elements * (3 * e + MASK_BYTES_PER_ELEMENT))
    backward = _memory(name, BACKWARD_ELEMENTWISE_FLOP_RATIO * DROPOUT_ADD_FLOP_PER_ELEMENT * elements,
                       elements * (2 * e + MASK_BYTES_PER_ELEMENT))
    return [forward], [backward], grad_sum


def residual_gradient_sum(name: str, shard: Shard, elements: float) -> list[Op]:
    """The sum of the two gradients of a residual branch point (a layer's input, and the first residual add's output):
    the tensor feeds both the norm and the residual add, so autograd adds the norm branch's input gradient to the
    residual path's (``gradient_sum``: read two, write one), dropout or not; twice a layer.

    Source: Megatron-Core ``TransformerLayer`` (``residual = hidden_states``, then ``input_layernorm`` or TE's
    LayerNormLinear, and ``bias_dropout_add(..., residual, ...)``); Megatron-LM and Megatron-DeepSpeed's
    ``ParallelTransformerLayer.forward`` the same; Transformer Engine's norm backward writes a fresh dx
    (``layernorm_bwd``), accumulating into nothing. Under ``training.dropout_add_norm: fused`` the norm kernel adds
    it (``dropout_add_norm_ops``)."""
    return [gradient_sum(name, 2, elements, shard.activation_bytes_per_element)]


def dropout_add_norm_ops(name: str, model: TransformerSpec, shard: Shard) -> tuple[Op, Op]:
    """flash-attention's DropoutAddLayerNorm (``training.dropout_add_norm: fused``; flash_attn/ops/layer_norm.py
    ``dropout_add_layer_norm`` over csrc/layer_norm): the branch's dropout, the residual add and the norm after them
    in one kernel each way, so a layer runs two of these and no residual kernel (``_dropout_add_ops``).

    Forward (``ln_fwd_kernel``): read the branch output x0 and the residual, write their sum x (the next residual,
    saved for the backward), the 1-byte mask and the normalised z. Backward (``ln_bwd_kernel``, prenorm): read dz, the
    residual's incoming gradient dx, x and the mask; write the residual's gradient (the norm's input gradient plus dx:
    the sum autograd runs elsewhere, ``residual_gradient_sum``) and the branch's (times mask and scale). The residual,
    x and their gradients in the residual dtype (``rtype``, fp32 under ``residual_in_fp32``: ln_api.cpp
    ``dropout_add_ln_fwd``/``_bwd``), the rest 16-bit. Pairing: the attention's residual add runs in the MLP's norm,
    the MLP's in the next layer's attention norm (charged to this layer's: the same count and bytes a layer). The
    small finalize kernel summing the per-block dgamma/dbeta partials is not charged, as for every norm here."""
    elements = shard.tokens / shard.sp_divisor * model.hidden
    e = shard.activation_bytes_per_element
    r = BYTES_PER_ELEMENT["fp32"] if shard.residual_in_fp32 else e
    mask = MASK_BYTES_PER_ELEMENT if model.dropout else 0
    flop = ((LAYERNORM_FLOP_PER_ELEMENT if model.norm == "layernorm" else RMSNORM_FLOP_PER_ELEMENT)
            + (DROPOUT_ADD_FLOP_PER_ELEMENT if model.dropout else 1)) * elements
    forward = _memory(name, flop, elements * (e + r + r + mask + e))            # x0, residual; x, mask, z
    backward = _memory(name, BACKWARD_ELEMENTWISE_FLOP_RATIO * flop,
                       elements * (e + r + r + mask + r + e))                     # dz, dx, x, mask; dresidual, dx0
    return forward, backward


def score_output_bytes(model: TransformerSpec, shard: Shard) -> float | None:
    """HBM bytes per score element of the output of naive attention's Q K^T GEMM: None (``_gemm``'s default, the
    scores written once) but with ALiBi, where the GEMM also reads the bias already copied into its output.

    Megatron-DeepSpeed as BLOOM ran it (bigscience-workshop/Megatron-DeepSpeed megatron/model/transformer.py,
    ``ParallelAttention.forward``, stored at 4989bcde): ``matmul_result = alibi[:b * np, :, :sk]`` (a [b * np, 1, sk]
    view of the bias), then ``torch.baddbmm(matmul_result, q, k^T, beta=0.0 if alibi is None else 1.0,
    alpha=1 / norm_factor)``; without ALiBi ``matmul_result`` is ``torch.empty`` and beta 0. BLOOM trained (March-July
    2022) after bigscience-workshop/Megatron-DeepSpeed PR 222 "Fix alibi" (merged 2022-01-05), which keeps the bias
    slice as ``matmul_result`` and sets beta = 1 / layer_number with --apply-query-key-layer-scaling, else 1.0: beta
    is non-zero either way, so the copy and the read below stand (the other stored version, 06dc2d7f, passes beta=0.0
    always: ALiBi built but ignored, by its form from before these fixes). PyTorch 1.10-1.11
    (aten/src/ATen/native/cuda/Blas.cpp): ``baddbmm_cuda`` expands the bias to [b * np, sq, sk] (``expand_size``), and
    ``baddbmm_out_cuda_impl`` does ``result.resize_as_(self); if (beta != 0) result.copy_(self)`` before
    ``at::cuda::blas::bgemm(..., beta, result, ...)``: a copy kernel writing the whole score tensor
    (``alibi_bias_ops``) and a GEMM whose epilogue reads C = the bias and writes D (2 x the element's bytes)."""
    if model.position != "alibi":
        return None
    return 2.0 * shard.activation_bytes_per_element


def alibi_bias_ops(model: TransformerSpec, shard: Shard, batch: int, s_q: int, s_kv: int) -> list[Op]:
    """ALiBi's bias copied into naive attention's score tensor before the Q K^T GEMM (``score_output_bytes``):
    reads the [batch, 1, s_kv] bias (stride 0 along the queries) and writes batch x s_q x s_kv elements; nothing
    without ALiBi. Its backward costs nothing more: the bias is a buffer without a gradient, and baddbmm's gradients
    for q and k are bmm's as with beta 0. A plain copy kernel (TensorIterator's), timed at the elementwise kernels' HBM
    fraction, not at the fraction measured for unfused attention's GEMMs, softmax and dropout (efficiency.yaml
    attention.naive), which no copy was part of."""
    if model.position != "alibi":
        return []
    e = shard.activation_bytes_per_element
    return [_memory("alibi_bias_copy", 0.0, (batch * s_q * s_kv + batch * s_kv) * e)]


def attention_core(model: TransformerSpec, shard: Shard) -> tuple[list[Op], list[Op]]:
    """Forward and backward kernels of softmax(Q K^T / sqrt(d)) V on one rank.

    Per rank: heads/tp heads, local queries s/cp against all s keys. Forward FLOP 2*b*s_q*s*h_local for the
    scores plus the same for the context (Narayanan et al. 2021, causal not halved); backward twice that.
    """
    b, d = shard.micro_batch, model.d_head
    heads = model.heads // shard.tp
    s_q, s_kv = shard.seq_len // shard.cp, shard.seq_len
    kv_local = local_kv_hidden(model, shard.tp)
    h_local = heads * d
    e = shard.activation_bytes_per_element
    score_flop = 2.0 * b * s_q * s_kv * h_local
    if shard.attention in FLASH_KERNELS:
        # Dao et al. 2022 / 2023: Q, K, V are read and O written once; the s^2 scores never reach HBM.
        q_o = b * s_q * h_local * e
        k_v = b * s_kv * kv_local * e
        lse = b * heads * s_q * LSE_BYTES_PER_ELEMENT
        # with context parallelism the kernel is cp kernels of a ring, one a step (kernels.ring_key_length)
        forward = Op("attention", "attention", 2 * score_flop, 2 * q_o + 2 * k_v + lse,
                     s_q, s_kv, d, b * heads, kernel=shard.attention, ring_steps=shard.cp,
                     cudnn_release=shard.cudnn_release)
        # backward reads Q, K, V, O, dO, LSE and writes dQ, dK, dV
        backward = Op("attention_backward", "attention", 4 * score_flop, 4 * q_o + 4 * k_v + lse,
                      s_q, s_kv, d, b * heads, kernel=shard.attention, ring_steps=shard.cp,
                     cudnn_release=shard.cudnn_release)
        return [forward], [backward]
    # Naive attention materialises the (b, heads, s_q, s_kv) score matrix in HBM (Korthikanti et al. 2022,
    # 4.1).
    batch = b * heads
    scores = batch * s_q * s_kv
    dropout = [_memory("attention_dropout", DROPOUT_ADD_FLOP_PER_ELEMENT * scores,
                       scores * (2 * e + MASK_BYTES_PER_ELEMENT))] if model.dropout else []
    dropout_bwd = [_memory("attention_dropout", BACKWARD_ELEMENTWISE_FLOP_RATIO * DROPOUT_ADD_FLOP_PER_ELEMENT
                           * scores, scores * (2 * e + MASK_BYTES_PER_ELEMENT))] if model.dropout else []
    forward = [
        _gemm("attention_scores", s_q, s_kv, d, shard, batch,
              output_bytes=score_output_bytes(model, shard)),
        _memory("softmax", SOFTMAX_FLOP_PER_ELEMENT * scores, 2 * scores * e),
        *dropout,
        _gemm("attention_context", s_q, d, s_kv, shard, batch),
    ]
    backward = [
        _gemm("attention_context_dv", s_kv, d, s_q, shard, batch),     # dV = P^T dO
        _gemm("attention_context_dp", s_q, s_kv, d, shard, batch),     # dP = dO V^T
        *dropout_bwd,
        _memory("softmax", BACKWARD_ELEMENTWISE_FLOP_RATIO * SOFTMAX_FLOP_PER_ELEMENT * scores,
                3 * scores * e),
        _gemm("attention_scores_dq", s_q, d, s_kv, shard, batch),      # dQ = dS K
        _gemm("attention_scores_dk", s_kv, d, s_q, shard, batch),      # dK = dS^T Q
    ]
    assert sum(op.flop for op in forward if op.kind == "gemm") == 2 * score_flop
    # the bias copy is a plain copy kernel (TensorIterator), outside the measured kernels the naive HBM fraction
    # stands for: the elementwise kernels' fraction (``alibi_bias_ops``)
    bias = alibi_bias_ops(model, shard, batch, s_q, s_kv)
    return ([*bias, *(dataclasses.replace(op, kernel="naive") for op in forward)],
            [dataclasses.replace(op, kernel="naive") for op in backward])


@dataclass(frozen=True)
class MlpBlock:
    """The MLP of a layer between its norm and its residual add, per phase, and the elements Transformer Engine
    casts to fp8 for it (added to the layer's one fused cast kernel): the dense MLP (``mlp_block``) or an MoE
    layer's router, permutations and experts (``workload.moe``)."""

    forward: list[Op]
    backward_input: list[Op]
    backward_weight: list[Op]
    cast_forward_elements: float = 0.0
    cast_backward_elements: float = 0.0
    # the same elements per quantized tensor, (elements, written by a norm, all-gathered after the cast)
    # (fp8_recipes.quantize_kernels); empty: one tensor not written by a norm
    cast_forward_tensors: tuple[tuple[float, bool, bool], ...] = ()
    cast_backward_tensors: tuple[tuple[float, bool, bool], ...] = ()
    # the norm before it is a module of its own (Megatron-Core's TENorm pre_mlp_layernorm: an MoE layer's router and
    # shared experts read it), not fused into the first GEMM (TE LayerNormMLP, whose norm layernorm recompute skips)
    standalone_norm: bool = False
    # what recompute_modules: [moe_act] re-runs before the backward (the routed experts' activation, workload.moe)
    act_recompute: tuple[Op, ...] = ()
    # an MoE layer's block (workload.moe: recompute_modules moe re-runs it, mlp does not) and the forward of its
    # shared experts (what recompute_modules: [shared_experts] re-runs)
    moe_layer: bool = False
    shared_forward: tuple[Op, ...] = ()


def mlp_block(model: TransformerSpec, shard: Shard, ffn: int | None = None, name: str = "mlp") -> MlpBlock:
    """A dense MLP of inner size ``ffn`` (default the model's) over the layer's tokens, its ffn split by tp
    (Megatron-LM: up column-parallel, down row-parallel; gate and up fused in one GEMM).

    ``mlp_activation: epilogue`` (flash-attention's FusedMLP, flash_attn/ops/fused_dense.py ``FusedMLPFunc`` with its
    default heuristic on CUDA >= 11.8 short of Hopper): fc1 runs cuBLASLt's GELU_AUX_BIAS epilogue
    (``linear_act_forward``), writing the pre-activation (saved for the backward) beside the GELU output, and the
    backward's fc2 dgrad runs DGELU_BGRAD (``bias_act_linear_dgrad_bgrad``), reading the pre-activation and writing
    the GELU's input gradient and fc1's bias gradient (csrc/fused_dense_lib/fused_dense_cuda.cu): no activation
    kernel either way; each GEMM moves the pre-activation's 16-bit bytes once more. The epilogue's GELU arithmetic
    is not added to the GEMM's tensor-core FLOP."""
    h, tokens, e = model.hidden, shard.tokens, shard.activation_bytes_per_element
    ffn_local = (ffn or model.ffn) // shard.tp
    up_width = ffn_local * (2 if model.mlp == "swiglu" else 1)
    up_forward, up_dgrad, up_wgrad = projections(
        f"{name}_up", tokens, h, (ffn_local, ffn_local) if model.mlp == "swiglu" else (ffn_local,), shard)
    down = _Linear(f"{name}_down", tokens, ffn_local, h)
    act, act_bwd = activation_ops(f"{name}_act", model, tokens * ffn_local, e)
    if layernorm_mlp_fp8(shard):   # TE's LayerNormMLP: the GELU writes fc2's fp8 input (fp8_recipes)
        act = dataclasses.replace(act, hbm_bytes=act.hbm_bytes - (e - BYTES_PER_ELEMENT["fp8"]) * tokens * ffn_local)
    act_forward, down_dgrad, act_backward = [act], down.dgrad(shard), [act_bwd]
    if shard.mlp_activation == EAGER_SWIGLU:   # silu and the multiply as PyTorch eager kernels
        act_forward, act_backward = eager_swiglu_ops(f"{name}_act", tokens * ffn_local, e)
    if shard.mlp_activation == "epilogue":   # GELU inside the GEMMs, the pre-activation their aux tensor
        (up,), aux = up_forward, tokens * ffn_local * e
        up_forward = [dataclasses.replace(up, hbm_bytes=up.hbm_bytes + aux)]            # fc1 writes it too
        down_dgrad = dataclasses.replace(down_dgrad, hbm_bytes=down_dgrad.hbm_bytes + aux)   # fc2's dgrad reads it
        act_forward, act_backward = [], []
    sp_tokens = tokens / shard.sp_divisor
    return MlpBlock([*up_forward, *act_forward, down.forward(shard)], [down_dgrad, *act_backward, *up_dgrad],
                    [down.wgrad(shard), *up_wgrad],
                    sp_tokens * h + tokens * ffn_local, sp_tokens * h + tokens * up_width,
                    # fc1's input (the norm's output) and fc2's output gradient: on the sequence-parallel shard,
                    # all-gathered after the cast
                    ((sp_tokens * h, True, shard.sp_divisor > 1), (tokens * ffn_local, False, False)),
                    ((sp_tokens * h, False, shard.sp_divisor > 1), (tokens * up_width, False, False)))


def layernorm_mlp_fp8(shard: Shard) -> bool:
    """Whether the dense MLP is Transformer Engine 1.x's LayerNormMLP under delayed scaling on Hopper
    (``training.mlp_activation: layernorm_mlp``, fp8): its GELU fused with the casts (fp8_recipes
    ``layernorm_mlp_cast_saving``); in any other precision or recipe it runs as ``separate``."""
    return (shard.mlp_activation == fp8_recipes.LAYERNORM_MLP_ACTIVATION and shard.precision == "fp8"
            and shard.fp8_recipe == "delayed" and shard.fp8_transpose)


# training.mlp_activation: eager, a SwiGLU run op by op without torch.compile: fms's GatedLinearUnit
# (fms/modules/feedforward.py, ``self.a(self.wg(x)) * self.w1(x)``, ``a`` nn.SiLU) and torchtitan's FeedForward
# (``F.silu(self.w1(x)) * self.w3(x)``). Autograd (tools/autograd/derivatives.yaml: ``mul.Tensor`` grad * other for
# each input; ``silu`` silu_backward(grad, self) outside create_graph) keeps gate (silu's input), the silu output and
# up (the multiply's inputs): one ffn-wide tensor more than the fused kernel, which keeps gate and up.
EAGER_SWIGLU = "eager"
EAGER_SWIGLU_EXTRA_STORED_TENSORS = 1
# (name suffix, 16-bit elements read and written per ffn-wide element, FLOP per element)
EAGER_SWIGLU_FORWARD = (("silu", 2, 4), ("mul", 3, 1))                  # silu: gate in, s out; s * up
EAGER_SWIGLU_BACKWARD = (("mul_grad_s", 3, 1), ("mul_grad_up", 3, 1),   # dy * up; dy * s
                         ("silu_grad", 3, 4))                            # silu_backward(ds, gate)


def eager_swiglu_ops(name: str, act_out: float, e: int) -> tuple[list[Op], list[Op]]:
    """(forward, backward) kernels of a SwiGLU run as PyTorch eager ops over ``act_out`` ffn-wide elements
    (``EAGER_SWIGLU_*``): 10 B an element forward in 2 kernels and 18 backward in 3 in bf16, where the fused kernel
    moves 6 and 10 (``activation_ops``)."""
    return tuple([_memory(f"{name}_{suffix}", flop * act_out, elements * act_out * e)
                  for suffix, elements, flop in table] for table in (EAGER_SWIGLU_FORWARD, EAGER_SWIGLU_BACKWARD))


def activation_ops(name: str, model: TransformerSpec, act_out: float, e: int) -> tuple[Op, Op]:
    """The MLP activation over ``act_out`` output elements: forward and backward kernels.

    Squared ReLU is one fused elementwise kernel each way, as GELU: Megatron-LM's ``squared_relu``
    (``torch.pow(F.relu(x), 2)``, megatron/training/activations.py) and NeMo's (nemo/collections/llm/fn/activation.py)
    are compiled by ``jit_fuser`` / torch.jit.script, and Transformer Engine's srelu/dsrelu kernels read and write the
    same tensors: forward reads x and writes y, backward reads x and dy and writes dx = 2*relu(x)*dy.
    """
    if model.mlp == "swiglu":
        # forward reads gate and up, writes one; backward reads gate, up and dy, writes two
        act = _memory(name, SWIGLU_FLOP_PER_ELEMENT * act_out, 3 * act_out * e)
        act_bwd = _memory(name, BACKWARD_ELEMENTWISE_FLOP_RATIO * SWIGLU_FLOP_PER_ELEMENT * act_out,
                          5 * act_out * e)
        return act, act_bwd
    # GELU and squared ReLU: forward reads x, writes y; backward reads x and dy, writes dx
    per_element = SQUARED_RELU_FLOP_PER_ELEMENT if model.mlp == "squared_relu" else GELU_FLOP_PER_ELEMENT
    act = _memory(name, per_element * act_out, 2 * act_out * e)
    act_bwd = _memory(name, BACKWARD_ELEMENTWISE_FLOP_RATIO * per_element * act_out, 3 * act_out * e)
    return act, act_bwd


def layer_ops(model: TransformerSpec, shard: Shard, mlp: MlpBlock | None = None) -> dict[str, list[Op]]:
    """Kernels of one transformer layer on one rank for one microbatch, keyed by phase (``PHASES``).

    ``mlp`` is the layer's MLP block (default: the dense MLP, ``mlp_block``; an MoE layer passes its own).
    ``recompute`` holds what is re-run before the backward: nothing, the attention core ("selective",
    Korthikanti et al. 2022 section 5) or the whole forward ("full").
    """
    h, tokens, tp = model.hidden, shard.tokens, shard.tp
    q_local = model.q_hidden // tp
    kv_local = local_kv_hidden(model, tp)
    e = shard.activation_bytes_per_element
    mlp = mlp or mlp_block(model, shard)

    qkv_forward, qkv_dgrad, qkv_wgrad = projections("qkv", tokens, h, (q_local, kv_local, kv_local), shard)
    attn_out = _Linear("attn_out", tokens, q_local, h)

    # delayed scaling on Hopper in Megatron-Core's dense TE layer: the casts to the letter (fp8_recipes); the norms
    # feeding QKV and fc1 are TE LayerNormLinear's, writing fp8
    te_layer = (shard.precision == "fp8" and shard.fp8_recipe == "delayed" and shard.fp8_transpose
                and bool(mlp.cast_forward_tensors))
    if shard.dropout_add_norm == "fused":   # the residual kernels inside the norms (dropout_add_norm_ops)
        (attn_norm, attn_norm_bwd), (mlp_norm, mlp_norm_bwd) = (([forward], [backward]) for forward, backward in
                                                                (dropout_add_norm_ops(name, model, shard)
                                                                 for name in ("attn_norm", "mlp_norm")))
    else:
        attn_norm, attn_norm_bwd = norm_ops("attn_norm", model, shard, te_layer)
        mlp_norm, mlp_norm_bwd = norm_ops("mlp_norm", model, shard, te_layer)
    attn_residual, attn_residual_bwd, attn_residual_sum = _dropout_add_ops("attn_residual", model, shard)
    mlp_residual, mlp_residual_bwd, mlp_residual_sum = _dropout_add_ops("mlp_residual", model, shard)
    core_forward, core_backward = attention_core(model, shard)
    if shard.qkv_layout:   # inside TEDotProductAttention: recomputed with the core (te_flash_layout)
        qkv_format, rope_output = shard.qkv_layout
        before, after, before_bwd, after_bwd = ([_memory(*kernel) for kernel in kernels] for kernels in
                                                te_flash_layout.kernels(model, shard.micro_batch,
                                                                        shard.seq_len // shard.cp, model.heads // tp,
                                                                        kv_local // model.d_head, e, qkv_format,
                                                                        rope_output))
        core_forward, core_backward = [*before, *core_forward, *after], [*before_bwd, *core_backward, *after_bwd]
    if shard.cp_ring_te and shard.cp > 1 and shard.attention in FLASH_KERNELS:   # TE's p2p ring (cp_ring)
        ring = (shard.cp, shard.cp_ring_te, shard.micro_batch, shard.seq_len // shard.cp, q_local, kv_local,
                model.heads // tp, e, shard.cp_ring_blackwell, shard.cp_ring_divisions)
        core_forward = [*core_forward, *cp_ring_ops(cp_ring.forward(*ring))]
        core_backward = [*core_backward, *cp_ring_ops(cp_ring.backward(*ring))]
    qk_norm, qk_norm_bwd = qk_norm_ops(model, shard)
    # the split's backward concatenation: after the q/k gradients' last kernel, before QKV's dgrad; backward only
    split_bwd = [_memory(*te_flash_layout.split_concat(tokens, q_local, kv_local, e))] if shard.qkv_split_copy else []

    rope: list[Op] = []
    rope_bwd: list[Op] = []
    if model.position == "rope" and shard.eager_rope:   # q and k rotated by eager kernels (eager_rope)
        freqs = shard.seq_len // shard.cp * model.d_head
        rope, rope_bwd = ([_memory(*kernel) for kernel in phase]
                          for phase in eager_rope.kernels([tokens * q_local, tokens * kv_local], freqs, e,
                                                         shard.eager_rope))
    elif model.position == "rope" and shard.rope_kernels in eager_norm_rope.ROPE_TABLES:   # fms's, torchtitan's
        rope, rope_bwd = ([_memory(*kernel) for kernel in phase]
                          for phase in eager_norm_rope.rope_kernels([tokens * q_local, tokens * kv_local],
                                                                    tokens * model.d_head, e, shard.rope_kernels))
    elif model.position == "rope":
        elements = tokens * (q_local + kv_local)
        rope = [_memory("rope", ROPE_FLOP_PER_ELEMENT * elements, 2 * elements * e)]
        rope_bwd = [_memory("rope", ROPE_FLOP_PER_ELEMENT * elements, 2 * elements * e)]

    # GQA's keys and values copied to the query heads after the RoPE, summed back after the core's backward
    expand, expand_bwd = ([_memory(*kernel) for kernel in phase] for phase in kv_expansion.kernels(
        tokens, model.heads // tp, kv_local // model.d_head, model.d_head, e)) if shard.kv_expansion else ([], [])

    casts: list[Op] = []
    casts_bwd: list[Op] = []
    if shard.precision == "fp8":
        # Transformer Engine casts every GEMM input to fp8 (and, fused, its transpose for the other GEMM of the
        # backward): the sequence-parallel h-wide inputs before their all-gather, the TP-split ones locally;
        # backward the same for each output gradient (on Blackwell without the transpose: fp8_recipes). Weights are
        # quantized once a step in each chunk's first-microbatch forward (parallel/plan.py chunk_weight_quantize_s)
        # and their cached copies held in memory (fp8_params.weight_workspace_bytes_per_param): not per microbatch.
        sp_tokens = tokens / shard.sp_divisor
        forward_elements = sp_tokens * h + tokens * q_local + mlp.cast_forward_elements
        backward_elements = sp_tokens * h + tokens * (q_local + 2 * kv_local) + mlp.cast_backward_elements
        torchao = shard.fp8_recipe in torchao_float8.RECIPES
        per_element = (torchao_float8.cast_bytes_per_element(shard.fp8_recipe) if torchao
                       else fp8_recipes.cast_bytes_per_element(shard.fp8_recipe, shard.fp8_transpose))
        forward_bytes, backward_bytes = per_element * forward_elements, per_element * backward_elements
        if te_layer:
            forward_bytes, backward_bytes = fp8_recipes.megatron_te_cast_bytes(
                sp_tokens * h, tokens * h, forward_elements - 2 * sp_tokens * h,
                backward_elements - 2 * sp_tokens * h, model.linear_biases)
            if layernorm_mlp_fp8(shard):   # TE's LayerNormMLP runs fewer casts (fp8_recipes)
                saved_forward, saved_backward = fp8_recipes.layernorm_mlp_cast_saving(
                    tokens * (model.ffn // tp), shard.sp_divisor > 1)
                forward_bytes, backward_bytes = forward_bytes - saved_forward, backward_bytes - saved_backward
        if torchao:  # torchao casts every weight on every call (workload.torchao_float8)
            weights = sum(op.k * op.n * op.batch for op in (*qkv_forward, attn_out.forward(shard),
                                                            *mlp.forward) if op.kind == "gemm")
            weight_forward, weight_backward = torchao_float8.weight_cast_bytes(weights, shard.fp8_gathered_weights)
            forward_bytes, backward_bytes = forward_bytes + weight_forward, backward_bytes + weight_backward
        casts, casts_bwd = ([dataclasses.replace(_memory("fp8_cast", n, size), block_scaled=_block_scaled(shard))]
                            for n, size in ((forward_elements, forward_bytes), (backward_elements, backward_bytes)))
        if shard.fp8_recipe in fp8_recipes.PER_TENSOR_RECIPES:   # its kernels per tensor (fp8_recipes)
            # QKV's input and the projection's output gradient are all-gathered after their casts with sequence
            # parallelism; MLA quantizes its own tensors (workload.mla_casts: the h-wide shard twice for its
            # duplicated down-projections, its norm-fed latents gathered, five output gradients)
            gathered = shard.sp_divisor > 1
            attention_forward, attention_backward = (
                mla_casts.tensors(model, shard) if model.mla is not None else
                ([(sp_tokens * h, True, gathered), (tokens * q_local, False, False)],
                 [(sp_tokens * h, False, gathered), (tokens * (q_local + 2 * kv_local), False, False)]))
            forward_tensors = [*attention_forward,
                               *(mlp.cast_forward_tensors or [(mlp.cast_forward_elements, False, False)])]
            backward_tensors = [*attention_backward,
                                *(mlp.cast_backward_tensors or [(mlp.cast_backward_elements, False, False)])]
            casts, casts_bwd = (_quantize_ops(shard, tensors) for tensors in (forward_tensors, backward_tensors))
            # the gathered tensors' transposes for the weight gradients, in the backward (fp8_recipes)
            casts_bwd += [_memory(*kernel) for kernel in fp8_recipes.gathered_transposes(
                shard.fp8_recipe, shard.fp8_transpose, [*forward_tensors, *backward_tensors], shard.sp_divisor)]

    qkv_bias = [_memory(*kernel) for kernel in eager_backward.forward_kernels(   # Megatron-LM 2020-22's QKV bias
        model, shard.qkv_bias_add, tokens,                                       # add (eager_backward)
        eager_backward.linear_output_widths(model, tp, q_local, kv_local), e)]
    forward = [*attn_norm, *qkv_forward, *qkv_bias, *qk_norm, *rope, *expand, *core_forward,
               attn_out.forward(shard),
               *attn_residual, *mlp_norm, *mlp.forward, *mlp_residual, *casts]
    backward_input = [*mlp_residual_bwd, *mlp.backward_input, *mlp_norm_bwd, *mlp_residual_sum,
                      *attn_residual_bwd, attn_out.dgrad(shard), *core_backward, *expand_bwd, *rope_bwd, *qk_norm_bwd,
                      *split_bwd, *qkv_dgrad,
                      *attn_norm_bwd, *attn_residual_sum, *casts_bwd]
    backward_input += [_memory(*kernel) for kernel in eager_backward.backward_kernels(
        model, shard.layer_backward, shard.attention, tokens, tokens / shard.sp_divisor, tp, q_local, kv_local, e,
        shard.megatron_biases, norm_weights=shard.norm_kernels != eager_norm_rope.EAGER)]
    backward_weight = [*mlp.backward_weight, attn_out.wgrad(shard), *qkv_wgrad]
    if shard.grad_accumulation_bytes and shard.grad_accumulation_per_tensor:   # one kernel per parameter tensor
        backward_weight += [_memory(grad_accumulation.OP_NAME, params, shard.grad_accumulation_bytes * params)
                            for params in grad_accumulation.tensor_params(model, backward_weight)]
    elif shard.grad_accumulation_bytes:   # the weight gradients added to the main gradient by a kernel of their own
        params = grad_accumulation.accumulated_params(backward_weight)
        backward_weight.append(_memory(grad_accumulation.OP_NAME, params, shard.grad_accumulation_bytes * params))
    if shard.autocast_fp32_params:   # each linear tensor cast to 16 bits forward, its gradient back to fp32
        linear_tensors = grad_accumulation.linear_tensor_params(model, backward_weight)
        forward += [_memory(*kernel) for kernel in autocast_params.cast_kernels(autocast_params.FORWARD_OP,
                                                                                 linear_tensors)]
        backward_weight += [_memory(*kernel) for kernel in autocast_params.cast_kernels(autocast_params.BACKWARD_OP,
                                                                                         linear_tensors)]
    recompute = {"none": [], "selective": list(core_forward), "full": list(forward)}[shard.recompute]
    if shard.recompute_modules and shard.recompute != "full":   # a full recompute re-runs them already
        recompute += module_recompute(model, shard, mlp, attn_norm, mlp_norm)
    return {"forward": forward, "backward_input": backward_input, "backward_weight": backward_weight,
            "recompute": recompute}


def module_recompute(model: TransformerSpec, shard: Shard, mlp: MlpBlock, attn_norm: list[Op],
                     mlp_norm: list[Op]) -> list[Op]:
    """The forward kernels ``shard.recompute_modules`` re-run before a layer's backward (Megatron-Core selective
    recompute; output-discarding checkpoints, CheckpointWithoutOutput: the module's input is kept, its output freed
    once the next module has read it and rebuilt before that module's backward).

    layernorm: the norms that are modules of their own, the attention's input norm of an MLA layer (TENorm before the
    down-projections) and the pre-MLP norm of an MoE layer (``MlpBlock.standalone_norm``); a norm fused into the GEMM
    after it (TE LayerNormLinear / LayerNormMLP, Megatron-Core's IdentityOp layernorm) is not recomputed.
    moe_act: the routed experts' activation (``MlpBlock.act_recompute``). The q/k norms of ``qk_layernorm`` are not
    among them: Megatron-Core's layernorm recompute checkpoints TransformerLayer's input_layernorm and
    pre_mlp_layernorm only (transformer_layer.py recompute_input_layernorm / recompute_pre_mlp_layernorm), and
    SelfAttention calls q_layernorm / k_layernorm directly, outside any checkpoint.

    The whole-module checkpoints (``MLP``, ``MOE``, ``SHARED_EXPERTS``) re-run their module's forward once: mlp a
    dense layer's MLP with the norm Transformer Engine fuses into its fc1 (LayerNormMLP; the pre-MLP norm is
    IdentityOp), nothing in an MoE layer; moe an MoE layer's whole block, router, permutations, host syncs, shared
    and routed experts (MoELayer.forward's custom_forward, dispatch and combine included: their all-to-alls are
    ``parallel.plan.expert_parallel_per_layer``'s); shared_experts the shared experts' MLP. The modules nest as in
    Megatron-Core, each checkpoint re-running its own forward: moe with moe_act or shared_experts re-runs the
    activation or the shared experts once more inside the recomputed layer, so the counts add."""
    ops: list[Op] = []
    if LAYERNORM in shard.recompute_modules:
        ops += [op for norm, own in ((attn_norm, model.mla is not None), (mlp_norm, mlp.standalone_norm)) if own
                for op in norm]
    if MLP in shard.recompute_modules and not mlp.moe_layer:
        ops += [*([] if mlp.standalone_norm else mlp_norm), *mlp.forward]
    if MOE in shard.recompute_modules and mlp.moe_layer:
        ops += mlp.forward
    if SHARED_EXPERTS in shard.recompute_modules:
        ops += mlp.shared_forward
    if MOE_ACT in shard.recompute_modules:
        ops += list(mlp.act_recompute)
    return ops


def _empty_phases() -> dict[str, list[Op]]:
    return {phase: [] for phase in PHASES}


def embedding_ops(model: TransformerSpec, shard: Shard) -> dict[str, list[Op]]:
    """Token (and learned position) embedding on the first pipeline stage.

    Vocab-parallel (Shoeybi et al. 2019): each TP rank gathers the rows of its vocabulary slice and writes a
    full (partial-sum) output; the position add runs on the sequence-parallel shard. No matmul FLOP; the
    weight gradient is a scatter-add into the table's rows the tokens use, into a table gradient PyTorch first
    fills with zeros whole and the stack then adds to its main gradient whole (``embedding_grad``). Nothing precedes
    the embedding, so there is no input gradient, and Megatron's full recompute checkpoints transformer layers only,
    so nothing is recomputed here.
    """
    h, tokens = model.hidden, shard.tokens
    e = shard.activation_bytes_per_element
    local = tokens / shard.sp_divisor * h
    ops = _empty_phases()
    ops["forward"].append(_memory("embedding", 0.0, (tokens * h / shard.tp + tokens * h) * e))
    table = embedding_grad.table_params(model.vocab, h, shard.tp)
    grad_bytes = embedding_grad.grad_bytes_per_element(e, shard.autocast_fp32_params)
    dense = [_memory(*kernel) for kernel in embedding_grad.kernels(table, grad_bytes,
                                                                   shard.embedding_grad_accumulation_bytes,
                                                                   shard.embedding_tied_sum)]
    ops["backward_weight"] += [dense[0], _memory("embedding", float(tokens * h / shard.tp),
                                                 (tokens * h + 2 * tokens * h / shard.tp) * e), *dense[1:]]
    if model.position == "learned":
        ops["forward"].append(_memory("position_embedding", float(local), 3 * local * e))
        ops["backward_weight"].append(_memory("position_embedding", float(local), 3 * local * e))
    return ops


def output_ops(model: TransformerSpec, shard: Shard) -> dict[str, list[Op]]:
    """Final norm, logits projection (vocab-parallel, Shoeybi et al. 2019) and cross-entropy, last stage."""
    h, tokens = model.hidden, shard.tokens
    vocab_local = math.ceil(model.vocab / shard.tp)
    # the output layer is not a Transformer Engine module in Megatron-LM: it stays in 16-bit in fp8 training
    logits = _Linear("logits", tokens, h, vocab_local, HIGH_PRECISION.get(shard.precision))
    norm, norm_bwd = norm_ops("final_norm", model, shard)
    n_logits = tokens * vocab_local
    e = shard.activation_bytes_per_element
    f = LOGITS_SOFTMAX_BYTES_PER_ELEMENT
    # Megatron-LM's vocab-parallel cross entropy is unfused by default (--cross-entropy-loss-fusion is opt-in):
    # pass by pass over the [tokens, vocab/tp] logits, the kernels over every logit (megatron/core/tensor_parallel/
    # cross_entropy.py, NVIDIA/Megatron-LM 00611e6e; the same passes in mpu/cross_entropy.py of 2020-2023):
    # forward: calculate_logits_max ``vocab_parallel_logits.float()`` (e in, f out; none when the logits are already
    # fp32, as after legacy post_language_model_processing's ``output.float()``, which is the same cast outside the
    # Function) and ``torch.max(dim=-1)`` (f); calculate_predicted_logits the in-place ``-= logits_max`` (f, f) and
    # ``torch.exp(out=)`` (f, f), ``exp_logits.sum(dim=-1)`` (f); calculate_cross_entropy_loss the in-place ``div_``
    # into the saved softmax (f, f): 6 kernels, 38 B a 16-bit logit. Backward: calculate_gradients' in-place
    # ``mul_`` by the incoming gradient (f, f) and the autograd engine's cast of the fp32 gradient to the input's
    # dtype (f, e; torch/csrc/autograd/engine.cpp validate_outputs): 2 kernels, 14 B. The logits are neither copied
    # nor transposed in training (GPTModel / compute_language_model_loss transpose the labels and the per-token loss,
    # post_language_model_processing the logits only when labels is None). Per-row kernels (the target mask and
    # masked_target, the predicted-logit gather, log, the three all-reduces of [tokens] fp32, the backward scatter
    # of one element a row) move ~tokens x 4-8 B each and are not modelled (no per-row kernel is, anywhere).
    cast = [] if e == f else [("ce_cast", e + f)]
    forward_passes = [*cast, ("ce_max", f), ("ce_subtract", 2 * f), ("ce_exp", 2 * f), ("ce_sum", f),
                      ("ce_softmax", 2 * f)]
    backward_passes = [("ce_grad", 2 * f), *[("ce_cast", f + e) for _ in cast]]
    if shard.cross_entropy == "fused":
        # flash-attention's CrossEntropyLoss: the forward reads each logit once (max and log-sum-exp of a row in one
        # kernel, one fp32 value a row written); the backward reads the logits again with the saved log-sum-exp
        # and writes their gradient (inplace_backward=False). Rows are 50-130 K elements: re-reads stay in L2.
        forward_passes = [("ce_fused", e)]
        backward_passes = [("ce_fused", e + e)]
    if shard.cross_entropy == "megatron_fused":
        # Megatron-Core's cross_entropy_loss_fusion (megatron/core/fusions/fused_cross_entropy.py, core 0.7-0.9, 2024):
        # the same fp32 passes grouped into jit_fuser (torch.compile) graphs: the cast with the row max; exp(x - max)
        # with the gather and the row sum; the in-place normalisation into the saved softmax; backward the target
        # scatter, the scaling and the cast back. Inductor keeps an input mutation in place only when pointwise ops
        # alone consume it: the exp graph (a reduction) and the gradient graph (a scatter) write a fresh buffer and
        # copy it back into the input, one more read and write each (the file's own note, 2026, on why it later split
        # those graphs). 30 bytes a logit forward and 18 backward in bf16, against the unfused 38 + 14.
        forward_passes = [("ce_max", e + f), ("ce_exp", 2 * f), ("ce_copy_back", 2 * f), ("ce_softmax", 2 * f)]
        backward_passes = [("ce_grad", 2 * f + e), ("ce_copy_back", 2 * f)]
    flop_per_pass = CROSS_ENTROPY_FLOP_PER_ELEMENT / len(forward_passes)
    cross_entropy = [_memory(name, flop_per_pass * n_logits, per_element * n_logits)
                     for name, per_element in forward_passes]
    backward_flop = BACKWARD_ELEMENTWISE_FLOP_RATIO * flop_per_pass * n_logits
    cross_entropy_bwd = [_memory(name, backward_flop, per_element * n_logits) for name, per_element in backward_passes]
    weight_cast: list[Op] = []
    grad_cast: list[Op] = []
    if shard.autocast_fp32_params:   # the output layer's fp32 weight (autocast_params)
        weight_cast, grad_cast = ([_memory(*kernel) for kernel in autocast_params.cast_kernels(name, [h * vocab_local])]
                                  for name in (autocast_params.FORWARD_OP, autocast_params.BACKWARD_OP))
    return {"forward": [*norm, *weight_cast, logits.forward(shard), *cross_entropy],
            "backward_input": [*cross_entropy_bwd, logits.dgrad(shard), *norm_bwd],
            "backward_weight": [logits.wgrad(shard), *grad_cast],
            "recompute": []}


def flop(ops: list[Op], kinds: tuple[str, ...] = KINDS) -> float:
    """Total FLOP of ``ops`` restricted to ``kinds`` (``MATMUL_KINDS`` for model/hardware FLOP)."""
    return sum(op.flop for op in ops if op.kind in kinds)


def hbm_bytes(ops: list[Op]) -> float:
    return sum(op.hbm_bytes for op in ops)


def _matmul_flop_per_step(model: TransformerSpec, seq_len: int, global_batch: int,
                          phases: tuple[str, ...], recompute: str, moe_mlp=None,
                          modules: tuple[str, ...] = ()) -> float:
    """Matmul FLOP of the whole model (no sharding) for ``global_batch`` sequences, summed over ``phases``.

    ``moe_mlp(shard)`` builds an MoE layer's MLP block (``workload.moe``; required for MoE models); ``modules``:
    ``training.recompute_modules``, whose re-run forwards are in the ``recompute`` phase (``module_recompute``)."""
    assert model.moe is None or moe_mlp is not None, "MoE models: use workload.moe's FLOP functions"
    shard = Shard(seq_len=seq_len, micro_batch=global_batch, recompute=recompute, recompute_modules=modules)
    moe_layers = model.moe_layers
    per_layer = layer_ops(model, shard)
    total = (model.layers - moe_layers) * sum(flop(per_layer[p], MATMUL_KINDS) for p in phases)
    if moe_layers:
        moe_layer = layer_ops(model, shard, moe_mlp(shard))
        total += moe_layers * sum(flop(moe_layer[p], MATMUL_KINDS) for p in phases)
    for ends in (embedding_ops(model, shard), output_ops(model, shard)):
        total += sum(flop(ends[p], MATMUL_KINDS) for p in phases)
    return total


def model_flop_per_step(model: TransformerSpec, seq_len: int, global_batch: int, moe_mlp=None) -> float:
    """Model FLOP of one optimizer step: forward + backward matmuls, no recompute (the numerator of MFU).

    Equals 72*B*s*l*h^2*(1 + s/(6h) + V/(12*l*h)) for GPT shapes (Narayanan et al. 2021, eq. in section 5.1).
    """
    phases = ("forward", "backward_input", "backward_weight")
    return _matmul_flop_per_step(model, seq_len, global_batch, phases, "none", moe_mlp)


def hardware_flop_per_step(model: TransformerSpec, seq_len: int, global_batch: int, recompute: str,
                           moe_mlp=None, modules: tuple[str, ...] = ()) -> float:
    """Hardware FLOP of one step: model FLOP plus the recomputed forward work (the numerator of HFU), that of
    ``recompute`` and of the ``recompute_modules`` ``modules`` (mlp and moe re-run their GEMMs).

    With full recompute this is 96*B*s*l*h^2*(1 + s/(6h) + V/(16*l*h)) for GPT shapes (Narayanan et al. 2021).
    """
    assert recompute in RECOMPUTE_MODES, recompute
    return _matmul_flop_per_step(model, seq_len, global_batch, PHASES, recompute, moe_mlp, modules)
