"""Mixture-of-experts invariants whatever the shape (hypothesis): model FLOP are those of the active parameters,
more routed experts per token cost more, the busiest rank's load never falls below the mean, and the routed-expert
state per GPU falls as expert parallelism grows."""

from hypothesis import given, settings
from hypothesis import strategies as st

from simcluster.parallel import memory
from simcluster.spec.model import MoESpec, TransformerSpec
from simcluster.workload import moe

experts = st.sampled_from([8, 16, 64, 128])
settings_ = settings(max_examples=30, deadline=None)


def spec(n_experts, top_k, shared=0, dense=0):
    return TransformerSpec(layers=4, hidden=256, heads=4, vocab=1000, mlp="swiglu", norm="rmsnorm", dropout=False,
                           tied_embeddings=False,
                           moe={"experts": n_experts, "top_k": top_k, "ffn_hidden": 128, "shared_experts": shared,
                                "dense_layers": dense})


@settings_
@given(experts, st.integers(1, 4), st.integers(0, 2), st.integers(0, 4))
def test_moe_gemm_flop_grow_with_top_k_and_never_with_idle_experts(n_experts, top_k, shared, dense):
    """Routed experts a token does not visit cost nothing: doubling the experts at the same top_k keeps the expert
    GEMM FLOP, while one more expert per token adds 6 h F per token per MoE layer, forward and backward."""
    s, b = 512, 2
    base = moe.model_flop_per_step(spec(n_experts, top_k, shared, dense), s, b)
    wider = moe.model_flop_per_step(spec(2 * n_experts, top_k, shared, dense), s, b)
    deeper = moe.model_flop_per_step(spec(n_experts, top_k + 1, shared, dense), s, b)
    router_growth = 3 * 2 * 256 * n_experts * s * b * (4 - dense)    # the router's h x E GEMM doubles
    assert abs(wider - base - router_growth) <= 1e-9 * base
    assert abs(deeper - base - 3 * 6 * 256 * 128 * s * b * (4 - dense)) <= 1e-9 * base


@settings_
@given(experts, st.sampled_from([1, 2, 4, 8]), st.floats(0, 2), st.one_of(st.none(), st.floats(1, 4)))
def test_busiest_rank_load_is_at_least_the_mean_and_at_most_the_capacity(n_experts, ep, cv, capacity):
    load = moe.busiest_rank_load(MoESpec(experts=n_experts, top_k=1, ffn_hidden=8, load=cv,
                                         capacity_factor=capacity), ep)
    assert load >= 1.0 or (capacity is not None and load == capacity)
    if capacity is not None:
        assert load <= capacity


@settings_
@given(experts, st.integers(1, 3))
def test_expert_parameters_per_gpu_halve_with_each_doubling_of_ep(n_experts, doublings):
    model = spec(n_experts, 1)
    ep = 2 ** doublings
    if n_experts % ep:
        return
    one = memory.stage_expert_params(model, 1, 0, 1, 1)
    assert memory.stage_expert_params(model, 1, 0, ep, 1) * ep == one
