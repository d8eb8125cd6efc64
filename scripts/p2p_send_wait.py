"""What-if (not the engine): the interleaved 1F1B schedule with and without Megatron-Core's wait on its sends.

    PYTHONPATH=. python scripts/p2p_send_wait.py [SCENARIO ...]     (default: the six rows of RUNS)

With ``overlap_p2p_comm`` Megatron-Core's interleaved schedule waits, before each forward (backward), on every handle
of the previous forward's (backward's) exchange (``for req in fwd_wait_handles: req.wait()``; the list from
``p2p_communication._p2p_ops`` holds the isend handles as well as the irecvs). A send completes only once its receiver
has posted the matching receive, which its pipeline stream queues behind its own previous block's send. The engine
neither holds a sender nor waits for a send (docs/calibration/round-15.md, "the pipeline bubble, itemised"). Here both
rules run on ``schedules.pipeline_order`` with uniform chunk blocks (forward F, backward 2F), the output layer's extra e
(2e backward) on the last chunk and one transfer time T per message. F, e and T are derived per row from
``scripts/pipeline_terms.py``'s terms of the row's busiest stage (``inputs``), reproducibly:

- F: the stage's block time less its chunk extras (every ``pipeline_terms.py ROW`` line from "other memory-bound" to
  "async TP backward", i.e. the layers' kernels, userbuffers' exposed chunks, amax regions, kernel gaps and pipeline
  steps) over 3 x microbatches x chunks (a backward is two forwards);
- e: "chunk extras (embedding, output, loss)" over 3 x microbatches (one output layer a microbatch);
- T: one pipeline message (seq x micro batch x hidden, 2-byte activations, split by tp under sequence parallelism
  and by cp) at NCCL's measured per-NIC busbw (nccl.yaml measured.per_nic_busbw, 47 GB/s on NDR).

Uniform blocks and one rate per message make the output an order of magnitude only (docs/calibration/round-16.md, "the
Megatron-Core 2024 rows against NeMo's GPT-3").
"""

from __future__ import annotations

import sys

from pipeline_terms import stage_terms

from simcluster.collectives import nccl
from simcluster.core import units
from simcluster.parallel.schedules import pipeline_order
from simcluster.spec import config

RUNS = ("megatron-177b-h100", "megatron-177b-96-h100", "megatron-177b-4608-h100", "megatron-462b-h100",
        "megatron-70b-h100", "nemo2409-gpt3-175b-128-h100-bf16")
EXTRAS = "chunk extras (embedding, output, loss)"
CHECK = "check: plan blocks - terms"
ACTIVATION_BYTES = 2   # bf16 pipeline messages


def inputs(name: str) -> tuple[int, int, int, float, float, float]:
    """(pp, virtual stages, microbatches, F ms, e ms, T ms) of a bundled scenario, from ``stage_terms``."""
    scenario = config.load(name)
    terms, facts = stage_terms(scenario)
    m, chunks = facts["microbatches"], facts["chunks"]
    body_s = sum(value for key, value in terms.items() if key not in (EXTRAS, CHECK))
    p, t = scenario.parallelism, scenario.training
    message = (t.seq_len * t.micro_batch_size * scenario.model.hidden * ACTIVATION_BYTES
               / (p.tp if p.sequence_parallel else 1) / p.cp)
    rate = units.parse(nccl.constants()["measured"]["per_nic_busbw"]["value"], units.BYTES_PER_S)
    return (p.pp, p.virtual_stages, m, 1e3 * body_s / (3 * m * chunks), 1e3 * terms[EXTRAS] / (3 * m),
            1e3 * message / rate)


def step_ms(pp: int, v: int, m: int, f: float, e: float, t: float, wait_sends: bool) -> float:
    orders = [pipeline_order("1f1b", pp, s, m, v) for s in range(pp)]
    last = pp * v - 1
    key = [{(w.phase, w.microbatch, w.chunk): i for i, w in enumerate(order)} for order in orders]
    end: dict[tuple, float] = {}
    free = [0.0] * pp
    done = [0] * pp

    def consumer(w) -> tuple | None:
        if w.phase == "forward":
            return None if w.chunk == last else ("forward", w.microbatch, w.chunk + 1)
        return None if w.chunk == 0 else ("backward", w.microbatch, w.chunk - 1)

    def send_done(w) -> float | None:
        own = end[(w.phase, w.microbatch, w.chunk)]
        c = consumer(w)
        if c is None:
            return own
        stage = c[2] % pp
        i = key[stage][c]
        if i == 0:
            return own + t
        p = orders[stage][i - 1]
        before = end.get((p.phase, p.microbatch, p.chunk))
        return None if before is None else max(own, before) + t

    while sum(done) < sum(len(o) for o in orders):
        moved = False
        for s in range(pp):
            if done[s] == len(orders[s]):
                continue
            w = orders[s][done[s]]
            start = free[s]
            upstream = (("forward", w.microbatch, w.chunk - 1) if w.phase == "forward" and w.chunk > 0 else
                        ("backward", w.microbatch, w.chunk + 1) if w.phase == "backward" and w.chunk < last else None)
            if upstream is not None:
                if upstream not in end:
                    continue
                start = max(start, end[upstream] + t)
            if wait_sends:
                previous = [o for o in orders[s][:done[s]] if o.phase == w.phase]
                if previous:
                    sent = send_done(previous[-1])
                    if sent is None:
                        continue
                    start = max(start, sent)
            extra = e if w.chunk == last else 0.0
            end[(w.phase, w.microbatch, w.chunk)] = free[s] = start + (f + extra) * (1 if w.phase == "forward" else 2)
            done[s] += 1
            moved = True
        if not moved:
            raise RuntimeError("no progress")
    return max(free)


def main(argv: list[str]) -> int:
    names = argv or list(RUNS)
    print(f"{'run':34s} {'F':>5s} {'e':>5s} {'T':>5s} {'no send wait':>13s} {'send wait':>11s} {'added':>7s}")
    for name in names:
        row = inputs(name)
        free, held = step_ms(*row, wait_sends=False), step_ms(*row, wait_sends=True)
        f, e, t = row[3:]
        print(f"{name:34s} {f:5.2f} {e:5.2f} {t:5.2f} {free:10.1f} ms {held:8.1f} ms {100 * (held / free - 1):+6.2f}%")
    return 0


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__))
