"""workload.mxfp8_swizzles: the scale-swizzle launches of MXFP8 GEMM calls per layer and microbatch, by Transformer
Engine release, counted from TE's source (gemm.cpp: one swizzle kernel per operand whose scales are not
GEMM-swizzled; a grouped call one per operand list and 64 experts; 2.12's quantizers set ``optimize_for_gemm`` for
activations not all-gathered for sequence parallelism; 2.18 pre-swizzles cached bf16-primary weights), and their
device time charged once (it is inside the measured block-scaled GEMM time)."""

import pytest

from simcluster.spec import config
from simcluster.workload import kernels, mla, moe, mtp, mxfp8_swizzles
from simcluster.workload.ops import layer_ops, shard_for

PHASES = ("forward", "backward_input", "backward_weight")
DENSE_LINEARS = 4   # QKV, attention output, fc1, fc2 (one fused GEMM each: projections "fused")
GROUPED_CALLS = 2   # the MoE block's fc1 and fc2 grouped GEMMs, each one te_general_grouped_gemm call a phase


def _layers(name, release, sequence_parallel=False, fp8_primary_weights=False, ep=None):
    scenario = config.load(name)
    m, shard = scenario.model, shard_for(scenario)
    dense = layer_ops(m, shard)
    moe_layer = layer_ops(m, shard, moe.moe_block(m, shard, ep=ep or scenario.parallelism.ep)) if m.moe else None
    swizzled = [None if phases is None else mxfp8_swizzles.count(
        mxfp8_swizzles.apply(mla.apply(m, shard, phases), release, sequence_parallel, fp8_primary_weights))
        for phases in (dense, moe_layer)]
    return scenario, swizzled


def per_phase(counts):
    return tuple(counts[phase] for phase in PHASES)


def test_container_te_releases():
    # Megatron-Bridge docs/releases/software-versions.md: 25.11 TE 2.9, 26.02 TE 2.12, 26.04 TE 2.14
    assert config.container_te("0.15") == "2.9"
    assert config.container_te("0.16") == "2.12"
    assert config.container_te("0.17") == "2.14"
    assert config.container_te(None) is None and config.container_te("0.10") is None
    assert config.container_te("0.9") == "1.10"   # NeMo 24.09 user guide, Software Component Versions


@pytest.mark.parametrize("release", ["2.9", "2.11", None])
def test_dense_layer_before_pre_swizzled_activations_two_per_gemm_call(release):
    # gemm(): swizzle_scaling_factors on A and on B in every call; 4 linears x 3 GEMMs x 2 = 24 a layer-microbatch
    _, (dense, _) = _layers("nemo2511-llama3-8b-8-b200-mxfp8", release)
    assert per_phase(dense) == (2 * DENSE_LINEARS,) * 3
    assert sum(dense.values()) == 24


def test_dense_layer_from_te_2_12_only_the_weights_swizzle():
    # fprop (weight, input) and dgrad (weight, grad_output): the cached weight's compact scales; wgrad (input,
    # grad_output): both quantized with optimize_for_gemm, no swizzle
    _, (dense, _) = _layers("nemo2511-llama3-8b-8-b200-mxfp8", "2.12")
    assert per_phase(dense) == (DENSE_LINEARS, DENSE_LINEARS, 0)
    _, (same, _) = _layers("nemo2511-llama3-8b-8-b200-mxfp8", "2.14")
    assert same == dense


def test_sequence_parallel_gathered_activations_keep_compact_scales():
    # 2.12 linear.py: no optimize_for_gemm for a column-parallel input or a row-parallel output gradient under
    # sequence parallelism: QKV's and fc1's inputs (fprop, wgrad), the projection's and fc2's output gradients
    # (dgrad, wgrad)
    _, (dense, _) = _layers("nemo2511-llama3-8b-8-b200-mxfp8", "2.12", sequence_parallel=True)
    assert per_phase(dense) == (DENSE_LINEARS + 2, DENSE_LINEARS + 2, 4)
    # before 2.12 every operand is swizzled anyway
    _, (old, _) = _layers("nemo2511-llama3-8b-8-b200-mxfp8", "2.9", sequence_parallel=True)
    assert per_phase(old) == (2 * DENSE_LINEARS,) * 3


