"""What-if (nothing in the model changes): the overlap-off baseline that Transformer Engine's userbuffers overlap
(``parallelism.tp_comm_overlap``) is measured against, the old blocking model against the one bundled (as Megatron and
TE actually run it).

With sequence parallelism and ``tp_comm_overlap`` off the engine now runs the column-parallel linears' backward
collectives as Megatron and TE do (``workload.async_backward``): the dgrad output's reduce-scatter is issued
``async_op=True`` and runs beside the wgrad GEMM (TE 1.x ``Linear`` / ``LayerNormLinear`` / ``LayerNormMLP`` backward,
"# Overlap dgrad-RS/AR with wgrad"; Megatron-Core ``LinearWithGradAccumulationAndAsyncCommunication``: "Here we rely
on CUDA_DEVICE_MAX_CONNECTIONS=1 to ensure that the reduce scatter is scheduled before the weight gradient
computation"), the input's re-gather beside the dgrad GEMM. This script rebuilds the old model as the what-if (every
TP collective of a layer after the compute, blocking: ``async_backward.applies`` patched to False, so
``plan.tp_collectives_per_layer``'s 2 reduce-scatters and 2 all-gathers a layer backward all block) and prints, per
validation row with sequence parallelism, tp > 1 and the overlap off, the error with that blocking baseline and as
run (bundled); ``--flux`` prints FLUX's training layout (GPT-3 175B, TP 8 PP 8 DP 2; Chang et al. 2024, arXiv
2406.06858, section 5.2, TE 1.4.0) step-time ratio overlap off / on with either baseline, TE 1.x and 2.x defaults.

    PYTHONPATH=. python scripts/tp_overlap_baseline.py [--flux]
"""

from __future__ import annotations

import contextlib
import sys

from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import async_backward

_APPLIES = async_backward.applies


def _never(scenario) -> bool:
    return False


@contextlib.contextmanager
def baseline_blocking():
    """The old model: no async backward collectives, every TP collective of the backward blocking."""
    async_backward.applies = _never
    try:
        yield
    finally:
        async_backward.applies = _APPLIES


def rows() -> None:
    for kind, cases in (("calibration", validation.cases()), ("held-out", validation.held_out_cases())):
        for case in cases:
            scenario = validation.published_layout(case, config.load(case["scenario"]))
            p = scenario.parallelism
            if not (p.sequence_parallel and p.tp > 1 and not p.tp_comm_overlap and scenario.megatron_core):
                continue
            key = "model_tflops_per_gpu" if case["metric"] == "model" else "hardware_tflops_per_gpu"
            published = validation.published_tflops(case, scenario)
            with baseline_blocking():
                blocking = simulate(scenario, check_memory=False).summary[key] / published - 1
            as_run = simulate(scenario, check_memory=False).summary[key] / published - 1
            print(f"{kind:11} {case['scenario']:44} {blocking:+7.2%} -> {as_run:+7.2%}", flush=True)


def flux() -> None:
    sys.path.insert(0, "scripts")
    import userbuffers_flux_check as check  # FLUX's layouts (scripts/userbuffers_flux_check.py)

    def step(scenario) -> float:
        return simulate(scenario, check_memory=False).summary["step_time_s"]

    for gpu in check.GPUS:
        off = check.scenario(gpu, 2048, True, False)
        with baseline_blocking():
            blocking = step(off)
        as_run = step(off)
        on = check.scenario(gpu, 2048, True, True)
        te = {v: step(on.model_copy(update={"parallelism": on.parallelism.model_copy(update={"te_version": v})}))
              for v in (1, 2)}
        print(f"{gpu}: off/on TE 1.x {blocking / te[1]:.3f} (baseline as run {as_run / te[1]:.3f}), "
              f"TE 2.x {blocking / te[2]:.3f} ({as_run / te[2]:.3f})", flush=True)


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(lambda argv: flux() if "--flux" in argv else rows(), sys.argv[1:], __doc__, ["--flux"],
                 words=(0, 0)))
