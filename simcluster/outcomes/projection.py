"""Projection over years: which constraint caps the largest training run, year by year.

Six ceilings on the FLOP C of one run of duration T in year y = y0 + t (growth rates g per year, defaults and
sources in ``simcluster/data/projection.yaml``):

- compute: the largest cluster's peak FLOP/s F0 g_c^t, at MFU m, for T:  C = F0 g_c^t m T
- budget:  a budget U0 g_u^t times FLOP per dollar (rental, at MFU m):    C = U0 g_u^t (P m 3600/price) g_$^t
- energy:  a power cap W0 g_w^t times FLOP per joule of the facility:     C = W0 g_w^t (P m / W_gpu) g_J^t T
  (P the GPU's peak, W_gpu = PUE (TDP + node overhead / GPUs per node))
- data:    the compute whose compute-optimal token count is the text stock (stock x epochs), from the law
- memory:  the compute whose compute-optimal model just fits the cluster's HBM at 16 bytes per parameter
- network: a stated ceiling where data movement stops scaling (Erdil & Schneider-Joseph 2024)

The smallest binds. Algorithmic progress multiplies the FLOP the run achieves into effective FLOP, 2^(gamma t)
C (Lu 2025's E(t)), and the law's compute-optimal loss at that effective budget is the loss of the year's best
run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from simcluster.core import catalog, units
from simcluster.core.errors import ScenarioError
from simcluster.outcomes import laws
from simcluster.spec import config, hardware

CONSTRAINTS = ("compute", "memory", "network", "budget", "energy", "data")
LETTERS = {"compute": "C", "memory": "M", "network": "N", "budget": "B", "energy": "E", "data": "D"}


# Plausible ranges of the projection's horizon: the time laws' (laws.MAX_YEARS, a century).
MAX_YEARS = laws.MAX_YEARS
MIN_START_YEAR, MAX_START_YEAR = 2000, 2100


@dataclass(frozen=True)
class ProjectionInputs:
    """Everything the projection reads; ``defaults()`` fills it from ``projection.yaml``."""

    start_year: int
    years: int
    law: str
    gpu: str
    precision: str
    gpus_per_node: int
    mfu: float
    run_duration_s: float
    flop_per_usd_growth: float
    flop_per_j_growth: float
    peak_growth: float
    hbm_growth: float
    gamma: float
    compute_flop_per_s: float
    compute_growth: float
    budget_usd: float
    budget_growth: float
    power_cap_w: float
    power_growth: float
    data_stock_tokens: float
    data_epochs: float
    data_growth: float
    bytes_per_param: float
    network_max_flop: float
    network_growth: float
    pue: float
    node_overhead_w: float

    def __post_init__(self):
        if not 1 <= self.years <= MAX_YEARS:
            raise ScenarioError("years", f"must be within 1 to {MAX_YEARS} (growth rates extrapolated further mean "
                                f"nothing), got {self.years}")
        if not MIN_START_YEAR <= self.start_year <= MAX_START_YEAR:
            raise ScenarioError("start_year", f"must be within {MIN_START_YEAR} to {MAX_START_YEAR}, "
                                f"got {self.start_year}")
        if not 0.0 < self.mfu <= 1.0:
            raise ScenarioError("mfu", f"must be within (0, 1], got {self.mfu}")
        laws.check_doublings(self.gamma, self.years)
        for field in ("run_duration_s", "flop_per_usd_growth", "flop_per_j_growth", "peak_growth",
                      "hbm_growth", "compute_flop_per_s", "compute_growth", "budget_usd", "budget_growth",
                      "power_cap_w", "power_growth", "data_stock_tokens", "data_epochs", "data_growth",
                      "bytes_per_param", "network_max_flop", "network_growth", "pue", "node_overhead_w"):
            laws.check_positive(getattr(self, field), field)


def defaults(**overrides) -> ProjectionInputs:
    """The inputs of ``projection.yaml`` and the default law (``laws.DEFAULT_LAW``, as in every command) with
    ``overrides`` (field=value) applied."""
    data = catalog.load("projection")
    growth, cons = data["growth"], data["constraints"]
    econ = config.Economics()
    inputs = dict(
        start_year=int(data["start_year"]), years=int(data["years"]), law=laws.DEFAULT_LAW,
        gpu=data["hardware"]["gpu"], precision=data["hardware"]["precision"],
        gpus_per_node=int(data["hardware"]["gpus_per_node"]), mfu=float(data["hardware"]["mfu"]),
        run_duration_s=float(data["run_duration_s"]),
        flop_per_usd_growth=growth["flop_per_usd"]["rate"], flop_per_j_growth=growth["flop_per_j"]["rate"],
        peak_growth=growth["peak_flop_per_gpu"]["rate"], hbm_growth=growth["hbm_per_gpu"]["rate"],
        gamma=data["algorithmic_gamma"]["value"],
        compute_flop_per_s=cons["compute"]["flop_per_s"], compute_growth=cons["compute"]["growth"],
        budget_usd=cons["budget"]["usd"], budget_growth=cons["budget"]["growth"],
        power_cap_w=cons["energy"]["power_cap_w"], power_growth=cons["energy"]["growth"],
        data_stock_tokens=cons["data"]["stock_tokens"], data_epochs=cons["data"]["epochs"],
        data_growth=cons["data"]["growth"], bytes_per_param=cons["memory"]["bytes_per_param"],
        network_max_flop=cons["network"]["max_training_flop"], network_growth=cons["network"]["growth"],
        pue=econ.pue, node_overhead_w=units.parse(econ.node_overhead, units.WATTS, "economics.node_overhead"))
    unknown = set(overrides) - set(inputs)
    if unknown:
        raise ScenarioError(sorted(unknown)[0], "not a projection input")
    inputs.update({key: value for key, value in overrides.items() if value is not None})
    return ProjectionInputs(**inputs)


def base_rates(inputs: ProjectionInputs) -> dict:
    """Start-year figures of the catalog GPU: FLOP per dollar and per joule at the stated MFU."""
    gpu = hardware.gpu(inputs.gpu, field="gpu")
    peak = gpu.peak_flop_per_s(inputs.precision)
    achieved = peak * inputs.mfu
    watts_per_gpu = inputs.pue * (gpu.tdp + inputs.node_overhead_w / inputs.gpus_per_node)
    return {"peak_flop_per_s": peak, "hbm_bytes": gpu.hbm_capacity,
            "flop_per_usd": achieved * 3600.0 / gpu.price_per_gpu_hour,
            "flop_per_j": achieved / watts_per_gpu}


def ceilings(inputs: ProjectionInputs, t: float, law: laws.Law | None = None) -> dict[str, float]:
    """FLOP ceiling of one run under each constraint, ``t`` years after the start year; a ScenarioError when the
    inputs grow past what a float holds."""
    try:
        caps = _ceilings(inputs, t, law)
    except OverflowError:
        caps = {"all": math.inf}
    overflow = [name for name, value in caps.items() if not math.isfinite(value)]
    if overflow:
        raise ScenarioError("projection", f"the {overflow[0]} ceiling overflows {t:g} years after "
                            f"{inputs.start_year}: an input or growth rate is implausibly large")
    return caps


def _ceilings(inputs: ProjectionInputs, t: float, law: laws.Law | None) -> dict[str, float]:
    law = laws.get(inputs.law, field="law") if law is None else law
    base = base_rates(inputs)
    T = inputs.run_duration_s
    cluster_flop_per_s = inputs.compute_flop_per_s * inputs.compute_growth**t
    gpus = cluster_flop_per_s / (base["peak_flop_per_s"] * inputs.peak_growth**t)
    max_params = gpus * base["hbm_bytes"] * inputs.hbm_growth**t / inputs.bytes_per_param
    max_tokens = inputs.data_stock_tokens * inputs.data_epochs * inputs.data_growth**t
    return {
        "compute": cluster_flop_per_s * inputs.mfu * T,
        "memory": float(law.flop_for_optimal_params(max_params)),
        "network": inputs.network_max_flop * inputs.network_growth**t,
        "budget": (inputs.budget_usd * inputs.budget_growth**t
                   * base["flop_per_usd"] * inputs.flop_per_usd_growth**t),
        "energy": (inputs.power_cap_w * inputs.power_growth**t
                   * base["flop_per_j"] * inputs.flop_per_j_growth**t * T),
        "data": float(law.flop_for_optimal_tokens(max_tokens)),
    }


def project(inputs: ProjectionInputs | None = None) -> list[dict]:
    """One row per year: every ceiling, the binding constraint, the run's FLOP, effective FLOP and loss."""
    inputs = defaults() if inputs is None else inputs
    law = laws.get(inputs.law, field="law")
    rows = []
    for t in range(inputs.years):
        caps = ceilings(inputs, float(t), law)
        binding = min(CONSTRAINTS, key=lambda name: caps[name])
        flop = caps[binding]
        effective = flop * 2.0 ** (inputs.gamma * t)
        if not math.isfinite(effective):  # 1e27 FLOP x 2^990 was refused naming 'flop', an input of no option
            raise ScenarioError("gamma", f"the effective compute of {inputs.start_year + t} overflows a float: "
                                f"{flop:.3g} FLOP x 2^{inputs.gamma * t:g}; lower gamma or the years")
        best = law.optimal(effective)
        rows.append({"year": inputs.start_year + t, **{f"{name}_flop": caps[name] for name in CONSTRAINTS},
                     "binding": binding, "flop": flop, "effective_flop": effective,
                     "params": float(best.params), "tokens": float(best.tokens), "loss": float(best.loss),
                     "headroom": {name: caps[name] / flop for name in CONSTRAINTS}})
    return rows


