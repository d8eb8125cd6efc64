"""How many distinct nodes and GPUs a routed token reaches: what DeepEP's kernels send (pure, closed forms).

DeepEP (deepseek-ai/DeepEP, "normal" kernels of training and prefill) sends a token ONCE per destination node over
RDMA and once per destination GPU over NVLink, whatever number of its top-k experts sit there: the internode dispatch
counts ``num_rdma_token_sent`` as the (token, node) pairs with at least one of the token's experts (tests/
test_internode.py: ``rdma_idx = topk_idx // (num_experts // num_nodes)``, de-duplicated by ``inplace_unique``), then
forwards each token over NVLink to the node's GPUs holding its experts (``is_token_in_rank``: one row per token and
destination rank); the combine sums a token's expert outputs per GPU, then per node, before sending back: the same
bytes the other way. A direct NCCL all-to-all instead sends one copy per routed expert.

With the router spreading tokens uniformly over ``experts`` experts placed evenly over the group (Megatron-Core:
experts / ep consecutive experts per rank, a node's ranks consecutive), a token's ``top_k`` distinct experts reach a
given set of ``share`` experts with probability 1 - C(E - share, k) / C(E, k) (hypergeometric: none of k draws
without replacement among the share).

Group-limited routing (Megatron-Core ``--moe-router-num-groups`` G and ``--moe-router-group-topk`` M, moe_utils
``group_limited_topk``: the experts in G groups of E / G consecutive experts, a token's top_k chosen among the M groups
of highest score, a group scored by the sum of its top_k / M best experts; DeepSeek-V3 report, section 2.1.2: node-
limited routing, each token to at most M = 4 nodes; DeepEP's test draws its node-sized groups by their best score)
caps the distinct groups at M: the groups are chosen BY their best experts, so each chosen group holds one of the
token's top_k nearly always (Monte-Carlo counts: DeepEP's routing, 256 experts top-8 in 8 node groups, M = 4: 3.98
groups; Megatron-Core's, random logits through the sigmoid, 32 experts top-8 in 8 groups, M = 4: 3.99, 256 experts:
3.96; uniform top_k among the chosen groups' experts would give 3.63). A unit (GPU or node) holding whole groups is
reached when one of them is chosen; a unit of s experts inside a group of g = E / G is reached when its group is
chosen and then one of the token's experts lands on it, the group's own one (uniform in the group: s / g) or one of
the other k - M, uniform among the chosen groups' other M (g - 1) experts: 1 - (1 - s/g) C(M (g-1) - s, k - M) /
C(M (g-1), k - M) (round 31's review; DeepSeek-V3's 256 experts on 32 / 64 GPUs, 4 / 8 a group: 6.84 / 7.48 distinct
GPUs, 6.85 / 7.49 counted; taking all k uniform among the chosen groups' M g experts gave 6.60 / 7.36, 3.8% / 1.8%
low). With k = M the limit does not bind: a group scored by its best expert (k / M = 1) is among the M best whenever
it holds one of the token's top k, so the routing is the uniform one (256 experts top-4 in 8 groups, M = 4: 3.32
groups counted, 3.33 uniform); k < M leaves Megatron-Core's group score empty (the top k // M = 0), taken as uniform
too. For k / 2 < M < k, too, a group is scored by its best expert, so the groups holding the unlimited top k are the
ones of highest score and the limit changes the routing only when those are more than M; with M near k that is rare
and the count is near the uniform one (256 experts top-8 in 8 groups on 64 GPUs, M = 7: 7.68 distinct GPUs counted,
7.68 uniform), which the form above, every chosen group holding one expert, exceeds (7.90): a unit's hit is taken
as at most the uniform figure (a group limit only gathers the experts; round 32's review, exact enumeration on small
layouts in tests/unit/test_token_routing.py). When G is set equal to the expert-parallel size (device-limited
routing, as the moe_perf baseline's DeepSeek proxy does: 8 groups of 4 experts on 8 GPUs, M = 4) a token reaches at
most M GPUs: 4 of 8, not the 5.64 of uniform top-8 of 32.

Load: tokens per expert spread with a coefficient of variation (CV) of two independent parts, CV^2 = CV_sys^2 +
CV_sampling^2 (law of total variance): ``load_cv``, the router's systematic preference between experts (workload/
moe.py ``load_cv``; 0 for a router without one), and the multinomial noise of routing ``tokens`` tokens per microbatch
(``sampling_cv``), which even a perfectly uniform router has. A group of g experts then carries a load of relative
spread CV / sqrt(g), and the busiest of G such groups is expected at 1 + CV / sqrt(g) z(G) of the mean
(``busiest_load``; z the expected maximum of G standard normals). An all-to-all's
size is that of the busiest GPU (the EP rank); DeepEP's network phase, though, is received per node (rank (a, l)
sends to rank (b, l) every token with an expert on node b, whatever GPU of b holds it), so its receivers carry
their NODE's load, E / N experts, the busiest of N nodes: nearer the mean (``network_load``). The NVLink phase's
receivers carry their GPU's.

Round-robin routing (``model.moe.load: round_robin``): NeMo AutoModel's ``FakeBalancedGate`` (nemo_automodel/
components/moe/layers.py, 2025: ``indices = arange(T * k).view(-1, k) % E``, weights 1/k) sends a rank's token t to
the k consecutive experts k t .. k t + k - 1 (mod E). Every expert then gets exactly T k / E of each rank's tokens (no
systematic spread and no sampling noise), and a token's experts are one aligned block: with experts placed evenly
over the group in order (E / (N m) consecutive experts a GPU, a node's GPUs consecutive) it reaches the GPUs and
nodes that block spans (``consecutive_units``): DeepSeek-V3's 256 experts top-8 on EP 64 over 8 nodes, 2 GPUs of one
node, against 5.3 nodes and 7.6 GPUs for uniform routing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


def expected_max_normal(n: int) -> float:
    """Expected maximum of ``n`` independent standard normal samples, Blom's (1958) approximation
    Phi^-1((n - 0.375) / (n + 0.25)); 0 for one sample."""
    if n <= 1:
        return 0.0
    return NormalDist().inv_cdf((n - 0.375) / (n + 0.25))


def max_normal_quantiles(n: int, nodes: int) -> tuple[float, ...]:
    """The maximum of ``n`` independent standard normals at ``nodes`` equally weighted mid-quantiles (i + 1/2) /
    nodes of its distribution, F(x) = Phi(x)^n, i.e. x_i = Phi^-1(p_i^(1/n)) (the midpoint rule for an expectation
    over a distribution: E g(X) ~ mean_i g(x_i)); (0.0,) for one sample."""
    if n <= 1:
        return (0.0,)
    if nodes < 1:
        raise ValueError(f"need nodes {nodes} >= 1")
    return tuple(NormalDist().inv_cdf(((i + 0.5) / nodes) ** (1.0 / n)) for i in range(nodes))


def cv_from_max_violation(max_violation: float, experts: int) -> float:
    """Systematic CV of tokens per expert from a published maximum violation MaxVio = max_i load_i / mean - 1 over
    ``experts`` experts: loads close to normal put the expected maximum of E of them at the mean times
    1 + CV z(E), so CV = MaxVio / z(E) (data/moe.yaml ``load.references``)."""
    if max_violation < 0 or experts <= 1:
        raise ValueError(f"need max_violation {max_violation} >= 0 and experts {experts} > 1")
    return max_violation / expected_max_normal(experts)


def cv_from_switch_balance(statistic: float, response: float = 1.0) -> float:
    """Systematic CV of tokens per expert from the Switch load-balancing statistic a framework logs per layer and
    microbatch, L = E sum_i f_i P_i with f_i the routed share of expert i (sum 1) and P_i its mean router
    probability (Fedus et al. 2021, eq. 4; Megatron-Core logs it divided by its coefficient, 1 when balanced,
    ``switch_load_balancing_loss_func``). With f_i = (1 + d_i) / E and P_i = (1 + e_i) / E the sum is
    1 + mean_i(d_i e_i): L - 1 is the covariance of the two shares' deviations. If the probability share moves
    ``response`` times the routed share (e_i = c d_i) then L - 1 = c CV^2 and CV = sqrt((L - 1) / c)."""
    if statistic < 1.0 or response <= 0:
        raise ValueError(f"need a Switch statistic {statistic} >= 1 (1 = balanced) and response {response} > 0")
    return math.sqrt((statistic - 1.0) / response)


def sampling_cv(experts: int, top_k: int, tokens: float | None) -> float:
    """Spread of tokens per expert that uniform routing alone gives ``tokens`` tokens, each to ``top_k`` distinct
    of ``experts`` experts, as the CV of independent experts that ``busiest_load`` takes.

    An expert's count is binomial (each token picks it with probability k/E, tokens independent): mean T k / E,
    CV^2 = (E / (k T)) (1 - k / E). The counts are not independent, though: they sum to k T. A group of g = E / G
    experts holds a hypergeometric share of each token (``group_load_variance``), and G groups of a fixed sum are
    equicorrelated (rho = -1 / (G - 1)), whose expected maximum is the mean plus sigma sqrt(G / (G - 1)) z(G)
    (write them sigma sqrt(G / (G - 1)) (Z_i - mean Z)); the two corrections multiply to E / (E - 1) whatever G, so
    CV^2 = (E / (k T)) (1 - k / E) E / (E - 1) in 1 + CV / sqrt(g) z(G). 0 with one expert or no token count
    (``tokens`` None or infinite)."""
    if experts <= 1 or tokens is None or math.isinf(tokens):
        return 0.0
    if tokens <= 0 or not 1 <= top_k <= experts:
        raise ValueError(f"need tokens {tokens} > 0 and 1 <= top_k {top_k} <= experts {experts}")
    return math.sqrt(experts / (top_k * tokens) * (1.0 - top_k / experts) * experts / (experts - 1))


def group_load_variance(experts: int, top_k: int, tokens: float, share: int) -> float:
    """Variance of the token copies that ``share`` given experts receive when ``tokens`` tokens each pick ``top_k``
    distinct experts uniformly: a token's copies there are hypergeometric (k draws without replacement from E, s of
    them marked), variance k (s/E) (1 - s/E) (E - k) / (E - 1), summed over independent tokens."""
    if not 0 <= share <= experts or not 1 <= top_k <= experts:
        raise ValueError(f"need 0 <= share {share} <= experts {experts} and 1 <= top_k {top_k} <= experts")
    if experts == 1:
        return 0.0
    fraction = share / experts
    return tokens * top_k * fraction * (1.0 - fraction) * (experts - top_k) / (experts - 1)


# Experts up to which ``hit_probability`` divides exact binomials: math.comb's integers grow with E (C(2^16, 2^15) has
# 19,725 digits and took 0.17 s, C(2^20, 2^19) minutes, a hang in a run, round 32), while C(4096, 2048) takes
# milliseconds; every trained MoE has far fewer experts (384, Kimi K2). Above it, the ratio's log as a sum of
# min(s, k) terms up to this many, else by log-gamma (both well under 1e-9 relative up to spec.model.MAX_EXPERTS, 2^20:
# there s, k > 4,096 put the miss below e^-16; log-gamma's rounding, ~E ln E x 1e-16 on the log, is 2e-4 relative
# at 2^30 experts with s = k = 4,100, a layout the scenario bounds refuse; round 32's review).
EXACT_BINOMIAL_EXPERTS = 4096


def hit_probability(experts: int, top_k: int, share: int) -> float:
    """Probability that ``top_k`` distinct experts drawn uniformly from ``experts`` include at least one of a given
    ``share`` of them: 1 - C(E - share, k) / C(E, k)."""
    if not 0 <= share <= experts or not 1 <= top_k <= experts:
        raise ValueError(f"need 0 <= share {share} <= experts {experts} and 1 <= top_k {top_k} <= experts")
    if experts <= EXACT_BINOMIAL_EXPERTS:
        return 1.0 - math.comb(experts - share, top_k) / math.comb(experts, top_k)
    if share + top_k > experts:  # every choice of k meets the share
        return 1.0
    # C(E-s, k) / C(E, k) = prod_{i < s} (1 - k / (E - i)) = prod_{i < k} (1 - s / (E - i))
    #                     = (E-s)! (E-k)! / (E! (E-s-k)!)
    terms, other = min(share, top_k), max(share, top_k)
    if terms <= EXACT_BINOMIAL_EXPERTS:
        log_miss = math.fsum(math.log1p(-other / (experts - i)) for i in range(terms))
    else:
        log_miss = (math.lgamma(experts - share + 1) + math.lgamma(experts - top_k + 1) - math.lgamma(experts + 1)
                    - math.lgamma(experts - share - top_k + 1))
    return -math.expm1(log_miss)


def consecutive_units(experts: int, top_k: int, units: int) -> float:
    """Mean distinct units (GPUs or nodes, ``units`` of them holding E / units consecutive experts each) that a token's
    block of ``top_k`` consecutive experts k t .. k t + k - 1 (mod E) spans, over one period of the round-robin gate
    (E / gcd(E, k) tokens; module docstring). Exact, by enumeration."""
    if not 1 <= top_k <= experts or units < 1 or experts % units:
        raise ValueError(f"need 1 <= top_k {top_k} <= experts {experts} and units {units} dividing the experts")
    # Counted in closed form (the enumeration of E / gcd(E, k) tokens x k experts was 5 x 10^11 steps at 2^20 experts,
    # a hang, round 32): the starts k t mod E run over the multiples of g = gcd(E, k) once each, so their offsets r in
    # a unit of w = E / units experts run over the multiples of d = gcd(k, w) equally often; a block starting at r
    # spans q + 1 units (q, m = divmod(k - 1, w)), q + 2 when r >= w - m, at most all of them.
    per_unit = experts // units
    step = math.gcd(top_k, per_unit)
    offsets = per_unit // step
    whole, rest = divmod(top_k - 1, per_unit)
    late = (per_unit - 1) // step - (per_unit - rest - 1) // step if rest else 0  # offsets >= w - m
    spans = (offsets - late) * min(units, whole + 1) + late * min(units, whole + 2)
    return spans / offsets


def deepep_slowdown(ratio: float, ranks: int) -> float:
    """Time of DeepEP's intranode all-to-all over NCCL's on the same remote bytes, for a group of ``ranks`` GPUs in
    one node: its kernels copy every received row at one SM-bound rate, (ranks - 1)/ranks of them remote, so the
    remote bytes move at that rate x (ranks - 1)/ranks; ``ratio`` is NCCL's rate over the SM-bound one (0: not
    DeepEP). At least 1: where DeepEP's SMs copy faster than the link, the link binds."""
    if ratio <= 0 or ranks < 2:
        return 1.0
    return max(1.0, ratio * ranks / (ranks - 1))


