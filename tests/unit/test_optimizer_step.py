"""The optimizer step per framework (workload/optimizer_step.py) against byte counts made by hand from the sources
its docstring cites, and its time against the closed form: memory-bound passes at the achievable HBM bandwidth,
one stream gap per launch, the host's dispatch after the gradient norm's .item() sync."""

import math

import pytest

from simcluster.parallel.plan import optimizer_time_s
from simcluster.spec import config
from simcluster.spec.hardware import gpu
from simcluster.workload import kernels, optimizer_step

H100 = gpu("h100-sxm")
# Megatron-Core MixedPrecisionOptimizer.step, per shard parameter: multi_tensor_l2norm of the fp32 main gradient
# (read 4), FusedAdam (read weight, gradient, two moments 16; write weight, moments 12), the copy of the fp32 shard
# into the bf16 parameter buffer (read 4, write 2); per gradient-buffer element: zero_grad_buffer (write 4 in fp32).
MCORE_SHARD_BYTES = 4 + (16 + 12) + (4 + 2)
MCORE_BUFFER_BYTES = 4
# bf16 gradient buffer: .float() casts the shard's gradients first (read 2, write 4); the zeroing writes 2
MCORE_BF16_SHARD_BYTES = (2 + 4) + MCORE_SHARD_BYTES
# use_precision_aware_optimizer: the norm (read 4) and TE FusedAdam with master weights kept as 16-bit remainders:
# read gradient 4, bf16 weight 2, remainder 2, moments 8; write weight 2, remainder 2, moments 8
PRECISION_AWARE_SHARD_BYTES = 4 + (4 + 2 + 2 + 8) + (2 + 2 + 8)
# torchtitan: _foreach_norm (read 4), _foreach_mul_ by the clamped coefficient (read 4, write 4), _fused_adamw_ (28)
TORCH_ADAMW_SHARD_BYTES = 4 + (4 + 4) + (16 + 12)


def test_bytes_per_parameter_match_the_hand_counts():
    assert optimizer_step.bytes_per_shard_param("adam") == MCORE_SHARD_BYTES == 38
    assert optimizer_step.bytes_per_buffer_element("adam") == MCORE_BUFFER_BYTES
    assert optimizer_step.bytes_per_shard_param("adam", "bf16") == MCORE_BF16_SHARD_BYTES
    assert optimizer_step.bytes_per_buffer_element("adam", "bf16") == 2
    assert optimizer_step.bytes_per_shard_param("adam_precision_aware") == PRECISION_AWARE_SHARD_BYTES == 32
    assert optimizer_step.bytes_per_buffer_element("adam_precision_aware") == 4
    assert optimizer_step.bytes_per_shard_param("torch_adamw") == TORCH_ADAMW_SHARD_BYTES == 40
    assert optimizer_step.bytes_per_buffer_element("torch_adamw") == 0


def test_optimizer_state_is_twelve_bytes_or_the_remainders_ten():
    assert optimizer_step.state_bytes_per_param("adam") == 12
    assert optimizer_step.state_bytes_per_param("torch_adamw") == 12
    assert optimizer_step.state_bytes_per_param("adam_precision_aware") == 2 + 4 + 4


def test_multi_tensor_apply_launches_a_kernel_per_320_chunks_of_65536():
    per_launch = 2048 * 32 * 320
    assert optimizer_step.multi_tensor_launches(1) == 1
    assert optimizer_step.multi_tensor_launches(per_launch) == 1
    assert optimizer_step.multi_tensor_launches(per_launch + 1) == 2
    assert optimizer_step.multi_tensor_launches(1e9) == math.ceil(1e9 / per_launch) == 48


