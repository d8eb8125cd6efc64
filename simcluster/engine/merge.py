"""Which transfers started at one simulated instant the network model sees as one ``TransferClass``.

Why merge at all: a collapsed simulation's representative agent starts, in one ``transfer`` call, the union of its
replicas' transfers (every data-parallel replica's pipeline send, every group's ring step), while an expanded one
starts them one call per agent. Merging the calls of one instant that share a label and a size hands the model the
same classes in both cases, so the two agree, and keeps the number of classes the model solves small.

Why it is valid: a class progresses at one rate. Symmetric replicas (the same pipeline boundary in every
data-parallel replica, the same ring step in every group) cross equally loaded routes on a symmetric fabric and
would each get that same rate as separate classes, so one class for all of them changes no completion time
(``test_engine`` holds merged and unmerged equal within 1e-9 on a rail-optimised fat-tree).

When it is not exact: transfers with the same label and size whose routes are not equally loaded, as on ECMP or
oversubscribed fabrics where hashing puts some flows on busier links. Merged, every member waits for the slowest
member's rate, so the merged run is pessimistic: about 2.6% on the step time of a tp2 pp4 dp8 case on a 4:1
oversubscribed leaf-spine (a review's measurement; 0.5% for a 32-layer, 4096-wide model on a 4:1 leaf-spine of 8
hosts per leaf, expanded). ``NO_MERGE`` gives each ``transfer`` call its own class, at the price of more classes to
solve: to measure that difference. It splits calls, not the pairs of one call: a collapsed agent's transfer already
carries all its replicas' pairs and its collective steps all its groups', so only an expanded simulation
(``expand=True``) gives each replica its own class.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from simcluster.network.base import TransferClass


class MergePolicy(Protocol):
    """Transfers of one instant whose keys are equal become one class; the key decides what counts as symmetric."""

    def key(self, transfers: TransferClass) -> Hashable: ...


class SameLabelAndSize:
    """The default: a pipeline boundary or a collective step is named by its label, so equal label and size means
    the same step in another replica."""

    def key(self, transfers: TransferClass) -> Hashable:
        return transfers.label, transfers.size_bytes


class NoMerge:
    """Every ``transfer`` call its own class: exact on asymmetric routes, slower with many replicas."""

    def key(self, transfers: TransferClass) -> Hashable:
        return object()  # equal to no other key


SYMMETRIC = SameLabelAndSize()
NO_MERGE = NoMerge()


__all__ = ["MergePolicy", "NO_MERGE", "NoMerge", "SYMMETRIC", "SameLabelAndSize"]
