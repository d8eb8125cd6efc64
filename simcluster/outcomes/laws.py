"""Scaling laws: loss as a function of parameters N and training tokens D, the compute-optimal allocation for
a FLOP budget C = 6 N D, the time-aware relative loss of Lu 2025 and the batch-size trade-off of McCandlish et
al. 2018.

Pure and deterministic; constants and their sources live in ``simcluster/data/scaling_laws.yaml``. Losses are
in nats per token on each paper's own data: compare them within one law, never across laws.

Every function accepts floats or numpy arrays (the plots evaluate whole curves) and raises ``ScenarioError``
naming the parameter when a value is outside the law's domain (non-positive N, D or C, text, exponents outside
[MIN_EXPONENT, MAX_EXPONENT], a target loss at or below what the law can ever reach) or a result would overflow a
float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError, did_you_mean, quoted

# Training FLOP per parameter per token: forward 2, backward 4 (Kaplan et al. 2020, sec. 2.1, C ~ 6 N D).
FLOP_PER_PARAM_TOKEN = 6.0

LAW_NAMES = ("chinchilla", "chinchilla-refit", "kaplan")
# The law every command uses unless told otherwise (compare, sweep, laws eval/optimal/loss-vs-time, economics):
# Besiroglu et al. 2024's refit of Chinchilla's approach 3, which reproduces the paper's other two approaches.
DEFAULT_LAW = "chinchilla-refit"


def _as_floats(value, field: str, condition: str) -> np.ndarray:
    """``value`` as a float array; text, None, booleans and empty lists are ScenarioErrors naming ``field``
    (``np.asarray('x', dtype=float)`` raised a bare ValueError, and ``True`` read as 1)."""
    if isinstance(value, bool | np.bool_ | str | bytes) or value is None:
        raise ScenarioError(field, f"must be a finite number {condition}, got {_shown(value)}")
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ScenarioError(field, f"must be a finite number {condition}, got {_shown(value)}") from None
    if array.size == 0:
        raise ScenarioError(field, f"must be a finite number {condition}, got an empty list")
    return array


def _shown(value) -> str:
    """A value as an error message shows it: numbers with ``:g`` (not ``np.float64(0.0)``), the rest short."""
    if isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool | np.bool_):
        return f"{float(value):g}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_positive(value, field: str):
    """``value`` as float or array, all finite and > 0, else a ScenarioError naming ``field``."""
    array = _as_floats(value, field, "> 0")
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ScenarioError(field, f"must be a finite number > 0, got {_shown(value)}")
    return array if array.ndim else float(array)


def check_non_negative(value, field: str):
    array = _as_floats(value, field, ">= 0")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ScenarioError(field, f"must be a finite number >= 0, got {_shown(value)}")
    return array if array.ndim else float(array)


# Exponents of a power law of loss (alpha, beta of L = E + A/N^alpha + B/D^beta, Kaplan's aN, aD, aC, aB, Lu's
# kappa): every published language-model fit lies between 0.05 and 0.37 -- Kaplan et al. 2020 aC = 0.050,
# aN = 0.076, aD = 0.095/0.103, aB = 0.21; Hoffmann et al. 2022 alpha = 0.34, beta = 0.28; Besiroglu et al. 2024
# alpha = 0.3478, beta = 0.3658 (data/scaling_laws.yaml); Muennighoff et al. 2023's data-constrained fit 0.353.
# The upper bound 1 is a plausibility bound for language models, not a law of physics: 1 is the exponent of the
# variance-limited regime (Bahri et al. 2021, "Explaining neural scaling laws", arXiv:2102.06701); the
# resolution-limited exponent is ~4/d for data of intrinsic dimension d (Sharma & Kaplan 2020, arXiv:2004.10802),
# above 1 only for d < 4, where Kaplan's aN = 0.076 puts text near d ~ 50. 50 was accepted, and a loss term N^-50
# underflows to 0 at any N > 1e6. Below 0.01 (a fifth of the smallest published, Kaplan's 0.050) the term barely
# moves over any range of N or D. Allocation exponents (N_opt ~ C^a, a ~ 0.5) and Muennighoff's decay constants
# R*_N, R*_D are not loss exponents and are not checked here.
MIN_EXPONENT = 0.01
MAX_EXPONENT = 1.0


def check_exponent(value, field: str) -> float:
    """A power-law exponent within [MIN_EXPONENT, MAX_EXPONENT], else a ScenarioError naming ``field``."""
    array = _as_floats(value, field, f"from {MIN_EXPONENT:g} to {MAX_EXPONENT:g}")
    if array.ndim or not MIN_EXPONENT <= float(array) <= MAX_EXPONENT:  # NaN fails the comparison too
        raise ScenarioError(field, f"expected an exponent from {MIN_EXPONENT:g} to {MAX_EXPONENT:g}, got "
                            f"{_shown(value)} (published language-model fits: 0.05 to 0.37, Kaplan 2020 to Besiroglu "
                            "2024)")
    return float(array)


def _finite_result(value, field: str, what: str, positive: bool = True):
    """``value`` if every element is finite (and > 0 when ``positive``: a count that underflowed to 0), else a
    ScenarioError naming ``field``: ``what`` overflows (or underflows) a float for these inputs."""
    array = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(array)) or (positive and np.any(array <= 0)):
        raise ScenarioError(field, f"{what} is outside the range of a float for these inputs (got "
                            f"{_shown(float(np.max(array)) if array.size else value)})")
    return value


def _above_floor(law, params, target_loss, model: str = "model", note: str = "") -> tuple[float, float, float]:
    """(params, target_loss, floor) checked: a target at or below the law's unlimited-data loss of ``params`` is a
    user error that names the floor."""
    params = check_positive(params, "params")
    target_loss = check_positive(target_loss, "target_loss")
    floor = law.loss_floor(params)
    if target_loss <= floor:
        raise ScenarioError("target_loss", f"{target_loss:g} is not above {floor:.4g}, the loss a "
                            f"{params:.3g}-parameter {model} reaches with unlimited data under {law.name}{note}; "
                            "lower targets need a larger model")
    return params, target_loss, floor


def _scalar_or_array(array):
    return float(array) if np.ndim(array) == 0 else array


def _ratio_power(scale: float, value, name: str, exponent: float):
    """(scale / value)^exponent, Kaplan et al. 2020's single-variable power law, with ``value`` checked > 0."""
    return _scalar_or_array(np.power(scale / check_positive(value, name), exponent))


