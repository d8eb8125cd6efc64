"""Link classes: the fabric's links grouped so that the flow model can solve per class instead of per link.

Progressive filling (``flow``) treats two links alike when they have the same capacity and every route puts the
same count of pairs on both: they get the same load and the same fill level in every round, saturate together and
freeze the same routes. ``LinkClasses`` keeps the coarsest partition of the routed links with that property over
every route registered (each route's links grouped by (count, capacity), refined against the classes already there):
every route then crosses a class with all of its links or with none, with one count. A route is a handful of
(class, count) entries however many links it sprays over (a 16k-GPU data-parallel ring crosses ~10^5 links in a few
classes), so a solve, its symmetry check and the overlap test of two routes cost that handful. The analytic model keeps
its link bytes and windows on the same classes (round 37): a start adds to a handful of classes.

A class's link array is replaced, never changed in place, when a new route splits it: a solve keeps the arrays it was
made with, which stay right for it (the split changes no route's load on any link).
"""

from __future__ import annotations

import numpy as np


class LinkClasses:
    """The partition of a fabric's routed links into classes, and each registered route as (class, count) entries."""

    def __init__(self, capacity: np.ndarray):
        self.capacity = capacity                                  # bytes/s per link of the fabric
        self.class_of = np.full(len(capacity), -1, dtype=np.int64)   # link -> its class; -1: no route crosses it
        self.links: list[np.ndarray] = []                         # class -> its link ids
        self.class_capacity = np.zeros(16)                        # class -> the capacity of its links
        self.splits = 0                                           # how many classes were split so far
        self.split_at = np.zeros(16, dtype=np.int64)              # class -> ``splits`` when it was last split
        self.parent: list[int] = []                               # class -> the class it was split from (-1: none)
        self._children: list[list[int]] = []                      # class -> the classes split from it
        self._descendants: dict[tuple, np.ndarray] = {}           # (class, since) -> ``descendants``, until a split
        self._routes: list[dict[int, float]] = []                 # class -> route -> pairs it puts on each link
        self._of_route: dict[int, dict[int, float]] = {}          # route -> class -> pairs per link
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # route -> (classes, counts), until a split

    def __contains__(self, route: int) -> bool:
        return route in self._of_route

    def add(self, route: int, links: np.ndarray, counts: np.ndarray) -> None:
        """Register ``route`` (identity), which puts ``counts[i]`` pairs on ``links[i]`` (distinct link ids)."""
        links = np.asarray(links, dtype=np.int64)
        counts = np.asarray(counts, dtype=float)
        current = self.class_of[links]
        capacity = self.capacity[links]
        # the links grouped by (class, count, capacity), in their order within a group
        order, change = _grouped(current, counts, capacity)
        starts = np.concatenate(([0], change)).tolist()
        ends = np.concatenate((change, [len(links)])).tolist()
        firsts = order[starts]
        current, counts, capacity, links = current[firsts], counts[firsts], capacity[firsts], links[order]
        mine: dict[int, float] = {}
        split: set[int] = set()
        for group, (start, end) in enumerate(zip(starts, ends, strict=True)):
            old, count = int(current[group]), float(counts[group])
            if old >= 0 and end - start == len(self.links[old]):   # the route crosses all of the class alike
                target = old
            else:   # a new class: these links, with every route of the class they were in
                target = self._new(links[start:end], float(capacity[group]),
                                   dict(self._routes[old]) if old >= 0 else {}, old)
                if old >= 0:
                    split.add(old)
                    for other, other_count in self._routes[old].items():
                        self._of_route[other][target] = other_count
                        self._arrays.pop(other, None)
            self._routes[target][route] = count
            mine[target] = count
        for old in split:   # what is left of a class split: a new array (solves keep the one they were made with)
            rest = self.links[old][self.class_of[self.links[old]] == old]
            self.links[old] = rest
            if not len(rest):
                for other in self._routes[old]:
                    del self._of_route[other][old]
                self._routes[old] = {}
        self._of_route[route] = mine

    def _new(self, links: np.ndarray, capacity: float, routes: dict[int, float], parent: int) -> int:
        target = len(self.links)
        self.links.append(links)
        self._routes.append(routes)
        self.parent.append(parent)
        self._children.append([])
        if parent >= 0:
            self._children[parent].append(target)
            self._descendants.clear()
            self.splits += 1
            self.split_at[parent] = self.splits
        if target >= len(self.class_capacity):
            self.class_capacity = np.concatenate((self.class_capacity, np.zeros(len(self.class_capacity))))
            self.split_at = np.concatenate((self.split_at, np.zeros(len(self.split_at), dtype=np.int64)))
        self.class_capacity[target] = capacity
        self.class_of[links] = target
        return target

    def split_since(self, before: int) -> tuple[np.ndarray, np.ndarray]:
        """The classes made since there were ``before`` that were split from another, and the class each was split
        from: a model's per-class counters copy the parent's column to the new class (its links carried the same)."""
        new = np.arange(before, len(self.links))
        parent = np.array(self.parent[before:], dtype=np.int64)
        split = parent >= 0
        return new[split], parent[split]

    def remove(self, route: int) -> None:
        """Forget ``route`` (its classes stay: the partition only ever gets finer)."""
        for known in self._of_route.pop(route):
            self._routes[known].pop(route, None)
        self._arrays.pop(route, None)

    def descendants(self, known: int, since: int) -> np.ndarray:
        """The classes that now hold the links class ``known`` held when there were ``since`` classes (itself and the
        classes split from it after that, recursively), without those left empty: what a class of a solve made then
        stands for now."""
        found = self._descendants.get((known, since))
        if found is None:
            found, stack = [], [known]
            while stack:
                top = stack.pop()
                if len(self.links[top]):
                    found.append(top)
                stack.extend(child for child in self._children[top] if child >= since)
            found = self._descendants[(known, since)] = np.array(found, dtype=np.int64)
        return found

    def unsplit_since(self, classes: np.ndarray, splits: int) -> bool:
        """Whether none of ``classes`` was split after ``splits`` (their links are still in them)."""
        return not len(classes) or int(self.split_at[classes].max()) <= splits

    def route(self, route: int) -> tuple[np.ndarray, np.ndarray]:
        """The classes ``route`` crosses and the pairs it puts on each of their links."""
        arrays = self._arrays.get(route)
        if arrays is None:
            classes = self._of_route[route]
            arrays = self._arrays[route] = (np.fromiter(classes.keys(), dtype=np.int64, count=len(classes)),
                                            np.fromiter(classes.values(), dtype=float, count=len(classes)))
        return arrays

    def classes_of(self, route: int):
        """The classes ``route`` crosses (a view: read it before the next ``add``)."""
        return self._of_route[route].keys()

    def routes_on(self, known: int):
        """The routes crossing class ``known`` (a view: read it before the next ``add`` or ``remove``)."""
        return self._routes[known].keys()

    def overlap(self, route: int, other: int) -> bool:
        """Whether two routes share a link (a class: every route crosses a class with all its links or none)."""
        return not self._of_route[route].keys().isdisjoint(self._of_route[other].keys())


