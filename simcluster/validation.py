"""Calibration cases: bundled scenarios simulated against published throughput (data/validation.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simcluster import catalog, config


@dataclass(frozen=True)
class CaseResult:
    scenario: str
    metric: str  # "model" or "hardware" TFLOP/s per GPU
    published_tflops: float
    simulated_tflops: float
    source: str

    @property
    def error(self) -> float:
        """Signed relative error of the simulation against the published figure."""
        return self.simulated_tflops / self.published_tflops - 1.0


def cases() -> list[dict]:
    return catalog.load("validation")["cases"]


def run_case(case: dict, network: str | None = None) -> CaseResult:
    from simcluster.engine import simulate

    scenario = config.load(case["scenario"])
    summary = simulate(scenario, network).summary
    key = "model_tflops_per_gpu" if case["metric"] == "model" else "hardware_tflops_per_gpu"
    return CaseResult(case["scenario"], case["metric"], case["tflops_per_gpu"], summary[key], case["source"])


def error_stats(results: list[CaseResult]) -> dict[str, float]:
    """Median and maximum absolute relative error."""
    errors = np.abs([r.error for r in results])
    return {"median_abs_error": float(np.median(errors)), "max_abs_error": float(errors.max()),
            "case_count": len(results)}