@dataclass(frozen=True)
class Allocation:
    """A compute-optimal split of a FLOP budget: parameters, tokens and the loss the law predicts for them."""

    flop: float
    params: float
    tokens: float
    loss: float

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params


@dataclass(frozen=True)
class ParametricLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2), N total parameters, D tokens.

    Chinchilla approach 3, the Besiroglu et al. 2024 refit and any user-defined fit share this form.
    """

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str = "user-defined"
    non_embedding: bool = False  # N counts all parameters (Hoffmann et al. include embeddings)

    def __post_init__(self):
        check_non_negative(self.E, f"{self.name}.E")
        check_positive(self.A, f"{self.name}.A")
        check_positive(self.B, f"{self.name}.B")
        check_exponent(self.alpha, f"{self.name}.alpha")
        check_exponent(self.beta, f"{self.name}.beta")

    @property
    def irreducible_loss(self) -> float:
        """The entropy of text as the law sees it: the loss of an infinite model trained on infinite data."""
        return self.E

    def loss(self, params, tokens):
        n = check_positive(params, "params")
        d = check_positive(tokens, "tokens")
        # a term that underflows to 0 beside E is exact to a float's precision; one that overflows is refused
        model_term = _finite_result(self.A / np.power(n, self.alpha), f"{self.name}.A", "the loss term A/N^alpha",
                                    positive=False)
        data_term = _finite_result(self.B / np.power(d, self.beta), f"{self.name}.B", "the loss term B/D^beta",
                                   positive=False)
        return _scalar_or_array(_finite_result(self.E + model_term + data_term, f"{self.name}.A/B", "the loss",
                                               positive=False))

    def loss_floor(self, params):
        """Loss of ``params`` parameters trained on unlimited data: E + A / N^alpha."""
        n = check_positive(params, "params")
        return _scalar_or_array(self.E + self.A / np.power(n, self.alpha))

    def tokens_for_loss(self, params: float, target_loss: float) -> float:
        """Tokens a model of ``params`` parameters needs to reach ``target_loss``: invert B / D^beta."""
        params, target_loss, floor = _above_floor(self, params, target_loss, note=f" (irreducible E = {self.E:g})")
        # in logarithms: (B / (L - floor))^(1/beta) raised OverflowError for a target just above the floor
        log_tokens = (math.log(self.B) - math.log(target_loss - floor)) / self.beta
        return _tokens_from_log(log_tokens, target_loss)

    # ---- compute-optimal allocation ------------------------------------------------------------------------
    # Minimise L(N, C/(6N)) over N: dL/dN = -alpha A N^(-alpha-1) + beta B (C/6)^(-beta) N^(beta-1) = 0 gives
    # N^(alpha+beta) = (alpha A / (beta B)) (C/6)^beta, i.e. Hoffmann et al. 2022 eq. 4:
    #   N_opt = G (C/6)^a,  D_opt = G^-1 (C/6)^b,  G = (alpha A / (beta B))^(1/(alpha+beta)),
    #   a = beta/(alpha+beta),  b = alpha/(alpha+beta).
    # L is convex in log N, so this stationary point is the minimum.
    @property
    def _G(self) -> float:
        # in logarithms: a large ratio alpha A / (beta B) to the power 1/(alpha + beta) raised OverflowError
        log_g = (math.log(self.alpha) + math.log(self.A) - math.log(self.beta) - math.log(self.B)) \
            / (self.alpha + self.beta)
        return _finite_result(math.exp(log_g) if log_g < _LOG_MAX else math.inf, f"{self.name}.A/B",
                              f"the allocation constant G = (alpha A / (beta B))^(1/(alpha+beta)) = e^{log_g:.4g}")

    @property
    def params_exponent(self) -> float:
        """a in N_opt ~ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def tokens_exponent(self) -> float:
        """b in D_opt ~ C^b."""
        return self.alpha / (self.alpha + self.beta)

    def optimal(self, flop) -> Allocation:
        c = check_positive(flop, "flop")
        params = self._G * np.power(c / FLOP_PER_PARAM_TOKEN, self.params_exponent)
        tokens = np.power(c / FLOP_PER_PARAM_TOKEN, self.tokens_exponent) / self._G
        _finite_result(params, "flop", f"the compute-optimal parameter count of {self.name}")
        _finite_result(tokens, "flop", f"the compute-optimal token count of {self.name}")
        return Allocation(flop=c, params=_scalar_or_array(params), tokens=_scalar_or_array(tokens),
                          loss=self.loss(params, tokens))

    def flop_for_optimal_params(self, params):
        """The budget whose compute-optimal model has ``params`` parameters (inverse of N_opt(C))."""
        n = check_positive(params, "params")
        return _scalar_or_array(FLOP_PER_PARAM_TOKEN * np.power(n / self._G, 1.0 / self.params_exponent))

    def flop_for_optimal_tokens(self, tokens):
        """The budget whose compute-optimal run uses ``tokens`` tokens (inverse of D_opt(C))."""
        d = check_positive(tokens, "tokens")
        return _scalar_or_array(FLOP_PER_PARAM_TOKEN * np.power(d * self._G, 1.0 / self.tokens_exponent))