def test_megatron_core_step_time_is_its_bytes_plus_a_gap_per_kernel():
    """Device-bound (a 1e9-parameter shard, an 8e9-element fp32 gradient buffer, 30 shard tensors): the passes' bytes
    at the achievable bandwidth plus the stream's gap before each kernel Python issues (the l2norm and Adam calls,
    30 per-tensor copies, one zeroing kernel) and the queued-launch latency of each further launch of a
    multi_tensor_apply call (47 each for the l2norm and Adam)."""
    shard, buffer, tensors = 1e9, 8e9, 30
    host, queued = kernels.host_model(), kernels.launch_overhead_s()
    bandwidth = H100.hbm_bandwidth * kernels.hbm_fraction()
    expected = ((MCORE_SHARD_BYTES * shard + MCORE_BUFFER_BYTES * buffer) / bandwidth
                + (1 + 1 + tensors + 1) * host.kernel_gap_s + 2 * 47 * queued
                + host.dispatch_s)   # the stream idle after the norm's .item() until the host launches Adam
    assert optimizer_time_s(shard, H100, "bf16", "fp32", "adam", buffer, tensors) == pytest.approx(expected, rel=1e-9)
    # without the distributed optimizer the copy is multi_tensor_scale: one call of 48 launches, not one per tensor
    plain = optimizer_time_s(shard, H100, "bf16", "fp32", "adam", buffer, tensors, distributed=False)
    assert plain == pytest.approx(expected + (1 - tensors) * host.kernel_gap_s + 47 * queued, rel=1e-9)


def test_small_shard_pays_a_launch_per_tensor_and_the_host_waits_on_the_norm(monkeypatch):
    """A tiny shard over many tensors: one kernel per shard tensor's copy. At the fitted gap (above the measured
    dispatch) the stream's gaps bind: (norm + Adam + copies + zeroing) x gap. With a gap below the dispatch (round 9's
    "fill" structure's measured 4 us), the host binds after total_norm.item(): every launch after it at the dispatch,
    the stream idle meanwhile."""
    tensors = 400
    host = kernels.host_model()
    small = optimizer_time_s(1e3, H100, "bf16", "fp32", "adam", 1e3, tensors)
    assert small == pytest.approx((1 + 1 + tensors + 1) * host.kernel_gap_s + host.dispatch_s, rel=1e-4)
    assert [p.sync_after for p in optimizer_step.passes("adam")] == [True, False, False, False]
    fill = kernels.HostModel(kernel_gap_s=4e-6, dispatch_s=13.5e-6, pipeline_step_s=0.0)
    monkeypatch.setattr(kernels, "host_model", lambda: fill)
    shard, tensors = 3e9, 10_000
    launches = math.ceil(shard / (2048 * 32 * 320))   # 144 per multi-tensor call, 143 of them queued from C++
    bandwidth = H100.hbm_bandwidth * kernels.hbm_fraction()
    queued_s = 2 * (launches - 1) * kernels.launch_overhead_s()   # the l2norm's and Adam's
    norm_s = 4 * shard / bandwidth + fill.kernel_gap_s
    after_sync = (1 + tensors + 1) * fill.dispatch_s   # the host issuing Adam, the copies and the zeroing
    assert after_sync > (34 * shard + 4) / bandwidth + (1 + tensors + 1) * fill.kernel_gap_s  # host-bound
    synced = optimizer_time_s(shard, H100, "bf16", "fp32", "adam", 1.0, tensors)
    # the last launch (the zeroing of a one-element buffer) then runs: its gap
    assert synced == pytest.approx(norm_s + after_sync + queued_s + fill.kernel_gap_s, rel=1e-6)
    # more than the host issuing everything back to back, as if it had run ahead of the norm
    assert synced > (2 + tensors + 1) * fill.dispatch_s + queued_s + 0.003


