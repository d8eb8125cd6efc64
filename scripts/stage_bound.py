"""A pipelined step's lower bound from its busiest stage, against the engine and the published step (round 27: why
NVIDIA's pipelined 70B FP8 recipes on H100 simulate slow; docs/calibration/round-27.md "Round 27: the pipelined 70B
recipes' last stage").

    PYTHONPATH=. python scripts/stage_bound.py nemo2511-llama3-70b-64-h100-fp8 nemo2407-llama2-70b-64-h100-fp8
    PYTHONPATH=. python scripts/stage_bound.py nemo2604-llama3-70b-64-h100-fp8 --split 2x35,3,2x3,1

Pipeline rank b runs every block of its chunks (W_b: forward and backward of each chunk, every microbatch). Its
first block is a forward of chunk b (chunk b + pp needs chunk b's output first), which waits for the forwards of
chunks 0 .. b - 1 of one microbatch; its last block is a backward of chunk b, after which the backwards of chunks
b - 1 .. 0 of that microbatch still run. So, whatever the schedule, with free messages:

    step >= W_b + sum over chunks s < b of (t_f(s) + t_b(s))        for every rank b

(``bound``). The engine attains it on a pipeline whose last rank is the busiest
(``tests/unit/test_pipeline_bubble.py``). A published step below the bound of its own layer split says the blocks
are over-charged, whatever the schedule: ``ceiling`` is the largest factor on every transformer layer's time (the
chunks' other work, embedding, output layer and loss, held as modelled) that keeps the bound within the published
step. ``--split`` runs the scenario with ``parallelism.layers_per_stage`` (``NxK`` repeats K N times).
"""

from __future__ import annotations

import re
import sys

from pipeline_terms import published_step_s

from simcluster.core.errors import ScenarioError
from simcluster.engine.simulation import Simulation
from simcluster.spec import config, model
from simcluster.workload import kernels


def block_s(chunk) -> float:
    """A chunk's forward and backward blocks, one microbatch (``pipeline_terms.block_s``'s sum)."""
    return chunk.forward_compute_s + chunk.backward_compute_s + chunk.tp_async_exposed_s


def layer_s(chunks, pp: int) -> float:
    """One transformer layer's forward and backward, one microbatch: a chunk with layers and neither the embedding
    nor the output layer, less the fitted pipeline step the plan adds to each of its two blocks (``parallel.plan``),
    over its layers."""
    inner = [c for c in chunks[1:-1] if c.layers > 0]
    if not inner:
        raise ScenarioError("parallelism.pp", "needs a chunk between the first and last to read a layer's time from")
    reference = inner[0]
    step = kernels.pipeline_step_overhead_s() if pp > 1 else 0.0
    return (block_s(reference) - 2 * step) / reference.layers


def bound(chunks, pp: int, microbatches: int, layer_factor: float = 1.0, layer: float = 0.0) -> tuple[float, int]:
    """(the lower bound, the rank that sets it), every layer's blocks scaled by ``layer_factor``."""
    def scaled(c) -> float:
        return block_s(c) + (layer_factor - 1.0) * c.layers * layer

    best, rank = 0.0, 0
    for b in range(pp):
        work = microbatches * sum(scaled(c) for c in chunks if c.stage == b)
        fill = sum(scaled(c) for c in chunks[:b])
        if work + fill > best:
            best, rank = work + fill, b
    return best, rank


# Chunks a split may list: one a layer of the largest model accepted (model.MAX_LAYERS) plus the embedding's and the
# output layer's, far above any layout; checked before the list is built ('99999999999x1' asked for 10^11 entries:
# a MemoryError)
MAX_SPLIT_CHUNKS = model.MAX_LAYERS + 2


