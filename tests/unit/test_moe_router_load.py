"""The router's systematic spread of tokens per expert (`model.moe.load: measured`): the closed forms that turn a
published router statistic into a coefficient of variation (core/token_routing.py), the reference router chosen by
granularity (workload/moe.py, data/moe.yaml `load.references`), and the reading of a logged Switch statistic against
a simulated router of Gaussian logits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simcluster.core.token_routing import cv_from_max_violation, cv_from_switch_balance, expected_max_normal
from simcluster.spec import model
from simcluster.workload import moe

# NVIDIA/Megatron-LM#756: Mixtral 8x7B fine-tuned from its released checkpoint in Megatron-Core, iterations 43-45 and
# 57-59 (the plateau), `load_balancing_loss` (the Switch statistic per layer and microbatch over its coefficient).
MIXTRAL_LOGGED = (1.019746, 1.020033, 1.018004, 1.015150, 1.020851, 1.013638)
# Wang et al. 2024 (arXiv 2408.15664), Table 1: MaxVio_global of the 1B auxiliary-loss DeepSeekMoE, 64 experts.
DEEPSEEKMOE_MAXVIO = 0.72


def test_switch_statistic_is_one_plus_the_covariance_of_the_routed_and_probability_shares():
    """E sum_i f_i P_i with f_i = (1 + d_i) / E, P_i = (1 + e_i) / E (both summing to 1) is 1 + mean(d e): shares
    drawn at random, the identity holds exactly; with e = c d the CV of the routed shares is sqrt((L - 1) / c)."""
    rng = np.random.default_rng(0)
    for experts in (8, 64):
        d = rng.normal(0.0, 0.2, experts)
        d -= d.mean()
        for c in (0.5, 1.0, 1.3):
            f, p = (1 + d) / experts, (1 + c * d) / experts
            statistic = experts * float(np.sum(f * p))
            assert statistic == pytest.approx(1 + float(np.mean(d * c * d)), rel=1e-12)
            cv = math.sqrt(float(np.mean(d * d)))
            assert cv_from_switch_balance(statistic, c) == pytest.approx(cv, rel=1e-9)
    assert cv_from_switch_balance(1.0) == 0.0
    with pytest.raises(ValueError):
        cv_from_switch_balance(0.99)


def test_max_violation_over_e_experts_is_cv_times_the_expected_maximum_of_e_normals():
    """MaxVio = CV z(E): 0.72 over 64 experts is CV 0.72 / 2.3366 (Blom: Phi^-1(63.625 / 64.25))."""
    assert cv_from_max_violation(DEEPSEEKMOE_MAXVIO, 64) == pytest.approx(0.72 / 2.3366, rel=1e-4)
    assert cv_from_max_violation(0.0, 8) == 0.0
    with pytest.raises(ValueError):
        cv_from_max_violation(0.5, 1)


def _gaussian_router(sigma: float, bias: np.ndarray, top_k: int, tokens: int = 300_000,
                     seed: int = 1) -> tuple[float, float, float]:
    """(Switch statistic as Megatron-Core computes it, CV of the routed shares, mean top-1 probability) of a router
    whose logits are an expert's lasting offset plus independent normal noise of ``sigma`` per token and expert."""
    rng = np.random.default_rng(seed)
    experts = bias.size
    logits = rng.normal(0.0, sigma, (tokens, experts)) + bias
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    chosen = np.argpartition(-logits, top_k - 1, axis=1)[:, :top_k]
    routed = np.bincount(chosen.ravel(), minlength=experts) / (tokens * top_k)    # f_i, summing to 1
    statistic = experts * float(np.sum(routed * probs.mean(axis=0)))
    cv = float(np.sqrt(np.mean((experts * routed - 1.0) ** 2)))
    return statistic, cv, float(probs.max(axis=1).mean())