def test_precision_aware_and_torchtitan_times_are_their_bytes():
    shard, host = 1e9, kernels.host_model()
    bandwidth = H100.hbm_bandwidth * kernels.hbm_fraction()
    queued = kernels.launch_overhead_s()
    assert optimizer_time_s(shard, H100, "bf16", optimizer="adam_precision_aware") == pytest.approx(
        (PRECISION_AWARE_SHARD_BYTES + 4) * shard / bandwidth + 3 * host.kernel_gap_s + 2 * 47 * queued
        + host.dispatch_s, rel=1e-9)   # its norm's .item() sync, then the host's launch of Adam
    assert optimizer_time_s(shard, H100, "bf16", optimizer="torch_adamw") == pytest.approx(
        TORCH_ADAMW_SHARD_BYTES * shard / bandwidth + 3 * host.kernel_gap_s + 3 * 47 * queued, rel=1e-9)


def test_scenario_accepts_the_new_optimizers_and_names_the_field_otherwise():
    scenario = config.load("nemo2409-llama31-8b-8-h100-bf16")
    data = config.rebuildable(scenario)   # the framework defaults unset: they follow the optimizer
    # the precision-aware optimizer first ships in megatron-core 0.11 (the row states NeMo 24.09's 0.9: refused there)
    for name, release in (("adam_precision_aware", "0.11"), ("torch_adamw", data["training"]["mcore_version"])):
        training = data["training"] | {"optimizer": name, "mcore_version": release}
        assert config.from_dict(data | {"training": training}).training.optimizer == name
    with pytest.raises(config.ScenarioError, match="training.optimizer"):
        config.from_dict(data | {"training": data["training"] | {"optimizer": "apex_adam"}})


def test_memory_counts_the_optimizers_state_bytes():
    """The distributed optimizer's state per shard parameter: 12 B (fp32 master weight and moments), 10 B for the
    precision-aware optimizer's 16-bit remainders (parallel/memory.py takes them from optimizer_step)."""
    from simcluster.parallel import memory

    scenario = config.load("nemo2409-llama31-8b-8-h100-bf16")
    data = scenario.model_dump(mode="json")
    aware = config.from_dict(data | {"training": data["training"] | {"optimizer": "adam_precision_aware",
                                                                     "mcore_version": "0.11"}})
    p = scenario.parallelism
    params = memory.stage_params(scenario.model, p.tp, p.pp, 0, p.virtual_stages, p.layers_per_stage)
    assert memory._stage_memory(scenario, 0).optimizer_bytes == pytest.approx(12 * params / (p.dp * p.cp), rel=1e-12)
    assert memory._stage_memory(aware, 0).optimizer_bytes == pytest.approx(10 * params / (p.dp * p.cp), rel=1e-12)


def test_fp32_training_has_no_16_bit_weights_to_copy_into():
    """Megatron-Core's FP32Optimizer updates the model's own fp32 weights: no copy pass (6 B a shard parameter and
    its launches fewer than bf16's)."""
    shard, tensors = 1e9, 30
    bandwidth = H100.hbm_bandwidth * kernels.hbm_fraction()
    bf16 = optimizer_time_s(shard, H100, "bf16", "fp32", "adam", shard, tensors)
    fp32 = optimizer_time_s(shard, H100, "fp32", "fp32", "adam", shard, tensors)
    assert bf16 - fp32 == pytest.approx(6 * shard / bandwidth + tensors * kernels.host_model().kernel_gap_s,
                                        rel=1e-9)


@pytest.mark.parametrize(("changes", "field"), [
    ({"training": {"optimizer": "adam_precision_aware", "precision": "fp16"}}, "training.optimizer"),
    ({"parallelism": {"local_ddp": "contiguous", "overlap_grad_reduce": False}}, "parallelism.local_ddp"),
])
def test_optimizers_where_they_do_not_run_are_refused_naming_the_field(changes, field):
    data = config.load("nemo2409-llama31-8b-8-h100-bf16").model_dump(mode="json")
    for section, values in changes.items():
        data[section] = data[section] | values
    with pytest.raises(config.ScenarioError, match=field):
        config.from_dict(data)


