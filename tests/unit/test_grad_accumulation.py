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
    # Megatron-FSDP copies the bf16 gradient into a fresh bf16 bucket (megatron_fsdp.py _grad_acc, round 18 mfsdp)
    assert ops.shard_for(scenario).grad_accumulation_bytes == 2 + 2  # bf16 reduction (grad_reduce_in_fp32 False)
    assert ops.shard_for(scenario).grad_accumulation_per_tensor  # one copy per parameter tensor


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


# Megatron-LM 2020-2021: one accumulation kernel per parameter tensor (grad_accumulation.per_tensor). The 2021 local
# DDP (megatron/model/distributed.py, DistributedDataParallel with contiguous buffers) registers for every parameter
# a hook on its gradient accumulator:
#     def param_hook(*unused):
#         if param.grad.data is not None:
#             param.main_grad.add_(param.grad.data)
#             param.grad = None
# and the 2020 FP16_Optimizer keeps the fp16 .grad, into which autograd's AccumulateGrad adds in place, per tensor.
SC21 = "narayanan2021-39.1b-a100"   # tp 8, pp 2, --DDP-impl local (contiguous), fp16 main gradients


def _sc21_accumulation(per_tensor):
    import dataclasses

    scenario = config.load(SC21)
    shard = dataclasses.replace(ops.shard_for(scenario), grad_accumulation_per_tensor=per_tensor)
    layer = ops.layer_ops(scenario.model, shard)
    return scenario, [op for op in layer["backward_weight"] if op.name == grad_accumulation.OP_NAME]


def test_megatron_2021_adds_each_parameter_tensor_by_a_kernel_of_its_own():
    """12 tensors a GPT layer (4 weights, 4 biases, 2 LayerNorm gains and biases: optimizer_step's count, which the
    DeepSpeed pipeline uses too), 6 B each parameter (read the fp16 gradient, read and write the fp16 main gradient)
    of the memory model's per-rank layer (an independent count: weights, biases and norms)."""
    from simcluster.workload import optimizer_step

    scenario, adds = _sc21_accumulation(per_tensor=True)
    model, tp = scenario.model, scenario.parallelism.tp
    assert ops.shard_for(scenario).grad_accumulation_per_tensor
    assert len(adds) == 12 == optimizer_step.parameter_tensors_per_layer(model.norm, model.linear_biases)
    assert sum(op.hbm_bytes for op in adds) == pytest.approx((2 + 2 * 2) * memory.layer_params_per_rank(model, tp),
                                                             rel=1e-12)
    h = model.hidden
    assert max(op.hbm_bytes for op in adds) == pytest.approx(6 * h * 4 * h / tp)   # the MLP's h x 4h/tp weights
    assert min(op.hbm_bytes for op in adds) == pytest.approx(6 * 3 * h / tp)      # the QKV bias, 3h/tp


def test_per_tensor_kernels_keep_the_device_time_and_add_eleven_launches():
    """An HBM-bound kernel's time is linear in its bytes: splitting the layer's accumulation into its 12 tensors
    keeps the device time (the biases' and norms' 0.02% of bytes aside) and adds 11 kernels, each paying the stream's
    per-kernel time."""
    from simcluster.workload import kernels

    scenario, per_tensor = _sc21_accumulation(per_tensor=True)
    _, per_layer = _sc21_accumulation(per_tensor=False)
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    split, whole = kernels.stream_time(per_tensor, gpu, precision), kernels.stream_time(per_layer, gpu, precision)
    assert (split.kernels, whole.kernels) == (12, 1)
    assert split.device_s == pytest.approx(whole.device_s, rel=1e-3)


def test_only_megatron_lm_2020_2021_and_megatron_fsdp_accumulate_per_tensor():
    assert grad_accumulation.per_tensor("megatron2021") and grad_accumulation.per_tensor("megatron2020")
    assert not any(grad_accumulation.per_tensor(name) for name in ("adam", "adam_precision_aware", "torch_adamw"))
    # Megatron-FSDP's _grad_acc copies each parameter's gradient on its own (round 18 mfsdp)
    assert ops.shard_for(config.load(SCENARIO)).grad_accumulation_per_tensor


@pytest.mark.parametrize("norm, biases", [("layernorm", True), ("layernorm", False), ("rmsnorm", False),
                                          ("rmsnorm", True)])
