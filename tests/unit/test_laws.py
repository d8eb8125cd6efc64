"""Scaling laws against values written out by hand from the papers' formulas and constants, and the
closed-form compute-optimal allocation against a numerical minimisation."""

import math

import numpy as np
import pytest

from simcluster.core.errors import ScenarioError
from simcluster.outcomes import laws

PF_DAY_FLOP = 1e15 * 86400


def golden_section_min(f, lo, hi, tol=1e-12):
    """Minimum of a unimodal f on [lo, hi] by golden-section search (no scipy)."""
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    while b - a > tol:
        if f(c) < f(d):
            b, d = d, c
            c = b - inv_phi * (b - a)
        else:
            a, c = c, d
            d = a + inv_phi * (b - a)
    return (a + b) / 2.0


# ---- Chinchilla (Hoffmann et al. 2022, approach 3) and the Besiroglu et al. 2024 refit ---------------------
def test_chinchilla_approach3_at_70b_params_and_1_4t_tokens_matches_the_paper_formula():
    expected = 1.69 + 406.4 / 70e9**0.34 + 410.7 / 1.4e12**0.28
    assert laws.get("chinchilla").loss(70e9, 1.4e12) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(1.937, abs=1e-3)  # hand arithmetic: 1.69 + 0.0835 + 0.1631


def test_chinchilla_refit_at_70b_params_and_1_4t_tokens_matches_besiroglu_constants():
    expected = 1.8172 + 482.01 / 70e9**0.3478 + 2085.43 / 1.4e12**0.3658
    assert laws.get("chinchilla-refit").loss(70e9, 1.4e12) == pytest.approx(expected, rel=1e-12)


def test_custom_law_evaluates_its_own_coefficients():
    law = laws.custom(E=2.0, A=100.0, B=1000.0, alpha=0.5, beta=0.25)
    assert law.loss(1e4, 1e8) == pytest.approx(2.0 + 100.0 / 100.0 + 1000.0 / 100.0)


def test_chinchilla_loss_accepts_arrays_elementwise():
    law = laws.get("chinchilla")
    n = np.array([1e9, 1e10, 1e11])
    assert np.allclose(law.loss(n, 1e12), [law.loss(float(x), 1e12) for x in n])


# ---- Kaplan et al. 2020 ------------------------------------------------------------------------------------
def test_kaplan_joint_law_matches_eq_1_5_by_hand():
    expected = ((6.4e13 / 1e9) ** (0.076 / 0.103) + 1.8e13 / 1e10) ** 0.103
    assert laws.get("kaplan").loss(1e9, 1e10) == pytest.approx(expected, rel=1e-12)


def test_kaplan_single_variable_laws_match_eqs_1_1_to_1_3():
    kaplan = laws.get("kaplan")
    assert kaplan.loss_of_params(1e9) == pytest.approx((8.8e13 / 1e9) ** 0.076)
    assert kaplan.loss_of_tokens(1e10) == pytest.approx((5.4e13 / 1e10) ** 0.095)
    # one PF-day on the compute-efficient frontier: (3.1e8)^0.05 = 2.658
    assert kaplan.loss_of_compute(PF_DAY_FLOP) == pytest.approx(3.1e8**0.05, rel=1e-12)
    assert kaplan.loss_of_compute(PF_DAY_FLOP) == pytest.approx(2.658, abs=1e-3)


def test_kaplan_critical_batch_at_loss_3_is_about_1_1m_tokens():
    expected = 2.0e8 / 3.0 ** (1 / 0.21)  # eq. 1.4
    assert laws.get("kaplan").critical_batch_tokens(3.0) == pytest.approx(expected)
    assert 1.0e6 < expected < 1.1e6


def test_kaplan_joint_law_tends_to_its_params_only_limit_with_unlimited_data():
    kaplan = laws.get("kaplan")
    assert kaplan.loss(1e9, 1e30) == pytest.approx(kaplan.loss_floor(1e9), rel=1e-9)
    assert kaplan.loss_floor(1e9) == pytest.approx((6.4e13 / 1e9) ** 0.076)


# ---- compute-optimal allocation ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", laws.LAW_NAMES)
@pytest.mark.parametrize("flop", [1e19, 5.76e23, 1e27])
def test_closed_form_optimum_matches_numerical_minimisation_along_c_equals_6nd(name, flop):
    law = laws.get(name)
    log_n = golden_section_min(lambda x: law.loss(math.exp(x), flop / (6 * math.exp(x))),
                               math.log(1e3), math.log(flop / 6 / 1e3))
    best = law.optimal(flop)
    assert math.log(best.params) == pytest.approx(log_n, abs=1e-5)
    assert 6 * best.params * best.tokens == pytest.approx(flop, rel=1e-12)
    assert best.loss == pytest.approx(law.loss(math.exp(log_n), flop / (6 * math.exp(log_n))), rel=1e-12)


def test_chinchilla_optimum_follows_hoffmann_eq_4_written_out():
    A, B, alpha, beta = 406.4, 410.7, 0.34, 0.28
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    flop = 1e24
    best = laws.get("chinchilla").optimal(flop)
    assert best.params == pytest.approx(G * (flop / 6) ** (beta / (alpha + beta)), rel=1e-12)
    assert best.tokens == pytest.approx((flop / 6) ** (alpha / (alpha + beta)) / G, rel=1e-12)


def test_optimal_params_grow_as_c_to_the_beta_over_alpha_plus_beta():
    law = laws.get("chinchilla")
    ratio = law.optimal(1e25).params / law.optimal(1e24).params
    assert ratio == pytest.approx(10 ** (0.28 / 0.62), rel=1e-12)


