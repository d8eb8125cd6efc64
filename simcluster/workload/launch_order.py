"""A collective issued while a persistent-grid GEMM holds every SM waits for that GEMM's CTAs (launch order).

On Hopper (interference.yaml ``persistent_grid_gpus``) a cuBLAS/CUTLASS sm90 GEMM launches min(tiles, SMs) CTAs,
one per SM, each walking a fixed share of the tiles (``interference.persistent_gemm_factor``). An NCCL CTA never
shares an SM with a compute kernel (NVIDIA/nccl#689), and CUDA stream priorities "do not preempt already-running
work" (CUDA driver/runtime API, cuStreamCreateWithPriority), so a collective kernel launched while such a grid is
resident gets SMs only when the grid's CTAs retire: the kernel "will be delayed until the gemm is completed
because there are not enough SM resources" (NVIDIA/nccl#1431). Whatever the collective's stream priority, the
wait is:
- issued into a GEMM whose SMs are all its own (no NCCL kernel resident): until its first CTAs retire. With
  tiles = k * SMs + r, the r CTAs with k + 1 tiles outlast the others, which retire at k / (k + 1) of the GEMM
  (r = 0: all retire at its end);
- queued behind a collective kernel that held SMs beside the GEMM (``after_collective``): the GEMM's own late CTAs,
  already dispatched, take the SMs that kernel frees, so the next collective kernel waits for the GEMM's end.
Grids smaller than the SMs leave SMs free: no wait. Other kernels (attention, elementwise) launch one CTA per
block, which retire within a block's time: no wait counted.

The engine knows blocks, not kernels, so ``start_delay_s`` is the mean wait of a collective issued at a uniformly
random instant of a phase's kernels run back to back: sum over the GEMMs of (a_i T_i)^2 / 2 over the phase's total,
a_i T_i the part of GEMM i during which no SM frees. Behind the switch ``launch_order.model`` (data/interference.yaml,
off: docs/calibration/round-19.md "Round 19: collectives behind persistent GEMMs (launch order)").
"""

from __future__ import annotations

from simcluster.workload import interference, kernels
from simcluster.workload.ops import Op


def constants() -> dict:
    return interference.constants()["launch_order"]


def applies(gpu_name: str) -> bool:
    """Whether collectives wait for resident persistent grids: the switch on and the GPU's GEMMs persistent."""
    return bool(constants()["model"]) and interference.persistent_grid(gpu_name)


def blocked_fraction(op: Op, gpu_name: str, after_collective: bool) -> float:
    """Share of GEMM ``op``'s time (from its start) during which none of its SMs frees for a collective kernel
    launched then: 0 for other kernels and grids smaller than the SMs; 1 behind a collective kernel (the GEMM's late
    CTAs take the freed SMs); else k / (k + 1) for tiles = k * grid + r, r > 0, and 1 for whole waves."""
    sms = kernels.sm_count(gpu_name)
    tiles = kernels.gemm_tiles(op, gpu_name)
    launched = min(op.sms, sms) if op.sms > 0 else sms
    grid = min(tiles, launched)
    if grid < sms:
        return 0.0
    if after_collective:
        return 1.0
    waves, rest = divmod(tiles, grid)
    return waves / (waves + 1) if rest else 1.0


def start_delay_s(mix: interference.ComputeMix, after_collective: bool) -> float:
    """Mean wait of a collective kernel launched at a random instant of ``mix``'s kernels run back to back (each
    alone taking max(compute, HBM) time, ``interference.memory_bound_share``)."""
    total = sum(max(c, m) for _, c, m in mix.kernels)
    if total <= 0:
        return 0.0
    blocked = 0.0
    for op, compute_s, memory_s in mix.kernels:
        if op.kind == "gemm":
            held_s = blocked_fraction(op, mix.gpu_name, after_collective) * max(compute_s, memory_s)
            blocked += held_s * held_s / 2
    return blocked / total