def test_parameter_tensors_per_layer_follow_the_norm_and_the_linear_biases():
    """Four linear weights and two norm weights; LayerNorm's two biases; the four linears' biases where
    add_bias_linear is on: GPT-3 12, Llama 6, Nemotron-4 (LayerNorm, no linear biases) 8."""
    assert optimizer_step.parameter_tensors_per_layer("layernorm", True) == 12
    assert optimizer_step.parameter_tensors_per_layer("rmsnorm", False) == 6
    assert optimizer_step.parameter_tensors_per_layer("layernorm", False) == 8


# Adam's moments in bf16 (training.adam_moments_dtype; Megatron-Core exp_avg_dtype / exp_avg_sq_dtype handed to TE's
# FusedAdam under use_precision_aware_optimizer). TE's FusedAdam has no kernel for 16-bit moments (fused_adam.py
# step): per moment it makes an fp32 copy (.float(): read 2, write 4), runs its fp32 kernel on the copies (the bytes of
# fp32 moments), then casts back (.bfloat16(): read 4, write 2) and copies into the state (copy_: read 2, write 2).
# adam (fp8 current scaling / MXFP8 with fp32 main params: Megatron-Core's own fp32 master shards), bf16 gradients:
# the gradient cast 2 + 4, the norm 4, FusedAdam 16 + 12, the weight copy 4 + 2; the moments' passes 2 x (6 + 6 + 4).
# adam_precision_aware (bf16 run, bf16 gradients): the norm 2, FusedAdam reads gradient 2, weight 2, remainder 2,
# moments 8, writes weight 2, remainder 2, moments 8; the moments' passes as above. State: 4 B less either way.
MOMENT_PASSES_BYTES = 2 * ((2 + 4) + (4 + 2) + (2 + 2))
BF16_MOMENTS_ADAM_SHARD_BYTES = (2 + 4) + 4 + (16 + 12) + (4 + 2) + MOMENT_PASSES_BYTES
BF16_MOMENTS_PRECISION_AWARE_SHARD_BYTES = 2 + (2 + 2 + 2 + 8) + (2 + 2 + 8) + MOMENT_PASSES_BYTES


def test_bf16_moments_bytes_and_state_by_hand():
    assert optimizer_step.bytes_per_shard_param("adam", "bf16", moments="bf16") == BF16_MOMENTS_ADAM_SHARD_BYTES == 76
    assert optimizer_step.bytes_per_shard_param("adam_precision_aware", "bf16", moments="bf16") == \
        BF16_MOMENTS_PRECISION_AWARE_SHARD_BYTES == 60
    # the moments' passes only add: 32 B a shard parameter over fp32 moments
    for name in ("adam", "adam_precision_aware"):
        assert optimizer_step.bytes_per_shard_param(name, "bf16", moments="bf16") - \
            optimizer_step.bytes_per_shard_param(name, "bf16") == MOMENT_PASSES_BYTES == 32
    assert optimizer_step.state_bytes_per_param("adam", "bf16") == 4 + 2 + 2
    assert optimizer_step.state_bytes_per_param("adam_precision_aware", "bf16") == 2 + 2 + 2
    with pytest.raises(AssertionError):
        optimizer_step.state_bytes_per_param("torch_adamw", "bf16")


def test_bf16_moments_launch_three_kernels_a_moment_and_tensor():
    """The unscale, cast back and copy are issued from Python per parameter tensor and moment: 6 per tensor."""
    fp32, bf16 = (optimizer_step.passes("adam_precision_aware", "bf16", moments=m) for m in ("fp32", "bf16"))
    extra = [p for p in bf16 if p not in fp32]
    assert len(extra) == 6 and {p.launch for p in extra} == {"per_tensor"}
    assert sum(optimizer_step.launches(p, 1e9, tensors=100) for p in extra) == 600