@dataclass(frozen=True)
class KaplanLaw:
    """Kaplan et al. 2020: the joint law L(N, D) = ((Nc/N)^(aN/aD) + Dc/D)^aD (eq. 1.5), N non-embedding
    parameters, plus the single-variable laws L(N), L(D), L(C_min) (eqs. 1.1-1.3) and the critical
    batch (eq. 1.4)."""

    Nc: float
    Dc: float
    aN: float
    aD: float
    Nc_single: float
    aN_single: float
    Dc_single: float
    aD_single: float
    Cc_flop: float
    aC: float
    B_star_tokens: float
    aB: float
    name: str = "kaplan"
    source: str = ""
    non_embedding: bool = True  # N excludes embeddings (Kaplan et al. 2020, sec. 2.1)

    def __post_init__(self):
        for field in ("Nc", "Dc", "Nc_single", "Dc_single", "Cc_flop", "B_star_tokens"):
            check_positive(getattr(self, field), f"kaplan.{field}")
        for field in ("aN", "aD", "aN_single", "aD_single", "aC", "aB"):
            check_exponent(getattr(self, field), f"kaplan.{field}")

    irreducible_loss = 0.0  # the Kaplan laws are pure power laws: they tend to 0 (no entropy term)

    @property
    def _r(self) -> float:
        return self.aN / self.aD

    def loss(self, params, tokens):
        n = check_positive(params, "params")
        d = check_positive(tokens, "tokens")
        return _scalar_or_array(np.power(np.power(self.Nc / n, self._r) + self.Dc / d, self.aD))

    def loss_floor(self, params):
        """L(N, D -> inf) = (Nc/N)^aN with the joint fit's constants."""
        return _ratio_power(self.Nc, params, "params", self.aN)

    def loss_of_params(self, params):
        """Eq. 1.1: L(N) = (Nc/N)^aN for models trained to convergence on ample data."""
        return _ratio_power(self.Nc_single, params, "params", self.aN_single)

    def loss_of_tokens(self, tokens):
        """Eq. 1.2: L(D) = (Dc/D)^aD for large models trained with early stopping."""
        return _ratio_power(self.Dc_single, tokens, "tokens", self.aD_single)

    def loss_of_compute(self, flop_min):
        """Eq. 1.3: L(C_min) = (Cc/C_min)^aC on the compute-efficient frontier (batch << B_crit)."""
        return _ratio_power(self.Cc_flop, flop_min, "flop", self.aC)

    def critical_batch_tokens(self, loss):
        """Eq. 1.4: B_crit(L) = B_star / L^(1/aB), in tokens."""
        value = check_positive(loss, "loss")
        return _scalar_or_array(self.B_star_tokens / np.power(value, 1.0 / self.aB))

    def tokens_for_loss(self, params: float, target_loss: float) -> float:
        """Invert eq. 1.5 for D: D = Dc / (L^(1/aD) - (Nc/N)^(aN/aD))."""
        params, target_loss, floor = _above_floor(self, params, target_loss, model="(non-embedding) model")
        # L^(1/aD) - floor^(1/aD) = floor^(1/aD) expm1(log(L/floor)/aD): positive whenever L > floor (the plain
        # difference can round to 0 just above the floor), and in logarithms so that it cannot overflow
        x = math.log(target_loss / floor) / self.aD
        log_expm1 = x + math.log(-math.expm1(-x)) if x > 1.0 else math.log(math.expm1(x))
        log_excess = log_expm1 + math.log(floor) / self.aD
        return _tokens_from_log(math.log(self.Dc) - log_excess, target_loss)

    # ---- compute-optimal allocation under C = 6 N D --------------------------------------------------------
    # L is increasing in f(N) = (Nc/N)^r + 6 Dc N / C (r = aN/aD); f'(N) = 0 gives
    #   N_opt = (k C)^(1/(r+1)),  k = r Nc^r / (6 Dc),  D_opt = C / (6 N_opt),
    # so N_opt ~ C^(aD/(aN+aD)) = C^0.58. Derived here from eq. 1.5; Kaplan et al.'s own N ~ C^0.73
    # (eq. 1.7) comes from the L(N, S) early-stopping analysis, which does not train to a fixed D; the two
    # differ and this one is what eq. 1.5 implies.
    @property
    def _k(self) -> float:
        return self._r * self.Nc**self._r / (FLOP_PER_PARAM_TOKEN * self.Dc)

    @property
    def params_exponent(self) -> float:
        return 1.0 / (self._r + 1.0)

    @property
    def tokens_exponent(self) -> float:
        return self._r / (self._r + 1.0)

    def optimal(self, flop) -> Allocation:
        c = check_positive(flop, "flop")
        params = np.power(self._k * c, self.params_exponent)
        tokens = c / (FLOP_PER_PARAM_TOKEN * params)
        return Allocation(flop=c, params=_scalar_or_array(params), tokens=_scalar_or_array(tokens),
                          loss=self.loss(params, tokens))

    def flop_for_optimal_params(self, params):
        n = check_positive(params, "params")
        return _scalar_or_array(np.power(n, self._r + 1.0) / self._k)

    def flop_for_optimal_tokens(self, tokens):
        # D_opt = N^r / (6 k)  =>  N = (6 k D)^(1/r)
        d = check_positive(tokens, "tokens")
        return self.flop_for_optimal_params(np.power(FLOP_PER_PARAM_TOKEN * self._k * d, 1.0 / self._r))