@dataclass(frozen=True)
class TokenRouting:
    """A token's routing: ``top_k`` of ``experts`` experts, uniformly, within at most ``group_limit`` of ``groups``
    groups of consecutive experts (group-limited routing, module docstring; None: no limit). ``node_hit``/``gpu_hit``
    give the probability that a token reaches one given node or GPU of a group of ``nodes`` nodes of ``local`` GPUs
    each, the experts placed evenly (``divides``). ``load_cv``: the router's
    systematic spread of tokens per expert (0: none), ``tokens`` the tokens routed over the experts per microbatch
    (their sampling noise, ``sampling_cv``; None: not counted), ``capacity_factor`` the cap on a load (None:
    dropless; module docstring). ``intranode_ratio``: NCCL's NVLink all-to-all rate over the rate at which DeepEP's
    SM-bound intranode kernels copy received rows, their own among them (0: not DeepEP; collectives/deepep.py); the
    all-to-all inside one node of ``n`` GPUs takes ``intranode_slowdown(n)`` times NCCL's time on the same bytes.
    ``internode_ratio``: NCCL's NIC rate over DeepEP's measured internode one (0: not DeepEP); the network phase across
    nodes takes ``internode_slowdown()`` times NCCL's time on the same bytes.
    ``consecutive``: each token to an aligned block of ``top_k`` consecutive experts, the round-robin gate (module
    docstring), instead of ``top_k`` drawn uniformly."""

    experts: int
    top_k: int
    groups: int | None = None
    group_limit: int | None = None
    load_cv: float = 0.0
    capacity_factor: float | None = None
    tokens: float | None = None
    intranode_ratio: float = 0.0
    consecutive: bool = False
    internode_ratio: float = 0.0

    def intranode_slowdown(self, ranks: int) -> float:
        """``deepep_slowdown`` of this routing's ``intranode_ratio`` over a group of ``ranks`` GPUs in one node."""
        return deepep_slowdown(self.intranode_ratio, ranks)

    def internode_slowdown(self) -> float:
        """Time of DeepEP's network phase over NCCL's on the same NIC bytes: ``internode_ratio`` (NCCL's NIC rate
        over DeepEP's measured one, collectives/deepep.py), at least 1; 1 without one (0: not DeepEP)."""
        return max(1.0, self.internode_ratio)

    def total_cv(self) -> float:
        """CV of tokens per expert, systematic and sampling parts in quadrature (module docstring)."""
        return math.hypot(self.load_cv, sampling_cv(self.experts, self.top_k, self.tokens))

    def busiest_load(self, groups: int) -> float:
        """Routed tokens of the busiest of ``groups`` equal groups of the experts relative to the mean (>= 1):
        1 + CV / sqrt(E / G) z(G), capped at the capacity factor (tokens beyond are dropped; Fedus et al. 2021,
        Switch Transformer, section 2.2); 1 for one group."""
        load = 1.0 + self.total_cv() / math.sqrt(self.experts / groups) * expected_max_normal(groups)
        return load if self.capacity_factor is None else min(load, self.capacity_factor)

    def busiest_load_nodes(self, groups: int, nodes: int) -> tuple[float, ...]:
        """The busiest group's load (``busiest_load``) at ``nodes`` equally weighted nodes of its spread: the same
        1 + CV / sqrt(E / G) M, M the maximum of G standard normals, at M's mid-quantiles (``max_normal_quantiles``)
        each at least the mean (the busiest of groups sharing a fixed total never carries less than 1) and capped at
        the capacity factor, shifted together so that their mean is ``busiest_load`` (what the FLOP and bytes are
        sized by; without the clamp or the cap, a shift of their mean to z(G)). One node, ``busiest_load``, without
        spread (one group or CV 0)."""
        spread = self.total_cv() / math.sqrt(self.experts / groups)
        mean = self.busiest_load(groups)
        if groups <= 1 or spread == 0.0:
            return (mean,)
        quantiles = max_normal_quantiles(groups, nodes)
        cap = math.inf if self.capacity_factor is None else self.capacity_factor
        if mean >= cap:   # the mean at the cap: every node there
            return (cap,) * len(quantiles)

        def at(shift: float) -> tuple[float, ...]:
            return tuple(min(max(1.0 + spread * (q + shift), 1.0), cap) for q in quantiles)

        # the clamped and capped mean rises with the shift, continuously, from 1 to the cap: bisect for busiest_load
        # from the unclamped shift (z(G) minus the quantiles' mean), where it lies unless a node was clamped or capped
        shift = expected_max_normal(groups) - sum(quantiles) / len(quantiles)
        nodes_at = at(shift)
        if min(nodes_at) > 1.0 and max(nodes_at) < cap:
            return nodes_at
        low, high = shift - 1.0, shift + 1.0
        while sum(at(low)) / len(quantiles) > mean:
            low -= 1.0
        while sum(at(high)) / len(quantiles) < mean:
            high += 1.0
        for _ in range(100):
            middle = (low + high) / 2
            if middle in (low, high):
                break
            low, high = (middle, high) if sum(at(middle)) / len(quantiles) < mean else (low, middle)
        return at((low + high) / 2)

    def network_load(self, nodes: int, local: int) -> float:
        """The busiest node's load over the busiest GPU's (<= 1) over ``nodes`` x ``local`` GPUs: what the network
        phase of DeepEP's all-to-all, whose receivers carry a node's tokens, carries of a size set by the busiest
        GPU (module docstring)."""
        return self.busiest_load(nodes) / self.busiest_load(nodes * local)

    def divides(self, nodes: int, local: int) -> bool:
        """Whether the experts split evenly over ``nodes`` x ``local`` GPUs (what the closed forms assume)."""
        return nodes >= 1 and local >= 1 and self.experts % (nodes * local) == 0

    def unit_hit(self, units: int) -> float:
        """Probability that a token reaches a given one of ``units`` equal units (GPUs or nodes) of E / units
        consecutive experts each: 1 - C(E - E/units, k) / C(E, k) uniformly; under group-limited routing (module
        docstring) a unit of c whole groups is reached when one of them is among the M chosen, 1 - C(G - c, M) /
        C(G, M), a unit inside a group with its group's M / G times the chance that the group's own expert or one of
        the other k - M lands on it, each at most the uniform figure (a limit on the groups can only gather a token's
        experts: with M near k the unlimited top k already lie in at most M groups nearly always, and routing is the
        uniform one, which the one-expert-per-chosen-group form over-spreads; module docstring); with k <= M, or
        groups that neither hold nor split into whole units, uniform routing (the limit does not bind; an upper
        bound). The round-robin gate's block
        spans ``consecutive_units`` of them."""
        if self.consecutive:
            return consecutive_units(self.experts, self.top_k, units) / units
        share = self.experts // units
        unlimited = hit_probability(self.experts, self.top_k, share)
        groups, limit = self.groups, self.group_limit
        if groups is None or limit is None or limit >= groups or self.top_k <= limit:
            return unlimited
        if groups % units == 0:
            held = groups // units
            return min(unlimited, 1.0 - math.comb(groups - held, limit) / math.comb(groups, limit))
        if units % groups == 0:
            per_group = self.experts // groups
            others = hit_probability(limit * (per_group - 1), self.top_k - limit, share)
            return min(unlimited, limit / groups * (1.0 - (1.0 - share / per_group) * (1.0 - others)))
        return unlimited

    def node_hit(self, nodes: int) -> float:
        """Probability that a token reaches a given node of ``nodes`` (``unit_hit``)."""
        return self.unit_hit(nodes)

    def gpu_hit(self, nodes: int, local: int) -> float:
        """Probability that a token reaches a given GPU of ``nodes`` x ``local`` (``unit_hit``)."""
        return self.unit_hit(nodes * local)

    def distinct_nodes(self, nodes: int) -> float:
        """Expected distinct nodes a token reaches, its own among them when it holds one of its experts:
        N x (1 - C(E - E/N, k) / C(E, k)), at most M."""
        return nodes * self.node_hit(nodes)

    def distinct_gpus(self, nodes: int, local: int) -> float:
        """Expected distinct GPUs a token reaches."""
        return nodes * local * self.gpu_hit(nodes, local)
