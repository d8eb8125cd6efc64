"""One microbatch of a pipeline stage as three passes, F (forward), B (input gradients) and W (weight gradients), the
split Zero Bubble's profiler times (docs/calibration/round-22.md, "Round 22: per-microbatch compute at small hidden
sizes on A100"), and one layer by kernel class.

    PYTHONPATH=. python scripts/stage_passes.py zerobubble2024-1f1b-1.5b-8-a100-m24 [--attention flash]

For the first, a middle and the last stage (their transformer layers as ``parallel.layout.split_layers`` gives them,
plus the embedding on the first and the final norm, output layer and loss on the last): each pass's kernels at their
roofline time plus the gap before each kernel (``kernels.HostModel.gap_s``: the fitted ``host_overhead.kernel_gap_s``,
a queued no-work launch's queued-launch latency); no pipeline step, no
communication, so a block of the plan is F + the pipeline step, and B + W + the pipeline step. Then one layer: each
kernel class's time per pass and its kernel count. ``--attention`` runs the scenario with another attention kernel
(a what-if; nothing is written). A diagnostic: nothing is fitted.
"""

from __future__ import annotations

import collections
import copy
import sys

import yaml

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.parallel.layout import split_layers
from simcluster.spec import config
from simcluster.workload import kernels
from simcluster.workload.ops import embedding_ops, layer_ops, output_ops, shard_for

PHASES = ("forward", "backward_input", "backward_weight")
PASS = {"forward": "F", "backward_input": "B", "backward_weight": "W"}


def load(name: str, attention: str | None = None):
    """The scenario, or (``attention``) the scenario with that attention kernel."""
    if attention is None:
        return config.load(name)
    data = copy.deepcopy(yaml.safe_load(config.resolve_path(name).read_text()))
    data["training"]["attention"] = attention
    return config.from_dict(data, source=f"{name} with attention {attention}")


def _seconds(ops, gpu, precision: str) -> float:
    host = kernels.host_model()
    return sum(max(*kernels.roofline_s(op, gpu, precision)) + host.gap_s(op) for op in ops)


def stage_passes(scenario) -> dict[str, dict[str, float]]:
    """Seconds of F, B and W for one microbatch on the first, a middle and the last pipeline stage."""
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    shard = shard_for(scenario)
    layer = {phase: _seconds(ops, gpu, precision) for phase, ops in layer_ops(scenario.model, shard).items()}
    extras = {"first": embedding_ops(scenario.model, shard), "last": output_ops(scenario.model, shard)}
    split = split_layers(scenario.model.layers, scenario.parallelism.pp)
    counts = {"first": split[0], "middle": split[len(split) // 2], "last": split[-1]}
    out = {}
    for stage, layers in counts.items():
        ops = extras.get(stage, {})
        out[stage] = {phase: layers * layer[phase] + _seconds(ops.get(phase, []), gpu, precision) for phase in PHASES}
    return out


def op_class(op) -> str:
    """The class a kernel of the layer is reported under."""
    if op.kind == "gemm":
        return "attention core" if op.name.startswith("attention") else "GEMM " + op.name
    if op.kind == "attention" or op.name in ("softmax", "attention_dropout"):
        return "attention core"
    return op.name


def layer_classes(scenario) -> dict[tuple[str, str], tuple[float, int]]:
    """(class, pass) -> (seconds without gaps, kernels) for one layer and microbatch."""
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    out: dict[tuple[str, str], list] = collections.defaultdict(lambda: [0.0, 0])
    for phase, ops in layer_ops(scenario.model, shard_for(scenario)).items():
        for op in ops:
            entry = out[(op_class(op), PASS.get(phase, phase))]
            entry[0] += max(*kernels.roofline_s(op, gpu, precision))
            entry[1] += 1
    return {key: (seconds, count) for key, (seconds, count) in out.items()}


def report(name: str, attention: str | None) -> list[str]:
    scenario = load(name, attention)
    t = scenario.training
    lines = [f"== {name}: attention {t.attention}, {shard_for(scenario).tokens} tokens a microbatch, "
             f"gap {kernels.host_model().kernel_gap_s * 1e6:.0f} us a kernel"]
    for stage, passes in stage_passes(scenario).items():
        cells = "  ".join(f"{PASS[p]} {s * 1e3:7.2f}" for p, s in passes.items())
        lines.append(f"  {stage:<6} stage (ms): {cells}  total {sum(passes.values()) * 1e3:7.2f}")
    lines.append("  one layer (us, kernels):")
    for (cls, phase), (seconds, count) in sorted(layer_classes(scenario).items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lines.append(f"    {phase} {cls:<24} {seconds * 1e6:8.1f} us  {count:2d}")
    return lines


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="+")
    parser.add_argument("--attention", default=None, help="run with this attention kernel instead (a what-if)")
    args = parser.parse_args(argv)
    for name in args.scenarios:
        try:
            lines = report(name, args.attention)
        except ScenarioError as err:
            print(f"error: {name}: {err}", file=sys.stderr)
            return 2
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