def test_te_2_18_pre_swizzles_cached_weights_not_fp8_primary_ones():
    _, (dense, _) = _layers("nemo2511-llama3-8b-8-b200-mxfp8", "2.18")
    assert per_phase(dense) == (0, 0, 0)
    _, (fp8_params, _) = _layers("nemo2511-llama3-8b-8-b200-mxfp8", "2.18", fp8_primary_weights=True)
    assert per_phase(fp8_params) == (DENSE_LINEARS, DENSE_LINEARS, 0)


@pytest.mark.parametrize("ep", [8, 16])
def test_grouped_moe_layer_two_per_grouped_call_up_to_64_local_experts(ep):
    # te_general_grouped_gemm: one multi_tensor_swizzle_scaling_factors for the A list, one for the B list: the MoE
    # block adds 2 x 2 a phase to the attention block's 2 x 2 (Qwen3: no shared experts), at 16 or 8 local experts
    _, (dense, moe_layer) = _layers("nemo2511-qwen3-235b-64-b200-fp8", "2.9", ep=ep)
    attention = 2 * 2   # QKV and the output projection, 2 operands each
    assert per_phase(moe_layer) == (attention + 2 * GROUPED_CALLS,) * 3
    assert sum(moe_layer.values()) == 24
    _, (_, newer) = _layers("nemo2511-qwen3-235b-64-b200-fp8", "2.12", ep=ep)
    # 2.12: the weight list only, in fprop and dgrad
    assert per_phase(newer) == (2 + GROUPED_CALLS, 2 + GROUPED_CALLS, 0)


def test_no_swizzles_without_mxfp8():
    _, (dense, _) = _layers("nemo2511-llama3-8b-8-b200-fp8", "2.9")   # FP8 current scaling
    assert sum(dense.values()) == 0


def test_device_time_not_double_counted():
    # the swizzles' device time is inside gemm.block_scaled_slowdown: each launch adds zero work, the GEMMs keep
    # theirs. The slowdown's benchmark timed whole generic_gemm calls with CUDA events (efficiency.yaml
    # block_scaled_slowdown_source), the swizzles' queued launches and kernels inside: the block's device side does
    # not grow at all (round-32 review; round 32 had charged launch_overhead_s a launch, round 31 the fitted gap),
    # its host side by one dispatch a launch
    scenario = config.load("nemo2511-qwen3-235b-64-b200-fp8")
    m, shard = scenario.model, shard_for(scenario)
    gpu = scenario.cluster.gpu
    before = layer_ops(m, shard, moe.moe_block(m, shard, ep=8))
    after = mxfp8_swizzles.apply(before, "2.9", False, False)
    host = kernels.host_model()
    for phase in PHASES:
        added = [op for op in after[phase] if op.name == mxfp8_swizzles.OP_NAME]
        assert added and all(op.flop == 0 and op.hbm_bytes == 0 for op in added)
        assert [op for op in after[phase] if op.name != mxfp8_swizzles.OP_NAME] == before[phase]
        old, new = (kernels.stream_time(ops, gpu, "fp8") for ops in (before[phase], after[phase]))
        assert new.device_s == pytest.approx(old.device_s, rel=1e-12)
        assert new.kernels - old.kernels == len(added)
        assert all(op.queued and op.no_work and op.in_measured_call for op in added)
        assert new.device_bound_s(host) == pytest.approx(old.device_bound_s(host), rel=1e-12)
        # the per-op gap (op_time_s, the synced stall) and the block's count formula agree
        assert host.gap_s(added[0]) == 0.0
        launched = [op for op in after[phase] if op.name not in (kernels.HOST_ONLY_LAUNCH, kernels.HOST_SYNC)]
        assert sum(host.gap_s(op) for op in launched) == pytest.approx(new.gaps_s(host), rel=1e-12)
        assert new.host_bound_s(host) - old.host_bound_s(host) == pytest.approx(
            len(added) * host.dispatch_s * kernels.host_cpu_ratio(gpu.name), rel=1e-9)


