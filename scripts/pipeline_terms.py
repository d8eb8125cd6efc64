"""A pipelined step, term by term, on its busiest pipeline stage (issue 15: why the NeMo FP8 micro batch 1 rows are
simulated slow; docs/calibration/rounds-10-14.md "NeMo FP8 pipelined rows, term by term").

    PYTHONPATH=. python scripts/pipeline_terms.py nemo2407-llama2-70b-64-h100-fp8 nemo2409-gpt3-175b-128-h100-bf16

For each scenario, from its plan (``parallel.plan``: the blocks the engine runs, one per model chunk, microbatch and
phase) summed over the stage with the most compute: the transformer layers' kernels by op class
(``fp8_pairs.layer_breakdown``, the kernel model of one layer), what the chunks add beyond their layers (embedding,
output layer and loss; userbuffers' exposed last reduce-scatter chunks and Transformer Engine's amax regions, each its
own term), the fitted per-kernel gap (kernels x
``host_overhead.kernel_gap_s``) and the fitted pipeline step (blocks x ``host_overhead.pipeline_step_s``); then from
the engine (``engine.simulate``) the step, its compute, the pipeline bubble, exposed communication per parallelism
and the communication kernels' interference. ``check`` compares the blocks' sum with the plan's block times
(``ChunkCost.forward_compute_s`` + ``backward_compute_s`` + ``tp_async_exposed_s``, the wait on TP overlap off's
async backward collectives, its own term; 0 unless a block is host-bound).

    PYTHONPATH=. python scripts/pipeline_terms.py --bubble megatron-177b-h100 nemo2409-gpt3-175b-128-h100-bf16

``--bubble`` itemises the engine's pipeline bubble (the step less the compute and exposed communication, both
averaged over the stages: engine/results.py) by running the step again with its causes added one at a time
(``bubble_terms``; docs/calibration/round-15.md "Round 15: the pipeline bubble, itemised").

    PYTHONPATH=. python scripts/pipeline_terms.py --fitted nemo2604-llama3-70b-64-h100-fp8

``--fitted`` simulates the step again with each fitted host term at 0 (``host_overhead.kernel_gap_s``, then
``pipeline_step_s``, then both; ``fitted_steps``): what each fitted number holds of the step, as the engine runs it
(docs/calibration/round-29.md "Round 29: the Llama 3 70B rows, H100 slow and Blackwell fast, side by side"). A what-if:
nothing is fitted or written.

    PYTHONPATH=. python scripts/pipeline_terms.py --per-layer nemo2511-llama3-70b-64-h100-fp8 \
        nemo2511-llama3-405b-1024-h100-fp8

``--per-layer`` puts one layer and microbatch of the busiest stage beside what the row's published step leaves it
(``layer_budget``): the layer's device time by class and its kernels, the fitted gaps and pipeline steps a layer and
microbatch, and the published step less the stage's chunk extras (embedding, output layer, loss), shared by its
layers x microbatches after the closed-form fill (pp - 1) / (v m). What is left beyond the device time, per kernel,
is what the published run spent beside its modelled kernels ("implied"), against what the model charges there
("fitted": gap and pipeline step). The same with the stage's extras spread evenly over the pp stages is printed
too ("extras spread"), for rows whose last stage carries a large output layer (docs/calibration/round-31.md "Round 31:
the Llama 3 70B FP8 rows against the 405B and GPT-3 rows, layer by layer").
"""

from __future__ import annotations

import dataclasses
import functools
import sys

from fp8_pairs import layer_breakdown
from recipe_sweep import HOST_OVERHEADS, without_host_overheads

from simcluster import engine
from simcluster.collectives import timing
from simcluster.core.errors import ScenarioError
from simcluster.engine import data_parallel
from simcluster.engine.simulation import Simulation
from simcluster.parallel import plan as step_plan
from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import kernels, userbuffers
from simcluster.workload.ops import layer_ops, shard_for

