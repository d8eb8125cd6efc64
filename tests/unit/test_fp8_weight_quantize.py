"""Transformer Engine's fp8 weights once a step (workload/fp8_params.py ``weight_quantize_kernels``,
``weight_workspace_bytes_per_param``; docs/calibration.md "Round 18: what an FP8 step does beyond its GEMMs"),
against counts made by hand from the sources the module cites: on a chunk's first microbatch TE 1.8-1.10's
``get_fp8_workspace(..., cache_name="weight", update_workspace=is_first_microbatch, with_transpose=True)`` runs one
``cast_transpose_`` per GEMM weight (read 2, write 1 + 1) into a cached fp8 copy with its transpose; with fp8
parameters only the transpose is remade once after the optimizer (read 1, write 1); where fp8 GEMMs take any layout
(Blackwell) no transpose is written; current scaling reads the weight once more for its amax; MXFP8 writes two
block-scaled copies. Llama 3 8B's layer: 218,103,808 GEMM weights in 4 tensors (QKV, projection, fc1, fc2)."""

import pytest

from simcluster.engine.simulation import Simulation
from simcluster.parallel import memory, plan
from simcluster.spec import config
from simcluster.workload import fp8_params, kernels

LAYER_GEMM_WEIGHTS = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336   # Llama 3 8B: Q, O, K, V, gate, up, down
LAYERS = 32
WEIGHTS = LAYERS * LAYER_GEMM_WEIGHTS


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
    ("current", True, False, 2 + 2 + 1 + 1, 2),     # the amax pass, then the cast-transpose
    ("current", True, True, 1 + 1, 1),
    ("mxfp8", False, False, 2 + 2 * (1 + 1 / 32), 1),   # rowwise and columnwise copies with their E8M0 scales
    ("mxfp8", False, True, 2 + 2 * (1 + 1 / 32), 1),    # fp8 parameters are not modelled for MXFP8: cast as without
    ("torchao_tensorwise", True, False, 0, 0),          # torchao casts on every call (workload/torchao_float8.py)
])
def test_weight_quantize_bytes_and_kernels(recipe, transpose, fp8_param_gather, per_weight, kernels_per_tensor):
    found = fp8_params.weight_quantize_kernels(recipe, transpose, fp8_param_gather, WEIGHTS, LAYERS)
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


def test_fp8_step_pays_it_once_not_per_microbatch():
    """Twice the microbatches (global batch 32 against 16 at dp 8) leave the optimizer's share unchanged."""
    few, many = (Simulation(_scenario(training={"fp8_param_gather": False, "global_batch_size": g})).plan
                 for g in (16, 32))
    assert many.microbatches == 2 * few.microbatches
    assert many.optimizer_s == few.optimizer_s


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
