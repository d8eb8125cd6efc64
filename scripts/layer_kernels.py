"""One dense layer, kernel by kernel, of each scenario given (round 29: the hidden-6144 layer on H100 against the
hidden-12288 one; docs/calibration/round-29.md "Round 29: the hidden-6144 layer on H100, kernel by kernel").

    PYTHONPATH=. python scripts/layer_kernels.py megatron-16b-h100 megatron-177b-h100 nemotron4-15b-768-h100

For one microbatch on one rank: every kernel of ``workload.ops.layer_ops`` with Transformer Engine's userbuffers
chunks applied where the scenario overlaps its tensor-parallel collectives (``userbuffers.apply``, as
``fp8_pairs.layer_breakdown`` applies them), its GEMM shape (m x n x k, ``b`` chunks sharing waves, the SMs it is
charged on), the modelled fraction of the bf16 peak, its roofline time at the sustained clock and, for GEMMs, the
same GEMM whole on all SMs (no userbuffers chunking, no SM margin): the difference is what the chunking and the
communication's SMs cost. Then the layer's totals by class, with the fitted gap per kernel shown apart. For a
pipeline-parallel size of 1, the whole microbatch on that rank follows (round 30, the graphed Llama 3 8B Blackwell
rows): the layers' classes times the layer count, and the ops outside the layers (``embedding_ops``,
``output_ops``: embedding, final norm, output-layer GEMMs, loss) each on its own line, with the gaps the eager
stream pays (``kernel_gap_s`` a kernel) and what a replayed CUDA graph pays instead (``graph_node_s``). A diagnostic:
nothing is fitted or written.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import defaultdict

from fp8_pairs import op_class

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.spec import config
from simcluster.workload import kernels, userbuffers
from simcluster.workload.ops import embedding_ops, layer_ops, output_ops, shard_for


def chunked(scenario) -> bool:
    """Whether the scenario's layer runs Transformer Engine's userbuffers chunk GEMMs (as ``fp8_pairs`` decides)."""
    p = scenario.parallelism
    return p.tp_comm_overlap and p.sequence_parallel and p.tp > 1 and p.tp_comm_overlap_impl == "userbuffers"


def kernel_rows(scenario) -> list[dict]:
    """Each kernel of one layer and one microbatch on one rank: phase, op, class, shape, fraction, times (s)."""
    p, t, gpu = scenario.parallelism, scenario.training, scenario.cluster.gpu
    shard = shard_for(scenario)
    plain = layer_ops(scenario.model, shard)
    layer = plain
    if chunked(scenario):
        layer = userbuffers.apply(plain, p.tp, t.precision, shard.activation_bytes_per_element,
                                  kernels.sm_count(gpu.name), userbuffers.scenario_charged(scenario), p.te_version)
    whole = {(phase, op.name): op for phase, ops in plain.items() for op in ops if op.kind == "gemm"}
    rows = []
    for phase, ops in layer.items():
        for op in ops:
            compute_s, memory_s = kernels.roofline_s(op, gpu, t.precision)
            row = {"phase": phase, "op": op.name, "class": op_class(op, phase), "kind": op.kind,
                   "fraction": kernels.efficiency(op, gpu, t.precision).flop_fraction if op.flop else 0.0,
                   "time_s": max(compute_s, memory_s), "flop": op.flop, "shape": "", "whole_s": None,
                   "wave_s": kernels.wave_s(op, compute_s, gpu.name)}
            if op.kind in ("gemm", "attention"):
                row["shape"] = f"{op.m:g}x{op.n}x{op.k} b{op.batch}" + (f" {op.sms} SMs" if op.sms else "")
            base = whole.get((phase, op.name))
            if base is not None:
                row["whole_s"] = max(kernels.roofline_s(dataclasses.replace(base, sms=0), gpu, t.precision))
            rows.append(row)
    return rows


def microbatch_kernels(scenario) -> list[dict]:
    """Every kernel of one microbatch on the one rank of a pp 1 plan: the layer's (``kernel_rows``) once per layer,
    then each op outside the layers; each with its class key, kind, roofline time and one wave's time (s, ``kernels.
    wave_s``: 0 for memory-bound kernels). Empty for pp > 1."""
    if scenario.parallelism.pp != 1:
        return []
    t, gpu = scenario.training, scenario.cluster.gpu
    rows = [{"class": "layer GEMM" if row["kind"] == "gemm" else f"layer {row['class']}", "kind": row["kind"],
             "time_s": row["time_s"], "wave_s": row["wave_s"]} for row in kernel_rows(scenario)]
    kernels_of = rows * scenario.model.layers
    shard = shard_for(scenario)
    for ops in (embedding_ops(scenario.model, shard), output_ops(scenario.model, shard)):
        for phase, phase_ops in ops.items():
            for op in phase_ops:
                compute_s, memory_s = kernels.roofline_s(op, gpu, t.precision)
                kernels_of.append({"class": f"{op.name} {phase}" + (" (GEMM)" if op.kind == "gemm" else ""),
                                   "kind": op.kind, "time_s": max(compute_s, memory_s),
                                   "wave_s": kernels.wave_s(op, compute_s, gpu.name)})
    return kernels_of


def microbatch_rows(scenario) -> list[dict]:
    """One microbatch on the one rank of a pp 1 plan, by class: the layer's classes (``kernel_rows``) times the
    layer count, then each op outside the layers (phase, op name): time (s) and kernels. None for pp > 1."""
    by_class: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for row in microbatch_kernels(scenario):
        by_class[row["class"]][0] += row["time_s"]
        by_class[row["class"]][1] += 1
    return [{"class": key, "time_s": seconds, "kernels": count} for key, (seconds, count) in by_class.items()]


def microbatch_lines(scenario) -> list[str]:
    rows = microbatch_rows(scenario)
    if not rows:
        return []
    host = kernels.host_model()
    device_s = sum(row["time_s"] for row in rows)
    count = sum(row["kernels"] for row in rows)
    lines = [f"  microbatch (pp 1: {scenario.model.layers} layers and the ops outside them) {device_s * 1e3:.3f} ms "
             f"on the device, {count} kernels"]
    lines += [f"    {row['class']:<42} {row['time_s'] * 1e3:8.3f} ms {row['time_s'] / device_s:6.1%}  "
              f"{row['kernels']:5d} kernels" for row in sorted(rows, key=lambda r: -r["time_s"])]
    lines.append(f"    gaps: eager {count * host.kernel_gap_s * 1e3:.3f} ms "
                 f"({host.kernel_gap_s * 1e6:.1f} us a kernel, fitted), "
                 f"graphed {count * host.graph_node_s * 1e3:.3f} ms ({host.graph_node_s * 1e6:.1f} us a node)")
    return lines


def report(name: str) -> list[str]:
    scenario = config.load(name)
    model = scenario.model
    if model.moe is not None or model.mla is not None:  # round 31: printed a dense MHA layer for DeepSeek-V3, silently
        what = "mixture-of-experts" if model.moe is not None else "multi-head latent attention"
        raise ScenarioError("SCENARIO", f"{name!r} runs {what} layers; this script prints dense multi-head attention "
                            "layers only (an MoE layer's terms: scripts/moe_layer_terms.py)")
    rows = kernel_rows(scenario)
    gap_s = kernels.host_model().kernel_gap_s
    p = scenario.parallelism
    lines = [f"== {name}: hidden {scenario.model.hidden}, tp {p.tp}, {shard_for(scenario).seq_len} tokens, "
             f"userbuffers chunks {'on' if chunked(scenario) else 'off'}; gap {gap_s * 1e6:.0f} us a kernel (fitted)",
             f"  {'phase':<16} {'op':<20} {'shape':<28} {'peak frac':>9} {'us':>8} {'whole us':>9}"]
    for row in rows:
        whole = f"{row['whole_s'] * 1e6:9.1f}" if row["whole_s"] is not None else f"{'':>9}"
        frac = f"{row['fraction']:9.3f}" if row["kind"] in ("gemm", "attention") else f"{'':>9}"
        time_us = row["time_s"] * 1e6
        lines.append(f"  {row['phase']:<16} {row['op']:<20} {row['shape']:<28} {frac} {time_us:8.1f} {whole}")
    by_class: dict[str, float] = defaultdict(float)
    for row in rows:
        by_class["GEMM" if row["kind"] == "gemm" else row["class"]] += row["time_s"]
    by_class["kernel gaps (fitted)"] = gap_s * len(rows)
    layer_s = sum(by_class.values())
    gemm_flop = sum(row["flop"] for row in rows if row["kind"] == "gemm")
    whole_s = sum(row["whole_s"] for row in rows if row["whole_s"] is not None)
    lines.append(f"  layer {layer_s * 1e3:.3f} ms, {len(rows)} kernels; "
                 f"GEMMs {gemm_flop / by_class['GEMM'] / 1e12:.0f} TFLOP/s at the sustained clock, "
                 f"{gemm_flop / whole_s / 1e12:.0f} whole on all SMs "
                 f"(chunking and SM margin: {(by_class['GEMM'] - whole_s) * 1e3:+.3f} ms, "
                 f"{(by_class['GEMM'] - whole_s) / layer_s:+.1%} of the layer)")
    lines += [f"    {key:<24} {value * 1e3:8.3f} ms {value / layer_s:6.1%}" for key, value in sorted(by_class.items())]
    return lines + microbatch_lines(scenario)


main = script_entry.print_reports(report)


if __name__ == "__main__":
    sys.exit(script_entry.run(main, sys.argv[1:], __doc__, words=(1, None), usage="SCENARIO [SCENARIO ...]"))