Law = ParametricLaw | KaplanLaw

# log of the largest float (1.8e308): exp beyond overflows
_LOG_MAX = math.log(np.finfo(float).max)


def _tokens_from_log(log_tokens: float, target_loss: float) -> float:
    """e^log_tokens, the tokens a target loss needs; a target so close to the law's floor that they overflow a
    float is a ScenarioError naming ``target_loss`` (it was an OverflowError traceback)."""
    if log_tokens > _LOG_MAX:
        raise ScenarioError("target_loss", f"{target_loss:g} is so close to the law's floor that it needs "
                            f"10^{log_tokens / math.log(10.0):.4g} tokens, beyond the range of a float; "
                            "aim higher")
    return math.exp(log_tokens)


def get(name: str, field: str = "--law", custom_too: bool = False) -> Law:
    """The published law ``name``: 'chinchilla' (Hoffmann et al. 2022 approach 3), 'chinchilla-refit'
    (Besiroglu et al. 2024) or 'kaplan' (Kaplan et al. 2020). ``custom_too``: the caller also takes 'custom' (the
    ``laws`` commands with ``--fit``), which the error then offers; compare, sweep and the others offered it too
    and then refused it (round 35)."""
    data = catalog.load("scaling_laws")
    if name == "kaplan":
        k = data["kaplan"]
        return KaplanLaw(
            Nc=k["L_N_D"]["Nc"], Dc=k["L_N_D"]["Dc"], aN=k["L_N_D"]["aN"], aD=k["L_N_D"]["aD"],
            Nc_single=k["L_N"]["Nc"], aN_single=k["L_N"]["aN"],
            Dc_single=k["L_D"]["Dc"], aD_single=k["L_D"]["aD"],
            Cc_flop=k["L_C_min"]["Cc_pf_days"] * k["pf_day_flop"], aC=k["L_C_min"]["aC"],
            B_star_tokens=k["B_crit"]["B_star_tokens"], aB=k["B_crit"]["aB"], source=k["source"])
    if name in ("chinchilla", "chinchilla-refit"):
        fit = data[name]
        return ParametricLaw(name=name, E=fit["E"], A=fit["A"], B=fit["B"], alpha=fit["alpha"],
                             beta=fit["beta"], source=fit["source"])
    also = ", or custom (with --fit E=..,A=..,B=..,alpha=..,beta=..)" if custom_too else ""
    raise ScenarioError(field, f"unknown law {quoted(name)} ({did_you_mean(name, LAW_NAMES)}known: "
                        f"{', '.join(LAW_NAMES)}{also})")


