"""From simulated throughput to loss over wall-clock time, and the time, GPU-hours, cost, energy and CO2
that takes.

A simulated step gives tokens per second; a goodput fraction (time lost to failures and restarts) turns it
into tokens per wall-clock second, D(t) = goodput * tokens_per_s * t, and a scaling law turns D(t) into L(t).
What a run costs follows from the cluster: GPU-hours times the price of a GPU-hour plus the fabric's share of it
(its capital spread over its lifetime and its electricity: ``fabric.bom.usd_per_gpu_hour``), and power

    P = PUE * (gpus * (P_idle + (P_tdp - P_idle) * u) + nodes * P_node_overhead)

(plus PUE times the fabric's switches and optics)
with u the GPUs' busy fraction (linear interpolation between idle and TDP; the model Meta used to report Llama
3's emissions is u = 1, GPU-hours at TDP). CO2 is energy times the grid's carbon intensity.

The energy is also compared with the Landauer bound: k_B T ln 2 per irreversible bit operation. The bit
operations of training are counted as 6 N D floating-point operations (Kaplan et al. 2020 sec. 2.1) times the
bits of one result in the training precision (16 for bf16): each operation overwrites at least its output
word, so that many bits are erased. Mantissa multiplier arrays erase far more; this is a lower bound, so the
ratio is an upper bound on how close the run could come to physics, and it is still about 10^7 to 10^8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simcluster.core import catalog, units
from simcluster.core.errors import ScenarioError
from simcluster.outcomes import laws
from simcluster.spec.hardware import BYTES_PER_ELEMENT, MAX_PRICE_PER_GPU_HOUR

SECONDS_PER_HOUR = 3600.0
_FLOAT_MAX = float(np.finfo(float).max)
# A site's power: humanity's primary energy use, ~19 TW (IEA World Energy Outlook 2023); no run's fabric or cap
# draws more.
MAX_POWER_W = 2e13
J_PER_KWH = 3.6e6


def landauer_j_per_bit() -> float:
    """k_B T ln 2 at the temperature of ``scaling_laws.yaml`` (300 K): 2.87e-21 J."""
    physics = catalog.load("scaling_laws")["physics"]
    return physics["boltzmann_j_per_k"] * physics["landauer_temperature_k"] * math.log(2.0)


@dataclass(frozen=True)
class Plant:
    """What the economics need from a scenario: prices, power, the model's size and the precision."""

    price_per_gpu_hour: float
    gpu_tdp_w: float
    gpu_idle_w: float
    gpus_per_node: int
    node_overhead_w: float
    pue: float
    grid_kg_co2_per_kwh: float
    params: float                  # total parameters (Chinchilla's N)
    non_embedding_params: float    # Kaplan's N
    bits_per_flop: int = 16        # bits of one result in the training precision

    @classmethod
    def from_scenario(cls, scenario) -> Plant:
        gpu, econ = scenario.cluster.gpu, scenario.economics
        return cls(
            price_per_gpu_hour=scenario.price_per_gpu_hour,
            gpu_tdp_w=gpu.tdp, gpu_idle_w=gpu.idle_power, gpus_per_node=scenario.cluster.gpus_per_node,
            node_overhead_w=units.parse(econ.node_overhead, units.WATTS, field="economics.node_overhead"),
            pue=econ.pue, grid_kg_co2_per_kwh=econ.grid_kg_co2_per_kwh,
            params=float(scenario.model.params),
            non_embedding_params=float(scenario.model.non_embedding_params),
            bits_per_flop=8 * BYTES_PER_ELEMENT[scenario.training.precision])

    def params_for(self, law: laws.Law) -> float:
        return self.non_embedding_params if law.non_embedding else self.params


def plant_of(scenario) -> Plant:
    return scenario if isinstance(scenario, Plant) else Plant.from_scenario(scenario)


