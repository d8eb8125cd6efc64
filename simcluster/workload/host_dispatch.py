"""Host CPU time of Transformer Engine module calls: the host side of a block beyond one torch-level dispatch per
kernel (docs/calibration/round-17.md, "Round 17: host time per Transformer Engine module").

Every kernel costs the host ``HostModel.dispatch_s`` (13.5 us on a DGX H100's Xeon: a torch.nn.Linear forward,
NVIDIA/TransformerEngine#2053) times the host CPU's ratio (``kernels.host_cpu_ratio``). A Transformer Engine module
call costs more than the dispatch of its kernels: its Python (``prepare_forward``, the fp8 metadata and scaling
state, the autograd Function's context) runs once per call, forward and backward. Here that excess is added once
per module call, on the op that stands for the call (``TE_MODULE_OPS``), so a block is host-bound when the CPU side
(every kernel's dispatch plus every module call's excess) exceeds the device side.

The excess per call, from efficiency.yaml ``host_overhead.te_module`` (each value sourced there):

    bf16:  dispatch x (linear_over_torch - 1)                   te.Linear forward launches one GEMM
    fp8:   dispatch x (linear_over_torch x fp8_over_bf16 - 2)   its input quantize and the GEMM
    backward: forward's x backward_over_forward

The fp8 row subtracts the 2 launches of the measured te.Linear forward (TransformerEngine#761: its input quantize and
the GEMM), not the launches this model issues per module, which it charges at dispatch_s apiece on their own ops:
one GEMM per module plus the phase's quantize kernels (``fp8_recipes.quantize_kernels``), which are one fused
``fp8_cast`` over every quantized operand of the phase for delayed scaling (a fraction of a launch per module), one
quantize per tensor for MXFP8, and an amax pass and a cast per tensor (the norm-fed ones without the amax) for
current scaling. So per fp8 module the host side is low by up to one dispatch (13.5 us on the x86 host, against the
fp8 excess of 46 us) for delayed scaling, right for MXFP8, and for current scaling right where the norm computed the
amax and high by one dispatch elsewhere: an approximation within the uncertainty of fp8_over_bf16 (a lower bound,
"more than 2x").

Which ops stand for a module call is Megatron-Core's Transformer Engine layer spec (megatron/core/models/gpt/
gpt_layer_specs.py ``get_gpt_layer_with_transformer_engine_spec``): TELayerNormColumnParallelLinear (linear_qkv,
linear_fc1), TEDotProductAttention (core_attention), TERowParallelLinear (linear_proj, linear_fc2); multi-latent
attention's TELinear / TELayerNormColumnParallelLinear projections; the MoE layer's TEGroupedMLP (one GroupedLinear
call for fc1, one for fc2, whatever the expert count) and its shared experts' TE linears. A module's backward is one
autograd call that issues the input-gradient and the weight-gradient GEMMs: counted on the input-gradient phase.
The output layer (Megatron's ColumnParallelLinear), embeddings, norms outside modules, activations, residuals and
the optimizer are plain PyTorch ops: the torch-level dispatch alone. Stacks without Transformer Engine layers
(``transformer_engine_layers``) have no module excess.

CUDA graphs replay a captured module without its Python, so a graphed module has no excess. Megatron-Core's
``--cuda-graph-scope moe_router moe_preprocess`` (``training.moe_cuda_graphs``) captures the router and the EP
preprocess, plain PyTorch ops here (no excess to remove), and the shared experts up to the router only where they do
not overlap the EP communication: the one bundled case with shared experts and the graphs, DeepSeek-V3 on NeMo 25.11
(nemo2511-deepseek-v3-*-gb*), has its provider overlap the shared expert (the scenario's source), so its shared
experts run eager and keep their excess. Whole-iteration graphs (the nemo2511-llama3-8b-8-* presets' cuda_graph_impl
local, full_iteration) are not modelled, like their per-kernel dispatch: their blocks are device-bound with or without
the excess (step times identical without it, checked round 17).
"""

from __future__ import annotations

from simcluster.core import catalog
from simcluster.workload import moe_host
from simcluster.workload.ops import Op

_LINEAR_OPS = frozenset({"qkv", "attn_out", "mlp_up", "mlp_down", "mla_q_down", "mla_q_up", "mla_kv_down",
                         "mla_kv_up", "shared_expert_up", "shared_expert_down", "expert_up", "expert_down"})
# Ops that stand for one Transformer Engine module call, per phase of the layer (workload.ops.layer_ops phases)
TE_MODULE_OPS = {
    "forward": _LINEAR_OPS | {"attention"},
    "recompute": _LINEAR_OPS | {"attention"},
    "backward_input": _LINEAR_OPS | {"attention_backward"},
    "backward_weight": frozenset(),
}
# Attention cores run in bf16 in fp8 training (NeMo's and Megatron-Core's fp8_dot_product_attention default off)
_BF16_MODULE_OPS = frozenset({"attention", "attention_backward"})
_BACKWARD_PHASES = frozenset({"backward_input", "backward_weight"})


def _constants() -> dict:
    return catalog.load("efficiency")["host_overhead"]


def transformer_engine_layers(scenario) -> bool:
    """Whether ``scenario``'s layers are Megatron-Core's Transformer Engine layer spec: Megatron-Core
    (``Scenario.megatron_core``) but not the 2022 Megatron-LM layer of Korthikanti et al. (its own ParallelAttention,
    ``training.attention: naive``, before Transformer Engine existed). Not told apart by any key: Meta's stack of
    llama3-405b-*-published, charged as Transformer Engine layers (device-bound: the same step time either way)."""
    return scenario.megatron_core and scenario.training.attention != "naive"


def module_excess_s(precision: str, backward: bool) -> float:
    """CPU time of one Transformer Engine module call beyond the torch-level dispatch of its kernels, on the x86 host
    of ``HostModel.dispatch_s`` (efficiency.yaml host_overhead.te_module)."""
    table = _constants()
    te = table["te_module"]
    dispatch = table["dispatch_s"]
    if precision == "fp8":
        forward = dispatch * (te["linear_over_torch"] * te["fp8_over_bf16"] - 2)
    else:
        forward = dispatch * (te["linear_over_torch"] - 1)
    return forward * (te["backward_over_forward"] if backward else 1.0)


def module_host_s(ops: list[Op], phase: str, precision: str, cpu_ratio: float = 1.0) -> list[float]:
    """Per op of ``ops`` (one phase of a Transformer Engine layer), the module excess the host spends issuing it:
    ``module_excess_s`` on the op that stands for a module call (``TE_MODULE_OPS``), 0 elsewhere; at the host CPU
    of ``cpu_ratio``; a grouped expert GEMM's call (Transformer Engine GroupedLinear) also its per-expert Function
    arguments (``moe_host.grouped_linear_host_s``)."""
    markers = TE_MODULE_OPS.get(phase, frozenset())
    backward = phase in _BACKWARD_PHASES
    excess = {p: cpu_ratio * module_excess_s(p, backward) for p in ("bf16", "fp8")}
    return [excess["bf16" if op.name in _BF16_MODULE_OPS or (op.precision or precision) != "fp8" else "fp8"]
            + cpu_ratio * moe_host.grouped_linear_host_s(op, phase)
            if op.name in markers else 0.0 for op in ops]
