"""Hopper FP8 GEMMs at the dense NeMo FP8 recipes' exact per-GPU shapes, against the nearest published measurements
(round 27: docs/calibration/round-27.md "Round 27: Hopper FP8 GEMMs at the dense recipes' shapes").

The pipelined Llama 3 70B FP8 recipes on 64 H100 (tp 4, M = 8192 tokens a microbatch) simulate slow while the 405B
(tp 8, cp 2, M = 4096) and GPT-3 175B (tp 4, M = 2048) FP8 rows scatter around zero, and "Round 27: the pipelined
70B recipes' last stage" put about 1.0 ms of a ~14 ms 70B layer-microbatch inside the layer. The layers' GEMMs, as
``layer_ops`` builds them (forward with fast accumulation, dgrad and wgrad with the split accumulator, as Transformer
Engine runs them), are compared here with the measured Hopper GEMMs of tests/validation/test_fp8_gemm_shapes.py
(fp8: tilelang, cuBLAS via torch._scaled_mm, sglang's row-wise scaled_mm, DeepGEMM; bf16: XLA's sm_90 table,
PyTorch, torch-performance-test-data#79), each measurement against the model in its own precision and
accumulation mode (short benchmarks, ``sustained=False``).

Two checks:
- the narrow-N falloff. The 70B's QKV is 2,560 wide at tp 4 (the 405B's 2,304 at tp 8) and its proj dgrad / wgrad
  2,048. The measured narrow-N Hopper fp8 GEMMs (DeepGEMM 4096 x 2112 x 7168, where the model picks 128 x 64
  tiles, 1056 in 8 full waves at relative throughput 0.80; cuBLAS 16384 x 1024 x 8192 and 16384 x 3584 x 8192,
  256 x 128 tiles, 0.97) read 0.98-1.02 of the model against a median 1.00 for the wide deep ones (0.98-1.16): the
  model's falloff at narrow N is the measured one (within 5%; fails with the tile choice and wave quantisation
  dropped, DeepGEMM's point then 0.80).
- each layer's GEMMs at their nearest measurements. Each GEMM's time is scaled by the mean measured / model of the
  two measured shapes nearest to it (log distance over the shorter and longer output side and K); the layer's fp8
  GEMM time moves by 0.983 (Llama 3 70B, tp 4), 0.962 (Llama 3 405B, tp 8), 0.982 (GPT-3 175B, tp 4) and 0.980
  (Llama 3 8B, tp 1), within 5% each, and the bf16 GEMMs of the same shapes by 0.985-1.003: the fp8/bf16 time
  ratio the measurements imply is 0.959-0.995 of the model's (70B 0.980), within the pair target of 5%. Closing the
  70B rows through the GEMMs would need that layer's fp8 GEMMs about 11% faster (0.89: ~1.0 ms of ~9.4 ms) and
  the 405B's not (simulated fast): the measurements give the 405B, not the 70B, the largest correction.
  Checked to fail: the split accumulator's slowdown dropped (every shape test), a DeepGEMM-like fp8 per-tile
  overhead (``k_overhead`` 325, 650 fp8 elements: the nearest-point tests), wave and tile quantisation dropped
  (the narrow-N test).
  Not resolved here: the fp8 ceiling to better than ~3% (bf16's 0.851 passes; tests/validation/
  test_gemm_fp8_ceiling.py holds it).
- a same-source fp8 / bf16 pair at deep training shapes: FBGEMM's row-wise fp8 GEMM ("fp8 row gemm only",
  f8f8bf16_rowwise, fast accumulation by default: ``bool use_fast_accum=True`` in its op schema, pytorch/FBGEMM @
  be7c94b3 fbgemm_gpu/experimental/gen_ai/src/quantize/quantize.cpp) and bf16 on one "H100 500W"
  (pytorch/FBGEMM#2546, 2024): 8192^3 585.23 / 1125.51, 65536 x 8192 x 7168 575.12 / 1082.75, 65536 x 3584 x 8192
  546.31 / 1141.38 TFLOP/s (bf16 / fp8). Both precisions read 0.67-0.73 of the full-clock model (the 500 W part's
  power-capped clock, efficiency.yaml clock_ratio h100-sxm-96gb-500w 0.70: test_power_capped_clock.py), and fp8
  over bf16 is 1.005, 0.984 and 1.090 of the model's fast-accumulation ratio (1.914-1.917): median 1.005, within 3%.
"""

import dataclasses
import math
import statistics

import pytest

from simcluster.spec import config, hardware
from simcluster.workload import kernels
from simcluster.workload.ops import layer_ops, shard_for
from tests.validation.test_fp8_gemm_shapes import BF16, FP8, _op

H100 = hardware.gpu("h100-sxm")

LAYERS = {"llama3-70b tp4": "nemo2511-llama3-70b-64-h100-fp8", "llama3-405b tp8": "nemo2511-llama3-405b-1024-h100-fp8",
          "gpt3-175b tp4": "nemo2407-gpt3-175b-128-h100-fp8", "llama3-8b tp1": "nemo2407-llama3-8b-8-h100-fp8"}
