"""Validation cases: bundled scenarios simulated against published throughput (data/validation.yaml).

Two sets: the calibration cases (``cases``; shared/reference/training.yaml, the set the fitted host-overhead
constants were chosen on) and the held-out cases (``held_out_cases``; published runs never used to fit anything,
which show whether the calibration generalises).

A case publishes either TFLOP/s per GPU (``tflops_per_gpu`` with ``metric`` model or hardware) or a measured
step time (``step_time_s``), which is turned into model TFLOP/s per GPU with the scenario's own model FLOP, so
that every row compares the same quantity (the error is then published step time / simulated step time - 1).

Validation runs every scenario as it is, without variability (every GPU alike). ``variability`` (``validate
--variability``, ``scripts/fit_host_overheads.py --variability``) runs them all with one ``variability:`` section
instead, a what-if: 'measured' (data/variability.yaml's sourced defaults) or key=value pairs of it
(``parse_variability``), so that what the slowest GPU of each run costs can be measured over the whole set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError
from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.spec.variability import Variability
from simcluster.spec.variability import measured as measured_variability
from simcluster.studies import steady_state, workers
from simcluster.workload import moe


@dataclass(frozen=True)
class CaseResult:
    scenario: str
    metric: str  # "model" or "hardware" TFLOP/s per GPU
    published_tflops: float
    simulated_tflops: float
    source: str
    memory_bytes: float = 0.0   # per-GPU peak the memory model gives
    fits: bool = True           # whether that is within the GPU's HBM (held-out runs that did fit may not)
    family: str = ""            # the series a case belongs to (its source), for errors per series
    precision: str = ""         # the training precision (bf16, fp8, fp16, ...)
    step_time_s: float = 0.0    # the simulated step (scripts/fit_host_overheads.py linearises around it)
    # how the step was found, when not by simulating every microbatch (``steady_state``: extrapolated), else ""
    note: str = ""

    @property
    def error(self) -> float:
        """Signed relative error of the simulation against the published figure."""
        return self.simulated_tflops / self.published_tflops - 1.0


# BF16 and FP8 runs of the same model on the same GPUs (calibration BF16, held-out FP8) and the error gap each pair
# may show (issue 15: 5 points; the Llama 3 8B pair 0.11, about 0.8 point above its measured gap of 10.2, to catch
# regressions). Asserted in
# tests/validation/test_training_calibration.py, tabulated by scripts/accuracy_tables.py.
BF16_FP8_PAIRS = [("nemo2409-gpt3-175b-128-h100-bf16", "nemo2407-gpt3-175b-128-h100-fp8"),
                  ("nemo2409-llama31-8b-8-h100-bf16", "nemo2407-llama3-8b-8-h100-fp8")]
PAIR_TOLERANCE = {"nemo2407-llama3-8b-8-h100-fp8": 0.11}
PAIR_DEFAULT_TOLERANCE = 0.05


def cases() -> list[dict]:
    return catalog.load("validation")["cases"]


def held_out_cases() -> list[dict]:
    return catalog.load("validation")["held_out"]


def sources() -> dict[str, str]:
    return catalog.load("validation")["sources"]


def named_case(name: str) -> dict:
    """The calibration or held-out case of scenario ``name``; a name that is neither is a ScenarioError on the
    ``scenario`` field (the scripts' one line, exit 2: ``script_entry``)."""
    for case in cases() + held_out_cases():
        if case["scenario"] == name:
            return case
    raise ScenarioError("scenario", f"{name}: not a validation row (simcluster validate [--held-out] lists them)")


def published_tflops(case: dict, scenario: config.Scenario) -> float:
    """The case's published TFLOP/s per GPU; from a published step time, model FLOP / (GPUs * step time)."""
    if "step_time_s" in case:
        assert case["metric"] == "model", case
        flop = moe.model_flop_per_step(scenario.model, scenario.training.seq_len, scenario.training.global_batch_size)
        return flop / (scenario.cluster.gpus * case["step_time_s"]) / 1e12
    return case["tflops_per_gpu"]


# Layout keys a case may restate for memory (``memory_layout``): what sets the bytes per GPU but is simulated
# otherwise for a stated reason (the scenario header says why).
MEMORY_LAYOUT_KEYS = ("zero_stage", "grad_reduce_dtype")


def published_layout(case: dict, scenario: config.Scenario) -> config.Scenario:
    """The scenario with the parallelism keys of the case's ``memory_layout`` as the run was published, for its
    memory: Llama 3 405B ran FSDP sharding gradients too (ZeRO-2) but is simulated with ZeRO-1, whose per-microbatch
    reduce-scatters are slow to simulate; NeMo 25.11 recipes reduce gradients in bf16 (grad_reduce_in_fp32=False)
    where the scenarios keep the fp32 reduction whose timing the calibration assumed."""
    layout = case.get("memory_layout") or {}
    unknown = set(layout) - set(MEMORY_LAYOUT_KEYS)
    assert not unknown, f"{case['scenario']}: memory_layout may restate {MEMORY_LAYOUT_KEYS}, not {sorted(unknown)}"
    if not layout:
        return scenario
    data = config.rebuildable(scenario)  # validated again whole: the defaults follow the restated keys
    return config.from_dict({**data, "parallelism": {**data["parallelism"], **layout}})


def parse_variability(text: str | None) -> Variability | None:
    """``--variability``: None or 'off' (none), 'measured' (data/variability.yaml), or comma-separated key=value
    pairs of the ``variability:`` section (absent keys 0; e.g. 'gpu_speed_cv=0.015,seed=2'); 'measured,seed=2' takes
    the measured values with those keys replaced. Bad input: ScenarioError naming --variability."""
    if text is None or text == "off":
        return None
    measured: dict = {}
    values: dict = {}  # the keys written: they replace the measured ones wherever 'measured' stands
    for item in (part.strip() for part in text.split(",")):
        if item == "measured":
            if measured:  # 'measured,measured': a key pasted twice, as the key=value pairs below (round 35)
                raise ScenarioError("--variability", "measured is given twice")
            measured = measured_variability()
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ScenarioError("--variability", f"expected 'measured', 'off' or key=value pairs, got {item!r}")
        if key.strip() in values:
            raise ScenarioError("--variability", f"{key.strip()} is given twice")
        values[key.strip()] = _scalar(value.strip())
    try:
        return Variability(**{**measured, **values})
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ScenarioError(f"--variability {field}" if field else "--variability", first["msg"]) from None


def _scalar(text: str):
    """A key=value value: an integer, a float, else the text (the spec validates it, e.g. '20 us')."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def with_variability(scenario: config.Scenario, variability: Variability | None) -> config.Scenario:
    """``scenario`` run with ``variability`` in place of its own section (None: the scenario as it is)."""
    if variability is None:
        return scenario
    return scenario.model_copy(update={"variability": variability})


def run_case(case: dict, network: str | None = None, variability: Variability | None = None,
             extrapolate: bool = False) -> CaseResult:
    """Simulate one case; its memory is the memory model's peak for the layout as published
    (``published_layout``). A case whose simulated layout differs from the published one in memory
    (``memory_layout``), or that the memory model refuses although it ran (``memory_check: false``), is simulated
    without the memory check: its result says how far from the HBM the memory model puts the published layout.
    ``variability``: run with it (``with_variability``), a what-if; None: as the scenario says (none in every
    bundled validation scenario). ``extrapolate`` (``validate --steady-state``, off by default): a pipelined case of
    many microbatches has its step extrapolated from its steady state (``steady_state``, said in the result's
    ``note``) where that applies and its checks pass; refused cases pay three short runs on top of the full one."""
    from simcluster.engine import simulate

    scenario = with_variability(config.load(case["scenario"]), variability)
    check = case.get("memory_check", True) and not case.get("memory_layout")
    key = "model_tflops_per_gpu" if case["metric"] == "model" else "hardware_tflops_per_gpu"
    found = steady_state.step_s(scenario, network) if extrapolate else None
    if found is None:
        # a row reads the step, its TFLOP/s and memory: no link windows (the same step, 10-16% less CPU; round 29)
        summary = simulate(scenario, network, check_memory=check, link_windows=False).summary
        step_s, simulated, note = summary["step_time_s"], summary[key], ""
        peak_bytes = summary["peak_memory_per_gpu_bytes"]
    else:   # the full run's memory (as ``Simulation`` finds it) and TFLOP/s (as ``results.summarize``)
        step_s, note = found.step_s, found.note(scenario.microbatches)
        simulated = flop_per_step(case["metric"], scenario) / step_s / scenario.cluster.gpus / 1e12
        runs = memory.with_fitting_deferral(scenario)
        peak_bytes = (memory.check_fits(runs) if check else memory.per_gpu_memory(runs)).total_bytes
    memory_bytes = (memory.per_gpu_memory(published_layout(case, scenario)).total_bytes if case.get("memory_layout")
                    else peak_bytes)
    return CaseResult(case["scenario"], case["metric"], published_tflops(case, scenario), simulated,
                      case["source"], memory_bytes, memory_bytes <= scenario.cluster.gpu.hbm_capacity,
                      case.get("series", case["source"]), scenario.training.precision, step_s, note)


def run_cases(cases: list[dict], run: Callable[[dict], CaseResult] = run_case,
              jobs: int | None = None) -> Iterator[tuple[int, CaseResult]]:
    """``(index in cases, run(case))`` for every case as it finishes, on ``jobs`` worker processes (``workers.local``:
    default one per CPU, never more than the cases; 1: one after the other in this process). The callers put the
    results back in the cases' order, so that what they print is the same for any ``jobs``. ``run`` is called in
    the workers: a module-level function or a ``functools.partial`` of one (pickled by name). A worker that dies
    (killed: out of memory) or a pool that cannot start is the one-line error of ``--jobs``."""
    position = {id(case): index for index, case in enumerate(cases)}  # the cases' own objects come back
    count = min(jobs or workers.default_jobs(), len(cases))
    try:
        with (workers.local(count) as (pool, slots),
              contextlib.closing(workers.completed(pool, run, cases, window=2 * slots)) as calls):
            for case, future in calls:
                yield position[id(case)], future.result()
    except BrokenProcessPool as err:
        raise ScenarioError("--jobs", f"a worker process died ({err}); --jobs 1 runs the cases in this "
                            "process") from None
    except OSError as err:  # no /dev/shm, too many open files: the workers could not start
        if count == 1:  # in this process: a file of the run's own, named by the caller
            raise
        raise ScenarioError("--jobs", f"cannot start the worker processes: {err.strerror or err}; --jobs 1 runs "
                            "the cases in this process") from None


def error_stats(results: list[CaseResult]) -> dict[str, float]:
    """Median and maximum absolute relative error."""
    errors = np.abs([r.error for r in results])
    return {"median_abs_error": float(np.median(errors)), "max_abs_error": float(errors.max()),
            "case_count": len(results)}


def error_by_group(results: list[CaseResult]) -> dict[str, dict[str, float]]:
    """Error statistics per (series, precision) group, keyed 'series/precision', plus the mean signed error
    (the bias: positive = simulated faster than published)."""
    groups: dict[str, list[CaseResult]] = {}
    for r in results:
        groups.setdefault(f"{r.family}/{r.precision}", []).append(r)
    return {key: {**error_stats(group), "mean_error": float(np.mean([r.error for r in group]))}
            for key, group in groups.items()}


def published_step_s(case: dict, scenario: config.Scenario) -> float:
    """The case's published step time: its own, or its TFLOP/s per GPU turned into one with its metric's FLOP a step
    (model, or hardware with the scenario's recompute, as the engine's summary counts them)."""
    if "step_time_s" in case:
        return case["step_time_s"]
    return flop_per_step(case["metric"], scenario) / (scenario.cluster.gpus * case["tflops_per_gpu"] * 1e12)


def flop_per_step(metric: str, scenario: config.Scenario) -> float:
    """FLOP a step of ``metric`` (model, or hardware with the scenario's recompute), as the engine's summary counts
    them (``Simulation.record``)."""
    from simcluster.workload.ops import recompute_mode

    m, t = scenario.model, scenario.training
    return (moe.model_flop_per_step(m, t.seq_len, t.global_batch_size) if metric == "model" else
            moe.hardware_flop_per_step(m, t.seq_len, t.global_batch_size,
                                       recompute_mode(t.activation_recompute, t.recompute_modules),
                                       t.recompute_modules))