ENGINE_KEYS = ("step_time_s", "compute_s", "pipeline_bubble_s", "comm_interference_s")
ASYNC_TP = "async TP backward: collectives outlasting their GEMMs"


def block_s(chunk) -> float:
    """A chunk's forward and backward blocks as a stage runs them: their compute and, with TP overlap off, the wait
    on the backward's async TP collectives that outlast their GEMMs (``ChunkCost.tp_async_exposed_s``), which the
    engine runs inside the backward block after its compute (``engine.agents``; tallied as exposed TP there)."""
    return chunk.forward_compute_s + chunk.backward_compute_s + chunk.tp_async_exposed_s



def chunk_waits(sim: Simulation, chunks) -> tuple[float, float]:
    """Device seconds a microbatch of ``chunks`` (forward and backward) spends on what ``parallel.plan.plan`` adds
    to the layers' kernels besides the embedding and output layer: Transformer Engine userbuffers' exposed last
    reduce-scatter chunks (``userbuffers.exposed_stream``, timed alone on the fabric as the plan times them) and
    fp8 delayed scaling's amax regions (``plan.amax_region``) with current scaling's tensor-parallel amax
    all-reduces (``plan.tp_amax_all_reduces``). Dense layers only (the layer of ``layer_ops``)."""
    scenario = sim.scenario
    p, t, gpu = scenario.parallelism, scenario.training, scenario.cluster.gpu
    shard = shard_for(scenario)
    layer = layer_ops(scenario.model, shard)
    collective_time_s = functools.partial(timing.isolated_time_s, sim.fabric)
    exposed = 0.0
    if p.tp_comm_overlap and p.sequence_parallel and p.tp > 1 and p.tp_comm_overlap_impl == "userbuffers":
        settings = userbuffers.scenario_charged(scenario)
        element = shard.activation_bytes_per_element
        layer = userbuffers.apply(layer, p.tp, t.precision, element, kernels.sm_count(gpu.name), settings,
                                  p.te_version)
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
        group = tuple(sim.plan.layout.group(0, "tp"))
        amax += sum(step_plan.tp_amax_all_reduces(scenario, direction, group, collective_time_s).device_s
                    for direction in ("forward", "backward")) * sum(c.layers for c in chunks)
    return exposed, amax


def stage_terms(scenario, stage: int | None = None) -> tuple[dict[str, float], dict]:
    """Seconds per step of each term on ``stage`` (None: the stage with the most block time), and facts of the
    layout."""
    sim = Simulation(scenario, check_memory=False)
    plan = sim.plan
    host = kernels.host_model()
    step_s = host.pipeline_step_s if scenario.parallelism.pp > 1 else 0.0
    m = plan.microbatches

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
    terms["kernel gaps (fitted)"] = sum(c.forward_stream.gaps_s(host) + c.backward_stream.gaps_s(host)
                                        for c in chunks) * m
    terms["pipeline steps (fitted)"] = 2 * len(chunks) * m * step_s
    terms[ASYNC_TP] = sum(c.tp_async_exposed_s for c in chunks) * m   # a TP wait: also in the engine's exposed tp
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


# the bubble's causes, added one at a time to the pure schedule (``bubble_terms``): (label, what the step adds)
BUBBLE_LADDER = (
    ("(b) stage imbalance: embedding, output layer, loss", "chunks"),
    ("(d) pipeline messages on the critical path", "messages"),
    ("(e) gradient reduction (interference, exposed tail)", "reduction"),
    ("(e) parameter all-gather (first forwards wait)", "gather"),
    ("(e) step collectives (sequence-parallel grads, embedding, grad norm)", "collectives"),
)


