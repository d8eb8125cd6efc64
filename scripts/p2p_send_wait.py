"""What-if (not the engine): the interleaved 1F1B schedule with and without Megatron-Core's wait on its sends.

    PYTHONPATH=. python scripts/p2p_send_wait.py

With ``overlap_p2p_comm`` Megatron-Core's interleaved schedule waits, before each forward (backward), on every handle
of the previous forward's (backward's) exchange (``for req in fwd_wait_handles: req.wait()``; the list from
``p2p_communication._p2p_ops`` holds the isend handles as well as the irecvs). A send completes only once its receiver
has posted the matching receive, which its pipeline stream queues behind its own previous block's send. The engine
neither holds a sender nor waits for a send (docs/calibration.md, "the pipeline bubble, itemised"). Here both rules
run on ``schedules.pipeline_order`` with uniform chunk blocks (forward F, backward 2F), the output layer's extra e
(2e backward) on the last chunk and one transfer time T per message; F, e and T are rough per-row inputs (from
``scripts/pipeline_terms.py`` terms and message size / ~45 GB/s), so the output is an order of magnitude only
(docs/calibration.md, "the Megatron-Core 2024 rows against NeMo's GPT-3").
"""

from __future__ import annotations

from simcluster.parallel.schedules import pipeline_order

# pp, virtual stages, microbatches, F ms, e ms, T ms
ROWS = {
    "megatron-177b-h100": (6, 8, 24, 7.3, 3.0, 0.3),
    "megatron-177b-96-h100": (6, 8, 576, 7.3, 3.0, 0.3),
    "megatron-177b-4608-h100": (6, 8, 12, 7.3, 3.0, 0.3),
    "megatron-462b-h100": (16, 7, 64, 9.3, 4.3, 0.45),
    "megatron-70b-h100": (2, 21, 8, 3.3, 2.1, 0.2),
    "nemo2409-gpt3-175b-128-h100-bf16": (8, 12, 64, 3.9, 1.2, 0.3),
}


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


def main() -> None:
    print(f"{'run':34s} {'no send wait':>13s} {'send wait':>11s} {'added':>7s}")
    for name, row in ROWS.items():
        free, held = step_ms(*row, wait_sends=False), step_ms(*row, wait_sends=True)
        print(f"{name:34s} {free:10.1f} ms {held:8.1f} ms {100 * (held / free - 1):+6.2f}%")


if __name__ == "__main__":
    main()
