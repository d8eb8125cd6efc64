"""DeepEP's deduplicated all-to-all: distinct destination nodes and GPUs of a routed token (closed forms against
enumeration and a Monte-Carlo count), the hierarchical all-to-all's bytes and time against them, and the closed
form against DeepEP's published normal-kernel bandwidths (docs/legacy.md, H800 + CX7)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from simcluster import collectives, network
from simcluster.collectives import Collective
from simcluster.collectives.closed_form import hierarchical_alltoall_bytes, hierarchical_alltoall_time_s
from simcluster.core.errors import ScenarioError
from simcluster.core.token_routing import (
    TokenRouting,
    expected_max_normal,
    group_load_variance,
    hit_probability,
    sampling_cv,
)
from simcluster.fabric import topology
from simcluster.spec import config, hardware
from simcluster.spec.model import MoESpec, TransformerSpec
from simcluster.workload import moe

B200, CX7 = hardware.gpu("b200"), hardware.nic("connectx-7")
SIZE = 2**28


def test_hit_probability_counts_every_choice_of_experts():
    """1 - C(E - s, k)/C(E, k) against all C(12, 3) choices of 3 experts of 12, a set of 4 of them."""
    choices = list(itertools.combinations(range(12), 3))
    hits = sum(1 for c in choices if any(e < 4 for e in c))
    assert hit_probability(12, 3, 4) == pytest.approx(hits / len(choices), rel=1e-12)


def test_group_load_variance_counts_every_choice_of_experts():
    """k (s/E)(1 - s/E)(E - k)/(E - 1) per token against the exact variance over all C(7, 3) equally likely choices
    of 3 experts of 7, copies landing on a set of 2 of them; tokens add independently."""
    copies = [sum(1 for e in c if e < 2) for c in itertools.combinations(range(7), 3)]
    assert group_load_variance(7, 3, 1, 2) == pytest.approx(np.var(copies), rel=1e-12)
    assert group_load_variance(7, 3, 500, 2) == pytest.approx(500 * np.var(copies), rel=1e-12)


@pytest.mark.parametrize("experts, top_k, tokens", [(8, 2, 2048), (128, 8, 65536), (64, 1, 100)])
def test_sampling_cv_is_the_binomial_spread_with_the_fixed_sum_correction(experts, top_k, tokens):
    """One expert's count is binomial(T, k/E): CV^2 = (E/(kT))(1 - k/E), written out here; the busiest-group form
    carries E/(E - 1) for the fixed total (token_routing.sampling_cv)."""
    binomial = experts / (top_k * tokens) * (1 - top_k / experts)
    mean = tokens * top_k / experts
    assert group_load_variance(experts, top_k, tokens, 1) / mean**2 == pytest.approx(binomial, rel=1e-12)
    assert sampling_cv(experts, top_k, tokens) ** 2 == pytest.approx(binomial * experts / (experts - 1), rel=1e-12)
    assert sampling_cv(experts, top_k, None) == 0.0 and sampling_cv(1, 1, tokens) == 0.0


def _monte_carlo_busiest(experts: int, top_k: int, tokens: int, groups: int, batches: int = 3000,
                         seed: int = 1) -> float:
    """Mean over ``batches`` microbatches of the busiest of ``groups`` consecutive expert groups' token copies over
    the mean, every token routed to ``top_k`` distinct experts uniformly (Megatron-Core's forced balancing: random
    logits, top-k)."""
    rng = np.random.default_rng(seed)
    busiest = []
    for start in range(0, batches, 250):
        b = min(250, batches - start)
        top = np.argpartition(rng.random((b, tokens, experts)), top_k - 1, axis=2)[:, :, :top_k]
        counts = np.bincount((np.arange(b)[:, None, None] * experts + top).ravel(), minlength=b * experts)
        per_group = counts.reshape(b, groups, experts // groups).sum(axis=2)
        busiest.append(per_group.max(axis=1) / (tokens * top_k / groups))
    return float(np.concatenate(busiest).mean())


@pytest.mark.parametrize("experts, top_k, tokens, groups", [
    (8, 2, 2048, 8),     # Mixtral: one expert a rank
    (16, 4, 1024, 16),
    (8, 1, 1024, 8),
])
def test_busiest_load_of_uniform_routing_matches_a_monte_carlo_count(experts, top_k, tokens, groups):
    """The sampling part alone: 1 + CV_sampling / sqrt(g) z(G) against routed microbatches, within 3% of the excess
    (Blom's z and the normal approximation of the counts; leaving out E/(E - 1) is 6.5% low, 1 - k/E 15% high)."""
    excess = TokenRouting(experts, top_k, tokens=tokens).busiest_load(groups) - 1.0
    assert excess == pytest.approx(_monte_carlo_busiest(experts, top_k, tokens, groups) - 1.0, rel=0.03)


def test_systematic_and_sampling_spreads_add_in_quadrature():
    """CV^2 = CV_sys^2 + CV_sampling^2; no token count, the systematic part alone (what a global figure gives)."""
    routing = TokenRouting(8, 2, load_cv=0.1, tokens=4096)
    assert routing.total_cv() == pytest.approx(math.hypot(0.1, sampling_cv(8, 2, 4096)), rel=1e-12)
    assert TokenRouting(8, 2, load_cv=0.1).busiest_load(8) == pytest.approx(1 + 0.1 * expected_max_normal(8))
    assert TokenRouting(8, 2, tokens=1e12).busiest_load(8) == pytest.approx(1.0, abs=1e-5)


def _monte_carlo_routing(experts: int, top_k: int, nodes: int, local: int, max_nodes: int | None,
                         tokens: int = 40_000, seed: int = 0) -> tuple[float, float]:
    """Mean distinct nodes and GPUs over ``tokens`` tokens routed as DeepEP's test routes them (tests/
    test_internode.py): random scores, the ``max_nodes`` nodes of highest best score, top_k among their experts."""
    rng = np.random.default_rng(seed)
    scores = rng.random((tokens, experts))
    if max_nodes is not None and max_nodes < nodes:
        best = scores.reshape(tokens, nodes, -1).max(axis=2)
        chosen = np.argsort(-best, axis=1)[:, :max_nodes]
        allowed = np.zeros((tokens, nodes), dtype=bool)
        np.put_along_axis(allowed, chosen, True, axis=1)
        scores = np.where(np.repeat(allowed, experts // nodes, axis=1), scores, -1.0)
    top = np.argpartition(-scores, top_k - 1, axis=1)[:, :top_k]
    per_node, per_gpu = top // (experts // nodes), top // (experts // (nodes * local))
    distinct = lambda ids: np.mean([len(set(row)) for row in ids.tolist()])  # noqa: E731
    return distinct(per_node), distinct(per_gpu)


@pytest.mark.parametrize("experts, top_k, nodes, local, max_nodes", [
    (128, 8, 4, 8, None),   # Qwen3-235B on EP 32 (moezoo-qwen3-235b-256-h100-deepep)
    (128, 8, 1, 8, None),   # Qwen3-235B on EP 8, one node (DeepEP's intranode kernels)
    (256, 8, 8, 8, 4),      # DeepSeek-V3 on EP 64, node-limited to M = 4 (DeepEP's benchmark)
    (64, 6, 2, 4, None),
])
def test_distinct_nodes_and_gpus_match_a_monte_carlo_count(experts, top_k, nodes, local, max_nodes):
    routing = TokenRouting(experts, top_k, groups=nodes, group_limit=max_nodes)   # DeepEP's groups: its nodes
    mc_nodes, mc_gpus = _monte_carlo_routing(experts, top_k, nodes, local, max_nodes)
    assert routing.distinct_nodes(nodes) == pytest.approx(mc_nodes, abs=0.02)
    # uniform routing: exact (Monte-Carlo noise only); node-limited: each chosen node's own expert, then the other
    # k - M among the chosen nodes' other experts (token_routing's docstring; 1.5% low before round 31's review)
    assert routing.distinct_gpus(nodes, local) == pytest.approx(mc_gpus, rel=0.005)


def test_qwen3_on_four_nodes_reaches_2_72_other_nodes_not_6_copies():
    """docs/calibration/rounds-1-9.md, "Issue 15: MoE on Hopper": 3 x (1 - C(96,8)/C(128,8)) = 2.72 off-node, against
    the 6 of 8 copies a per-expert all-to-all sends off-node."""
    routing = TokenRouting(128, 8)
    assert 3 * routing.node_hit(4) == pytest.approx(2.7218, abs=1e-4)
    network_bytes, _ = hierarchical_alltoall_bytes(4, 8, 8.0, routing)  # S = 8 bytes: one byte a copy
    assert network_bytes == pytest.approx(2.7218, abs=1e-4)
    assert hierarchical_alltoall_bytes(4, 8, 8.0)[0] == pytest.approx(6.0)


def test_one_expert_a_token_leaves_nothing_to_deduplicate():
    """top_k = 1: a token has one destination, so the deduplicated bytes are every copy's bytes."""
    for nodes, local in ((4, 8), (2, 4), (1, 8)):
        assert hierarchical_alltoall_bytes(nodes, local, SIZE, TokenRouting(64, 1)) == pytest.approx(
            hierarchical_alltoall_bytes(nodes, local, SIZE), rel=1e-12)


@pytest.fixture(scope="module")
def rail32():
    return topology.build("rail-fat-tree", gpus=32, gpus_per_node=8, gpu=B200, nic=CX7)


def _nic_bytes(fabric, routing, gpus=32):
    steps = collectives.schedule(Collective("alltoall", range(gpus), SIZE, algorithm="hierarchical",
                                            protocol="Simple", routing=routing), fabric)
    model = network.make("analytic", fabric)
    time_s = collectives.simulate(steps, model)
    roles = fabric.graph.nodes
    nic_out = sum(b for b, (u, v) in zip(model.link_bytes, fabric.link_ends, strict=True)
                  if roles[u]["role"] == "nic" and roles[v]["role"] == "leaf")
    return time_s, nic_out, steps


def test_hierarchical_alltoall_sends_a_token_once_per_node_on_the_nics(rail32):
    """32 GPUs on 4 nodes, 128 experts top-8: the NICs carry 32 x 3 x S/8 x P(node) (the closed form's network
    bytes), 2.2x fewer than every copy's 32 x 3/4 x S; the direct all-to-all keeps sending every copy."""
    routing = TokenRouting(128, 8)
    _, deduplicated, _ = _nic_bytes(rail32, routing)
    _, every_copy, _ = _nic_bytes(rail32, None)
    assert deduplicated == pytest.approx(32 * hierarchical_alltoall_bytes(4, 8, SIZE, routing)[0], rel=1e-9)
    assert every_copy == pytest.approx(32 * 3 / 4 * SIZE, rel=1e-9)
    direct = collectives.schedule(Collective("alltoall", range(32), SIZE, algorithm="direct", protocol="Simple",
                                             routing=routing), rail32)
    assert sum(tc.size_bytes * len(tc.pairs) for step in direct for tc in step.transfers) == pytest.approx(
        32 * 31 / 32 * SIZE, rel=1e-12)


def test_deduplicated_hierarchical_alltoall_matches_its_closed_form(rail32):
    """Idle fabric, analytic model: the pipelined phases end with the slower, the network's here."""
    routing = TokenRouting(128, 8)
    elapsed, _, steps = _nic_bytes(rail32, routing)
    alpha = sum(step.overhead_s for step in steps) + rail32.path_latency_s(0, 8)
    expected = hierarchical_alltoall_time_s(4, 8, SIZE, alpha, B200.nvlink_bandwidth, CX7.rate, routing)
    assert elapsed == pytest.approx(expected, rel=1e-6)


def test_inside_one_node_a_token_goes_once_to_each_destination_gpu():
    """EP 8 on one node (DeepEP's intranode kernels): (m-1) S/k P(GPU) leaves each GPU, 4.67 of 7 peers' worth
    for 16 local experts of 128, top-8."""
    fabric = topology.build("rail-fat-tree", gpus=8, gpus_per_node=8, gpu=B200, nic=CX7)
    routing = TokenRouting(128, 8)
    steps = collectives.schedule(Collective("alltoall", range(8), SIZE, algorithm="hierarchical",
                                            protocol="Simple", routing=routing), fabric)
    sent = sum(tc.size_bytes * len(tc.pairs) for step in steps for tc in step.transfers) / 8
    assert sent == pytest.approx(7 * routing.gpu_hit(1, 8) * SIZE / 8, rel=1e-12)
    assert sent / (SIZE / 8) == pytest.approx(4.672, abs=1e-3)


# DeepEP's normal kernels on H800 with one CX7 400 Gb/s NIC per GPU (deepseek-ai/DeepEP docs/legacy.md,
# "Performance"; tests/test_internode.py's settings: 4,096 tokens, hidden 7,168, 256 experts top-8, top-4 node groups,
# FP8 dispatch): dispatch "bottleneck bandwidth" (RDMA) per EP size. The bandwidth is logical: (token, node) pairs
# of each rank, its own node included, times the token's bytes, over the time.
DEEPEP_DISPATCH_RDMA_GB_S = {16: 43.0, 32: 58.0, 64: 51.0}
H800_NVLINK_GB_S = 160.0   # "~160 GB/s NVLink maximum" (docs/legacy.md)
CX7_GB_S = 50.0            # "~50 GB/s maximum" (docs/legacy.md)


@pytest.mark.parametrize("ep", [32, 64])
def test_closed_form_gives_deepeps_measured_internode_bandwidth(ep):
    """Where the NIC binds (EP 32 and 64, network time 1.4-1.6x the NVLink forwarding's), the deduplicated,
    pipelined closed form at the link maxima gives DeepEP's logical RDMA bandwidth within 15% (simulated 66.7 and
    57.1 GB/s against 58 and 51: DeepEP reaches 0.87-0.89 of the NIC maximum); the phases in turn give 31-34% below
    it, every copy (pipelined) 44-48% below. At EP 16 (two nodes) the NVLink forwarding binds and the figure
    (43 GB/s) lies between the pipelined (56) and in-turn (36) forms: not asserted."""
    nodes, token_bytes, tokens = ep // 8, 7168 * (1 + 4 / 128), 4096
    routing = TokenRouting(256, 8, groups=nodes, group_limit=4)   # DeepEP's test: node groups, at most 4
    size = tokens * 8 * token_bytes
    logical = lambda t: tokens * routing.distinct_nodes(nodes) * token_bytes / t / 1e9  # noqa: E731
    pipelined = hierarchical_alltoall_time_s(nodes, 8, size, 0.0, H800_NVLINK_GB_S * 1e9, CX7_GB_S * 1e9, routing)
    assert logical(pipelined) == pytest.approx(DEEPEP_DISPATCH_RDMA_GB_S[ep], rel=0.15)
    every_copy = hierarchical_alltoall_time_s(nodes, 8, size, 0.0, H800_NVLINK_GB_S * 1e9, CX7_GB_S * 1e9)
    network_bytes, nvlink_bytes = hierarchical_alltoall_bytes(nodes, 8, size, routing)
    in_turn = network_bytes / (CX7_GB_S * 1e9) + nvlink_bytes / (H800_NVLINK_GB_S * 1e9)
    for slower in (every_copy, in_turn):
        assert logical(slower) < 0.75 * DEEPEP_DISPATCH_RDMA_GB_S[ep]


def test_the_engine_sends_the_models_routing_with_deepeps_alltoall():
    """A step with ``ep_alltoall: hierarchical`` over two B200 nodes (64 experts top-4, ep 16): each MoE layer's 4
    all-to-alls cost the deduplicated closed form alone on the fabric (``Collective.routing`` from model.moe), not
    the every-copy one, within 5% (contention with the data-parallel reduction)."""
    from simcluster.engine import simulate
    from simcluster.parallel.plan import dispatch_bytes
    from tests.unit.test_expert_parallel import _moe_scenario

    sc = _moe_scenario("b200", 8, 2, ep=16, ep_alltoall="hierarchical")
    fabric = topology.from_scenario(sc)
    routing = moe.token_routing(sc.model.moe)   # the engine's: the model's experts, top_k and load
    assert (routing.experts, routing.top_k) == (64, 4)
    alone = {r: collectives.run(Collective("alltoall", range(16), dispatch_bytes(sc), algorithm="hierarchical",
                                           routing=r), fabric).time_s for r in (routing, None)}
    exposed = simulate(sc, fabric=fabric).summary["exposed_comm_by_parallelism_s"]["ep"]
    assert exposed == pytest.approx(4 * sc.model.moe_layers * alone[routing], rel=0.05)
    assert alone[routing] < 0.8 * alone[None]


def _fake_balanced_gate_spans(experts, top_k, tokens, units):
    """Distinct units per token of NeMo AutoModel's FakeBalancedGate (nemo_automodel/components/moe/layers.py, 2025:
    ``indices = arange(T * k).view(-1, k) % E``), experts placed in order, E / units consecutive a unit."""
    indices = np.arange(tokens * top_k).reshape(tokens, top_k) % experts
    return float(np.mean([len(set(row)) for row in (indices // (experts // units)).tolist()]))


@pytest.mark.parametrize("experts, top_k, units", [
    (256, 8, 8), (256, 8, 64),   # DeepSeek-V3 on EP 64 over 8 nodes: one node, two GPUs a token
    (128, 8, 32), (64, 6, 8), (60, 4, 6), (8, 2, 4),
])
def test_round_robin_gate_spans_what_its_indices_reach(experts, top_k, units):
    """The closed form (one period enumerated) against the gate's own indices over a 4096-token microbatch."""
    routing = TokenRouting(experts, top_k, consecutive=True)
    assert routing.distinct_nodes(units) == pytest.approx(_fake_balanced_gate_spans(experts, top_k, 4096, units),
                                                           rel=0.01)


def test_round_robin_deepseek_v3_on_ep64_sends_a_token_to_one_node_not_five():
    """AutoModel's DeepSeek-V3 benchmark (256 experts top-8, EP 64 on 8 nodes of 8): experts 8t..8t+7 sit on EP ranks
    2t, 2t+1 (4 a rank) of one node, so DeepEP sends a token over RDMA to at most one other node, (N-1)/N of the
    time, where uniform routing reaches 5.29 nodes: 5.3x fewer network bytes; every expert gets exactly its share."""
    robin, uniform = TokenRouting(256, 8, consecutive=True), TokenRouting(256, 8)
    assert (robin.distinct_nodes(8), robin.distinct_gpus(8, 8)) == (1.0, 2.0)
    network_bytes, nvlink_bytes = hierarchical_alltoall_bytes(8, 8, 8.0, robin)   # one byte a copy
    assert network_bytes == pytest.approx(7 / 8) and nvlink_bytes == pytest.approx(7 * 8 * 2 / 64)
    assert hierarchical_alltoall_bytes(8, 8, 8.0, uniform)[0] / network_bytes == pytest.approx(5.3, abs=0.05)
    spec = MoESpec(experts=256, top_k=8, ffn_hidden=2048, load="round_robin")
    assert moe.token_routing(spec, tokens=4096.0).busiest_load(64) == 1.0


def test_flex_permutation_reads_the_rows_the_round_robin_gate_sends():
    """The flex dispatcher permutes the rows DeepEP brought, one per (token, GPU reached): under AutoModel's fake
    balanced gate DeepSeek-V3's block of 8 consecutive experts lies on exactly 2 GPUs of EP 64 (4 experts a GPU,
    blocks aligned), not the 64 (1 - C(252, 8)/C(256, 8)) = 7.68 of uniform routing, which the permutation read
    before round 31's review while the dispatch sent 2."""
    mla = {"q_lora_rank": 1536, "kv_lora_rank": 512, "qk_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128}
    base = {"layers": 8, "hidden": 7168, "heads": 128, "vocab": 129280, "mla": mla}
    spec = MoESpec(experts=256, top_k=8, ffn_hidden=2048, load="round_robin")
    model = TransformerSpec(**base, moe=spec)
    assert moe.permutation_rows(model, 4096.0, 64) == pytest.approx(2 * 4096.0)
    uniform = TransformerSpec(**base, moe=spec.model_copy(update={"load": "balanced"}))
    assert moe.permutation_rows(uniform, 4096.0, 64) == pytest.approx(
        4096.0 * 64 * (1 - math.comb(252, 8) / math.comb(256, 8)))


def _monte_carlo_group_limited(experts: int, top_k: int, groups: int, limit: int, units: int,
                               tokens: int = 40_000, seed: int = 0) -> float:
    """Mean distinct units (of ``units`` equal blocks of consecutive experts) a token reaches under Megatron-Core's
    group-limited routing as its benchmark runs it (moe_utils ``group_limited_topk`` after RandomSTE's random normal
    logits through the sigmoid): each group scored by the sum of its top_k / limit best scores, the ``limit``
    best groups kept, top_k among their experts."""
    rng = np.random.default_rng(seed)
    scores = 1.0 / (1.0 + np.exp(-rng.standard_normal((tokens, experts))))
    per_group = np.sort(scores.reshape(tokens, groups, -1), axis=2)[:, :, -(top_k // limit):].sum(axis=2)
    chosen = np.argsort(-per_group, axis=1)[:, :limit]
    allowed = np.zeros((tokens, groups), dtype=bool)
    np.put_along_axis(allowed, chosen, True, axis=1)
    scores = np.where(np.repeat(allowed, experts // groups, axis=1), scores, -1.0)
    top = np.argpartition(-scores, top_k - 1, axis=1)[:, :top_k] // (experts // units)
    return float(np.mean([len(set(row)) for row in top.tolist()]))


@pytest.mark.parametrize("experts, top_k, groups, limit, units", [
    (32, 8, 8, 4, 8),     # the moe_perf baseline's DeepSeek proxy on EP 8: a group a GPU, at most 4 GPUs
    (256, 8, 8, 4, 8),    # DeepSeek-V3's router on EP 64 over 8 nodes: a group a node (its nodes)
    (256, 8, 8, 4, 64),   # ... and its 64 GPUs, 8 inside each group
    (256, 8, 8, 4, 32),   # ... on EP 32 in one NVLink domain (nemo2604 on GB300): 4 GPUs a group
    (64, 8, 16, 4, 8),    # two whole groups a unit
])
def test_group_limited_routing_matches_megatrons_routing(experts, top_k, groups, limit, units):
    """Counted against the routing itself (module docstring: each chosen group holds one of the token's top_k
    nearly always, 1% high at most for whole groups; a unit inside a group: the group's own expert, then the other
    k - M among the chosen groups' other experts, within 0.5%. Round 31 drew all k uniformly among the chosen
    groups' experts: 1.8% low on 64 GPUs, 3.8% low on 32, which fails here)."""
    routing = TokenRouting(experts, top_k, groups=groups, group_limit=limit)
    counted = _monte_carlo_group_limited(experts, top_k, groups, limit, units)
    assert units * routing.unit_hit(units) == pytest.approx(counted, rel=0.02 if groups % units == 0 else 0.005)
    uniform = units * TokenRouting(experts, top_k).unit_hit(units)
    assert counted < uniform - 0.1   # the limit binds in every case: the test can tell the two apart


def test_group_limit_does_not_bind_with_as_many_groups_as_experts_a_token():
    """top_k = group_topk: a group is scored by its best expert, and a token's top 4 experts lie in groups whose best
    experts are among the 4 best groups', so Megatron-Core's routing is the uniform one (counted: 3.32 of 8 groups);
    treating each chosen group as reached would give 4."""
    routing, uniform = TokenRouting(256, 4, groups=8, group_limit=4), TokenRouting(256, 4)
    counted = _monte_carlo_group_limited(256, 4, 8, 4, 8)
    assert routing.unit_hit(8) == uniform.unit_hit(8) and routing.unit_hit(64) == uniform.unit_hit(64)
    assert 8 * routing.unit_hit(8) == pytest.approx(counted, rel=0.005)


def _exact_group_limited_by_best_expert(experts: int, top_k: int, groups: int, limit: int, units: int) -> float:
    """Mean distinct units a token reaches under Megatron-Core's ``group_limited_topk`` with independent, identically
    distributed scores, counted over every ranking of the experts, for k / 2 < M < k (the group score the sum of the
    top_k // limit = 1 best: its best expert). Walking a ranking from its best expert down, the first ``limit``
    distinct groups met are the ones of highest score, and the token's experts are the first top_k met inside them;
    the next expert is equally likely any one not yet taken that can still be taken (before the M-th group is met,
    any; after, one of the chosen groups'), so the walk enumerates every ranking's outcome with its probability."""
    assert top_k // limit == 1
    per_group, per_unit = experts // groups, experts // units

    def walk(taken: tuple[int, ...]) -> float:
        if len(taken) == top_k:
            return float(len({expert // per_unit for expert in taken}))
        chosen = {expert // per_group for expert in taken}
        pool = [e for e in range(experts) if e not in taken and (len(chosen) < limit or e // per_group in chosen)]
        return sum(walk((*taken, expert)) for expert in pool) / len(pool)

    return walk(())


@pytest.mark.parametrize("experts, top_k, groups, limit, units, counted", [
    (16, 4, 4, 3, 8, 3.553113553113553),    # M = k - 1: round 32's form gave 3.667, above uniform's 3.600
    (12, 3, 3, 2, 6, 2.630303030303030),    # M = k - 1 (form 2.667 below uniform 2.727)
    (16, 3, 4, 2, 8, 2.647619047619048),    # M = k - 1
])
def test_group_limit_never_spreads_a_token_over_more_units_than_uniform_routing(experts, top_k, groups, limit, units,
                                                                               counted):
    """A limit on the groups only gathers a token's experts: counted over every ranking (the walk above; checked
    against all 9! orderings of 9 experts in 3 groups, top-3 within 2: 55/28 groups either way), the group-limited
    count lies below the uniform one, and the form is an upper bound within 2% of it. Round 32's form (each chosen
    group holding one of the token's experts, not capped) gave 3.667 distinct GPUs on the first layout, above both."""
    exact = _exact_group_limited_by_best_expert(experts, top_k, groups, limit, units)
    assert exact == pytest.approx(counted, rel=1e-12)
    routing, uniform = TokenRouting(experts, top_k, groups=groups, group_limit=limit), TokenRouting(experts, top_k)
    reached, spread = units * routing.unit_hit(units), units * uniform.unit_hit(units)
    assert counted < spread
    assert counted <= reached <= spread
    assert reached == pytest.approx(counted, rel=0.02)


def test_group_limited_hit_is_at_most_the_uniform_one_on_every_small_layout():
    """The cap, over every layout of up to 64 experts whose groups hold or split into whole units (M < k, M < G)."""
    for experts in range(2, 65):
        for groups in (g for g in range(2, experts + 1) if experts % g == 0):
            whole = (u for u in range(1, experts + 1) if experts % u == 0 and (u % groups == 0 or groups % u == 0))
            for units in whole:
                for top_k in range(2, min(experts, 9) + 1):
                    for limit in range(1, min(groups, top_k)):
                        if top_k > limit * (experts // groups):
                            continue
                        limited = TokenRouting(experts, top_k, groups=groups, group_limit=limit).unit_hit(units)
                        assert limited <= TokenRouting(experts, top_k).unit_hit(units)


@pytest.mark.parametrize("fields, key", [
    ({"groups": 8}, "model.moe.group_topk"),
    ({"group_topk": 4}, "model.moe.groups"),
    ({"groups": 5, "group_topk": 2}, "model.moe.groups"),
    ({"groups": 8, "group_topk": 9}, "model.moe.group_topk"),
    ({"groups": 8, "group_topk": 1}, "model.moe.group_topk"),   # top-8 does not fit in one group of 4 experts
])
def test_group_limited_routing_refuses_what_megatron_cannot_run(fields, key):
    """A one-line error naming the field (config.from_dict turns the model's check into a ScenarioError)."""
    moe_spec = {"experts": 32, "top_k": 8, "ffn_hidden": 2048, **fields}
    data = {"name": "t", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1},
            "model": {"layers": 2, "hidden": 1024, "heads": 8, "vocab": 32000, "moe": moe_spec},
            "training": {"seq_len": 1024, "global_batch_size": 8, "micro_batch_size": 1},
            "parallelism": {"tp": 1, "pp": 1, "dp": 8, "ep": 8}}
    with pytest.raises(ScenarioError) as err:
        config.from_dict(data)
    assert err.value.field == key and "\n" not in str(err.value)
