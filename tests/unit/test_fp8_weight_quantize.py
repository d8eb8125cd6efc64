"""Transformer Engine's fp8 weights once a step (workload/fp8_params.py ``weight_quantize_kernels``,
``weight_workspace_bytes_per_param``; docs/calibration/round-18.md "Round 18: what an FP8 step does beyond its GEMMs"),
against counts made by hand from the sources the module cites: on a chunk's first microbatch TE 1.8-1.10's
``get_fp8_workspace(..., cache_name="weight", update_workspace=is_first_microbatch, with_transpose=True)`` runs one
``cast_transpose_`` per GEMM weight (read 2, write 1 + 1) into a cached fp8 copy with its transpose; with fp8
parameters only the transpose is remade once after the optimizer (read 1, write 1); where fp8 GEMMs take any layout
(Blackwell) no transpose is written; current scaling reads the weight once more for its amax; MXFP8 writes two
block-scaled copies. Llama 3 8B's layer: 218,103,808 GEMM weights in 4 tensors (QKV, projection, fc1, fc2). The work
runs in each chunk's forward of a step's first microbatch (Megatron-Core ``forward_step`` ->
``set_is_first_microbatch``), so under pipelining it lies on the fill path through every stage."""

import pytest

from simcluster import engine
from simcluster.engine.simulation import Simulation
from simcluster.parallel import memory, plan
from simcluster.spec import config, model
from simcluster.workload import fp8_params, fp8_recipes, kernels
from simcluster.workload.ops import Op

LAYER_GEMM_WEIGHTS = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336   # Llama 3 8B: Q, O, K, V, gate, up, down
LAYERS = 32
WEIGHTS = LAYERS * LAYER_GEMM_WEIGHTS
# its four tensors at tp 1: QKV (4096 x (4096 + 2 x 1024)), projection, fc1 (gate and up fused), fc2
TENSORS = [(4096 * 6144, LAYERS), (4096 * 4096, LAYERS), (2 * 4096 * 14336, LAYERS), (4096 * 14336, LAYERS)]


def _scenario(gpu="h100-sxm", training=None, dp=8):
    return config.from_dict({
        "name": "fp8-weights", "cluster": {"gpu": gpu, "gpus_per_node": 8, "nodes": 1}, "model": "llama3-8b",
        "training": {"seq_len": 2048, "global_batch_size": 2 * dp, "micro_batch_size": 1, "precision": "fp8",
                     **(training or {})},
        "parallelism": {"tp": 1, "dp": dp, "pp": 1}})


@pytest.mark.parametrize(("recipe", "transpose", "fp8_param_gather", "per_weight", "kernels_per_tensor"), [
    ("delayed", True, False, 2 + 1 + 1, 1),         # Hopper: cast_transpose_ into the cached fp8 weight
    ("delayed", False, False, 2 + 1, 1),            # Blackwell: the fp8 copy alone
    ("delayed", True, True, 1 + 1, 1),              # fp8 parameters on Hopper: the transpose, once after the step
    ("delayed", False, True, 0, 0),                 # fp8 parameters on Blackwell: nothing left to do
    ("current", True, False, 2 + 2 + 1 + 1, 4),     # amax zeroed, its pass, the scale, the cast-transpose
    ("current", True, True, 1 + 1, 1),
    ("mxfp8", False, False, 2 + 2 * (1 + 1 / 32), 1),   # rowwise and columnwise copies with their E8M0 scales
    ("mxfp8", False, True, 2 + 2 * (1 + 1 / 32), 1),    # fp8 parameters are not modelled for MXFP8: cast as without
    ("torchao_tensorwise", True, False, 0, 0),          # torchao casts on every call (workload/torchao_float8.py)
])
def test_weight_quantize_bytes_and_kernels(recipe, transpose, fp8_param_gather, per_weight, kernels_per_tensor):
    found = fp8_params.weight_quantize_kernels(recipe, transpose, fp8_param_gather, TENSORS)
    assert sum(size for _, _, size in found) == pytest.approx(per_weight * WEIGHTS, rel=1e-12)
    assert len(found) == kernels_per_tensor * 4 * LAYERS


