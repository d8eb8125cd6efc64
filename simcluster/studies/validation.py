"""Validation cases: bundled scenarios simulated against published throughput (data/validation.yaml).

Two sets: the calibration cases (``cases``; shared/reference/training.yaml, the set the one fitted factor per
GPU generation was chosen on) and the held-out cases (``held_out_cases``; published runs never used to fit
anything, which show whether the calibration generalises).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simcluster.core import catalog
from simcluster.spec import config


@dataclass(frozen=True)
class CaseResult:
    scenario: str
    metric: str  # "model" or "hardware" TFLOP/s per GPU
    published_tflops: float
    simulated_tflops: float
    source: str
    memory_bytes: float = 0.0   # per-GPU peak the memory model gives
    fits: bool = True           # whether that is within the GPU's HBM (held-out runs that did fit may not)

    @property
    def error(self) -> float:
        """Signed relative error of the simulation against the published figure."""
        return self.simulated_tflops / self.published_tflops - 1.0


def cases() -> list[dict]:
    return catalog.load("validation")["cases"]


def held_out_cases() -> list[dict]:
    return catalog.load("validation")["held_out"]


def sources() -> dict[str, str]:
    return catalog.load("validation")["sources"]


def run_case(case: dict, network: str | None = None) -> CaseResult:
    """Simulate one case. A held-out run that the memory model says does not fit (``memory_check: false``) is
    simulated anyway, since it did run: its result says how far over the HBM the memory model put it."""
    from simcluster.engine import simulate

    scenario = config.load(case["scenario"])
    summary = simulate(scenario, network, check_memory=case.get("memory_check", True)).summary
    key = "model_tflops_per_gpu" if case["metric"] == "model" else "hardware_tflops_per_gpu"
    memory_bytes = summary["peak_memory_per_gpu_bytes"]
    return CaseResult(case["scenario"], case["metric"], case["tflops_per_gpu"], summary[key], case["source"],
                      memory_bytes, memory_bytes <= scenario.cluster.gpu.hbm_capacity)


def error_stats(results: list[CaseResult]) -> dict[str, float]:
    """Median and maximum absolute relative error."""
    errors = np.abs([r.error for r in results])
    return {"median_abs_error": float(np.median(errors)), "max_abs_error": float(errors.max()),
            "case_count": len(results)}
