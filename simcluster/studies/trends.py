"""Trend series: how well the simulation follows a published scaling curve, not only each run of it.

A **trend series** is a group of validated runs of one source (the case's ``series``, else its ``source``: the
``family`` of ``validate --json``) and one model that differ in GPU count (hence data-parallel width, and with it
the global batch or the microbatches a replica runs) but not in the per-replica layout: the same model (its whole
spec), GPU, precision (and FP8 recipe), tp, pp, virtual stages, cp, ep, expert tp, sequence parallelism, ZeRO stage,
micro batch, sequence length, activation recompute, and published metric (``LAYOUT_KEYS``). Settings outside these
(kernel choices, the data-parallel implementation and its overlap, the fabric) are not compared: a series holds
what its scenarios state (Megatron-LM 2021's one-server and data-parallel scenarios differ in their data-parallel
settings, which only the data-parallel runs use). The groups are found from the bundled scenarios themselves
(``layout``), never from a hand list; a group is a series when it holds at least two runs at pairwise different GPU
counts; where a GPU count repeats in a group, or where two or more global batches each hold several runs, the runs
at each global batch are tried as a series of their own (a strong-scaling curve at one batch beside another at a
larger one, as MegaScale's Table 2 prints them; a weak-scaling series, one batch per GPU count, stays whole). Runs
of one source and model at different GPU counts that the rule keeps apart are listed with the layout keys in which
they differ (``not_grouped``), so the grouping can be checked.

For each series, from its smallest GPU count N0 up: the scaling efficiency, throughput per GPU at N / at N0
(``outcomes.returns.scaling_efficiency``, fed the total TFLOP/s, which at one model and sequence length is
proportional to tokens/s), published and simulated, and the **trend error** = simulated efficiency / published
efficiency - 1 at each point (0 at N0) and at the end of the range. In per-run errors it is
(1 + error at N) / (1 + error at N0) - 1: a constant per-run error leaves it 0. Sign as the per-run error's:
positive means the simulation keeps more of its per-GPU throughput with scale than the published runs did (it
under-predicts the loss of efficiency: **optimistic**), negative that it loses more (**pessimistic**); within
``TREND_FLAT`` it **matches**.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from simcluster.core.errors import ScenarioError
from simcluster.outcomes import returns
from simcluster.spec import config

# The per-replica layout a series holds fixed (``layout``), in the order the tables print it.
LAYOUT_KEYS = ("gpu", "precision", "tp", "pp", "vp", "cp", "ep", "etp", "sequence_parallel", "zero_stage",
               "micro_batch", "seq_len", "recompute")
# An end-of-range trend error within +-1% is called a match, not a sign: the coarsest-quoted published series
# (Megatron-Core's 177B strong scaling, MFU in whole percent, 47% -> 42%) is only known to +-0.5 point of 42%, 1.2%
# of its efficiency; step times quoted to 0.01 s of ~9 s (NeMo's DGX H100 tables) are known to 0.1%.
TREND_FLAT = 0.01


@dataclass(frozen=True)
class Run:
    """One validated run as a trend series sees it."""

    scenario: str
    family: str
    model: str                   # the model's name, for the tables
    gpus: int
    published_tflops: float
    simulated_tflops: float
    layout: dict = field(default_factory=dict)   # LAYOUT_KEYS -> value
    metric: str = "model"
    model_spec: str = ""         # the model's whole spec (JSON), compared; "" when only the name is known
    global_batch: int = 0        # sequences a step; splits a group whose GPU counts repeat (0: not known)

    def key(self) -> tuple:
        """What a series holds fixed: source, metric, model and the per-replica layout."""
        return (self.family, self.metric, self.model, self.model_spec, tuple(self.layout.get(k) for k in LAYOUT_KEYS))


def layout(scenario: config.Scenario) -> dict:
    """The per-replica layout of a scenario (``LAYOUT_KEYS``)."""
    t, p = scenario.training, scenario.parallelism
    recompute = t.activation_recompute + (f"({','.join(t.recompute_modules)})" if t.recompute_modules else "")
    precision = f"{t.precision}/{t.fp8_recipe}" if t.precision == "fp8" else t.precision
    return {"gpu": scenario.cluster.gpu.name, "precision": precision, "tp": p.tp, "pp": p.pp, "vp": p.virtual_stages,
            "cp": p.cp, "ep": p.ep, "etp": p.etp, "sequence_parallel": p.sequence_parallel, "zero_stage": p.zero_stage,
            "micro_batch": t.micro_batch_size, "seq_len": t.seq_len, "recompute": recompute}


def run_of(case: dict, scenario: config.Scenario) -> Run:
    """A case of ``validate --json`` (scenario, family, metric, published and simulated TFLOP/s) with its scenario."""
    spec = json.dumps(scenario.model.model_dump(mode="json", exclude={"source"}), sort_keys=True)
    return Run(case["scenario"], case["family"], scenario.model.name, scenario.cluster.gpus,
               float(case["published_tflops"]), float(case["simulated_tflops"]), layout(scenario),
               case.get("metric", "model"), spec, scenario.training.global_batch_size)


def runs_of(cases: list[dict], load=config.load) -> tuple[list[Run], list[str]]:
    """The cases as runs, their layout read from the bundled scenario of each name (``load``), so that the JSON of
    any earlier ``validate --json`` serves; and the names that could not be read that way (not bundled, or without
    published and simulated TFLOP/s, each a finite positive number), which join no series."""
    found, missing = [], []
    for case in cases:
        if not all(_throughput(case.get(k)) for k in ("published_tflops", "simulated_tflops")):
            missing.append(case["scenario"])
            continue
        try:
            found.append(run_of(case, load(case["scenario"])))
        except ScenarioError:
            missing.append(case["scenario"])
    return found, missing


def _throughput(value) -> bool:
    """A TFLOP/s a ratio can be taken of: a finite positive number (JSON reads NaN and Infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def group(runs: list[Run]) -> tuple[list[list[Run]], list[dict]]:
    """The trend series (runs sorted by GPU count, series in the order their first run appears) and, per source and
    model whose runs span several GPU counts, the runs in no series: ``{family, model, runs, gpus, differ}``, differ
    the keys whose values differ among all that source's runs of the model ('global batch' when only it sets them
    apart, 'gpu count repeats' when only the GPU count repeats within one layout)."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key(), []).append(run)
    series, grouped = [], set()
    for members in groups.values():
        counts = [r.gpus for r in members]
        batches: dict[int, list[Run]] = {}
        for r in members:
            batches.setdefault(r.global_batch, []).append(r)
        curves = sum(len(b) >= 2 for b in batches.values())   # strong-scaling curves: runs sharing a batch
        if len(set(counts)) == len(counts) and curves < 2:
            candidates = [members]
        else:   # a repeated count, or several curves: each global batch's runs on their own
            candidates = list(batches.values()) if len(batches) > 1 else []
        for runs_ in candidates:
            gpus = [r.gpus for r in runs_]
            if len(runs_) >= 2 and len(set(gpus)) == len(gpus):
                series.append(sorted(runs_, key=lambda r: r.gpus))
                grouped.update(r.scenario for r in runs_)
    apart: dict[tuple, list[Run]] = {}
    for run in runs:
        apart.setdefault((run.family, run.model), []).append(run)
    not_grouped = []
    for (family, model), members in apart.items():
        left = sorted((r for r in members if r.scenario not in grouped), key=lambda r: r.gpus)
        if not left or len({r.gpus for r in members}) < 2:
            continue
        differ = [k for k in LAYOUT_KEYS if len({r.layout.get(k) for r in members}) > 1]
        differ += [k for k, attr in (("model", "model_spec"), ("metric", "metric"))
                   if len({getattr(r, attr) for r in members}) > 1]
        if not differ and len({r.global_batch for r in members}) > 1:
            differ = ["global batch"]
        not_grouped.append({"family": family, "model": model, "runs": [r.scenario for r in left],
                            "gpus": [r.gpus for r in left], "differ": differ or ["gpu count repeats"]})
    return series, not_grouped


def efficiency(tflops_per_gpu: list[float], gpus: list[int]) -> list[float]:
    """Throughput per GPU at each count / at the smallest (``returns.scaling_efficiency``, in the given order)."""
    rows = returns.scaling_efficiency([{"gpus": n, "tokens_per_s": t * n} for t, n in zip(tflops_per_gpu, gpus,
                                                                                            strict=True)])
    by_count = {row["gpus"]: row["efficiency"] for row in rows}
    return [by_count[n] for n in gpus]


def sign(trend_error: float) -> str:
    """'optimistic' (the simulation loses less per-GPU throughput with scale than published), 'pessimistic' (more),
    or 'matches' (within ``TREND_FLAT``)."""
    if trend_error > TREND_FLAT:
        return "optimistic"
    if trend_error < -TREND_FLAT:
        return "pessimistic"
    return "matches"


def trend(series: list[Run]) -> dict:
    """One series: its runs and layout, and per point GPUs, published and simulated efficiency and trend error."""
    gpus = [r.gpus for r in series]
    published = efficiency([r.published_tflops for r in series], gpus)
    simulated = efficiency([r.simulated_tflops for r in series], gpus)
    errors = [s / p - 1.0 for s, p in zip(simulated, published, strict=True)]
    first = series[0]
    return {"series": f"{first.family}/{first.model}", "family": first.family, "model": first.model,
            "metric": first.metric, "layout": dict(first.layout),
            "points": [{"scenario": r.scenario, "gpus": r.gpus, "published_tflops": r.published_tflops,
                        "simulated_tflops": r.simulated_tflops, "published_efficiency": p,
                        "simulated_efficiency": s, "trend_error": e}
                       for r, p, s, e in zip(series, published, simulated, errors, strict=True)],
            "end_trend_error": errors[-1], "sign": sign(errors[-1])}


def trends(cases: list[dict], load=config.load) -> dict:
    """``validate --json``'s ``trends``: every trend series of the cases, the runs kept apart, and the cases whose
    layout could not be read (``runs_of``)."""
    runs, missing = runs_of(cases, load)
    series, not_grouped = group(runs)
    return {"series": [trend(s) for s in series], "not_grouped": not_grouped, "unread": missing}
