"""Variability inside a step: per-GPU speed, per-block jitter and named stragglers, as factors on compute durations;
per-collective latency noise, as a delay before a collective starts.

The Simulation owns one seeded numpy Generator (``Simulation.rng``, seeded from ``variability.seed``); this module
draws from it, so a run is reproducible from its seed. Every GPU gets a clock factor once, exp(cv z) with z
standard normal (median 1; ``gpu_speed_cv``; ``gpu_speed_draw: quantiles``: the N z at Blom's positions,
shuffled), which scales a block's clock-bound time only (its compute-bound kernels', ``ChunkCost.forward_clock_s``:
the spread is the chip's clock under its power cap; HBM-bound kernels, the per-kernel gap, host and communication
time it leaves alone), and the slowdown of any straggler naming it (its rank or its node, ranks
``node * gpus_per_node`` onwards, as the fabric builders place them), which scales all of it. Every fused compute
block (one (chunk, microbatch, phase) timeout) is multiplied by a jitter exp(cv z) drawn per block
(``kernel_jitter_cv``; the whole block: measured over kernels of every kind, docs/variability.md).

With variability the symmetry of the collapse is broken. Expanded (one agent per GPU), each agent uses its own
rank's draws and the collectives wait for their slowest member as they always do. Collapsed (one agent per
pipeline stage), the agent stands for its stage's data-parallel replicas, each a sync group of tp x cp GPUs that
wait for each other after every block (its tensor- and context-parallel collectives), while the replicas meet only
at the data-parallel collectives the step waits for. So the reduction (``block_s``) keeps, per replica of the
stage, how far it has fallen behind the slowest one since the step began (its lag, <= 0): a block takes each
replica max over its GPUs of that GPU's block (``gpu_block_s``) x its jitter draw (the group waits for its slowest
member), added to its lag, and the agent's block lasts as long as the furthest-behind replica advances. Without
jitter every replica advances by its slowest GPU's block each block, so this is the stage's slowest GPU for the
block (the max over its GPUs) and no draw is made. This is exact for pp = 1 up to the data-parallel collectives that
overlap the backward (a replica's lag is not reset by a bucket's reduction, only at the step's end, where every
rank waits; nor by MoE all-to-alls, which couple the replicas of an expert-parallel group every layer: there the
drift is overstated) and
pessimistic for per-GPU speed otherwise: different replicas' slow stages are put in one pipeline, which adds to
the pipeline's fill and drain, at most (pp - 1) x (fastest-to-slowest factor gap) x the longest stage's forward +
backward of one microbatch, all its model chunks with interleaving (``collapse_bound_s``, derived there). Tests
measure it against expanded runs (tests/unit/test_variability.py, tests/unit/test_variability_bound.py).
The expected slowest of N GPUs is a closed form: exp(cv x E[max of N standard normals]), E = 1.4236 for 8, 3.2414
for 1,000 (Harter 1961's tables; tests/unit/test_variability_order.py).

Collective latency noise (``collective_latency_noise``, a mean in seconds): every collective of every group waits
an extra Exp(mean) before it starts (a late launch, a slow first handshake: an assumption, no sourced value). A
call covering several groups (a collapsed agent's collective over its replicas' groups) waits for its slowest
group, as a collapsed stage runs at its slowest GPU; a fused block of n collectives draws each group's sum,
Gamma(n, mean). Only collectives run by ``CollectiveDriver.run`` and ``run_block`` are delayed: pipeline sends and
context parallelism's ring exchange (point-to-point) are not.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from simcluster.core.token_routing import expected_max_normal
from simcluster.spec.variability import Variability as VariabilitySpec

_NORMAL = NormalDist()


# Blom 1958's plotting position: Phi^-1((i - 0.375) / (N + 0.25)) approximates the expected i-th of N normal order
# statistics (the largest: 1.434 for N = 8 against 1.4236 exactly, 3.2273 against 3.2414 for N = 1,000: slightly below)
BLOM_ALPHA = 0.375


def speed_draws(draw: str, gpus: int, rng: np.random.Generator) -> np.ndarray:
    """The standard normal z of every GPU's speed: independent draws ('random'), or the N order statistics at
    Blom's positions shuffled over the GPUs ('quantiles': which GPU is slow is random, how slow the slowest of N
    is is not)."""
    if draw == "random":
        return rng.standard_normal(gpus)
    positions = (np.arange(1, gpus + 1) - BLOM_ALPHA) / (gpus + 1 - 2 * BLOM_ALPHA)
    return rng.permutation(np.array([_NORMAL.inv_cdf(float(p)) for p in positions]))


class Variability:
    """The compute factors of one run. ``expand``: one agent per GPU (each its own draws)."""

    def __init__(self, spec: VariabilitySpec, layout, gpus_per_node: int, rng: np.random.Generator, expand: bool):
        world = layout.world_size
        self.spec = spec
        self.rng = rng
        # per GPU: the speed spread's factor on clock-bound time (``clock``), the stragglers' on all compute time
        # (``slowdown``), and their product, the factor on a wholly clock-bound block (``speed``)
        self.clock = (np.exp(spec.gpu_speed_cv * speed_draws(spec.gpu_speed_draw, world, rng))
                      if spec.gpu_speed_cv > 0 else np.ones(world))
        self.slowdown = np.ones(world)
        for straggler in spec.stragglers:
            ranks = (np.asarray(straggler.ranks, dtype=np.int64) if straggler.ranks is not None else
                     np.concatenate([np.arange(n * gpus_per_node, (n + 1) * gpus_per_node)
                                     for n in straggler.nodes]))
            self.slowdown[ranks[ranks < world]] *= straggler.slowdown
        self.speed = self.clock * self.slowdown
        self.expand = expand
        self.layout = layout
        self._agent_speed: dict[int, float] = {}
        self._agent_block_s: dict[tuple[int, float, float], float] = {}  # (agent, alone_s, clock_s) -> no jitter
        # collapsed: [replica, member] clock and straggler factors of a stage
        self._group_speeds: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lag_s: dict[int, np.ndarray] = {}         # collapsed, with jitter: each replica's lag (<= 0), seconds
        self.noise_drawn_s = 0.0  # the collective latency noise drawn so far, and in how many calls
        self.noise_calls = 0

    @property
    def latency_noise(self):
        """``collective_noise_s`` when the scenario sets a collective latency noise, else None (no draws, no
        events: results as without it)."""
        return self.collective_noise_s if self.spec.collective_latency_noise > 0 else None

    def collective_noise_s(self, collectives: int, groups: int) -> float:
        """Extra latency before a call of ``collectives`` collectives (a fused block's count) over ``groups``
        groups: each collective of each group draws Exp(mean ``collective_latency_noise``), a group's draws add
        (Gamma(collectives, mean)), and the call waits for its slowest group (a collapsed agent moves at once)."""
        drawn_s = float(self.rng.gamma(collectives, self.spec.collective_latency_noise, size=groups).max())
        self.noise_drawn_s += drawn_s
        self.noise_calls += 1
        return drawn_s

    def speed_of(self, agent) -> float:
        """The agent's duration multiplier on work no clock sets (HBM-bound: the optimizer step, the fp8 weight
        quantize): its slowest GPU's straggler slowdown (the speed spread slows clock-bound time only, ``block_s``)."""
        if agent.rank not in self._agent_speed:
            self._agent_speed[agent.rank] = float(self.slowdown[np.asarray(agent.ranks)].max())
        return self._agent_speed[agent.rank]

    @staticmethod
    def gpu_block_s(alone_s: float, clock_s: float, clock, slowdown):
        """A block's duration on GPUs of clock factor ``clock`` and straggler ``slowdown`` (arrays or floats): the
        clock-bound ``clock_s`` of it scaled by the clock factor, the rest not, all by the slowdown."""
        return slowdown * (alone_s + (clock - 1.0) * clock_s)

    def start_step(self, agent) -> None:
        """A step begins after a barrier over every rank: no replica is behind."""
        self._lag_s.pop(agent.rank, None)

    def sync_groups(self, agent) -> np.ndarray:
        """[replica, member]: the agent's GPUs by the tp x cp group that waits for each other after every block
        (one row per data-parallel replica of the stage; expanded, the one GPU)."""
        ranks = np.asarray(agent.ranks, dtype=np.int64)
        if self.expand or len(ranks) == 1:
            return ranks.reshape(1, -1)
        members = self.layout.tp * self.layout.cp
        replica = np.array([self.layout.coords(int(r))["dp"] for r in ranks])
        order = np.argsort(replica, kind="stable")
        assert len(ranks) % members == 0 and np.all(np.bincount(replica) == members), "a stage's replicas"
        return ranks[order].reshape(-1, members)

    def block_s(self, agent, alone_s: float, clock_s: float | None = None) -> float:
        """The duration of one fused compute block of ``agent`` that takes ``alone_s`` on a median GPU, ``clock_s``
        of it clock-bound (``ChunkCost.forward_clock_s``; None: all of it). On one GPU: ``gpu_block_s`` (the speed
        spread scales the clock-bound time, a straggler's slowdown all of it) times a fresh jitter draw exp(cv z).
        Expanded: its GPU's. Collapsed: each replica's sync group waits for its slowest member, and the stage moves
        with the replica furthest behind since the step began (the module docstring); without jitter, the stage's
        slowest GPU for this block."""
        clock_s = alone_s if clock_s is None else clock_s
        cv = self.spec.kernel_jitter_cv
        if cv <= 0 or self.expand or agent.multiplicity == 1:
            key = (agent.rank, alone_s, clock_s)
            if key not in self._agent_block_s:
                ranks = np.asarray(agent.ranks)
                self._agent_block_s[key] = float(self.gpu_block_s(alone_s, clock_s, self.clock[ranks],
                                                                  self.slowdown[ranks]).max())
            if cv <= 0:
                return self._agent_block_s[key]
            u = max(self.rng.random(), 1e-300)  # one GPU: its own draw
            return self._agent_block_s[key] * math.exp(cv * _NORMAL.inv_cdf(u))
        factors = self._group_speeds.get(agent.rank)
        if factors is None:
            groups = self.sync_groups(agent)
            factors = self._group_speeds[agent.rank] = (self.clock[groups], self.slowdown[groups])
        gpu_s = self.gpu_block_s(alone_s, clock_s, *factors)
        advance_s = (gpu_s * np.exp(cv * self.rng.standard_normal(gpu_s.shape))).max(axis=1)
        lag_s = self._lag_s.get(agent.rank)
        reached_s = advance_s if lag_s is None else lag_s + advance_s
        block_s = float(reached_s.max())
        self._lag_s[agent.rank] = reached_s - block_s
        return block_s

    def describe(self, plan, collapsed: bool) -> dict:
        """The summary's ``variability`` entry: the settings, the slowest GPU and the collapse's bound."""
        worst = float(self.speed.max())
        best = float(self.speed.min())
        bound_s = collapse_bound_s(plan, worst - best) if collapsed else 0.0
        return {
            "gpu_speed_cv": self.spec.gpu_speed_cv, "kernel_jitter_cv": self.spec.kernel_jitter_cv,
            "collective_latency_noise_s": self.spec.collective_latency_noise,
            "seed": self.spec.seed, "stragglers": len(self.spec.stragglers),
            "slowest_gpu_factor": worst, "fastest_gpu_factor": best,
            "collapse_bound_s": bound_s,
            "note": ("collapsed: each block of a stage's replica waits for the slowest of its tp x cp GPUs (speed "
                     "x jitter draw) and the stage moves with the replica furthest behind since the step began; "
                     "exact for per-GPU speed with pp = 1, otherwise pessimistic "
                     f"by at most about {bound_s:.3g} s per step (fill and drain: every other stage's forward + "
                     "backward of one microbatch, all its model chunks); with kernel jitter (pp > 1, or TP "
                     "communication overlap) it can err either side, within about "
                     f"{jitter_tolerance(plan):.2g} x kernel_jitter_cv of the step (an estimate checked against "
                     "expanded runs); --expand for one agent per GPU" if collapsed else
                     "expanded: every GPU its own speed and jitter draws"),
        }


