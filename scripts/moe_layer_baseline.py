"""Megatron-Core's moe_perf layer baseline (8 H100, one MoE layer) against the model, case by case and term by term
(docs/calibration/round-31.md "Round 31: one MoE layer on 8 H100 against Megatron-Core's moe_perf baseline").

    PYTHONPATH=. python scripts/moe_layer_baseline.py

For each case the model can express (``EXPRESSIBLE`` of tests/validation/test_moe_layer_perf_baseline.py):
measured and modelled forward and backward (``studies.moe_layer.moe_layer_time``), their ratio, and the model's
terms per direction: grouped expert GEMMs, the other kernels' roofline time, the fitted gaps (``kernel_gap_s`` a
kernel), the stall after the host sync, the all-to-alls, the host side. Then two what-ifs, arithmetic on those
terms, nothing applied: the forward's kernels before the host sync at the queued launch latency
(``launch_overhead_s``; the harness's 8192^3 fp32 matmul keeps the host ahead of the stream up to the sync), and
the tensor-core kernels at the short-benchmark clock (``clock_ratio`` undone). A diagnostic: nothing is fitted or
written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from simcluster.core import script_entry
from simcluster.parallel import plan
from simcluster.studies.moe_layer import moe_layer_time
from simcluster.workload import kernels
from simcluster.workload.ops import shard_for

DIRECTIONS = {"forward": ("forward",), "backward": plan.BACKWARD_PHASES}
# the measured cases and their scenarios live with their test (tests/validation/test_moe_layer_perf_baseline.py)
VALIDATION_TESTS = Path(__file__).resolve().parents[1] / "tests" / "validation"


def baseline():
    """The validation test's module: measured figures, the expressible cases and the scenario builder."""
    if str(VALIDATION_TESTS) not in sys.path:
        sys.path.insert(0, str(VALIDATION_TESTS))
    import test_moe_layer_perf_baseline

    return test_moe_layer_perf_baseline


def terms(case: str) -> dict[str, dict[str, float]]:
    """Seconds by term per direction of ``case``'s layer in the model, and the what-ifs' savings."""
    scenario = baseline().benchmark_scenario(case)
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    block = plan.busiest_moe_block(scenario, shard_for(scenario))
    layer = moe_layer_time(scenario)
    host = kernels.host_model()
    out = {}
    for direction, phases in DIRECTIONS.items():
        ops = [op for phase in phases if phase != "recompute" for op in getattr(block, phase)]
        stream = layer.forward if direction == "forward" else layer.backward
        gemm = other = tensor_core = 0.0
        for op in ops:
            seconds = max(kernels.roofline_s(op, gpu, precision))
            if op.name.startswith("expert_") and op.kind == "gemm":
                gemm += seconds
            else:
                other += seconds
            if op.kind in kernels.TENSOR_CORE_KINDS:
                tensor_core += seconds
        names = [op.name for op in ops]
        presync = names.index(kernels.HOST_SYNC) if kernels.HOST_SYNC in names else 0
        queued = sum(op.name not in (kernels.HOST_ONLY_LAUNCH, kernels.HOST_SYNC) for op in ops[:presync])
        out[direction] = {
            "expert GEMMs": gemm,
            "other kernels": other,
            "gaps": stream.gaps_s(host),   # as the simulator charges them (round-32 review)
            "stall": stream.stall_s,
            "all-to-all": layer.alltoalls[direction] * layer.alltoall_s,
            "model": layer.forward_s if direction == "forward" else layer.backward_s,
            "host side": stream.host_bound_s(),
            "what-if queued": queued * (host.kernel_gap_s - kernels.launch_overhead_s()),
            "what-if short clock": tensor_core * (1 - kernels.clock_ratio(gpu.name)),
        }
    return out


def report() -> list[str]:
    lines = []
    cases = baseline()
    for case in cases.EXPRESSIBLE:
        parts = terms(case)
        for direction, measured in zip(DIRECTIONS, cases.MEASURED_MS[case], strict=True):
            t = {key: value * 1e3 for key, value in parts[direction].items()}
            lines.append(
                f"{case:30s} {direction:8s} measured {measured:6.3f} model {t['model']:6.3f} "
                f"({t['model'] / measured:5.3f}) | GEMMs {t['expert GEMMs']:5.3f} other {t['other kernels']:5.3f} "
                f"gaps {t['gaps']:5.3f} stall {t['stall']:5.3f} a2a {t['all-to-all']:5.3f} host {t['host side']:5.3f}"
                f" | queued {(t['model'] - t['what-if queued']) / measured:5.3f}"
                f" short clock {(t['model'] - t['what-if short clock']) / measured:5.3f}"
            )
    return lines


def main(argv: list[str]) -> int:
    print("\n".join(report()))
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.run(main, sys.argv[1:], __doc__, words=(0, 0), usage=""))