def _scenario_counts(name, monkeypatch, release=None, **training):
    # the scenario-level settings plan.py applies (mxfp8_swizzles.apply_for), the container's TE release replaced
    scenario = config.load(name)
    if training:
        scenario = scenario.model_copy(update={"training": scenario.training.model_copy(update=training)})
    if release is not None:
        monkeypatch.setattr(mxfp8_swizzles, "container_te", lambda _version: release)
    m, shard = scenario.model, shard_for(scenario)
    return scenario, m, shard


def test_scenario_mxfp8_primary_weights_stay_compact_at_te_2_18(monkeypatch):
    # TE 2.18.0 wheel, module/base.py _enable_weight_preswizzle: "if self.primary_weights_in_fp8: return False"; the
    # NeMo MXFP8 rows run fp8_param_gather (Megatron-Bridge bf16_with_mxfp8_mixed), so their weights keep compact
    # scales and each fprop / dgrad call swizzles them: 4 + 4 a dense layer (tp 1), as before 2.18
    name = "nemo2604-llama3-70b-64-gb300-mxfp8"
    for fp8_param_gather, expected in ((True, (DENSE_LINEARS, DENSE_LINEARS, 0)), (False, (0, 0, 0))):
        scenario, m, shard = _scenario_counts(name, monkeypatch, "2.18", fp8_param_gather=fp8_param_gather)
        counts = mxfp8_swizzles.count(mxfp8_swizzles.apply_for(scenario, layer_ops(m, shard)))
        assert per_phase(counts) == expected


def test_scenario_release_and_sequence_parallelism_from_the_scenario():
    # 26.04's TE 2.14 (Megatron-Bridge software-versions.md), tp 2 with sequence parallelism: 6 + 6 + 4 a dense layer
    scenario = config.load("nemo2604-llama3-70b-64-gb200-mxfp8")
    counts = mxfp8_swizzles.count(mxfp8_swizzles.apply_for(scenario, layer_ops(scenario.model, shard_for(scenario))))
    assert per_phase(counts) == (DENSE_LINEARS + 2, DENSE_LINEARS + 2, 4)


@pytest.mark.parametrize(("release", "expected"), [("2.9", (2, 2, 2)), ("2.14", (1, 1, 0))])
def test_mtp_eh_proj_swizzles_like_a_dense_linear(monkeypatch, release, expected):
    # the MTP module's eh_proj is a TEColumnParallelLinear run in fp8 (workload.mtp): one gemm() call a phase, its two
    # operands swizzled before 2.12, its weight alone from 2.12 (tp 1); the output head is not an fp8 GEMM
    scenario, m, shard = _scenario_counts("nemo2604-deepseek-v3-256-gb300-mxfp8", monkeypatch, release)
    counts = mxfp8_swizzles.count(mxfp8_swizzles.apply_for(scenario, mtp.extra_ops(m, shard)))
    assert m.mtp_layers == 1 and per_phase(counts) == expected


def test_grouped_call_past_64_local_experts_launches_a_kernel_per_64_a_list():
    # common/swizzle/swizzle.cu multi_tensor_swizzle_scaling_factors: its argument struct holds kMaxTensorsPerKernel =
    # 64 tensors and launches each time it fills; Qwen3's 128 experts at ep 1 are 2 kernels a list, at ep 2 (64) one
    attention = 2 * 2
    for ep, kernels_per_list in ((1, 2), (2, 1)):
        _, (_, moe_layer) = _layers("nemo2511-qwen3-235b-64-b200-fp8", "2.9", ep=ep)
        assert per_phase(moe_layer) == (attention + 2 * kernels_per_list * GROUPED_CALLS,) * 3
