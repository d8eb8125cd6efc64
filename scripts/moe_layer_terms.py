"""An MoE layer, term by term, per rank and microbatch, and a step's MoE kernel launches (issue 15: the MoE zoo's
Qwen3-235B rows, docs/calibration/round-16.md "Round 16: the MoE zoo's Qwen3 rows itemised").

    PYTHONPATH=.:scripts python scripts/moe_layer_terms.py moezoo-qwen3-235b-256-h100-a2a ...

``pipeline_terms.py`` itemises the dense layer (``layer_ops`` without an MoE block), so on an MoE row its MoE work
lands in "chunk extras". This one builds the MoE layer as the plan does (``plan.busiest_moe_block``: ``moe.moe_block``
at the busiest rank's ``step_load``, its expert GEMMs timed over ``step_load_nodes``, ``layer_ops`` with it) and
reports, for one MoE layer and microbatch: seconds by class (roofline max of compute and memory, no interference;
grouped expert GEMMs apart from the dense GEMMs; the router; the permutation and sorts; attention; other memory-bound;
zero-work host launches), the kernels and the gaps before them (``kernels.StreamTime.gaps_s``: the fitted
``host_overhead.kernel_gap_s``, a queued no-work launch's queued-launch latency) and then the same per step on
the mean pipeline stage (94 / PP layers x microbatches; with full recompute the forward twice). A diagnostic: nothing
is fitted or written.
"""

from __future__ import annotations

import sys
from collections import defaultdict

from pipeline_terms import print_reports

from simcluster.core.errors import ScenarioError
from simcluster.parallel import plan
from simcluster.parallel.plan import shard_for
from simcluster.spec import config
from simcluster.workload import kernels
from simcluster.workload.ops import layer_ops


def op_class(op) -> str:
    """The class an MoE layer's op is reported under."""
    if op.name.startswith("expert_") and op.kind == "gemm":
        return "grouped expert GEMMs"
    if op.name.startswith("router"):
        return "router"
    if op.name in ("permute", "unpermute") or "sort" in op.name:
        return "permutation + sort"
    if op.kind == "gemm":
        return "dense GEMMs (attention, shared)"
    if op.kind == "attention":
        return "attention"
    if op.name == kernels.HOST_ONLY_LAUNCH:
        return "host-only launches"
    if op.flop == 0 and op.hbm_bytes == 0:
        return "zero-work launches"
    return "other memory-bound"


def busiest_moe_block(scenario):
    """The plan's MoE block (``plan.busiest_moe_block``: at the busiest EP rank's ``step_load``, its expert GEMMs
    averaged over ``step_load_nodes``) and the shard it is built on."""
    shard = shard_for(scenario)
    return plan.busiest_moe_block(scenario, shard), shard


def layer_terms(scenario) -> tuple[dict[str, float], int, int, float]:
    """Seconds by class, device kernels and host-only launches (grouped-GEMM GEMMs on the other streams, host
    dispatch only: ``moe.host_launches``) of one MoE layer, one microbatch, on the busiest EP rank, and the gaps
    the stream waits before its kernels as the plan charges them (``StreamTime.gaps_s``: no gap before a host sync,
    the queued-launch latency before a no-work launch; round 32)."""
    m, gpu, t = scenario.model, scenario.cluster.gpu, scenario.training
    block, shard = busiest_moe_block(scenario)
    out: dict[str, float] = defaultdict(float)
    count = host_only = 0
    every = [op for ops in layer_ops(m, shard, block).values() for op in ops]
    for op in every:
        compute_s, memory_s = kernels.roofline_s(op, gpu, t.precision)
        out[op_class(op)] += max(compute_s, memory_s)
        if op.name == kernels.HOST_ONLY_LAUNCH:
            host_only += 1
        else:
            count += 1
    return dict(out), count, host_only, kernels.stream_time(every, gpu, t.precision).gaps_s()


def expert_wgrad_roofline(scenario) -> tuple[float, float]:
    """(tensor-core time, HBM time) of one MoE layer-microbatch's grouped expert wgrad GEMMs on the busiest EP rank
    (``ops.wgrad_output_bytes``: with gradient-accumulation fusion the epilogue reads and writes the main gradient,
    whose bytes are the weights', whatever the rows: few rows an expert make it HBM-bound)."""
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    block, _ = busiest_moe_block(scenario)
    times = [kernels.roofline_s(op, gpu, precision) for op in block.backward_weight if op_class(op) ==
             "grouped expert GEMMs"]
    return sum(c for c, _ in times), sum(b for _, b in times)


def grouped_gemm_rate(scenario) -> tuple[int, float, float, float]:
    """(local experts, rows an expert, FLOP/s charged, fraction of the dense peak) of one MoE layer-microbatch's grouped
    expert GEMMs on the busiest EP rank: their FLOP over the time ``layer_terms`` gives them (roofline, sustained
    clock), i.e. the efficiency the model charges at the row's per-expert M (docs/calibration/round-18.md "Round
    18")."""
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    block, shard = busiest_moe_block(scenario)
    ops = [op for ops in layer_ops(scenario.model, shard, block).values() for op in ops
           if op_class(op) == "grouped expert GEMMs"]
    seconds = sum(max(kernels.roofline_s(op, gpu, precision)) for op in ops)
    rate = sum(op.flop for op in ops) / seconds
    return ops[0].batch, ops[0].m, rate, rate / gpu.peak_flop_per_s(precision)


def report(name: str) -> list[str]:
    scenario = config.load(name)
    if scenario.model.moe is None:
        raise ScenarioError("model.moe", f"{name} has no MoE layer to itemise")
    p, t = scenario.parallelism, scenario.training
    terms, count, host_only, gaps_s = layer_terms(scenario)
    micro = t.global_batch_size // (t.micro_batch_size * p.dp)
    layers = scenario.model.layers / p.pp * micro
    lines = [f"== {name}: {layers:.0f} MoE layer-microbatches on the mean stage, {count} kernels "
             f"+ {host_only} host-only launches each"]
    for key, seconds in sorted(terms.items()):
        lines.append(f"  {key:<32} {seconds * 1e3:8.3f} ms  {seconds * layers:8.3f} s")
    lines.append(f"  {'kernel gaps (fitted)':<32} {gaps_s * 1e3:8.3f} ms  {gaps_s * layers:8.3f} s")
    compute_s, memory_s = expert_wgrad_roofline(scenario)
    lines.append(f"  expert wgrad GEMMs: tensor cores {compute_s * 1e3:.3f} ms, HBM {memory_s * 1e3:.3f} ms "
                 f"(main gradient read and written: {shard_for(scenario).main_grad_bytes} B an element)")
    experts, rows, rate, fraction = grouped_gemm_rate(scenario)
    lines.append(f"  grouped expert GEMMs: {experts} local experts x {rows:.0f} rows (busiest rank), charged "
                 f"{rate / 1e12:.0f} TFLOP/s, {fraction:.3f} of the dense peak")
    return lines


def main(argv: list[str]) -> int:
    return print_reports(argv, report)


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, words=(1, None), usage="SCENARIO [SCENARIO ...]"))
