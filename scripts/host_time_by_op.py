"""Where a layer's time goes under the two per-kernel structures, per op class: the time each class of kernels takes
with one fitted gap before every kernel ("gap", efficiency.yaml's now) and with the measured queued-launch gap plus
a fill in waves of each tensor-core kernel ("fill", round 9), and what the other changes.

    python scripts/host_time_by_op.py SCENARIO [SCENARIO...] [--gap-us 40] [--fill-waves 1.04]

For one layer of the scenario (its MoE layer when the model has experts, sized for the busiest expert-parallel rank
as the step plan sizes it), per phase: each class's kernels, their roofline time, their time under each structure
(roofline + gap + fill) and the difference; then the phase as a block (``kernels.StreamTime``): device side, host
side (launches x dispatch at the GPU's host CPU) and the idle after the host sync. MoE launch ops
(``moe.host_launches``: zero-work kernels and host-only launches) are split by what issues them (router, the
grouped GEMMs' per-expert GEMMs, the per-expert fp8 quantizes) from the launch counts of data/moe.yaml. The
expert-parallel dispatch and combine are the engine's collectives, not kernels here: not in the table.
A diagnostic: nothing is fitted or written; held-out scenarios are read, never tuned to.
"""

from __future__ import annotations

import collections
import sys

from simcluster.core import catalog, script_entry
from simcluster.parallel.plan import shard_for
from simcluster.spec import config
from simcluster.workload import kernels, mla, moe
from simcluster.workload.ops import layer_ops

# op name -> class; names not listed fall under "other"
CLASSES = {
    "expert_up": "grouped expert GEMMs", "expert_down": "grouped expert GEMMs",
    "router": "router", "router_topk": "router", "router_cast": "router",
    "permute": "permute / unpermute / sort", "unpermute": "permute / unpermute / sort",
    "moe_sort_chunks": "permute / unpermute / sort", "moe_sort_map": "permute / unpermute / sort",
    "fp8_cast": "fp8 quantize (casts)", "fp8_amax": "fp8 quantize (casts)", "fp8_transpose": "fp8 quantize (casts)",
    "expert_act": "activations", "shared_expert_act": "activations", "mlp_act": "activations",
    "attention": "attention core", "attention_backward": "attention core",
    "attn_norm": "norms / residuals", "mlp_norm": "norms / residuals", "mla_norm": "norms / residuals",
    "attn_residual": "norms / residuals", "mlp_residual": "norms / residuals",
    "attn_residual_grad_sum": "norms / residuals", "mlp_residual_grad_sum": "norms / residuals",
}
GEMM_CLASS = "other GEMMs (qkv, out, MLA, shared experts)"
LAUNCH = "moe_launch"


def op_class(name: str, kind: str) -> str:
    if name in CLASSES:
        return CLASSES[name]
    if kind == "gemm":
        return GEMM_CLASS
    return "other elementwise (rope, ...)"


def launch_classes(local_experts: int, cuda_graphs: bool, quantize_serial: int, phase: str,
                   flex: bool = False, router: moe.Router = moe.Router(),
                   collectives: dict[str, int] | None = None) -> list[str]:
    """The classes of the ``moe_launch`` kernels of ``phase``, in ``moe.host_launches``'s order and counts: router
    launches, the grouped GEMMs' per-expert GEMMs in series, the fp8 quantizes in series (``quantize_serial`` per
    operand, ``moe.fp8_quantize_kernels``; 0 in 16-bit), then the layer's small NCCL collectives
    (``moe.layer_collectives``)."""
    counts = moe.launch_counts(local_experts, cuda_graphs, quantize_serial, flex, router, collectives)
    count = counts.get(phase, dict.fromkeys(counts["router_forward"], 0))
    first = counts["router_forward"] if phase == "forward" else dict.fromkeys(count, 0)   # before the host sync
    router = first["router"] if phase == "forward" else count["router"]
    return (["router"] * router + ["grouped expert GEMMs"] * count["grouped GEMMs"]
            + ["fp8 quantize (casts)"] * count["fp8 quantizes"]
            + ["MoE layer collectives"] * (first["collectives"] + count["collectives"]))


