"""Weight-gradient accumulation outside the wgrad GEMM (workload/grad_accumulation.py): with
``gradient_accumulation_fusion: false`` every microbatch adds each layer's 16-bit weight gradients to the main gradient
(Megatron-Core's hook, ``param.main_grad.add_(param.grad)``): read 2 bytes, read and write the main gradient (fp32 or
bf16), per parameter of the layer's weight matrices. The parameter count is the memory model's, an independent
derivation (``memory.layer_params_per_rank``), less the norm gains, whose gradients no wgrad GEMM produces (their
accumulation, 2 x 8,192 elements a layer, is left out)."""

import pytest

from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.workload import grad_accumulation, ops

SCENARIO = "nemo2511-llama3-70b-64-gb200-fp8"


def _layer(fused, main_grad_dtype):
    model = config.load(SCENARIO).model
    shard = ops.Shard(seq_len=8192, micro_batch=2, sequence_parallel=False, precision="fp8",
                      grad_accumulation_bytes=grad_accumulation.bytes_per_param(fused, main_grad_dtype))
    return model, ops.layer_ops(model, shard)


@pytest.mark.parametrize(("dtype", "per_param"), [("bf16", 2 + 2 * 2), ("fp32", 2 + 2 * 4)])
def test_unfused_accumulation_reads_the_gradient_and_updates_the_main_gradient(dtype, per_param):
    model, layer = _layer(False, dtype)
    (add,) = [op for op in layer["backward_weight"] if op.name == "grad_accumulate"]
    weights = memory.layer_params_per_rank(model, 1) - model.norm_params
    assert add.hbm_bytes == pytest.approx(per_param * weights, rel=1e-12)
    assert add.kind == "memory"


def test_fused_accumulation_adds_no_kernel():
    _, layer = _layer(True, "bf16")
    assert not [op for phase in layer.values() for op in phase if op.name == "grad_accumulate"]


def test_the_70b_fsdp_scenarios_run_unfused_as_their_recipe_does():
    scenario = config.load(SCENARIO)
    assert scenario.training.gradient_accumulation_fusion is False
    assert ops.shard_for(scenario).grad_accumulation_bytes == 2 + 2 * 2  # bf16 reduction (grad_reduce_in_fp32 False)


def test_multi_head_latent_attention_accumulates_its_own_projections():
    """With MLA (workload/mla.py rewrites the attention's GEMMs) the separate accumulation covers the latent
    projections, not the multi-head stand-in's: the model's MLA parameter count (``attention_params``, a closed form
    of its own) less the two latent norms' gains, plus the dense MLP's weights."""
    from simcluster.workload import mla

    model = config.load("nemo2511-deepseek-v3-256-b200-fp8").model
    shard = ops.Shard(seq_len=4096, micro_batch=1, sequence_parallel=False,
                      grad_accumulation_bytes=grad_accumulation.bytes_per_param(False, "bf16"))
    layer = mla.apply(model, shard, ops.layer_ops(model, shard))
    (add,) = [op for op in layer["backward_weight"] if op.name == grad_accumulation.OP_NAME]
    a = model.mla
    want = model.attention_params - (a.q_lora_rank + a.kv_lora_rank) + model.mlp_matrices * model.hidden * model.ffn
    assert add.flop == pytest.approx(want, rel=1e-12)
    assert add.hbm_bytes == pytest.approx((2 + 2 * 2) * want, rel=1e-12)
