"""What an MoE layer-microbatch costs whatever its tokens, in the model and in what was published
(docs/calibration/round-35.md "Round 35: the MoE layer's fixed cost"). A diagnostic: nothing is fitted or written.

    PYTHONPATH=.:scripts python scripts/moe_fixed_cost.py lines    # the zoo's A2A / TP 4 rows, one line per layout
    PYTHONPATH=.:scripts python scripts/moe_fixed_cost.py terms    # the MoE layer alone, term by term, three rows
    PYTHONPATH=.:scripts python scripts/moe_fixed_cost.py layer    # a Megatron MoELayer on 8 H100 (marin#3666)

``lines``: round 35's two-row line (``moe_dropless_pairs.fixed_and_per_token``) puts one line through the A2A row
(2,048 tokens a rank per layer-microbatch) and the TP 4 row (1,024). Each row is its own layout (dispatcher, TP,
PP / VPP, recompute), so the model is asked for each layout's own line: the same scenario at micro batch 1 and 2
(tokens a rank per layer-microbatch doubled at the same sequence, so attention's cost per token is unchanged). For
two lines y = F_i + s_i t through t_1 and t_2 = 2 t_1 the two-row intercept is 2 F_1 - F_2 - 2 t_1 (s_2 - s_1)
(``two_row_intercept``): it is a layer's fixed cost only when the layouts share one per-token cost.

``layer``: marin-community/marin issue 3666 (2026-03-14) and issue 4311 (2026-04-13) ran Megatron-LM's moe_perf
method (one ``MoELayer``, TP 1, EP 8, router forced to balance, fused permute and router, fp32 router, grouped GEMM,
no ``gated_linear_unit``: GeLU experts; CUDA events around forward and backward, 5 warm-up and 20 measured
iterations after a barrier and an 8192^2 bf16 matmul) on one CoreWeave node of 8 H100 with Qwen3 shapes; harness
``megatron_qwen_krt_bench``'s ``_qwen_case_specs`` (find_string id 53843572396), results the issue's table
(id 53992046364). Container, Megatron-Core, Transformer Engine and DeepEP releases not stated; the rerun of the
32 / 64-expert cases reports forward std 12-30 ms.
"""

from __future__ import annotations

import sys

from moe_dropless_pairs import ROW_PREFIX, ZOO_ROWS, fixed_and_per_token

from simcluster.core import script_entry
from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.studies.moe_layer import moe_layer_time
from simcluster.workload import kernels

LINE_ROWS = ("tp4", "a2a")
TERM_ROWS = (ROW_PREFIX + "tp4", ROW_PREFIX + "a2a", "nemo2511-qwen3-235b-64-b200-fp8")

# marin#3666 (Qwen3-235B shape at 4,096 tokens a GPU) and #4311 / #3666 (Qwen3-30B-A3B shape, micro batch 1, 2, 4 of
# sequence 4096): forward + backward ms of one MoE layer, (alltoall, DeepEP) dispatcher. The 235B shape: hidden
# 4096, expert ffn 1536, 128 experts, top 8 (16 local experts); the 30B shape: hidden 2048, expert ffn 768, 128, top 8.
MARIN_SHAPES = {"qwen3-30b": (2048, 768, 128, 8), "qwen3-235b": (4096, 1536, 128, 8)}
MARIN_MS = {
    ("qwen3-30b", 4096): (34.95, 12.41),
    ("qwen3-30b", 8192): (33.77, 12.42),
    ("qwen3-30b", 16384): (35.27, 18.09),
    ("qwen3-235b", 4096): (25.62, 11.75),
}


def two_row_intercept(f1: float, s1: float, f2: float, s2: float, t1: float, t2: float) -> float:
    """The intercept of the line through (t1, f1 + s1 t1) and (t2, f2 + s2 t2): (t2 f1 - t1 f2) / (t2 - t1)
    - t1 t2 (s2 - s1) / (t2 - t1). Equal to f1 = f2 only when s1 = s2."""
    return (t2 * f1 - t1 * f2) / (t2 - t1) - t1 * t2 * (s2 - s1) / (t2 - t1)


def readings(published_s: float, tokens: float, fixed_s: float, per_token_s: float) -> tuple[float, float]:
    """One published layer-microbatch read against a layout's model line, both ways: the per-token cost it asks if
    the model's fixed cost is right, and the fixed cost it asks if the model's per-token cost is right."""
    return (published_s - fixed_s) / tokens, published_s - per_token_s * tokens


def _scenario(name: str, **training):
    data = config.load(name).model_dump(mode="json", exclude_none=True)
    data["training"].update(training)
    return config.from_dict(data)


def layout_line(name: str) -> tuple[float, float, dict[int, tuple[float, float]]]:
    """``name``'s own (fixed s, s a token) a layer-microbatch: the step at micro batch m and 2m over the stage's
    layer-microbatches (94 / PP x microbatches), against the tokens a rank routes per layer-microbatch."""
    base = config.load(name)
    p, m = base.parallelism, base.training.micro_batch_size
    points = {}
    for mbs in (m, 2 * m):
        step = simulate(_scenario(name, micro_batch_size=mbs), check_memory=False).summary["step_time_s"]
        layer_microbatches = base.model.layers / p.pp * base.training.global_batch_size / (p.dp * mbs)
        points[mbs] = (base.training.seq_len * mbs / p.tp, step / layer_microbatches)
    fixed, slope = fixed_and_per_token(points[2 * m], points[m])
    return fixed, slope, points


