"""A pipelined step, term by term, on its busiest pipeline stage (issue 15: why the NeMo FP8 micro batch 1 rows are
simulated slow; docs/calibration.md "NeMo FP8 pipelined rows, term by term").

    PYTHONPATH=. python scripts/pipeline_terms.py nemo2407-llama2-70b-64-h100-fp8 nemo2409-gpt3-175b-128-h100-bf16

For each scenario, from its plan (``parallel.plan``: the blocks the engine runs, one per model chunk, microbatch and
phase) summed over the stage with the most compute: the transformer layers' kernels by op class
(``fp8_pairs.layer_breakdown``, the kernel model of one layer), what the chunks add beyond their layers (embedding,
output layer and loss; userbuffers' exposed last reduce-scatter chunks and Transformer Engine's amax regions, each its
own term), the fitted per-kernel gap (kernels x
``host_overhead.kernel_gap_s``) and the fitted pipeline step (blocks x ``host_overhead.pipeline_step_s``); then from
the engine (``engine.simulate``) the step, its compute, the pipeline bubble, exposed communication per parallelism
and the communication kernels' interference. ``check`` compares the blocks' sum with the plan's block times
(``ChunkCost.forward_compute_s`` + ``backward_compute_s``; 0 unless a block is host-bound).
"""

from __future__ import annotations

import functools
import sys

from fp8_pairs import layer_breakdown

from simcluster import engine
from simcluster.collectives import timing
from simcluster.core.errors import ScenarioError
from simcluster.engine.simulation import Simulation
from simcluster.parallel import plan as step_plan
from simcluster.spec import config
from simcluster.workload import kernels, userbuffers
from simcluster.workload.ops import layer_ops, shard_for

ENGINE_KEYS = ("step_time_s", "compute_s", "pipeline_bubble_s", "comm_interference_s")


def chunk_waits(sim: Simulation, chunks) -> tuple[float, float]:
    """Device seconds a microbatch of ``chunks`` (forward and backward) spends on what ``parallel.plan.plan`` adds
    to the layers' kernels besides the embedding and output layer: Transformer Engine userbuffers' exposed last
    reduce-scatter chunks (``userbuffers.exposed_stream``, timed alone on the fabric as the plan times them) and
    fp8 delayed scaling's amax regions (``plan.amax_region``). Dense layers only (the layer of ``layer_ops``)."""
    scenario = sim.scenario
    p, t, gpu = scenario.parallelism, scenario.training, scenario.cluster.gpu
    shard = shard_for(scenario)
    layer = layer_ops(scenario.model, shard)
    collective_time_s = functools.partial(timing.isolated_time_s, sim.fabric)
    exposed = 0.0
    if p.tp_comm_overlap and p.sequence_parallel and p.tp > 1 and p.tp_comm_overlap_impl == "userbuffers":
        settings = userbuffers.scenario_config(scenario)
        element = shard.activation_bytes_per_element
        layer = userbuffers.apply(layer, p.tp, t.precision, element, kernels.sm_count(gpu.name), settings)
        activation_bytes = t.seq_len / p.cp * t.micro_batch_size * scenario.model.hidden * element
        rs_chunk, fp8_chunk = userbuffers.last_chunk_bytes(activation_bytes, p.tp, element, t.precision, settings)
        group = tuple(sim.plan.layout.group(0, "tp"))
        chunk_s = collective_time_s("reduce_scatter", group, rs_chunk)
        fp8_s = collective_time_s("reduce_scatter", group, fp8_chunk) if fp8_chunk else None
        per_layer = sum(userbuffers.exposed_stream(layer, phases, chunk_s, settings, fp8_s, t.precision).device_s
                        for phases in (("forward",), step_plan.BACKWARD_PHASES))
        exposed = per_layer * sum(c.layers for c in chunks)
    amax = 0.0
    if shard.precision == "fp8":
        gemms = step_plan.fp8_gemms(layer)
        amax = sum(step_plan.amax_region(scenario, c.layers * gemms, direction, sim.plan.layout,
                                         collective_time_s).device_s
                   for c in chunks for direction in ("forward", "backward"))
    return exposed, amax


def stage_terms(scenario, stage: int | None = None) -> tuple[dict[str, float], dict]:
    """Seconds per step of each term on ``stage`` (None: the stage with the most block time), and facts of the
    layout."""
    sim = Simulation(scenario, check_memory=False)
    plan = sim.plan
    host = kernels.host_model()
    step_s = host.pipeline_step_s if scenario.parallelism.pp > 1 else 0.0
    m = plan.microbatches

    def block_s(chunk) -> float:
        return chunk.forward_compute_s + chunk.backward_compute_s

    if stage is None:
        stage = max(range(plan.layout.pp), key=lambda s: sum(block_s(c) for c in plan.chunks if c.stage == s))
    chunks = [c for c in plan.chunks if c.stage == stage]
    layer = layer_breakdown(scenario)
    layer_device = sum(v for k, v in layer.items() if k not in ("layer", "kernel gaps", "tensor-core fill"))
    layers = sum(c.layers for c in chunks)
    terms = {k: v * layers * m for k, v in layer.items() if k not in ("layer", "kernel gaps", "tensor-core fill")}
    device = sum(c.forward_stream.device_s + c.backward_stream.device_s for c in chunks) * m
    exposed, amax = chunk_waits(sim, chunks)
    terms["userbuffers: exposed last reduce-scatter"] = exposed * m
    terms["fp8 amax regions (kernels + all-reduce)"] = amax * m
    terms["chunk extras (embedding, output, loss)"] = device - layer_device * layers * m - (exposed + amax) * m
    terms["kernel gaps (fitted)"] = sum(c.forward_stream.kernels + c.backward_stream.kernels for c in chunks) * m \
        * host.kernel_gap_s
    terms["pipeline steps (fitted)"] = 2 * len(chunks) * m * step_s
    blocks = sum(block_s(c) for c in chunks) * m
    terms["check: plan blocks - terms"] = blocks - sum(terms.values())
    facts = {"stage": stage, "chunks": len(chunks), "layers": layers, "microbatches": m,
             "blocks": 2 * len(chunks) * m}
    return terms, facts


def report(name: str) -> list[str]:
    scenario = config.load(name)
    terms, facts = stage_terms(scenario)
    summary = engine.simulate(scenario).summary
    lines = [f"== {name}: stage {facts['stage']}, {facts['chunks']} chunks, {facts['layers']} layers, "
             f"{facts['microbatches']} microbatches, {facts['blocks']} blocks"]
    step = float(summary["step_time_s"])
    lines += [f"  {key:<46} {value:8.3f} s {value / step:7.1%}" for key, value in terms.items()]
    for key in ENGINE_KEYS:
        lines.append(f"  engine {key:<39} {float(summary[key]):8.3f} s {float(summary[key]) / step:7.1%}")
    for axis, seconds in summary["exposed_comm_by_parallelism_s"].items():
        if abs(seconds) > 1e-9:
            lines.append(f"  engine exposed {axis:<32} {seconds:8.3f} s {seconds / step:7.1%}")
    return lines


def main(argv: list[str]) -> int:
    if not argv:
        print(next(line.strip() for line in __doc__.splitlines() if "python scripts/" in line))
        return 2
    try:
        for name in argv:
            print("\n".join(report(name)))
    except ScenarioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