_FEW_VALUES = 16   # distinct counts (capacities) of a route coded by comparisons, not by sorting


def _codes(values: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Each value's rank among the distinct ``values`` and how many there are, when they are few (found in a sample,
    checked on all); None otherwise."""
    distinct = np.unique(values[:: max(1, len(values) // 1024)])
    if len(distinct) > _FEW_VALUES:
        return None
    code = np.zeros(len(values), dtype=np.int64)
    for value in distinct[:-1].tolist():
        code += values > value
    if not np.array_equal(distinct[code], values):
        return None
    return code, len(distinct)


def _grouped(current: np.ndarray, counts: np.ndarray, capacity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order of ``np.lexsort((capacity, counts, current))`` and where its groups of equal (class, count, capacity)
    start (but the first). A route's counts and capacities take a few values over up to 1.5 million links (the 131k
    run's 16 data-parallel rings of 573,440 links): they are coded as one small integer, sorted once (a radix sort
    when it fits 16 bits), instead of three sorts and the three arrays permuted and compared."""
    if not len(current):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    by_count, by_capacity = _codes(counts), _codes(capacity)
    span = (int(current.max()) + 2) * (by_count[1] if by_count else 0) * (by_capacity[1] if by_capacity else 0)
    if not by_count or not by_capacity or span >= 2**62:
        order = np.lexsort((capacity, counts, current))
        ordered = current[order], counts[order], capacity[order]
        change = np.flatnonzero(np.logical_or.reduce([column[1:] != column[:-1] for column in ordered])) + 1
        return order, change
    key = current + 1
    key *= by_count[1]
    key += by_count[0]
    key *= by_capacity[1]
    key += by_capacity[0]
    order = np.argsort(key.astype(np.uint16) if span <= 2**16 else key, kind="stable")
    key = key[order]
    return order, np.flatnonzero(key[1:] != key[:-1]) + 1