def test_deepseek_v3_rows_hold_bf16_moments_in_memory():
    """The DeepSeek-V3 H100 row (fp8 current scaling, optimizer adam, bf16 moments): the distributed optimizer's
    state is 8 B a shard parameter; the same row with fp32 moments 12 B (its routed experts sharded over their own
    data-parallel group)."""
    from simcluster.parallel import memory

    scenario = config.load("nemo2509-deepseek-v3-1024-h100-fp8")
    assert scenario.training.adam_moments_dtype == "bf16"
    data = config.rebuildable(scenario)
    fp32 = config.from_dict(data | {"training": data["training"] | {"adam_moments_dtype": "fp32"}})
    assert memory._stage_memory(scenario, 0).optimizer_bytes == pytest.approx(
        8 / 12 * memory._stage_memory(fp32, 0).optimizer_bytes, rel=1e-12)


@pytest.mark.parametrize("changes", [
    {"optimizer": "torch_adamw"},                                     # not Megatron-Core's optimizer
    {"optimizer": "adam", "precision": "fp8", "fp8_recipe": "delayed"},   # delayed: TE's master weights
    {"optimizer": "adam", "precision": "fp16"},                       # not a run Megatron-Bridge's recipes make
])
def test_bf16_moments_where_megatron_core_would_not_run_them_are_refused(changes):
    data = config.load("nemo2409-llama31-8b-8-h100-bf16").model_dump(mode="json")
    data["training"] = data["training"] | {"adam_moments_dtype": "bf16"} | changes
    with pytest.raises(config.ScenarioError, match="training.adam_moments_dtype"):
        config.from_dict(data)


# Which optimizer the Megatron-Bridge BF16 rows ran (round 28). Megatron-Core OptimizerConfig.__post_init__:
# use_precision_aware_optimizer_no_fp8_or_ds_fp8 = use_precision_aware_optimizer and (main_params_dtype != fp32 or
# fp8_recipe in (None, "delayed") or optimizer_cpu_offload); TE keeps the master weight (master_weights=True) only when
# it is True (megatron/core/optimizer/__init__.py), else distrib_optimizer.py makes its own fp32 shard (``if not
# config.use_precision_aware_optimizer_no_fp8_or_ds_fp8``). Megatron-Bridge: MixedPrecisionConfig's fp8_recipe defaults
# to "tensorwise" (src/megatron/bridge/training/mixed_precision.py @ 05097809; the default documented in
# NVIDIA-NeMo/Megatron-Bridge PR #718, Sept 2025, before Bridge 0.2.0 = NeMo 25.11), bf16_mixed() leaves it, setup()
# copies every shared field onto the OptimizerConfig, and runtime_config_update runs setup() before validate() re-runs
# the sub-configs' __post_init__ / finalize. With the DeepSeek-V3 and Qwen3 recipes' fp32 main parameters the flag is
# False: Megatron-Core's fp32 master, i.e. optimizer adam.
BRIDGE_BF16_ROWS = ("nemo2511-deepseek-v3-256-gb200-bf16", "nemo2511-deepseek-v3-256-gb300-bf16",
                    "nemo2511-qwen3-235b-256-gb200-bf16", "nemo2511-qwen3-235b-256-gb300-bf16")


@pytest.mark.parametrize("name", BRIDGE_BF16_ROWS)
def test_megatron_bridge_bf16_rows_run_megatron_cores_own_master(name):
    """State per shard parameter: fp32 master 4 + moments (4 + 4, or 2 + 2 where the recipe sets bf16 moments), not
    the precision-aware optimizer's 16-bit remainder (2 B)."""
    from simcluster.parallel import memory

    scenario = config.load(name)
    assert scenario.training.precision == "bf16" and scenario.training.optimizer == "adam"
    moments = 2 if scenario.training.adam_moments_dtype == "bf16" else 4
    data = config.rebuildable(scenario)
    aware = config.from_dict(data | {"training": data["training"] | {"optimizer": "adam_precision_aware"}})
    assert memory._stage_memory(scenario, 0).optimizer_bytes == pytest.approx(
        (4 + 2 * moments) / (2 + 2 * moments) * memory._stage_memory(aware, 0).optimizer_bytes, rel=1e-12)
