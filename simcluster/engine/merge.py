"""Which transfers started at one simulated instant the network model sees as one ``TransferClass``: the rule.

Terms. A *part* is one independent transfer: one rank's pipeline send, or one group's step of a collective (the
pairs of one ring step are coupled: the ring advances at its slowest link). A *class* is what the network model
solves as one variable: every member progresses at one rate and the class completes at once, after its slowest
pair's path latency. A class made of several parts says which pair belongs to which (``TransferClass.parts``).

The rule.
1. A ``transfer`` call is a class. A collapsed agent's call stands for all its replicas (the pipeline send of
   every rank it represents, one part each; the step of a collective over all its groups, one part per group), so
   it is a class of several parts: a representative agent cannot move at two times, so its replicas' transfers
   complete together.
2. Calls of one instant merge into one class only as the policy's key says: ``SYMMETRIC`` (the default of a
   collapsed simulation) merges calls with the same label and size from the same pipeline stage (the same
   pipeline boundary or ring step in another replica of the stage; since round 34 the stage of the class's first
   sender is part of the key, so equal-size steps of different stages started at one instant stay apart: merged,
   one stage's parts bound on a NIC it shares with a pipeline send held every other stage's back); ``NO_MERGE``
   (the default of an expanded one, ``Simulation(expand=True)``: the reference) merges none.
   ``engine.run_expanded`` (``--expand``) runs expanded with ``SYMMETRIC`` first and keeps it when the check
   below proves it exact; else it reruns with ``SplitKeys`` (the keys of the classes found holding a
   part back by rate, and only those, unmerged; those held back by path latency alone merged by latency), up to
   ``SPLIT_PASSES`` times adding the keys each pass flags, and keeps the first pass the check proves exact; else
   it reruns with ``NO_MERGE``. The calls merged stay distinct parts of the class.
3. Merging is exact when no part is held back, and the network model checks it on every rate solution: with
   every part of a class given the class's rate the link loads are unchanged, so the split allocation equals the
   merged one exactly when every part crosses a saturated link on which no class is faster (the max-min
   fairness condition; ``network.flow``), and every part's slowest path latency equals the class's. A part that
   fails it would have gone faster on its own; the model counts such classes (``held_back_classes``) and adds up,
   over each interval of constant rates, the interval x the largest fraction any held-back part could save
   (1 - class rate / the best rate that part could reach given the others' load; concurrent classes' savings do
   not add, the critical path waits on one at a time), plus the latency difference (``held_back_s``).
   The analytic model checks the same against each part's own bottleneck; the chunk model does not check.
4. The summary reports it (``symmetry``: collapsed, exact, held_back_classes, bound_s, bound_pct, note). When
   merging held a part back, the collapsed result is pessimistic by about ``bound_s`` per step (an estimate from
   above, not a proof: in the expanded run the faster parts' consumers start earlier, which can shift contention);
   ``--expand`` runs one agent per GPU with every call its own class, the reference. Below it, where a collapsed
   flow run held parts back by more than ``LOWER_BOUND_ABOVE`` of the step, the summary gives the step time the
   reference cannot beat (``lower_bound_s``: ``simulation.lower_bound_step_s``, every class at its fastest part's
   time alone on the fabric).

Why it holds on symmetric fabrics: the same boundary or step in every replica crosses equally loaded routes (a
rail-optimised fat-tree, non-blocking), so every part crosses a link that binds the class and the check passes;
collapsed and expanded runs agree within 1e-9 (``tests/unit/test_symmetry.py``). Where equal-looking transfers
take unequally loaded routes (hash ECMP on an oversubscribed leaf-spine, a hand-written GraphML fabric, a layout
whose ``order`` puts tensor parallelism across nodes) the check flags the classes and the summary gives the bound.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from simcluster.network.base import TransferClass, class_load


class MergePolicy(Protocol):
    """Transfers of one instant whose keys are equal become one class; the key decides what counts as symmetric."""

    def key(self, transfers: TransferClass) -> Hashable: ...


class SameLabelAndSize:
    """A pipeline boundary or a collective step is named by its label, so equal label and size means the same step
    in another replica (the default of a collapsed simulation). Bound to a simulation's layout (``bind``: each
    rank's pipeline stage) the key also holds the stage of the class's first sender (round 34): replicas of one
    stage merge, other stages' equal-size transfers (their data-parallel ring steps, started at one instant) stay
    classes of their own, so a stage whose parts share a NIC with a pipeline send no longer holds the others back.
    Unbound (several jobs on one network, ``engine.jobs``, whose GPUs are no one layout's ranks): label and size."""

    def __init__(self, stages=None, fabric=None):
        self.stages = stages    # stages[rank]: the rank's pipeline stage (None: unbound)
        self.fabric = fabric

    def bind(self, fabric, stages=None) -> SameLabelAndSize:
        return type(self)(stages, fabric)

    def key(self, transfers: TransferClass) -> Hashable:
        if self.stages is None:
            return transfers.label, transfers.size_bytes
        return transfers.label, transfers.size_bytes, int(self.stages[transfers.pairs[0, 0]])


class SplitKeys(SameLabelAndSize):
    """``SYMMETRIC`` but for the (label, size) keys in ``split``, whose calls stay classes of their own, and those in
    ``by_latency``, whose calls merge only with calls of the same largest path latency: the later passes of
    ``engine.run_expanded``, with the keys of the classes the passes before found holding a part back by rate
    (``HeldBack.keys``) and by path latency alone (``HeldBack.latency_keys``). A class of parts of one latency
    completes when each of them would (rule 3's latency half). Its merged classes are checked like any; when none
    holds a part back the run is the reference's (rule 3: each merged class's rates are the split ones at every
    solve, so every event is at the same time). ``bind(fabric, stages)``: the policy reading that fabric's
    latencies and the layout's stages (the simulation's own, ``Simulation``)."""

    def __init__(self, split: frozenset, by_latency: frozenset = frozenset(), fabric=None, stages=None):
        super().__init__(stages, fabric)
        self.split = split
        self.by_latency = by_latency

    def bind(self, fabric, stages=None) -> SplitKeys:
        return SplitKeys(self.split, self.by_latency, fabric, stages)

    def key(self, transfers: TransferClass) -> Hashable:
        key = transfers.label, transfers.size_bytes
        if key in self.split:
            return object()
        if key in self.by_latency:
            return key + (class_load(self.fabric, transfers)[2],)   # cached on the class, as the model routes it
        return super().key(transfers)


class NoMerge:
    """Every ``transfer`` call its own class (the default of an expanded simulation: the reference)."""

    def key(self, transfers: TransferClass) -> Hashable:
        return object()  # equal to no other key


# The lower bound (``simulation.lower_bound_step_s``: a second, analytic, collapsed run) is computed where the upper
# estimate (``held_back_s`` over the run) leaves more than this fraction of the step open: below it the collapsed
# figure is already within that much by the estimate, and the second run would cost as much again (+2.1 s of CPU on
# the interleaved 16,384-GPU scenario, flagged at 0.75%, whose benchmark target is 5 s). A cost rule, not physics.
LOWER_BOUND_ABOVE = 0.01

# Passes of ``engine.run_expanded`` with ``SplitKeys`` before it gives up and runs ``NO_MERGE``: a pass costs about
# what the merged one does, and a pass that flags new keys (a split class's parts, now earlier or later, changing
# what others meet) usually settles by the next. A cost rule, not physics: any count gives the reference's result.
SPLIT_PASSES = 2

SYMMETRIC = SameLabelAndSize()
NO_MERGE = NoMerge()


def default_policy(expand: bool) -> MergePolicy:
    """``NO_MERGE`` for an expanded simulation (every agent's transfers keep their own rates: exact by
    construction), ``SYMMETRIC`` for a collapsed one (checked by the network model)."""
    return NO_MERGE if expand else SYMMETRIC


__all__ = ["LOWER_BOUND_ABOVE", "MergePolicy", "NO_MERGE", "NoMerge", "SPLIT_PASSES", "SYMMETRIC", "SameLabelAndSize",
           "SplitKeys", "default_policy"]