def table_for(name: str, gap_s: float, fill_waves: float, measured_gap_s: float) -> None:
    scenario = config.load(name)
    m, p, t = scenario.model, scenario.parallelism, scenario.training
    gpu, precision = scenario.cluster.gpu, t.precision
    shard = shard_for(scenario)
    load = moe.step_load(m, shard, p.ep, p.etp)
    block = (moe.moe_block(m, shard, p.ep, p.etp, load, t.moe_cuda_graphs, p.moe_dispatcher) if m.moe else None)
    layer = mla.apply(m, shard, layer_ops(m, shard, block))
    local = m.moe.experts // p.ep if m.moe else 0
    efficiency = catalog.load("efficiency")["host_overhead"]
    saved = dict(efficiency)
    structures = {"gap": dict(kernel_gap_s=gap_s, fill_waves=0.0),
                  "fill": dict(kernel_gap_s=measured_gap_s, fill_waves=fill_waves)}
    print(f"\n{name}: {gpu.name}, {precision}, {'MoE layer, ' + str(local) + ' local experts' if m.moe else 'layer'}"
          f"; gap {gap_s * 1e6:.1f} us / fill {fill_waves:.2f} waves + gap {measured_gap_s * 1e6:.1f} us")
    try:
        for phase, ops in layer.items():
            if not ops:
                continue
            quantizes = (moe.fp8_quantize_kernels(local, shard.fp8_recipe, shard.fp8_transpose)
                         if precision == "fp8" and m.moe else 0)
            launched = "forward" if phase == "recompute" else phase   # full recompute re-runs the forward's launches
            flex = p.moe_dispatcher == "flex" and p.ep * p.etp > 1
            router = moe.Router()   # the router the block above is built with (moe_block's default)
            launches = iter(launch_classes(local, t.moe_cuda_graphs, quantizes, launched, flex, router,
                                           moe.layer_collectives(shard, p.ep, flex, router)) if m.moe else [])
            rows: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0])
            for op in ops:
                if op.name == kernels.HOST_SYNC:
                    continue
                cls = "host-only launches (other streams)" if op.name == kernels.HOST_ONLY_LAUNCH else (
                    next(launches) + " (zero-work launches)" if op.name == LAUNCH else op_class(op.name, op.kind))
                compute_s, memory_s = kernels.roofline_s(op, gpu, precision)
                wave = kernels.wave_s(op, compute_s, gpu.name)
                kernel = op.name != kernels.HOST_ONLY_LAUNCH
                row = rows[cls]
                row[0] += kernel
                row[1] += max(compute_s, memory_s)
                row[2] += max(compute_s, memory_s) + kernel * gap_s
                row[3] += max(compute_s, memory_s) + kernel * measured_gap_s + fill_waves * wave
            print(f"  {phase}: class | kernels | roofline us | gap us | fill us | gap - fill us")
            total = [0.0] * 4
            for cls, row in sorted(rows.items(), key=lambda kv: kv[1][3] - kv[1][2]):
                print(f"    {cls} | {row[0]:.0f} | {row[1] * 1e6:.1f} | {row[2] * 1e6:.1f} | {row[3] * 1e6:.1f} | "
                      f"{(row[2] - row[3]) * 1e6:.1f}")
                total = [a + b for a, b in zip(total, row, strict=True)]
            print(f"    total | {total[0]:.0f} | {total[1] * 1e6:.1f} | {total[2] * 1e6:.1f} | {total[3] * 1e6:.1f} | "
                  f"{(total[2] - total[3]) * 1e6:.1f}")
            for label, values in structures.items():
                efficiency.update(values)
                stream = kernels.stream_time(ops, gpu, precision)
                print(f"    block ({label}): device {stream.device_bound_s() * 1e6:.1f} us (after-sync idle "
                      f"{stream.stall_s * 1e6:.1f}), host {stream.host_bound_s() * 1e6:.1f} us, "
                      f"takes {stream.elapsed_s() * 1e6:.1f} us")
    finally:
        efficiency.clear()
        efficiency.update(saved)


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="+")
    host = kernels.host_model()
    parser.add_argument("--gap-us", type=float, default=None,
                        help="the gap structure's fitted gap (default: efficiency.yaml's, when it holds that one)")
    parser.add_argument("--fill-waves", type=float, default=None,
                        help="the fill structure's fitted fill (default: efficiency.yaml's, when it holds that one)")
    args = parser.parse_args(argv)
    gap_s = args.gap_us * 1e-6 if args.gap_us is not None else host.kernel_gap_s
    fill = args.fill_waves if args.fill_waves is not None else host.fill_waves
    if host.fill_waves and args.gap_us is None or not host.fill_waves and args.fill_waves is None:
        parser.error("efficiency.yaml holds one structure: give the other's fitted value (--gap-us or --fill-waves)")
    for name in args.scenarios:
        table_for(name, gap_s, fill, kernels.launch_overhead_s())
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