def custom(E: float, A: float, B: float, alpha: float, beta: float, name: str = "custom") -> ParametricLaw:
    """A user-defined law E + A/N^alpha + B/D^beta; negative or zero coefficients are ScenarioErrors."""
    return ParametricLaw(name=name, E=E, A=A, B=B, alpha=alpha, beta=beta)


def below_fit(law: Law, params: float, tokens: float) -> str | None:
    """What of ``params`` and ``tokens`` lies below the smallest runs ``law`` was fitted on (``fitted_range`` in
    scaling_laws.yaml), as a warning to print, or None (within or above them, or a custom law: no runs known).
    Below, the closed forms give numbers no run measured (round 35 review: ``laws optimal --flop 6`` printed N_opt =
    0.12 params, ``laws loss-vs-time --tokens 1`` a loss of 2,087 nats/token); above is the laws' use (the
    frontier is extrapolated from smaller runs), so it is not warned of. A warning, not a refusal: the value is a
    valid input of the formula, as statsmodels' and scikit-learn's predictors evaluate outside their data."""
    fit = catalog.load("scaling_laws").get(law.name, {}).get("fitted_range") if law.name in LAW_NAMES else None
    if fit is None:
        return None
    low = [f"{what} {value:.3g} < {fit[key][0]:.3g}" for what, key, value
           in (("N", "params", params), ("D", "tokens", tokens)) if value < fit[key][0]]
    if not low:
        return None
    return (f"{', '.join(low)}: below the smallest runs the {law.name} law was fitted on (N {fit['params'][0]:.3g} to "
            f"{fit['params'][1]:.3g} params, D {fit['tokens'][0]:.3g} to {fit['tokens'][1]:.3g} tokens); its "
            "closed form there is an extrapolation no run measured")