def parse_split(text: str) -> list[int]:
    """``35x2,3,3x2,1``: layers per chunk in model order, ``NxK`` for N chunks of K layers."""
    out: list[int] = []
    for part in text.split(","):
        found = re.fullmatch(r"([0-9]+)(?:x([0-9]+))?", part)   # ASCII digits: '²' is isdigit() but not int()
        if found is None:
            raise ScenarioError("--split", f"{part!r} is not N or NxK (N chunks of K layers)")
        count, layers = found.groups()
        if layers is not None and int(count) > MAX_SPLIT_CHUNKS - len(out):
            raise ScenarioError("--split", f"{part!r}: more than {MAX_SPLIT_CHUNKS} chunks in all")
        out += [int(layers)] * int(count) if layers is not None else [int(count)]
    if len(out) > MAX_SPLIT_CHUNKS:
        raise ScenarioError("--split", f"{len(out)} chunks: at most {MAX_SPLIT_CHUNKS}")
    return out


def report(scenario) -> list[str]:
    sim = Simulation(scenario, check_memory=False)
    chunks, p, m = sim.plan.chunks, scenario.parallelism, scenario.microbatches
    layer = layer_s(chunks, p.pp)
    step = kernels.pipeline_step_overhead_s()
    lower, rank = bound(chunks, p.pp, m)
    stages = [m * sum(block_s(c) for c in chunks if c.stage == b) for b in range(p.pp)]
    lines = [f"== {scenario.name}: pp {p.pp}, v {p.virtual_stages}, {m} microbatches, a layer's blocks "
             f"{layer * 1e3:.2f} ms a microbatch",
             "  W by rank (s): " + " ".join(f"{w:.3f}" for w in stages),
             f"  first / last chunk beyond their layers and pipeline steps (ms a microbatch): "
             f"{(block_s(chunks[0]) - 2 * step - chunks[0].layers * layer) * 1e3:.2f} / "
             f"{(block_s(chunks[-1]) - 2 * step - chunks[-1].layers * layer) * 1e3:.2f}",
             f"  bound W_b + fill, rank {rank}: {lower:.3f} s"]
    step = sim.run().summary["step_time_s"]
    optimizer = max(sim.plan.optimizer_s)
    lines.append(f"  engine step {step:.3f} s (optimizer {optimizer:.3f} s; beyond the bound "
                 f"{step - optimizer - lower:+.3f} s)")
    published = published_step_s(scenario)
    if published is not None:
        # the largest factor on every layer's blocks keeping the bound (and the optimizer) within the published step
        low, high = 0.0, 2.0
        for _ in range(60):
            mid = (low + high) / 2
            low, high = (mid, high) if bound(chunks, p.pp, m, mid, layer)[0] + optimizer <= published else (low, mid)
        if low == 0.0:   # the bound without any layer's time is over the published step already
            lines.append(f"  published {published:.3f} s: below the bound even with no time for the layers (the "
                         "chunks' other work and the optimizer exceed it)")
        else:
            lines.append(f"  published {published:.3f} s: ceiling on a layer's time {low:.3f} x the simulated "
                         f"({(1 / low - 1) * 100:+.1f}% over-charged at least)")
    return lines


def main(argv: list[str]) -> int:
    split = None
    if "--split" in argv:
        at = argv.index("--split")
        if at + 1 >= len(argv):
            raise ScenarioError("--split", "needs a value, e.g. 35x2,3,3x2,1")
        split = parse_split(argv[at + 1])
        argv = argv[:at] + argv[at + 2:]
    if not argv:
        raise ScenarioError("scenario", "name at least one scenario")
    for name in argv:
        scenario = config.load(name)
        if split is not None:
            data = scenario.model_dump(mode="json", exclude_none=True)
            data["parallelism"]["layers_per_stage"] = split
            scenario = config.from_dict(data, source=f"{name} with layers_per_stage {split}")
        print("\n".join(report(scenario)))
    return 0


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, ["--split"], words=(1, None),
                 usage="[--split N|NxK,...] SCENARIO [SCENARIO ...]"))