def test_refit_gives_about_20_tokens_per_param_at_chinchilla_compute():
    # Besiroglu et al. 2024: their refit is consistent with Chinchilla's ~20 tokens/param (70B on 1.4T)
    assert 15 < laws.tokens_per_param("chinchilla-refit", 6 * 70e9 * 1.4e12) < 30


@pytest.mark.parametrize("name", laws.LAW_NAMES)
def test_flop_for_optimal_params_and_tokens_invert_the_allocation(name):
    law = laws.get(name)
    best = law.optimal(3e23)
    assert law.flop_for_optimal_params(best.params) == pytest.approx(3e23, rel=1e-9)
    assert law.flop_for_optimal_tokens(best.tokens) == pytest.approx(3e23, rel=1e-9)


# ---- inverse: tokens to a target ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", laws.LAW_NAMES)
def test_tokens_for_loss_reaches_exactly_that_loss(name):
    law = laws.get(name)
    target = law.loss(7e10, 2e12)
    assert law.tokens_for_loss(7e10, target) == pytest.approx(2e12, rel=1e-9)


def test_target_below_the_irreducible_loss_is_a_scenario_error():
    with pytest.raises(ScenarioError) as err:
        laws.get("chinchilla").tokens_for_loss(70e9, 1.5)
    assert err.value.field == "target_loss"
    assert "1.69" in err.value.message


def test_target_between_e_and_the_finite_model_floor_is_refused_with_that_floor():
    law = laws.get("chinchilla")
    floor = 1.69 + 406.4 / 1e9**0.34  # a 1B model can never go below this
    with pytest.raises(ScenarioError, match="target_loss"):
        law.tokens_for_loss(1e9, (1.69 + floor) / 2)


# ---- bad parameters ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["alpha", "beta", "A", "B"])
def test_non_positive_coefficients_of_a_custom_law_name_the_parameter(field):
    values = {"E": 1.0, "A": 1.0, "B": 1.0, "alpha": 0.3, "beta": 0.3, field: -0.3}
    with pytest.raises(ScenarioError) as err:
        laws.custom(**values)
    assert err.value.field == f"custom.{field}"


@pytest.mark.parametrize("params,tokens,field", [
    (0, 1e9, "params"), (-1e9, 1e9, "params"), (1e9, 0, "tokens"), (float("nan"), 1e9, "params"),
    (1e9, float("inf"), "tokens")])
def test_non_positive_or_non_finite_n_and_d_are_refused(params, tokens, field):
    with pytest.raises(ScenarioError) as err:
        laws.get("chinchilla").loss(params, tokens)
    assert err.value.field == field


def test_non_positive_compute_is_refused():
    with pytest.raises(ScenarioError, match="flop"):
        laws.get("kaplan").optimal(0.0)


def test_unknown_law_lists_the_known_ones():
    with pytest.raises(ScenarioError, match="chinchilla-refit"):
        laws.get("gpt-5")


# ---- Lu 2025 -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("years", [0.0, 0.5, 1.0, 3.0, 10.0])
def test_relative_loss_without_efficiency_gain_is_one_plus_t_to_minus_kappa(years):
    assert laws.relative_loss(years, 0.0, 0.05) == pytest.approx((1 + years) ** -0.05, rel=1e-15)


def test_relative_loss_at_gamma_1_after_one_year_by_hand():
    # (2^1 - 1) / (1 * ln 2) = 1/ln 2
    assert laws.relative_loss(1.0, 1.0, 0.05) == pytest.approx((1 + 1 / math.log(2)) ** -0.05, rel=1e-14)


def test_relative_loss_is_continuous_as_gamma_goes_to_zero_without_warnings():
    with np.errstate(all="raise"):
        at_zero = laws.relative_loss(5.0, 0.0, 0.05)
        for gamma in (1e-300, 1e-15, 1e-9, 1e-7):
            assert laws.relative_loss(5.0, gamma, 0.05) == pytest.approx(at_zero, rel=1e-6)


def test_efficiency_doubles_every_one_over_gamma_years():
    assert laws.efficiency(0.5, 2.0, e0=3.0) == pytest.approx(6.0)


def test_negative_kappa_or_gamma_or_time_name_the_parameter():
    cases = (({"kappa": -0.05}, "kappa"), ({"gamma": -1.0}, "gamma"), ({"years": -1.0}, "years"))
    for kwargs, field in cases:
        args = {"years": 1.0, "gamma": 1.0, "kappa": 0.05, **kwargs}
        with pytest.raises(ScenarioError) as err:
            laws.relative_loss(**args)
        assert err.value.field == field


# ---- McCandlish et al. 2018 --------------------------------------------------------------------------------
def test_at_the_critical_batch_steps_and_compute_are_both_twice_their_minimum():
    assert laws.min_steps(1000.0, 4e6, 4e6) == pytest.approx(500.0)
    assert laws.min_compute(1e21, 4e6, 4e6) == pytest.approx(5e20)


@pytest.mark.parametrize("batch", [1e4, 1e6, 4e6, 1e8])
def test_steps_and_compute_obey_the_mccandlish_tradeoff_hyperbola(batch):
    b_crit = 4e6
    steps = laws.steps_at_batch(100.0, batch, b_crit)
    compute = laws.compute_at_batch(1e20, batch, b_crit)
    assert (steps / 100.0 - 1) * (compute / 1e20 - 1) == pytest.approx(1.0)
    assert laws.min_steps(steps, batch, b_crit) == pytest.approx(100.0)
    assert laws.min_compute(compute, batch, b_crit) == pytest.approx(1e20)
