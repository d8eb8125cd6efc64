"""The width Megatron-FSDP reduce-scatters gradients in, as Megatron-LM decides it (docs/calibration/rounds-10-14.md,
"Issue 15: what Megatron-FSDP reduced the Qwen3 row's gradients in").

Megatron-LM's validate_args (megatron/training/arguments.py, NVIDIA/Megatron-LM 000c4ac2): with --bf16 and without
--grad-reduce-in-bf16, accumulate_allreduce_grads_in_fp32 is set True whenever --main-grads-dtype is fp32 (its
default); get_model (megatron/training/training.py) passes it as DistributedDataParallelConfig.grad_reduce_in_fp32;
Megatron-FSDP's ParamAndGradBuffer allocates each parameter group's main-gradient buffer in fp32 when
grad_reduce_in_fp32, else in the parameters' dtype, and reduce-scatters that buffer. With optim_grads_params (ZeRO-3)
it does so after every microbatch's backward, each group over its own data-parallel group (the routed experts over
the expert data-parallel one).

Closed form on a small MoE (TP 2, EP 2, DP 8 on 16 H100s: expert-DP 8): one step's routed-expert reduce-scatters carry
microbatches x MoE layers x (experts / ep) x 3 h F parameters at 4 bytes, half that with grad_reduce_dtype: bf16,
while the parameter all-gathers stay at the bf16 weights' 2 bytes either way."""

from __future__ import annotations

import pytest

from simcluster.core import inputs
from simcluster.engine import Simulation
from simcluster.spec import config

LAYERS, HIDDEN, EXPERTS, EXPERT_FFN, EP = 2, 1024, 16, 512, 2
MODEL = {
    "layers": LAYERS, "hidden": HIDDEN, "heads": 8, "kv_heads": 4, "ffn_hidden": 2048, "vocab": 32000,
    "mlp": "swiglu", "norm": "rmsnorm", "position": "rope", "dropout": False, "tied_embeddings": False,
    "moe": {"experts": EXPERTS, "top_k": 2, "ffn_hidden": EXPERT_FFN, "load": "balanced"},
}
TP, DP, GLOBAL_BATCH = 2, 8, 32
MICROBATCHES = GLOBAL_BATCH // DP  # micro batch 1
EXPERT_PARAMS = LAYERS * EXPERTS // EP * 3 * HIDDEN * EXPERT_FFN  # a rank's routed-expert weights, SwiGLU


def _scenario(**parallelism) -> config.Scenario:
    return config.from_dict({
        "name": "fsdp-grad-dtype", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2,
                                               "topology": "rail-fat-tree"},
        "model": MODEL,
        "training": {"seq_len": 2048, "global_batch_size": GLOBAL_BATCH, "micro_batch_size": 1, "precision": "bf16"},
        "parallelism": {"tp": TP, "pp": 1, "dp": DP, "ep": EP, "zero_stage": 3, "sequence_parallel": True,
                        **parallelism},
    })


def _expert_bytes(scenario: config.Scenario) -> tuple[float, float]:
    """One step on rank 0: the bytes of its routed-expert gradient reduce-scatters and parameter all-gathers."""
    events = Simulation(scenario).run(1).events
    dp = events[events["stream"].isin(("dp", "dp-experts"))]  # Megatron-FSDP: experts on their own stream

    def moved(prefix: str) -> float:
        return float(dp[dp["name"].str.startswith(prefix)]["bytes"].sum())

    return moved("expert grad reduce_scatter"), moved("expert zero3 all_gather")


def test_megatron_fsdp_reduces_bf16_gradients_in_fp32_unless_stated():
    assert _scenario().parallelism.grad_reduce_dtype == "fp32"   # --bf16 without --grad-reduce-in-bf16
    assert _scenario(grad_reduce_dtype="bf16").parallelism.grad_reduce_dtype == "bf16"


def test_every_microbatch_reduce_scatters_the_expert_gradients_at_the_reduction_width():
    reduced, gathered = _expert_bytes(_scenario())
    assert reduced == pytest.approx(MICROBATCHES * EXPERT_PARAMS * 4, rel=1e-12)
    # forward and backward gather the bf16 weights of every microbatch (full recompute is off)
    assert gathered == pytest.approx(MICROBATCHES * 2 * EXPERT_PARAMS * 2, rel=1e-12)
    reduced_bf16, gathered_bf16 = _expert_bytes(_scenario(grad_reduce_dtype="bf16"))
    assert reduced_bf16 == pytest.approx(reduced / 2, rel=1e-12)
    assert gathered_bf16 == pytest.approx(gathered, rel=1e-12)


def test_the_zoo_fsdp_row_leaves_the_width_to_megatron_lms_rule():
    """The Megatron-MoE-ModelZoo Qwen3 FSDP row states no reduction width (the zoo publishes no command for it):
    the scenario leaves grad_reduce_dtype unset and Megatron-LM's --bf16 rule gives fp32."""
    path = config.resolve_path("moezoo-qwen3-235b-256-h100-fsdp")
    stated = inputs.load_yaml(path, inputs.MAX_SCENARIO_BYTES, "scenario file")["parallelism"]
    assert "grad_reduce_dtype" not in stated
    assert config.load("moezoo-qwen3-235b-256-h100-fsdp").parallelism.grad_reduce_dtype == "fp32"
