"""Diminishing returns of more GPUs: scaling efficiency, time and cost to a target loss, the loss bought by
one more GPU-hour, and the knee where efficiency falls below a threshold.

Input is a sweep: run summaries (``Result.summary`` dicts, at least ``gpus`` and ``tokens_per_s``) of one
scenario at several GPU counts. Pure functions; the ``sweep`` command tabulates and plots what they return.
"""

from __future__ import annotations

from simcluster.core.errors import ScenarioError
from simcluster.outcomes import economics, laws

# Efficiency below which more GPUs are deemed wasteful. A planner's choice, not a law: 0.8 keeps the extra
# cost of a faster run under 25 % (cost per token grows as 1/efficiency).
DEFAULT_EFFICIENCY_THRESHOLD = 0.8


def _sorted(summaries: list[dict]) -> list[dict]:
    if not summaries:
        raise ScenarioError("summaries", "need at least one run summary")
    rows = sorted(summaries, key=lambda s: economics.summary_value(s, "gpus"))
    counts = [int(economics.summary_value(s, "gpus")) for s in rows]
    if len(set(counts)) != len(counts):
        raise ScenarioError("summaries", f"GPU counts repeat: {counts}")
    for summary in rows:
        economics.summary_value(summary, "tokens_per_s")
    return rows


def scaling_efficiency(summaries: list[dict]) -> list[dict]:
    """Per GPU count n: throughput(n) / (n/n0 * throughput(n0)), n0 the smallest count of the sweep."""
    rows = _sorted(summaries)
    n0, tps0 = float(rows[0]["gpus"]), float(rows[0]["tokens_per_s"])
    return [{"gpus": int(s["gpus"]), "tokens_per_s": float(s["tokens_per_s"]),
             "speedup": float(s["tokens_per_s"]) / tps0,
             "efficiency": float(s["tokens_per_s"]) / (float(s["gpus"]) / n0 * tps0),
             # the band of several variability seeds (studies.samples): throughput at the p90 and p10 step times
             "tokens_per_s_low": s.get("tokens_per_s_p90_step"), "tokens_per_s_high": s.get("tokens_per_s_p10_step")}
            for s in rows]


def sweep_table(summaries: list[dict], scenario, law: laws.Law | str, target_loss: float, *,
                deadline_s: float | None = None, goodput: float | None = None,
                busy_fraction: float | str | None = None, params: float | None = None) -> list[dict]:
    """One row per GPU count: efficiency, time/GPU-hours/cost/energy/CO2 to ``target_loss``, and two margins.

    - ``hours_saved_per_extra_gpu_hour``: wall-clock hours to target saved per extra GPU-hour spent, against
      the next smaller count (falls as efficiency drops; a perfectly scaling step saves time at no GPU-hour
      cost: inf);
    - ``marginal_loss_per_gpu_hour``: at a fixed wall-clock deadline (default: the smallest count's time to
      target), the loss reduction bought per extra GPU-hour, (L(n_prev) - L(n)) / (n - n_prev) / deadline_h.

    ``goodput`` None takes each summary's (failures, checkpoints and restarts at that GPU count); every row
    carries the ``goodput`` used and ``goodput_tokens_per_s`` = goodput x tokens_per_s.
    """
    law = laws.resolve(law)
    plant = economics.plant_of(scenario)
    n_params = plant.params_for(law) if params is None else laws.check_positive(params, "params")
    eff = scaling_efficiency(summaries)
    rows = []
    for point, summary in zip(eff, _sorted(summaries), strict=True):
        report = economics.time_to_target(summary, plant, law, target_loss=target_loss, goodput=goodput,
                                          busy_fraction=busy_fraction, params=n_params)
        rows.append({**point, "goodput": report["goodput"],
                     "goodput_tokens_per_s": report["goodput"] * point["tokens_per_s"],
                     **{key: report[key] for key in (
                         "time_to_target_s", "tokens_to_target", "gpu_hours", "cost_usd", "energy_j", "co2_kg")}})
    if deadline_s is None:
        deadline_s = rows[0]["time_to_target_s"]
    deadline_s = laws.check_positive(deadline_s, "deadline_s")
    previous = None
    for row in rows:
        tokens = row["goodput_tokens_per_s"] * deadline_s
        row["deadline_s"] = deadline_s
        row["loss_at_deadline"] = float(law.loss(n_params, tokens))
        row["gpu_hours_at_deadline"] = row["gpus"] * deadline_s / economics.SECONDS_PER_HOUR
        if previous is None:
            row["marginal_loss_per_gpu_hour"] = None
            row["hours_saved_per_extra_gpu_hour"] = None
        else:
            extra_h = row["gpu_hours_at_deadline"] - previous["gpu_hours_at_deadline"]
            loss_drop = previous["loss_at_deadline"] - row["loss_at_deadline"]
            row["marginal_loss_per_gpu_hour"] = loss_drop / extra_h
            saved_h = (previous["time_to_target_s"] - row["time_to_target_s"]) / economics.SECONDS_PER_HOUR
            spent_h = row["gpu_hours"] - previous["gpu_hours"]
            row["hours_saved_per_extra_gpu_hour"] = saved_h / spent_h if spent_h > 0 else float("inf")
        previous = row
    return rows


def knee(rows: list[dict], threshold: float = DEFAULT_EFFICIENCY_THRESHOLD) -> dict:
    """Where scaling efficiency first falls below ``threshold``.

    ``rows`` are summaries or rows of ``scaling_efficiency``/``sweep_table``. Returns the largest GPU count
    still at or above the threshold before the first one below it (``knee_gpus``), that first count
    (``first_below_gpus``, None when every count stays above), and their efficiencies.
    """
    if not 0.0 < threshold <= 1.0:
        raise ScenarioError("threshold", f"must be within (0, 1], got {threshold!r}")
    points = rows if rows and "efficiency" in rows[0] else scaling_efficiency(rows)
    points = sorted(points, key=lambda r: r["gpus"])
    last = points[0]
    for point in points[1:]:
        if point["efficiency"] < threshold:
            return {"threshold": threshold, "knee_gpus": last["gpus"], "knee_efficiency": last["efficiency"],
                    "first_below_gpus": point["gpus"], "first_below_efficiency": point["efficiency"]}
        last = point
    return {"threshold": threshold, "knee_gpus": last["gpus"], "knee_efficiency": last["efficiency"],
            "first_below_gpus": None, "first_below_efficiency": None}
