"""A fabric's compact tables, the NetworkX graph made from them on demand, and the routing shortcuts that read them
(twin switches, latencies without sprays, the bounded spray cache), each checked against an independent
computation: networkx's own algorithms on the graph, one spray or one pair at a time, closed forms."""

from __future__ import annotations

import copy
import pickle

import networkx as nx
import numpy as np
import pytest

from simcluster.fabric import routing, topology
from simcluster.fabric.routing import Router
from simcluster.spec import hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")
FABRICS = [("rail-fat-tree", 4096, {"tiers": 3}), ("rail-fat-tree", 512, {}), ("fat-tree", 128, {}),
           ("leaf-spine", 256, {"oversubscription": 4}), ("multi-plane", 256, {}), ("rail-only", 256, {"radix": 16})]


def build(name, gpus, **options):
    return topology.build(name, gpus=gpus, gpus_per_node=8, gpu=H100, nic=CX7, options=options)


def test_graph_is_made_only_when_asked_and_holds_every_link_of_the_tables():
    fabric = build("rail-fat-tree", 64)
    fabric.links_of(np.array([[0, 63]]))                      # routing reads the tables
    graph = fabric.graph
    assert "_adj" not in graph.__dict__ and "_node" not in graph.__dict__
    assert graph.nodes["n0/gpu3"] == {"role": "gpu", "latency_s": 0.0, "server": 0, "rank": 3}
    assert "_adj" not in graph.__dict__                       # one node's attributes, no adjacency
    assert isinstance(graph, nx.DiGraph) and graph.number_of_nodes() == len(fabric.tables.nodes)
    assert graph.number_of_edges() == fabric.links
    for u, v, d in graph.edges(data=True):
        k = d["link_id"]
        assert fabric.link_ends[k] == (u, v)
        assert d["bytes_per_s"] == fabric.link_bytes_per_s[k] and d["kind"] == fabric.link_kind[k]
        assert d["latency_s"] == graph.nodes[v]["latency_s"]   # entering a node costs its latency
        assert graph.edges[v, u]["bytes_per_s"] == d["bytes_per_s"]   # cables: both directions alike
    assert nx.is_weakly_connected(graph)


def test_graph_changes_persist_and_copies_are_plain_graphs():
    fabric = build("rail-fat-tree", 16)
    graph = fabric.graph
    graph.nodes["n1/nic2"]["note"] = "cut"
    graph.edges["n1/nic2", "leaf/g0/r2"]["bytes_per_s"] /= 4
    assert graph.nodes["n1/nic2"]["note"] == "cut"
    assert graph.edges["n1/nic2", "leaf/g0/r2"]["bytes_per_s"] == CX7.rate / 4
    graph.add_node("extra", role="switch")
    assert "extra" in graph and len(graph) == len(fabric.tables.nodes) + 1
    for same in (graph.copy(), copy.deepcopy(graph), pickle.loads(pickle.dumps(graph))):
        assert nx.utils.graphs_equal(same, graph)
        assert same.edges["n1/nic2", "leaf/g0/r2"]["bytes_per_s"] == CX7.rate / 4


