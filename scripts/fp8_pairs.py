"""BF16 against FP8 of the same model, op class by op class (issue 15: the two precisions of a model within 5 points of
each other in error).

For each scenario given, and for its twin in the other precision (the same file with ``training.precision``
swapped: same layout, same software, only the precision differs), prints the kernel model of one layer and one
microbatch on one rank per op class (GEMMs by phase, attention by direction, fp8 casts, other memory-bound kernels,
the userbuffers copies, the fitted per-kernel gap and, under the host model's "fill" structure, the tensor-core
kernels' fill), the whole step as the engine runs it (compute, pipeline bubble, exposed communication per
parallelism, communication interference), and the FP8/BF16 time ratio of each.

    PYTHONPATH=. python scripts/fp8_pairs.py nemo2409-llama31-8b-8-h100-bf16 nemo2407-llama3-8b-8-h100-fp8

The ops are those of ``parallel.plan`` (with Transformer Engine's userbuffers chunks where the scenario overlaps its
tensor-parallel collectives); times at the sustained clock (``kernels.roofline_s``), gaps at the host model of
``data/efficiency.yaml``.
"""

from __future__ import annotations

import sys
from collections import defaultdict

from simcluster import engine
from simcluster.core import script_entry
from simcluster.spec import config
from simcluster.workload import fp8_recipes, kernels, userbuffers
from simcluster.workload.ops import layer_ops, shard_for

TWIN = {"bf16": "fp8", "fp8": "bf16"}
GEMM_PHASES = {"forward": "GEMM forward", "backward_input": "GEMM dgrad", "backward_weight": "GEMM wgrad",
               "recompute": "GEMM recompute"}
STEP_KEYS = ("step_time_s", "compute_s", "pipeline_bubble_s", "exposed_comm_s", "comm_interference_s")


def op_class(op, phase: str) -> str:
    """The class an op's time is reported under."""
    if op.kind == "gemm":
        return GEMM_PHASES[phase]
    if op.kind == "attention":
        return "attention backward" if op.name.endswith("backward") else "attention forward"
    if op.name in (fp8_recipes.AMAX_OP, fp8_recipes.CAST_OP, fp8_recipes.TRANSPOSE_OP):
        return "fp8 casts"
    if op.name == "ub_copy":
        return "userbuffers copies"
    return "other memory-bound"


def twin(scenario, precision: str):
    """``scenario`` with its training precision set to ``precision`` (and a name saying so)."""
    data = scenario.model_dump(mode="json", exclude_none=True)
    data["training"]["precision"] = precision
    if precision != "fp8":
        data["training"].pop("fp8_recipe", None)   # a recipe is an fp8 setting: the bf16 twin runs none
        data["training"].pop("fp8_param_gather", None)   # so are fp8 parameters
    data["name"] = f"{scenario.name} [{precision}]"
    return config.from_dict(data, source=f"{scenario.name} as {precision}")


def layer_breakdown(scenario) -> dict[str, float]:
    """Seconds per op class of one layer, one microbatch, one rank (``kernel gaps``: the gap before each kernel,
    ``HostModel.gap_s``: the fitted gap, a queued no-work launch's queued-launch latency;
    ``tensor-core fill``: ``HostModel.fill_waves`` of each GEMM's and flash attention's waves, when not 0)."""
    p, t, gpu = scenario.parallelism, scenario.training, scenario.cluster.gpu
    shard = shard_for(scenario)
    layer = layer_ops(scenario.model, shard)
    if p.tp_comm_overlap and p.sequence_parallel and p.tp > 1 and p.tp_comm_overlap_impl == "userbuffers":
        layer = userbuffers.apply(layer, p.tp, t.precision, shard.activation_bytes_per_element,
                                  kernels.sm_count(gpu.name), userbuffers.scenario_charged(scenario), p.te_version)
    out: dict[str, float] = defaultdict(float)
    host = kernels.host_model()
    for phase, ops in layer.items():
        for op in ops:
            compute_s, memory_s = kernels.roofline_s(op, gpu, t.precision)
            out[op_class(op, phase)] += max(compute_s, memory_s)
            out["kernel gaps"] += host.gap_s(op)   # as kernels.StreamTime.gaps_s charges it (Op.no_work: round 32)
            if host.fill_waves:   # the "fill" structure of the host model (efficiency.yaml host_overhead)
                out["tensor-core fill"] += host.fill_waves * kernels.wave_s(op, compute_s, gpu.name)
    out["layer"] = sum(out.values())
    return dict(out)


def step_breakdown(scenario) -> dict[str, float]:
    """The engine's step and its parts (seconds), exposed communication per parallelism."""
    summary = engine.simulate(scenario).summary
    out = {key: float(summary[key]) for key in STEP_KEYS}
    for axis, seconds in summary["exposed_comm_by_parallelism_s"].items():
        if abs(seconds) > 1e-9:
            out[f"exposed {axis}"] = float(seconds)
    return out


def table(rows: dict[str, tuple[float, float]], unit: float, label: str) -> list[str]:
    lines = [f"  {label:<26} {'bf16':>10} {'fp8':>10} {'fp8/bf16':>9}"]
    for key, (bf16, fp8) in rows.items():
        ratio = f"{fp8 / bf16:9.3f}" if bf16 else f"{'-':>9}"
        lines.append(f"  {key:<26} {bf16 * unit:10.3f} {fp8 * unit:10.3f} {ratio}")
    return lines


def report(name: str) -> list[str]:
    scenario = config.load(name)
    runs = {scenario.training.precision: scenario, TWIN[scenario.training.precision]:
            twin(scenario, TWIN[scenario.training.precision])}
    bf16, fp8 = runs["bf16"], runs["fp8"]
    layers = {precision: layer_breakdown(run) for precision, run in runs.items()}
    keys = sorted(set(layers["bf16"]) | set(layers["fp8"]), key=lambda k: (k == "layer", k))
    lines = [f"== {name} (published precision {scenario.training.precision}; twin: the other precision, same file)",
             *table({k: (layers["bf16"].get(k, 0.0), layers["fp8"].get(k, 0.0)) for k in keys}, 1e3,
                    "one layer, one microbatch (ms)")]
    steps = {"bf16": step_breakdown(bf16), "fp8": step_breakdown(fp8)}
    keys = list(dict.fromkeys([*steps["bf16"], *steps["fp8"]]))
    lines += table({k: (steps["bf16"].get(k, 0.0), steps["fp8"].get(k, 0.0)) for k in keys}, 1.0, "step (s)")
    return lines


main = script_entry.print_reports(report)


if __name__ == "__main__":
    sys.exit(script_entry.run(main, sys.argv[1:], __doc__, words=(1, None), usage="SCENARIO [SCENARIO ...]"))