def _number(value, field: str, condition: str) -> float:
    """``value`` as a float if it is a finite number (not text, not a boolean), else a ScenarioError naming
    ``field`` (``float('x')`` of a summary.json value was a ValueError traceback)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(field, f"must be a finite number {condition}, got {value!r}")
    return float(value)


def summary_value(summary: dict, key: str) -> float:
    if key not in summary:
        raise ScenarioError(f"summary.{key}", "missing from the run summary")
    value = _number(summary[key], f"summary.{key}", "> 0")
    if value <= 0:
        raise ScenarioError(f"summary.{key}", f"must be > 0, got {summary[key]!r}")
    return value


def busy_fraction_of(summary: dict, busy_fraction: float | str | None = None) -> tuple[float, str]:
    """The GPUs' busy fraction u for the power model, and how it was obtained.

    - a number: stated by the user;
    - 'mfu': the run's model FLOP utilisation (a low estimate: GPUs draw near TDP well below 100 % MFU);
    - None: 1 - (exposed_comm_s + pipeline_bubble_s) / step_time_s when the summary has those keys (the
      share of a step the GPU runs kernels), otherwise 1 (GPU-hours at TDP, the convention of Meta's Llama 3
      report).
    """
    if isinstance(busy_fraction, int | float):
        if not 0.0 <= busy_fraction <= 1.0:
            raise ScenarioError("busy_fraction", f"must be within [0, 1], got {busy_fraction!r}")
        return float(busy_fraction), "stated"
    if busy_fraction == "mfu":
        mfu = summary_value(summary, "mfu")
        if mfu > 1.0:  # was clipped to 1 unsaid: a model FLOP rate above the peak is no run
            raise ScenarioError("summary.mfu", f"must be within (0, 1] (model FLOP over peak), got {mfu:g}")
        return mfu, "mfu"
    if busy_fraction is not None:
        raise ScenarioError("busy_fraction",
                            f"expected a number in [0, 1], 'mfu' or nothing, got {busy_fraction!r}")
    if all(key in summary for key in ("step_time_s", "exposed_comm_s", "pipeline_bubble_s")):
        idle_s = sum(_number(summary[key], f"summary.{key}", ">= 0") for key in ("exposed_comm_s", "pipeline_bubble_s"))
        step_s = summary_value(summary, "step_time_s")
        return min(1.0, max(0.0, 1.0 - idle_s / step_s)), "step: 1 - (exposed comm + bubble)/step time"
    return 1.0, "TDP: summary has no step breakdown"


def facility_power_w(plant: Plant, gpus: int, busy_fraction: float) -> float:
    """Wall power of the run: GPUs interpolated between idle and TDP, node overhead, times PUE."""
    nodes = math.ceil(gpus / plant.gpus_per_node)
    gpu_w = plant.gpu_idle_w + (plant.gpu_tdp_w - plant.gpu_idle_w) * busy_fraction
    return plant.pue * (gpus * gpu_w + nodes * plant.node_overhead_w)


def fabric_share(summary: dict) -> tuple[float, float]:
    """(USD per GPU-hour, W) the fabric adds to a run: its amortised capital and electricity
    (``fabric.usd_per_gpu_hour``, ``fabric.bom``), and its power beyond the NICs (which ``node_overhead`` already
    counts); (0, 0) for a summary without a ``fabric`` (older runs, replays)."""
    fabric = summary.get("fabric")
    if fabric is None:
        return 0.0, 0.0
    if not isinstance(fabric, dict):
        raise ScenarioError("summary.fabric", f"expected a mapping (the fabric's bill), got {fabric!r:.60}")
    if "usd_per_gpu_hour" not in fabric:
        return 0.0, 0.0
    parts = fabric.get("power_by_part_w") or {}
    if not isinstance(parts, dict):
        raise ScenarioError("summary.fabric.power_by_part_w", f"expected a mapping, got {parts!r:.60}")
    nic_w = _number(parts.get("nics", 0.0), "summary.fabric.power_by_part_w.nics", ">= 0")
    power_w = _number(fabric.get("power_w", 0.0), "summary.fabric.power_w", ">= 0")
    usd = _number(fabric["usd_per_gpu_hour"], "summary.fabric.usd_per_gpu_hour", ">= 0")
    if usd > MAX_PRICE_PER_GPU_HOUR:  # the bound of a GPU-hour's price: the fabric's share is a fraction of it
        raise ScenarioError("summary.fabric.usd_per_gpu_hour", f"expected at most {MAX_PRICE_PER_GPU_HOUR:g} USD, got "
                            f"{usd:g}")
    for field, value in (("usd_per_gpu_hour", usd), ("power_w", power_w), ("power_by_part_w.nics", nic_w)):
        if value < 0:
            raise ScenarioError(f"summary.fabric.{field}", f"must be a finite number >= 0, got {value:g}")
    if power_w > MAX_POWER_W:
        raise ScenarioError("summary.fabric.power_w", f"expected at most {MAX_POWER_W:.0e} W (humanity's primary "
                            f"power), got {power_w:g}")
    return usd, max(0.0, power_w - nic_w)


def _check_goodput(goodput: float, field: str = "goodput") -> float:
    if isinstance(goodput, bool) or not (isinstance(goodput, int | float) and 0.0 < goodput <= 1.0):
        raise ScenarioError(field, f"must be within (0, 1], got {goodput!r}")
    return float(goodput)


def goodput_of(summary: dict, goodput: float | None) -> tuple[float, str]:
    """The goodput to use and where it came from: the caller's, else the run's (failures, checkpoints and
    restarts over a whole run, ``outcomes.reliability``), else 1 for a summary without one."""
    if goodput is not None:
        return _check_goodput(goodput), "given"
    if summary.get("goodput") is not None:
        return (_check_goodput(summary["goodput"], "summary.goodput"),
                "simulated: failures, checkpoints, restarts (summary)")
    return 1.0, "none: the summary has no goodput"


def check_target_reachable(scenario, law: laws.Law | str, target_loss: float | None, field: str = "target_loss"):
    """A ScenarioError naming ``field`` when the scenario's model can never reach ``target_loss`` under ``law``
    (at or below its unlimited-data floor): compare and sweep check it before simulating, not after every run."""
    if target_loss is None:
        return
    law = laws.resolve(law)
    try:
        law.tokens_for_loss(plant_of(scenario).params_for(law), target_loss)
    except ScenarioError as err:
        raise ScenarioError(field, err.message) from None


def time_to_target(summary: dict, scenario, law: laws.Law | str = laws.DEFAULT_LAW,
                   target_loss: float | None = None, tokens: float | None = None, *, goodput: float | None = None,
                   busy_fraction: float | str | None = None, params: float | None = None) -> dict:
    """Time, GPU-hours, cost, energy and CO2 to reach ``target_loss`` (or to train on ``tokens`` tokens).

    ``summary`` is a run summary (``Result.summary``: at least ``tokens_per_s`` and ``gpus``), ``scenario`` a
    ``config.Scenario`` (or a ``Plant``); ``params`` overrides the model size (default: the scenario's,
    non-embedding for Kaplan). Exactly one of ``target_loss`` and ``tokens`` is given. Returns a flat dict of
    SI floats. ``goodput`` None takes the summary's (``goodput_of``); ``goodput_basis`` says which.
    """
    law = laws.resolve(law)
    plant = plant_of(scenario)
    if (target_loss is None) == (tokens is None):
        raise ScenarioError("target_loss", "give exactly one of a target loss and a token budget")
    goodput, goodput_basis = goodput_of(summary, goodput)
    n_params = plant.params_for(law) if params is None else laws.check_positive(params, "params")
    tokens_per_s = summary_value(summary, "tokens_per_s")
    gpus = int(summary_value(summary, "gpus"))
    if target_loss is not None:
        tokens_needed = law.tokens_for_loss(n_params, target_loss)
        loss = float(target_loss)
    else:
        tokens_needed = laws.check_positive(tokens, "tokens")
        loss = law.loss(n_params, tokens_needed)
    time_s = tokens_needed / (goodput * tokens_per_s)
    # what makes the time (and so the GPU-hours, cost and energy) overflow when it does: the throughput, or the
    # goodput when the time at goodput 1 would still be a hundred-thousandth of the largest float
    slow = "summary.tokens_per_s" if tokens_needed / tokens_per_s > 1e-5 * _FLOAT_MAX else \
        "goodput" if goodput_basis == "given" else "summary.goodput"
    if not math.isfinite(time_s):  # a throughput of 1e-308 tokens/s gave inf, written as null
        raise ScenarioError(slow, f"{tokens_needed:.3g} tokens at {goodput:.3g} x {tokens_per_s:.3g} tokens/s "
                            "take longer than a float can hold")
    gpu_hours = gpus * time_s / SECONDS_PER_HOUR
    u, basis = busy_fraction_of(summary, busy_fraction)
    fabric_usd_per_gpu_hour, fabric_w = fabric_share(summary)
    power_w = facility_power_w(plant, gpus, u) + plant.pue * fabric_w
    energy_j = power_w * time_s
    training_flop = laws.FLOP_PER_PARAM_TOKEN * plant.params * tokens_needed
    landauer_j = training_flop * plant.bits_per_flop * landauer_j_per_bit()
    if energy_j < landauer_j:  # tokens_per_s = 1e308 on 16 GPUs trained at 7e-295 of the bound
        raise ScenarioError("summary.tokens_per_s", f"{tokens_per_s:.3g} tokens/s on {gpus:,} GPUs would train "
                            f"with {energy_j / landauer_j:.2g} of the Landauer bound's energy: no hardware runs that "
                            "fast")
    report = {
        "law": law.name,
        "target_loss": None if target_loss is None else float(target_loss),
        "loss": float(loss),
        "params": float(n_params),
        "tokens_to_target": float(tokens_needed),
        "tokens_per_param": float(tokens_needed / n_params),
        "tokens_per_s": tokens_per_s,
        "goodput": goodput,
        "goodput_basis": goodput_basis,
        "gpus": gpus,
        "time_to_target_s": time_s,
        "gpu_hours": gpu_hours,
        "cost_usd": gpu_hours * (plant.price_per_gpu_hour + fabric_usd_per_gpu_hour),
        "gpu_cost_usd": gpu_hours * plant.price_per_gpu_hour,
        "fabric_cost_usd": gpu_hours * fabric_usd_per_gpu_hour,
        "busy_fraction": u,
        "busy_fraction_basis": basis,
        "facility_power_w": power_w,
        "fabric_power_w": plant.pue * fabric_w,
        "energy_j": energy_j,
        "co2_kg": energy_j / J_PER_KWH * plant.grid_kg_co2_per_kwh,
        "training_flop": training_flop,
        "landauer_j": landauer_j,
        "energy_over_landauer": energy_j / landauer_j,
    }
    for key, value in report.items():  # 1e300 s at the fabric's 1e13 W: energy inf, written as null
        if isinstance(value, float) and not math.isfinite(value):
            raise ScenarioError(slow, f"{key} overflows a float: {tokens_needed:.3g} tokens at {goodput:.3g} x "
                                f"{tokens_per_s:.3g} tokens/s on {gpus:,} GPUs take {time_s:.3g} s")
    return report


def loss_curve(summary: dict, scenario, law: laws.Law | str, duration_s: float, points: int = 200, *,
               goodput: float | None = None, params: float | None = None) -> dict:
    """L(t) on a grid of wall-clock times up to ``duration_s``: D(t) = goodput * tokens_per_s * t.

    Evenly spaced in time, without t = 0 (a model trained on no tokens has no defined loss).
    """
    law = laws.resolve(law)
    plant = plant_of(scenario)
    goodput, _basis = goodput_of(summary, goodput)
    duration_s = laws.check_positive(duration_s, "duration_s")
    n_params = plant.params_for(law) if params is None else laws.check_positive(params, "params")
    tokens_per_s = summary_value(summary, "tokens_per_s")
    time_s = np.linspace(duration_s / points, duration_s, points)
    tokens = goodput * tokens_per_s * time_s
    return {"time_s": time_s, "tokens": tokens, "loss": np.asarray(law.loss(n_params, tokens)),
            "loss_floor": float(law.loss_floor(n_params)), "law": law.name, "params": float(n_params)}