def test_plan_charges_the_cast_with_the_optimizer_at_least_at_hbm_speed():
    """The charge is the kernels' time on the stream: no faster than the bytes at the H100's 3.35 TB/s, no slower
    than at half of it plus the fitted gap of each of the 128 kernels."""
    scenario = _scenario(training={"fp8_param_gather": False})
    charged = plan.fp8_weight_quantize_s(scenario, 0, False)
    hbm = 4 * WEIGHTS / 3.35e12
    assert hbm < charged < 2 * hbm + 128 * kernels.host_model().kernel_gap_s
    assert plan.fp8_weight_quantize_s(_scenario(training={"precision": "bf16"}), 0, False) == 0.0


def test_llama_layer_has_the_four_tensors_counted_by_hand():
    assert memory.chunk_gemm_weight_tensors(model.preset("llama3-8b"), 1, LAYERS) == TENSORS


def _step_s(scenario, monkeypatch=None, weights=True):
    if not weights:
        monkeypatch.setattr(plan, "chunk_weight_quantize_s", lambda *_args: 0.0)
    return float(engine.simulate(scenario, check_memory=False).summary["step_time_s"])


def test_fp8_step_pays_it_once_not_per_microbatch(monkeypatch):
    """Twice the microbatches (global batch 32 against 16 at dp 8) add the same step time with the weight term as
    without it; the optimizer's share does not hold it."""
    few, many = (_scenario(training={"fp8_param_gather": False, "global_batch_size": g}) for g in (16, 32))
    assert Simulation(many).plan.microbatches == 2 * Simulation(few).plan.microbatches
    with_weights = _step_s(many) - _step_s(few)
    charged = Simulation(few).plan.chunks[0].first_forward_s
    assert charged == pytest.approx(plan.fp8_weight_quantize_s(few, 0, False), rel=1e-12) and charged > 0
    optimizer_with = Simulation(few).plan.optimizer_s
    without = _step_s(many, monkeypatch, False) - _step_s(few, monkeypatch, False)
    assert with_weights == pytest.approx(without, rel=1e-9, abs=1e-9)
    assert Simulation(few).plan.optimizer_s == optimizer_with   # not charged with the optimizer


def test_pipelined_step_pays_every_stage_on_the_fill(monkeypatch):
    """pp 2, 1F1B, dp 1: the first microbatch's forward crosses stage 0 then stage 1, and everything after waits for
    it, so the step grows by the two stages' quantize (each stage's chunk term), not by one stage's."""
    scenario = config.from_dict({
        "name": "fp8-fill", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 2, "nodes": 1}, "model": "llama3-8b",
        "training": {"seq_len": 2048, "global_batch_size": 8, "micro_batch_size": 1, "precision": "fp8",
                     "fp8_param_gather": False},
        "parallelism": {"tp": 1, "dp": 1, "pp": 2, "zero_stage": 0}})
    terms = [plan.fp8_weight_quantize_s(scenario, stage, False) for stage in (0, 1)]
    assert [c.first_forward_s for c in Simulation(scenario).plan.chunks] == pytest.approx(terms, rel=1e-12)
    grown = _step_s(scenario) - _step_s(scenario, monkeypatch, False)
    assert grown == pytest.approx(sum(terms), rel=1e-6)
    assert grown > 1.5 * max(terms)