NARROW_N = 3584        # an output side this narrow or narrower
WIDE_DEEP = (4096, 4096)   # shorter output side and K at least this: the wide, deep points judged against
NARROW_TOLERANCE = 0.05
LAYER_TOLERANCE = 0.05
PAIR_TOLERANCE = 0.05
NEIGHBOURS = 2
# (m, n, k): (bf16, fp8 row-wise with fast accumulation) TFLOP/s, pytorch/FBGEMM#2546, one H100 500W
FBGEMM_PAIRS = {(8192, 8192, 8192): (585.23, 1125.51), (65536, 8192, 7168): (575.12, 1082.75),
                (65536, 3584, 8192): (546.31, 1141.38)}
SAME_SOURCE_TOLERANCE = 0.03


def _mnk(shape):
    """(rows, columns, K) of (m, n, k) or (batch, m, n, k), the batch folded into the rows."""
    return (shape[0] * shape[1], shape[2], shape[3]) if len(shape) == 4 else tuple(shape)


def _ratios(points, precision):
    """[(m, n, k), measured / model] for each measured point, in its own accumulation mode."""
    return [(_mnk(shape), tflops * 1e12 / kernels.achieved_flop_per_s(_op(shape, split), H100, precision))
            for _, shape, tflops, split in points]


def _distance(a, b):
    """Log distance between two GEMM shapes over the shorter and the longer output side and K."""
    return (abs(math.log(min(a[:2]) / min(b[:2]))) + abs(math.log(max(a[:2]) / max(b[:2])))
            + abs(math.log(a[2] / b[2])))


def _layer_gemms(name):
    scenario = config.load(name)
    ops = layer_ops(scenario.model, shard_for(scenario))
    return [op for phase in ops.values() for op in phase if op.kind == "gemm"]


def _layer_factor(name, precision):
    """The layer's GEMM time with each GEMM at the mean measured / model of its nearest measured shapes, over the
    model's: below 1, the measurements say the layer's GEMMs run faster than modelled."""
    ratios = _ratios(FP8 if precision == "fp8" else BF16, precision)
    model = at_measured = 0.0
    for op in _layer_gemms(name):
        if precision != "fp8":
            op = dataclasses.replace(op, split_accumulator=False, precision=None)
        t = op.flop / kernels.achieved_flop_per_s(op, H100, precision)
        near = sorted(ratios, key=lambda p: _distance((op.m, op.n, op.k), p[0]))[:NEIGHBOURS]
        model += t
        at_measured += t / statistics.mean(r for _, r in near)
    return at_measured / model


def test_narrow_n_falloff_matches_the_measured_narrow_gemms():
    ratios = _ratios(FP8, "fp8")
    wide = statistics.median(r for (m, n, k), r in ratios if min(m, n) >= WIDE_DEEP[0] and k >= WIDE_DEEP[1])
    narrow = [r for (m, n, k), r in ratios if min(m, n) <= NARROW_N and k >= WIDE_DEEP[1]]
    assert len(narrow) >= 3
    for r in narrow:
        assert r / wide == pytest.approx(1.0, abs=NARROW_TOLERANCE)


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_fp8_gemms_at_their_nearest_measurements(layer):
    assert _layer_factor(LAYERS[layer], "fp8") == pytest.approx(1.0, abs=LAYER_TOLERANCE)


@pytest.mark.parametrize("layer", LAYERS)
def test_measured_fp8_over_bf16_at_each_layers_shapes(layer):
    """The fp8/bf16 GEMM time ratio the nearest measurements imply over the model's, per layer (0.980 70B, 0.959
    405B, 0.983 GPT-3, 0.995 8B): within 5%, the pair target; none says the 70B's FP8 GEMMs are over-charged
    against its BF16 ones by the ~11% its rows would need."""
    bias = _layer_factor(LAYERS[layer], "fp8") / _layer_factor(LAYERS[layer], "bf16")
    assert bias == pytest.approx(1.0, abs=PAIR_TOLERANCE)


def test_same_source_fp8_over_bf16_pair_at_deep_training_shapes():
    """FBGEMM#2546's bf16 and fast-accumulation fp8 GEMMs on one H100: measured fp8/bf16 over the model's, median
    within 3% (1.005). Deep shapes: it holds the fp8 ceiling over bf16's between 0.81 and 0.86 (fails outside;
    bf16's own 0.851 reads 0.979) and cannot see the per-tile overhead or the split accumulator."""
    bias = [(fp8 / bf16) / (kernels.achieved_flop_per_s(_op(shape), H100, "fp8")
                            / kernels.achieved_flop_per_s(_op(shape), H100, "bf16"))
            for shape, (bf16, fp8) in FBGEMM_PAIRS.items()]
    assert statistics.median(bias) == pytest.approx(1.0, abs=SAME_SOURCE_TOLERANCE)
