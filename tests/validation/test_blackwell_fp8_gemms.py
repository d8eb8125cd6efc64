"""Blackwell fp8 GEMMs and MXFP8's quantize kernel against published measurements (docs/calibration/round-17.md, "Round
17").

Sources (all short benchmarks: the model at the benchmark clock, ``sustained=False``):
- Transformer Engine's GEMM benchmark (benchmarks/gemm/benchmark_gemm.py; docs/examples/gemm_profiling/
  gemm_profiling.rst, NVIDIA/TransformerEngine PR 2863, 2026), B300 SXM6 AC, pre-quantized (GEMM kernels only), the
  12 fprop/dgrad/wgrad GEMMs of a hidden 4096 / ffn 16384 / 32-head layer at M = 31 x 512 = 15,872 tokens, per
  layer: BF16 13.102 ms, FP8 current scaling 6.812, MXFP8 7.161.
- cuDNN on a B200, 128 x 512x512x4096: bmm_fp8 2369.0 TFLOP/s, bmm_mxfp8 2347.7 (flashinfer-ai/flashinfer PR 2256).
- cuDNN block-scaled dot through XLA on a GB200, 2560 x 2560 qkvo: MXFP8 1.33x over bf16, per-tensor fp8 1.35x
  (marin-community/marin issue 7282).
- Transformer Engine's MXFP8 cast-only kernel, B200, bf16 8192 x 8192, rowwise + columnwise: 52.34 us
  (ROCm/TransformerEngine PR 598, the "B200 (us)" column of its CAST_ONLY table).

Tolerances: 2% on the TE ratios (one table, one machine; the model's per-tensor ratio is 0.7% off), 1% on the
quantize time (the fraction is that measurement's); the cross-checks must lie between 1 and the slowdown.
Fails: with block_scaled_slowdown at 1 (MXFP8 / BF16 1.909 against 1.830), with the quantize at the generic 0.9
(43.3 us against 52.34) or when MXFP8 runs' ops are not marked block-scaled.
"""

import pytest

from simcluster.spec import hardware
from simcluster.spec.model import TransformerSpec
from simcluster.workload import fp8_recipes, kernels
from simcluster.workload.ops import Op, Shard, layer_ops

B300 = hardware.gpu("b300")
TOKENS, HIDDEN, FFN, QKV = 31 * 512, 4096, 16384, 3 * 4096
TE_MS = {"bf16": 13.102, "fp8": 6.812, "mxfp8": 7.161}     # per layer, pre-quantized, B300
CROSS_CHECKS = {"cudnn_bmm_b200": 2369.0 / 2347.7, "cudnn_xla_gb200": 1.35 / 1.33}   # MXFP8 time / per-tensor
TE_CAST_BOTH_US, CAST_ELEMENTS = 52.34, 8192 * 8192


def _layer_gemms() -> list[tuple[int, int, int]]:
    """(m, n, k) of the fprop, dgrad and wgrad of QKV, attention out, MLP up, MLP down (the table's shapes)."""
    shapes = []
    for k, n in ((HIDDEN, QKV), (HIDDEN, HIDDEN), (HIDDEN, FFN), (FFN, HIDDEN)):
        shapes += [(TOKENS, n, k), (TOKENS, k, n), (k, n, TOKENS)]
    return shapes


def _layer_ms(precision: str, block_scaled: bool = False) -> float:
    return 1e3 * sum(kernels.op_time_s(Op("gemm", "gemm", 2.0 * m * n * k, 0.0, m, n, k, block_scaled=block_scaled),
                                       B300, precision, sustained=False) for m, n, k in _layer_gemms())


def test_per_tensor_fp8_over_bf16_on_blackwell_matches_transformer_engines_benchmark():
    """The fp8 ceiling (0.829, from Hopper GEMMs) holds on Blackwell relative to bf16's: 1.909 against 1.923."""
    measured = TE_MS["bf16"] / TE_MS["fp8"]
    assert _layer_ms("bf16") / _layer_ms("fp8") == pytest.approx(measured, rel=0.02)


def test_mxfp8_over_bf16_on_blackwell_matches_transformer_engines_benchmark():
    measured = TE_MS["bf16"] / TE_MS["mxfp8"]
    assert _layer_ms("bf16") / _layer_ms("fp8", block_scaled=True) == pytest.approx(measured, rel=0.02)


def test_other_libraries_lose_less_to_block_scaling_than_the_model_charges():
    """Cross-checks from cuDNN (flashinfer, XLA): MXFP8 between per-tensor fp8 and the model's TE cuBLASLt time."""
    slowdown = _layer_ms("fp8", block_scaled=True) / _layer_ms("fp8")
    for ratio in CROSS_CHECKS.values():
        assert 1.0 <= ratio <= slowdown


def test_mxfp8_quantize_runs_at_the_rate_measured_for_transformer_engines_kernel():
    both = fp8_recipes.cast_bytes_per_element("mxfp8")
    op = Op(fp8_recipes.CAST_OP, "memory", float(CAST_ELEMENTS), both * CAST_ELEMENTS, block_scaled=True)
    model_us = kernels.op_time_s(op, hardware.gpu("b200"), "fp8", sustained=False) * 1e6
    assert model_us == pytest.approx(TE_CAST_BOTH_US, rel=0.01)


MODEL = TransformerSpec(layers=1, hidden=256, heads=4, vocab=1000)


@pytest.mark.parametrize("recipe", ["mxfp8", "current"])
def test_only_mxfp8_runs_mark_their_gemms_and_casts_block_scaled(recipe):
    shard = Shard(seq_len=512, micro_batch=2, tp=2, sequence_parallel=True, precision="fp8", fp8_recipe=recipe,
                  fp8_transpose=False)
    ops = [op for phase in layer_ops(MODEL, shard).values() for op in phase]
    gemms = [op for op in ops if op.kind == "gemm"]
    casts = [op for op in ops if op.name == fp8_recipes.CAST_OP]
    assert gemms and casts
    assert {op.block_scaled for op in gemms + casts} == {recipe == "mxfp8"}
