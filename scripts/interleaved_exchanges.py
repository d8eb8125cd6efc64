"""Megatron-LM's interleaved 1F1B with blocking exchanges against asynchronous sends, on one pipeline of uniform
chunks (docs/calibration/round-24.md "Round 24: what a Megatron step costs per model chunk"). An analysis of the
schedule, not part of the engine (which runs the interleaved schedule with asynchronous sends): it shows that the
blocking batched exchanges of the 2021 / January 2023 code add (m - 1) hops a step, a per-microbatch rate.

    python scripts/interleaved_exchanges.py --pp 12 --v 4 --m 96 --forward 0.011 --backward 0.033 --hop 0.00045
"""

from __future__ import annotations

import sys

from simcluster.core import script_entry


def _interleaved_program(pp: int, v: int, m: int, stage: int) -> list[tuple]:
    """One stage's ops in Megatron-LM 2021's interleaved order: ("f" | "b", input message) and ("x", sends,
    receives). A message is (kind, receiving stage, chunk, microbatch of that chunk)."""
    total = m * v

    def chunk(k: int, forward: bool) -> int:
        c = k % (pp * v) // pp
        return c if forward else v - 1 - c

    def mb(k: int) -> int:
        return k // (pp * v) * pp + k % pp

    def f_in(k):
        c = chunk(k, True)
        return None if stage == 0 and c == 0 else ("F", stage, c, mb(k))

    def f_out(k):
        c = chunk(k, True)
        last = stage == pp - 1
        return None if last and c == v - 1 else ("F", (stage + 1) % pp, c + last, mb(k))

    def b_in(k):
        c = chunk(k, False)
        return None if stage == pp - 1 and c == v - 1 else ("B", stage, c, mb(k))

    def b_out(k):
        c = chunk(k, False)
        return None if stage == 0 and c == 0 else ("B", (stage - 1) % pp, c - (stage == 0), mb(k))

    def exchange(sends, receives):
        return ("x", frozenset(sends) - {None}, frozenset(receives) - {None})

    warmup = total if m == pp else min(2 * (pp - stage - 1) + (v - 1) * pp, total)
    ops: list[tuple] = [exchange((), (f_in(0),))]
    for k in range(warmup):
        ops.append(("f", f_in(k)))
        receives = [f_in(k + 1) if k + 1 < total else None]
        if k == warmup - 1 and warmup < total:
            receives.append(b_in(0))
        ops.append(exchange((f_out(k),), receives))
    for k in range(total - warmup):
        ops += [("f", f_in(warmup + k)), ("b", b_in(k))]
        ops.append(exchange((f_out(warmup + k), b_out(k)),
                            (f_in(warmup + k + 1) if warmup + k + 1 < total else None, b_in(k + 1))))
    if warmup == total:
        ops.append(exchange((), (b_in(0),)))
    for k in range(total - warmup, total):
        ops += [("b", b_in(k)), exchange((b_out(k),), (b_in(k + 1) if k + 1 < total else None,))]
    return ops


def interleaved_step_s(pp: int, v: int, m: int, forward_s: float, backward_s: float, hop_s: float,
                       blocking: bool) -> float:
    """One step of the interleaved schedule (``pp`` stages, ``v`` chunks each, ``m`` microbatches) with uniform
    chunk times and a message's time ``hop_s``. ``blocking``: each exchange ends ``hop_s`` after the last of its own
    and its peers' posts (an NCCL send or receive completes once its peer is posted; the batch and the synchronize
    wait for all of them); else sends go on and a pass waits for its input, sent ``hop_s`` earlier."""
    programs = [_interleaved_program(pp, v, m, s) for s in range(pp)]
    at, clock = [0] * pp, [0.0] * pp
    sent: dict = {}       # message -> its sender's post
    received: dict = {}   # message -> its receiver's post
    posted: list = [None] * pp
    moved = True
    while moved:
        moved = False
        for s in range(pp):
            while at[s] < len(programs[s]):
                op = programs[s][at[s]]
                if op[0] == "x":
                    if posted[s] is None:
                        posted[s] = clock[s]
                        sent.update(dict.fromkeys(op[1], clock[s]))
                        received.update(dict.fromkeys(op[2], clock[s]))
                    if blocking:
                        if not (all(x in received for x in op[1]) and all(x in sent for x in op[2])):
                            break
                        peers = [received[x] for x in op[1]] + [sent[x] for x in op[2]]
                        clock[s] = max([posted[s], *peers]) + hop_s if peers else posted[s]
                    posted[s] = None
                else:
                    start = clock[s]
                    if not blocking and op[1] is not None:
                        if op[1] not in sent:
                            break
                        start = max(start, sent[op[1]] + hop_s)
                    clock[s] = start + (forward_s if op[0] == "f" else backward_s)
                at[s] += 1
                moved = True
    if any(at[s] < len(programs[s]) for s in range(pp)):
        raise RuntimeError("interleaved exchanges deadlocked")   # not reached for Megatron's order
    return max(clock)


def main(argv: list[str] | None = None) -> None:
    parser = script_entry.Parser(description="interleaved 1F1B: blocking exchanges against asynchronous sends "
                                 "(module docstring)")
    parser.add_argument("--pp", type=script_entry.count, default=12, help="pipeline stages")
    parser.add_argument("--v", type=script_entry.count, default=4, help="model chunks per stage")
    parser.add_argument("--m", type=script_entry.count, default=96, help="microbatches per step (a multiple of pp)")
    parser.add_argument("--forward", type=float, default=0.011, help="one chunk's forward (s)")
    parser.add_argument("--backward", type=float, default=0.033, help="one chunk's backward, recompute included (s)")
    parser.add_argument("--hop", type=float, default=0.00045, help="one exchange's time (s)")
    args = parser.parse_args(argv)
    for name in ("forward", "backward", "hop"):
        value = getattr(args, name)
        if not (value >= 0 and value < float("inf")):
            parser.error(f"--{name} must be a finite number >= 0 (got {value})")
    if args.m % args.pp:
        parser.error(f"--m must be a multiple of --pp (got {args.m} and {args.pp})")
    blocking = interleaved_step_s(args.pp, args.v, args.m, args.forward, args.backward, args.hop, True)
    asynchronous = interleaved_step_s(args.pp, args.v, args.m, args.forward, args.backward, args.hop, False)
    print(f"asynchronous sends {asynchronous:.6f} s, blocking exchanges {blocking:.6f} s: "
          f"+{blocking - asynchronous:.6f} s = {(blocking - asynchronous) / args.hop:.2f} hops" if args.hop else
          f"asynchronous sends {asynchronous:.6f} s, blocking exchanges {blocking:.6f} s")


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