def test_accumulated_tensors_match_the_optimizer_count(norm, biases):
    """One count of a dense layer's parameter tensors: the accumulation's kernels (one a tensor) and the optimizer's
    per-layer count agree for every norm and bias choice; qk_layernorm adds its two norms' tensors on the same rule."""
    from simcluster.workload import optimizer_step

    scenario = config.load(SC21)
    model = scenario.model.model_copy(update={"norm": norm, "bias": biases})
    weight_grads = ops.layer_ops(model, ops.shard_for(scenario))["backward_weight"]
    expected = optimizer_step.parameter_tensors_per_layer(norm, biases)
    assert len(grad_accumulation.tensor_params(model, weight_grads)) == expected
    qk = model.model_copy(update={"qk_layernorm": True})
    per_norm = 2 if norm == "layernorm" else 1
    assert len(grad_accumulation.tensor_params(qk, weight_grads)) == expected + 2 * per_norm


@pytest.mark.parametrize(("name", "charged"), [
    ("nemo2409-gpt3-175b-128-h100-bf16", 0.0),            # Megatron-Core, fused into the wgrad GEMM's main_grad
    ("nemo2511-llama3-70b-64-gb200-fp8", 2 + 2),           # Megatron-FSDP without the fusion: main_grad.copy_
    ("smith2022-mtnlg-530b-280-a100", 0.0),               # DeepSpeed: deepspeed_pipeline charges its own
    ("bigscience-bloom-176b-384-a100", 0.0),
    ("mpt-13b-8-h100", 0.0),                              # FSDP, sharded every microbatch: fsdp_runtime (the shard)
    ("torchtitan-llama31-70b-256-h100-fp8", 0.0),
    ("torchtitan-llama31-405b-512-h100-fp8", 2 + 2 * 4),  # FSDP2 under pipelining: unsharded add in fp32
    ("narayanan2021-1.7b-a100", 0.0),                     # PyTorch DDP, one microbatch, .grad freed: no add
    ("narayanan2021-18.4b-a100", 0.75 * (2 + 2 * 2)),     # four microbatches, .grad freed: 3 adds in 4 microbatches
    ("megatron-1.2b-a100-node", 2 + 2 * 2),               # one microbatch, but FP16_Optimizer keeps .grad
])
def test_the_separate_accumulation_follows_the_stack_not_the_fusion_flag(name, charged):
    """gradient_accumulation_fusion means something only on Megatron-Core (its main_grad); elsewhere each stack's own
    accumulation decides, counted once: the rows off Megatron-Core leave the flag at its default (true) except where
    they state it, and are charged by their stack (read the 16-bit gradient, read and write the accumulator)."""
    scenario = config.load(name)
    assert ops.shard_for(scenario).grad_accumulation_bytes == charged


@pytest.mark.parametrize("microbatches", [1, 2, 4, 12])
def test_set_to_none_ddp_runs_m_minus_1_adds_and_megatron_hooks_run_m(microbatches):
    """A step of m microbatches: PyTorch DDP with zero_grad(set_to_none=True) runs m - 1 autograd adds (the first
    gradient is taken over), so the charge over the step is exactly (m - 1) adds; Megatron-LM 2021's local DDP hook
    (main_grad.add_ every microbatch) and 2020's FP16_Optimizer (kept .grad) run m, the first included."""
    base = config.load("narayanan2021-18.4b-a100").model_dump(mode="json")   # PyTorch DDP, fp16, no fusion
    dp, mbs = base["parallelism"]["dp"], base["training"]["micro_batch_size"]
    base["training"]["global_batch_size"] = dp * mbs * microbatches
    add = 2 + 2 * 2
    torch_ddp = config.Scenario.model_validate(base)
    assert torch_ddp.microbatches == microbatches
    assert ops.shard_for(torch_ddp).grad_accumulation_bytes * microbatches == pytest.approx(add * (microbatches - 1),
                                                                                             rel=1e-12)
    for update in ({"parallelism": {"local_ddp": "contiguous", "overlap_grad_reduce": False}},
                   {"training": {"optimizer": "megatron2020"}}):
        data = {**base, **{k: {**base[k], **v} for k, v in update.items()}}
        scenario = config.Scenario.model_validate(data)
        assert ops.shard_for(scenario).grad_accumulation_bytes * microbatches == add * microbatches
