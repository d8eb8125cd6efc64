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
backward of one microbatch (``collapse_bound_s``). Tests measure it against expanded runs
(tests/unit/test_variability.py). The expected slowest of N GPUs is a closed form: exp(cv x E[max of N standard
normals]), E = 1.4236 for 8, 3.2414 for 1,000 (Harter 1961's tables; tests/unit/test_variability_order.py).

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
        # the blocks' compute only: the speeds scale it (``block_s``), not the backward's wait on async TP collectives
        # outlasting their GEMMs (``ChunkCost.tp_async_exposed_s``, timed on the fabric, unscaled: engine.agents), so
        # the stages' speed difference does not act on that wait
        stage_s = max(c.forward_compute_s + c.backward_compute_s for c in plan.chunks)
        bound_s = (plan.layout.pp - 1) * (worst - best) * stage_s if collapsed else 0.0
        return {
            "gpu_speed_cv": self.spec.gpu_speed_cv, "kernel_jitter_cv": self.spec.kernel_jitter_cv,
            "collective_latency_noise_s": self.spec.collective_latency_noise,
            "seed": self.spec.seed, "stragglers": len(self.spec.stragglers),
            "slowest_gpu_factor": worst, "fastest_gpu_factor": best,
            "collapse_bound_s": bound_s,
            "note": ("collapsed: each block of a stage's replica waits for the slowest of its tp x cp GPUs (speed "
                     "x jitter draw) and the stage moves with the replica furthest behind since the step began; "
                     "exact for per-GPU speed with pp = 1, otherwise pessimistic "
                     f"by at most about {bound_s:.3g} s per step (fill and drain); with kernel jitter and pp > 1 "
                     "it can err either side, within about 0.5 x kernel_jitter_cv of the step; --expand "
                     "for one agent per GPU" if collapsed else
                     "expanded: every GPU its own speed and jitter draws"),
        }


def of(scenario, layout, rng: np.random.Generator, expand: bool) -> Variability | None:
    """The run's Variability, or None when the scenario has none (every factor exactly 1: today's results)."""
    spec = scenario.variability
    if spec is None or not spec.active:
        return None
    return Variability(spec, layout, scenario.cluster.gpus_per_node, rng, expand)