# the collapse's error with kernel jitter, as a multiple of kernel_jitter_cv of the step: measured, not derived
# (docs/variability.md). Without TP communication overlap, -0.3 .. -1.4 % at cv 0.05 (tp 4, pp 1 and 4; round 15's
# tests at tp 2 likewise): the replicas' drift, either side, 0.5 x cv.
JITTER_TOLERANCE_CV = 0.5


def jitter_tolerance(plan) -> float:
    """The multiple of ``kernel_jitter_cv`` (of the step) within which a collapsed run with jitter is stated to
    match the expanded one. Without TP communication overlap ``JITTER_TOLERANCE_CV``. With it (tp > 1) the collapse
    still makes every block wait for the slowest of its tp x cp draws, E[max of tp x cp normals] x cv of the
    compute (Blom's approximation, ``core.token_routing.expected_max_normal``: 1.049 for 4 against 1.029 exactly),
    while the expanded run apparently does not pay it (not traced): on nemo2409-gpt3-175b-128-h100 (tp 4,
    cv 0.015, seed 0) collapsed +1.585 %, expanded +0.132 % (E[max of 4] x cv = 1.54 %); small layouts tp 2-4, pp
    1-4, 0.27-0.89 x cv (round 20). So: E[max of tp x cp normals] + ``JITTER_TOLERANCE_CV`` (the drift)."""
    par = plan.scenario.parallelism
    if par.tp_comm_overlap and par.tp > 1:
        return expected_max_normal(par.tp * par.cp) + JITTER_TOLERANCE_CV
    return JITTER_TOLERANCE_CV


