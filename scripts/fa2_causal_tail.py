"""How much of a causal FlashAttention-2 kernel's time on A100 is its last wave's tail, for the training grids against
the grid of the paper's benchmark (docs/calibration/round-27.md, "Round 27: why Transformer layers on the A100 80GB look
too cheap at sequence 4,096"). An estimate from the kernel's launch geometry, not a measurement: nothing reads it.

    python scripts/fa2_causal_tail.py

The geometry (Dao-AILab/flash-attention csrc/flash_attn/src, v2.x): the sm80 head-dim-128 forward runs
Flash_fwd_kernel_traits<128, 128, 64, 4> (blocks of 128 queries over 64-key tiles, 64 KB of shared memory: two blocks an
SM), grid (query blocks, b, h) with the query block fastest, so each (b, h) issues its short causal rows first; the
backward runs Flash_bwd_kernel_traits<128, 64, 128, 8, ...> (blocks of 128 keys over 64-query tiles, one block an SM),
grid (key blocks, b, h), its long rows first. A block's work is its causal tiles plus ``OVERHEAD`` tiles (prologue
and epilogue). Blocks go, in grid order, to the first SM slot free (list scheduling on 108 SMs); two resident forward
blocks share their SM, and a block alone on it runs at ``ALONE`` of the SM's rate (0.5: no gain; 0.75: a 4-warp
block leaves a quarter idle). The benchmark (Figures 4-5) always runs 16k tokens of 16 heads: b x h = 16 x 16384 / s.
"""

import sys

from simcluster.core import script_entry

SMS = 108          # A100
BLOCK = 128        # rows of a block (queries forward, keys backward)
OVERHEAD = 1       # tiles of fixed work a block
ALONE = (0.5, 0.75)


def block_work(s: int, bh: int, backward: bool) -> list[int]:
    rows = s // BLOCK
    return [2 * (rows - x if backward else x + 1) + OVERHEAD for _ in range(bh) for x in range(rows)]


def makespan(work: list[int], slots: int, alone: float) -> float:
    """List scheduling: each SM holds ``slots`` blocks; a block's rate is 1/slots with the SM full, ``alone`` when
    it is the SM's only block (slots 2)."""
    queue = iter(work)
    running: list[list[float]] = [[] for _ in range(SMS)]
    for _ in range(slots):
        for sm in running:
            nxt = next(queue, None)
            if nxt is not None:
                sm.append(float(nxt))
    t = 0.0

    def rate(sm: list[float]) -> float:
        return 1.0 if slots == 1 else (1.0 / slots if len(sm) == slots else alone)

    while any(running):
        dt = min(w / rate(sm) for sm in running for w in sm)
        t += dt
        for sm in running:
            r = rate(sm)
            sm[:] = [w - dt * r for w in sm]
            finished = [w for w in sm if w <= 1e-9]
            sm[:] = [w for w in sm if w > 1e-9]
            for _ in finished:
                nxt = next(queue, None)
                if nxt is not None:
                    sm.append(float(nxt))
    return t


def efficiency(s: int, bh: int, backward: bool, alone: float) -> float:
    """Busy share of the SMs over the kernel: its work at full occupancy over its makespan."""
    work = block_work(s, bh, backward)
    return sum(work) / SMS / makespan(work, 1 if backward else 2, alone)


def main(argv: list[str]) -> int:
    script_entry.Parser(description=__doc__.splitlines()[0]).parse_args(argv)   # no options: -h, or one-line refusal
    for alone in ALONE:
        print(f"a lone forward block at {alone} of its SM's rate")
        for s in (2048, 4096, 8192):
            bench = 16 * 16384 // s
            for bh in sorted({bench, 24, 32, 40, 64}):
                fwd, bwd = efficiency(s, bh, False, alone), efficiency(s, bh, True, alone)
                ref_f, ref_b = efficiency(s, bench, False, alone), efficiency(s, bench, True, alone)
                print(f"  s {s:5d}  b x h {bh:4d}  forward {fwd:.3f} ({ref_f / fwd:.2f}x the benchmark's time a FLOP)"
                      f"  backward {bwd:.3f} ({ref_b / bwd:.2f}x)" + ("  <- benchmark" if bh == bench else ""))


    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