def resolve(law: Law | str) -> Law:
    return get(law) if isinstance(law, str) else law


def tokens_per_param(law: Law, flop: float) -> float:
    """D_opt / N_opt at budget ``flop`` (about 20 for Chinchilla near 1e23-1e24 FLOP; it drifts with C
    whenever the two exponents differ)."""
    return resolve(law).optimal(flop).tokens_per_param


# ---- time-aware law: Lu 2025 -------------------------------------------------------------------------------
def _expm1_over_x(x):
    """(e^x - 1)/x, exact at x = 0 (value 1) and accurate near it (no 0/0, no cancellation)."""
    x = np.asarray(x, dtype=float)
    small = np.abs(x) < 1e-8
    safe = np.where(small, 1.0, x)
    # series 1 + x/2 + x^2/6 below 1e-8 (the next term is < 1e-24, far under double precision); underflow of
    # the tiny terms to zero is exact enough and not an error
    with np.errstate(under="ignore"):
        return np.where(small, 1.0 + x / 2.0 * (1.0 + x / 3.0), np.expm1(safe) / safe)


# Efficiency doublings gamma * t the time laws accept: 2^1000 ~ 1e301 is the largest power of two a float holds
# with room for the products that follow; beyond it E(t) is infinite and R(t) meaningless.
MAX_DOUBLINGS = 1000.0
# Doublings of algorithmic efficiency per year: one a month. Ho et al. 2024 (arXiv:2403.05812) measure the compute
# to reach a fixed performance halving every ~8 months, 95 % CI 5 to 14 months (gamma 0.9 to 2.4 per year); 12 is
# five times the fast end. gamma = 1e300 was accepted with years = 0.
MAX_GAMMA = 12.0
# Years a time law looks ahead: the growth rates it rests on are fitted on 2010-2024 data (Epoch AI) and a century
# beyond is far past anything they can say (also ``laws project --years``). 1e300 years was accepted, and at gamma
# 1e-298 the cumulative compute overflowed to inf and R(t) came out 0.0.
MAX_YEARS = 100


def check_doublings(gamma, years, field: str = "gamma"):
    """(gamma, years) checked: gamma within [0, MAX_GAMMA] doublings per year and gamma * years within
    MAX_DOUBLINGS; errors name ``field`` (the option or key that sets gamma)."""
    g = check_non_negative(gamma, field)
    if np.max(g) > MAX_GAMMA:
        raise ScenarioError(field, f"expected at most {MAX_GAMMA:g} efficiency doublings per year (one a month), "
                            f"got {_shown(np.max(g))} (Ho et al. 2024: 0.9 to 2.4 per year)")
    doublings = np.max(np.asarray(g) * np.asarray(years))
    if doublings > MAX_DOUBLINGS:
        raise ScenarioError(field, f"gamma * years = {doublings:.3g} efficiency doublings; at most "
                            f"{MAX_DOUBLINGS:g} (2^gamma*t overflows a float beyond)")
    return g