def collapse_bound_s(plan, factor_gap: float) -> float:
    """How far a collapsed run with per-GPU speeds may exceed the expanded one (``collapse_bound_s``; the
    derivation: docs/variability.md, "How collapse_bound_s is derived"). The step is the fill, the steady state on the
    slowest stage s* and the drain; collapsed, every stage runs at its slowest GPU's factor, expanded each
    data-parallel replica r at its own, and the replica r* holding the slowest GPU is at least as slow as the
    collapse on s*. So the two differ only where the critical path leaves s*: the first microbatch's forward before
    it and the last one's backward after it, once through every other stage per model chunk, so, with
    ``virtual_stages`` chunks per stage, each other stage's whole forward + backward of one microbatch (all its
    chunks; not one chunk's, a virtual-stage-th of it: the round-20 bound that did not hold). Each such block is at
    most (slowest - fastest factor) x its median time longer collapsed: bound = ``factor_gap`` x (pp - 1) x the
    longest stage's forward + backward compute of one microbatch (without interleaving, one chunk per stage: the
    bound as it was). An estimate of the critical path, not a theorem: it assumes the steady state runs on one
    stage; expanded runs check it (tests/unit/test_variability_bound.py). The blocks' compute only: the speeds scale
    it (``block_s``), not the backward's wait on async TP collectives outlasting their GEMMs
    (``ChunkCost.tp_async_exposed_s``, timed on the fabric, unscaled: engine.agents)."""
    pp = plan.layout.pp
    stages = [0.0] * pp
    for c in plan.chunks:
        stages[c.stage] += c.forward_compute_s + c.backward_compute_s
    return factor_gap * (pp - 1) * max(stages)


def of(scenario, layout, rng: np.random.Generator, expand: bool) -> Variability | None:
    """The run's Variability, or None when the scenario has none (every factor exactly 1: today's results)."""
    spec = scenario.variability
    if spec is None or not spec.active:
        return None
    return Variability(spec, layout, scenario.cluster.gpus_per_node, rng, expand)