def test_interleaved_step_pays_every_chunk_on_the_fill(monkeypatch):
    """pp 2 with 2 virtual stages, dp 1: the first microbatch's forward crosses chunks 0, 1, 2, 3 in turn (stage 0,
    1, 0, 1), each quantizing its 8 layers' weights on it, and everything after waits for it: the step grows by 4 x
    the chunk term. Exchanges asynchronous (``p2p: async``): Megatron-Core's blocking warm-up and cool-down exchanges
    (round 38) hold a sender for its transfer, shifting the fill by part of a transfer."""
    scenario = config.from_dict({
        "name": "fp8-fill-interleaved", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 2, "nodes": 1},
        "model": "llama3-8b",
        "training": {"seq_len": 2048, "global_batch_size": 8, "micro_batch_size": 1, "precision": "fp8",
                     "fp8_param_gather": False},
        "parallelism": {"tp": 1, "dp": 1, "pp": 2, "virtual_stages": 2, "zero_stage": 0, "p2p": "async"}})
    chunks = Simulation(scenario).plan.chunks
    term = plan.chunk_weight_quantize_s(scenario, LAYERS // 4, 0, False)
    assert len(chunks) == 4 and [c.first_forward_s for c in chunks] == pytest.approx([term] * 4, rel=1e-12)
    grown = _step_s(scenario) - _step_s(scenario, monkeypatch, False)
    assert grown == pytest.approx(4 * term, rel=1e-6)


def test_fp8_weight_quantize_is_on_the_timeline_as_compute_not_optimizer():
    result = engine.simulate(_scenario(training={"fp8_param_gather": False}), check_memory=False)
    events = result.events
    quantize = events[events["name"].str.startswith("fp8 weight quantize")]
    assert len(quantize) and set(quantize["stream"]) == {"compute"} and set(quantize["microbatch"]) == {0}


def test_a_straggler_quantizes_its_weights_slower():
    """The quantize is kernels on the rank's compute stream: a straggler at slowdown 1.5 takes 1.5 x the charge, as
    its optimizer step does (engine.variability ``speed_of``)."""
    scenario = _scenario(training={"fp8_param_gather": False})
    charged = Simulation(scenario).plan.chunks[0].first_forward_s
    slowed = config.from_dict(config.rebuildable(scenario) | {"variability": {
        "gpu_speed_cv": 0.0, "kernel_jitter_cv": 0.0, "stragglers": [{"ranks": [0], "slowdown": 1.5}]}})
    events = engine.simulate(slowed, check_memory=False).events
    quantize = events[events["name"].str.startswith("fp8 weight quantize") & (events["rank"] == 0)]
    assert len(quantize) == 1
    assert (quantize["end_s"] - quantize["start_s"]).iloc[0] == pytest.approx(1.5 * charged, rel=1e-9)


def test_moe_and_mla_tensors_counted_by_hand():
    """DeepSeek-V3 at tp 2, ep 64 (the NeMo 25.09 H100 row's layout): an MoE layer has MLA's 5 attention weights
    (q down, q up, kv down, kv up, projection), the shared expert's fc1 and fc2, and 256 / 64 = 4 local experts with
    their own fc1 and fc2 each: 15 tensors; a dense layer 5 + 2. Mixtral 8x7B at ep 1: QKV, projection and 8 experts
    x 2 = 18 tensors a layer, at ep 8 4."""
    dsv3 = config.load("nemo2509-deepseek-v3-1024-h100-fp8").model
    h, tp = 7168, 2
    # the down-projections whole on every rank (TELinear parallel_mode 'duplicated', workload/mla.py)
    attention = [h * 1536, 1536 * 128 * 192 / tp, h * 576, 512 * 128 * 256 / tp, 128 * 128 * h / tp]
    moe = memory.chunk_gemm_weight_tensors(dsv3, tp, 1, 1, 64, 1)
    assert sorted(moe) == sorted([(n, 1) for n in attention] + [(2 * h * 2048 / tp, 1), (h * 2048 / tp, 1),
                                                               (2 * h * 2048, 4), (h * 2048, 4)])
    assert sum(count for _, count in moe) == 15
    dense = memory.chunk_gemm_weight_tensors(dsv3, tp, 1, 0, 64, 1)
    assert sorted(dense) == sorted([(n, 1) for n in attention] + [(2 * h * 18432 / tp, 1), (h * 18432 / tp, 1)])
    mixtral = model.preset("mixtral-8x7b")
    assert sum(c for _, c in memory.chunk_gemm_weight_tensors(mixtral, 1, 32, 32, 1, 1)) == 18 * 32
    assert sum(c for _, c in memory.chunk_gemm_weight_tensors(mixtral, 1, 32, 32, 8, 1)) == 4 * 32
    # bytes: every tensor's own size, summing to the chunk's GEMM weights (memory.chunk_gemm_weights)
    found = sum(n * c for n, c in memory.chunk_gemm_weight_tensors(mixtral, 2, 4, 4, 4, 1))
    assert found == pytest.approx(memory.chunk_gemm_weights(mixtral, 2, 4, 4, memory.expert_params_per_rank(
        mixtral, 4, 1)), rel=1e-12)


@pytest.mark.parametrize(("gpu", "recipe", "per_weight"), [
    ("h100-sxm", "delayed", 2),               # fp8 data + transpose beside the 16-bit weight
    ("b200", "delayed", 1),
    ("b200", "mxfp8", 2 * (1 + 1 / 32)),
    ("h100-sxm", "torchao_tensorwise", 0),
])
def test_fp8_run_without_fp8_parameters_holds_the_cached_copies(gpu, recipe, per_weight):
    fp8 = memory.per_gpu_memory(_scenario(gpu, {"fp8_param_gather": False, "fp8_recipe": recipe}))
    bf16 = memory.per_gpu_memory(_scenario(gpu, {"precision": "bf16"}))
    assert fp8.weights_bytes == bf16.weights_bytes
    assert fp8.workspace_bytes - bf16.workspace_bytes == pytest.approx(per_weight * WEIGHTS, rel=1e-12)


def test_fp8_parameters_save_two_bytes_a_weight_on_hopper():
    """Without them: the 16-bit weight (2) and TE's cached fp8 copy and transpose (2); with them the fp8 weight and
    its transpose (2): 2 bytes a GEMM weight saved in all."""
    off = memory.per_gpu_memory(_scenario(training={"fp8_param_gather": False}))
    on = memory.per_gpu_memory(_scenario(training={"fp8_param_gather": True}))
    assert off.total_bytes - on.total_bytes == pytest.approx(2 * WEIGHTS, rel=1e-12)


@pytest.mark.parametrize("gpu", ["h100-sxm", "b200"])
def test_a_weights_current_scaling_scale_kernel_pays_the_queued_launch_latency(gpu):
    """Round-32 review: TE 2.x quantizes each weight in one call (base.py ``get_weight_workspace`` -> ``tex.quantize``
    -> ``quantize_impl``: zeroing, amax, scale, cast), so the one-element scale kernel, queued by that call's C++ with
    no work of its own, pays ``launch_overhead_s`` like an activation's, not the fitted gap; the zeroing, the call's
    first launch, keeps the gap (workload/call_issue.py). Against the same kernels untagged: 128 weight tensors of
    Llama 3 8B, one scale kernel each, (fitted gap - 4 us) apart; delayed scaling and MXFP8 (one kernel a call) and
    fp8 parameters' transposes are unchanged."""
    host = kernels.host_model()
    for recipe, fp8_weights, saved_per_tensor in (("current", False, host.kernel_gap_s - kernels.launch_overhead_s()),
                                                  ("current", True, 0.0), ("delayed", False, 0.0),
                                                  ("mxfp8", False, 0.0)):
        if recipe == "mxfp8" and gpu == "h100-sxm":   # Blackwell only
            continue
        scenario = _scenario(gpu=gpu, training={"fp8_recipe": recipe})
        spec = scenario.cluster.gpu
        found = fp8_params.weight_quantize_kernels(recipe, fp8_recipes.transposes(spec.name), fp8_weights, TENSORS)
        untagged = kernels.stream_time([Op(name, "memory", 0.0, float(size)) for name, _, size in found], spec, "fp8")
        charged = plan.chunk_weight_quantize_s(scenario, LAYERS, 0, fp8_weights)
        if not found:
            assert charged == 0.0
            continue
        assert untagged.device_bound_s(host) - charged == pytest.approx(4 * LAYERS * saved_per_tensor, abs=1e-12)