_PHASE_FIELDS = {"budget": "budget_usd", "power": "power_cap_w", "compute": "compute_flop_per_s",
                 "data": "data_stock_tokens"}


def phase_map(inputs: ProjectionInputs | None = None, parameter: str | None = None,
              multipliers: list[float] | None = None) -> dict:
    """The binding constraint on a grid: years x multiples of one start-year input (budget, power,
    compute or data)."""
    inputs = defaults() if inputs is None else inputs
    diagram = catalog.load("projection")["phase_diagram"]
    parameter = parameter or diagram["parameter"]
    multipliers = list(multipliers or diagram["multipliers"])
    if parameter not in _PHASE_FIELDS:
        raise ScenarioError("--phase", f"unknown parameter {parameter!r} (known: {', '.join(_PHASE_FIELDS)})")
    for value in multipliers:
        laws.check_positive(value, "multipliers")
    field = _PHASE_FIELDS[parameter]
    law = laws.get(inputs.law, field="law")
    values, binding = [], []
    for multiplier in multipliers:
        varied = dataclasses.replace(inputs, **{field: getattr(inputs, field) * multiplier})
        values.append(getattr(varied, field))
        row = []
        for t in range(inputs.years):
            caps = ceilings(varied, float(t), law)
            row.append(min(CONSTRAINTS, key=lambda name: caps[name]))
        binding.append(row)
    years = [inputs.start_year + t for t in range(inputs.years)]
    return {"parameter": parameter, "field": field, "years": years, "multipliers": multipliers,
            "values": values, "binding": binding}


def ascii_phase(phase: dict) -> str:
    """The phase map as text: one row per value of the varied input (largest on top), one column per year."""
    unit = {"budget_usd": "USD", "power_cap_w": "W", "compute_flop_per_s": "FLOP/s",
            "data_stock_tokens": "tokens"}[phase["field"]]
    label_width = 12
    lines = [f"binding constraint by year (columns, 20xx) and start-year {phase['parameter']} "
             f"in {unit} (rows)"]
    lines.append(" " * label_width + " ".join(f"{year % 100:02d}" for year in phase["years"]))
    for value, row in reversed(list(zip(phase["values"], phase["binding"], strict=True))):
        lines.append(f"{value:>{label_width - 1}.2g} " + " ".join(f" {LETTERS[name]}" for name in row))
    lines.append("legend: " + "  ".join(f"{LETTERS[name]} {name}" for name in CONSTRAINTS))
    return "\n".join(lines)

