"""Published Blackwell GEMM and attention measurements against the kernel model, each in the regime it was measured
in (docs/calibration/round-23.md, "Round 23: Blackwell GEMMs and clocks against published measurements").

    PYTHONPATH=. python scripts/blackwell_kernels.py

A benchmark's regime decides which model figure it is compared with: a *burst* (a few iterations, or a loop shorter
than the ~5 ms after which a B200 starts to throttle, flashinfer-ai/flashinfer#2899) runs at the boost clock the
GEMM ceilings were measured at (``kernels.op_time_s(..., sustained=False)``, launch overhead included); a
*sustained* measurement holds the board at its power cap (the model in training: ``kernels.roofline_s`` at
``clock_ratio``, no launch gap); a *loop* of a few hundred iterations past the throttle onset lies between the two
and is compared with both. Attention kernels count executed FLOP, as the flash-attention benchmarks do.

Prints one line per measurement: measured, model burst, model sustained, and the measurement over the model of its
regime (over the sustained model for loops). A diagnostic: nothing is fitted or written.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from simcluster.core import script_entry
from simcluster.spec import hardware
from simcluster.spec.model import TransformerSpec
from simcluster.workload import fp8_recipes, kernels, power_clock
from simcluster.workload.ops import Op, Shard, attention_core

REGIMES = ("burst", "sustained", "loop")


@dataclass(frozen=True)
class Measurement:
    """One published figure: GPU, kernel, shape (M, N, K; attention: batch, sequence, heads, head dim), TFLOP/s
    (``tflops``) or, for a set of kernels, milliseconds (``ms``), the regime it ran in and its source."""

    key: str
    gpu: str
    kind: str                       # "gemm", "gemm_set" (the TE layer table), "te_linear" (GEMM + its input casts)
    precision: str
    shape: tuple[int, ...]
    value: float
    regime: str
    source: str


# A hidden 4096 / ffn 16384 / 32-head layer at M = 15,872 tokens: Transformer Engine's B300 GEMM table (the shapes of
# tests/validation/test_blackwell_fp8_gemms.py), the 12 fprop / dgrad / wgrad GEMMs
TE_TOKENS, TE_HIDDEN, TE_FFN = 31 * 512, 4096, 16384

MEASUREMENTS = (
    Measurement("msmf-b200-bf16", "b200", "gemm", "bf16", (3072, 18944, 4608), 1439.0, "sustained",
                "S. Bekman, mamf-finder v4 MSMF, 8 B200 with every other GPU computing, median GPU (978-987 W, "
                "1399-1443 MHz; stas00/ml-engineering compute/accelerator/README.md and benchmarks/README.md)"),
    Measurement("msmf-b200-bf16-slowest", "b200", "gemm", "bf16", (3072, 18944, 4608), 1421.0, "sustained",
                "the same node's slowest GPU (benchmarks/README.md: 'on 8 B200s ... 1439, the slowest GPU 1421')"),
    Measurement("msmf-b200-fp8", "b200", "gemm", "fp8", (3072, 18944, 6144), 2788.0, "sustained",
                "mamf-finder v4 MSMF fp8 (975-982 W, 1399-1447 MHz)"),
    Measurement("mamf-b200-bf16", "b200", "gemm", "bf16", (4096, 8192, 3072), 1737.0, "burst",
                "mamf-finder v4 MAMF, sampled clock 1965 MHz"),
    Measurement("mamf-b200-fp8", "b200", "gemm", "fp8", (15360, 4096, 3072), 3432.5, "burst",
                "MAMF fp8 table (torch._scaled_mm)"),
    Measurement("mamf-gb200-bf16", "gb200", "gemm", "bf16", (4096, 9728, 2048), 1822.0, "burst", "MAMF bf16 table"),
    Measurement("mamf-b300-bf16", "b300", "gemm", "bf16", (12288, 18432, 1024), 1769.0, "burst", "MAMF bf16 table"),
    Measurement("te1747-b200-fp8", "b200", "te_linear", "fp8", (8192, 8192, 8192), 2377.1, "loop",
                "NVIDIA/TransformerEngine#1747 (HGX B200, 2025-05): FP8 te.Linear under fp8_autocast, bias=False, 30 "
                "warm-up + 200 timed calls of ~0.45 ms, the input and weight casts included"),
    Measurement("te2863-b300-bf16", "b300", "gemm_set", "bf16", (TE_TOKENS, TE_HIDDEN, TE_FFN), 13.102, "loop",
                "Transformer Engine benchmark_gemm (PR 2863), B300, pre-quantized, 12 GEMMs of a layer, ms"),
    Measurement("te2863-b300-fp8", "b300", "gemm_set", "fp8", (TE_TOKENS, TE_HIDDEN, TE_FFN), 6.812, "loop",
                "the same table, FP8 current scaling, ms"),
    Measurement("ao2427-b200-bf16-4096", "b200", "gemm", "bf16", (4096, 4096, 4096), 1410.0, "burst",
                "pytorch/ao#2427 bench_matmul.py (1 warm-up + 5 profiled calls)"),
    Measurement("ao2427-b200-bf16-8192", "b200", "gemm", "bf16", (8192, 8192, 8192), 1420.0, "burst",
                "pytorch/ao#2427"),
    Measurement("helion2756-b200-fp8-cute", "b200", "gemm", "fp8", (4096, 4096, 4096), 2330.0, "loop",
                "pytorch/helion#2756: hand-written CuTe DSL row-wise scaled fp8 GEMM, triton do_bench (~100 ms)"),
    Measurement("helion2756-b200-fp8-scaled-mm", "b200", "gemm", "fp8", (4096, 4096, 4096), 1860.0, "loop",
                "pytorch/helion#2756: torch._scaled_mm row-wise at the same shape"),
)

# flashinfer-ai/flashinfer#2899 (2026): FlashAttention-4 bf16 forward on a B200, b = 4, s = 8192, 16 heads of 128,
# 100 event-timed iterations of ~1.5 ms back to back: iterations 10-19 at 1450 TFLOP/s (peak, 1965 MHz), 70-79 at
# 1237 (fully throttled, SM clock ~1580 MHz)
FA4_B200 = {"batch": 4, "seq": 8192, "heads": 16, "head_dim": 128, "burst": 1450.0, "throttled": 1237.0,
            "boost_mhz": 1965.0, "throttled_mhz": 1580.0}

# cuDNN 9.13 (PyTorch NGC 25.09), NVIDIA's training benchmark (NVIDIA/cudnn-frontend, benchmark/
# sdpa_benchmark_training/artifacts, sdpa_bf16_benchmark_results_NVIDIA_{B200,GB300}.csv; the points the Blackwell
# attention curve was fitted on, tests/validation/test_attention_exponential_bound.py): batch 1, 128 query / 8
# key-value heads of 128, causal, 131,072 tokens, executed TFLOP/s. Each is one kernel of 0.3-1.3 s, past the ~100 ms
# after which a B200 is fully throttled (flashinfer#2899).
CUDNN_913_128K = {("b200", "forward"): 1355.0, ("b200", "backward"): 1048.0,
                  ("gb300", "forward"): 1721.0, ("gb300", "backward"): 1280.0}

# Sustained GEMM clocks read by mamf-finder (NVML) at the power cap, and the parts' caps and SMs: B200 (v4 MSMF,
# siblings computing) 1399-1443 MHz at 1000 W; B300 (an earlier version, siblings idle) 1455 MHz at 1100 W, its MSMF
# shape holding 1519 of its 1809 TFLOP/s burst (the same shape both ways: 0.840) and its MAMF shape 1487 of 1892
# (0.786; docs/calibration/rounds-1-9.md, "Issue 15: the Hopper and Blackwell clocks"). SMs: efficiency.yaml gemm.sms.
B200_GEMM_MHZ = (1399.0, 1443.0)
B300_GEMM_MHZ = 1455.0
B300_SAME_SHAPE = {"burst": 1809.0, "sustained": 1519.0}
B300_MAMF_SHAPE = {"burst": 1892.0, "sustained": 1487.0}


def gemm_op(shape: tuple[int, int, int]) -> Op:
    m, n, k = shape
    return Op("gemm", "gemm", 2.0 * m * n * k, 0.0, m, n, k)


def te_layer_shapes(tokens: int, hidden: int, ffn: int) -> list[tuple[int, int, int]]:
    """(m, n, k) of the fprop, dgrad and wgrad GEMMs of QKV, attention out, MLP up and MLP down (TE's table)."""
    shapes = []
    for k, n in ((hidden, 3 * hidden), (hidden, hidden), (hidden, ffn), (ffn, hidden)):
        shapes += [(tokens, n, k), (tokens, k, n), (k, n, tokens)]
    return shapes


def kernel_s(op: Op, gpu_name: str, precision: str, sustained: bool) -> float:
    """One kernel's time: a short benchmark's (launch overhead included) or in training (queued, no gap)."""
    gpu = hardware.gpu(gpu_name)
    if not sustained:
        return kernels.op_time_s(op, gpu, precision, sustained=False)
    return max(kernels.roofline_s(op, gpu, precision, sustained=True))


def te_linear_ops(shape: tuple[int, int, int]) -> list[Op]:
    """te.Linear's forward under fp8_autocast: the input and the weight cast to fp8 (delayed scaling, Blackwell: no
    transpose written, ``fp8_recipes.cast_bytes_per_element``) and the fp8 GEMM."""
    m, n, k = shape
    per_element = fp8_recipes.cast_bytes_per_element("delayed", transpose=False)
    casts = [Op(fp8_recipes.CAST_OP, "memory", float(e), per_element * e) for e in (m * k, n * k)]
    return [*casts, gemm_op(shape)]


def model_value(item: Measurement, sustained: bool) -> float:
    """The model's figure for ``item`` in one regime: TFLOP/s, or milliseconds for a GEMM set."""
    if item.kind == "gemm_set":
        shapes = te_layer_shapes(*item.shape)
        return 1e3 * sum(kernel_s(gemm_op(s), item.gpu, item.precision, sustained) for s in shapes)
    ops = te_linear_ops(item.shape) if item.kind == "te_linear" else [gemm_op(item.shape)]
    seconds = sum(kernel_s(op, item.gpu, item.precision, sustained) for op in ops)
    m, n, k = item.shape
    return 2.0 * m * n * k / seconds / 1e12


def measured_over_model(item: Measurement) -> float:
    """The measurement over the model of its regime (loops: over the sustained model); throughput both ways, so
    above 1 the measurement is faster than the model."""
    model = model_value(item, sustained=item.regime != "burst")
    return model / item.value if item.kind == "gemm_set" else item.value / model


def fa4_attention() -> tuple[Op, float]:
    """flashinfer#2899's FlashAttention-4 forward as the model's kernel, and its executed FLOP."""
    spec = TransformerSpec(layers=1, hidden=FA4_B200["heads"] * FA4_B200["head_dim"], heads=FA4_B200["heads"],
                           vocab=32000, dropout=False, max_seq_len=FA4_B200["seq"])
    (forward,), _ = attention_core(spec, Shard(seq_len=FA4_B200["seq"], micro_batch=FA4_B200["batch"],
                                               precision="bf16"))
    executed = forward.flop * kernels.efficiency(forward, hardware.gpu("b200"), "bf16").executed_flop_ratio
    return forward, executed


def attention_sustained_over_burst() -> tuple[float, float]:
    """FA4 on B200: (measured throttled / peak, the model's sustained / burst of the same kernel, no launch
    overhead either way)."""
    op, executed = fa4_attention()
    gpu = hardware.gpu("b200")
    burst = executed / max(kernels.roofline_s(op, gpu, "bf16", sustained=False))
    sustained = executed / max(kernels.roofline_s(op, gpu, "bf16", sustained=True))
    return FA4_B200["throttled"] / FA4_B200["burst"], sustained / burst


def attention_at_the_gemm_stream_clock() -> tuple[float, float]:
    """What FA4's throughput does at the clock a GEMM-dominated training stream holds (round 23 review): FA4's
    measured clock elasticity (ln throughput ratio over ln clock ratio, flashinfer#2899) taken to B200's saturated
    GEMM clock (mamf-finder MSMF, both ends of 1399-1443 MHz over the 1965 MHz boost)."""
    elasticity = (math.log(FA4_B200["throttled"] / FA4_B200["burst"])
                  / math.log(FA4_B200["throttled_mhz"] / FA4_B200["boost_mhz"]))
    low, high = (mhz / FA4_B200["boost_mhz"] for mhz in B200_GEMM_MHZ)
    return low ** elasticity, high ** elasticity


def cudnn_long_kernels_over_burst() -> list[tuple[str, float, float]]:
    """cuDNN 9.13's single attention kernels of 0.3-1.3 s (128k tokens; CUDNN_913_128K), each held far past the
    throttle onset (attention alone under the cap), over the model's burst figure for the same kernel:
    (key, seconds, ratio)."""
    out = []
    for (gpu_name, direction), measured in CUDNN_913_128K.items():
        spec = TransformerSpec(layers=1, hidden=128 * 128, heads=128, vocab=32000, dropout=False, max_seq_len=131072)
        forward, backward = attention_core(spec, Shard(seq_len=131072, micro_batch=1, precision="bf16"))
        op = (forward if direction == "forward" else backward)[0]
        gpu = hardware.gpu(gpu_name)
        executed = op.flop * kernels.efficiency(op, gpu, "bf16").executed_flop_ratio
        burst = executed / max(kernels.roofline_s(op, gpu, "bf16", sustained=False)) / 1e12
        out.append((f"{gpu_name} {direction}", executed / measured / 1e12, measured / burst))
    return out


def cube_law_b300_gemm_mhz() -> tuple[float, float]:
    """B300's saturated GEMM clock from B200's by the cube law of efficiency.yaml blackwell_clock_source (dynamic
    power, tdp - idle_power, ~ SMs x f^3 at each part's cap: ``power_clock.capped_clock`` on the dynamic power per
    SM, the one law the clock model uses), from both ends of B200's measured range."""
    def per_sm_w(gpu_name: str) -> float:
        gpu = hardware.gpu(gpu_name)
        return (gpu.tdp - gpu.idle_power) / kernels.sm_count(gpu_name)

    low, high = (power_clock.capped_clock(mhz, per_sm_w("b300"), per_sm_w("b200")) for mhz in B200_GEMM_MHZ)
    return low, high


def gemm_sustained_over_burst(gpu_name: str) -> float:
    """What the model keeps of a compute-bound GEMM's burst throughput in training: ``clock_ratio`` x
    ``ceiling_ratio`` x the GEMM ``sustained_share`` (``kernels.roofline_s``)."""
    return (kernels.clock_ratio(gpu_name) * kernels.ceiling_ratio(gpu_name)
            * power_clock.sustained_share(gpu_name, "gemm"))


def rows() -> list[tuple[str, str, float, float, float, float]]:
    """(key, regime, measured, model burst, model sustained, measured over model) for every GEMM measurement."""
    return [(item.key, item.regime, item.value, model_value(item, False), model_value(item, True),
             measured_over_model(item)) for item in MEASUREMENTS]


def main(argv: list[str]) -> int:
    if argv:  # a direct call; the command line is refused by script_entry.run first, in the same words
        print(f"error: {script_entry.one_line(argv[0])}: takes no arguments (see --help)", file=sys.stderr)
        return script_entry.USAGE_ERROR
    print(f"{'measurement':32} {'regime':9} {'measured':>9} {'burst':>9} {'sustained':>9} {'meas/model':>10}")
    for key, regime, value, burst, sustained, ratio in rows():
        print(f"{key:32} {regime:9} {value:9.1f} {burst:9.1f} {sustained:9.1f} {ratio:10.3f}")
    measured, model = attention_sustained_over_burst()
    print(f"\nFA4 forward on B200, sustained over burst: measured {measured:.3f} (clock "
          f"{FA4_B200['throttled_mhz'] / FA4_B200['boost_mhz']:.3f}), model {model:.3f}")
    low, high = attention_at_the_gemm_stream_clock()
    print(f"FA4's clock elasticity at B200's saturated GEMM clock: {low:.3f}-{high:.3f} of its burst "
          f"(the model's attention in training: {model:.3f})")
    for key, seconds, ratio in cudnn_long_kernels_over_burst():
        print(f"cuDNN 9.13 {key} at 128k, one {seconds:.2f} s kernel: {ratio:.3f} of the model's burst")
    low, high = cube_law_b300_gemm_mhz()
    print(f"B300 saturated GEMM clock by the cube law from B200's {B200_GEMM_MHZ[0]:.0f}-{B200_GEMM_MHZ[1]:.0f} MHz: "
          f"{low:.0f}-{high:.0f} MHz, measured {B300_GEMM_MHZ:.0f}")
    same = B300_SAME_SHAPE["sustained"] / B300_SAME_SHAPE["burst"]
    mamf = B300_MAMF_SHAPE["sustained"] / B300_MAMF_SHAPE["burst"]
    print(f"B300 same shape sustained over burst: measured {mamf:.3f}-{same:.3f} (MAMF, MSMF shapes), "
          f"model {gemm_sustained_over_burst('b300'):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.run(main, sys.argv[1:], __doc__, words=(0, 0)))