def test_gpu_attributes_come_from_the_tables():
    fabric = build("rail-fat-tree", 40)
    servers = fabric.gpu_attr("server")
    assert servers.tolist() == [g // 8 for g in range(40)]
    assert fabric.gpu_attr("rank", [5, 39]).tolist() == [5, 39]
    assert fabric.gpu_attr("no-such-attribute") is None


@pytest.mark.parametrize(("name", "gpus", "options"), FABRICS)
def test_twin_switches_share_distances_that_networkx_finds(name, gpus, options):
    fabric = build(name, gpus, **options)
    router = fabric.router
    core = [router.nodes[i] for i in router.core_ids]
    graph = fabric.graph.subgraph(core)
    position = {node: i for i, node in enumerate(core)}
    assert len(set(router.twin.tolist())) < len(core)        # some switches are twins
    for b in range(0, len(core), max(1, len(core) // 97)):
        want = np.full(len(core), -1)
        for node, hops in dict(nx.single_target_shortest_path_length(graph, core[b])).items():
            want[position[node]] = hops
        assert np.array_equal(router._dist_to(b), want)


@pytest.mark.parametrize(("name", "gpus", "options"), FABRICS)
def test_latencies_without_sprays_equal_the_route_sets_and_one_path_each(name, gpus, options):
    rng = np.random.default_rng(7)
    fabric, again = build(name, gpus, **options), build(name, gpus, **options)
    pairs = rng.integers(0, gpus, size=(3000, 2))
    latency_s = fabric.pair_latencies_s(pairs)                # no route set made yet: the latency-only path
    links, load, routed_s = again.route_set_of(pairs)          # made here, and what links_of then returns
    assert np.array_equal(latency_s, routed_s)                 # (collectives read either: round 32)
    assert all(got is want for got, want in zip(again.links_of(pairs), (links, load), strict=True))
    if name != "rail-only":   # builtin switches have one latency: every sprayed path is as slow as the ECMP one
        sample = pairs[:200]
        assert np.allclose(latency_s[:200], [fabric.path_latency_s(int(s), int(d)) for s, d in sample],
                           rtol=1e-12, atol=0)


@pytest.mark.parametrize(("name", "gpus", "options"), FABRICS)
def test_sprays_moved_between_twins_equal_their_own_and_the_cache_keeps_its_bound(name, gpus, options, monkeypatch):
    rng = np.random.default_rng(11)
    router = build(name, gpus, **options).router
    monkeypatch.setattr(routing, "_SPRAY_CACHE_ENTRIES", 2000)
    linked = np.flatnonzero(np.diff(router.core_ptr) > 0)
    a, b = rng.choice(linked, 300), rng.choice(linked, 300)
    twins = np.flatnonzero(router.twin != np.arange(len(router.twin)))
    some = rng.choice(twins, 60)          # twins of one class, both ways (moved from the class's first two)
    a, b = np.concatenate((a, router.twin[some], some, some[:-1])), np.concatenate((b, some, router.twin[some],
                                                                                  some[1:]))
    a, b = np.concatenate((a, a)), np.concatenate((b, b))   # again: from the cache
    a, b = a[a != b], b[a != b]
    for (links, fractions, slowest_s), x, y in zip(router.sprays(a, b), a.tolist(), b.tolist(), strict=True):
        own_links, own_fractions, own_slowest_s = router._spray_to(y, np.array([x]), np.ones(1))  # made itself
        assert sorted(zip(links.tolist(), fractions.tolist(), strict=True)) == sorted(
            zip(own_links.tolist(), own_fractions.tolist(), strict=True))
        assert slowest_s == own_slowest_s[0] == router._slowest(np.array([x]), np.array([y]))[0]
        assert fractions.sum() == pytest.approx(router._dist_to(y)[x], rel=1e-12)   # one whole flow per level
    assert router._spray_entries == sum(len(spray[0]) for spray in router._sprays.values())
    assert router._spray_entries <= 2000 or len(router._sprays) == 1


def test_one_pair_endpoints_equal_the_vectorised_choice_with_ties_hashed():
    rng = np.random.default_rng(5)
    for name, gpus, options in FABRICS:
        router = build(name, gpus, **options).router
        pairs = rng.integers(0, gpus, size=(500, 2))
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        up, down = router._endpoints(pairs[:, 0], pairs[:, 1], 3)
        one = [router._endpoint(int(s), int(d), 3) for s, d in pairs]
        assert one == list(zip(up.tolist(), down.tolist(), strict=True))


def test_router_over_a_graph_given_by_hand_routes_through_its_switch():
    graph = nx.DiGraph(name="star")
    for node, role in (("a", "gpu"), ("b", "gpu"), ("s", "switch")):
        graph.add_node(node, role=role, latency_s=1e-6 if role == "switch" else 0.0)
    for k, (u, v) in enumerate((("a", "s"), ("s", "a"), ("b", "s"), ("s", "b"))):
        graph.add_edge(u, v, bytes_per_s=1e9, latency_s=graph.nodes[v]["latency_s"], kind="ethernet", link_id=k)
    fabric = topology.fabric_from_graph("star", graph, ["a", "b"], 1)
    assert fabric.graph is graph
    assert isinstance(fabric.router, Router)
    assert fabric.path_links(0, 1).tolist() == [0, 3]
    assert fabric.pair_latencies_s(np.array([[0, 1]])).tolist() == [1e-6]


@pytest.mark.parametrize(("name", "gpus", "options"), FABRICS)
def test_slowest_paths_taken_from_a_twin_equal_their_own_pass(name, gpus, options):
    """``_slowest`` answers a twin's destination from its class's first switch; each answer equals a pass of
    ``_slowest_to`` to that destination itself, also once one twin's link is made slower (then it is not moved)."""
    rng = np.random.default_rng(13)
    router = build(name, gpus, **options).router
    linked = np.flatnonzero(np.diff(router.core_ptr) > 0)
    a, b = rng.choice(linked, 400), rng.choice(linked, 400)
    a, b = a[a != b], b[a != b]
    twins = np.flatnonzero(router.twin != np.arange(len(router.twin)))
    assert len(twins) and router._twin_alike()[twins].all()       # builtin switches: one latency per tier
    some = twins[:20]   # from the first twin, and from anywhere, to a twin
    a = np.concatenate((a, router.twin[some], linked[:len(some)]))
    b = np.concatenate((b, some, some))
    keep = a != b
    a, b = a[keep], b[keep]

    def own(x, y):
        return router._slowest_to(int(y), np.array([x]))[0]

    assert router._slowest(a, b).tolist() == [own(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    slowed = int(twins[0])
    router.link_latency_s = router.link_latency_s.copy()
    into = router.core_link[np.flatnonzero(router.core_nbr == slowed)[0]]
    router.link_latency_s[into] *= 3
    router._slowest_s.clear()
    router._alike = None
    assert not router._twin_alike()[slowed]
    sources = linked[linked != slowed]
    assert router._slowest(sources, np.full(len(sources), slowed)).tolist() == [
        own(x, slowed) for x in sources.tolist()]


def test_link_ends_are_two_columns_read_as_pairs_and_written_as_the_tuples_were():
    from simcluster.engine.record import FabricLinks
    from simcluster.engine.results import link_table

    fabric = build("rail-fat-tree", 64)
    ends = fabric.link_ends
    pairs = [(fabric.tables.nodes[u], fabric.tables.nodes[v]) for u, v in
             zip(fabric.tables.src.tolist(), fabric.tables.dst.tolist(), strict=True)]
    assert len(ends) == fabric.links and list(ends) == pairs and ends[5] == pairs[5] and ends[2:7] == pairs[2:7]
    link_bytes = np.zeros(fabric.links)
    link_bytes[::3] = 1e9                              # some links unused: the table lists the used ones
    for every in (link_bytes, np.full(fabric.links, 1e9)):
        tables = [link_table(FabricLinks(fabric.name, fabric.link_kind, fabric.link_bytes_per_s, given,
                                         fabric.link_class), every, 1.0) for given in (ends, pairs)]
        assert tables[0].columns["src"] == tables[1].columns["src"] == [pairs[k][0] for k in np.flatnonzero(every)]
        assert tables[0].columns["dst"] == tables[1].columns["dst"]


def _ring_between_pods(fabric, stride):
    """Pairs g -> g + stride (mod GPUs) for every GPU: a data-parallel ring's step, most pairs crossing pods."""
    gpus = np.arange(fabric.gpus)
    return np.column_stack((gpus, (gpus + stride) % fabric.gpus))


def _whole_sprays(monkeypatch):
    """Every spray copied whole per switch pair (the computation before sprays shared their middles)."""
    monkeypatch.setattr(Router, "_factored", lambda self, *args: None)


# 3-tier rail-optimised fat-trees of radix 64 (fractions 1/32, 1/1024: sums exact) and of radix 12 (1/6, 1/36: not),
# and a two-tier leaf-spine of 3 spines sprayed adaptively (1/3)
SHARED_MIDDLES = [("rail-fat-tree", 4096, {"tiers": 3}), ("rail-fat-tree", 384, {"tiers": 3, "radix": 12}),
                  ("leaf-spine", 240, {"spines": 3, "routing": "adaptive"})]


@pytest.mark.parametrize(("name", "gpus", "options"), SHARED_MIDDLES)
def test_sprays_sharing_their_middles_give_the_loads_of_sprays_copied_whole(name, gpus, options, monkeypatch):
    """Route sets (with and without parts, pairs listed several times, a large random permutation) equal to the
    last bit those of a router that copies every switch pair's spray whole; on the radix-64 fat-tree the middles
    are shared (the ends of 128 switch pairs, not their 2 x 2,048 links each)."""
    rng = np.random.default_rng(17)
    fabric = build(name, gpus, **options)
    sets = [_ring_between_pods(fabric, stride) for stride in (8, gpus // 2 + 8, gpus // 4)]
    sets.append(np.concatenate((sets[0], sets[0][:100], sets[1][::3])))              # repeated pairs
    sets.append(np.column_stack((np.arange(gpus), rng.permutation(gpus))))         # a permutation
    parts = [rng.integers(0, 5, size=len(pairs)) for pairs in sets]
    router = fabric.router
    made = [router.route_set(p[:, 0], p[:, 1], 0, True, fabric.links) for p in sets]
    made_parts = [router.route_set(p[:, 0], p[:, 1], 0, True, fabric.links, part=k) for p, k in zip(sets, parts,
                                                                                                   strict=True)]
    if name == "rail-fat-tree" and options.get("radix") is None:
        entries = []
        original = Router._factored

        def counted(self, *args):
            found = original(self, *args)
            entries.append(None if found is None else sum(len(piece[0]) for piece in found[0]))
            return found
        monkeypatch.setattr(Router, "_factored", counted)
        fresh = build(name, gpus, **options).router
        fresh.route_set(sets[0][:, 0], sets[0][:, 1], 0, True, fabric.links)
        assert entries and None not in entries and entries[0] < 128 * 4096 / 4
        monkeypatch.undo()
    _whole_sprays(monkeypatch)
    whole = build(name, gpus, **options).router
    for pairs, k, got, got_parts in zip(sets, parts, made, made_parts, strict=True):
        want = whole.route_set(pairs[:, 0], pairs[:, 1], 0, True, fabric.links)
        want_parts = whole.route_set(pairs[:, 0], pairs[:, 1], 0, True, fabric.links, part=k)
        for a, b in zip((*got, *got_parts), (*want, *want_parts), strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_core_loads_kept_for_one_ring_step_serve_another_stage_with_the_same_switch_pairs(monkeypatch):
    """Two ring steps whose GPUs differ but cross the same switch pairs (the servers 2k and 2k + 1 share their rails'
    leaves, as two pipeline stages' rings do at 131,072 GPUs): the second takes the kept core loads and equals a fresh
    router's route set, and that of a router copying sprays whole."""
    monkeypatch.setattr(routing, "_KEPT_CORE_MIN_ENTRIES", 1)
    fabric = build("rail-fat-tree", 4096, tiers=3)
    first, second = _ring_between_pods(fabric, 1024), _ring_between_pods(fabric, 1024)
    first = first[first[:, 0] % 16 < 8]      # servers 0, 2, 4 ... and 1, 3, 5 ...: the same leaves and pods
    second = second[second[:, 0] % 16 >= 8]
    router = fabric.router
    router.route_set(first[:, 0], first[:, 1], 0, True, fabric.links)
    kept = dict(router._core_loads)
    assert len(kept) == 1
    got = router.route_set(second[:, 0], second[:, 1], 0, True, fabric.links)
    assert router._core_loads.keys() == kept.keys()              # a hit: nothing new kept
    twice = np.concatenate((second, second[::2]))           # the same switch pairs, other flows: not the kept loads
    got_twice = router.route_set(twice[:, 0], twice[:, 1], 0, True, fabric.links)
    fresh = build("rail-fat-tree", 4096, tiers=3).router
    _whole_sprays(monkeypatch)
    whole = build("rail-fat-tree", 4096, tiers=3).router
    for pairs, made in ((second, got), (twice, got_twice)):
        want = fresh.route_set(pairs[:, 0], pairs[:, 1], 0, True, fabric.links)
        want_whole = whole.route_set(pairs[:, 0], pairs[:, 1], 0, True, fabric.links)
        for a, b, c in zip(made, want, want_whole, strict=True):
            assert np.array_equal(a, b) and np.array_equal(a, c)


def test_dyadic_exponent_is_the_power_of_two_that_makes_every_value_whole():
    assert routing._dyadic_exponent(np.array([0.5, 0.25, 3.0, 0.0])) == 2
    assert routing._dyadic_exponent(np.array([1 / 4096, 7 / 8192])) == 13
    assert routing._dyadic_exponent(np.zeros(0)) == 0
    assert routing._dyadic_exponent(np.array([1 / 3])) >= 54          # 1/3 is no short binary fraction
    assert routing._dyadic_exponent(np.array([np.inf])) is None


def test_loads_summed_over_the_distinct_links_equal_the_dense_count():
    rng = np.random.default_rng(3)
    links = 100_000
    for entries in (10, 5_000, 60_000):
        ids = rng.integers(0, links, size=entries)
        weights = rng.random(entries) / 3
        used, load = routing.summed(ids, weights, links)
        dense = np.bincount(ids, weights=weights, minlength=links)
        assert np.array_equal(used, np.flatnonzero(dense > 0)) and np.array_equal(load, dense[used])


def test_large_pair_arrays_are_cached_by_digest_and_never_confused():
    fabric = build("rail-fat-tree", 512)
    pairs = _ring_between_pods(fabric, 64)
    other = pairs.copy()
    other[7, 1] = 0                                            # one pair changed
    a, b = fabric._route_set(pairs, 0), fabric._route_set(other, 0)
    assert fabric._route_set(pairs.copy(), 0) is a and fabric._route_set(other.copy(), 0) is b
    assert not np.array_equal(a[2], b[2]) or not np.array_equal(a[1], b[1])
    assert all(len(key[1]) == 32 for key in fabric._routes)     # a SHA-256 digest, not the pairs' bytes


def test_endpoints_of_gpus_with_equal_rows_equal_the_general_choice(monkeypatch):
    """The (pairs x candidates) choice of fabrics whose GPUs all have as many ways up and down, in chunks of 7 pairs
    or at once, equals the general per-candidate one, ties hashed alike (every FABRICS entry has equal rows)."""
    rng = np.random.default_rng(23)
    for name, gpus, options in FABRICS:
        router = build(name, gpus, **options).router
        pairs = rng.integers(0, gpus, size=(2000, 2))
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        fast = router._endpoints(pairs[:, 0], pairs[:, 1], 5)
        assert router._rows_per_gpu(True) and router._rows_per_gpu(False)
        monkeypatch.setattr(routing, "_ENDPOINT_CHUNK", 7)
        chunked = router._endpoints(pairs[:, 0], pairs[:, 1], 5)
        monkeypatch.undo()
        assert all(np.array_equal(x, y) for x, y in zip(fast, chunked, strict=True))
        router._widths = {True: 0, False: 0}                       # as if the rows differed
        general = router._endpoints(pairs[:, 0], pairs[:, 1], 5)
        assert all(np.array_equal(x, y) for x, y in zip(fast, general, strict=True))


@pytest.mark.parametrize(("name", "gpus", "options"), [*FABRICS, ("torus", 64, {}), ("nvswitch-node", 8, {})])
def test_kind_codes_kept_by_the_builder_and_attribute_columns_from_arrays_equal_those_read_value_by_value(
        name, gpus, options):
    from simcluster.fabric.tables import attr_column

    fabric = build(name, gpus, **options)
    names: dict = {}
    codes = [names.setdefault(kind, len(names)) for kind in fabric.link_kind]     # first named, first numbered
    kept = fabric.link_kind_codes
    assert kept is fabric.tables.kind_codes and kept[0] == list(names) and kept[1].tolist() == codes
    for attr, column in fabric.tables.node_attrs.items():
        present = np.flatnonzero(column != (False if column.dtype == bool else
                                            None if column.dtype == object else -1))
        by_value = attr_column([(present, column[present].tolist())], len(column))
        assert by_value.dtype == column.dtype and np.array_equal(by_value, column), attr