@pytest.mark.parametrize("sigma, top1, low, high", [
    (1.0, 0.36, 0.78, 0.86),    # softer router: probability shares move less than routed shares, c = 0.67
    (2.0, 0.57, 0.96, 1.04),    # c = 1: the reading data/moe.yaml takes
    (3.0, 0.69, 1.02, 1.10),    # sharper: c = 1.12
])
def test_the_logged_statistic_read_at_c_1_gives_the_routed_spread_of_a_gaussian_logit_router(sigma, top1, low, high):
    """8 experts, top-2, lasting per-expert logit offsets giving a routed-share CV near Mixtral's 0.14: sqrt(L - 1)
    is sqrt(c) times the routed CV, c from 0.67 to 1.12 for mean top-1 probabilities 0.36 to 0.69, so Mixtral's
    logged 1.0179 means a routed CV of 0.13 to 0.16 (data/moe.yaml)."""
    bias = 0.11 * sigma * np.array([-1.5, -1.0, -0.5, -0.2, 0.2, 0.5, 1.0, 1.5])
    statistic, cv, top1_prob = _gaussian_router(sigma, bias, top_k=2)
    assert top1_prob == pytest.approx(top1, abs=0.02)
    assert 0.10 < cv < 0.18
    assert low < cv_from_switch_balance(statistic) / cv < high


def _one_expert_a_rank(experts: int, top_k: int = 2) -> float:
    """The busiest of ``experts`` one-expert ranks under the measured default, sampling left out."""
    return moe.busiest_rank_load(model.MoESpec(experts=experts, top_k=top_k, ffn_hidden=128), experts)


def test_a_coarse_router_takes_mixtrals_logged_spread_a_fine_grained_one_the_64_expert_maxvio():
    """8 experts (Mixtral, Grok-1) and 16 take CV sqrt(mean logged - 1) = 0.134: the busiest of 8 one-expert ranks
    at 1.19x, not the 1.44x of the 64-expert reference carried per expert; 32 and more take MaxVio / z(64)."""
    coarse = math.sqrt(sum(MIXTRAL_LOGGED) / len(MIXTRAL_LOGGED) - 1.0)
    fine = DEEPSEEKMOE_MAXVIO / expected_max_normal(64)
    assert coarse == pytest.approx(0.1338, abs=1e-4)
    assert _one_expert_a_rank(8) == pytest.approx(1 + coarse * expected_max_normal(8), rel=1e-12)
    assert _one_expert_a_rank(8) == pytest.approx(1.192, abs=1e-3)
    assert _one_expert_a_rank(16, 4) == pytest.approx(1 + coarse * expected_max_normal(16), rel=1e-12)
    assert _one_expert_a_rank(32, 4) == pytest.approx(1 + fine * expected_max_normal(32), rel=1e-12)
    assert _one_expert_a_rank(64, 6) == pytest.approx(1 + DEEPSEEKMOE_MAXVIO, rel=1e-12)
    for preset, cv in (("mixtral-8x7b", coarse), ("mixtral-8x22b", coarse), ("grok-1", coarse),
                       ("qwen3-235b-a22b", fine), ("llama4-maverick", fine)):
        assert moe.load_cv(model.preset(preset).moe) == pytest.approx(cv, rel=1e-12), preset


def test_the_reference_is_the_nearest_in_experts_on_a_log_scale():
    """8 and 64 measured: the geometric midpoint is 22.6 experts."""
    assert [moe.reference_router(e)["experts"] for e in (2, 8, 16, 22, 23, 32, 64, 128, 256)] == \
        [8, 8, 8, 8, 64, 64, 64, 64, 64]


def test_a_number_or_balanced_still_overrides_the_reference():
    """`model.moe.load` as a CV or `balanced` (0) is taken as given whatever the granularity."""
    for experts in (8, 128):
        assert moe.load_cv(model.MoESpec(experts=experts, top_k=2, ffn_hidden=128, load=0.05)) == 0.05
        assert moe.load_cv(model.MoESpec(experts=experts, top_k=2, ffn_hidden=128, load="balanced")) == 0.0
    assert moe.busiest_rank_load(model.MoESpec(experts=8, top_k=2, ffn_hidden=128, load=0.05), 8) == \
        pytest.approx(1 + 0.05 * expected_max_normal(8), rel=1e-12)
