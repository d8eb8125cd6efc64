"""Properties of the scaling laws that must hold for any valid input."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from simcluster.outcomes import laws

years = st.floats(min_value=1e-3, max_value=30.0)
gammas = st.floats(min_value=0.0, max_value=4.0)
kappas = st.floats(min_value=laws.MIN_EXPONENT, max_value=laws.MAX_EXPONENT)
log_params = st.floats(min_value=math.log(1e7), max_value=math.log(1e13))
log_tokens = st.floats(min_value=math.log(1e8), max_value=math.log(1e15))
log_flop = st.floats(min_value=math.log(1e18), max_value=math.log(1e28))
law_names = st.sampled_from(laws.LAW_NAMES)


@settings(max_examples=200)
@given(t=years, g1=gammas, g2=gammas, kappa=kappas)
def test_relative_loss_never_increases_with_faster_efficiency_doubling(t, g1, g2, kappa):
    low, high = sorted((g1, g2))
    assert laws.relative_loss(t, high, kappa) <= laws.relative_loss(t, low, kappa) * (1 + 1e-12)


@given(t=years, gamma=gammas, kappa=kappas)
def test_relative_loss_lies_in_zero_one_and_at_or_below_the_static_limit(t, gamma, kappa):
    r = laws.relative_loss(t, gamma, kappa)
    assert 0.0 < r <= 1.0
    assert r <= (1 + t) ** -kappa * (1 + 1e-12)


@given(t1=years, t2=years, gamma=gammas, kappa=kappas)
def test_relative_loss_never_increases_with_time(t1, t2, gamma, kappa):
    early, late = sorted((t1, t2))
    assert laws.relative_loss(late, gamma, kappa) <= laws.relative_loss(early, gamma, kappa) * (1 + 1e-12)


@given(t=years, kappa=kappas, tiny=st.floats(min_value=0.0, max_value=1e-9))
def test_relative_loss_approaches_one_plus_t_to_minus_kappa_as_gamma_vanishes(t, kappa, tiny):
    assert math.isclose(laws.relative_loss(t, tiny, kappa), (1 + t) ** -kappa, rel_tol=1e-7)


shifts = st.floats(min_value=-3.0, max_value=3.0).filter(lambda x: abs(x) > 1e-3)


@given(name=law_names, c=log_flop, shift=shifts)
def test_no_other_split_of_the_budget_beats_the_closed_form_optimum(name, c, shift):
    law = laws.get(name)
    flop = math.exp(c)
    best = law.optimal(flop)
    other_n = best.params * math.exp(shift)
    assert law.loss(other_n, flop / (6 * other_n)) >= best.loss


@given(name=law_names, n=log_params, d1=log_tokens, d2=log_tokens)
def test_loss_never_increases_with_more_tokens(name, n, d1, d2):
    law = laws.get(name)
    few, many = sorted((d1, d2))
    assert law.loss(math.exp(n), math.exp(many)) <= law.loss(math.exp(n), math.exp(few))


@given(name=law_names, n1=log_params, n2=log_params, d=log_tokens)
def test_loss_never_increases_with_more_parameters(name, n1, n2, d):
    law = laws.get(name)
    small, large = sorted((n1, n2))
    assert law.loss(math.exp(large), math.exp(d)) <= law.loss(math.exp(small), math.exp(d))


@given(name=law_names, n=log_params, d=log_tokens)
def test_tokens_for_loss_inverts_the_law(name, n, d):
    law = laws.get(name)
    target = law.loss(math.exp(n), math.exp(d))
    if target - law.loss_floor(math.exp(n)) > 1e-9 * target:  # resolvable above the floor in double precision
        assert math.isclose(law.tokens_for_loss(math.exp(n), target), math.exp(d), rel_tol=1e-4)