def _bubble_run(scenario, parts: set[str]) -> tuple[float, float, list[float], Simulation]:
    """The step with only ``parts`` of the ladder (``BUBBLE_LADDER``) on: its time, its bubble, each stage's idle
    time (the step less the stage's compute, optimizer and exposed communication) and the simulation."""
    sim = Simulation(scenario, check_memory=False)
    plan = sim.plan
    if "chunks" not in parts:  # every chunk the middle one's block, every stage the same optimizer
        middle = plan.chunks[len(plan.chunks) // 2]
        plan.chunks = [dataclasses.replace(middle, chunk=c.chunk, stage=c.stage) for c in plan.chunks]
        plan.deferred_wgrads = 0
        plan.optimizer_s = [max(plan.optimizer_s)] * len(plan.optimizer_s)
    if "messages" not in parts:
        plan.p2p_bytes, plan.p2p_gather_bytes = 0.0, 0.0
    if "collectives" not in parts:   # with the sequence-parallel weights' TP all-reduce (round 27)
        plan.embedding_grad_bytes, plan.grad_norm_axes, plan.sequence_parallel_grad_bytes = 0.0, (), []
    for agent in sim.agents:
        if "reduction" not in parts:
            agent.gradients = data_parallel.GradientReduction()
        if "gather" not in parts:
            agent.parameters = data_parallel.ParameterGathering()
    summary = sim.run(1).summary
    step = float(summary["step_time_s"])
    idle = []
    for agent in sim.agents:
        t = agent.tally
        idle.append(step - t.compute_s - t.optimizer_s - t.tp_comm_s - t.cp_comm_s - t.p2p_wait_s - t.dp_wait_s
                    - t.ep_comm_s)
    return step, float(summary["pipeline_bubble_s"]), idle, sim


def bubble_terms(scenario) -> tuple[list[tuple[str, float]], dict]:
    """The engine's pipeline bubble itemised: (a) the closed form (pp - 1)/(v m) of a stage's blocks on the pure
    schedule (every chunk the middle one's block, no pipeline messages, no data parallelism), the blocks as the
    plan times them, and what the blocks' own waits add to them as they run (blocking TP, CP and EP
    communication, the overlapped TP collectives' slowdown of the compute); the pure schedule's own
    bubble less that closed form (0: the engine runs the interleaved schedule exactly); (c) the fitted pipeline
    step's share of the closed form (2 (pp - 1) blocks of ``pipeline_step_s``); then what each cause of
    ``BUBBLE_LADDER`` adds when switched on after the ones before it, up to the run as simulated."""
    messages = Simulation(scenario, check_memory=False).plan.p2p_bytes
    parts: set[str] = set()
    step, bubble, idle, sim = _bubble_run(scenario, parts)
    plan = sim.plan
    pp, m = plan.layout.pp, plan.microbatches
    v = plan.chunk_count // pp
    middle = plan.chunks[len(plan.chunks) // 2]
    middle_s = block_s(middle)   # with the async TP wait the plan puts in the backward block
    # a stage's blocks as they run: their compute and the TP, CP and EP communication they wait for
    stage_blocks_s = sum(a.tally.compute_s + a.tally.tp_comm_s + a.tally.cp_comm_s + a.tally.ep_comm_s
                         for a in sim.agents) / len(sim.agents)
    closed = (pp - 1) / (v * m) * stage_blocks_s
    step_s = kernels.host_model().pipeline_step_s if pp > 1 else 0.0
    terms = [("(a) closed form, plan blocks: (pp-1)(t_f+t_b)", (pp - 1) * middle_s),
             ("(a) closed form: the blocks' TP/CP/EP waits, TP slowdown", closed - (pp - 1) * middle_s),
             ("(a) pure schedule less the closed form", bubble - closed),
             ("(c) of the closed form: fitted pipeline steps", 2 * (pp - 1) * step_s)]
    p2p_wait_s = {}   # a stage's exposed pipeline communication after each rung (a held sender's wire time)
    for label, part in BUBBLE_LADDER:
        parts.add(part)
        before = bubble
        step, bubble, idle, _sim = _bubble_run(scenario, parts)
        terms.append((label, bubble - before))
        p2p_wait_s[label] = sum(a.tally.p2p_wait_s for a in _sim.agents) / len(_sim.agents)
    facts = {"pp": pp, "v": v, "microbatches": m, "block_s": middle_s, "step_s": step, "bubble_s": bubble,
             "idle_by_stage_s": idle, "p2p_bytes": messages, "p2p_wait_by_rung_s": p2p_wait_s}
    return terms, facts


def bubble_report(name: str) -> list[str]:
    terms, facts = bubble_terms(config.load(name))
    lines = [f"== {name}: pp {facts['pp']}, v {facts['v']}, {facts['microbatches']} microbatches, chunk forward + "
             f"backward {facts['block_s'] * 1e3:.2f} ms, pipeline message {facts['p2p_bytes'] / 1e6:.1f} MB"]
    lines += [f"  {label:<54} {value:8.4f} s" for label, value in terms]
    lines.append(f"  {'engine pipeline_bubble_s (the sum, less (c))':<54} {facts['bubble_s']:8.4f} s of "
                 f"{facts['step_s']:.4f} s")
    lines.append("  idle by stage: " + " ".join(f"{s:.4f}" for s in facts["idle_by_stage_s"]))
    return lines


FITTED_VARIANTS = (("kernel gap 0", ("kernel_gap_s",)), ("pipeline step 0", ("pipeline_step_s",)),
                   ("both 0", HOST_OVERHEADS))


def fitted_steps(scenario) -> dict[str, float]:
    """The simulated step (``as fitted``) and the step with each of ``FITTED_VARIANTS``' host terms at 0, seconds."""
    steps = {"as fitted": engine.simulate(scenario, check_memory=False).summary["step_time_s"]}
    for label, fields in FITTED_VARIANTS:
        with without_host_overheads(fields):
            steps[label] = engine.simulate(scenario, check_memory=False).summary["step_time_s"]
    return steps


def fitted_report(name: str) -> list[str]:
    steps = fitted_steps(config.load(name))
    fitted = steps["as fitted"]
    return [f"== {name}: step {fitted:.3f} s as fitted"] + [
        f"  {label:<16} {step:8.3f} s  (the fitted term(s): {fitted - step:6.3f} s, {1 - step / fitted:5.1%})"
        for label, step in steps.items() if label != "as fitted"]


def published_step_s(scenario) -> float | None:
    """The published step of the validation row simulating ``scenario`` (None if none does)."""
    case = next((c for c in (*validation.cases(), *validation.held_out_cases()) if c["scenario"] == scenario.name),
                None)
    return None if case is None else validation.published_step_s(case, scenario)


NOT_LAYER = ("chunk extras (embedding, output, loss)", "kernel gaps (fitted)", "pipeline steps (fitted)",
             "check: plan blocks - terms", ASYNC_TP)
LAYER_CLASSES = (("GEMMs", ("GEMM forward", "GEMM dgrad", "GEMM wgrad")),
                 ("attention", ("attention forward", "attention backward")))


def layer_budget(scenario, published_s: float | None = None) -> dict[str, float]:
    """One layer and microbatch of the busiest stage against what ``published_s`` (default: the row's published
    step) leaves it, seconds: ``device`` (every layer term of ``stage_terms`` but the fitted ones: GEMMs,
    attention, the rest), ``kernels`` (a layer and microbatch: the stage's kernels, its chunk extras' few included),
    ``gaps`` and ``pipeline`` (the fitted terms, a layer and microbatch), ``left`` = (published - the stage's chunk
    extras) / (1 + (pp - 1) / (v m)) / (layers m) and ``left_spread`` = the same with the extras of the pp stages
    shared evenly ((published - extras / pp) over (L / pp) m layers and microbatches, L the model's layers);
    ``implied_per_kernel`` = (left - device) / kernels and ``fitted_per_kernel`` = (gaps + pipeline) / kernels,
    with ``implied_spread_per_kernel`` likewise."""
    published = published_step_s(scenario) if published_s is None else published_s
    if published is None:
        raise ScenarioError("name", f"{scenario.name} is no validation row: no published step to compare")
    terms, facts = stage_terms(scenario)
    p = scenario.parallelism
    m, pp = facts["microbatches"], p.pp
    v = facts["chunks"]
    n = facts["layers"] * m
    gap = kernels.host_model().kernel_gap_s
    # a class the stage has no kernel of (unfused attention runs batched GEMMs and memory-bound kernels) is 0
    out = {name: sum(terms.get(k, 0.0) for k in keys) / n for name, keys in LAYER_CLASSES}
    out["device"] = sum(value for key, value in terms.items() if key not in NOT_LAYER) / n
    out["rest"] = out["device"] - out["GEMMs"] - out["attention"]
    out["gaps"] = terms["kernel gaps (fitted)"] / n
    out["pipeline"] = terms["pipeline steps (fitted)"] / n
    out["kernels"] = out["gaps"] / gap
    extras = terms["chunk extras (embedding, output, loss)"]
    fill = 1 + (pp - 1) / (v * m) if pp > 1 else 1.0
    out["published"] = published
    out["extras share"] = extras / published
    out["left"] = (published - extras) / fill / n
    out["left_spread"] = (published - extras / pp) / fill / (scenario.model.layers / pp * m)
    out["implied_per_kernel"] = (out["left"] - out["device"]) / out["kernels"]
    out["implied_spread_per_kernel"] = (out["left_spread"] - out["device"]) / out["kernels"]
    out["fitted_per_kernel"] = (out["gaps"] + out["pipeline"]) / out["kernels"]
    return out


def layer_report(name: str) -> list[str]:
    b = layer_budget(config.load(name))
    ms, us = 1e3, 1e6
    return [f"== {name}: a layer and microbatch of the busiest stage, {b['kernels']:.1f} kernels",
            f"  device {b['device'] * ms:.2f} ms (GEMMs {b['GEMMs'] * ms:.2f}, attention {b['attention'] * ms:.2f}, "
            f"rest {b['rest'] * ms:.2f}); fitted gaps {b['gaps'] * ms:.2f} ms, pipeline steps "
            f"{b['pipeline'] * ms:.2f} ms",
            f"  published step {b['published']:.3f} s, the stage's extras {b['extras share']:.1%} of it: leaves "
            f"{b['left'] * ms:.2f} ms ({b['left_spread'] * ms:.2f} ms with the extras spread over the stages)",
            f"  beside the kernels, per kernel: implied {b['implied_per_kernel'] * us:.1f} us (extras spread "
            f"{b['implied_spread_per_kernel'] * us:.1f} us), fitted {b['fitted_per_kernel'] * us:.1f} us"]


def print_reports(names: list[str], report_of) -> int:
    """Print ``report_of(name)``'s lines for each scenario name; a bad scenario is one line on stderr, exit 2 (shared
    by the other itemising scripts)."""
    try:
        for name in names:
            print("\n".join(report_of(name)))
    except ScenarioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str]) -> int:
    if not argv:  # a direct call (the command line is refused in one line by script_entry.run first)
        print(next(line.strip() for line in __doc__.splitlines() if "python scripts/" in line))
        return 2
    # one mode, anywhere on the line: read only as the first word, a later flag (or a second one) was taken for a
    # scenario's name and refused with every bundled name listed (round 32)
    modes = [word for word in argv if word in MODES]
    if len(modes) > 1:
        raise ScenarioError(modes[1], f"give one of {', '.join(MODES)}, not {' and '.join(modes)}")
    return print_reports([word for word in argv if word not in MODES], MODES.get(modes[0]) if modes else report)


MODES = {"--bubble": bubble_report, "--fitted": fitted_report, "--per-layer": layer_report}


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, list(MODES),
                 words=(1, None), usage="[--bubble | --fitted | --per-layer] SCENARIO [SCENARIO ...]"))