def lines() -> None:
    published = {row.name: row for row in ZOO_ROWS}
    model = {}
    for row in LINE_ROWS:
        name = ROW_PREFIX + row
        fixed, slope, points = layout_line(name)
        base = config.load(name)
        p = base.parallelism
        tokens, sim = points[base.training.micro_batch_size]
        pub = published[row].step_s / (base.model.layers / p.pp * base.training.global_batch_size
                                       / (p.dp * base.training.micro_batch_size))
        per_token, fixed_needed = readings(pub, tokens, fixed, slope)
        model[row] = (fixed, slope, tokens, pub, sim)
        print(f"{row:4s} model line {1e3 * fixed:.2f} ms + {1e6 * slope:.2f} us a token; at {tokens:.0f} tokens "
              f"simulated {1e3 * sim:.2f} ms, published {1e3 * pub:.2f} ms a layer-microbatch; published asks "
              f"{1e6 * per_token:.2f} us a token (fixed right) or {1e3 * fixed_needed:.2f} ms fixed (per-token right)",
              flush=True)
    (f1, s1, t1, p1, y1), (f2, s2, t2, p2, y2) = model["tp4"], model["a2a"]
    for label, a, b in (("simulated", (t1, y1), (t2, y2)), ("published", (t1, p1), (t2, p2))):
        fixed, slope = fixed_and_per_token(b, a)
        print(f"two-row line, {label}: {1e3 * fixed:.2f} ms + {1e6 * slope:.2f} us a token")
    intercept = two_row_intercept(f1, s1, f2, s2, t1, t2)
    spread = t1 * t2 * (s2 - s1) / (t2 - t1)
    print(f"the simulated two-row intercept from the layout lines: {1e3 * intercept:.2f} ms = (2 x {1e3 * f1:.2f}"
          f" - {1e3 * f2:.2f}) - {1e3 * spread:.2f} ms of the layouts' per-token difference")


def terms() -> None:
    host = kernels.host_model()
    for name in TERM_ROWS:
        base = config.load(name)
        totals = {}
        for seq in (base.training.seq_len, base.training.seq_len // 2):
            layer = moe_layer_time(_scenario(name, seq_len=seq))
            totals[seq * base.training.micro_batch_size / base.parallelism.tp] = layer.forward_s + layer.backward_s
            if seq != base.training.seq_len:
                continue
            print(f"== {name}: {seq * base.training.micro_batch_size / base.parallelism.tp:.0f} tokens a rank")
            for label, stream, calls in (("forward", layer.forward, layer.alltoalls["forward"]),
                                         ("backward", layer.backward, layer.alltoalls["backward"])):
                print(f"  {label:8s} {stream.kernels:4.0f} kernels: roofline {1e3 * stream.device_s:.3f} ms, gaps "
                      f"{1e3 * stream.gaps_s(host):.3f}, stall after the sync {1e3 * stream.stall_s:.3f}, host "
                      f"{1e3 * stream.host_bound_s(host):.3f}; {calls} all-to-alls x {1e3 * layer.alltoall_s:.3f} ms")
        (ta, sa), (tb, sb) = sorted(totals.items())
        fixed, slope = fixed_and_per_token((tb, sb), (ta, sa))
        print(f"  MoE layer alone: {1e3 * (sb):.3f} ms = {1e3 * fixed:.3f} ms + {1e6 * slope:.3f} us a token")


def marin_scenario(shape: str, dispatcher: str, tokens: int):
    """The marin harness's layer as a scenario: one MoE layer of ``shape`` on one node of 8 H100, TP 1, EP 8,
    ``tokens`` a GPU (sequence 4096), forced balance, fused fp32 router, GeLU experts (the moe_perf baseline's
    scenario of tests/validation/test_moe_layer_perf_baseline.py with the Qwen3 shape)."""
    sys.path.insert(0, "tests/validation")
    import test_moe_layer_perf_baseline as baseline

    data = baseline.benchmark_scenario(f"{shape}_{dispatcher}_tp1ep8_bf16", MARIN_SHAPES[shape]).model_dump(
        mode="json", exclude_none=True)
    data["training"].pop("mcore_version", None)
    data["training"].update(micro_batch_size=tokens // 4096, global_batch_size=8 * tokens // 4096)
    return config.from_dict(data)


def layer() -> None:
    for (shape, tokens), measured in MARIN_MS.items():
        model = []
        for dispatcher in ("a2a", "deepep"):
            timed = moe_layer_time(marin_scenario(shape, dispatcher, tokens))
            model.append(1e3 * (timed.forward_s + timed.backward_s))
        print(f"{shape} {tokens:5d} tokens a GPU: measured alltoall {measured[0]:.2f} / DeepEP {measured[1]:.2f} ms;"
              f" model {model[0]:.2f} / {model[1]:.2f} ms")


main = script_entry.subcommands({"lines": lines, "terms": terms, "layer": layer})


if __name__ == "__main__":
    sys.exit(script_entry.run(main, sys.argv[1:], __doc__, words=(1, 1), usage="lines | terms | layer"))
