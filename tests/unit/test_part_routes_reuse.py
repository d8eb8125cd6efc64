"""Per-part routes of merged classes (``network.base.part_routes``) route each part once per fabric: a class whose
parts an earlier class routed takes their entries from there and routes only its new parts. The answer must be the
one routing every part of the class afresh gives, entry for entry and bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from simcluster.fabric import topology
from simcluster.network import base
from simcluster.network.base import TransferClass, part_routes
from simcluster.spec import hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")


def _rings(gpus: int, groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of a ring step over each group (one part per group)."""
    pairs, part = [], []
    for p, group in enumerate(groups):
        pairs += [(group[i], group[(i + 1) % len(group)]) for i in range(len(group))]
        part += [p] * len(group)
    return np.array(pairs), np.array(part)


def _fresh(name: str, options: dict, gpus: int):
    return topology.build(name, gpus=gpus, gpus_per_node=8, gpu=H100, nic=CX7, options=options)


@pytest.mark.parametrize("name, options", [("rail-fat-tree", {}), ("fat-tree", {"k": 12}),
                                           ("leaf-spine", {"oversubscription": 4, "hosts_per_leaf": 16})])
def test_a_class_of_parts_routed_before_equals_routing_it_afresh(name, options):
    gpus = 192
    # data-parallel rings of one GPU per node (stride 8), 8 rails x 3 "stages" of 8 nodes
    groups = [[stage * 64 + rail + 8 * node for node in range(8)] for stage in range(3) for rail in range(8)]
    first_pairs, first_part = _rings(gpus, groups[:20])
    # a later class: 12 of the same groups in another order, and 4 not seen (one of them a GPU to itself)
    later_groups = groups[20:22] + groups[3:15][::-1] + groups[22:24] + [[5]]
    later_pairs, later_part = _rings(gpus, later_groups)
    fabric = _fresh(name, options, gpus)
    calls = []
    routed = fabric.links_of_parts

    def counting(pairs, part, salt=0):
        calls.append(int(part.max()) + 1)
        return routed(pairs, part, salt)

    fabric.links_of_parts = counting
    part_routes(fabric, TransferClass(first_pairs, 1e6, "first", parts=first_part))
    got = part_routes(fabric, TransferClass(later_pairs, 1e6, "later", parts=later_part))
    assert calls == [20, 4]   # the later class routed only its 4 new parts with moving pairs
    want = part_routes(_fresh(name, options, gpus), TransferClass(later_pairs, 1e6, "later", parts=later_part))
    assert got.parts == want.parts == len(later_groups)
    for field in ("part", "links", "counts"):
        assert np.array_equal(getattr(got, field), getattr(want, field)), field


def test_a_class_of_new_parts_is_routed_in_one_pass_as_before():
    gpus = 64
    fabric = _fresh("rail-fat-tree", {}, gpus)
    pairs, part = _rings(gpus, [[rail + 8 * node for node in range(8)] for rail in range(8)])
    got = part_routes(fabric, TransferClass(pairs, 1e6, "rings", parts=part))
    found = _fresh("rail-fat-tree", {}, gpus).links_of_parts(pairs, part)
    assert np.array_equal(got.part, found[0]) and np.array_equal(got.links, found[1])
    assert np.array_equal(got.counts, found[2])
    assert len(base._BY_PART[fabric]) == 8


def test_loads_by_part_sums_each_part_and_link_in_entry_order():
    """``routing.loads_by_part`` beyond its dense range (the sorted path: many parts on a large fabric) gives each
    (part, link) once, sorted by part then link, with its entries' weights summed in their order (the sum of a
    plain loop, to the bit)."""
    from simcluster.fabric.routing import _DENSE_PART_KEYS, loads_by_part

    rng = np.random.default_rng(3)
    links = 200_000
    part = rng.integers(0, 120, size=5_000)
    owner = rng.integers(0, len(part), size=60_000)
    ids = rng.integers(0, 300, size=len(owner)) * 601 % links   # repeated (part, link) keys
    weights = rng.random(len(owner)) / 7
    assert int(part.max()) * links >= _DENSE_PART_KEYS   # the sorted path
    got_part, got_link, got_load = loads_by_part(part, owner, ids, weights, links)
    want: dict[tuple[int, int], float] = {}
    for p, link, weight in zip(part[owner].tolist(), ids.tolist(), weights.tolist(), strict=True):
        want[(p, link)] = want.get((p, link), 0.0) + weight
    keys = sorted(want)
    assert list(zip(got_part.tolist(), got_link.tolist(), strict=True)) == keys
    assert got_load.tolist() == [want[k] for k in keys]


def test_unique_inverse_is_numpys_unique():
    from simcluster.fabric.routing import _unique_inverse

    rng = np.random.default_rng(5)
    for key in (rng.integers(0, 1000, 50_000), rng.integers(0, 2**40, 20_000), np.zeros(0, dtype=np.int64),
                np.array([7, 7, 7]), np.array([9, 1, 9, 1, 5])):
        want = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
        got = _unique_inverse(key)
        for w, g in zip(want, got, strict=True):
            assert np.array_equal(w, g) and w.dtype == g.dtype


def test_loads_by_part_of_distinct_entries_are_their_weights_sorted():
    """Each (part, link) once (the sorted path's shortcut): the loads are the weights, in (part, link) order."""
    from simcluster.fabric.routing import loads_by_part

    rng = np.random.default_rng(4)
    links = 300_000
    part = rng.permutation(np.repeat(np.arange(100), 20))
    owner = rng.permutation(len(part))
    ids = rng.permutation(links)[:len(part)]
    weights = rng.random(len(part))
    got_part, got_link, got_load = loads_by_part(part, owner, ids, weights, links)
    order = np.lexsort((ids, part[owner]))
    assert np.array_equal(got_part, part[owner][order]) and np.array_equal(got_link, ids[order])
    assert np.array_equal(got_load, weights[order])


@pytest.mark.parametrize("entries", [0, 1, 40, 3_000, 200_000, 1_000_000])   # the last one: the dense count
def test_loads_by_part_sorted_or_dense_give_the_same_arrays(entries):
    """Within the dense range, few entries against the keys' range take the sorted path (round 19: a dense count of
    a few hundred route entries scanned an array of millions of zeros, 12 ms a call); the arrays are the dense count's
    bit for bit, dtypes included, and a (part, link) whose weights sum to zero is left out as the dense count leaves
    it."""
    from simcluster.fabric.routing import _DENSE_PART_KEYS, loads_by_part

    rng = np.random.default_rng(entries)
    links = 30_000
    part = rng.integers(0, 100, size=max(entries, 1))
    owner = rng.integers(0, len(part), size=entries)
    ids = rng.integers(0, 500, size=entries) * 59 % links
    weights = rng.random(entries) / 3
    weights[::7] = 0.0   # entries whose (part, link) may sum to zero
    assert int(part.max()) * links + links <= _DENSE_PART_KEYS   # the old rule's dense range
    key = part.astype(np.int64)[owner] * links + ids
    dense = np.bincount(key, weights=weights) if entries else np.zeros(0)
    want_key = np.flatnonzero(dense)
    got = loads_by_part(part, owner, ids, weights, links)
    for g, w in zip(got, (want_key // links, want_key % links, dense[want_key]), strict=True):
        assert g.dtype == w.dtype and g.tobytes() == w.tobytes()
