"""Variability inside a step: per-GPU speed, per-block jitter and named stragglers, as factors on compute durations;
per-collective latency noise, as a delay before a collective starts.

The Simulation owns one seeded numpy Generator (``Simulation.rng``, seeded from ``variability.seed``); this module
draws from it, so a run is reproducible from its seed. Every GPU gets a duration multiplier once, exp(cv z) with z
standard normal (median 1; ``gpu_speed_cv``), times the slowdown of any straggler naming it (its rank or its node,
ranks ``node * gpus_per_node`` onwards, as the fabric builders place them). Every fused compute block (one
(chunk, microbatch, phase) timeout) is multiplied by a jitter exp(cv z) drawn per block (``kernel_jitter_cv``).

With variability the symmetry of the collapse is broken. Expanded (one agent per GPU), each agent uses its own
rank's draws and the collectives wait for their slowest member as they always do. Collapsed (one agent per
pipeline stage), the reduction is: a stage runs at the slowest of the GPUs it stands for (the max of their speed
factors) and each block's jitter is the max of tp x cp draws (the group that synchronises after every block;
drawn as one order statistic, Phi^-1(U^(1/k))). This is exact for the per-GPU speed when pp = 1 (every replica
waits for the slowest at the gradient reduction) and pessimistic otherwise: different replicas' slow stages are
put in one pipeline, which adds to the pipeline's fill and drain, at most (pp - 1) x (fastest-to-slowest factor
gap) x the longest stage's forward + backward of one microbatch (``collapse_bound_s``). For jitter the collapsed
run ignores that data-parallel replicas drift apart between synchronisations (each replica's sum of per-block
maxima is a little different; the step waits for the slowest sum), so it is slightly optimistic there. Tests
measure both against expanded runs (tests/unit/test_variability.py).

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


class Variability:
    """The compute factors of one run. ``expand``: one agent per GPU (each its own draws)."""

    def __init__(self, spec: VariabilitySpec, layout, gpus_per_node: int, rng: np.random.Generator, expand: bool):
        world = layout.world_size
        self.spec = spec
        self.rng = rng
        self.speed = (np.exp(spec.gpu_speed_cv * rng.standard_normal(world)) if spec.gpu_speed_cv > 0
                      else np.ones(world))
        for straggler in spec.stragglers:
            ranks = (np.asarray(straggler.ranks, dtype=np.int64) if straggler.ranks is not None else
                     np.concatenate([np.arange(n * gpus_per_node, (n + 1) * gpus_per_node)
                                     for n in straggler.nodes]))
            self.speed[ranks[ranks < world]] *= straggler.slowdown
        # jitter: the members that wait for each other after every block (an expanded agent draws its own)
        self.sync_members = 1 if expand else layout.tp * layout.cp
        self._agent_speed: dict[int, float] = {}
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
        """The agent's duration multiplier: its slowest GPU's."""
        if agent.rank not in self._agent_speed:
            self._agent_speed[agent.rank] = float(self.speed[np.asarray(agent.ranks)].max())
        return self._agent_speed[agent.rank]

    def block_factor(self, agent) -> float:
        """Multiplier of one fused compute block of ``agent``: its speed times a fresh jitter draw (the max of
        the block's synchronising members' draws)."""
        factor = self.speed_of(agent)
        cv = self.spec.kernel_jitter_cv
        if cv > 0:
            u = max(self.rng.random(), 1e-300)
            factor *= math.exp(cv * _NORMAL.inv_cdf(u ** (1.0 / self.sync_members)))
        return factor

    def describe(self, plan, collapsed: bool) -> dict:
        """The summary's ``variability`` entry: the settings, the slowest GPU and the collapse's bound."""
        worst = float(self.speed.max())
        best = float(self.speed.min())
        stage_s = max(c.forward_compute_s + c.backward_compute_s for c in plan.chunks)
        bound_s = (plan.layout.pp - 1) * (worst - best) * stage_s if collapsed else 0.0
        return {
            "gpu_speed_cv": self.spec.gpu_speed_cv, "kernel_jitter_cv": self.spec.kernel_jitter_cv,
            "collective_latency_noise_s": self.spec.collective_latency_noise,
            "seed": self.spec.seed, "stragglers": len(self.spec.stragglers),
            "slowest_gpu_factor": worst, "fastest_gpu_factor": best,
            "collapse_bound_s": bound_s,
            "note": ("collapsed: each pipeline stage runs at its slowest GPU and each block waits for the slowest of "
                     "its tp x cp group's jitter draws; exact for per-GPU speed with pp = 1, otherwise pessimistic "
                     f"by at most about {bound_s:.3g} s per step (fill and drain); the data-parallel replicas' jitter "
                     "drift is ignored (optimistic, measured within 0.5 x kernel_jitter_cv of the step); --expand "
                     "for one agent per GPU" if collapsed else
                     "expanded: every GPU its own speed and jitter draws"),
        }


def of(scenario, layout, rng: np.random.Generator, expand: bool) -> Variability | None:
    """The run's Variability, or None when the scenario has none (every factor exactly 1: today's results)."""
    spec = scenario.variability
    if spec is None or not spec.active:
        return None
    return Variability(spec, layout, scenario.cluster.gpus_per_node, rng, expand)