def _check_time_law(years, gamma, kappa=None):
    t = check_non_negative(years, "years")
    if np.max(t) > MAX_YEARS:
        raise ScenarioError("years", f"expected 0 to {MAX_YEARS} years, got {_shown(np.max(t))} (growth rates "
                            "extrapolated further mean nothing)")
    if kappa is not None:
        check_exponent(kappa, "kappa")
    return t, check_doublings(gamma, t)


def efficiency(years, gamma: float, e0: float = 1.0):
    """Lu 2025: E(t) = E0 2^(gamma t), t in years, gamma doublings of efficiency per year."""
    t, g = _check_time_law(years, gamma)
    return _scalar_or_array(check_positive(e0, "e0") * np.exp2(g * t))


def cumulative_compute_years(years, gamma: float):
    """Compute accumulated by time t at constant power, in units of one year at the initial efficiency:
    integral_0^t 2^(gamma tau) d tau / 1 yr = (2^(gamma t) - 1)/(gamma ln 2), written as t (e^x - 1)/x with
    x = gamma t ln 2 so that gamma -> 0 gives exactly t."""
    t, g = _check_time_law(years, gamma)
    x = g * t * math.log(2.0)
    return _scalar_or_array(t * _expm1_over_x(x))


def relative_loss(years, gamma: float, kappa: float):
    """Lu 2025 relative-loss equation: R(t) = (1 + (2^(gamma t) - 1)/(gamma ln2 * 1 yr))^(-kappa).

    The loss at time t relative to the loss of the initial one-year budget C0, when compute keeps accruing at
    constant power with efficiency E(t) (L ~ C^-kappa, C(t) = C0 + Delta C(t)).
    gamma = 0 gives (1 + t)^-kappa.
    """
    t, g = _check_time_law(years, gamma, kappa)
    return _scalar_or_array(np.power(1.0 + cumulative_compute_years(t, g), -kappa))


# ---- batch size: McCandlish et al. 2018 --------------------------------------------------------------------
def _check_batch(batch_tokens, critical_batch_tokens):
    return (check_positive(batch_tokens, "batch_tokens"),
            check_positive(critical_batch_tokens, "critical_batch_tokens"))


def min_steps(steps, batch_tokens, critical_batch_tokens):
    """Steps S_min the same loss would need with an infinitely large batch: S_min = S / (1 + B_crit/B)
    (McCandlish et al. 2018, eq. 2.11; Kaplan et al. 2020, eq. 5.4)."""
    s = check_positive(steps, "steps")
    b, b_crit = _check_batch(batch_tokens, critical_batch_tokens)
    return _scalar_or_array(s / (1.0 + b_crit / b))


def min_compute(flop, batch_tokens, critical_batch_tokens):
    """Compute C_min the same loss would need with a vanishing batch: C_min = C / (1 + B/B_crit)
    (McCandlish et al. 2018, eq. 2.11; Kaplan et al. 2020, eq. 5.5)."""
    c = check_positive(flop, "flop")
    b, b_crit = _check_batch(batch_tokens, critical_batch_tokens)
    return _scalar_or_array(c / (1.0 + b / b_crit))


def steps_at_batch(steps_min, batch_tokens, critical_batch_tokens):
    """Inverse of ``min_steps``: S = S_min (1 + B_crit/B)."""
    s = check_positive(steps_min, "steps_min")
    b, b_crit = _check_batch(batch_tokens, critical_batch_tokens)
    return _scalar_or_array(s * (1.0 + b_crit / b))


def compute_at_batch(flop_min, batch_tokens, critical_batch_tokens):
    """Inverse of ``min_compute``: C = C_min (1 + B/B_crit)."""
    c = check_positive(flop_min, "flop_min")
    b, b_crit = _check_batch(batch_tokens, critical_batch_tokens)
    return _scalar_or_array(c * (1.0 + b / b_crit))
